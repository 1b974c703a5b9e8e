"""Late fusion of evaluated runs: two weighed on dev (:func:`fuse`), or several averaged
(:func:`average`), from their per-utterance scores.

A neural model reads log-mel frames; a classical baseline reads openSMILE
functionals (F0, jitter, shimmer, energy ranges) that the network never sees. Their
errors differ, so a weighted mean of their class probabilities can beat both.
Per fold ``k``::

    p = w_k * p_A + (1 - w_k) * p_B,   w_k in the grid (0, 0.1, ..., 1)

``w_k`` is the weight with the best UA on fold ``k``'s **dev** side alone (ties go
to the weight nearest 0.5: equal trust when dev cannot tell). Test predictions of
fold ``k`` never choose anything. ``w = 1`` is run A alone and ``w = 0`` run B
alone, so dev can always fall back to one of them.

Scores become probabilities first: softmax probabilities are kept (rows summed
to one), a linear SVM's decision values go through a softmax.

With ``calibrate``, each run's scores are first temperature-scaled per fold:
``p = softmax(z / T)`` with ``z`` the log-probabilities (or decision values) and
``T`` the temperature with the least negative log-likelihood on that fold's
**dev** side. A network trained to its best dev epoch is overconfident on new
speakers (T > 1) while a linear SVM's decision values are too flat (T < 1), so
without it ``w`` weighs the runs' scales as much as their merit. Scaling never
changes a run's own argmax: each run alone scores what it did.

Both runs must have scored the same utterances of the same folds, dev and test,
with the same labels and classes (e.g. ``satn train`` and ``satn baseline`` on one
config). With ``selection.inner_k`` the dev side is the pooled inner-fold
predictions over the training speakers, which then choose the weight.

:func:`average` is the mean of several runs' probabilities with equal weights, dev and
test alike: a seed ensemble of finished runs (or of two configurations that scored the
same folds). Nothing is chosen, so nothing of test can leak; its dev side is the mean of
the runs' dev sides, so the selection score can weigh one seed against the mean, and
:func:`fuse` can weigh the mean against a baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from satn.metrics import Aggregate, Scores, aggregate, score
from satn.predictions import SCORE_PREFIX, classes_of, predictions_frame, renormalised
from satn.significance import ComparisonError

GRID = tuple(round(i / 10, 1) for i in range(11))
SIDES = ("dev", "test")
# temperatures tried on dev: log-spaced, wide enough for an SVM's flat decision values
# (T ~ 0.3) and an overconfident network (T ~ 3); a grid is deterministic and cannot diverge
TEMPERATURES = tuple(float(t) for t in np.exp(np.linspace(np.log(0.02), np.log(50.0), 121)))


@dataclass(frozen=True)
class FusedFold:
    name: str
    weight: float                       # of run A; 1 - weight is run B's
    dev_ua_by_weight: dict[float, float]
    temperatures: tuple[float, float]   # of runs A and B (1, 1 without calibration)
    dev: Scores
    test: Scores
    predictions: pd.DataFrame           # dev and test rows, fused probabilities


class _ScoredSides:
    """Fold means of the dev and test scores of a result whose ``folds`` have ``dev`` and
    ``test`` :class:`Scores`."""

    @property
    def test(self) -> Aggregate:
        return aggregate([f.test for f in self.folds])

    @property
    def dev(self) -> Aggregate:
        return aggregate([f.dev for f in self.folds])

    def summary(self) -> dict[str, float]:
        """Fold means and stds of dev/test WA, UA, F1 (``test_ua_mean``, ...)."""
        out = {}
        for side, agg in (("dev", self.dev), ("test", self.test)):
            for k in ("wa", "ua", "f1"):
                out[f"{side}_{k}_mean"] = getattr(agg, f"{k}_mean")
                out[f"{side}_{k}_std"] = getattr(agg, f"{k}_std")
        return out


@dataclass(frozen=True)
class FusionResult(_ScoredSides):
    classes: tuple[str, ...]
    folds: tuple[FusedFold, ...]
    grid: tuple[float, ...]             # the weights of run A that dev chose among
    calibrated: bool = False

    def summary(self) -> dict[str, float]:
        """As :meth:`_ScoredSides.summary`, and the mean weight of run A."""
        return {**super().summary(),
                "weight_a_mean": float(np.mean([f.weight for f in self.folds]))}


@dataclass(frozen=True)
class AveragedFold:
    name: str
    members_dev_ua: tuple[float, ...]   # each run alone on this fold's dev side
    members_test_ua: tuple[float, ...]
    dev: Scores
    test: Scores
    predictions: pd.DataFrame           # dev and test rows, mean probabilities


@dataclass(frozen=True)
class AverageResult(_ScoredSides):
    classes: tuple[str, ...]
    folds: tuple[AveragedFold, ...]
    n_runs: int


def probabilities(frame: pd.DataFrame, classes: Sequence[str]) -> np.ndarray:
    """(N, C) class probabilities of a predictions table, columns in ``classes`` order."""
    s = frame[[f"{SCORE_PREFIX}{c}" for c in classes]].to_numpy(np.float64)
    if frame.attrs.get("score_kind", "probability") == "decision":
        s = np.exp(s - s.max(1, keepdims=True))
    return renormalised(s)


def log_scores(frame: pd.DataFrame, classes: Sequence[str]) -> np.ndarray:
    """(N, C) scores whose softmax is :func:`probabilities`: log-probabilities, or a linear
    SVM's decision values as they are."""
    s = frame[[f"{SCORE_PREFIX}{c}" for c in classes]].to_numpy(np.float64)
    if frame.attrs.get("score_kind", "probability") == "decision":
        return s
    return np.log(np.clip(probabilities(frame, classes), 1e-12, None))


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def fit_temperature(z: np.ndarray, y: np.ndarray,
                    temperatures: Sequence[float] = TEMPERATURES) -> float:
    """The temperature ``T`` of :data:`TEMPERATURES` that minimises the mean negative
    log-likelihood of ``softmax(z / T)`` for labels ``y``. z: (N, C); y: (N,)."""
    rows = np.arange(len(y))
    nll = [-_log_softmax(z / t)[rows, y].mean() for t in temperatures]
    return float(temperatures[int(np.argmin(nll))])


