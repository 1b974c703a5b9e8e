"""One configuration over all its folds: the unit a sweep trial runs.

Folds are trained epoch by epoch in step, so after every epoch the fold-mean
dev UA is known and observers (MLflow tracking, a Ray Tune report) can act on
it. Observers are passed in; this module imports neither Ray nor MLflow.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
import torch

from satn.config import ConfigError, ExperimentConfig, FeatureConfig, from_dict
from satn.devices import resolve_device
from satn.engine import EpochStats, Evaluation, FoldTrainer, seed_everything
from satn.ensemble import Member, combine
from satn.folddata import PreparedFold, eval_labels, levels_for, prepare_folds
from satn.folds import Fold
from satn.metrics import Aggregate, Scores, aggregate
from satn.models import build_model, uses_transfer


@dataclass(frozen=True)
class FoldResult:
    name: str
    group: str
    best_epoch: int
    epochs_run: int
    dev: Scores
    test: Scores


@dataclass(frozen=True)
class CrossValidationResult:
    """``folds``: one result per outer fold (an ensemble's when ``selection`` makes
    several models per fold; then ``members`` are those models' own results and
    ``ensembles`` the outer folds' combined dev and test evaluations)."""

    classes: tuple[str, ...]
    folds: tuple[FoldResult, ...]
    dev: Aggregate
    test: Aggregate
    seconds: float
    members: tuple[FoldResult, ...] = ()
    ensembles: dict[str, dict[str, Evaluation]] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        """Flat fold-aggregated figures: ``test_ua_mean``, ``dev_wa_std``, ..."""
        out = {f"dev_{k}": v for k, v in self.dev.to_dict().items()}
        out.update({f"test_{k}": v for k, v in self.test.to_dict().items()})
        return out


class Observer(Protocol):
    """What the runner tells the outer layer (tracking, tuning)."""

    def on_start(self, cv: CrossValidation) -> None: ...

    def on_epoch(self, cv: CrossValidation, epoch: int, stats: dict[str, EpochStats],
                 final: CrossValidationResult | None) -> None:
        """After every epoch; ``final`` is set on the last one.

        The result comes with the last epoch rather than in a later call because
        a tuner may end the process inside its report of that epoch: whatever
        must be saved is saved here, before the report.
        """


class CrossValidation:
    """All folds of one configuration, each with its own model and trainer."""

    def __init__(self, cfg: ExperimentConfig, dataset, *, folds: Sequence[str | int] | None = None,
                 fold_workers: int = 1, n_probes: int = 4,
                 trainers: Callable[[PreparedFold], FoldTrainer] | None = None,
                 perturbed: Sequence | None = None, members: Sequence[Fold] | None = None):
        """``trainers`` makes each fold's trainer (default: a FoldTrainer in this process);
        the sweep passes one that trains the fold in a Ray worker of its own.
        ``perturbed``: the speed-perturbed copies of ``dataset`` (default: those of
        ``recipe.speeds``, built beside ``dataset`` or found cached). ``members``: the
        models' folds when not ``cfg``'s (``satn.folddata.prepare_folds``)."""
        self.cfg = cfg
        self.classes = tuple(cfg.data.classes)
        self.frame_shape = tuple(dataset.frame_shape)
        self.dataset_manifest = dataset.manifest
        self._dataset = dataset
        self.speakers = dict(zip(dataset.meta["id"], dataset.meta["speaker"], strict=True))
        self.fold_workers = max(1, fold_workers)
        if perturbed is None:
            perturbed = []
            if cfg.recipe.speeds:
                from satn.speed import speed_variants

                if not hasattr(dataset, "uri"):
                    raise ConfigError("recipe.speeds needs a feature dataset made from audio "
                                      "files (satn.store), whose files can be read again")
                perturbed = speed_variants(dataset, cfg.recipe.speeds)
        self.prepared = prepare_folds(dataset, cfg, folds, n_probes, perturbed, members)
        self.teacher = None
        self.placement: dict[str, dict] = {}  # fold -> where it trains (filled by workers)
        self.trainers: dict[str, FoldTrainer] = {
            pf.fold.name: (trainers or self.local_trainer)(pf) for pf in self.prepared}

    def local_trainer(self, pf: PreparedFold) -> FoldTrainer:
        """The fold's model and trainer, in this process."""
        cfg = self.cfg
        device = resolve_device(cfg.train.device)
        if uses_transfer(cfg.model.variant) and self.teacher is None:
            # a *_at variant's teacher, loaded once and shared (frozen) by every fold
            self.teacher = self._teacher(cfg, self._dataset, device)
        # the same seed per fold: folds differ by data, not by initialisation luck
        # (a seed ensemble's members by their offset)
        train = replace(cfg.train, seed=cfg.train.seed + pf.fold.seed)
        seed_everything(train.seed)
        model = build_model(cfg.model, self.frame_shape, len(self.classes))
        aux = []
        if self.teacher is not None:
            aux.append(self._transfer(model, pf, device))
        stored = self.dataset_manifest.get("feature_config")
        features = from_dict(FeatureConfig, stored) if stored else None
        n_bands, banded = self._bands(features or cfg.features)
        levels = levels_for(pf, cfg, self.speakers, self.frame_shape, features)
        return FoldTrainer(model, pf.data, train, device, aux, recipe=cfg.recipe,
                           n_bands=n_bands, banded=banded, levels=levels)

    def _bands(self, features: FeatureConfig) -> tuple[int | None, int | None]:
        """(bands per channel, banded width) of the frames, for frequency masks: they
        cover the same mel bands of static, delta and delta-delta, and never the
        ``features.lld`` descriptors after them. (None, None) where frames are not
        log-mel of ``features`` (spectrogram segments, or frames of another width)."""
        if len(self.frame_shape) != 1 or features.kind != "logmel":
            return None, None
        width = self.frame_shape[0]
        if width == features.dim:
            return features.n_mels, features.banded
        return (features.n_mels, None) if width % features.n_mels == 0 else (None, None)

    def _teacher(self, cfg: ExperimentConfig, dataset, device):
        from satn.transfer import load_teacher

        stored = dataset.manifest.get("feature_config")
        features = from_dict(FeatureConfig, stored) if stored else cfg.features
        return load_teacher(cfg.transfer, cfg.model.variant, features, device)

    def _transfer(self, model, pf: PreparedFold, device):
        """The fold's L_AT term over the chosen map pairs the student gives.

        A pair whose student map this variant lacks (a one-layer BLSTM has no
        ``encoder.layer3``) is left out, so one pair list serves every variant
        of a grid; a teacher map the teacher lacks, or no pair left, is an error.
        """
        from satn.transfer import AttentionTransfer

        cfg = self.cfg.transfer
        student = set(model.map_names(self.frame_shape))
        chosen = cfg.chosen_pairs()
        kept = [f"{s}:{t}" for s, t in chosen if s in student]
        if not kept:
            raise ConfigError(f"transfer.pairs: {self.cfg.model.variant} gives none of the "
                              f"student maps {sorted({s for s, _ in chosen})} (it gives "
                              f"{sorted(student)})")
        term = AttentionTransfer(self.teacher, replace(cfg, pairs=tuple(kept)),
                                 pf.normalizer.mean, pf.normalizer.std, device)
        x = torch.zeros(1, 2, *self.frame_shape, device=device)
        teacher = set(term.teacher_maps(x, torch.tensor([2], device=device)))
        term.teacher_calls = 0
        for _, t in term.pairs:
            if t not in teacher:
                raise ConfigError(f"transfer.pairs names teacher map {t!r}; the teacher "
                                  f"gives {sorted(teacher)}")
        return term

    @property
    def fold_names(self) -> list[str]:
        return [pf.fold.name for pf in self.prepared]

    def epoch_summary(self, stats: dict[str, EpochStats]) -> dict[str, float]:
        """Fold means after an epoch; ``dev_ua_best`` is the fold-mean of best-so-far dev UA.

        A fold already stopped by patience counts with its last epoch, so every
        mean is over the same folds from the first epoch to the last.
        """
        bests = [t.best for t in self.trainers.values() if t.best is not None]
        latest = [t.history[-1] for t in self.trainers.values() if t.history]
        terms = {f"{side}_loss_{k}": float(np.mean([getattr(s, f"{side}_losses")[k]
                                                    for s in latest]))
                 for side in ("train", "dev") for k in latest[0].train_losses}
        return {
            "train_loss": float(np.mean([s.train_loss for s in latest])),
            "dev_loss": float(np.mean([s.dev_loss for s in latest])),
            **terms,
            "dev_wa": float(np.mean([s.dev.wa for s in latest])),
            "dev_ua": float(np.mean([s.dev.ua for s in latest])),
            "dev_ua_best": float(np.mean([b.dev.ua for b in bests])),
            "test_wa_at_best": float(np.mean([b.test.wa for b in bests])),
            "test_ua_at_best": float(np.mean([b.test.ua for b in bests])),
            "folds_improved": float(sum(s.improved for s in stats.values())),
        }

    def result(self, seconds: float = 0.0) -> CrossValidationResult:
        models = []
        for pf in self.prepared:
            t = self.trainers[pf.fold.name]
            if t.best is None:
                raise RuntimeError(f"fold {pf.fold.name} has not been trained")
            models.append(FoldResult(pf.fold.name, pf.fold.group, t.best.epoch, t.epoch,
                                     t.best.dev, t.best.test))
        if not self.cfg.selection.ensembles:
            return CrossValidationResult(self.classes, tuple(models),
                                    aggregate([f.dev for f in models]),
                                    aggregate([f.test for f in models]), seconds)
        folds, ensembles = [], {}
        for outer, group in self.outer_folds().items():
            members = [Member(pf.fold, self.trainers[pf.fold.name].best.epoch,
                              self.trainers[pf.fold.name].best.evaluations) for pf in group]
            ensembles[outer] = combine(members, eval_labels(group))
            epochs = [m.epoch for m in members]
            folds.append(FoldResult(outer, group[0].fold.group, int(np.median(epochs)),
                                    max(self.trainers[pf.fold.name].epoch for pf in group),
                                    ensembles[outer]["dev"].scores,
                                    ensembles[outer]["test"].scores))
        return CrossValidationResult(self.classes, tuple(folds), aggregate([f.dev for f in folds]),
                                aggregate([f.test for f in folds]), seconds, tuple(models),
                                ensembles)

    def outer_folds(self) -> dict[str, list[PreparedFold]]:
        """Outer fold name -> the prepared folds of its models, in training order."""
        out: dict[str, list[PreparedFold]] = {}
        for pf in self.prepared:
            out.setdefault(pf.fold.scored_as, []).append(pf)
        return out

    def state(self) -> dict[str, dict]:
        """Every fold trainer's state, by fold name (see ``FoldTrainer.state``)."""
        return {name: t.state() for name, t in self.trainers.items()}

    def load_state(self, state: dict[str, dict]) -> None:
        """Continue every fold from ``state`` (a checkpoint of this same configuration)."""
        if set(state) != set(self.trainers):
            raise ValueError(f"checkpoint folds {sorted(state)} are not this cross-validation's "
                             f"{sorted(self.trainers)}")
        for name, fold_state in state.items():
            self.trainers[name].load_state(fold_state)

    def run(self, observers: Sequence[Observer] = ()) -> CrossValidationResult:
        start = time.perf_counter()
        for obs in observers:
            obs.on_start(self)
        # a restored cross-validation continues from the epoch its folds reached
        epoch = max((t.epoch for t in self.trainers.values()), default=0)
        result = None
        with ThreadPoolExecutor(self.fold_workers) as pool:
            while result is None:
                active = {n: t for n, t in self.trainers.items() if not t.finished}
                epoch += 1
                # folds are independent models; on a GPU, threads let them share it
                stats = dict(zip(active, pool.map(lambda t: t.step(), active.values()),
                                 strict=True))
                if all(t.finished for t in self.trainers.values()):
                    result = self.result(time.perf_counter() - start)
                for obs in observers:
                    obs.on_epoch(self, epoch, stats, result)
        return result
