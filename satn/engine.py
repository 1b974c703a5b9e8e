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
import os
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
import torch
from torch import Tensor, nn

from satn.augment import Levels, chunk_starts, mixup, spec_augment
from satn.batching import Batch, SequenceDataset, make_loader, set_epoch
from satn.config import RecipeConfig, TrainConfig
from satn.devices import resolve_device
from satn.metrics import Scores, score
from satn.models.dropout import use_generator
from satn.resident import ResidentFeatures, ResidentLoader


def seed_everything(seed: int) -> None:
    """Seed every RNG a run touches; called first, before a model is built."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def use_deterministic(on: bool) -> None:
    """Deterministic GPU kernels for this process (``train.deterministic``).

    cuBLAS needs its workspace setting before CUDA starts; cuDNN must not pick
    kernels by timing; TF32 matmuls round differently from run to run of a search.
    """
    if not on:
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


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


@dataclass(frozen=True)
class Evaluation:
    scores: Scores
    loss: float  # total, as in training
    probs: np.ndarray  # (N, C)
    ids: list[str]
    losses: dict[str, float] = field(default_factory=dict)  # each term by name


@dataclass
class Best:
    """The epoch of the best dev UA so far, with what it scored and its weights."""

    epoch: int
    dev: Scores
    test: Scores
    state_dict: dict[str, Tensor]
    attention: dict[str, np.ndarray] = field(default_factory=dict)  # id -> (H, T, T) or (T,)
    # "dev" / "test" -> that epoch's per-utterance probabilities (satn.predictions)
    evaluations: dict[str, Evaluation] = field(default_factory=dict)


def loss_terms(model: nn.Module, batch: Batch, dataset: SequenceDataset, loss_fn: nn.Module,
               aux: Sequence[AuxLoss] = (), x: Tensor | None = None,
               mix: tuple[Tensor, float] | None = None
               ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """One batch through the model: logits, the total loss and each term by name.

    total = L_SER + sum(weight * aux term) + the model's own terms (``aux_losses``).
    ``x``: the model's input when it is not ``batch.x`` (augmented); the teacher of an
    aux term still reads the batch as stored. ``mix = (y_other, lam)``: mixup's target.
    """
    out = model(batch.x if x is None else x, batch.lengths,
                return_maps=any(a.needs_maps for a in aux))
    if mix is None:
        terms = {"ser": loss_fn(out.logits, batch.y)}
    else:
        y_other, lam = mix
        terms = {"ser": lam * loss_fn(out.logits, batch.y)
                 + (1 - lam) * loss_fn(out.logits, y_other)}
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


def autocast(device: torch.device, precision: str):
    """``train.precision``: bf16 autocast on ``device``'s type, or nothing for fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def class_weights(labels: list[int], n_classes: int) -> Tensor:
    """Inverse class frequency, normalised to mean 1 (absent classes get 0)."""
    counts = np.bincount(np.asarray(labels), minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / n_classes, 0.0)
    return torch.tensor(w / w[counts > 0].mean(), dtype=torch.float32)


@torch.no_grad()
def evaluate(model: nn.Module, dataset: SequenceDataset, batch_size: int,
             device: torch.device, loss_fn: nn.Module | None = None,
             aux: Sequence[AuxLoss] = (), chunk: tuple[int, int] | None = None,
             max_cost: int | None = None, precision: str = "fp32",
             batches: Iterable[Batch] | None = None) -> Evaluation:
    """Predict every utterance of ``dataset`` (full length, in length buckets); the loss
    terms are those of training when given the trainer's ``loss_fn`` and ``aux``.
    ``max_cost`` bounds batch x longest**2 (``train.eval_cost``): long turns go in
    small batches instead of building (B, H, T, T) scores for B of them.

    ``chunk = (frames, hop)``: an utterance's logits are the mean of the logits of its
    chunks (:func:`satn.augment.chunk_starts`); one chunk covering it gives the
    full-length logits; the loss is then cross-entropy of the chunk-mean logits.
    ``precision``: as ``train.precision``. ``batches``: the batches of ``dataset`` to
    score when they are cut elsewhere (resident features), else a length-bucket loader.
    """
    model.eval()
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    probs, ys, ids, total = [], [], [], 0.0
    sums: dict[str, float] = {}
    if batches is None:
        batches = make_loader(dataset, batch_size, shuffle=False, max_cost=max_cost)
    for batch in batches:
        batch = batch.to(device)
        with autocast(device, precision):
            if chunk is None:
                logits, loss, terms = loss_terms(model, batch, dataset, loss_fn, aux)
            else:  # scored as it is trained: on chunks (no map-based terms then)
                logits = chunked_logits(model, batch.x, batch.lengths, *chunk, batch_size)
                loss = loss_fn(logits, batch.y)
                terms = {"ser": loss}
        logits = logits.float()  # bf16 logits have no numpy form
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
                   device: torch.device, max_frames: int | None = None) -> dict[str, np.ndarray]:
    """Attention weights of the given utterances, each run alone: id -> (H, T, T) (self)
    or (T,) (soft), float16; longer than ``max_frames``, pooled to that size."""
    model.eval()
    index = {uid: i for i, uid in enumerate(dataset.ids)}
    maps = {}
    for uid in ids:
        x, _, _ = dataset[index[uid]]
        out = model(x.unsqueeze(0).to(device), torch.tensor([x.shape[0]], device=device),
                    return_maps=True)  # the one place outside transfer that builds maps
        if out.attention is not None:
            att = out.attention[0].float()
            if max_frames is not None and att.shape[-1] > max_frames:
                att = pool_attention(att, max_frames)
            maps[uid] = att.cpu().numpy().astype(np.float16)
    return maps


