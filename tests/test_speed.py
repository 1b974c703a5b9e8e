"""Speed perturbation: resampled waveforms, their features cached per factor, and their rows
on the training side only."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from click.testing import CliRunner
from fakes import MemoryDataset

from satn.cli import main
from satn.config import ExperimentConfig, FeatureConfig
from satn.corpora.base import CorpusLoad, Utterance
from satn.folddata import prepare_folds
from satn.speed import (
    original_id,
    perturbed_id,
    speed_change,
    speed_variants,
    sweep_factors,
)
from satn.store import build_dataset, open_dataset

SR = 16000


def _peak_hz(wave: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.fft.rfftfreq(len(wave), 1 / SR)[spectrum.argmax()])


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_change_plays_faster_tempo_and_pitch(factor):
    t = np.arange(SR) / SR
    wave = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    out = speed_change(wave, factor, SR).numpy()
    assert abs(len(out) - SR / factor) <= 1
    assert abs(_peak_hz(out) - 440 * factor) < 3
    assert np.array_equal(speed_change(wave, 1.0, SR).numpy(), wave)


def test_ids_are_marked_with_the_factor_and_map_back():
    assert perturbed_id("Actor_01/03-01-05", 0.9) == "Actor_01/03-01-05@sp0.9"
    assert original_id(perturbed_id("a@b", 1.1)) == "a@b"
    assert original_id("plain") == "plain"


def _corpus(root: Path, n: int = 6) -> CorpusLoad:
    """``n`` short utterances of two speakers, each a tone of its own length."""
    rng = np.random.default_rng(0)
    utts = []
    for i in range(n):
        t = np.arange(int(SR * (0.3 + 0.05 * i))) / SR
        wave = 0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t) + 0.01 * rng.normal(size=t.size)
        path = root / f"u{i}.wav"
        sf.write(path, wave.astype(np.float32), SR)
        utts.append(Utterance(id=f"spk{i % 2}/u{i}", path=str(path), speaker=f"spk{i % 2}",
                              session=f"spk{i % 2}", label=("neu", "ang")[i % 2]))
    return CorpusLoad(utterances=utts)


def _base(tmp_path: Path, load: CorpusLoad):
    info = build_dataset(load, FeatureConfig(), str(tmp_path / "features"), corpus_tag="tiny",
                         progress=False)
    return open_dataset(info.uri)


def test_each_factor_is_its_own_cached_dataset_with_the_originals_metadata(tmp_path):
    (tmp_path / "audio").mkdir()
    base = _base(tmp_path, _corpus(tmp_path / "audio"))
    lines: list[str] = []
    variants = speed_variants(base, [0.9, 1.0, 1.1], echo=lines.append)
    assert len(variants) == 2  # 1.0 is the original itself
    keys = {base.manifest["key"]} | {v.manifest["key"] for v in variants}
    assert len(keys) == 3 and len({base.uri, *(v.uri for v in variants)}) == 3
    orig = base.meta.set_index("id")
    for factor, v in zip((0.9, 1.1), variants, strict=True):
        assert v.manifest["feature_config"]["speed"] == factor
        meta = v.meta.set_index("id")
        assert sorted(meta.index) == sorted(perturbed_id(u, factor) for u in orig.index)
        for uid, row in meta.iterrows():
            o = orig.loc[original_id(uid)]
            assert (row.label, row.speaker, row.path) == (o.label, o.speaker, o.path)
            # frames: 1 + N // hop, and N becomes N / factor
            assert abs(row.n_frames - 1 - (o.n_frames - 1) / factor) <= 2
    assert all("(written)" in line for line in lines)
    created = [v.manifest["created"] for v in variants]
    again: list[str] = []
    reused = speed_variants(base, [1.1, 0.9], echo=again.append)
    assert all("(cached)" in line for line in again)
    assert {v.uri for v in reused} == {v.uri for v in variants}
    assert sorted(v.manifest["created"] for v in reused) == sorted(created)


def test_a_bad_file_is_reported_and_the_variant_is_built_without_it(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    load = _corpus(audio)
    # a file the original build already rejects, and one just long enough for one window
    (audio / "broken.wav").write_bytes(b"RIFF not really a wave file")
    sf.write(audio / "short.wav", np.full(420, 0.1, np.float32), SR)
    load.utterances += [Utterance("spk0/broken", str(audio / "broken.wav"), "spk0", "spk0", "neu"),
                        Utterance("spk1/short", str(audio / "short.wav"), "spk1", "spk1", "ang")]
    base = _base(tmp_path, load)
    assert "spk0/broken" not in set(base.meta["id"]) and "spk1/short" in set(base.meta["id"])
    (audio / "u2.wav").write_bytes(b"\x00" * 64)  # corrupted after the original was built
    variants = speed_variants(base, [1.1], echo=lambda _: None)
    ids = set(variants[0].meta["id"])
    assert len(ids) == len(base) - 2
    assert perturbed_id("spk0/u2", 1.1) not in ids  # unreadable now
    assert perturbed_id("spk1/short", 1.1) not in ids  # 420 / 1.1 < one 400-sample window
    report = json.loads(Path(variants[0].uri, "report.json").read_text())
    where = {Path(p["where"]).name: p["reason"] for p in report}
    assert set(where) == {"u2.wav", "short.wav"}
    assert "too short" in where["short.wav"]


class _Copies:
    """A stand-in for a speed variant: each utterance of ``data`` shortened, ids marked."""

    def __init__(self, data: MemoryDataset, factor: float):
        self._arrays = [a[:: 2] + factor for a in data.arrays()]
        self.meta = pd.DataFrame({"id": [perturbed_id(u, factor) for u in data.meta["id"]]})

    def arrays(self):
        return list(self._arrays)


@pytest.mark.parametrize("normalisation", ["global", "speaker"])
def test_copies_join_the_training_side_only_with_their_originals_labels(normalisation):
    cfg = ExperimentConfig().override({"recipe.normalisation": normalisation})
    data = MemoryDataset(per_speaker_class=1)
    copies = [_Copies(data, 0.9), _Copies(data, 1.1)]
    plain = prepare_folds(data, cfg)
    more = prepare_folds(data, cfg, perturbed=copies)
    label = dict(zip(data.meta["id"], data.meta["label"], strict=True))
    classes = list(cfg.data.classes)
    for p, m in zip(plain, more, strict=True):
        train = m.data.train
        originals = set(p.data.train.ids)
        marked = [u for u in train.ids if "@sp" in u]
        assert set(train.ids) - set(marked) == originals
        assert sorted(marked) == sorted(perturbed_id(u, f) for u in originals for f in (0.9, 1.1))
        for uid, y in zip(train.ids, train.labels, strict=True):
            assert classes[y] == label[original_id(uid)]
        # statistics of the original training side; dev and test untouched, bit for bit
        assert np.array_equal(m.normalizer.mean, p.normalizer.mean)
        assert np.array_equal(m.normalizer.std, p.normalizer.std)
        for side in ("dev", "test"):
            a, b = getattr(m.data, side), getattr(p.data, side)
            assert a.ids == b.ids and not any("@sp" in u for u in a.ids)
            assert all(np.array_equal(a[i][0], b[i][0]) for i in range(len(a)))
        # a copy is standardised as its original is: same fold and speaker statistics
        uid = marked[0]
        raw = copies[0 if uid.endswith("0.9") else 1]._arrays[
            list(data.meta["id"]).index(original_id(uid))]
        spk = data.meta.set_index("id").loc[original_id(uid), "speaker"]
        if normalisation == "speaker":
            raw = m.speaker_norms[spk](raw)
        x = train[train.index[uid]][0].numpy()
        assert np.allclose(x, m.normalizer(raw)[: len(x)], atol=1e-6)


def test_satn_train_with_speeds_on_the_demo_corpus(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, [
        "train", "--epochs", "1", "--device", "cpu", "--no-mlflow", "--fold", "1",
        "--set", "data.demo_per_class=1", "--set", "recipe.speeds=[0.9,1.1]",
        "--set", "recipe.gain_db=3", "--set", "recipe.noise_snr_db=10",
        "--set", "model.tcn.channels=8", "--set", "model.tcn.dilations=1,2"])
    assert result.exit_code == 0, result.output
    assert "speed 0.9:" in result.output and "speed 1.1:" in result.output
    folders = sorted(p.name for p in (tmp_path / "satn-data" / "features").iterdir())
    assert [f.split("-")[2] for f in folders] == ["logmel", "logmel", "logmel"]
    assert {f.split("-")[3] for f in folders} >= {"sp0.9", "sp1.1"}


def test_a_sweep_builds_every_factor_its_trials_can_ask_for():
    from satn.space import ParamSpec, SearchSpace

    space = SearchSpace(name="s", fixed={"recipe.gain_db": 3},
                        params={"recipe.speeds": ParamSpec("choice", values=(
                            "", "0.9,1.1", "[0.9, 1.0, 1.2]"))})
    cfg = ExperimentConfig().override({"recipe.speeds": "1.05"})
    assert sweep_factors(cfg, space) == [0.9, 1.05, 1.1, 1.2]
    assert sweep_factors(ExperimentConfig(), SearchSpace(name="none")) == []
