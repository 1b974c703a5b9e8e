"""Property-based tests of the corpus parsers on generated and mutated inputs.

Every input either parses to valid records (fields well-formed, speaker and session
consistent, every label line or row accounted for) or fails with an InputError that
names the file and the line. Budgets are small and derandomized, so the default suite
stays fast and CI sees the same examples every run.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import re
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from satn.config import ConfigError
from satn.corpora.base import map_label
from satn.corpora.iemocap import (
    IEMOCAP_LABELS,
    decode_text,
    load_iemocap,
    parse_emo_evaluation,
    parse_transcriptions,
)
from satn.corpora.manifest import load_manifest
from satn.corpora.ravdess import EMOTIONS, STATEMENTS, load_ravdess
from satn.errors import InputError

# SATN_HYPOTHESIS_EXAMPLES=1000 for a longer hunt; the default suite runs 60 per property
SETTINGS = settings(max_examples=int(os.environ.get("SATN_HYPOTHESIS_EXAMPLES", "60")),
                    deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
CLASSES = ("neu", "hap", "sad", "ang")
LABEL_MAP = {"exc": "hap"}
ENDINGS = st.sampled_from(["\n", "\r\n", "\r"])
# "utf-16" writes a BOM; "bad-byte" is UTF-8 with a byte no UTF-8 has (0xff) for the é
# of an evaluator line; Latin-1 writes that é as 0xe9, also no UTF-8
ENCODINGS = st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "latin-1", "bad-byte"])
# labels the release has, and ones nobody has (typos, other corpora's names)
RAW_LABELS = st.sampled_from([*IEMOCAP_LABELS, "Neu", "zzz", "nue", "happy"])
# text without line breaks (str.splitlines breaks at more than \r and \n)
LINE_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=30)


def line_ends(draw, n: int) -> list[str]:
    """One style for the file (LF, CRLF, old Mac CR), or LF and CRLF mixed.

    A lone CR mixed with LF is ambiguous ("\r" + "\n" of an empty line reads as one
    CRLF), so CR only comes alone.
    """
    if draw(st.booleans()):
        return [draw(ENDINGS)] * n
    return draw(st.lists(st.sampled_from(["\n", "\r\n"]), min_size=n, max_size=n))


def render(lines: list[str], endings: list[str], encoding: str) -> bytes:
    text = "".join(t + e for t, e in zip(lines, endings, strict=True))
    if encoding == "bad-byte":
        return text.encode("utf-8").replace("é".encode(), b"\xff")
    return text.encode(encoding, errors="replace")


def utt_id(session: int, dialog_letter: str, kind: str, n: int, speaker: str, k: int) -> str:
    return f"Ses{session:02d}{dialog_letter}_{kind}{n:02d}_{speaker}{k:03d}"


@st.composite
def label_records(draw, ids=None):
    """(start, end, id, label) with 0 <= start <= end, in the release's number format."""
    start = draw(st.integers(0, 10**6)) / 10**4
    end = start + draw(st.integers(0, 10**5)) / 10**4
    uid = draw(ids) if ids is not None else utt_id(
        draw(st.integers(1, 9)), draw(st.sampled_from("FM")),
        draw(st.sampled_from(["impro", "script"])), draw(st.integers(1, 9)),
        draw(st.sampled_from("FM")), draw(st.integers(0, 999)))
    return start, end, uid, draw(RAW_LABELS)


def label_line(draw, rec) -> str:
    start, end, uid, label = rec
    sep = draw(st.sampled_from(["\t", " ", "  ", "\t "]))
    vad = draw(st.sampled_from(["", f"{sep}[2.5000, 2.5000, 2.5000]", "\t[]"]))
    pad = draw(st.sampled_from(["", " ", "\t", "  "]))
    return f"{pad}[{start:.4f} - {end:.4f}]{sep}{uid}{sep}{label}{vad}{pad}"


NOISE = st.sampled_from([
    "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", "", "   ", "\t",
    "C-E2:\tNeutral;\t()", "A-E4:\tval 2; act 3; dom  3;\t(mildly aggravated)",
    "C-F1:\tAnger; Frustration;\t(a [bracket] inside)", "C-E3:\tNeutral;\t(café, déjà vu)",
])


