"""Names from data never choose where a file goes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from satn.errors import InputError
from satn.safenames import check_name, is_plain, safe_name, safe_names

HOSTILE = ["../../escape", "/etc/evil", "a/b", "..", ".", ".hidden", "", "a\\b", "x" * 300,
           "ünï", "con:1", "a..b", "-dash", "Ses01F_impro01_F000"]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.text(max_size=200))
def test_any_id_becomes_one_plain_component_inside_the_folder(uid):
    name = safe_name(uid)
    assert is_plain(name)
    folder = Path("/runs/x/attention")
    assert (folder / f"{name}.npy").resolve().parent == folder


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.text(max_size=40), unique=True, max_size=30))
def test_distinct_ids_keep_distinct_names_and_a_way_back(ids):
    mapping = safe_names(ids + [safe_name(i) for i in ids if safe_name(i) not in ids])
    assert len(mapping) == len(set(mapping.values()))  # one file per id
    assert set(ids) <= set(mapping.values())


def test_plain_ids_are_kept_as_they_are():
    assert safe_name("Ses01F_impro01_F000") == "Ses01F_impro01_F000"
    assert safe_name("03-01-05-01-01-01-01") == "03-01-05-01-01-01-01"
    for uid in HOSTILE[:-1]:
        assert safe_name(uid) != uid or is_plain(uid)


def test_folder_names_must_be_plain():
    assert check_name("satn_tcn-20261202", "sweep name") == "satn_tcn-20261202"
    for bad in ["../x", "/abs", "a/b", "", ".hidden"]:
        with pytest.raises(InputError, match="sweep name"):
            check_name(bad, "sweep name")


def test_a_manifest_with_hostile_ids_trains_and_writes_inside_its_run(tmp_path, monkeypatch):
    """A manifest id such as ../../escape once wrote attention maps outside the run."""
    from satn.cli import main

    work = tmp_path / "deep" / "work"
    (work / "tmp").mkdir(parents=True)
    monkeypatch.chdir(work)
    # temporary folders inside the watched tree: an escape from one lands where we look
    monkeypatch.setattr("tempfile.tempdir", str(work / "tmp"))
    rng = np.random.default_rng(0)
    rows, ids = [], iter(["../../escape", "/abs/evil", "a/b", "..", "ok_1", "ok_2", "c/../../d",
                          ".dot", *[f"plain{i}" for i in range(40)]])
    for spk in ("s1", "s2", "s3", "s4"):
        for label, f0 in (("neu", 150.0), ("ang", 320.0)):
            for k in range(3):
                t = np.arange(12000) / 16000
                wav = work / f"{spk}_{label}_{k}.wav"
                sf.write(wav, (0.3 * np.sin(2 * np.pi * f0 * t)
                               + 0.01 * rng.standard_normal(t.size)).astype(np.float32), 16000)
                rows.append((next(ids), wav.name, spk, label))
    (work / "m.csv").write_text("id,path,speaker,label\n" + "".join(
        f"{i},{p},{s},{lab}\n" for i, p, s, lab in rows))
    (work / "cfg.yaml").write_text(yaml.safe_dump({
        "data": {"corpus": "manifest", "root": str(work / "m.csv"), "classes": ["neu", "ang"]},
        "folds": {"scheme": "heldout_speakers", "test_speakers": ["s4"], "dev_speakers": ["s1"]},
        "model": {"tcn": {"channels": 8, "dilations": [1]}, "attention": {"heads": 2}},
        "train": {"epochs": 1, "batch_size": 8, "device": "cpu"}}))
    before = set(tmp_path.rglob("*"))
    res = CliRunner().invoke(main, ["train", "--config", "cfg.yaml"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    new = set(tmp_path.rglob("*")) - before
    assert new and all(work in p.parents for p in new), sorted(map(str, new - {
        p for p in new if work in p.parents}))
    index = next(work.rglob("attention/index.json"))
    mapping = json.loads(index.read_text())
    # the dev speaker s1's probes, two per class: neu's first two ids and ang's
    assert set(mapping.values()) == {"../../escape", "/abs/evil", "..", "ok_1"}
    for safe in mapping:
        assert (index.parent / f"{safe}.npy").is_file() and is_plain(safe)
