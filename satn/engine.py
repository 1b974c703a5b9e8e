"""Fit and evaluate one model on one fold.

The engine trains on the fold's train side, scores dev every epoch, and when
dev UA improves it keeps that epoch's weights, scores test with them and keeps
the attention maps of a few fixed dev utterances. Test is therefore always
scored with the checkpoint of the best dev UA, and it is known at every epoch,
so a trial stopped early by a scheduler still has its test figures.
No Ray or MLflow here: callers observe progress through ``FoldTrainer.step``.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import Tensor, nn

from satn.batching import Batch, SequenceDataset, make_loader, set_epoch
from satn.config import TrainConfig
from satn.devices import resolve_device
from satn.metrics import Scores, score
from satn.models.dropout import use_generator


def seed_everything(seed: int) -> None:
    """Seed every RNG a run touches; called first, before a model is built."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class FoldData:
    """The three sides of one fold, as datasets of normalised features."""

    name: str
    train: SequenceDataset
    dev: SequenceDataset
    test: SequenceDataset
    n_classes: int
    probe_ids: tuple[str, ...] = ()  # dev utterances whose attention maps are kept


class AuxLoss(Protocol):
    """An extra training loss term, e.g. attention transfer: total += weight * term.

    Called with the model's maps (when ``needs_maps``), the batch's features
    and lengths, and a key per item (utterance id, crop start, frames) that
    names the exact window the model saw.
    """

    name: str  # logged as train_loss_<name> / dev_loss_<name>
    weight: float
    needs_maps: bool

    def __call__(self, maps: dict[str, Tensor], x: Tensor, lengths: Tensor,
                 keys: Sequence[tuple[str, int, int]]) -> Tensor: ...


@dataclass(frozen=True)
class EpochStats:
    epoch: int  # 1-based
    train_loss: float  # the total that was minimised
    dev_loss: float  # the same total on dev
    dev: Scores
    improved: bool
    seconds: float
    # each term by name ("ser", "at", model terms such as a VQ commitment), unweighted
    train_losses: dict[str, float] = field(default_factory=dict)
    dev_losses: dict[str, float] = field(default_factory=dict)
    lr: float = 0.0  # learning rate at the epoch's last step (train.schedule)


@dataclass
class Best:
    """The epoch of the best dev UA so far, with what it scored and its weights."""

    epoch: int
    dev: Scores
    test: Scores
    state_dict: dict[str, Tensor]
    attention: dict[str, np.ndarray] = field(default_factory=dict)  # id -> (H, T, T) or (T,)


@dataclass(frozen=True)
class Evaluation:
    scores: Scores
    loss: float  # total, as in training
    probs: np.ndarray  # (N, C)
    ids: list[str]
    losses: dict[str, float] = field(default_factory=dict)  # each term by name


def loss_terms(model: nn.Module, batch: Batch, dataset: SequenceDataset, loss_fn: nn.Module,
               aux: Sequence[AuxLoss] = ()) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """One batch through the model: logits, the total loss and each term by name.

    total = L_SER + sum(weight * aux term) + the model's own terms (``aux_losses``).
    """
    out = model(batch.x, batch.lengths, return_maps=any(a.needs_maps for a in aux))
    terms = {"ser": loss_fn(out.logits, batch.y)}
    total = terms["ser"]
    if aux:
        index = dataset.index
        keys = [(uid, dataset.crop_start(index[uid]), int(n))
                for uid, n in zip(batch.ids, batch.lengths.tolist(), strict=True)]
        for a in aux:
            terms[a.name] = a(out.maps, batch.x, batch.lengths, keys)
            total = total + a.weight * terms[a.name]
    for name, value in out.aux_losses.items():  # e.g. a VQ commitment, weighted by its model
        terms[name] = value
        total = total + value
    return out.logits, total, terms


