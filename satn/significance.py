"""Uncertainty of fold-mean scores and paired tests between two runs.

Everything works on per-utterance predictions (:mod:`satn.predictions`, with a
``fold`` column) and on the statistic a run reports: the **mean over folds** of
each fold's WA or UA (``test_wa_mean`` / ``test_ua_mean``).

- :func:`bootstrap_ci`: a percentile bootstrap CI of that statistic, resampling
  utterances with replacement within each (fold, true class) stratum. Class
  counts stay fixed, so UA's per-class recalls are always defined, and WA keeps
  each fold's class mix.
- :func:`compare`: two runs on the same utterances. Over utterances: the
  difference A - B with a paired bootstrap CI (the same resampled utterances for
  both) and a paired permutation test (each utterance's pair of outcomes swapped
  between A and B at random; with one fold and WA this is McNemar's exact test).
  Over folds: a paired t-test and a Wilcoxon signed-rank test of the fold scores.

Both statistics are linear in per-utterance correctness within a stratum, which
is what makes the resampling cheap: a fold's recall of class c is the mean of the
correct flags of its class-c utterances; WA_f = sum_c n_fc recall_fc / n_f and
UA_f = mean_c recall_fc.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from satn.errors import InputError

METRICS = ("ua", "wa")


class ComparisonError(InputError):
    """Two runs whose predictions cannot be paired."""


@dataclass(frozen=True)
class CI:
    estimate: float
    low: float
    high: float
    level: float

    def __str__(self) -> str:
        return f"{self.estimate:.3f} [{self.low:.3f}, {self.high:.3f}]"


@dataclass(frozen=True)
class Comparison:
    """A - B for one metric, over the same utterances and folds."""

    metric: str
    a: float  # fold-mean metric of A
    b: float
    diff: CI  # A - B with its paired bootstrap CI
    p_utterances: float  # paired permutation test, two-sided
    n_utterances: int
    fold_a: tuple[float, ...]
    fold_b: tuple[float, ...]
    p_folds_t: float  # paired t-test over folds (NaN with fewer than 2 folds)
    p_folds_wilcoxon: float  # Wilcoxon signed-rank over folds (NaN when undefined)


class _Strata:
    """Utterances grouped by (fold, true class); weights that turn stratum means into
    the fold-mean metric."""

    def __init__(self, folds: np.ndarray, true: np.ndarray):
        keys = pd.MultiIndex.from_arrays([folds, true])
        codes, uniques = pd.factorize(keys)
        self.members = [np.flatnonzero(codes == k) for k in range(len(uniques))]
        self.fold_of = np.asarray([u[0] for u in uniques])
        self.fold_names = list(dict.fromkeys(folds.tolist()))  # first-seen order
        sizes = np.array([len(m) for m in self.members], dtype=np.float64)
        self.weights = {}
        for metric in METRICS:
            w = np.zeros(len(uniques))
            for f in self.fold_names:
                in_f = self.fold_of == f
                w[in_f] = sizes[in_f] / sizes[in_f].sum() if metric == "wa" else 1 / in_f.sum()
            self.weights[metric] = w  # per-fold weights; the fold mean divides by n_folds

    def fold_scores(self, correct: np.ndarray, metric: str) -> np.ndarray:
        """(n_folds,) metric of each fold from (N,) correct flags."""
        means = np.array([correct[m].mean() for m in self.members])
        w = self.weights[metric] * means
        return np.array([w[self.fold_of == f].sum() for f in self.fold_names])

    def resampled_means(self, values: np.ndarray, rng: np.random.Generator,
                        n: int) -> np.ndarray:
        """(n, n_strata, *values.shape[1:]) stratum means of ``values`` (N, ...) under
        ``n`` bootstrap resamples (with replacement, within strata)."""
        out = np.empty((n, len(self.members), *values.shape[1:]))
        for k, m in enumerate(self.members):
            idx = m[rng.integers(0, len(m), size=(n, len(m)))]  # (n, n_k)
            out[:, k] = values[idx].mean(axis=1)
        return out

    def statistic(self, stratum_means: np.ndarray, metric: str) -> np.ndarray:
        """Fold-mean metric from stratum means (..., n_strata)."""
        return (stratum_means * self.weights[metric]).sum(-1) / len(self.fold_names)


def _side(frame: pd.DataFrame, side: str) -> pd.DataFrame:
    if "fold" not in frame.columns:
        frame = frame.assign(fold="all")
    out = frame[frame["side"] == side] if side else frame
    if out.empty:
        raise ComparisonError(f"no {side} predictions to score")
    return out.reset_index(drop=True)


def fold_scores(frame: pd.DataFrame, metric: str = "ua", side: str = "test") -> dict[str, float]:
    """Each fold's WA or UA from a predictions table (as :func:`satn.metrics.score` gives)."""
    _check_metric(metric)
    f = _side(frame, side)
    strata = _Strata(f["fold"].to_numpy(), f["true"].to_numpy())
    values = strata.fold_scores((f["true"] == f["pred"]).to_numpy(np.float64), metric)
    return dict(zip(strata.fold_names, values.tolist(), strict=True))


