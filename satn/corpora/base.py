"""The record every corpus loader returns, and the report of what it could not use."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Utterance:
    """One utterance of a corpus.

    ``label`` is the class after the protocol's label map (e.g. ``exc`` ->
    ``hap``), or None in a corpus without emotion labels (ARCTIC: transcripts
    only, for the ASR teacher); ``raw_label`` is what the corpus says. ``session`` is the group
    that leave-one-group-out folds hold out (IEMOCAP session, RAVDESS actor
    group, a manifest's session column, or the speaker when there is none).
    """

    id: str
    path: str
    speaker: str
    session: str
    label: str | None  # None: unlabelled corpus
    gender: str | None = None  # "F" | "M" | None
    transcript: str | None = None
    improvised: bool | None = None
    raw_label: str | None = None
    corpus: str = ""


@dataclass(frozen=True)
class Problem:
    """Something a loader or extractor could not use: where, and why."""

    where: str  # a file path or an utterance id
    reason: str


@dataclass
class CorpusLoad:
    """A loader's result: the usable utterances and the problems it met."""

    utterances: list[Utterance] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def summary(self) -> str:
        from collections import Counter

        counts = Counter(u.label or "unlabelled" for u in self.utterances)
        parts = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        return f"{len(self.utterances)} utterances ({parts}); {len(self.problems)} problem(s)"


def map_label(raw: str, classes: tuple[str, ...], label_map: dict[str, str]) -> str | None:
    """The class of a raw corpus label, or None when the protocol leaves it out.

    A raw label that names a class keeps it; ``label_map`` adds merges such as
    ``exc -> hap``. Anything else (``fru``, ``xxx``, ...) is not used.
    """
    raw = raw.strip().lower()
    label = label_map.get(raw, raw)
    return label if label in classes else None
