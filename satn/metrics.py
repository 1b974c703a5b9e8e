"""Classification scores per fold and across folds.

Definitions, fixed here once (papers often swap the names; satn does not):

- **WA** (weighted accuracy) = overall accuracy = correct / all.
- **UA** (unweighted accuracy) = mean of per-class recalls = balanced accuracy,
  over the classes present in ``y_true`` (as ``sklearn.metrics.balanced_accuracy_score``).
- **F1** = macro-F1 over the classes present in ``y_true`` or ``y_pred``
  (as ``sklearn.metrics.f1_score(average="macro")``); a class with no true
  positive scores 0.
- **confusion**: ``(C, C)`` counts, rows = true class, columns = predicted.
- **WER / PER** (SATN Eq. 13) = (substitutions + deletions + insertions) / reference
  tokens, pooled over utterances (:func:`error_rate`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class Scores:
    """One evaluation (one fold's test side). ``confusion``: (C, C) int64, rows = true."""

    wa: float
    ua: float
    f1: float
    confusion: np.ndarray
    n: int

    @property
    def recalls(self) -> np.ndarray:
        """(C,) per-class recall; NaN for a class absent from ``y_true``."""
        return _recalls(self.confusion)

    def to_dict(self) -> dict[str, float]:
        """The scalar scores (the confusion matrix travels as an array)."""
        return {"wa": float(self.wa), "ua": float(self.ua), "f1": float(self.f1),
                "n": float(self.n)}


def score(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray,
          n_classes: int) -> Scores:
    """WA, UA, macro-F1 and the confusion matrix of class ids in ``[0, n_classes)``."""
    t = np.asarray(y_true).reshape(-1)
    p = np.asarray(y_pred).reshape(-1)
    if t.size == 0:
        raise ValueError("cannot score an empty set of predictions")
    if t.shape != p.shape:
        raise ValueError(f"{t.size} true labels but {p.size} predictions")
    for name, a in (("y_true", t), ("y_pred", p)):
        if not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{name} must hold integer class ids, got dtype {a.dtype}")
        if a.min() < 0 or a.max() >= n_classes:
            raise ValueError(f"{name} has class ids outside [0, {n_classes}): "
                             f"{sorted(set(a[(a < 0) | (a >= n_classes)].tolist()))[:5]}")
    t = t.astype(np.int64)
    p = p.astype(np.int64)
    confusion = np.bincount(t * n_classes + p, minlength=n_classes * n_classes)
    return from_confusion(confusion.reshape(n_classes, n_classes))


def from_confusion(confusion: np.ndarray) -> Scores:
    """Scores of a (C, C) count matrix, rows = true class, columns = predicted."""
    cm = np.asarray(confusion, dtype=np.int64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion must be square (C, C), got shape {cm.shape}")
    n = int(cm.sum())
    if n == 0:
        raise ValueError("cannot score an empty confusion matrix")
    tp = np.diag(cm).astype(np.float64)
    true_n = cm.sum(axis=1)
    pred_n = cm.sum(axis=0)
    recalls = _recalls(cm)
    seen = (true_n + pred_n) > 0
    # F1 = 2 tp / (true + predicted): the harmonic mean of precision and recall, 0 at tp = 0.
    f1 = 2 * tp[seen] / (true_n[seen] + pred_n[seen])
    return Scores(wa=float(tp.sum() / n), ua=float(np.nanmean(recalls)), f1=float(f1.mean()),
                  confusion=cm, n=n)


def _recalls(cm: np.ndarray) -> np.ndarray:
    true_n = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(true_n > 0, np.diag(cm) / np.maximum(true_n, 1), np.nan)


def normalize_rows(confusion: np.ndarray) -> np.ndarray:
    """(C, C) counts -> rows divided by their sums; rows of a class never seen stay NaN."""
    cm = np.asarray(confusion, dtype=np.float64)
    sums = cm.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sums > 0, cm / np.where(sums > 0, sums, 1), np.nan)


@dataclass(frozen=True, eq=False)
class Aggregate:
    """Scores across folds.

    ``*_mean`` / ``*_std``: mean and sample std (ddof=1, as papers report; 0
    for a single fold) of the per-fold scores. ``wa_pooled`` / ``ua_pooled``:
    WA and UA of the summed confusion (all test utterances pooled).
    ``confusion``: (C, C) summed counts. ``confusion_normalised_mean``: (C, C) mean over
    folds of each fold's row-normalised matrix (SATN's Figure 3); a fold
    without a class leaves that row out of the mean, and a class absent from
    every fold's test side gives a row of zeros.
    """

    n_folds: int
    n: int
    wa_mean: float
    wa_std: float
    ua_mean: float
    ua_std: float
    f1_mean: float
    f1_std: float
    wa_pooled: float
    ua_pooled: float
    confusion: np.ndarray
    confusion_normalised_mean: np.ndarray

    def to_dict(self) -> dict[str, float]:
        """Flat scalars: ``wa_mean``, ``wa_std``, ..., ``n_folds``, ``n``."""
        keys = ("wa_mean", "wa_std", "ua_mean", "ua_std", "f1_mean", "f1_std",
                "wa_pooled", "ua_pooled", "n_folds", "n")
        return {k: float(getattr(self, k)) for k in keys}


def aggregate(scores: Sequence[Scores]) -> Aggregate:
    """Combine per-fold :class:`Scores` (all with the same classes)."""
    if not scores:
        raise ValueError("aggregate needs at least one fold's scores")
    shapes = {s.confusion.shape for s in scores}
    if len(shapes) != 1:
        raise ValueError(f"folds have confusion matrices of different shapes: {sorted(shapes)}")

    def mean_std(values: list[float]) -> tuple[float, float]:
        a = np.asarray(values, dtype=np.float64)
        return float(a.mean()), (float(a.std(ddof=1)) if len(a) > 1 else 0.0)

    total = np.sum([s.confusion for s in scores], axis=0).astype(np.int64)
    rows = np.stack([normalize_rows(s.confusion) for s in scores])  # (folds, C, C)
    present = ~np.isnan(rows[:, :, 0])  # (folds, C): the fold's test side has the class
    norm = np.nansum(rows, axis=0) / np.maximum(present.sum(axis=0), 1)[:, None]
    pooled = from_confusion(total)
    wa_mean, wa_std = mean_std([s.wa for s in scores])
    ua_mean, ua_std = mean_std([s.ua for s in scores])
    f1_mean, f1_std = mean_std([s.f1 for s in scores])
    return Aggregate(
        n_folds=len(scores), n=int(total.sum()),
        wa_mean=wa_mean, wa_std=wa_std, ua_mean=ua_mean, ua_std=ua_std,
        f1_mean=f1_mean, f1_std=f1_std, wa_pooled=pooled.wa, ua_pooled=pooled.ua,
        confusion=total, confusion_normalised_mean=norm,
    )


def format_confusion(matrix: np.ndarray, classes: Sequence[str], digits: int = 2) -> str:
    """A text table, rows = true class, columns = predicted.

    Integer matrices print as counts; float matrices (row-normalised) with
    ``digits`` decimals.
    """
    m = np.asarray(matrix)
    if m.shape != (len(classes), len(classes)):
        raise ValueError(f"matrix shape {m.shape} does not match {len(classes)} classes")
    if np.issubdtype(m.dtype, np.integer):
        cells = [[str(int(v)) for v in row] for row in m]
    else:
        cells = [["nan" if np.isnan(v) else f"{v:.{digits}f}" for v in row] for row in m]
    corner = "true \\ pred"
    names = [str(c) for c in classes]
    first = max(len(corner), *(len(c) for c in names))
    width = max(max(len(c) for c in names), max(len(v) for row in cells for v in row))
    lines = [corner.ljust(first) + "".join(" " + c.rjust(width) for c in names)]
    for name, row in zip(names, cells, strict=True):
        lines.append(name.ljust(first) + "".join(" " + v.rjust(width) for v in row))
    return "\n".join(lines)


# ---------------------------------------------------------------- recognition error rates


@dataclass(frozen=True)
class ErrorRate:
    """Word or phoneme error rate (SATN Eq. 13): (S + D + I) / N over a set of utterances.

    ``errors`` = S + D + I summed over utterances (Levenshtein distance of each
    hypothesis to its reference), ``n`` = reference tokens in all; ``rate`` can
    exceed 1 when hypotheses insert much.
    """

    errors: int
    n: int

    @property
    def rate(self) -> float:
        return self.errors / self.n if self.n else float("nan")


def error_rate(refs: Sequence[Sequence[str]], hyps: Sequence[Sequence[str]]) -> ErrorRate:
    """Pooled error rate of token sequences (words, or phonemes), reference by reference."""
    from torchaudio.functional import edit_distance

    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    errors = sum(edit_distance(list(r), list(h)) for r, h in zip(refs, hyps, strict=True))
    return ErrorRate(int(errors), sum(len(r) for r in refs))
