"""Training recipe: SpecAugment and mixup keep shapes and lengths and never touch
evaluation; chunked scoring equals the full path when one chunk covers the utterance;
label smoothing; per-speaker normalisation."""

import numpy as np
import pytest
import torch
from fakes import MemoryDataset

import satn.engine as engine
from satn.augment import chunk_starts, mixup, spec_augment
from satn.config import ConfigError, ExperimentConfig, RecipeConfig
from satn.engine import chunked_logits, evaluate
from satn.folddata import prepare_folds, speaker_normalised
from satn.models import build_model
from satn.runner import CrossValidation


def _cfg(**over):
    base = {"model.tcn.channels": 16, "model.attention.heads": 2, "model.tcn.dilations": "1,2",
            "train.epochs": 1, "train.lr": 3e-3, "train.batch_size": 16, "train.device": "cpu",
            "model.dropout": 0.0}
    return ExperimentConfig().override({**base, **over})


def _batch(lengths=(30, 17, 5), d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    x = torch.randn(len(lengths), int(lengths.max()), d, generator=g) + 3.0  # no zeros
    for i, t in enumerate(lengths.tolist()):
        x[i, t:] = 0
    return x, lengths


def test_spec_augment_masks_inside_each_utterance_and_the_same_bands_in_every_channel():
    torch.manual_seed(0)
    x, lengths = _batch(d=3 * 4)  # 3 channels (static, delta, delta2) of 4 bands
    y = spec_augment(x, lengths, time_masks=2, time_mask_frames=6, freq_masks=1,
                     freq_mask_bands=3, n_bands=4)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.equal(x, _batch(d=12)[0])  # the input is left alone
    masked = (y == 0) & (x != 0)
    assert masked.any()
    for i, t in enumerate(lengths.tolist()):
        assert torch.equal(y[i, t:], x[i, t:])  # padding untouched: lengths still hold
        m = masked[i, :t].view(t, 3, 4)
        assert torch.equal(m[:, 0], m[:, 1]) and torch.equal(m[:, 0], m[:, 2])
    off = spec_augment(x, lengths, time_masks=0, time_mask_frames=6, freq_masks=0,
                       freq_mask_bands=3)
    assert torch.equal(off, x)


def test_spec_augment_on_segment_frames_masks_the_last_axis():
    torch.manual_seed(1)
    x = torch.rand(2, 6, 4, 9) + 1  # (B, T, seg_frames, bins)
    y = spec_augment(x, torch.tensor([6, 3]), time_masks=0, time_mask_frames=1, freq_masks=2,
                     freq_mask_bands=4)
    assert y.shape == x.shape
    assert (y == 0).any()
    for i, t in enumerate((6, 3)):
        zero = y[i, :t] == 0  # (t, seg_frames, bins)
        # a masked bin is masked in every valid frame and segment row: whole columns
        assert torch.equal(zero.any(dim=(0, 1)), zero.all(dim=1).all(dim=0))
    assert torch.equal(y[1, 3:], x[1, 3:])


def test_mixup_mixes_pairs_and_keeps_the_longer_length():
    x, lengths = _batch()
    y = torch.tensor([0, 1, 2])
    perm = torch.tensor([2, 0, 1])
    mixed, lens, y_other = mixup(x, lengths, y, 0.25, perm)
    assert mixed.shape == x.shape
    torch.testing.assert_close(mixed, 0.25 * x + 0.75 * x[perm])
    assert lens.tolist() == [30, 30, 17] and y_other.tolist() == [2, 0, 1]
    same, lens1, _ = mixup(x, lengths, y, 1.0, perm)
    assert torch.equal(same, x) and torch.equal(lens1, torch.maximum(lengths, lengths[perm]))


def test_augmentation_runs_on_every_training_utterance_once_and_never_at_evaluation(monkeypatch):
    seen = []
    original = engine.spec_augment

    def spy(x, lengths, **kw):
        seen.append(int(x.shape[0]))
        return original(x, lengths, **kw)

    monkeypatch.setattr(engine, "spec_augment", spy)
    cfg = _cfg(**{"recipe.time_masks": 1, "recipe.freq_masks": 1, "recipe.mixup_alpha": 0.4,
                  "recipe.freq_mask_bands": 2})
    exp = CrossValidation(cfg, MemoryDataset(per_speaker_class=2), folds=[1])
    trainer = exp.trainers["fold1"]
    stats = trainer.step()
    assert sum(seen) == len(trainer.data.train)  # training batches only, each item once
    assert np.isfinite(stats.train_loss)
    # the epoch's dev score is the plain, unaugmented evaluation of the trained model
    n = len(seen)
    plain = evaluate(trainer.model, trainer.data.dev, 16, torch.device("cpu"))
    assert len(seen) == n
    assert plain.scores.ua == stats.dev.ua and plain.loss == pytest.approx(stats.dev_loss)


def test_chunk_starts_cover_the_utterance():
    assert chunk_starts(10, 20, 5) == [0]
    assert chunk_starts(10, 10, 5) == [0]
    for length, chunk, hop in [(100, 30, 15), (101, 30, 30), (31, 30, 7)]:
        starts = chunk_starts(length, chunk, hop)
        covered = np.zeros(length, bool)
        for s in starts:
            covered[s:s + chunk] = True
        assert covered.all() and starts[0] == 0 and starts[-1] + chunk == length


def test_chunked_scoring_equals_the_full_path_when_one_chunk_covers_the_utterance():
    torch.manual_seed(0)
    cfg = _cfg()
    model = build_model(cfg.model, (12,), 4).eval()
    x, lengths = _batch(d=12)
    with torch.no_grad():
        full = model(x, lengths).logits
        covered = chunked_logits(model, x, lengths, 30, 15, 16)
        torch.testing.assert_close(covered, full, rtol=1e-5, atol=1e-5)
        # shorter chunks: the mean of each chunk's own logits
        short = chunked_logits(model, x, lengths, 10, 10, 2)
        item0 = torch.stack([model(x[:1, s:s + 10], torch.tensor([10])).logits[0]
                             for s in (0, 10, 20)]).mean(0)
        torch.testing.assert_close(short[0], item0, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(short[2], full[2], rtol=1e-5, atol=1e-5)  # 5 frames < 10
    ds = prepare_folds(MemoryDataset(per_speaker_class=1), cfg, [1])[0].data.dev
    a = evaluate(model, ds, 8, torch.device("cpu"))
    b = evaluate(model, ds, 8, torch.device("cpu"), chunk=(100, 50))  # longer than any item
    np.testing.assert_allclose(a.probs, b.probs, rtol=1e-5, atol=1e-6)
    assert a.ids == b.ids


def test_chunked_training_crops_to_the_chunk():
    cfg = _cfg(**{"recipe.chunk_frames": 25})
    data = prepare_folds(MemoryDataset(per_speaker_class=1), cfg, [1])[0].data
    assert data.train.max_frames == 25 and data.dev.max_frames is None
    assert CrossValidation(cfg, MemoryDataset(per_speaker_class=1), folds=[1]) \
        .trainers["fold1"].chunk == (25, 12)


def test_label_smoothing_reaches_the_loss():
    exp = CrossValidation(_cfg(**{"recipe.label_smoothing": 0.1}), MemoryDataset(per_speaker_class=1),
                     folds=[1])
    loss = exp.trainers["fold1"].loss_fn
    confident = torch.tensor([[20.0, 0.0, 0.0, 0.0]])
    assert loss.label_smoothing == 0.1
    assert float(loss(confident, torch.tensor([0]))) > 0.05  # unsmoothed: ~0


def test_speaker_normalisation_uses_each_speakers_own_frames():
    rng = np.random.default_rng(0)
    arrays = [rng.normal(5 * (i % 2), 1 + i % 2, (20 + i, 3)) for i in range(6)]
    speakers = ["a", "b"] * 3
    out = speaker_normalised(arrays, speakers)
    for spk in "ab":
        frames = np.concatenate([o for o, s in zip(out, speakers, strict=True) if s == spk])
        np.testing.assert_allclose(frames.mean(0), 0, atol=1e-5)
        np.testing.assert_allclose(frames.std(0), 1, atol=1e-4)
    assert [o.shape for o in out] == [a.shape for a in arrays]


def test_recipe_config_checks_and_defaults_off():
    r = RecipeConfig()
    assert (r.time_masks, r.freq_masks, r.mixup_alpha, r.label_smoothing, r.chunk_frames) == \
        (0, 0, 0.0, 0.0, None) and r.normalisation == "global"
    with pytest.raises(ConfigError, match="recipe.normalisation"):
        RecipeConfig(normalisation="utterance")
    with pytest.raises(ConfigError, match="recipe.label_smoothing"):
        RecipeConfig(label_smoothing=1.0)