def pool_attention(att: Tensor, size: int) -> Tensor:
    """(..., T, T) or (T,) weights -> (..., size, size) or (size,), each row still a
    distribution: frames fall into ``size`` bins; a bin's row is the mean of its frames'
    rows, its columns the sum of their frames' weights (a 3,400-frame map of 4 heads is
    92 MB as float16; at 1,000 frames, 8 MB)."""
    t = att.shape[-1]
    bins = torch.div(torch.arange(t, device=att.device) * size, t, rounding_mode="floor")
    cols = torch.zeros(*att.shape[:-1], size, device=att.device, dtype=att.dtype)
    cols.index_add_(-1, bins, att)  # sum the weights of each bin's frames
    if att.dim() == 1:
        return cols
    rows = torch.zeros(*att.shape[:-2], size, size, device=att.device, dtype=att.dtype)
    rows.index_add_(-2, bins, cols)
    counts = torch.bincount(bins, minlength=size).to(att.dtype)
    return rows / counts.unsqueeze(-1)


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
                 device: torch.device | None = None, aux: Sequence[AuxLoss] = (),
                 recipe: RecipeConfig | None = None, n_bands: int | None = None,
                 banded: int | None = None, levels: Levels | None = None):
        """``aux``: extra loss terms (attention transfer); ``recipe``: augmentation, label
        smoothing and chunked evaluation (default: none); ``n_bands``: mel bands per
        channel of log-mel frames, for frequency masks; ``banded``: a frame's leading
        values that are bands (the rest, ``features.lld``, are not masked in frequency);
        ``levels``: gain and noise of
        training batches (``satn.folddata.levels_for``)."""
        self.data, self.cfg = data, cfg
        use_deterministic(cfg.deterministic)
        self.aux = tuple(aux)
        self.recipe = recipe or RecipeConfig()
        self.n_bands = n_bands
        self.banded = banded
        self.levels = levels
        self.chunk = ((self.recipe.chunk_frames, self.recipe.hop)
                      if self.recipe.chunk_frames is not None else None)
        self.device = device or resolve_device(cfg.device)
        self.model = model.to(self.device)
        # training's forward; checkpoints always come from self.model (plain keys)
        self.train_model = torch.compile(self.model) if cfg.compile else self.model
        weight = (class_weights(data.train.labels, data.n_classes)
                  if cfg.class_weighting == "balanced" else None)
        if cfg.class_weighting not in ("balanced", "none"):
            raise ValueError(f"train.class_weighting must be balanced or none, "
                             f"not {cfg.class_weighting!r}")
        self.loss_fn = nn.CrossEntropyLoss(weight=weight.to(self.device) if weight is not None
                                           else None,
                                           label_smoothing=self.recipe.label_smoothing)
        self.eval_batches: dict[str, ResidentLoader] = {}
        if cfg.resident:
            self.loader = ResidentLoader(ResidentFeatures(data.train, self.device),
                                         cfg.batch_size, shuffle=True, seed=cfg.seed,
                                         bucket_width=cfg.bucket_width)
            self.eval_batches = {
                side: ResidentLoader(ResidentFeatures(getattr(data, side), self.device),
                                     cfg.batch_size, shuffle=False, max_cost=cfg.eval_cost)
                for side in ("dev", "test")}
        else:
            self.loader = make_loader(data.train, cfg.batch_size, shuffle=True, seed=cfg.seed,
                                      bucket_width=cfg.bucket_width)
        self.opt = make_optimizer(self.model.parameters(), cfg)
        self.sched = make_schedule(self.opt, cfg, len(self.loader))
        # the fold's own dropout stream: a fold trains the same alone, beside others, in a thread
        self.generator = torch.Generator(device=self.device).manual_seed(cfg.seed)
        # compiled, dropout draws from torch's RNG (seeded by train.seed): a generator
        # argument breaks the graph at every dropout (15 graphs for one tcn_self)
        use_generator(self.model, None if cfg.compile else self.generator)
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
        train_loss, train_terms = self.train_epoch()
        # dev loss with training's definition: the same class weights and aux terms
        dev = evaluate(self.model, self.data.dev, self.cfg.batch_size, self.device,
                       self.loss_fn, self.aux, chunk=self.chunk, max_cost=self.cfg.eval_cost,
                       precision=self.cfg.precision, batches=self.eval_batches.get("dev"))
        improved = self.best is None or dev.scores.ua > self.best.dev.ua
        if improved:
            test = self.evaluate_test()
            self.best = Best(
                self.epoch, dev.scores, test.scores,
                {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
                attention_maps(self.model, self.data.dev, self.data.probe_ids, self.device,
                               self.cfg.probe_frames),
                {"dev": dev, "test": test},
            )
        stats = EpochStats(self.epoch, train_loss, dev.loss, dev.scores, improved,
                           time.perf_counter() - start, train_terms, dev.losses,
                           float(self.opt.param_groups[0]["lr"]))
        self.history.append(stats)
        return stats

    def evaluate_test(self) -> Evaluation:
        """The current weights' predictions of the test side."""
        return evaluate(self.model, self.data.test, self.cfg.batch_size, self.device,
                        chunk=self.chunk, max_cost=self.cfg.eval_cost,
                        precision=self.cfg.precision, batches=self.eval_batches.get("test"))

    def train_epoch(self) -> tuple[float, dict[str, float]]:
        """Train one epoch, nothing scored: (mean training loss, mean of each term).

        ``step`` is this plus the dev evaluation; a refit (``satn.refit``), which has
        no dev side, calls it alone.
        """
        self.epoch += 1
        set_epoch(self.loader, self.epoch)  # new crops and batch order, reproducibly
        self.model.train()
        total, n = 0.0, 0
        sums: dict[str, float] = {}
        # mixup weights and pairs: reproducible from (seed, epoch), whatever runs beside
        mix_rng = np.random.default_rng([self.cfg.seed, self.epoch, 1])
        for batch in self.loader:
            batch = batch.to(self.device)
            x, lengths = self._augment(batch.x, batch.lengths, batch.ids)
            mix = None
            if self.recipe.mixup_alpha > 0:
                lam = float(mix_rng.beta(self.recipe.mixup_alpha, self.recipe.mixup_alpha))
                perm = torch.from_numpy(mix_rng.permutation(len(batch.y)))
                x, lengths, y_other = mixup(x, lengths, batch.y, lam, perm)
                mix = (y_other, lam)
            crop = self.data.train.max_frames  # train.max_frames, or the recipe's chunks
            if self.cfg.compile and crop and x.shape[1] < crop:
                # one batch length to compile, not one per length (TrainConfig.compile);
                # models ignore padding, so only the cost changes
                x = nn.functional.pad(x, (0, 0) * (x.dim() - 2) + (0, crop - x.shape[1]))
            with autocast(self.device, self.cfg.precision):
                _, loss, terms = loss_terms(self.train_model, replace(batch, lengths=lengths),
                                            self.data.train, self.loss_fn, self.aux, x=x,
                                            mix=mix)
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
        return total / max(n, 1), {k: v / max(n, 1) for k, v in sums.items()}

    def state(self) -> dict:
        """Everything needed to continue this fold where it stands (a trial checkpoint)."""
        return {"model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
                "opt": self.opt.state_dict(), "sched": self.sched.state_dict(),
                "epoch": self.epoch, "best": self.best,
                "history": list(self.history), "generator": self.generator.get_state()}

    def load_state(self, state: dict) -> None:
        """Continue from :meth:`state`: the next ``step()`` trains epoch ``state["epoch"] + 1``."""
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.epoch, self.best = state["epoch"], state["best"]
        self.history = list(state["history"])
        self.generator.set_state(state["generator"])

    def _augment(self, x: Tensor, lengths: Tensor,
                 ids: Sequence[str] = ()) -> tuple[Tensor, Tensor]:
        """Gain and noise, then SpecAugment, of a training batch (a no-op with all off)."""
        r = self.recipe
        if self.levels is not None:  # on log power: before masks set values to the mean
            x = self.levels(x, lengths, ids, self.epoch)
        if not (r.time_masks or r.freq_masks):
            return x, lengths
        return spec_augment(x, lengths, time_masks=r.time_masks,
                            time_mask_frames=r.time_mask_frames, freq_masks=r.freq_masks,
                            freq_mask_bands=r.freq_mask_bands, n_bands=self.n_bands,
                            banded=self.banded), lengths

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