# ---------------------------------------------------------------- EmoEvaluation


@SETTINGS
@given(st.data())
def test_emo_evaluation_round_trips_any_encoding_and_line_ends(data):
    records = data.draw(st.lists(label_records(), max_size=12))
    lines, expected = [], []
    for rec in records:
        lines += data.draw(st.lists(NOISE, max_size=3))
        lines.append(label_line(data.draw, rec))
        expected.append((len(lines), rec[2], rec[3].lower()))
    lines += data.draw(st.lists(NOISE, max_size=2))
    raw = render(lines, line_ends(data.draw, len(lines)), data.draw(ENCODINGS))

    labels, problems = parse_emo_evaluation(decode_text(raw), "f.txt")
    assert problems == []
    assert [(ll.line, ll.id, ll.label) for ll in labels] == expected
    for ll, (start, end, _, _) in zip(labels, records, strict=True):
        assert ll.start == pytest.approx(start) and ll.end == pytest.approx(end)


MUTATIONS = st.sampled_from(["delete", "insert", "replace", "truncate", "swap", "huge",
                             "prefix"])


@SETTINGS
@given(st.data())
def test_mutated_label_lines_are_records_or_problems_at_their_line(data):
    records = data.draw(st.lists(label_records(), min_size=1, max_size=8))
    lines = [label_line(data.draw, r) for r in records]
    mutated, prefixed = set(), set()
    for i in data.draw(st.lists(st.integers(0, len(lines) - 1), max_size=4)):
        text, how = lines[i], data.draw(MUTATIONS)
        if how == "prefix":  # a damaged byte before an intact label line
            text = data.draw(st.sampled_from(["\ufffd", "\x00", "x", "\ufeff", "\ufffd\t"])) + text
            prefixed.add(i) if i not in mutated else None
        at = data.draw(st.integers(0, len(text)))
        if how == "delete" and at < len(text):
            text = text[:at] + text[at + 1 :]
        elif how == "insert":
            text = text[:at] + data.draw(st.sampled_from(list("[]-.: \t\x00é\ufffdA9_"))) + text[at:]
        elif how == "replace" and at < len(text):
            text = text[:at] + "\ufffd" + text[at + 1 :]  # an invalid byte, decoded
        elif how == "truncate":
            text = text[:at]
        elif how == "swap" and at + 1 < len(text):
            text = text[:at] + text[at + 1] + text[at] + text[at + 2 :]
        elif how == "huge":
            text = text.replace("[", "[" + "9" * 400, 1)  # a time that reads as inf
        if text != lines[i]:
            prefixed.discard(i) if how != "prefix" else None
            mutated.add(i)
        lines[i] = text
    raw = render(lines, ["\n"] * len(lines), "utf-8")

    labels, problems = parse_emo_evaluation(decode_text(raw), "f.txt")
    event(f"{len(labels)} record(s), {len(problems)} problem(s)" if problems else "all records")
    by_line = {ll.line: ll for ll in labels}
    for ll in labels:  # every record is well-formed
        assert 0 <= ll.start <= ll.end < float("inf")
        assert ll.id and not re.search(r"\s", ll.id)
        assert re.fullmatch(r"[a-z]+", ll.label)
    problem_lines = [int(p.where.rsplit(":", 1)[1]) for p in problems]
    assert all(p.where.rsplit(":", 1)[0] == "f.txt" for p in problems)
    # nothing lost: each line that starts with '[' is a record or a problem, once
    bracketed = {n for n, t in enumerate(lines, 1) if t.strip().startswith("[")}
    assert bracketed <= {*by_line, *problem_lines}
    assert sorted([*by_line, *problem_lines]) == sorted(set(by_line) | set(problem_lines))
    for i in prefixed:  # a label line behind a stray character is reported, not skipped
        bom = i == 0 and lines[0].startswith("\ufeff")  # the file's BOM: read past, rightly
        assert (i + 1 in by_line) if bom else (i + 1 in problem_lines)
    for i, rec in enumerate(records):  # untouched lines keep their record
        if i not in mutated:
            assert (by_line[i + 1].id, by_line[i + 1].label) == (rec[2], rec[3].lower())


