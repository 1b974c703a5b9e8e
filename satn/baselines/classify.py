"""Linear classifiers on utterance vectors, fold by fold: the classical baselines.

Per fold: standardisation (fitted on the training side) + a linear SVM or
logistic regression, one fit per C of the grid on the training side; the C of
the best dev UA is kept (ties: the smaller C, i.e. the stronger regularisation)
and that fit scores test. The test side takes no part in the choice:
:func:`select_c` never receives it. Same folds, metrics and class order as the
neural runs, so their rows sit side by side.

With ``selection.inner_k`` (as the neural runs choose their epochs), C is chosen
by cross-validation over the training speakers instead (:func:`select_c_cv`):
the C of the best UA of the pooled inner-fold predictions, refitted on every
training speaker (train and dev) to score test.

With ``recipe.normalisation: speaker`` (as a network's recipe), each speaker's
vectors are first standardised with that speaker's own statistics, over all of
the speaker's utterances on any side (features only, labels never), so a network
and a baseline compared on the same folds see the same kind of normalisation.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from satn.config import ConfigError, ExperimentConfig, _check, _one_of
from satn.folddata import speaker_normalised
from satn.folds import fold_by_name, make_folds, member_folds
from satn.metrics import Aggregate, Scores, aggregate, score
from satn.predictions import predictions_frame

CLASSIFIERS = ("svm", "logreg")
# C = 10 was never chosen on RAVDESS (4 and 8 classes, any features) and is the slowest fit
DEFAULT_C_GRID = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)


@dataclass(frozen=True)
class BaselineConfig:
    """One classical configuration: a feature set and a classifier with its C grid."""

    features: str = "egemaps"  # egemaps | compare | logmel_stats
    classifier: str = "svm"  # svm (LinearSVC) | logreg (LogisticRegression)
    c_grid: tuple[float, ...] = DEFAULT_C_GRID
    class_weighting: str = "balanced"  # balanced (as train.class_weighting) | none
    max_iter: int = 5000
    seed: int = 0

    def __post_init__(self) -> None:
        from satn.baselines.features import FEATURE_SETS

        _check("baseline", {
            "features": _one_of(self.features, FEATURE_SETS),
            "classifier": _one_of(self.classifier, CLASSIFIERS),
            "c_grid": (bool(self.c_grid) and all(c > 0 for c in self.c_grid),
                       f"must be one or more values > 0, not {list(self.c_grid)}"),
            "class_weighting": _one_of(self.class_weighting, ("balanced", "none")),
            "max_iter": (self.max_iter >= 1, f"must be at least 1, not {self.max_iter}"),
        })

    @property
    def name(self) -> str:
        """The variant name runs are tagged with, e.g. ``svm/egemaps``."""
        return f"{self.classifier}/{self.features}"

    @property
    def score_kind(self) -> str:
        return "decision" if self.classifier == "svm" else "probability"

    def flat(self) -> dict[str, str]:
        return {"baseline.features": self.features, "baseline.classifier": self.classifier,
                "baseline.c_grid": ",".join(f"{c:g}" for c in self.c_grid),
                "baseline.class_weighting": self.class_weighting,
                "baseline.max_iter": str(self.max_iter), "baseline.seed": str(self.seed)}


def make_classifier(cfg: BaselineConfig, c: float):
    """Standardisation + the linear classifier, unfitted."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    weight = "balanced" if cfg.class_weighting == "balanced" else None
    if cfg.classifier == "svm":
        clf = LinearSVC(C=c, class_weight=weight, max_iter=cfg.max_iter, random_state=cfg.seed)
    else:
        clf = LogisticRegression(C=c, class_weight=weight, max_iter=cfg.max_iter,
                                 random_state=cfg.seed)
    return make_pipeline(StandardScaler(), clf)


