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
import random
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from satn.augment import chunk_starts, mixup, spec_augment
from satn.batching import SequenceDataset, make_loader, set_epoch
from satn.config import RecipeConfig, TrainConfig
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


@dataclass(frozen=True)
class EpochStats:
    epoch: int  # 1-based
    train_loss: float
    dev_loss: float
    dev: Scores
    improved: bool
    seconds: float


@dataclass(frozen=True)
class Evaluation:
    scores: Scores
    loss: float
    probs: np.ndarray  # (N, C)
    ids: list[str]


@dataclass
class Best:
    """The epoch of the best dev UA so far, with what it scored and its weights."""

    epoch: int
    dev: Scores
    test: Scores
    state_dict: dict[str, Tensor]
    attention: dict[str, np.ndarray] = field(default_factory=dict)  # id -> (H, T, T)
    # "dev" / "test" -> that epoch's per-utterance probabilities (satn.predictions)
    evaluations: dict[str, Evaluation] = field(default_factory=dict)


def class_weights(labels: list[int], n_classes: int) -> Tensor:
    """Inverse class frequency, normalised to mean 1 (absent classes get 0)."""
    counts = np.bincount(np.asarray(labels), minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / n_classes, 0.0)
    return torch.tensor(w / w[counts > 0].mean(), dtype=torch.float32)


@torch.no_grad()
def evaluate(model: nn.Module, dataset: SequenceDataset, batch_size: int,
             device: torch.device, loss_fn: nn.Module | None = None,
             chunk: tuple[int, int] | None = None) -> Evaluation:
    """Predict every utterance of ``dataset`` (full length, in length buckets).

    ``chunk = (frames, hop)``: an utterance's logits are the mean of the logits of its
    chunks (:func:`satn.augment.chunk_starts`); one chunk covering it gives the
    full-length logits.
    """
    model.eval()
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    probs, ys, ids, total = [], [], [], 0.0
    for batch in make_loader(dataset, batch_size, shuffle=False):
        batch = batch.to(device)
        if chunk is None:
            logits = model(batch.x, batch.lengths).logits
        else:
            logits = chunked_logits(model, batch.x, batch.lengths, *chunk, batch_size)
        total += float(loss_fn(logits, batch.y)) * len(batch.y)
        probs.append(logits.softmax(-1).cpu().numpy())
        ys.append(batch.y.cpu().numpy())
        ids.extend(batch.ids)
    p, y = np.concatenate(probs), np.concatenate(ys)
    n_classes = p.shape[1]
    return Evaluation(score(y, p.argmax(1), n_classes), total / len(y), p, ids)


def chunked_logits(model: nn.Module, x: Tensor, lengths: Tensor, frames: int, hop: int,
                   batch_size: int) -> Tensor:
    """(B, T, *F), (B,) -> (B, C): mean logits over each item's chunks of ``frames``."""
    pieces, owner = [], []
    for i, t in enumerate(lengths.tolist()):
        for s in chunk_starts(t, frames, hop):
            pieces.append(x[i, s:s + min(frames, t)])
            owner.append(i)
    parts = []
    for k in range(0, len(pieces), batch_size):
        part = pieces[k:k + batch_size]
        lens = torch.tensor([p.shape[0] for p in part], device=x.device)
        parts.append(model(nn.utils.rnn.pad_sequence(part, batch_first=True), lens).logits)
    logits = torch.cat(parts)  # (n_chunks, C)
    who = torch.tensor(owner, device=x.device)
    sums = torch.zeros(len(lengths), logits.shape[1], device=x.device, dtype=logits.dtype)
    sums.index_add_(0, who, logits)
    return sums / torch.bincount(who, minlength=len(lengths)).unsqueeze(1).to(logits.dtype)


@torch.no_grad()
def attention_maps(model: nn.Module, dataset: SequenceDataset, ids: tuple[str, ...],
                   device: torch.device) -> dict[str, np.ndarray]:
    """Attention maps of the given utterances, each run alone: id -> (H, T, T) float16."""
    model.eval()
    index = {uid: i for i, uid in enumerate(dataset.ids)}
    maps = {}
    for uid in ids:
        x, _, _ = dataset[index[uid]]
        out = model(x.unsqueeze(0).to(device), torch.tensor([x.shape[0]], device=device))
        if out.attention is not None:
            maps[uid] = out.attention[0].float().cpu().numpy().astype(np.float16)
    return maps