# ---------------------------------------------------------------- transcriptions


@SETTINGS
@given(st.data())
def test_transcriptions_round_trip_any_encoding_and_line_ends(data):
    ids = st.builds(utt_id, st.integers(1, 5), st.sampled_from("FM"), st.just("impro"),
                    st.integers(1, 9), st.sampled_from("FM"), st.integers(0, 999))
    pairs = data.draw(st.dictionaries(ids, LINE_TEXT, max_size=10))
    lines = []
    for uid, text in pairs.items():
        if data.draw(st.booleans()):
            lines.append(data.draw(st.sampled_from(["M: Yeah.", "F:Umm.", "", "  "])))
        span = data.draw(st.sampled_from(["[006.2901-008.2357]", "[1.0-2.0]", "[]"]))
        lines.append(f"{uid} {span}:{data.draw(st.sampled_from(['', ' ']))}{text}")
    encoding = data.draw(ENCODINGS)
    got = parse_transcriptions(decode_text(render(lines, line_ends(data.draw, len(lines)),
                                                  encoding)))
    assert list(got) == list(pairs)  # ids are ASCII: exact in every encoding
    for uid, text in pairs.items():
        if encoding.startswith("utf") or text.isascii():
            assert got[uid] == text.strip()
        else:  # what the encoding cannot hold is replaced, never a line break or a crash
            assert isinstance(got[uid], str) and len(got[uid].splitlines()) <= 1


# ---------------------------------------------------------------- IEMOCAP loader


@st.composite
def iemocap_trees(draw):
    """session -> dialog -> label lines (id, raw label), with faults mixed in."""
    tree = {}
    for s in draw(st.sets(st.integers(1, 3), min_size=1, max_size=2)):
        dialogs = {}
        for d in draw(st.sets(st.integers(1, 3), min_size=1, max_size=2)):
            dialog = f"Ses{s:02d}F_impro{d:02d}"
            rows = []
            for _ in range(draw(st.integers(0, 6))):
                fault = draw(st.sampled_from(["none"] * 6 + ["other_session", "other_dialog",
                                                             "bad_id", "duplicate", "no_wav"]))
                k = draw(st.integers(0, 20))
                g = draw(st.sampled_from("FM"))
                uid = {"other_session": f"Ses{s + 1:02d}F_impro{d:02d}_{g}{k:03d}",
                       "other_dialog": f"Ses{s:02d}F_impro{d + 5:02d}_{g}{k:03d}",
                       "bad_id": f"{dialog}_../../{g}{k:03d}"}.get(fault, f"{dialog}_{g}{k:03d}")
                if fault == "duplicate" and rows:
                    uid = rows[-1][0]
                rows.append((uid, draw(RAW_LABELS), fault != "no_wav"))
            dialogs[dialog] = (rows, draw(ENCODINGS), draw(ENDINGS))
        tree[s] = dialogs
    return tree


def write_tree(root: Path, tree) -> None:
    for s, dialogs in tree.items():
        sdir = root / f"Session{s}"
        (sdir / "dialog" / "EmoEvaluation").mkdir(parents=True)
        for dialog, (rows, encoding, ending) in dialogs.items():
            wav_dir = sdir / "sentences" / "wav" / dialog
            wav_dir.mkdir(parents=True)
            lines = ["% header", ""]
            for i, (uid, label, wav) in enumerate(rows):
                lines.append(f"[{i}.0 - {i}.5]\t{uid}\t{label}\t[2.5, 2.5, 2.5]")
                if wav and "/" not in uid:
                    (wav_dir / f"{uid}.wav").write_bytes(b"")
            (sdir / "dialog" / "EmoEvaluation" / f"{dialog}.txt").write_bytes(
                render(lines, [ending] * len(lines), encoding))


