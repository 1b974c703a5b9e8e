"""Refit: after selection by inner folds, one model per outer fold on all its training speakers.

A run with ``selection.inner_k`` scores its outer test by the ensemble of its inner
models, each trained on the training speakers less one inner group. A refit trains one
more model per outer fold on all of them (half as many speakers again with three inner
groups) for the number of epochs the inner folds chose, and scores the outer test with
it. Nothing of the outer test chooses anything:

- the epoch count ``E`` of outer fold ``k`` is where the mean of its inner models' dev
  UA curves peaks (:func:`chosen_epoch`), the cross-validated choice of how long to train;
- the refit trains as its inner models did (same config, seed, learning-rate schedule
  over ``train.epochs``) and stops after epoch ``E``: it is the inner models' trajectory
  on more data, stopped where they were best on average.

The selection score stays the inner folds' pooled dev predictions: the refit has no dev
side. This module trains and predicts; ``satn refit`` (the CLI) reads the inner run from
MLflow and logs the refit as a run of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from satn.batching import Normalizer
from satn.config import ConfigError, ExperimentConfig
from satn.engine import Evaluation
from satn.folds import make_folds, refit_folds


@dataclass(frozen=True)
class RefitFold:
    """One outer fold's refit model: the epochs it trained and its test predictions."""

    name: str  # the outer fold
    epoch: int
    test: Evaluation
    state_dict: dict[str, torch.Tensor]
    normalizer: Normalizer  # of its training side
    seconds: float


def chosen_epoch(curves: Sequence[Sequence[float]]) -> int:
    """The 1-based epoch at which the mean of the inner models' dev UA curves peaks.

    ``curves``: one dev UA per epoch for each inner model of an outer fold. A model
    stopped early by patience has a shorter curve; the mean is taken over the epochs
    every model ran. The first epoch of the highest mean wins a tie (shorter training).
    """
    mean = mean_curve(curves)
    return max(mean, key=lambda e: (mean[e], -e))


def mean_curve(curves: Sequence[Sequence[float]]) -> dict[int, float]:
    """Epoch (1-based) -> mean dev UA of the inner models, over the epochs all of them ran."""
    if not curves or not all(len(c) for c in curves):
        raise ValueError("an epoch is chosen from at least one non-empty dev UA curve")
    n = min(len(c) for c in curves)
    mean = np.mean([np.asarray(c[:n], dtype=np.float64) for c in curves], axis=0)
    return {e + 1: float(v) for e, v in enumerate(mean)}


def refit(cfg: ExperimentConfig, dataset, epochs: Mapping[str, int], *,
          perturbed: Sequence | None = None,
          echo: Callable[[str], None] = print) -> list[RefitFold]:
    """Train outer fold ``k``'s refit for ``epochs[k]`` epochs; predict its test side.

    ``dataset``: the feature dataset the inner run trained on; ``perturbed``: its speed
    copies (default: those of ``recipe.speeds``). Raises ConfigError for a fold that
    ``cfg`` does not make or an epoch count outside 1..``train.epochs``.
    """
    from satn.runner import CrossValidation

    outer = make_folds(dataset.meta, cfg.folds)
    names = [f.name for f in outer]
    unknown = sorted(set(epochs) - set(names))
    if unknown:
        raise ConfigError(f"refit: no outer fold {unknown} in this config (folds: {names})")
    bad = {k: e for k, e in epochs.items() if not 1 <= e <= cfg.train.epochs}
    if bad:
        raise ConfigError(f"refit: epochs {bad} outside 1..train.epochs={cfg.train.epochs}")
    members = refit_folds(dataset.meta, [f for f in outer if f.name in epochs])
    cv = CrossValidation(cfg, dataset, perturbed=perturbed, members=members)
    out = []
    for pf in cv.prepared:
        trainer = cv.trainers[pf.fold.name]
        name, target = pf.fold.outer, epochs[pf.fold.outer]
        start = time.perf_counter()
        while trainer.epoch < target:
            loss, _ = trainer.train_epoch()
            echo(f"{pf.fold.name} epoch {trainer.epoch}/{target}: train loss {loss:.4f}")
        test = trainer.evaluate_test()
        seconds = time.perf_counter() - start
        echo(f"{pf.fold.name}: {len(pf.data.train)} training utterances, {target} epochs, "
             f"test UA {test.scores.ua:.3f} WA {test.scores.wa:.3f} ({seconds:.0f} s)")
        state = {k: v.detach().cpu().clone() for k, v in trainer.model.state_dict().items()}
        out.append(RefitFold(name, target, test, state, pf.normalizer, seconds))
    return out