def bootstrap_ci(frame: pd.DataFrame, metric: str = "ua", *, side: str = "test",
                 n_resamples: int = 2000, level: float = 0.95, seed: int = 0) -> CI:
    """Percentile bootstrap CI of the fold-mean WA or UA of one run's predictions.

    ``frame``: a predictions table (``id``, ``side``, ``true``, ``pred``; ``fold`` when
    there are several folds), e.g. ``satn.tracking.load_predictions``.
    """
    _check_metric(metric)
    f = _side(frame, side)
    strata = _Strata(f["fold"].to_numpy(), f["true"].to_numpy())
    correct = (f["true"] == f["pred"]).to_numpy(np.float64)
    estimate = float(strata.fold_scores(correct, metric).mean())
    rng = np.random.default_rng(seed)
    boot = strata.statistic(strata.resampled_means(correct, rng, n_resamples), metric)
    low, high = _percentiles(boot, level)
    return CI(estimate, low, high, level)


def paired(frame_a: pd.DataFrame, frame_b: pd.DataFrame, side: str = "test") -> pd.DataFrame:
    """One row per (fold, id) of both runs: ``true``, ``correct_a``, ``correct_b``.

    Raises :class:`ComparisonError` unless both runs predicted the same utterances
    of the same folds with the same true labels.
    """
    a, b = _side(frame_a, side), _side(frame_b, side)
    keys = ["fold", "id"]
    for name, f in (("A", a), ("B", b)):
        if f.duplicated(keys).any():
            raise ComparisonError(f"run {name} predicts some utterance twice in one fold")
    m = a[[*keys, "true", "pred"]].merge(b[[*keys, "true", "pred"]], on=keys, how="outer",
                                         suffixes=("_a", "_b"), indicator=True)
    if (m["_merge"] != "both").any():
        only_a = int((m["_merge"] == "left_only").sum())
        only_b = int((m["_merge"] == "right_only").sum())
        hint = ""
        if not (m["_merge"] == "both").any():
            hint = " (different folds or corpora?)"
        raise ComparisonError(f"the runs' {side} sides differ: {only_a} (fold, utterance) "
                              f"pair(s) only in A, {only_b} only in B{hint}")
    if (m["true_a"] != m["true_b"]).any():
        raise ComparisonError("the runs give different true labels to the same utterances")
    return pd.DataFrame({"fold": m["fold"], "id": m["id"], "true": m["true_a"],
                         "correct_a": (m["pred_a"] == m["true_a"]).to_numpy(np.float64),
                         "correct_b": (m["pred_b"] == m["true_b"]).to_numpy(np.float64)})


def compare(frame_a: pd.DataFrame, frame_b: pd.DataFrame, metric: str = "ua", *,
            side: str = "test", n_resamples: int = 10000, level: float = 0.95,
            seed: int = 0) -> Comparison:
    """A - B in fold-mean WA or UA: paired bootstrap CI, permutation p, fold-level tests."""
    from scipy import stats

    _check_metric(metric)
    p = paired(frame_a, frame_b, side)
    strata = _Strata(p["fold"].to_numpy(), p["true"].to_numpy())
    ca, cb = p["correct_a"].to_numpy(), p["correct_b"].to_numpy()
    fa, fb = strata.fold_scores(ca, metric), strata.fold_scores(cb, metric)
    observed = float(fa.mean() - fb.mean())
    rng = np.random.default_rng(seed)
    d = ca - cb  # (N,) in {-1, 0, 1}
    boot = strata.statistic(strata.resampled_means(d, rng, n_resamples), metric)
    low, high = _percentiles(boot, level)
    # permutation: swapping A's and B's outcome of an utterance flips the sign of its d
    perm = np.concatenate([
        strata.statistic(_sign_flipped_means(d, strata.members, rng, n), metric)
        for n in _blocks(n_resamples)])
    # a small tolerance so that ties with the observed value count, whatever the rounding
    extreme = np.abs(perm) >= abs(observed) - 1e-12
    p_utt = float((1 + extreme.sum()) / (1 + n_resamples))
    p_t = p_w = math.nan
    if len(fa) >= 2:
        diffs = fa - fb
        if np.allclose(diffs, 0):
            p_t = p_w = 1.0
        else:
            p_t = float(stats.ttest_rel(fa, fb).pvalue) if np.ptp(diffs) > 0 else 0.0
            p_w = float(stats.wilcoxon(fa, fb).pvalue)
    return Comparison(metric, float(fa.mean()), float(fb.mean()),
                      CI(observed, low, high, level), p_utt, len(d), tuple(fa.tolist()),
                      tuple(fb.tolist()), p_t, p_w)


def _sign_flipped_means(d: np.ndarray, members: list[np.ndarray], rng: np.random.Generator,
                        n: int) -> np.ndarray:
    """(n, n_strata) stratum means of ``d`` with every value's sign flipped at random."""
    signs = rng.choice(np.array([-1.0, 1.0]), size=(n, len(d)))
    return np.stack([(signs[:, m] * d[m]).mean(axis=1) for m in members], axis=1)


def _blocks(n: int, size: int = 1000) -> list[int]:
    """``n`` resamples in blocks, so memory stays (size x utterances) on a large corpus."""
    return [min(size, n - i) for i in range(0, n, size)]


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), not {level}")
    alpha = (1 - level) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return float(low), float(high)


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, not {metric!r}")