def expected_load(root: Path, tree):
    """The model: which ids are used, and the per-label counts of the rest."""
    used, left_out, unknown, seen = {}, Counter(), Counter(), set()
    for s in sorted(tree):
        for dialog, (rows, _, _) in sorted(tree[s].items()):
            present = {uid for uid, _, wav in rows if wav}  # a repeated id shares one wav
            for uid, raw, _ in rows:
                label = map_label(raw, CLASSES, LABEL_MAP)
                if label is None:
                    (left_out if raw.lower() in IEMOCAP_LABELS else unknown)[raw.lower()] += 1
                    continue
                ok_id = re.fullmatch(rf"{dialog}_[FM]\d+", uid) is not None
                if not ok_id or uid in seen:
                    continue
                seen.add(uid)
                if uid in present:
                    used[uid] = label
    return used, left_out, unknown


@SETTINGS
@given(iemocap_trees())
def test_iemocap_loads_consistent_records_and_accounts_for_every_line(tree):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_tree(root, tree)
        load = load_iemocap(root, classes=CLASSES, label_map=LABEL_MAP)
        event("with problems" if load.problems else "clean")
        event("labels left out" if load.left_out else "no label left out")
        event("unknown labels" if load.unknown else "no unknown label")
        used, left_out, unknown = expected_load(root, tree)
        assert {u.id: u.label for u in load.utterances} == used
        assert (load.left_out, load.unknown) == (left_out, unknown)
        for u in load.utterances:
            session = int(u.id[3:5])
            assert u.session == f"Ses{session:02d}" and u.speaker == u.session + u.gender
            assert u.gender == u.id.rsplit("_", 1)[1][0]
            assert Path(u.path) == (root / f"Session{session}" / "sentences" / "wav"
                                    / u.id.rsplit("_", 1)[0] / f"{u.id}.wav")
            assert map_label(u.raw_label, CLASSES, LABEL_MAP) == u.label
        for p in load.problems:  # a label line (file:line) or a missing wav, inside the tree
            assert root in Path(re.sub(r":[0-9]+$", "", p.where)).parents
        n_lines = sum(len(rows) for d in tree.values() for rows, _, _ in d.values())
        unknown_problems = sum(p.reason.startswith("unknown label") for p in load.problems)
        accounted = (len(load.utterances) + sum(load.left_out.values())
                     + sum(load.unknown.values()) + len(load.problems) - unknown_problems)
        assert accounted == n_lines


# ---------------------------------------------------------------- RAVDESS names

CODE = st.sampled_from(["01", "02", "03", "04", "05", "06", "07", "08", "09", "00", "99"])


@st.composite
def ravdess_names(draw, actor: int):
    codes = [draw(st.sampled_from(["03"] * 4 + ["01", "02", "04"])),
             draw(st.sampled_from(["01"] * 4 + ["02", "03"])),
             draw(CODE), draw(CODE), draw(CODE), draw(CODE),
             draw(st.sampled_from([f"{actor:02d}"] * 5 + ["07", "24"]))]
    name = "-".join(codes)
    how = draw(st.sampled_from(["none"] * 5 + ["drop", "extra", "unicode_digit", "space",
                                                "bad_byte"]))
    if how == "drop":
        name = name[:-3]
    elif how == "extra":
        name += "-01"
    elif how == "unicode_digit":
        name = name[:-1] + "\u0661"  # ARABIC-INDIC DIGIT ONE: int() reads it, RAVDESS has none
    elif how == "space":
        name += " "
    elif how == "bad_byte":  # a byte no UTF-8 has, as os.listdir hands it over
        name = name[:-2] + os.fsdecode(b"\xff") + name[-1]
    return name + draw(st.sampled_from([".wav", ".flac", ".WAV", ".txt"]))


