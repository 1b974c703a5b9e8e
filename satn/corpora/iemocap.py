"""IEMOCAP release on disk -> :class:`Utterance` records.

Layout of a release (and of satn's generated demo corpus)::

    SessionN/sentences/wav/<dialog>/<utterance>.wav
    SessionN/dialog/EmoEvaluation/<dialog>.txt      # label lines drive the load
    SessionN/dialog/transcriptions/<dialog>.txt     # CRLF; attached when present

Id conventions: utterance ``Ses01F_impro01_M000`` -> session ``"Ses01"``, speaker
``"Ses01M"``, gender ``"M"``. The letter just before the utterance number names the
actor who speaks; the dialog prefix (``Ses01F``) only says who led the dialog.

Protocols: ``satn`` keeps improvised dialogs (name contains ``impro``), ``full`` keeps
improvised and scripted (``script``) dialogs. Labels pass through :func:`map_label`;
utterances whose label maps to no class are left out and counted per label
(:attr:`CorpusLoad.left_out` for the release's own labels such as ``fru``, ``xxx``;
:attr:`CorpusLoad.unknown`, and a problem, for any other). The loader never reads
audio: it only checks that each used utterance's wav exists.

Files are read as UTF-8 (a byte-order mark, UTF-8 or UTF-16, is honoured); an
utterance id must belong to its dialog file and session folder, else the line is a
problem.
"""

from __future__ import annotations

import codecs
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from satn.config import DEFAULT_CLASSES, ConfigError
from satn.corpora.base import CorpusLoad, Problem, Utterance, known_labels, map_label

# protocol -> dialog kinds it keeps
PROTOCOLS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"satn": ("impro",), "full": ("impro", "script")}
)
IEMOCAP_LABEL_MAP: Mapping[str, str] = MappingProxyType({"exc": "hap"})
# every categorical label of the release; the protocol leaves out those it has no class for
IEMOCAP_LABELS = ("neu", "hap", "exc", "sad", "ang", "fru", "fea", "sur", "dis", "oth", "xxx")

_SESSION_DIR = re.compile(r"Session(\d+)", re.ASCII)
# [6.2901 - 8.2357] <tab> Ses01F_impro01_F000 <tab> neu <tab> [2.5000, 2.5000, 2.5000]
_LABEL_LINE = re.compile(
    r"\[\s*(\d+(?:\.\d*)?)\s*-\s*(\d+(?:\.\d*)?)\s*\]\s+(\S+)\s+([A-Za-z]+)(?:\s+\[[^\]]*\])?\s*",
    re.ASCII,
)
# Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.
_TRANSCRIPT_LINE = re.compile(r"(\S+)\s+\[[^\]]*\]:\s?(.*)")
# session, then the speaking actor's gender letter just before the utterance number;
# letters, digits and '_' only, so an id is also a safe file name
_UTTERANCE_ID = re.compile(r"(Ses(\d+))\w*_([FM])\d+", re.ASCII)


@dataclass(frozen=True)
class LabelLine:
    """One parsed label line of an EmoEvaluation file (``line`` counts from 1)."""

    line: int
    start: float
    end: float
    id: str
    label: str


def parse_emo_evaluation(text: str, where: str) -> tuple[list[LabelLine], list[Problem]]:
    """Label lines of one EmoEvaluation file, and a problem per malformed one.

    Only lines starting with ``[`` are label lines; ``%`` headers, evaluator lines
    (``C-E2:``, ``A-E4:``) and blank lines are ignored, but a label line behind stray
    characters (a damaged byte) is a problem, not lost. ``where`` names the file in
    problems, which read ``<where>:<line>``.
    """
    labels: list[LabelLine] = []
    problems: list[Problem] = []
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line.startswith("["):
            if _LABEL_LINE.search(line):
                problems.append(Problem(f"{where}:{n}", f"stray characters before a label "
                                                        f"line: {line!r}"))
            continue
        m = _LABEL_LINE.fullmatch(line)
        if m is None:
            problems.append(Problem(f"{where}:{n}", f"malformed label line: {line!r}"))
            continue
        start, end, uid, label = m.groups()
        if not float(start) <= float(end) < float("inf"):  # 400 digits read as inf
            problems.append(Problem(f"{where}:{n}", f"bad time span [{start[:12]} - {end[:12]}]"))
            continue
        labels.append(LabelLine(n, float(start), float(end), uid, label.lower()))
    return labels, problems


def parse_transcriptions(text: str) -> dict[str, str]:
    """Utterance id -> transcript from one transcription file (CRLF or LF).

    Lines without an id (``M: Yeah.``, ``F:Umm.``) belong to no utterance and are skipped.
    """
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = _TRANSCRIPT_LINE.fullmatch(line.strip())
        if m is not None:
            out[m.group(1)] = m.group(2).strip()
    return out


def dialog_kind(dialog: str) -> str | None:
    """``"impro"``, ``"script"`` or None, from a dialog name such as ``Ses01F_impro01``."""
    if "impro" in dialog:
        return "impro"
    if "script" in dialog:
        return "script"
    return None


