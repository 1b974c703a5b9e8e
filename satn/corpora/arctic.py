"""CMU ARCTIC (``SPEAKER/wav/arctic_a0001.wav|flac`` + ``cmuarctic.data``) -> :class:`Utterance`.

ARCTIC is read speech with transcripts and no emotion labels: it trains the
ASR teacher, not an emotion classifier, so every utterance has ``label=None``
(unlabelled). Prompts come from ``root/cmuarctic.data`` (one line per prompt,
``( arctic_a0001 "Author of the danger trail, Philip Steels, etc." )``), or from
a speaker folder's own ``etc/arctic.data`` as in the festvox release.

Speakers are the folders under ``root`` that hold a ``wav/`` folder
(``bdl``, ``slt``, or festvox's ``cmu_us_bdl_arctic``: the name between
``cmu_us_`` and ``_arctic``). Id conventions: id = ``{speaker}_{prompt}``
(unique across speakers), session = speaker, gender from the ARCTIC speaker
list (None for a speaker not on it).
"""

from __future__ import annotations

import re
from pathlib import Path

from satn.config import ConfigError
from satn.corpora.base import CorpusLoad, Problem, Utterance

PROMPTS = "cmuarctic.data"
AUDIO_SUFFIXES = frozenset({".wav", ".flac"})
GENDERS = {"bdl": "M", "slt": "F", "clb": "F", "rms": "M", "jmk": "M", "awb": "M", "ksp": "M"}

_LINE = re.compile(r'\(\s*(\S+)\s+"(.*)"\s*\)\s*')
_FESTVOX = re.compile(r"cmu_us_(\w+?)_arctic")


def read_prompts(path: Path) -> dict[str, str]:
    """Prompt id -> text of one ``arctic.data`` file (lines that do not parse are ignored)."""
    out = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        m = _LINE.fullmatch(line.strip())
        if m:
            out[m.group(1)] = m.group(2)
    return out


def load_arctic(root: str | Path, *, corpus: str = "arctic") -> CorpusLoad:
    """Load every speaker's audio under ``root`` with its prompt, sorted by (speaker, id).

    An audio file whose prompt id is in no prompt file is reported as a problem.
    Raises :class:`ConfigError` when ``root`` is not a directory or has no speaker folders.
    """
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        raise ConfigError(f"{corpus} root {root} is not a directory")
    speakers = sorted(p for p in root.iterdir() if p.is_dir() and (p / "wav").is_dir())
    if not speakers:
        raise ConfigError(f"no speaker folders (SPEAKER/wav/) under {corpus} root {root}")
    shared = read_prompts(root / PROMPTS) if (root / PROMPTS).is_file() else {}
    out = CorpusLoad()
    for folder in speakers:
        own = folder / "etc" / "arctic.data"
        prompts = {**shared, **(read_prompts(own) if own.is_file() else {})}
        m = _FESTVOX.fullmatch(folder.name)
        speaker = m.group(1) if m else folder.name
        for f in sorted((folder / "wav").iterdir()):
            if f.name.startswith(".") or f.suffix.lower() not in AUDIO_SUFFIXES:
                continue
            text = prompts.get(f.stem)
            if text is None:
                out.problems.append(Problem(str(f), f"no prompt {f.stem!r} in {PROMPTS}"))
                continue
            out.utterances.append(Utterance(
                id=f"{speaker}_{f.stem}", path=str(f), speaker=speaker, session=speaker,
                label=None, gender=GENDERS.get(speaker), transcript=text, corpus=corpus))
    out.utterances.sort(key=lambda u: (u.speaker, u.id))
    return out
