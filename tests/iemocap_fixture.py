"""Write IEMOCAP-format trees for tests, in the exact formats of the release.

IEMOCAP is licensed, so tests build its label and transcript files from a *plan*:
session -> dialog kind (``"impro"`` / ``"script"``) -> raw label -> count. The files
carry the release's quirks: ``%`` headers, evaluator lines (``C-E2:``, ``A-E4:``),
V/A/D triples, CRLF transcriptions, transcript lines with no id (``M: Yeah.``,
``F:Umm.``), ids with no label (``..._MXX0``), speakers of both genders in dialogs of
either prefix, per-rater subfolders and macOS ``._`` files in ``EmoEvaluation``.

:data:`PAPER_PLAN` reproduces the SATN paper's Table 1 under the ``satn`` protocol
and the 5531 utterances of the ``full`` protocol; the tests hold those numbers.
"""

from __future__ import annotations

import io
import os
import random
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

Plan = Mapping[int, Mapping[str, Mapping[str, int]]]

# Improvised happy of Table 1 split into raw hap + exc; scripted counts are the
# full protocol's per-session counts minus Table 1; fru/xxx/sur/fea/dis/oth are
# distractors that no protocol uses.
PAPER_PLAN: Plan = {
    1: {
        "impro": {"neu": 223, "hap": 85, "exc": 47, "sad": 104, "ang": 62,
                  "fru": 80, "xxx": 140, "sur": 10, "fea": 3, "oth": 1},
        "script": {"neu": 161, "hap": 50, "exc": 96, "sad": 90, "ang": 167,
                   "fru": 200, "xxx": 260, "sur": 8, "fea": 2},
    },
    2: {
        "impro": {"neu": 217, "hap": 98, "exc": 93, "sad": 100, "ang": 22,
                  "fru": 100, "xxx": 170, "sur": 8, "fea": 2},
        "script": {"neu": 145, "hap": 19, "exc": 117, "sad": 97, "ang": 115,
                   "fru": 180, "xxx": 230, "sur": 10, "fea": 3},
    },
    3: {
        "impro": {"neu": 198, "hap": 74, "exc": 75, "sad": 190, "ang": 90,
                  "fru": 200, "xxx": 230, "sur": 5, "fea": 10, "dis": 1, "oth": 1},
        "script": {"neu": 122, "hap": 43, "exc": 94, "sad": 115, "ang": 150,
                   "fru": 180, "xxx": 300, "sur": 12, "fea": 10},
    },
    4: {
        "impro": {"neu": 174, "hap": 65, "exc": 130, "sad": 81, "ang": 84,
                  "fru": 230, "xxx": 180, "sur": 12, "fea": 3},
        "script": {"neu": 84, "hap": 31, "exc": 77, "sad": 62, "ang": 243,
                   "fru": 300, "xxx": 290, "sur": 15, "fea": 2},
    },
    5: {
        "impro": {"neu": 287, "hap": 113, "exc": 167, "sad": 133, "ang": 31,
                  "fru": 140, "xxx": 200, "sur": 15, "fea": 2, "dis": 1, "oth": 1},
        "script": {"neu": 97, "hap": 52, "exc": 110, "sad": 112, "ang": 139,
                   "fru": 240, "xxx": 300, "sur": 12, "fea": 3},
    },
}  # fmt: skip

_CATEGORY = {
    "neu": "Neutral", "hap": "Happiness", "exc": "Excited", "sad": "Sadness",
    "ang": "Anger", "fru": "Frustration", "sur": "Surprise", "fea": "Fear",
    "dis": "Disgust", "oth": "Other",
}  # fmt: skip
_WORDS = "well I just I do not know what you want me to say about it okay yeah".split()
_SCRIPT_PARTS = [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (3, 1), (3, 2)]


@dataclass(frozen=True)
class PlannedUtterance:
    """One labelled utterance as written (what a correct loader must find)."""

    id: str
    session: int
    dialog: str
    raw_label: str
    gender: str
    transcript: str | None
    improvised: bool
    wav: Path | None  # None when no wav was written


def dialogs(session: int, kind: str) -> list[str]:
    """Dialog names of one session and kind, as in the release (both prefixes)."""
    s = f"Ses{session:02d}"
    if kind == "impro":
        return [f"{s}{p}_impro{n:02d}" for n in range(1, 9) for p in "FM"]
    return [f"{s}{p}_script{a:02d}_{b}" for a, b in _SCRIPT_PARTS for p in "FM"]