def fuse(frame_a: pd.DataFrame, frame_b: pd.DataFrame,
         grid: Sequence[float] = GRID, *, calibrate: bool = False) -> FusionResult:
    """Fuse two runs' predictions (``satn.tracking.load_predictions`` tables), weight per
    fold by dev UA; with ``calibrate``, each run temperature-scaled on the fold's dev side
    first. Raises :class:`ComparisonError` if they did not score the same utterances,
    labels and classes."""
    grid = sorted({float(w) for w in grid})
    if not grid or grid[0] < 0 or grid[-1] > 1:
        raise ValueError(f"fusion weights must lie in [0, 1], got {grid}")
    classes, names, (a, b) = common_folds((frame_a, frame_b), ("A", "B"))
    cls = {c: i for i, c in enumerate(classes)}
    folds = []
    for name in names:
        sides = {side: aligned((a, b), ("A", "B"), name, side) for side in SIDES}
        ys = {side: sides[side][0]["true"].map(cls).to_numpy(np.int64) for side in SIDES}
        if calibrate:
            zs = {side: (log_scores(sides[side][0], classes),
                         log_scores(sides[side][1], classes)) for side in SIDES}
            temps = tuple(fit_temperature(zs["dev"][i], ys["dev"]) for i in (0, 1))
            ps = {side: tuple(np.exp(_log_softmax(zs[side][i] / temps[i])) for i in (0, 1))
                  for side in SIDES}
        else:
            temps = (1.0, 1.0)
            ps = {side: (probabilities(sides[side][0], classes),
                         probabilities(sides[side][1], classes)) for side in SIDES}

        def fused(side, w, ps=ps):
            pa, pb = ps[side]
            return w * pa + (1.0 - w) * pb

        by_w = {w: score(ys["dev"], fused("dev", w).argmax(1), len(classes)).ua for w in grid}
        best = max(by_w.values())
        weight = min((w for w, ua in by_w.items() if ua == best), key=lambda w: abs(w - 0.5))
        frames, scores = [], {}
        for side in SIDES:
            p = fused(side, weight)
            rows = sides[side][0]
            scores[side] = score(ys[side], p.argmax(1), len(classes))
            frames.append(predictions_frame(rows["id"].tolist(), rows["speaker"].tolist(),
                                            ys[side], p, classes, side))
        folds.append(FusedFold(name, weight, by_w, temps, scores["dev"], scores["test"],
                               pd.concat(frames, ignore_index=True)))
    return FusionResult(tuple(classes), tuple(folds), tuple(grid), calibrate)


