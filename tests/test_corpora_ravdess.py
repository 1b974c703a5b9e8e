"""RAVDESS loader: file-name codes -> labels, speakers, genders, transcripts."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from satn.config import ConfigError, DataConfig
from satn.corpora import load_corpus
from satn.corpora.ravdess import load_ravdess

ALL8 = ("neu", "cal", "hap", "sad", "ang", "fea", "dis", "sur")


def touch(root: Path, name: str, actor: int | None = None) -> Path:
    actor = int(Path(name).stem[-2:]) if actor is None else actor
    f = root / f"Actor_{actor:02d}" / name
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_bytes(b"")  # the loader never reads audio
    return f


@pytest.fixture
def tree(tmp_path) -> Path:
    """Actors 1 and 2 with every speech file, plus song files that must be skipped."""
    for actor in (1, 2):
        for emo in range(1, 9):
            for inten in (1,) if emo == 1 else (1, 2):
                for stmt in (1, 2):
                    for rep in (1, 2):
                        touch(
                            tmp_path,
                            f"03-01-{emo:02d}-{inten:02d}-{stmt:02d}-{rep:02d}-{actor:02d}.wav",
                        )
        touch(tmp_path, f"03-02-03-01-01-01-{actor:02d}.wav")  # song
    (tmp_path / "Actor_01" / "notes.txt").write_text("not audio")
    return tmp_path


def test_codes_map_to_labels_speakers_and_transcripts(tree):
    load = load_ravdess(tree, classes=ALL8, label_map={})
    assert load.problems == []
    assert len(load.utterances) == 2 * 60  # 60 speech files per actor, songs skipped
    by_id = {u.id: u for u in load.utterances}
    u = by_id["03-01-05-02-02-01-01"]
    assert (u.label, u.raw_label, u.speaker, u.session, u.gender) == (
        "ang", "ang", "Actor_01", "Actor_01", "M",
    )  # fmt: skip
    assert u.transcript == "Dogs are sitting by the door" and u.improvised is False
    assert by_id["03-01-01-01-01-02-02"].gender == "F"
    assert by_id["03-01-01-01-01-02-02"].transcript == "Kids are talking by the door"
    for u in load.utterances:
        code = u.id.split("-")
        assert ALL8[int(code[2]) - 1] == u.label
        assert u.speaker == f"Actor_{code[6]}" == u.session
        assert u.gender == ("M" if int(code[6]) % 2 else "F")
        assert Path(u.path).parent.name == u.speaker
    assert [(u.speaker, u.id) for u in load.utterances] == sorted(
        (u.speaker, u.id) for u in load.utterances
    )


def test_default_classes_and_label_map(tree):
    counts = Counter(u.label for u in load_ravdess(tree).utterances)
    assert dict(counts) == {"neu": 8, "hap": 16, "sad": 16, "ang": 16}
    merged = Counter(u.label for u in load_ravdess(tree, label_map={"cal": "neu"}).utterances)
    assert merged["neu"] == 8 + 16


def test_malformed_names_are_problems(tree):
    bad = [
        touch(tree, "03-01-09-01-01-01-01.wav"),  # no emotion 09
        touch(tree, "03-01-03-03-01-01-01.flac"),  # no intensity 03
        touch(tree, "03-01-03-01-05-01-01.wav"),  # no statement 05
        touch(tree, "03-01-03-01-01-01-02.wav", actor=1),  # actor 02 in Actor_01
        touch(tree, "03-01-03-01-01.wav", actor=1),
        touch(tree, "recording.flac", actor=2),
    ]
    load = load_ravdess(tree)
    assert sorted(p.where for p in load.problems) == sorted(str(f) for f in bad)
    assert len(load.utterances) == 2 * 28  # the good files are all still used


def test_missing_root_or_actors_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="nowhere"):
        load_ravdess(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="Actor_NN"):
        load_ravdess(tmp_path)


def test_load_corpus_dispatches_ravdess(tree):
    cfg = DataConfig(corpus="ravdess", root=str(tree), label_map={"cal": "neu"})
    assert load_corpus(cfg).utterances == load_ravdess(tree, label_map={"cal": "neu"}).utterances


def test_shared_ravdess_counts(shared_corpora):
    root = shared_corpora / "ravdess"
    everything = load_ravdess(root, classes=ALL8, label_map={})
    assert everything.problems == []
    assert len(everything.utterances) == 960  # 16 actors x 60 speech files
    # Per actor: neutral 1 intensity x 2 statements x 2 repetitions = 4; others 8.
    counts = Counter(u.label for u in everything.utterances)
    assert counts == {"neu": 64, **{c: 128 for c in ALL8[1:]}}
    assert Counter(u.speaker for u in everything.utterances) == {
        f"Actor_{a:02d}": 60 for a in range(1, 17)
    }
    genders = {u.speaker: u.gender for u in everything.utterances}
    assert Counter(genders.values()) == {"M": 8, "F": 8}
    default = load_ravdess(root)
    assert dict(Counter(u.label for u in default.utterances)) == {
        "neu": 64, "hap": 128, "sad": 128, "ang": 128,
    }  # fmt: skip
    assert len(default.utterances) == 448


def test_other_scripts_digits_and_unknown_parts_are_problems(tmp_path):
    # found by the property tests: int() reads U+0661 as 1, and modality 07 is no part
    arabic = touch(tmp_path, "03-01-03-01-01-01-0\u0661.wav", actor=1)
    unknown = touch(tmp_path, "07-01-03-01-01-01-01.wav")
    song = touch(tmp_path, "03-02-03-01-01-01-01.wav")  # a known part: skipped quietly
    load = load_ravdess(tmp_path)
    assert load.utterances == []
    assert sorted(p.where for p in load.problems) == sorted([str(arabic), str(unknown)])
    assert str(song) not in {p.where for p in load.problems}


def test_emotions_the_classes_leave_out_are_counted(tree):
    load = load_ravdess(tree)  # default classes: neu, hap, sad, ang
    assert dict(load.left_out) == {"cal": 16, "fea": 16, "dis": 16, "sur": 16}
    assert not load.unknown and load.problems == []
    assert "64 rows with labels not in the protocol: cal 16, dis 16, fea 16, sur 16" in (
        load.summary())
