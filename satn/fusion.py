"""Late fusion of two evaluated runs: their per-utterance scores, weighed on dev.

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


@dataclass(frozen=True)
class FusionResult:
    classes: tuple[str, ...]
    folds: tuple[FusedFold, ...]
    grid: tuple[float, ...]             # the weights of run A that dev chose among
    calibrated: bool = False

    @property
    def test(self) -> Aggregate:
        return aggregate([f.test for f in self.folds])

    @property
    def dev(self) -> Aggregate:
        return aggregate([f.dev for f in self.folds])

    def summary(self) -> dict[str, float]:
        """Fold means and stds of dev/test WA, UA, F1 (``test_ua_mean``, ...), and the
        mean weight of run A."""
        out = {}
        for side, agg in (("dev", self.dev), ("test", self.test)):
            for k in ("wa", "ua", "f1"):
                out[f"{side}_{k}_mean"] = getattr(agg, f"{k}_mean")
                out[f"{side}_{k}_std"] = getattr(agg, f"{k}_std")
        out["weight_a_mean"] = float(np.mean([f.weight for f in self.folds]))
        return out


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
    classes = classes_of(frame_a)
    if set(classes) != set(classes_of(frame_b)):
        raise ComparisonError(f"the runs have different classes: {list(classes)} and "
                              f"{list(classes_of(frame_b))}")
    a, b = _with_fold(frame_a), _with_fold(frame_b)
    names = sorted(a["fold"].unique())
    if names != sorted(b["fold"].unique()):
        raise ComparisonError(f"the runs have different folds: {names} and "
                              f"{sorted(b['fold'].unique())}")
    cls = {c: i for i, c in enumerate(classes)}
    folds = []
    for name in names:
        sides = {side: _pair(a, b, name, side) for side in SIDES}
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


def _with_fold(frame: pd.DataFrame) -> pd.DataFrame:
    return frame if "fold" in frame.columns else frame.assign(fold="all")


def _pair(a: pd.DataFrame, b: pd.DataFrame, fold: str,
          side: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fold ``fold``'s ``side`` rows of both runs, in the same utterance order."""
    fa = a[(a["fold"] == fold) & (a["side"] == side)]
    fb = b[(b["fold"] == fold) & (b["side"] == side)]
    if fa.empty or fb.empty:
        which = "A" if fa.empty else "B"
        raise ComparisonError(f"run {which} has no {side} predictions in fold {fold}: fusion "
                              "weighs the runs on dev and scores them on test")
    for tag, f in (("A", fa), ("B", fb)):
        if f["id"].duplicated().any():
            raise ComparisonError(f"run {tag} predicts some {side} utterance of fold {fold} "
                                  "twice")
    if set(fa["id"]) != set(fb["id"]):
        raise ComparisonError(
            f"fold {fold}: the runs' {side} sides differ ({len(set(fa['id']) - set(fb['id']))} "
            f"utterance(s) only in A, {len(set(fb['id']) - set(fa['id']))} only in B)")
    fb = fb.set_index("id").loc[fa["id"]].reset_index()
    fb.attrs = b.attrs
    fa = fa.reset_index(drop=True)
    fa.attrs = a.attrs
    if (fa["true"].to_numpy() != fb["true"].to_numpy()).any():
        raise ComparisonError(f"fold {fold}: the runs give different true labels to the same "
                              f"{side} utterances")
    return fa, fb
