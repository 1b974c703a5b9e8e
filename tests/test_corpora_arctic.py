"""CMU ARCTIC: prompts, speakers and unlabelled utterances, through the store."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from satn.config import ConfigError, DataConfig, FeatureConfig
from satn.corpora import load_corpus
from satn.corpora.arctic import load_arctic, read_prompts

PROMPTS = """( arctic_a0001 "Author of the danger trail, Philip Steels, etc." )
( arctic_a0002 "Not at this particular case, Tom, apologized Whittemore." )
( arctic_b0311 "The 29th very foggy." )
"""


def _corpus(root, speakers=("bdl", "slt"), stems=("arctic_a0001", "arctic_b0311")):
    root.mkdir(parents=True, exist_ok=True)
    (root / "cmuarctic.data").write_text(PROMPTS)
    rng = np.random.default_rng(0)
    for spk in speakers:
        (root / spk / "wav").mkdir(parents=True)
        for stem in stems:
            sf.write(root / spk / "wav" / f"{stem}.flac", rng.normal(0, 0.1, 8000), 16000)
    return root


def test_loads_speakers_prompts_and_no_labels(tmp_path):
    root = _corpus(tmp_path / "arctic")
    load = load_corpus(DataConfig(corpus="arctic", root=str(root)))
    assert [u.id for u in load.utterances] == ["bdl_arctic_a0001", "bdl_arctic_b0311",
                                               "slt_arctic_a0001", "slt_arctic_b0311"]
    u = load.utterances[1]
    assert (u.speaker, u.session, u.gender, u.corpus) == ("bdl", "bdl", "M", "arctic")
    assert u.label is None and u.transcript == "The 29th very foggy."
    assert load.utterances[2].gender == "F"
    assert "unlabelled 4" in load.summary()


def test_audio_without_a_prompt_is_a_problem_and_festvox_names_work(tmp_path):
    root = _corpus(tmp_path / "arctic", speakers=("cmu_us_rms_arctic",),
                   stems=("arctic_a0001", "arctic_z9999"))
    load = load_arctic(root)
    assert [u.id for u in load.utterances] == ["rms_arctic_a0001"]
    assert len(load.problems) == 1 and "arctic_z9999" in load.problems[0].reason


def test_bad_roots_say_why(tmp_path):
    with pytest.raises(ConfigError, match="not a directory"):
        load_arctic(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no speaker folders"):
        load_arctic(tmp_path / "empty")


def test_unlabelled_corpus_goes_through_the_store(tmp_path):
    from satn.store import build_dataset, open_dataset

    load = load_arctic(_corpus(tmp_path / "arctic"))
    info = build_dataset(load, FeatureConfig(), str(tmp_path / "feats"), corpus_tag="arctic",
                         progress=False)
    ds = open_dataset(info.uri)
    assert len(ds) == 4 and ds.manifest["classes"] == []
    assert all(lab is None for lab in ds.meta["label"])
    assert ds.meta["transcript"][0].startswith("Author")


def test_unlabelled_dataset_cannot_train_a_classifier(tmp_path):
    from satn.config import ExperimentConfig
    from satn.folddata import prepare_folds
    from satn.store import build_dataset, open_dataset

    load = load_arctic(_corpus(tmp_path / "arctic"))
    info = build_dataset(load, FeatureConfig(), str(tmp_path / "feats"), corpus_tag="arctic",
                         progress=False)
    with pytest.raises(ConfigError, match="no emotion label"):
        prepare_folds(open_dataset(info.uri), ExperimentConfig())


def test_prompt_file_parsing():
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "x.data"
        p.write_text(PROMPTS + "garbage line\n")
        assert read_prompts(p) == {
            "arctic_a0001": "Author of the danger trail, Philip Steels, etc.",
            "arctic_a0002": "Not at this particular case, Tom, apologized Whittemore.",
            "arctic_b0311": "The 29th very foggy."}


def test_the_real_arctic_corpus(shared_corpora):
    from satn.phonemes import Lexicon

    load = load_arctic(shared_corpora / "arctic")
    assert len(load.utterances) == 2264 and not load.problems
    assert {u.speaker for u in load.utterances} == {"bdl", "slt"}
    encoded, report = Lexicon().encode_all(u.transcript for u in load.utterances)
    assert all(len(e.ids) > 1 for e in encoded)
    assert report.rate < 0.01  # ARCTIC is almost all dictionary words
    digits = [e for u, e in zip(load.utterances, encoded, strict=True)
              if any(c.isdigit() for c in u.transcript)]
    assert len(digits) == 8  # four prompts with digits, two speakers
    assert all(w.isalpha() for e in digits for w in e.words)
