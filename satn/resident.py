"""A fold side's features resident on the device: batches cut there, no per-batch copy.

``train.resident``: a side's normalised frames are concatenated once into one
(N_frames, *F) tensor on the trainer's device; a batch is then one gather of
(B, T) frame indices, with the same windows (:meth:`SequenceDataset.crop_start`),
the same batches (:class:`satn.batching.BucketBatchSampler`) and the same zero
padding as :func:`satn.batching.collate`, so results equal the host path's
(IEMOCAP improvised is ~0.6 GB as float32: a few folds fit on one GPU).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from satn.batching import Batch, BucketBatchSampler, SequenceDataset


class ResidentFeatures:
    """``dataset``'s normalised frames on ``device``, cut into :class:`Batch` es there."""

    def __init__(self, dataset: SequenceDataset, device: torch.device):
        self.dataset, self.device = dataset, device
        norm = dataset.normalizer
        # normalising whole utterances equals normalising crops: the statistics are per value
        arrays = [norm(a) if norm is not None else np.asarray(a, np.float32)
                  for a in dataset.arrays]
        full = np.array([len(a) for a in arrays], dtype=np.int64)
        self.frames = torch.from_numpy(np.concatenate(arrays)).to(device)  # (N_frames, *F)
        self.offsets = torch.from_numpy(np.cumsum(full) - full).to(device)  # (N,)
        self.labels = torch.from_numpy(dataset.labels).to(device)  # (N,)
        self.served = dataset.lengths  # (N,) after the max_frames cap, host side

    def batch(self, indices: list[int]) -> Batch:
        """Items ``indices`` as the dataset serves them this epoch, padded: (B, T, *F)."""
        ds = self.dataset
        served = self.served[indices]
        starts = [ds.crop_start(i) for i in indices]
        lengths = torch.from_numpy(served).to(self.device)
        rows = torch.as_tensor(indices, device=self.device)
        first = self.offsets[rows] + torch.as_tensor(starts, device=self.device)  # (B,)
        steps = torch.arange(int(served.max()), device=self.device)  # (T,)
        valid = steps[None, :] < lengths[:, None]  # (B, T)
        at = torch.where(valid, first[:, None] + steps[None, :], 0)
        x = self.frames[at]  # (B, T, *F)
        shape = (*valid.shape, *(1,) * (x.dim() - 2))
        x = torch.where(valid.view(shape), x, torch.zeros((), dtype=x.dtype, device=x.device))
        return Batch(x=x, lengths=lengths, y=self.labels[rows], ids=[ds.ids[i] for i in indices])


class ResidentLoader:
    """The batches of a :class:`BucketBatchSampler` over :class:`ResidentFeatures`.

    Has ``dataset`` and ``batch_sampler`` as a DataLoader does, so
    :func:`satn.batching.set_epoch` reseeds its crops and order the same way.
    """

    def __init__(self, features: ResidentFeatures, batch_size: int, *, shuffle: bool,
                 seed: int = 0, bucket_width: int = 50, max_cost: int | None = None):
        self.features, self.dataset = features, features.dataset
        self.batch_sampler = BucketBatchSampler(self.dataset.lengths, batch_size,
                                                shuffle=shuffle, seed=seed,
                                                bucket_width=bucket_width, max_cost=max_cost)

    def __iter__(self) -> Iterator[Batch]:
        for indices in self.batch_sampler:
            yield self.features.batch(indices)

    def __len__(self) -> int:
        return len(self.batch_sampler)