def class_weights(labels: list[int], n_classes: int) -> Tensor:
    """Inverse class frequency, normalised to mean 1 (absent classes get 0)."""
    counts = np.bincount(np.asarray(labels), minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / n_classes, 0.0)
    return torch.tensor(w / w[counts > 0].mean(), dtype=torch.float32)


@torch.no_grad()
def evaluate(model: nn.Module, dataset: SequenceDataset, batch_size: int,
             device: torch.device, loss_fn: nn.Module | None = None,
             aux: Sequence[AuxLoss] = ()) -> Evaluation:
    """Predict every utterance of ``dataset`` (full length, in length buckets); the loss
    terms are those of training when given the trainer's ``loss_fn`` and ``aux``."""
    model.eval()
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    probs, ys, ids, total = [], [], [], 0.0
    sums: dict[str, float] = {}
    for batch in make_loader(dataset, batch_size, shuffle=False):
        batch = batch.to(device)
        logits, loss, terms = loss_terms(model, batch, dataset, loss_fn, aux)
        total += float(loss) * len(batch.y)
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + float(v) * len(batch.y)
        probs.append(logits.softmax(-1).cpu().numpy())
        ys.append(batch.y.cpu().numpy())
        ids.extend(batch.ids)
    p, y = np.concatenate(probs), np.concatenate(ys)
    n_classes = p.shape[1]
    return Evaluation(score(y, p.argmax(1), n_classes), total / len(y), p, ids,
                      {k: v / len(y) for k, v in sums.items()})


@torch.no_grad()
def attention_maps(model: nn.Module, dataset: SequenceDataset, ids: tuple[str, ...],
                   device: torch.device) -> dict[str, np.ndarray]:
    """Attention weights of the given utterances, each run alone: id -> (H, T, T) (self)
    or (T,) (soft), float16."""
    model.eval()
    index = {uid: i for i, uid in enumerate(dataset.ids)}
    maps = {}
    for uid in ids:
        x, _, _ = dataset[index[uid]]
        out = model(x.unsqueeze(0).to(device), torch.tensor([x.shape[0]], device=device))
        if out.attention is not None:
            maps[uid] = out.attention[0].float().cpu().numpy().astype(np.float16)
    return maps


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    """``train.optimizer`` at ``train.lr`` (Adadelta's usual lr is 1.0, TACN's choice)."""
    kinds = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
             "adadelta": torch.optim.Adadelta, "sgd": torch.optim.SGD}
    if cfg.optimizer not in kinds:
        raise ValueError(f"train.optimizer must be one of {sorted(kinds)}, not {cfg.optimizer!r}")
    extra = {"momentum": cfg.momentum} if cfg.optimizer == "sgd" else {}
    return kinds[cfg.optimizer](params, lr=cfg.lr, weight_decay=cfg.weight_decay, **extra)


