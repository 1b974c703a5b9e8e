"""RAVDESS speech (``Actor_NN/03-01-EE-II-SS-RR-AA.wav|flac``) -> :class:`Utterance` records.

File-name fields: modality (03 audio only), vocal channel (01 speech, 02 song),
emotion EE, intensity II (01 normal, 02 strong), statement SS, repetition RR, actor AA.
Only modality 03 with channel 01 is loaded; the other parts of RAVDESS (video
01/02, song 02) are skipped silently, any other code is a problem. Emotions the
classes leave out are counted in :attr:`CorpusLoad.left_out`.

Raw labels use IEMOCAP's short names so the default classes apply unchanged:
01 neu, 02 cal, 03 hap, 04 sad, 05 ang, 06 fea, 07 dis, 08 sur.

Id conventions: id = file stem (unique: it holds the actor); speaker = ``"Actor_NN"``;
gender M for odd actors, F for even; session = the speaker (actors are the groups
that folds hold out). RAVDESS is acted from two fixed statements, so
``improvised=False`` and the transcript is the statement.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from satn.config import DEFAULT_CLASSES, ConfigError
from satn.corpora.base import CorpusLoad, Problem, Utterance, known_labels, map_label

EMOTIONS: Mapping[str, str] = MappingProxyType(
    {"01": "neu", "02": "cal", "03": "hap", "04": "sad",
     "05": "ang", "06": "fea", "07": "dis", "08": "sur"}
)  # fmt: skip
STATEMENTS: Mapping[str, str] = MappingProxyType(
    {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
)
_NO_MAP: Mapping[str, str] = MappingProxyType({})
AUDIO_SUFFIXES = frozenset({".wav", ".flac"})

# ASCII digits only: int() also reads other scripts' digits, which no RAVDESS name has
_ACTOR_DIR = re.compile(r"Actor_(\d+)", re.ASCII)
_NAME = re.compile(r"(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)", re.ASCII)


def load_ravdess(
    root: str | Path,
    *,
    classes: tuple[str, ...] = DEFAULT_CLASSES,
    label_map: Mapping[str, str] = _NO_MAP,
    corpus: str = "ravdess",
) -> CorpusLoad:
    """Load the speech files under ``root/Actor_*``, sorted by (speaker, id).

    Audio files whose names do not follow the scheme, or whose actor code differs
    from their folder's, are reported as problems. Raises :class:`ConfigError` when
    ``root`` is not a directory or holds no ``Actor_*`` folder.
    """
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        raise ConfigError(f"{corpus} root {root} is not a directory")
    actor_dirs = sorted(p for p in root.iterdir() if p.is_dir() and _ACTOR_DIR.fullmatch(p.name))
    if not actor_dirs:
        raise ConfigError(f"no Actor_NN folders under {corpus} root {root}")
    label_map = dict(label_map)
    out = CorpusLoad()
    for actor_dir in actor_dirs:
        folder_actor = int(_ACTOR_DIR.fullmatch(actor_dir.name).group(1))
        for f in sorted(actor_dir.iterdir()):
            if f.name.startswith(".") or f.suffix.lower() not in AUDIO_SUFFIXES:
                continue
            utt = _utterance(f, folder_actor, classes, label_map, corpus, out)
            if utt is not None:
                out.utterances.append(utt)
    out.utterances.sort(key=lambda u: (u.speaker, u.id))
    return out


def _utterance(
    f: Path,
    folder_actor: int,
    classes: tuple[str, ...],
    label_map: dict[str, str],
    corpus: str,
    out: CorpusLoad,
) -> Utterance | None:
    """The utterance of one audio file, None when skipped (a problem says why if bad)."""
    problems = out.problems
    m = _NAME.fullmatch(f.stem)
    if m is None:
        problems.append(Problem(str(f), "name is not MM-CC-EE-II-SS-RR-AA"))
        return None
    modality, channel, emotion, intensity, statement, _rep, actor = m.groups()
    bad = []
    if modality not in ("01", "02", "03"):
        bad.append(f"modality {modality}")
    if channel not in ("01", "02"):
        bad.append(f"vocal channel {channel}")
    if not bad and (modality != "03" or channel != "01"):  # video / song parts of RAVDESS
        return None
    if emotion not in EMOTIONS:
        bad.append(f"emotion {emotion}")
    if intensity not in ("01", "02"):
        bad.append(f"intensity {intensity}")
    if statement not in STATEMENTS:
        bad.append(f"statement {statement}")
    if int(actor) != folder_actor:
        bad.append(f"actor {actor} (folder Actor_{folder_actor:02d})")
    if bad:
        problems.append(Problem(str(f), "bad code(s): " + ", ".join(bad)))
        return None
    raw = EMOTIONS[emotion]
    label = map_label(raw, classes, label_map)
    if label is None:
        out.skip_label(raw, known_labels(EMOTIONS.values(), label_map), str(f))
        return None
    speaker = f"Actor_{int(actor):02d}"
    return Utterance(
        id=f.stem,
        path=str(f),
        speaker=speaker,
        session=speaker,
        label=label,
        gender="M" if int(actor) % 2 else "F",
        transcript=STATEMENTS[statement],
        improvised=False,
        raw_label=raw,
        corpus=corpus,
    )
