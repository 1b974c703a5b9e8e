"""The record every corpus loader returns, and the report of what it could not use."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping
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
    """A loader's result: the usable utterances, the problems it met, the labels it left out.

    A row whose label maps to no class is counted by raw label, never dropped
    silently: in ``left_out`` when the corpus knows the label and the protocol leaves
    it out on purpose (IEMOCAP ``fru``, ``xxx`` under the satn protocol), in
    ``unknown`` when nobody knows it (a typo, another corpus's name); the first row of
    each unknown label is also a problem.
    """

    utterances: list[Utterance] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    left_out: Counter[str] = field(default_factory=Counter)
    unknown: Counter[str] = field(default_factory=Counter)

    def skip_label(self, raw: str, known: Collection[str], where: str) -> None:
        """Count one row whose raw label maps to no class; ``where`` names its file and line."""
        raw = raw.strip().lower()
        if raw in known:
            self.left_out[raw] += 1
            return
        if raw not in self.unknown:
            self.problems.append(Problem(where, f"unknown label {raw!r}: no class and not in "
                                                f"the label map; its rows are left out"))
        self.unknown[raw] += 1

    def summary(self) -> str:
        counts = Counter(u.label or "unlabelled" for u in self.utterances)
        parts = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        text = f"{len(self.utterances)} utterances ({parts}); {len(self.problems)} problem(s)"
        for counter, what in ((self.left_out, "labels not in the protocol"),
                              (self.unknown, "unknown labels")):
            if counter:
                listed = ", ".join(f"{k} {v}" for k, v in sorted(counter.items(),
                                                                 key=lambda kv: (-kv[1], kv[0])))
                text += f"; {sum(counter.values())} rows with {what}: {listed}"
        return text


def known_labels(vocabulary: Collection[str], label_map: Mapping[str, str]) -> frozenset[str]:
    """Raw labels a loader counts as left out on purpose: the corpus's own and the map's."""
    return frozenset(x.strip().lower() for x in (*vocabulary, *label_map))


def map_label(raw: str, classes: tuple[str, ...], label_map: dict[str, str]) -> str | None:
    """The class of a raw corpus label, or None when the protocol leaves it out.

    A raw label that names a class keeps it; ``label_map`` adds merges such as
    ``exc -> hap``. Anything else (``fru``, ``xxx``, ...) is not used.
    """
    raw = raw.strip().lower()
    label = label_map.get(raw, raw)
    return label if label in classes else None
