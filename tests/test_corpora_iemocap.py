"""IEMOCAP loader: the paper's Table 1, the full protocol, and the release's quirks."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
from iemocap_fixture import PAPER_PLAN, write_iemocap

from satn.config import ConfigError, DataConfig
from satn.corpora import CorpusLoad, load_corpus
from satn.corpora.iemocap import load_iemocap, parse_emo_evaluation, parse_transcriptions

CLASSES = ("neu", "hap", "sad", "ang")
# SATN paper, Table 1: improvised dialogs, exc -> hap (neu, hap, sad, ang, total).
TABLE1 = {
    "Ses01": (223, 132, 104, 62, 521),
    "Ses02": (217, 191, 100, 22, 530),
    "Ses03": (198, 149, 190, 90, 627),
    "Ses04": (174, 195, 81, 84, 534),
    "Ses05": (287, 280, 133, 31, 731),
    "all": (1099, 947, 608, 289, 2943),
}
FULL = {"neu": 1708, "hap": 1636, "sad": 1084, "ang": 1103}  # improvised + scripted: 5531

# A few utterances per session for the quirk tests.
SMALL_PLAN = {
    1: {"impro": {"neu": 4, "hap": 2, "exc": 3, "fru": 2, "xxx": 2}, "script": {"ang": 3}},
    2: {"impro": {"sad": 3, "ang": 2, "oth": 1}, "script": {"neu": 2, "exc": 1}},
}


@pytest.fixture(scope="module")
def paper_tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("iemocap")
    write_iemocap(root, PAPER_PLAN)
    return root


@pytest.fixture(scope="module")
def satn_load(paper_tree) -> CorpusLoad:
    return load_iemocap(paper_tree, protocol="satn")


def assert_table1(load: CorpusLoad, session: str) -> None:
    utts = [u for u in load.utterances if session == "all" or u.session == session]
    counts = Counter(u.label for u in utts)
    neu, hap, sad, ang, total = TABLE1[session]
    assert dict(counts) == {"neu": neu, "hap": hap, "sad": sad, "ang": ang}
    assert len(utts) == total


@pytest.mark.parametrize("session", list(TABLE1))
def test_satn_protocol_reproduces_table1(satn_load, session):
    assert_table1(satn_load, session)


def test_satn_protocol_is_improvised_only_and_clean(satn_load):
    assert satn_load.problems == []
    assert all(u.improvised and "_impro" in u.id for u in satn_load.utterances)
    assert {u.raw_label for u in satn_load.utterances} == {"neu", "hap", "exc", "sad", "ang"}


def test_full_protocol_gives_5531(paper_tree, satn_load):
    full = load_iemocap(paper_tree, protocol="full")
    assert full.problems == []
    assert len(full.utterances) == 5531
    assert dict(Counter(u.label for u in full.utterances)) == FULL
    scripted = [u for u in full.utterances if not u.improvised]
    assert scripted and all("_script" in u.id for u in scripted)
    assert {u.id for u in satn_load.utterances} < {u.id for u in full.utterances}


def test_output_sorted_and_deterministic(paper_tree, satn_load):
    ids = [u.id for u in satn_load.utterances]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert load_iemocap(paper_tree).utterances == satn_load.utterances


def test_speaker_is_session_plus_letter_before_number(satn_load):
    for u in satn_load.utterances:
        letter = u.id.rsplit("_", 1)[1][0]
        assert (u.gender, u.session, u.speaker) == (letter, u.id[:5], u.id[:5] + letter)
        assert Path(u.path).name == f"{u.id}.wav" and Path(u.path).is_file()
    # Speakers whose gender differs from the dialog prefix exist and follow the rule.
    crossed = [u for u in satn_load.utterances if u.id[5] != u.gender]
    assert {u.gender for u in crossed} == {"F", "M"}
    assert any(u.id.startswith("Ses01F_") and u.speaker == "Ses01M" for u in crossed)
    assert any(u.id.startswith("Ses01M_") and u.speaker == "Ses01F" for u in crossed)
    assert {u.speaker for u in satn_load.utterances} == {
        f"Ses0{s}{g}" for s in range(1, 6) for g in "FM"
    }


def test_hand_written_dialog_in_release_format(tmp_path):
    s1 = tmp_path / "Session1"
    for d in ("dialog/EmoEvaluation", "dialog/transcriptions", "sentences/wav/Ses01F_impro01"):
        (s1 / d).mkdir(parents=True)
    (s1 / "dialog/EmoEvaluation/Ses01F_impro01.txt").write_text(
        "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"
        "[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]\n"
        "C-E2:\tNeutral;\t()\n"
        "A-E4:\tval 2; act 3; dom  3;\t(mildly aggravated but staying polite, attitude)\n\n"
        "[8.5 - 9.75]\tSes01F_impro01_M000\texc\t[4.0000, 3.5000, 3.0000]\n"
    )
    (s1 / "dialog/transcriptions/Ses01F_impro01.txt").write_bytes(
        b"Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.\r\n"
        b"M: Yeah.\r\n"
        b"Ses01F_impro01_M000 [008.5000-009.7500]: Do you have your forms?\r\n"
    )
    for uid in ("Ses01F_impro01_F000", "Ses01F_impro01_M000"):
        (s1 / "sentences/wav/Ses01F_impro01" / f"{uid}.wav").write_bytes(b"")
    f, m = load_iemocap(tmp_path).utterances
    assert (f.speaker, f.gender, f.session, f.label, f.transcript) == (
        "Ses01F", "F", "Ses01", "neu", "Excuse me.",
    )  # fmt: skip
    assert (m.speaker, m.gender, m.session, m.label, m.raw_label) == (
        "Ses01M", "M", "Ses01", "hap", "exc",
    )  # fmt: skip
    assert m.transcript == "Do you have your forms?" and m.improvised and m.corpus == "iemocap"


def test_speakers_match_the_written_plan(tmp_path):
    written = write_iemocap(tmp_path, SMALL_PLAN)
    by_id = {u.id: u for u in load_iemocap(tmp_path, protocol="full").utterances}
    used = [w for w in written if w.raw_label in ("neu", "hap", "exc", "sad", "ang")]
    assert sorted(by_id) == sorted(w.id for w in used)
    for w in used:
        u = by_id[w.id]
        assert (u.speaker, u.gender, u.improvised) == (
            f"Ses{w.session:02d}{w.gender}", w.gender, w.improvised,
        )  # fmt: skip


def test_transcripts_from_crlf_files_without_strays(tmp_path):
    written = write_iemocap(tmp_path, SMALL_PLAN)
    raw = (tmp_path / "Session1/dialog/transcriptions/Ses01F_impro01.txt").read_bytes()
    assert b"\r\n" in raw and b"M: Yeah." in raw and b"_MXX0" in raw  # the quirks are there
    load = load_iemocap(tmp_path, protocol="full")
    expected = {w.id: w.transcript for w in written}
    assert load.utterances
    for u in load.utterances:
        # exact text: no '\r', no id-less line ("M: Yeah.") glued on
        assert u.transcript == expected[u.id]


def test_transcription_parser_skips_lines_without_id():
    text = (
        "Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.\r\n"
        "M: Yeah.\r\n"
        "F:Umm.\r\n"
        "Ses01F_impro01_M000 [008.0-009.1]: Do you have your forms?\r\n"
    )
    assert parse_transcriptions(text) == {
        "Ses01F_impro01_F000": "Excuse me.",
        "Ses01F_impro01_M000": "Do you have your forms?",
    }


def test_ids_without_label_are_not_utterances(tmp_path):
    write_iemocap(tmp_path, SMALL_PLAN)
    unlabeled = tmp_path / "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_MXX0.wav"
    assert unlabeled.is_file()
    load = load_iemocap(tmp_path, protocol="full")
    assert load.problems == []
    assert not any("XX" in u.id for u in load.utterances)


def test_evaluator_and_header_lines_are_ignored():
    text = (
        "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"
        "[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]\n"
        "C-E2:\tNeutral;\t()\n"
        "C-E3:\tAnger; Frustration;\t()\n"
        "A-E4:\tval 2; act 3; dom  3;\t(mildly aggravated but staying polite, attitude)\n"
        "\n"
        "[10.0100 - 11.3925]\tSes01F_impro01_M000\tfru\t[2.0000, 3.5000, 3.5000]\n"
    )
    labels, problems = parse_emo_evaluation(text, "f.txt")
    assert problems == []
    assert [(ll.line, ll.id, ll.label) for ll in labels] == [
        (3, "Ses01F_impro01_F000", "neu"),
        (8, "Ses01F_impro01_M000", "fru"),
    ]
    assert labels[0].start == pytest.approx(6.2901) and labels[0].end == pytest.approx(8.2357)


def test_malformed_label_line_reported_with_file_and_line(tmp_path):
    write_iemocap(tmp_path, SMALL_PLAN)
    label_file = tmp_path / "Session1/dialog/EmoEvaluation/Ses01F_impro01.txt"
    before = load_iemocap(tmp_path)
    lines = label_file.read_text().splitlines()
    lines.insert(2, "[6.2901 - ]\tSes01F_impro01_F099\t[2.5000, 2.5000]")  # line 3
    label_file.write_text("\n".join(lines) + "\n")
    after = load_iemocap(tmp_path)
    assert after.problems == [after.problems[0]]
    assert after.problems[0].where == f"{label_file}:3"
    assert "malformed" in after.problems[0].reason
    assert after.utterances == before.utterances  # the rest of the file is still used


def test_missing_wav_is_reported_not_dropped(tmp_path):
    gone = "Ses01F_impro01_F000"
    written = write_iemocap(tmp_path, SMALL_PLAN, missing_wavs={gone})
    planned = next(w for w in written if w.id == gone)
    load = load_iemocap(tmp_path)
    expected_wav = tmp_path / "Session1/sentences/wav/Ses01F_impro01" / f"{gone}.wav"
    assert [p.where for p in load.problems] == [str(expected_wav)]
    assert load.problems[0].reason.startswith("missing wav")
    assert gone not in {u.id for u in load.utterances}
    assert planned.wav is None


def test_a_dialog_without_its_label_file_is_reported_not_dropped(tmp_path):
    write_iemocap(tmp_path, SMALL_PLAN)
    label_file = tmp_path / "Session1/dialog/EmoEvaluation/Ses01F_impro01.txt"
    wavs = sorted((tmp_path / "Session1/sentences/wav/Ses01F_impro01").glob("*.wav"))
    label_file.unlink()
    load = load_iemocap(tmp_path)
    assert [p.where for p in load.problems] == [str(label_file)]
    assert load.problems[0].reason == (f"missing label file: the {len(wavs)} wav file(s) of "
                                       f"dialog Ses01F_impro01 are left out")
    assert not any(u.id.startswith("Ses01F_impro01_") for u in load.utterances)
    # a scripted dialog is outside the satn protocol: its missing labels are no problem
    script = next((tmp_path / "Session1/dialog/EmoEvaluation").glob("*script*.txt"))
    script.unlink()
    assert len(load_iemocap(tmp_path).problems) == 1


def test_tree_without_audio_reports_every_used_utterance(tmp_path):
    written = write_iemocap(tmp_path, SMALL_PLAN, wavs=False)
    load = load_iemocap(tmp_path, protocol="full")
    used = [w for w in written if w.raw_label in ("neu", "hap", "exc", "sad", "ang")]
    assert load.utterances == []
    assert sorted(Path(p.where).stem for p in load.problems) == sorted(w.id for w in used)


def test_missing_wav_of_unused_label_is_not_a_problem(tmp_path):
    written = write_iemocap(tmp_path, SMALL_PLAN)
    for w in written:
        if w.raw_label in ("fru", "xxx", "oth"):
            w.wav.unlink()
    assert load_iemocap(tmp_path, protocol="full").problems == []


def test_transcript_attached_only_when_present(tmp_path):
    write_iemocap(tmp_path, SMALL_PLAN, no_transcript={"Ses01F_impro01_F000"})
    by_id = {u.id: u for u in load_iemocap(tmp_path).utterances}
    assert by_id["Ses01F_impro01_F000"].transcript is None
    assert all(u.transcript for i, u in by_id.items() if i != "Ses01F_impro01_F000")


def test_label_map_is_configurable(satn_load, paper_tree):
    exc = sum(PAPER_PLAN[s]["impro"]["exc"] for s in PAPER_PLAN)
    no_merge = load_iemocap(paper_tree, label_map={})
    counts = Counter(u.label for u in no_merge.utterances)
    assert counts["hap"] == TABLE1["all"][1] - exc
    assert len(no_merge.utterances) == TABLE1["all"][4] - exc
    # exc as its own class; frustration merged into anger
    five = load_iemocap(paper_tree, classes=CLASSES + ("exc",), label_map={"fru": "ang"})
    fru = sum(PAPER_PLAN[s]["impro"]["fru"] for s in PAPER_PLAN)
    counts = Counter(u.label for u in five.utterances)
    assert counts["exc"] == exc and counts["ang"] == TABLE1["all"][3] + fru
    assert {u.raw_label for u in five.utterances if u.label == "ang"} == {"ang", "fru"}


def test_missing_sessions_are_fine_but_none_is_an_error(tmp_path):
    write_iemocap(tmp_path / "one", {3: SMALL_PLAN[1]})
    load = load_iemocap(tmp_path / "one", protocol="full")
    assert load.utterances and {u.session for u in load.utterances} == {"Ses03"}
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="Session"):
        load_iemocap(tmp_path / "empty")
    with pytest.raises(ConfigError, match="nowhere"):
        load_iemocap(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="protocol"):
        load_iemocap(tmp_path / "one", protocol="scripted")


def test_load_corpus_dispatches_iemocap_and_demo(tmp_path):
    write_iemocap(tmp_path, SMALL_PLAN)
    direct = load_iemocap(tmp_path, protocol="full")
    cfg = DataConfig(corpus="iemocap", root=str(tmp_path), protocol="full")
    assert load_corpus(cfg).utterances == direct.utterances
    demo = load_corpus(DataConfig(corpus="demo", root=str(tmp_path), protocol="full"))
    assert [u.id for u in demo.utterances] == [u.id for u in direct.utterances]
    assert {u.corpus for u in demo.utterances} == {"demo"}


def test_real_release_reproduces_table1():
    """Runs only where SATN_IEMOCAP_ROOT points at a licensed IEMOCAP release."""
    root = os.environ.get("SATN_IEMOCAP_ROOT")
    if not root:
        pytest.skip("set SATN_IEMOCAP_ROOT to an IEMOCAP release to check Table 1 on it")
    load = load_iemocap(root, protocol="satn")
    for session in TABLE1:
        assert_table1(load, session)
    full = load_iemocap(root, protocol="full")
    assert dict(Counter(u.label for u in full.utterances)) == FULL


# ---------------------------------------------------------------- regressions (found by the
# property tests in test_corpora_properties.py)

LINE = "[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]"


def _one_dialog(root: Path, raw: bytes, session: int = 1, uid: str = "Ses01F_impro01_F000"):
    s = root / f"Session{session}"
    (s / "dialog/EmoEvaluation").mkdir(parents=True)
    (s / "dialog/transcriptions").mkdir(parents=True)
    (s / "sentences/wav/Ses01F_impro01").mkdir(parents=True)
    (s / "dialog/EmoEvaluation/Ses01F_impro01.txt").write_bytes(raw)
    (s / "sentences/wav/Ses01F_impro01" / f"{uid}.wav").write_bytes(b"")
    return s


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-be-bom"])
def test_a_byte_order_mark_does_not_hide_the_first_line(tmp_path, encoding):
    def enc(text):
        if encoding == "utf-16-be-bom":
            return b"\xfe\xff" + text.encode("utf-16-be")
        return text.encode(encoding)

    s = _one_dialog(tmp_path, enc(LINE + "\r\n"))
    (s / "dialog/transcriptions/Ses01F_impro01.txt").write_bytes(
        enc("Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.\r\n"))
    (u,) = load_iemocap(tmp_path).utterances  # was: no utterance, no problem
    assert (u.id, u.label, u.transcript) == ("Ses01F_impro01_F000", "neu", "Excuse me.")


def test_an_id_of_another_session_or_dialog_is_a_problem(tmp_path):
    _one_dialog(tmp_path, (LINE + "\n").encode(), session=2)  # Ses01 ids in Session2
    load = load_iemocap(tmp_path)
    assert load.utterances == []  # was: an utterance of session Ses01 from Session2
    (p,) = load.problems
    assert p.where.endswith("Ses01F_impro01.txt:1") and "not of dialog" in p.reason


def test_an_id_that_is_no_file_name_is_a_problem(tmp_path):
    _one_dialog(tmp_path, (LINE.replace("_F000", "_/../F000") + "\n").encode())
    load = load_iemocap(tmp_path)
    assert load.utterances == [] and "names no session/actor" in load.problems[0].reason


def test_a_time_that_reads_as_infinite_is_a_problem():
    labels, problems = parse_emo_evaluation(LINE.replace("[6.2901", "[" + "9" * 400), "f.txt")
    assert labels == [] and problems[0].where == "f.txt:1"
    assert "bad time span" in problems[0].reason and len(problems[0].reason) < 60


def test_labels_left_out_are_counted_per_label(tmp_path):
    write_iemocap(tmp_path, SMALL_PLAN)
    load = load_iemocap(tmp_path)  # satn protocol: improvised only
    plan = [SMALL_PLAN[s]["impro"] for s in SMALL_PLAN]
    assert dict(load.left_out) == {"fru": 2, "xxx": 2, "oth": 1} and not load.unknown
    assert sum(load.left_out.values()) + len(load.utterances) == sum(
        sum(p.values()) for p in plan)
    assert "5 rows with labels not in the protocol: fru 2, xxx 2, oth 1" in load.summary()


def test_unknown_labels_are_counted_and_a_problem_once(tmp_path):
    lines = [LINE, LINE.replace("F000\tneu", "F001\tzzz"), LINE.replace("F000\tneu", "M002\tzzz"),
             LINE.replace("F000\tneu", "M003\tfru")]
    _one_dialog(tmp_path, ("\n".join(lines) + "\n").encode())
    load = load_iemocap(tmp_path)
    assert (dict(load.left_out), dict(load.unknown)) == ({"fru": 1}, {"zzz": 2})
    (p,) = load.problems
    assert p.where.endswith("Ses01F_impro01.txt:2") and "unknown label 'zzz'" in p.reason
    assert load.summary().endswith("; 1 rows with labels not in the protocol: fru 1"
                                   "; 2 rows with unknown labels: zzz 2")


def test_a_label_line_behind_a_damaged_byte_is_a_problem_not_lost(tmp_path):
    _one_dialog(tmp_path, b"% header\n\xff" + LINE.encode() + b"\n")
    load = load_iemocap(tmp_path)
    assert load.utterances == []  # was: no utterance and no problem
    (p,) = load.problems
    assert p.where.endswith("Ses01F_impro01.txt:2") and "stray characters" in p.reason
