"""Gain and feature-domain noise (``satn.augment.Levels``): what they do to log power
under the normalisation, that they are reproducible, and that evaluation never sees them."""

import numpy as np
import pytest
import torch
import torchaudio.functional as AF
from fakes import MemoryDataset

from satn.augment import DB, Levels
from satn.batching import make_loader
from satn.config import ConfigError, ExperimentConfig
from satn.features import hold_last
from satn.folddata import levels_for, prepare_folds
from satn.runner import CrossValidation

M, DELTAS, WIDTH = 5, 2, 5  # bands, delta channels, regression width


def _cfg(**over):
    base = {"model.tcn.channels": 8, "model.attention.heads": 2, "model.tcn.dilations": "1,2",
            "train.epochs": 1, "train.batch_size": 16, "train.device": "cpu",
            "model.dropout": 0.0}
    return ExperimentConfig().override({**base, **over})


def _raw_batch(lengths=(40, 23, 9), seed=0):
    """Log-power statics with a loud and a quiet stretch, and the extractor's deltas:
    (B, T, M * 3) raw features (zero past each length) and (B,) lengths."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    b, t = len(lengths), int(lengths.max())
    static = torch.randn(b, M, t, generator=g, dtype=torch.float64) - 8.0  # quiet: ln power -8
    static[:, :, : t // 2] += 6.0  # a loud first half
    parts, d = [static], static
    for _ in range(DELTAS):
        d = AF.compute_deltas(hold_last(d, lengths), win_length=WIDTH)
        parts.append(d)
    raw = torch.cat(parts, 1).transpose(1, 2).float().contiguous()  # (B, T, 3M)
    for i, n in enumerate(lengths.tolist()):
        raw[i, n:] = 0
    return raw, lengths


def _levels(gain_db=0.0, snr=None, ids=("a", "b", "c"), seed=0, dim=3 * M):
    rng = np.random.default_rng(1)
    affine = {u: (rng.normal(-3, 1, dim).astype(np.float32),
                  rng.uniform(0.5, 3, dim).astype(np.float32)) for u in ids}
    profile = np.linspace(1.0, 2.0, M)
    return Levels(gain_db, snr, M, DELTAS, WIDTH, profile, affine, seed)


def _normalise(raw, lengths, levels, ids):
    shift = torch.from_numpy(np.stack([levels.affine[u][0] for u in ids]))[:, None]
    scale = torch.from_numpy(np.stack([levels.affine[u][1] for u in ids]))[:, None]
    y = (raw - shift) / scale
    for i, n in enumerate(lengths.tolist()):
        y[i, n:] = 0  # collate's padding
    return y, shift, scale


def test_gain_shifts_static_log_power_by_one_constant_per_utterance_and_leaves_deltas():
    raw, lengths = _raw_batch()
    ids = ["a", "b", "c"]
    lv = _levels(gain_db=6.0)
    y, shift, scale = _normalise(raw, lengths, lv, ids)
    out = lv(y, lengths, ids, epoch=1)
    back = out * scale + shift  # the log power the model's input stands for
    for i, n in enumerate(lengths.tolist()):
        diff = (back - raw)[i, :n, :M]
        g = lv.draws(ids[i], 1)[0]
        assert abs(g) <= 6.0
        assert torch.allclose(diff, torch.full_like(diff, g * DB), atol=1e-4)
        assert torch.equal(out[i, :n, M:], y[i, :n, M:])  # deltas bit-identical
        assert torch.equal(out[i, n:], y[i, n:])  # padding stays zero
    assert len({round(lv.draws(u, 1)[0], 6) for u in ids}) == 3  # one draw per utterance


def test_noise_lifts_quiet_bins_more_than_loud_ones_and_never_lowers_any():
    raw, lengths = _raw_batch()
    ids = ["a", "b", "c"]
    lv = _levels(snr=0.0)
    y, shift, scale = _normalise(raw, lengths, lv, ids)
    out = lv(y, lengths, ids, epoch=2)
    change = (out * scale + shift - raw)[..., :M]
    for i, n in enumerate(lengths.tolist()):
        c, r = change[i, :n], raw[i, :n, :M]
        assert (c >= -1e-5).all()
        assert c.max() > 0.1  # at 0-10 dB SNR quiet bins move a lot
        for m in range(M):  # one noise power per band: the quieter the bin, the larger the lift
            order = torch.argsort(r[:, m])
            assert (torch.diff(c[order, m]) <= 1e-4).all()
        loud, quiet = c[: n // 2].mean(), c[n // 2:].mean()
        assert quiet > loud
        assert torch.equal(out[i, n:], y[i, n:])


def test_noise_deltas_equal_deltas_of_the_noisy_statics():
    raw, lengths = _raw_batch()
    ids = ["a", "b", "c"]
    lv = _levels(snr=5.0)
    y, shift, scale = _normalise(raw, lengths, lv, ids)
    back = lv(y, lengths, ids, epoch=3) * scale + shift
    static = back[..., :M].transpose(1, 2)
    d1 = AF.compute_deltas(hold_last(static, lengths), win_length=WIDTH)
    d2 = AF.compute_deltas(hold_last(d1, lengths), win_length=WIDTH)
    for i, n in enumerate(lengths.tolist()):
        assert torch.allclose(back[i, :n, M:2 * M], d1[i, :, :n].T, atol=2e-3)
        assert torch.allclose(back[i, :n, 2 * M:], d2[i, :, :n].T, atol=2e-3)


def test_noise_snr_is_the_ratio_of_mean_frame_power_to_noise_power():
    raw, lengths = _raw_batch(lengths=(30,))
    lv = _levels(snr=10.0, ids=("a",))
    y, shift, scale = _normalise(raw, lengths, lv, ["a"])
    back = lv(y, lengths, ["a"], epoch=1) * scale + shift
    noise = (back[0, :, :M].double().exp() - raw[0, :, :M].double().exp()).sum(-1)  # (T,)
    signal = raw[0, :, :M].double().exp().sum(-1).mean()
    snr = lv.draws("a", 1)[1]
    assert 10.0 <= snr <= 20.0
    assert torch.allclose(noise, torch.full_like(noise, float(signal) * 10 ** (-snr / 10)),
                          rtol=1e-3)


def test_draws_are_reproducible_per_seed_epoch_and_utterance_whatever_the_batch_order():
    raw, lengths = _raw_batch()
    ids = ["a", "b", "c"]
    lv = _levels(gain_db=3.0, snr=0.0)
    y, _, _ = _normalise(raw, lengths, lv, ids)
    torch.manual_seed(0)
    first = lv(y, lengths, ids, epoch=4)
    torch.manual_seed(123)  # torch's global generator plays no part
    assert torch.equal(lv(y, lengths, ids, epoch=4), first)
    perm = [2, 0, 1]
    permuted = lv(y[perm], lengths[perm], [ids[i] for i in perm], epoch=4)
    assert torch.equal(permuted, first[perm])
    assert not torch.equal(lv(y, lengths, ids, epoch=5), first)
    other = _levels(gain_db=3.0, snr=0.0, seed=1)
    assert not torch.equal(other(y, lengths, ids, epoch=4), first)


def test_levels_on_spectrogram_segments_keep_shape_and_padding():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 4, 9, generator=g)  # (B, T, seg_frames, bins), normalised
    x[1, 3:] = 0
    lengths = torch.tensor([6, 3])
    affine = {u: (np.full(9, -5, np.float32), np.full(9, 2, np.float32)) for u in "ab"}
    lv = Levels(4.0, 0.0, 9, 0, 5, np.ones(9), affine, 0)
    out = lv(x, lengths, ["a", "b"], epoch=1)
    assert out.shape == x.shape
    assert torch.equal(out[1, 3:], x[1, 3:])
    assert not torch.equal(out[0], x[0])


@pytest.mark.parametrize("normalisation", ["global", "speaker"])
def test_fold_levels_map_back_through_the_folds_normalisation(normalisation):
    cfg = _cfg(**{"recipe.gain_db": 10.0, "recipe.normalisation": normalisation,
                  "features.n_mels": 4, "features.deltas": 2})
    data = MemoryDataset(per_speaker_class=1)  # 12 dims = 3 channels of 4 bands
    pf = prepare_folds(data, cfg, only=[1])[0]
    speakers = dict(zip(data.meta["id"], data.meta["speaker"], strict=True))
    lv = levels_for(pf, cfg, speakers, (12,))
    assert lv is not None
    train = pf.data.train
    raw_by_id = dict(zip(data.meta["id"], data.arrays(), strict=True))
    uid = train.ids[0]
    x, _, _ = train[0]
    out = lv(x[None], torch.tensor([len(x)]), [uid], epoch=1)[0]
    shift, scale = lv.affine[uid]
    assert np.allclose(x.numpy() * scale + shift, raw_by_id[uid], atol=1e-4)  # the raw values
    diff = out.numpy() * scale + shift - raw_by_id[uid]
    assert np.allclose(diff[:, :4], lv.draws(uid, 1)[0] * DB, atol=1e-4)
    assert np.allclose(diff[:, 4:], 0, atol=1e-4)


def test_levels_run_on_training_batches_only():
    cfg = _cfg(**{"recipe.gain_db": 6.0, "recipe.noise_snr_db": 5.0, "features.n_mels": 4,
                  "features.deltas": 2})
    exp = CrossValidation(cfg, MemoryDataset(per_speaker_class=1), folds=[1])
    trainer = exp.trainers["fold1"]
    calls = []
    inner = trainer.levels

    def counting(x, lengths, ids, epoch):
        calls.append(list(ids))
        return inner(x, lengths, ids, epoch)

    trainer.levels = counting
    trainer.step()
    train_ids = set(trainer.data.train.ids)
    assert len(calls) == len(trainer.loader)  # every training batch, and nothing else
    assert all(set(c) <= train_ids for c in calls)
    # dev and test batches are the same bit for bit with the options on or off
    plain = CrossValidation(_cfg(**{"features.n_mels": 4, "features.deltas": 2}),
                       MemoryDataset(per_speaker_class=1), folds=[1])
    assert plain.trainers["fold1"].levels is None
    for side in ("dev", "test"):
        a = getattr(trainer.data, side)
        b = getattr(plain.trainers["fold1"].data, side)
        for ba, bb in zip(make_loader(a, 8, shuffle=False), make_loader(b, 8, shuffle=False),
                          strict=True):
            assert torch.equal(ba.x, bb.x) and ba.ids == bb.ids


@pytest.mark.parametrize("key,value,words", [
    ("recipe.gain_db", -1, "recipe.gain_db must be in [0, 40]"),
    ("recipe.noise_snr_db", 200, "recipe.noise_snr_db must be in [-20, 80]"),
    ("recipe.speeds", "[0.9, 0.9]", "recipe.speeds must be distinct factors"),
    ("recipe.speeds", "[0.3]", "recipe.speeds must be distinct factors in [0.5, 2]"),
])
def test_bad_values_name_their_key_in_one_line(key, value, words):
    with pytest.raises(ConfigError) as e:
        ExperimentConfig().override({key: value})
    assert words in str(e.value) and "\n" not in str(e.value)


def test_defaults_are_off():
    r = ExperimentConfig().recipe
    assert r.speeds == () and r.gain_db == 0 and r.noise_snr_db is None
    assert ExperimentConfig().override({"recipe.speeds": "0.9,1.1"}).recipe.speeds == (0.9, 1.1)


def test_a_run_with_gain_and_noise_is_reproducible_from_its_seed():
    over = {"recipe.gain_db": 6.0, "recipe.noise_snr_db": 0.0, "features.n_mels": 4,
            "features.deltas": 2, "train.epochs": 1}

    def run(seed):
        exp = CrossValidation(_cfg(**over, **{"train.seed": seed}), MemoryDataset(per_speaker_class=1),
                         folds=[1])
        exp.run()
        return [s.train_loss for s in exp.trainers["fold1"].history]

    first = run(0)
    torch.manual_seed(99)  # whatever the global generator holds
    assert run(0) == first
    assert run(1) != first
