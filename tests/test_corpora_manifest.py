"""Manifest loader (CSV/TSV) and the load_corpus dispatch."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from satn.config import ConfigError, DataConfig
from satn.corpora import load_corpus
from satn.corpora.manifest import load_manifest


def audio(root: Path, *names: str) -> None:
    for n in names:
        f = root / n
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"")


def write(path: Path, rows: list[list[str]], sep: str) -> Path:
    path.write_text("".join(sep.join(r) + "\n" for r in rows))
    return path


ROWS = [
    ["path", "speaker", "label", "gender", "transcript"],
    ["a/one.wav", "spk1", "neu", "F", "hello there"],
    ["a/two.flac", "spk1", "Hap", "female", ""],
    ["b/three.wav", "spk2", "exc", "m", "yes"],
    ["b/four.wav", "spk2", "fru", "", ""],  # no class: not used, not a problem
]


@pytest.mark.parametrize(
    "name, sep", [("m.csv", ","), ("m.tsv", "\t"), ("m.txt", "\t"), ("m.list", ",")]
)
def test_csv_and_tsv_by_extension_or_sniffing(tmp_path, name, sep):
    audio(tmp_path, "a/one.wav", "a/two.flac", "b/three.wav", "b/four.wav")
    load = load_manifest(write(tmp_path / name, ROWS, sep), label_map={"exc": "hap"})
    assert load.problems == []
    assert [(u.id, u.label, u.raw_label) for u in load.utterances] == [
        ("one", "neu", "neu"), ("two", "hap", "hap"), ("three", "hap", "exc"),
    ]  # fmt: skip
    one, two, three = load.utterances
    assert one.path == str(tmp_path / "a/one.wav")  # relative to the manifest's folder
    assert (one.speaker, one.session, one.gender, one.transcript) == (
        "spk1", "spk1", "F", "hello there",
    )  # fmt: skip
    assert (two.gender, two.transcript, three.gender) == ("F", None, "M")
    assert {u.corpus for u in load.utterances} == {"manifest"}


def test_optional_id_and_session_columns_and_absolute_paths(tmp_path):
    audio(tmp_path, "x/clip.wav")
    rows = [
        ["ID", " Path ", "Speaker", "Session", "Label"],  # case and spaces in headers
        ["u1", str(tmp_path / "x/clip.wav"), "p1", "day1", "sad"],
    ]
    (tmp_path / "sub").mkdir()
    (u,) = load_manifest(write(tmp_path / "sub" / "m.csv", rows, ",")).utterances
    assert (u.id, u.session, u.path, u.gender) == ("u1", "day1", str(tmp_path / "x/clip.wav"), None)


def test_missing_required_columns_named(tmp_path):
    m = write(tmp_path / "m.csv", [["file", "speaker", "emotion"], ["a.wav", "s", "neu"]], ",")
    with pytest.raises(ConfigError) as e:
        load_manifest(m)
    msg = str(e.value)
    assert str(m) in msg and "'path'" in msg and "'label'" in msg and "'emotion'" in msg
    assert "'speaker'" not in msg.split("found")[0]


def test_duplicate_ids_are_a_config_error(tmp_path):
    audio(tmp_path, "a/x.wav", "b/x.wav", "c/y.wav")
    rows = [["path", "speaker", "label"], ["a/x.wav", "s", "neu"], ["b/x.wav", "s", "sad"],
            ["c/y.wav", "s", "ang"]]  # fmt: skip
    with pytest.raises(ConfigError, match=r"repeated: x \(lines 2, 3\)"):
        load_manifest(write(tmp_path / "m.csv", rows, ","))


def test_row_problems_name_manifest_line(tmp_path):
    audio(tmp_path, "ok.wav", "g.wav")
    rows = [
        ["path", "speaker", "label", "gender"],
        ["ok.wav", "s", "neu", "F"],
        ["gone.wav", "s", "ang", "M"],  # line 3: file missing
        ["g.wav", "s", "sad", "x"],  # line 4: unknown gender
        ["", "s", "neu", "F"],  # line 5: empty path
        ["gone2.wav", "s", "fru", "F"],  # unused label: its file is not checked
    ]
    m = write(tmp_path / "m.tsv", rows, "\t")
    load = load_manifest(m)
    assert [u.id for u in load.utterances] == ["ok"]
    assert [p.where for p in load.problems] == [f"{m}:3", f"{m}:4", f"{m}:5"]
    assert "missing" in load.problems[0].reason and "gone.wav" in load.problems[0].reason


def test_missing_manifest_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="nowhere.csv"):
        load_manifest(tmp_path / "nowhere.csv")
    with pytest.raises(ConfigError, match="empty"):
        load_manifest(write(tmp_path / "e.csv", [], ","))


def test_load_corpus_dispatch_and_errors(tmp_path):
    audio(tmp_path, "a/one.wav", "a/two.flac", "b/three.wav", "b/four.wav")
    m = write(tmp_path / "m.csv", ROWS, ",")
    cfg = DataConfig(corpus="manifest", root=str(m), classes=("neu", "hap"), label_map={})
    assert [u.id for u in load_corpus(cfg).utterances] == ["one", "two"]
    with pytest.raises(ConfigError, match="data.corpus must be one of .*not 'timit'"):
        load_corpus(DataConfig(corpus="timit", root=str(tmp_path)))
    with pytest.raises(ConfigError, match="data.root is empty"):
        load_corpus(DataConfig(corpus="iemocap", root=""))
    for corpus in ("iemocap", "demo", "ravdess"):
        with pytest.raises(ConfigError, match=re.escape(str(tmp_path / "missing"))):
            load_corpus(DataConfig(corpus=corpus, root=str(tmp_path / "missing")))
        with pytest.raises(ConfigError, match="not a directory"):
            load_corpus(DataConfig(corpus=corpus, root=str(m)))
    with pytest.raises(ConfigError, match="not a file"):
        load_corpus(DataConfig(corpus="manifest", root=str(tmp_path)))


def test_a_manifest_that_is_not_utf8_names_the_file_and_the_fix(tmp_path):
    audio(tmp_path, "a/one.wav")
    m = tmp_path / "latin1.csv"
    m.write_bytes("path,speaker,label,transcript\na/one.wav,s1,neu,café\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1.csv:2: not UTF-8 text .*save the manifest as UTF-8"):
        load_manifest(m)


def test_audio_that_cannot_be_reached_is_a_problem_not_a_crash(tmp_path, monkeypatch):
    audio(tmp_path, "a/one.wav", "locked/two.wav")
    m = write(tmp_path / "m.csv", [["path", "speaker", "label"], ["a/one.wav", "s1", "neu"],
                                   ["locked/two.wav", "s1", "hap"]], ",")
    real_is_file = Path.is_file

    def is_file(self):  # root enters any folder, so the denial is simulated
        if self.parent.name == "locked":
            raise PermissionError(13, "Permission denied", str(self))
        return real_is_file(self)

    monkeypatch.setattr(Path, "is_file", is_file)
    load = load_manifest(m, classes=("neu", "hap"))
    assert [u.id for u in load.utterances] == ["one"]
    assert [p.where for p in load.problems] == [f"{m}:3"]
    assert "cannot reach audio file" in load.problems[0].reason
    assert "Permission denied" in load.problems[0].reason


# ---------------------------------------------------------------- regressions (found by the
# property tests in test_corpora_properties.py)


def test_values_past_the_header_are_a_problem_not_a_cut_transcript(tmp_path):
    audio(tmp_path, "a.wav", "b.wav")
    m = tmp_path / "m.csv"
    m.write_text("path,speaker,label,transcript\na.wav,s1,neu,hello, world\nb.wav,s1,sad,ok,\n")
    load = load_manifest(m)  # was: transcript "hello", the rest dropped silently
    assert [u.id for u in load.utterances] == ["b"]  # a trailing delimiter is harmless
    assert [p.where for p in load.problems] == [f"{m}:2"]
    assert "5 values for 4 columns" in load.problems[0].reason


def test_a_repeated_header_column_is_an_error_at_line_1(tmp_path):
    m = tmp_path / "m.csv"
    m.write_text("path,speaker,label,Label\na.wav,s1,neu,zzz\n")
    with pytest.raises(ConfigError, match=r"m.csv:1: column\(s\) \['label'\] appear more"):
        load_manifest(m)


def test_a_decoding_error_names_its_line_not_a_buffer_offset(tmp_path):
    m = tmp_path / "m.csv"
    m.write_bytes(b"path,speaker,label\n" + b"x,s,neu\n" * 5000 + "a.wav,s1,caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"m.csv:5002: not UTF-8 text"):
        load_manifest(m)


def test_utf16_with_bom_and_blank_lines(tmp_path):
    audio(tmp_path, "a.wav", "b.wav")
    m = tmp_path / "m.tsv"  # a spreadsheet's "Unicode text": UTF-16 with BOM, tabs, CRLF
    m.write_bytes("path\tspeaker\tlabel\r\n\r\na.wav\ts1\tneu\r\n  \r\n\t\t\r\nb.wav\ts2\thap\r\n"
                  .encode("utf-16"))
    load = load_manifest(m)
    assert [u.id for u in load.utterances] == ["a", "b"] and load.problems == []


def test_a_row_csv_cannot_read_is_an_error_naming_its_line(tmp_path):
    m = tmp_path / "m.csv"
    m.write_bytes(b"path,speaker,label\na.wav,s1,neu\n\"" + b"x" * 200_000 + b"\",s1,neu\n")
    with pytest.raises(ConfigError, match=r"m.csv:3: unreadable row \(field larger"):
        load_manifest(m)  # was: a csv.Error traceback


def test_labels_not_in_the_protocol_are_counted_per_label(tmp_path):
    audio(tmp_path, "a.wav", "b.wav", "c.wav", "d.wav", "e.wav")
    m = write(tmp_path / "m.csv", [["path", "speaker", "label"], ["a.wav", "s", "neu"],
                                   ["b.wav", "s", "fru"], ["c.wav", "s", "Nue"],
                                   ["d.wav", "s", "fru"], ["e.wav", "s", "nue"]], ",")
    load = load_manifest(m)
    assert (dict(load.left_out), dict(load.unknown)) == ({"fru": 2}, {"nue": 2})
    (p,) = load.problems  # one problem per unknown label, at its first row
    assert p.where == f"{m}:4" and "unknown label 'nue'" in p.reason
    assert load.summary() == ("1 utterances (neu 1); 1 problem(s); 2 rows with labels not in "
                              "the protocol: fru 2; 2 rows with unknown labels: nue 2")
    mapped = load_manifest(m, label_map={"nue": "none"})  # named in the map: left out on purpose
    assert (dict(mapped.left_out), dict(mapped.unknown), mapped.problems) == (
        {"fru": 2, "nue": 2}, {}, [])


def test_the_features_command_prints_the_label_counts(tmp_path, monkeypatch):
    import json

    import numpy as np
    import soundfile as sf
    from click.testing import CliRunner

    from satn.cli import main

    monkeypatch.chdir(tmp_path)
    rows = [("a.wav", "neu"), ("b.wav", "hap"), ("c.wav", "fru"), ("d.wav", "fru"),
            ("e.wav", "xxx"), ("f.wav", "zzz")]
    for name, _ in rows:
        sf.write(tmp_path / name, 0.3 * np.sin(np.arange(4000) / 5), 16000)
    m = write(tmp_path / "m.csv", [["path", "speaker", "label"],
                                   *([n, "s1", lab] for n, lab in rows)], ",")
    res = CliRunner().invoke(main, ["features", "--corpus", "manifest", "--root", str(m),
                                    "--set", "data.classes=[neu, hap]", "--no-progress",
                                    "--out", str(tmp_path / "f")])
    assert res.exit_code == 0, res.output
    assert ("2 utterances (hap 1, neu 1); 1 problem(s); 3 rows with labels not in the "
            "protocol: fru 2, xxx 1; 1 rows with unknown labels: zzz 1") in res.output
    report = json.loads(next((tmp_path / "f").glob("*/report.json")).read_text())
    assert report == [{"where": f"{m}:7", "reason": "unknown label 'zzz': no class and not "
                                                    "in the label map; its rows are left out"}]
