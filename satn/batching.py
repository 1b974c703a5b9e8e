"""Batches of variable-length feature sequences: normalise, crop, bucket, pad.

``SequenceDataset`` holds one fold side's feature arrays ``(T_i, *F)``;
``BucketBatchSampler`` groups utterances of similar length so that padding
stays small; ``collate`` pads a batch into :class:`Batch` ``(x, lengths, y, ids)``.
Models receive ``(x, lengths)`` and must pool over the valid frames only.

Per epoch, call :func:`set_epoch` on the loader: it reseeds both the random
crops and the batch order, so a run is reproducible from ``seed`` alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

STD_FLOOR = 1e-5  # constant feature dimensions (e.g. silent mel bands) must not blow up


@dataclass(frozen=True, eq=False)
class Normalizer:
    """Per-dimension standardisation: ``(x - mean) / std``.

    ``mean`` and ``std`` hold one value per index of the last feature axis,
    pooled over every other axis: per log-mel dimension for ``(T, D)`` frames,
    per frequency bin for ``(T, S, F)`` spectrogram segments (pooled over the
    segments and the frames inside them: a frame's statistics must not depend
    on where a segment boundary happens to cut it). The statistics must come from the
    fold's training side only, never from dev or test utterances: the engine
    fits it on the training arrays and applies it to all three sides.
    """

    mean: np.ndarray  # (*F,) float32
    std: np.ndarray  # (*F,) float32, >= STD_FLOOR

    def __post_init__(self) -> None:
        mean = np.array(self.mean, dtype=np.float32)
        std = np.array(self.std, dtype=np.float32)
        if mean.shape != std.shape:
            raise ValueError(f"mean shape {mean.shape} != std shape {std.shape}")
        if not np.all(std > 0):
            raise ValueError("std must be positive")
        mean.setflags(write=False)  # frozen means frozen
        std.setflags(write=False)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @classmethod
    def fit(cls, arrays: Sequence[np.ndarray], floor: float = STD_FLOOR) -> Normalizer:
        """Statistics over all frames of ``arrays`` (each ``(T_i, *F)``), per last-axis index.

        Accumulates in float64 and merges per-array (mean, M2) pairs with
        Chan et al.'s update, so large offsets and millions of frames lose no
        precision. ``std`` is the population std, floored at ``floor``.
        """
        n = 0
        mean: np.ndarray | None = None
        m2: np.ndarray | None = None
        for a in arrays:
            a = np.asarray(a, dtype=np.float64)
            if a.ndim < 1 or a.shape[0] == 0:
                continue
            if a.ndim > 2:  # (T, S, F) segments: every frame of every segment, per bin
                a = a.reshape(-1, a.shape[-1])
            na = a.shape[0]
            mean_a = a.mean(axis=0)
            m2_a = ((a - mean_a) ** 2).sum(axis=0)
            if mean is None or m2 is None:
                n, mean, m2 = na, mean_a, m2_a
                continue
            if mean_a.shape != mean.shape:
                raise ValueError(f"feature shape {mean_a.shape} != {mean.shape}")
            delta = mean_a - mean
            total = n + na
            mean = mean + delta * (na / total)
            m2 = m2 + m2_a + delta**2 * (n * na / total)
            n = total
        if mean is None or m2 is None:
            raise ValueError("Normalizer.fit needs at least one frame")
        std = np.maximum(np.sqrt(m2 / n), floor)
        return cls(mean=mean.astype(np.float32), std=std.astype(np.float32))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``(T, *F)`` -> normalised ``(T, *F)`` float32 (statistics broadcast on the last axis)."""
        return ((np.asarray(x, dtype=np.float32) - self.mean) / self.std).astype(np.float32)

    def to_dict(self) -> dict[str, list]:
        """Plain nested lists, for checkpoints and JSON."""
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normalizer:
        return cls(mean=np.asarray(d["mean"]), std=np.asarray(d["std"]))


@dataclass
class Batch:
    """A padded batch.

    x: (B, T, *F) float32, zero after each item's length;
    lengths: (B,) int64 valid frames per item; y: (B,) int64 class ids;
    ids: B utterance ids.
    """

    x: Tensor
    lengths: Tensor
    y: Tensor
    ids: list[str]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return Batch(
            x=self.x.to(device, non_blocking=non_blocking),
            lengths=self.lengths.to(device, non_blocking=non_blocking),
            y=self.y.to(device, non_blocking=non_blocking),
            ids=self.ids,
        )

    @property
    def mask(self) -> Tensor:
        """(B, T) bool, True on valid frames."""
        t = torch.arange(self.x.shape[1], device=self.lengths.device)
        return t[None, :] < self.lengths[:, None]

    def __len__(self) -> int:
        return len(self.ids)