class FoldTrainer:
    """Trains one model on one fold, an epoch per ``step()``."""

    def __init__(self, model: nn.Module, data: FoldData, cfg: TrainConfig,
                 device: torch.device | None = None, recipe: RecipeConfig | None = None,
                 n_bands: int | None = None):
        """``recipe``: augmentation, label smoothing and chunked evaluation (default: none);
        ``n_bands``: mel bands per channel of log-mel frames, for frequency masks."""
        self.data, self.cfg = data, cfg
        self.recipe = recipe or RecipeConfig()
        self.n_bands = n_bands
        self.chunk = ((self.recipe.chunk_frames, self.recipe.hop)
                      if self.recipe.chunk_frames is not None else None)
        self.device = device or resolve_device(cfg.device)
        self.model = model.to(self.device)
        self.opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        weight = (class_weights(data.train.labels, data.n_classes)
                  if cfg.class_weighting == "balanced" else None)
        if cfg.class_weighting not in ("balanced", "none"):
            raise ValueError(f"train.class_weighting must be balanced or none, "
                             f"not {cfg.class_weighting!r}")
        self.loss_fn = nn.CrossEntropyLoss(weight=weight.to(self.device) if weight is not None
                                           else None,
                                           label_smoothing=self.recipe.label_smoothing)
        self.loader = make_loader(data.train, cfg.batch_size, shuffle=True, seed=cfg.seed,
                                  bucket_width=cfg.bucket_width)
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
        # mixup weights and pairs: reproducible from (seed, epoch), whatever runs beside
        mix_rng = np.random.default_rng([self.cfg.seed, self.epoch, 1])
        for batch in self.loader:
            batch = batch.to(self.device)
            x, lengths = self._augment(batch.x, batch.lengths)
            if self.recipe.mixup_alpha > 0:
                lam = float(mix_rng.beta(self.recipe.mixup_alpha, self.recipe.mixup_alpha))
                perm = torch.from_numpy(mix_rng.permutation(len(batch.y)))
                x, lengths, y_other = mixup(x, lengths, batch.y, lam, perm)
                out = self.model(x, lengths)
                loss = (lam * self.loss_fn(out.logits, batch.y)
                        + (1 - lam) * self.loss_fn(out.logits, y_other))
            else:
                out = self.model(x, lengths)
                loss = self.loss_fn(out.logits, batch.y)
            for aux in out.aux_losses.values():  # e.g. attention transfer, VQ commitment
                loss = loss + aux
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if self.cfg.grad_clip:
                nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
            self.opt.step()
            total += float(loss.detach()) * len(batch.y)
            n += len(batch.y)
        dev = evaluate(self.model, self.data.dev, self.cfg.batch_size, self.device,
                       chunk=self.chunk)
        improved = self.best is None or dev.scores.ua > self.best.dev.ua
        if improved:
            test = evaluate(self.model, self.data.test, self.cfg.batch_size, self.device,
                            chunk=self.chunk)
            self.best = Best(
                self.epoch, dev.scores, test.scores,
                {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
                attention_maps(self.model, self.data.dev, self.data.probe_ids, self.device),
                {"dev": dev, "test": test},
            )
        stats = EpochStats(self.epoch, total / max(n, 1), dev.loss, dev.scores, improved,
                           time.perf_counter() - start)
        self.history.append(stats)
        return stats

    def _augment(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """SpecAugment of a training batch (a no-op with the recipe's masks off)."""
        r = self.recipe
        if not (r.time_masks or r.freq_masks):
            return x, lengths
        return spec_augment(x, lengths, time_masks=r.time_masks,
                            time_mask_frames=r.time_mask_frames, freq_masks=r.freq_masks,
                            freq_mask_bands=r.freq_mask_bands, n_bands=self.n_bands), lengths

    def best_model(self) -> nn.Module:
        """A copy of the model holding the best epoch's weights (eval mode)."""
        if self.best is None:
            raise RuntimeError("no epoch has been trained yet")
        model = copy.deepcopy(self.model)
        model.load_state_dict(self.best.state_dict)
        return model.eval()


def fit(model: nn.Module, data: FoldData, cfg: TrainConfig, on_epoch=None) -> FoldTrainer:
    """Train until ``cfg.epochs`` (or patience); ``on_epoch(stats)`` after each epoch."""
    trainer = FoldTrainer(model, data, cfg)
    while not trainer.finished:
        stats = trainer.step()
        if on_epoch is not None:
            on_epoch(stats)
    return trainer