def ravdess_model(name: str, actor: int):
    """'audio' or None; then 'used', 'part' (video/song), 'left_out' or 'problem'."""
    stem, suffix = name.rsplit(".", 1)
    if suffix.lower() not in ("wav", "flac"):
        return None
    m = re.fullmatch(r"([0-9]{2})-" * 6 + r"([0-9]{2})", stem)
    if m is None:
        return "problem"
    mod, ch, emo, inten, stmt, _, act = m.groups()
    if mod not in ("01", "02", "03") or ch not in ("01", "02"):
        return "problem"
    if (mod, ch) != ("03", "01"):
        return "part"
    if emo not in EMOTIONS or inten not in ("01", "02") or stmt not in STATEMENTS \
            or int(act) != actor:
        return "problem"
    return "used" if EMOTIONS[emo] in CLASSES else "left_out"


@SETTINGS
@given(st.data())
def test_ravdess_names_are_records_problems_or_known_parts(data):
    actors = data.draw(st.sets(st.integers(1, 24), min_size=1, max_size=3))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        kinds = Counter()
        for a in actors:
            (root / f"Actor_{a:02d}").mkdir()
            for name in data.draw(st.sets(ravdess_names(a), max_size=8)):
                (root / f"Actor_{a:02d}" / name).write_bytes(b"")
                kinds[ravdess_model(name, a)] += 1
        load = load_ravdess(root)
        event("with problems" if load.problems else "clean")
        assert len(load.utterances) == kinds["used"]
        assert len(load.problems) == kinds["problem"]
        assert sum(load.left_out.values()) == kinds["left_out"] and not load.unknown
        for u in load.utterances:
            m = re.fullmatch(r"03-01-(0[1-8])-(0[12])-(0[12])-[0-9]{2}-([0-9]{2})", u.id)
            assert m is not None and Path(u.path).stem == u.id
            actor = int(m.group(4))
            assert Path(u.path).parent.name == u.speaker == u.session == f"Actor_{actor:02d}"
            assert u.gender == ("M" if actor % 2 else "F")
            assert u.label == u.raw_label == EMOTIONS[m.group(1)]
            assert u.transcript == STATEMENTS[m.group(3)]
        for p in load.problems:
            assert Path(p.where).is_file() and root in Path(p.where).parents


# ---------------------------------------------------------------- manifest


@st.composite
def manifests(draw):
    """A manifest's rows with faults, its header, delimiter, line ends and encoding."""
    columns = ["path", "speaker", "label"] + [
        c for c in ("id", "session", "gender", "transcript", "notes") if draw(st.booleans())]
    columns = draw(st.permutations(columns))
    rows = []
    for i in range(draw(st.integers(0, 8))):
        row = {
            "path": f"a/{i}.wav", "speaker": draw(st.sampled_from(["s1", "s2", " s3 "])),
            "label": draw(RAW_LABELS), "id": draw(st.sampled_from(["dup", f"u{i}", ""])),
            "session": draw(st.sampled_from(["", "day1"])),
            "gender": draw(st.sampled_from(["", "F", "male", "x"])),
            "transcript": draw(st.sampled_from(["", "hello, \"world\"", "two\nlines", "é ü"])),
            "notes": "n",
        }
        fault = draw(st.sampled_from(["none"] * 5 + ["extra", "short", "blank", "no_audio",
                                                     "empty_speaker", "odd_path"]))
        if fault == "odd_path":  # never a file: NUL, too long a name, outside, absolute
            row["path"] = draw(st.sampled_from(["a/\x00.wav", "a/" + "x" * 300 + ".wav",
                                                "../../satn-never-written.wav", "/nonexistent/abs.wav",
                                                "a/"]))
        rows.append((row, fault))
    if "id" in columns and len(rows) >= 2 and draw(st.booleans()):  # a repeated id, for sure
        for i in (0, len(rows) - 1):
            rows[i][0].update(id="dup", path=f"a/{i}.wav")
        rows[0], rows[-1] = (rows[0][0], "none"), (rows[-1][0], "none")
    header = [draw(st.sampled_from([c, c.upper(), f" {c} "])) for c in columns]
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "latin-1", "bad-byte"]))
    return columns, header, rows, draw(st.sampled_from([",", "\t"])), draw(ENDINGS), encoding


