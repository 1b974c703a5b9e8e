"""Choosing one of several finished runs by their dev side alone: the selection score.

A researcher weighs candidates (a network alone, fused with either baseline, its seeds
averaged) and must name one before test is read, or the test figure is the best of
several draws rather than a measurement. A run's **selection score** is its fold-mean
dev UA: with ``selection.inner_k`` the pooled inner-fold predictions over each fold's
training speakers, else the fold's dev speakers. The candidate with the highest score is
chosen; a tie (at full precision) goes to the candidate given first (and is reported), so
the choice is fixed by the order the researcher wrote down, never by test.

Candidates must have scored the same dev and test utterances of the same folds, so their
scores compare like with like. A run that scored more classes than the others (a network
trained on all eight emotions among four-class fusions) is scored on the fewest
(:func:`satn.predictions.common_classes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from satn.fusion import SIDES, aligned, common_folds
from satn.predictions import common_classes, scores_of

TIE = 1e-12


@dataclass(frozen=True)
class Candidate:
    tag: str                              # how the run was named in the list (1, 2, ...)
    frame: pd.DataFrame                   # its predictions, on the candidates' classes
    dev_ua: tuple[float, ...]             # per fold, in ``Choice.folds`` order
    test_ua: tuple[float, ...]

    @property
    def selection_score(self) -> float:
        """Fold-mean dev UA."""
        return float(np.mean(self.dev_ua))

    @property
    def test_ua_mean(self) -> float:
        return float(np.mean(self.test_ua))

    @property
    def test_ua_std(self) -> float:
        return float(np.std(self.test_ua))


@dataclass(frozen=True)
class Choice:
    classes: tuple[str, ...]
    folds: tuple[str, ...]
    candidates: tuple[Candidate, ...]
    chosen: int                           # index into ``candidates``
    tied: tuple[int, ...]                 # others with the chosen score (within TIE)
    notes: tuple[str, ...]                # runs scored on fewer classes than they have

    @property
    def best(self) -> Candidate:
        return self.candidates[self.chosen]


def choose(frames: Sequence[pd.DataFrame], tags: Sequence[str] | None = None) -> Choice:
    """The candidate with the highest fold-mean dev UA among ``frames``
    (``satn.tracking.load_predictions`` tables). Test rows are scored for the table but
    never read by the choice. Raises :class:`satn.significance.ComparisonError` (naming the
    run by its tag) when the runs did not score the same utterances of the same folds."""
    if len(frames) < 2:
        raise ValueError(f"a choice needs at least two candidates, not {len(frames)}")
    tags = [str(i + 1) for i in range(len(frames))] if tags is None else list(tags)
    frames, notes = common_classes(frames, tags)
    classes, names, runs = common_folds(frames, tags)
    per_run: list[dict[str, list[float]]] = [{side: [] for side in SIDES} for _ in runs]
    for name in names:
        for side in SIDES:
            for scores, rows in zip(per_run, aligned(runs, tags, name, side), strict=True):
                scores[side].append(scores_of(rows, classes).ua)
    candidates = tuple(Candidate(tag, frame, tuple(s["dev"]), tuple(s["test"]))
                       for tag, frame, s in zip(tags, frames, per_run, strict=True))
    chosen, tied = highest([c.selection_score for c in candidates])
    return Choice(tuple(classes), tuple(names), candidates, chosen, tied, tuple(notes))


def highest(scores: Sequence[float]) -> tuple[int, tuple[int, ...]]:
    """The index of the highest score and those of the others tied with it. Equal fold means
    can differ in the last bit by summation order, so a tie is a difference below ``TIE``;
    the first of the tied wins."""
    top = max(scores)
    level = [i for i, s in enumerate(scores) if s >= top - TIE]
    return level[0], tuple(level[1:])