def load_iemocap(
    root: str | Path,
    *,
    protocol: str = "satn",
    classes: tuple[str, ...] = DEFAULT_CLASSES,
    label_map: Mapping[str, str] = IEMOCAP_LABEL_MAP,
    corpus: str = "iemocap",
) -> CorpusLoad:
    """Load every labelled utterance of the protocol under ``root``, sorted by id.

    Missing ``SessionN`` folders are fine while at least one exists. Raises
    :class:`ConfigError` for an unknown protocol, a missing root or no sessions.
    """
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown IEMOCAP protocol {protocol!r}; known: {sorted(PROTOCOLS)}")
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        raise ConfigError(f"{corpus} root {root} is not a directory")
    sessions = sorted(
        (p for p in root.iterdir() if p.is_dir() and _SESSION_DIR.fullmatch(p.name)),
        key=lambda p: int(p.name[len("Session") :]),
    )
    if not sessions:
        raise ConfigError(f"no Session1..Session5 folders under {corpus} root {root}")
    kinds = PROTOCOLS[protocol]
    label_map = dict(label_map)
    known = known_labels(IEMOCAP_LABELS, label_map)
    out = CorpusLoad()
    seen: set[str] = set()
    for session_dir in sessions:
        labels_dir = session_dir / "dialog" / "EmoEvaluation"
        if not labels_dir.is_dir():
            out.problems.append(Problem(str(labels_dir), "missing label folder"))
            continue
        # Non-recursive: Categorical/, Attribute/, Self-evaluation/ hold per-rater files.
        # '._*' files are macOS resource forks found in some copies of the release.
        labelled = set()
        for label_file in sorted(labels_dir.glob("*.txt")):
            if label_file.name.startswith(".") or dialog_kind(label_file.stem) not in kinds:
                continue
            labelled.add(label_file.stem)
            _load_dialog(label_file, session_dir, classes, label_map, known, corpus, seen, out)
        _report_unlabelled_dialogs(session_dir, labelled, kinds, out)
    out.utterances.sort(key=lambda u: u.id)
    return out


def _report_unlabelled_dialogs(session_dir: Path, labelled: set[str], kinds: tuple[str, ...],
                               out: CorpusLoad) -> None:
    """A dialog whose wav folder exists but whose label file does not: say so, once."""
    wav_root = session_dir / "sentences" / "wav"
    dialogs = sorted(p for p in wav_root.iterdir() if p.is_dir()) if wav_root.is_dir() else []
    for d in dialogs:
        if d.name in labelled or dialog_kind(d.name) not in kinds:
            continue
        n = sum(1 for f in d.iterdir() if f.suffix == ".wav" and not f.name.startswith("."))
        label_file = session_dir / "dialog" / "EmoEvaluation" / f"{d.name}.txt"
        out.problems.append(Problem(str(label_file), f"missing label file: the {n} wav file(s) "
                                                     f"of dialog {d.name} are left out"))


def _load_dialog(
    label_file: Path,
    session_dir: Path,
    classes: tuple[str, ...],
    label_map: dict[str, str],
    known: frozenset[str],
    corpus: str,
    seen: set[str],
    out: CorpusLoad,
) -> None:
    """Append the used utterances of one dialog (and its problems) to ``out``."""
    dialog = label_file.stem
    labels, problems = parse_emo_evaluation(_read_text(label_file), str(label_file))
    out.problems.extend(problems)
    used = []
    for ll in labels:
        label = map_label(ll.label, classes, label_map)
        if label is None:
            out.skip_label(ll.label, known, f"{label_file}:{ll.line}")
        else:
            used.append((ll, label))
    if not used:
        return
    transcript_file = session_dir / "dialog" / "transcriptions" / f"{dialog}.txt"
    transcripts = (
        parse_transcriptions(_read_text(transcript_file)) if transcript_file.is_file() else {}
    )
    wav_dir = session_dir / "sentences" / "wav" / dialog
    folder_session = int(session_dir.name[len("Session") :])
    # One listing per dialog instead of a stat per utterance (cheap on network disks).
    present = set(os.listdir(wav_dir)) if wav_dir.is_dir() else set()
    for ll, label in used:
        where = f"{label_file}:{ll.line}"
        m = _UTTERANCE_ID.fullmatch(ll.id)
        if m is None:
            out.problems.append(Problem(where, f"utterance id {ll.id!r} names no session/actor"))
            continue
        if not ll.id.startswith(f"{dialog}_") or int(m.group(2)) != folder_session:
            out.problems.append(Problem(where, f"utterance id {ll.id!r} is not of dialog "
                                               f"{dialog} in {session_dir.name}"))
            continue
        if ll.id in seen:
            out.problems.append(Problem(where, f"duplicate label line for {ll.id}"))
            continue
        seen.add(ll.id)
        wav = wav_dir / f"{ll.id}.wav"
        if wav.name not in present:
            out.problems.append(Problem(str(wav), f"missing wav for {ll.id} ({ll.label})"))
            continue
        session, _, gender = m.groups()
        out.utterances.append(
            Utterance(
                id=ll.id,
                path=str(wav),
                speaker=session + gender,
                session=session,
                label=label,
                gender=gender,
                transcript=transcripts.get(ll.id),
                improvised=dialog_kind(dialog) == "impro",
                raw_label=ll.label,
                corpus=corpus,
            )
        )


def _read_text(path: Path) -> str:
    """The text of a label or transcript file: UTF-8, or UTF-16 where a BOM says so."""
    return decode_text(path.read_bytes())


def decode_text(raw: bytes) -> str:
    """Bytes -> text: a BOM picks UTF-8 or UTF-16, else UTF-8.

    The release is ASCII; an odd byte becomes U+FFFD instead of failing the whole load
    (the line holding it then fails its own pattern, or keeps it in a transcript).
    """
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return raw.decode("utf-16", errors="replace")
    return raw.decode("utf-8-sig", errors="replace")