def average(frames: Sequence[pd.DataFrame]) -> AverageResult:
    """The mean of several runs' probabilities per utterance, equal weights, every fold's dev
    and test side (``satn.tracking.load_predictions`` tables with the same classes). Raises
    :class:`ComparisonError` if they did not score the same utterances, labels and classes."""
    if len(frames) < 2:
        raise ValueError(f"averaging needs at least two runs, not {len(frames)}")
    tags = [str(i + 1) for i in range(len(frames))]
    classes, names, runs = common_folds(frames, tags)
    cls = {c: i for i, c in enumerate(classes)}
    folds = []
    for name in names:
        frames_, scores, members = [], {}, {}
        for side in SIDES:
            rows = aligned(runs, tags, name, side)
            y = rows[0]["true"].map(cls).to_numpy(np.int64)
            ps = [probabilities(r, classes) for r in rows]
            members[side] = tuple(score(y, p.argmax(1), len(classes)).ua for p in ps)
            p = np.mean(ps, axis=0)
            scores[side] = score(y, p.argmax(1), len(classes))
            frames_.append(predictions_frame(rows[0]["id"].tolist(),
                                             rows[0]["speaker"].tolist(), y, p, classes, side))
        folds.append(AveragedFold(name, members["dev"], members["test"], scores["dev"],
                                  scores["test"], pd.concat(frames_, ignore_index=True)))
    return AverageResult(tuple(classes), tuple(folds), len(frames))


def common_folds(frames: Sequence[pd.DataFrame], tags: Sequence[str]
                 ) -> tuple[tuple[str, ...], list[str], list[pd.DataFrame]]:
    """The runs' shared class order and fold names, and the runs with a ``fold`` column."""
    classes = classes_of(frames[0])
    for tag, f in zip(tags[1:], frames[1:], strict=True):
        if set(classes) != set(classes_of(f)):
            raise ComparisonError(f"the runs have different classes: {list(classes)} and "
                                  f"{list(classes_of(f))} (run {tag})")
    runs = [_with_fold(f) for f in frames]
    names = sorted(runs[0]["fold"].unique())
    for tag, f in zip(tags[1:], runs[1:], strict=True):
        if names != sorted(f["fold"].unique()):
            raise ComparisonError(f"the runs have different folds: {names} and "
                                  f"{sorted(f['fold'].unique())} (run {tag})")
    return classes, names, runs


def _with_fold(frame: pd.DataFrame) -> pd.DataFrame:
    return frame if "fold" in frame.columns else frame.assign(fold="all")


def aligned(runs: Sequence[pd.DataFrame], tags: Sequence[str], fold: str,
            side: str) -> list[pd.DataFrame]:
    """Fold ``fold``'s ``side`` rows of every run, in the first run's utterance order."""
    rows = [r[(r["fold"] == fold) & (r["side"] == side)] for r in runs]
    for tag, f in zip(tags, rows, strict=True):
        if f.empty:
            raise ComparisonError(f"run {tag} has no {side} predictions in fold {fold}: runs "
                                  "are weighed, averaged or chosen on dev and scored on test")
        if f["id"].duplicated().any():
            raise ComparisonError(f"run {tag} predicts some {side} utterance of fold {fold} "
                                  "twice")
    first = rows[0].reset_index(drop=True)
    first.attrs = runs[0].attrs
    out = [first]
    for tag, run, f in zip(tags[1:], runs[1:], rows[1:], strict=True):
        if set(first["id"]) != set(f["id"]):
            raise ComparisonError(
                f"fold {fold}: the runs' {side} sides differ "
                f"({len(set(first['id']) - set(f['id']))} utterance(s) only in {tags[0]}, "
                f"{len(set(f['id']) - set(first['id']))} only in {tag})")
        f = f.set_index("id").loc[first["id"]].reset_index()
        f.attrs = run.attrs
        if (first["true"].to_numpy() != f["true"].to_numpy()).any():
            raise ComparisonError(f"fold {fold}: the runs give different true labels to the "
                                  f"same {side} utterances")
        out.append(f)
    return out