def write_iemocap(
    root: Path,
    plan: Plan = PAPER_PLAN,
    *,
    wavs: bool = True,
    missing_wavs: Collection[str] = (),
    no_transcript: Collection[str] = (),
    seed: int = 0,
) -> list[PlannedUtterance]:
    """Write ``plan`` under ``root`` (sessions absent from the plan are not written).

    ``wavs=False`` writes no audio at all; ids in ``missing_wavs`` get no wav and ids
    in ``no_transcript`` no transcription line. Wavs are 0.05 s of 16 kHz silence,
    hard links to ``root/.silence.wav`` (a hidden file no loader reads).
    Returns the labelled utterances written, in file order.
    """
    root.mkdir(parents=True, exist_ok=True)
    silence = root / ".silence.wav"  # every wav is a hard link to it (see _put_wav)
    silence.write_bytes(_silence_wav())
    written: list[PlannedUtterance] = []
    for session, kinds in sorted(plan.items()):
        sdir = root / f"Session{session}"
        emo_dir = sdir / "dialog" / "EmoEvaluation"
        tr_dir = sdir / "dialog" / "transcriptions"
        for d in (emo_dir / "Categorical", tr_dir):
            d.mkdir(parents=True, exist_ok=True)
        rng = random.Random(seed * 1000 + session)
        for kind in ("impro", "script"):
            labels = [lab for lab, n in sorted(kinds.get(kind, {}).items()) for _ in range(n)]
            rng.shuffle(labels)
            names = dialogs(session, kind)
            for i, dialog in enumerate(names):
                dealt = labels[i :: len(names)]  # round robin keeps dialogs similar in size
                if not dealt:
                    continue
                utts = _write_dialog(
                    sdir,
                    dialog,
                    dealt,
                    kind,
                    rng,
                    first=i == 0,
                    wavs=wavs,
                    silence=silence,
                    missing_wavs=missing_wavs,
                    no_transcript=no_transcript,
                )
                written.extend(utts)
        # Release clutter the loader must not read as label files.
        (emo_dir / "Categorical" / f"Ses{session:02d}F_impro01_e1_cat.txt").write_text(
            f"Ses{session:02d}F_impro01_F000 :Neutral state; ()\n"
        )
        (emo_dir / f"._Ses{session:02d}F_impro01.txt").write_bytes(b"\x00\x05\x16\x07Mac OS X")
    return written


def _write_dialog(
    sdir: Path,
    dialog: str,
    labels: list[str],
    kind: str,
    rng: random.Random,
    *,
    first: bool,
    wavs: bool,
    silence: Path,
    missing_wavs: Collection[str],
    no_transcript: Collection[str],
) -> list[PlannedUtterance]:
    session = int(dialog[3:5])
    wav_dir = sdir / "sentences" / "wav" / dialog
    if wavs:
        wav_dir.mkdir(parents=True, exist_ok=True)
    emo = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
    trans: list[str] = []
    counters = {"F": 0, "M": 0}
    t = 2.0 + rng.random() * 4
    out: list[PlannedUtterance] = []
    for k, raw in enumerate(labels):
        # Both actors speak in every dialog, whichever of them leads it.
        gender = "FM"[(k + (dialog[5] == "M")) % 2]
        uid = f"{dialog}_{gender}{counters[gender]:03d}"
        counters[gender] += 1
        start, end = t, t + 1.0 + rng.random() * 3
        t = end + 0.2 + rng.random()
        emo.append(f"[{start:.4f} - {end:.4f}]\t{uid}\t{raw}\t{_vad(rng)}")
        emo.extend(_evaluator_lines(raw, rng))
        emo.append("")
        text = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 8))).capitalize() + "."
        if uid not in no_transcript:
            trans.append(f"{uid} [{start:08.4f}-{end:08.4f}]: {text}")
        if k == 0:
            trans += ["M: Yeah.", "F:Umm."]  # lines with no id
            if first:  # an id with no label line
                xx = f"{dialog}_MXX0"
                trans.append(f"{xx} [{end:08.4f}-{end + 0.5:08.4f}]: [LAUGHTER]")
                if wavs:
                    _put_wav(wav_dir / f"{xx}.wav", silence)
        wav = wav_dir / f"{uid}.wav"
        has_wav = wavs and uid not in missing_wavs
        if has_wav:
            _put_wav(wav, silence)
        out.append(
            PlannedUtterance(
                uid, session, dialog, raw, gender,
                None if uid in no_transcript else text,
                kind == "impro", wav if has_wav else None,
            )
        )  # fmt: skip
    (sdir / "dialog" / "EmoEvaluation" / f"{dialog}.txt").write_text("\n".join(emo) + "\n")
    # The release's transcriptions end lines with CRLF.
    (sdir / "dialog" / "transcriptions" / f"{dialog}.txt").write_bytes(
        "".join(line + "\r\n" for line in trans).encode()
    )
    return out


def _vad(rng: random.Random) -> str:
    v = [rng.choice([1.5, 2.0, 2.5, 3.0, 3.5, 4.0]) for _ in range(3)]
    return "[" + ", ".join(f"{x:.4f}" for x in v) + "]"


def _evaluator_lines(raw: str, rng: random.Random) -> list[str]:
    cats = [_CATEGORY.get(raw, rng.choice(["Neutral", "Frustration", "Anger"])) for _ in range(3)]
    if raw == "xxx":  # no majority
        cats = ["Neutral", "Frustration", "Sadness"]
    lines = [f"C-E{i + 1}:\t{c};\t()" for i, c in enumerate(cats)]
    lines.append("A-E4:\tval 2; act 3; dom  3;\t(mildly aggravated but staying polite, attitude)")
    lines.append(f"A-F1:\tval {rng.randint(1, 5)}; act {rng.randint(1, 5)}; dom  2;\t()")
    return lines


def _put_wav(path: Path, silence: Path) -> None:
    # Linking is ~30x faster than creating thousands of files with data here.
    try:
        os.link(silence, path)
    except OSError:
        path.write_bytes(silence.read_bytes())


def _silence_wav() -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.zeros(800, dtype=np.int16), 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()