def lr_factor(step: int, cfg: TrainConfig, steps_per_epoch: int) -> float:
    """Multiplier of ``train.lr`` before optimiser step ``step`` (0-based) of the run.

    Warm-up rises linearly over ``warmup_epochs``; then ``none`` holds 1,
    ``cosine`` falls to 0 along half a cosine, and ``onecycle`` is the same cosine
    fall after a warm-up of 30 % of the run when none is set (Smith's one-cycle
    shape, learning rate only).
    """
    total = max(1, cfg.epochs * steps_per_epoch)
    warm_epochs = cfg.warmup_epochs or (0.3 * cfg.epochs if cfg.schedule == "onecycle" else 0)
    warm = int(round(warm_epochs * steps_per_epoch))
    if step < warm:
        return (step + 1) / warm
    if cfg.schedule == "none":
        return 1.0
    progress = min(1.0, (step - warm) / max(1, total - warm))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def make_schedule(opt: torch.optim.Optimizer, cfg: TrainConfig,
                  steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-step scheduler of :func:`lr_factor` (stepped after every optimiser step)."""
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: lr_factor(step, cfg, max(1, steps_per_epoch)))


class FoldTrainer:
    """Trains one model on one fold, an epoch per ``step()``."""

    def __init__(self, model: nn.Module, data: FoldData, cfg: TrainConfig,
                 device: torch.device | None = None, aux: Sequence[AuxLoss] = ()):
        self.data, self.cfg = data, cfg
        self.aux = tuple(aux)
        self.device = device or resolve_device(cfg.device)
        self.model = model.to(self.device)
        weight = (class_weights(data.train.labels, data.n_classes)
                  if cfg.class_weighting == "balanced" else None)
        if cfg.class_weighting not in ("balanced", "none"):
            raise ValueError(f"train.class_weighting must be balanced or none, "
                             f"not {cfg.class_weighting!r}")
        self.loss_fn = nn.CrossEntropyLoss(weight=weight.to(self.device) if weight is not None
                                           else None)
        self.loader = make_loader(data.train, cfg.batch_size, shuffle=True, seed=cfg.seed,
                                  bucket_width=cfg.bucket_width)
        self.opt = make_optimizer(self.model.parameters(), cfg)
        self.sched = make_schedule(self.opt, cfg, len(self.loader))
        # the fold's own dropout stream: a fold trains the same alone, beside others, in a thread
        self.generator = torch.Generator(device=self.device).manual_seed(cfg.seed)
        use_generator(self.model, self.generator)
        self.epoch = 0
        self.best: Best | None = None
        self.history: list[EpochStats] = []

    @property
    def finished(self) -> bool:
        if self.epoch >= self.cfg.epochs:
            return True
        patience = self.cfg.patience
        return bool(patience and self.best and self.epoch - self.best.epoch >= patience)

    def step(self) -> EpochStats:
        """Train one epoch, score dev; on a new best dev UA, score test and keep weights."""
        start = time.perf_counter()
        self.epoch += 1
        set_epoch(self.loader, self.epoch)  # new crops and batch order, reproducibly
        self.model.train()
        total, n = 0.0, 0
        sums: dict[str, float] = {}
        for batch in self.loader:
            batch = batch.to(self.device)
            _, loss, terms = loss_terms(self.model, batch, self.data.train, self.loss_fn, self.aux)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) * len(batch.y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if self.cfg.grad_clip:
                nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
            self.opt.step()
            self.sched.step()
            total += float(loss.detach()) * len(batch.y)
            n += len(batch.y)
        # dev loss with training's definition: the same class weights and aux terms
        dev = evaluate(self.model, self.data.dev, self.cfg.batch_size, self.device,
                       self.loss_fn, self.aux)
        improved = self.best is None or dev.scores.ua > self.best.dev.ua
        if improved:
            test = evaluate(self.model, self.data.test, self.cfg.batch_size, self.device)
            self.best = Best(
                self.epoch, dev.scores, test.scores,
                {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
                attention_maps(self.model, self.data.dev, self.data.probe_ids, self.device),
            )
        stats = EpochStats(self.epoch, total / max(n, 1), dev.loss, dev.scores, improved,
                           time.perf_counter() - start,
                           {k: v / max(n, 1) for k, v in sums.items()}, dev.losses,
                           float(self.opt.param_groups[0]["lr"]))
        self.history.append(stats)
        return stats

    def best_model(self) -> nn.Module:
        """A copy of the model holding the best epoch's weights (eval mode)."""
        if self.best is None:
            raise RuntimeError("no epoch has been trained yet")
        model = copy.deepcopy(self.model)
        model.load_state_dict(self.best.state_dict)
        return model.eval()


def fit(model: nn.Module, data: FoldData, cfg: TrainConfig, on_epoch=None,
        aux: Sequence[AuxLoss] = ()) -> FoldTrainer:
    """Train until ``cfg.epochs`` (or patience); ``on_epoch(stats)`` after each epoch."""
    trainer = FoldTrainer(model, data, cfg, aux=aux)
    while not trainer.finished:
        stats = trainer.step()
        if on_epoch is not None:
            on_epoch(stats)
    return trainer