class SequenceDataset(Dataset):
    """Feature sequences with labels; items are ``(x (T, *F) float32, y int, id str)``.

    With ``max_frames`` (training), an item longer than that is cropped to a
    random window of ``max_frames`` frames; the window depends only on
    ``(seed, epoch, index)``, so it is reproducible and independent of worker
    order. Without it (evaluation) items keep their full length.
    """

    def __init__(
        self,
        arrays: Sequence[np.ndarray],
        labels: Sequence[int],
        ids: Sequence[str],
        normalizer: Normalizer | None = None,
        max_frames: int | None = None,
        seed: int = 0,
    ) -> None:
        if not len(arrays) == len(labels) == len(ids):
            raise ValueError(f"{len(arrays)} arrays, {len(labels)} labels, {len(ids)} ids")
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
        shapes = {tuple(np.shape(a)[1:]) for a in arrays}
        if len(shapes) > 1:
            raise ValueError(f"arrays have different feature shapes: {sorted(shapes)}")
        empty = [i for i, a in zip(ids, arrays, strict=True) if np.ndim(a) < 1 or len(a) == 0]
        if empty:
            raise ValueError(f"{len(empty)} empty feature array(s), e.g. {empty[:3]}")
        self.arrays = list(arrays)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.ids = [str(i) for i in ids]
        self._index: dict[str, int] | None = None
        self.normalizer = normalizer
        self.max_frames = max_frames
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def lengths(self) -> np.ndarray:
        """(N,) int64 frames per item as served (after the ``max_frames`` cap)."""
        raw = np.array([len(a) for a in self.arrays], dtype=np.int64)
        return raw if self.max_frames is None else np.minimum(raw, self.max_frames)

    @property
    def index(self) -> dict[str, int]:
        """Utterance id -> item index."""
        if self._index is None:
            self._index = {uid: i for i, uid in enumerate(self.ids)}
        return self._index

    def crop_start(self, index: int) -> int:
        """First frame of item ``index``'s window this epoch (0 when not cropped)."""
        t = len(self.arrays[index])
        if self.max_frames is None or t <= self.max_frames:
            return 0
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return int(rng.integers(0, t - self.max_frames + 1))

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, index: int) -> tuple[Tensor, int, str]:
        x = self.arrays[index]
        if self.max_frames is not None:
            start = self.crop_start(index)
            x = x[start : start + self.max_frames]
        # Normalise after cropping: cheaper, and the statistics are per-dimension anyway.
        x = self.normalizer(x) if self.normalizer is not None else np.asarray(x, np.float32)
        return torch.from_numpy(np.ascontiguousarray(x)), int(self.labels[index]), self.ids[index]


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of indices of similar length; every index exactly once per epoch.

    Lengths fall into buckets ``length // bucket_width``. With ``shuffle``,
    indices are shuffled within each bucket, the buckets are laid end to end
    in length order and cut into batches of ``batch_size``, and the batch
    order is shuffled (seeded by ``(seed, epoch)``). Cutting across bucket
    borders rather than per bucket leaves one short batch per epoch instead of
    one per bucket. Without ``shuffle`` the order is fixed: by length, then index.
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        bucket_width: int = 50,
        max_cost: int | None = None,
    ) -> None:
        """``max_cost`` (fixed order only): a batch of B items whose longest has T frames
        costs B * T**2, what self-attention scores take; batches stay within it (a longer
        item goes alone), so evaluation memory does not grow with the longest utterances."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_cost is not None and shuffle:
            raise ValueError("max_cost sizes evaluation batches (shuffle=False) only")
        if bucket_width < 1:
            raise ValueError(f"bucket_width must be >= 1, got {bucket_width}")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.bucket_width = bucket_width
        self.max_cost = max_cost
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        """This epoch's batches, as lists of dataset indices."""
        buckets = self.lengths // self.bucket_width
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.shuffle:
            noise = rng.permutation(len(self.lengths))  # random order inside each bucket
            order = np.lexsort((noise, buckets))
        else:
            order = np.lexsort((np.arange(len(self.lengths)), self.lengths))
        if self.max_cost is not None:
            return self._within_cost(order)
        out = [order[i : i + self.batch_size].tolist()
               for i in range(0, len(order), self.batch_size)]
        if self.shuffle:
            out = [out[j] for j in rng.permutation(len(out))]
        return out

    def _within_cost(self, order: np.ndarray) -> list[list[int]]:
        """Ascending lengths cut where B * T_max**2 would pass ``max_cost``."""
        out: list[list[int]] = []
        for i in order.tolist():  # ascending: the newest item is the batch's longest
            t = int(self.lengths[i])
            if out and len(out[-1]) < self.batch_size and \
                    (len(out[-1]) + 1) * t * t <= self.max_cost:
                out[-1].append(i)
            else:
                out.append([i])
        return out

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        if self.max_cost is not None:
            return len(self.batches())
        return math.ceil(len(self.lengths) / self.batch_size)


def collate(items: Sequence[tuple[Tensor, int, str]]) -> Batch:
    """``[(x (T_i, *F), y, id)]`` -> :class:`Batch` zero-padded to the longest ``T_i``."""
    if not items:
        raise ValueError("cannot collate an empty batch")
    xs = [x for x, _, _ in items]
    lengths = torch.tensor([x.shape[0] for x in xs], dtype=torch.int64)
    x = torch.zeros((len(xs), int(lengths.max()), *xs[0].shape[1:]), dtype=torch.float32)
    for i, xi in enumerate(xs):
        x[i, : xi.shape[0]] = xi
    y = torch.tensor([y for _, y, _ in items], dtype=torch.int64)
    return Batch(x=x, lengths=lengths, y=y, ids=[i for _, _, i in items])


def make_loader(
    dataset: SequenceDataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    bucket_width: int = 50,
    num_workers: int = 0,
    max_cost: int | None = None,
) -> DataLoader:
    """A DataLoader of :class:`Batch` over length buckets of ``dataset``.

    Call :func:`set_epoch` before each epoch. Workers are not persistent, so
    each epoch's workers see the epoch just set. ``max_cost``: see
    :class:`BucketBatchSampler` (evaluation).
    """
    sampler = BucketBatchSampler(dataset.lengths, batch_size, shuffle=shuffle, seed=seed,
                                 bucket_width=bucket_width, max_cost=max_cost)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate,
                      num_workers=num_workers)


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Reseed a :func:`make_loader` loader's crops and batch order for ``epoch``."""
    for part in (loader.dataset, loader.batch_sampler):
        if hasattr(part, "set_epoch"):
            part.set_epoch(epoch)