def class_scores(model, x: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """-> scores (N, n_classes) in class-id order, predicted ids (N,).

    A class absent from the training side has no column in the model: its score is
    NaN (probabilities: 0) and it is never predicted.
    """
    seen = model.classes_.astype(np.int64)
    if hasattr(model, "predict_proba"):
        s, fill = model.predict_proba(x), 0.0
    else:
        s, fill = model.decision_function(x), np.nan
        if s.ndim == 1:  # two classes: one margin, positive for classes_[1]
            s = np.stack([-s, s], axis=1)
    out = np.full((x.shape[0], n_classes), fill)
    out[:, seen] = s
    return out, model.predict(x).astype(np.int64)


@dataclass(frozen=True)
class Selection:
    """The C kept for a fold, the dev UA of every C, and the fit of the kept C."""

    c: float
    dev_ua: dict[float, float]
    model: object = field(repr=False)


def select_c(x_train: np.ndarray, y_train: np.ndarray, x_dev: np.ndarray, y_dev: np.ndarray,
             cfg: BaselineConfig, n_classes: int) -> Selection:
    """Fit one model per C on the training side; keep the best dev UA (ties: smaller C)."""

    if len(y_dev) == 0:
        raise ConfigError("baselines choose C on the dev side: the folds give it no utterance "
                          "(folds.dev_groups / dev_speakers)")
    fits, uas = {}, {}
    for c in sorted(set(cfg.c_grid)):
        model = fits[c] = _fit(cfg, c, x_train, y_train)
        uas[c] = score(y_dev, model.predict(x_dev).astype(np.int64), n_classes).ua
    best = max(uas.values())
    chosen = min(c for c, ua in uas.items() if ua == best)
    return Selection(chosen, uas, fits[chosen])


def _fit(cfg: BaselineConfig, c: float, x: np.ndarray, y: np.ndarray):
    from sklearn.exceptions import ConvergenceWarning

    model = make_classifier(cfg, c)
    with warnings.catch_warnings():
        # a fit stopped at max_iter still gives a usable model; dev UA judges it
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    return model


def select_c_cv(x: np.ndarray, y: np.ndarray, inner: Sequence[tuple[np.ndarray, np.ndarray]],
                cfg: BaselineConfig, n_classes: int) -> tuple[Selection, np.ndarray, np.ndarray]:
    """C by cross-validation: ``inner`` = (train rows, dev rows) whose dev rows partition
    the training speakers' rows. Per C, every dev row is predicted by the fit that did
    not see it; the C of the best UA of those pooled predictions is kept (ties: smaller
    C) and refitted on all of them. Returns the selection, the dev rows and their
    cross-validated (scores, predictions) under the kept C.
    """
    dev_rows = np.concatenate([d for _, d in inner])
    if len(np.unique(dev_rows)) != len(dev_rows):
        raise ValueError("inner dev sides overlap: not a cross-validation")
    uas, cv = {}, {}
    for c in sorted(set(cfg.c_grid)):
        parts = [class_scores(_fit(cfg, c, x[t], y[t]), x[d], n_classes) for t, d in inner]
        s = np.concatenate([p[0] for p in parts])
        pred = np.concatenate([p[1] for p in parts])
        uas[c] = score(y[dev_rows], pred, n_classes).ua
        cv[c] = (s, pred)
    best = max(uas.values())
    chosen = min(c for c, ua in uas.items() if ua == best)
    model = _fit(cfg, chosen, x[dev_rows], y[dev_rows])
    return Selection(chosen, uas, model), dev_rows, cv[chosen]


@dataclass(frozen=True)
class BaselineFold:
    name: str
    group: str
    c: float
    dev_ua_by_c: dict[float, float]
    dev: Scores
    test: Scores
    predictions: pd.DataFrame = field(repr=False)  # dev and test rows (satn.predictions)
    sizes: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class BaselineResult:
    cfg: BaselineConfig
    classes: tuple[str, ...]
    folds: tuple[BaselineFold, ...]
    dev: Aggregate
    test: Aggregate
    seconds: float

    @property
    def name(self) -> str:
        return self.cfg.name

    def summary(self) -> dict[str, float]:
        """The same flat names as a neural run's: ``test_ua_mean``, ``dev_wa_std``, ..."""
        out = {f"dev_{k}": v for k, v in self.dev.to_dict().items()}
        out.update({f"test_{k}": v for k, v in self.test.to_dict().items()})
        return out


def run_baseline(x: np.ndarray, meta: pd.DataFrame, cfg: ExperimentConfig,
                 bcfg: BaselineConfig, folds: Sequence[str | int] | None = None) -> BaselineResult:
    """Every fold of ``cfg.folds`` on vectors ``x`` (N, D) aligned with ``meta`` rows."""
    start = time.perf_counter()
    classes = tuple(cfg.data.classes)
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != len(meta):
        raise ValueError(f"features of shape {x.shape} for {len(meta)} utterances")
    unknown = sorted(set(meta["label"]) - set(classes))
    if unknown:
        raise ConfigError(f"dataset labels {unknown} are not among data.classes {list(classes)}")
    all_folds = make_folds(meta, cfg.folds)
    if folds:
        all_folds = list({f.name: f for f in (fold_by_name(all_folds, k) for k in folds)}.values())
    row = {uid: i for i, uid in enumerate(meta["id"])}
    y = np.array([classes.index(lab) for lab in meta["label"]], dtype=np.int64)
    speakers = meta["speaker"].astype(str).to_numpy()
    if cfg.recipe.normalisation == "speaker":
        x = np.concatenate(speaker_normalised(list(x[:, None, :]), speakers.tolist()))
        x = x.astype(np.float64)
    out = []
    inner_k = cfg.selection.inner_k

    def rows(ids) -> np.ndarray:
        return np.array([row[u] for u in ids], dtype=np.int64)

    for fold in all_folds:
        idx = {side: rows(getattr(fold, side)) for side in ("train", "dev", "test")}
        cv = None
        if inner_k:
            inner = [(rows(f.train), rows(f.dev))
                     for f in member_folds(meta, [fold], inner_k, 1, cfg.folds.seed)]
            sel, dev_rows, cv = select_c_cv(x, y, inner, bcfg, len(classes))
            # dev: every training speaker, each predicted by a fit that never saw it
            idx = {"dev": dev_rows, "test": idx["test"],
                   "train": np.concatenate([idx["train"], idx["dev"]])}
        else:
            sel = select_c(x[idx["train"]], y[idx["train"]], x[idx["dev"]], y[idx["dev"]],
                           bcfg, len(classes))
        scores, frames = {}, []
        for side in ("dev", "test"):
            i = idx[side]
            if not len(i):
                continue
            s, pred = (cv if side == "dev" and cv is not None
                       else class_scores(sel.model, x[i], len(classes)))
            scores[side] = score(y[i], pred, len(classes))
            frames.append(predictions_frame(meta["id"].to_numpy()[i].tolist(),
                                            speakers[i].tolist(), y[i], s, classes, side, pred))
        out.append(BaselineFold(fold.name, fold.group, sel.c, sel.dev_ua, scores["dev"],
                                scores["test"], pd.concat(frames, ignore_index=True),
                                {k: len(v) for k, v in idx.items()}))
    return BaselineResult(bcfg, classes, tuple(out), aggregate([f.dev for f in out]),
                          aggregate([f.test for f in out]), time.perf_counter() - start)