def write_manifest(root: Path, spec) -> tuple[Path, list[int], bytes]:
    """Write it; return its path, each row's first line, and the bytes."""
    columns, header, rows, sep, ending, encoding = spec
    (root / "a").mkdir()

    def line(values):
        out = io.StringIO()
        # "\r\n": csv quotes values that hold either; the row's own end comes later
        csv.writer(out, delimiter=sep, lineterminator="\r\n").writerow(values)
        return out.getvalue()[:-2]

    text, starts, n = line(header) + ending, [], 2
    for row, fault in rows:
        values = [row[c] for c in columns]
        if fault == "extra":
            values.append("surplus")
        elif fault == "short":
            values = values[:1]
        elif fault == "blank":
            values = [""] * len(values) if len(values) > 1 else ["  "]
        elif fault == "empty_speaker":
            values[columns.index("speaker")] = " "
        if fault not in ("no_audio", "odd_path"):
            (root / row["path"]).write_bytes(b"")
        starts.append(n)
        rendered = line(values)
        n += 1 + rendered.count("\n")
        text += rendered + ending
    path = root / ("m.tsv" if sep == "\t" else "m.csv")
    if encoding == "bad-byte":
        raw = text.encode("utf-8")
        cut = len(raw) // 2
        raw = raw[:cut] + b"\xff" + raw[cut:]
    else:
        raw = text.encode(encoding, errors="replace")
    path.write_bytes(raw)
    return path, starts, raw


def first_bad_byte(raw: bytes) -> int | None:
    bom16 = raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    try:
        raw.decode("utf-16" if bom16 else "utf-8-sig")
    except UnicodeDecodeError as e:
        return e.start
    return None


@SETTINGS
@given(manifests())
def test_manifest_rows_are_valid_records_problems_or_one_error_naming_file_and_line(spec):
    columns, _, rows, _, _, _ = spec
    with tempfile.TemporaryDirectory() as tmp:
        path, starts, raw = write_manifest(Path(tmp), spec)
        try:
            load = load_manifest(path, classes=CLASSES, label_map=LABEL_MAP)
        except InputError as e:
            msg = str(e)
            event("error: " + msg.split(": ", 1)[1].split(" (")[0][:30])
            assert isinstance(e, ConfigError) and str(path) in msg
            bad = first_bad_byte(raw)
            if bad is not None:  # the first bad byte's line, counted as csv counts lines
                good = raw[:bad].decode("utf-8-sig")
                line = len(io.StringIO(good, newline="").readlines()) + good.endswith(
                    ("\n", "\r"))
                assert f"{path}:{line}: not UTF-8 text" in msg
            else:
                assert "ids must be unique" in msg
            return
        assert first_bad_byte(raw) is None
        event("parsed, with problems" if load.problems else "parsed, clean")
        ids = [u.id for u in load.utterances]
        assert len(ids) == len(set(ids))
        for u in load.utterances:
            assert Path(u.path).is_file()
            assert u.id and u.speaker and u.speaker == u.speaker.strip()
            assert u.session in (u.speaker, "day1")
            assert u.gender in ("F", "M", None)
            assert u.label in CLASSES and map_label(u.raw_label, CLASSES, LABEL_MAP) == u.label
            if "transcript" in columns:
                assert u.transcript in (None, 'hello, "world"', "two\nlines", "é ü")
        for p in load.problems:
            file, n = p.where.rsplit(":", 1)
            assert file == str(path) and int(n) in starts
        # the model: which rows become records, and the counts of the rest
        used, left_out, unknown = [], Counter(), Counter()
        for (row, fault), start in zip(rows, starts, strict=True):
            if fault in ("extra", "short", "blank", "empty_speaker"):
                continue
            label = map_label(row["label"], CLASSES, LABEL_MAP)
            if label is None:
                raw_label = row["label"].lower()
                (left_out if raw_label in IEMOCAP_LABELS else unknown)[raw_label] += 1
            elif fault not in ("no_audio", "odd_path") and (
                    "gender" not in columns or row["gender"] != "x"):
                used.append(start)
        assert [u.path for u in load.utterances] == [
            str(path.parent / rows[starts.index(s)][0]["path"]) for s in used]
        assert (load.left_out, load.unknown) == (left_out, unknown)
