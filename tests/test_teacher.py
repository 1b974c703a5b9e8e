"""The ASR teacher: the maps contract, overfitting a handful of utterances, the teacher file."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from satn.config import FeatureConfig
from satn.models.teacher import ASRTeacher, TeacherModelConfig
from satn.phonemes import TOKENS, Lexicon
from satn.teacher_io import TeacherFileError, load_teacher, save_teacher
from satn.teacher_train import (
    TeacherTrainConfig,
    prepare_teacher_data,
    recognise,
    split_heldout,
    train_teacher,
)

TINY = TeacherModelConfig(channels=16, dilations=(1, 2, 4, 8, 16), dropout=0.1,
                          decoder_units=32, attention_dim=16, embed_dim=8)
KEYS = ("encoder.layer0", "encoder.layer1", "encoder.layer2", "encoder.layer3",
        "encoder.layer4", "encoder.attention")


def _model(seed: int = 0, cfg: TeacherModelConfig = TINY, dim: int = 12) -> ASRTeacher:
    torch.manual_seed(seed)
    m = ASRTeacher(dim, len(TOKENS), cfg)
    m.set_normalizer(torch.linspace(-2, 2, dim), torch.linspace(0.5, 3, dim))
    return m.eval()


def _batch(lengths=(23, 9, 16), dim: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    x = torch.randn(len(lengths), int(lengths.max()), dim, generator=g) * 3 + 1
    x = x * (torch.arange(x.shape[1])[None, :, None] < lengths[:, None, None])
    return x, lengths


# ---------------------------------------------------------------- maps contract


def test_maps_keys_and_shapes():
    x, lengths = _batch()
    maps = _model().maps(x, lengths)
    assert tuple(maps) == KEYS
    for k in KEYS[:-1]:
        assert maps[k].shape == (3, 23, 16)
    assert maps["encoder.attention"].shape == (3, 23, 23)


def test_attention_rows_sum_to_one_over_valid_frames_zero_on_padding():
    x, lengths = _batch()
    maps = _model().maps(x, lengths)
    att = maps["encoder.attention"]
    for i, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(att[i, :n, :n].sum(-1), torch.ones(n))
        assert torch.all(att[i, n:] == 0) and torch.all(att[i, :, n:] == 0)
        for k in KEYS[:-1]:
            assert torch.all(maps[k][i, n:] == 0)


def test_maps_do_not_depend_on_padding_or_batch_mates():
    x, lengths = _batch()
    model = _model()
    together = model.maps(x, lengths)
    for i, n in enumerate(lengths.tolist()):
        alone = model.maps(x[i : i + 1, :n], lengths[i : i + 1])
        padded = torch.cat([x[i : i + 1, :n], torch.full((1, 7, 12), 99.0)], 1)
        extra = model.maps(padded, lengths[i : i + 1])
        for k in KEYS:
            want = alone[k][0]
            crop = (slice(0, n), slice(0, n)) if k == KEYS[-1] else (slice(0, n),)
            torch.testing.assert_close(together[k][i][crop], want, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(extra[k][0][crop], want, atol=1e-5, rtol=1e-4)


def test_maps_take_raw_features_and_normalise_inside():
    x, lengths = _batch()
    model = _model()
    plain = _model()
    plain.set_normalizer(torch.zeros(12), torch.ones(12))
    z = (x - model.feature_mean) / model.feature_std
    a, b = model.maps(x, lengths), plain.maps(z, lengths)
    for k in KEYS:
        torch.testing.assert_close(a[k], b[k] * 1.0, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(model.maps(x, lengths)[KEYS[0]], plain.maps(x, lengths)[KEYS[0]])


def test_decoder_outputs_ignore_padding():
    x, lengths = _batch()
    model = _model()
    y = torch.randint(4, len(TOKENS), (3, 6))
    out = model(x, lengths, y)
    alone = model(x[1:2, :9], lengths[1:2], y[1:2])
    torch.testing.assert_close(out.logits[1], alone.logits[0], atol=1e-5, rtol=1e-4)
    assert torch.all(out.alignment[1, :, 9:] == 0)
    torch.testing.assert_close(out.alignment.sum(-1), torch.ones(3, 6))
    assert model.greedy(x, lengths) == [model.greedy(x[i:i + 1, :n], lengths[i:i + 1])[0]
                                        for i, n in enumerate(lengths.tolist())]


# ---------------------------------------------------------------- overfitting


class FakeDataset:
    """What train_teacher reads from a satn.store.FeatureDataset: meta, arrays, frame_shape."""

    def __init__(self, texts, speakers, arrays):
        self.meta = pd.DataFrame({"id": [f"u{i}" for i in range(len(texts))],
                                  "speaker": speakers, "transcript": texts})
        self._arrays = arrays
        self.frame_shape = arrays[0].shape[1:]
        self.uri = "memory://fake"

    def arrays(self, rows):
        return [self._arrays[i] for i in rows]


def _fake(n_frames=(30, 26, 34, 28, 24), dim=12):
    rng = np.random.default_rng(1)
    texts = ["a cat", "the dog ran", "go home", "yes", "we sat", "no"]
    arrays = [rng.normal(size=(t, dim)).astype(np.float32) * 2 + 1 for t in (*n_frames, 20)]
    return FakeDataset(texts, ["s1"] * 5 + ["s2"], arrays)


def test_teacher_overfits_a_handful_of_utterances():
    cfg = TeacherTrainConfig(model=dataclasses.replace(TINY, dropout=0.0), epochs=60,
                             batch_size=5, lr=1e-2, device="cpu", heldout_speakers=("s2",),
                             heldout_prompts=0.0, eval_max=1)
    result = train_teacher(_fake(), cfg)
    assert result.data.split["n_train"] == 5 and result.data.split["n_heldout"] == 1
    assert result.epochs[-1].train_loss < result.epochs[0].train_loss / 20
    for decode in ("greedy", "beam"):
        rec = recognise(result.model, result.data.train, result.lexicon, decode=decode,
                        beam_width=3, device="cpu")
        assert rec.n == 5 and rec.phonemes == 25  # a cat, the dog ran, go home, yes, we sat
        assert rec.per <= 0.05, rec.examples
        assert rec.wer <= 0.2, rec.examples
        assert rec.lookup_wer == 0.0  # five unambiguous-enough words, counted from training


def test_split_holds_out_speakers_and_whole_prompts():
    texts = ["One two.", "one, two", "three", "four", "five", "six", "seven", "eight"]
    spk = ["a", "b", "a", "b", "a", "b", "c", "c"]
    held = split_heldout(texts, spk, heldout_speakers=("c",), heldout_prompts=0.2, seed=3)
    assert held[6] and held[7]  # speaker c
    assert held[0] == held[1]  # the same prompt, read twice, is on one side
    assert 1 <= held[:6].sum() <= 3
    assert not split_heldout(texts, spk, heldout_prompts=0.0).any()
    from satn.teacher_train import TeacherDataError

    with pytest.raises(TeacherDataError, match="zed"):
        split_heldout(texts, spk, heldout_speakers=("zed",))


def test_prepare_needs_transcripts_and_both_sides():
    from satn.teacher_train import TeacherDataError

    ds = _fake()
    ds.meta["transcript"] = None
    with pytest.raises(TeacherDataError, match="transcript"):
        prepare_teacher_data(ds, TeacherTrainConfig())
    with pytest.raises(TeacherDataError, match="held-out"):
        prepare_teacher_data(_fake(), TeacherTrainConfig(heldout_prompts=0.0))


# ---------------------------------------------------------------- the teacher file


def test_save_load_round_trip_gives_identical_maps_and_a_frozen_model(tmp_path):
    model = _model(seed=3)
    lex = Lexicon("skip", {"cat": 3})
    feats = FeatureConfig(n_mels=4)
    path = save_teacher(tmp_path / "t.pt", model, features=feats, lexicon=lex,
                        extra={"report": {"per": 0.5}})
    loaded = load_teacher(path)
    assert loaded.features == feats and loaded.tokens == TOKENS
    assert loaded.lexicon.oov == "skip" and loaded.lexicon.word_counts == {"cat": 3}
    assert loaded.meta["report"]["per"] == 0.5
    assert loaded.map_names == KEYS
    loaded.check_features(FeatureConfig(n_mels=4))
    with pytest.raises(TeacherFileError, match="n_mels: teacher 4, dataset 40"):
        loaded.check_features(FeatureConfig())
    assert not loaded.model.training
    assert not any(p.requires_grad for p in loaded.model.parameters())
    x, lengths = _batch()
    a, b = model.maps(x, lengths), loaded.model.maps(x, lengths)
    for k in KEYS:
        assert torch.equal(a[k], b[k])


def test_wrong_or_damaged_files_fail_clearly(tmp_path):
    with pytest.raises(TeacherFileError, match="not found"):
        load_teacher(tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00not a torch file")
    with pytest.raises(TeacherFileError, match="junk.pt"):
        load_teacher(junk)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}, "meta": "{}"}, other)  # e.g. an SER checkpoint
    with pytest.raises(TeacherFileError, match="not a satn teacher file"):
        load_teacher(other)
    good = save_teacher(tmp_path / "t.pt", _model(), features=FeatureConfig(n_mels=4),
                        lexicon=Lexicon())
    blob = torch.load(good, weights_only=True)
    torch.save({**blob, "version": 99}, tmp_path / "future.pt")
    with pytest.raises(TeacherFileError, match="version 99"):
        load_teacher(tmp_path / "future.pt")
    blob["state_dict"] = {k: v for k, v in blob["state_dict"].items() if "lstm" not in k}
    torch.save(blob, tmp_path / "cut.pt")
    with pytest.raises(TeacherFileError, match="damaged"):
        load_teacher(tmp_path / "cut.pt")


# ---------------------------------------------------------------- error rates


def test_error_rate_is_edits_over_reference_length():
    from satn.metrics import error_rate

    refs = [["the", "cat", "sat"], ["a", "dog"]]
    assert error_rate(refs, refs).rate == 0.0
    r = error_rate(refs, [["the", "bat", "sat", "down"], []])  # 1 S + 1 I, then 2 D
    assert (r.errors, r.n) == (4, 5) and r.rate == pytest.approx(0.8)
    assert error_rate([["x"]], [["a", "b", "c"]]).rate == 3.0  # insertions can pass 1
    with pytest.raises(ValueError):
        error_rate(refs, [])


def test_every_teacher_config_in_the_repo_loads_and_builds(repo_root):
    from satn.config import from_dict, load_yaml

    files = sorted((repo_root / "experiments" / "teachers").glob("*.yaml"))
    assert files
    for f in files:
        cfg = from_dict(TeacherTrainConfig, load_yaml(f))
        model = ASRTeacher(120, len(TOKENS), cfg.model)
        assert len(model.maps(torch.randn(1, 20, 120), torch.tensor([20]))) == 6
