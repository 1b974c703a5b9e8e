"""Attention transfer from a frozen ASR teacher (SATN Eqs. 10-12).

L_T = L_SER + W_AT * L_AT (Eq. 11), where L_AT sums, over chosen pairs of a
student map and a teacher map, the L1 distance between the two maps after each
is l1-normalised over the utterance's valid frames (Eq. 12). A map is either

- an activation map of an encoder layer A (T, C): F(A) = sum_c |A_c|^p (Eq. 10),
  one value per frame; or
- a self-attention weight map (T, T) (heads averaged), or a soft-attention
  weight vector (T,). When one side is (T, T) and the other (T,), the (T, T)
  map becomes the weight each key frame receives, averaged over query frames.

Names decide the kind: a map whose last name part contains ``attention`` is an
attention map, any other an activation map. The teacher map of each utterance
is resized (linear / bilinear) to the student's length when the two differ.

The teacher is frozen and runs under ``no_grad``; gradients reach the student
only. Its normalised target maps can be cached per utterance window (id, crop
start, length), so a teacher runs once per window rather than once per epoch.
No MLflow or Ray here; the teacher file is read by ``satn.teacher_io``
(imported only when a teacher is loaded).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812

from satn.config import ConfigError, FeatureConfig, TransferConfig, is_attention_map
from satn.models.masking import length_mask

EPS = 1e-12


def activation_map(a: Tensor, p: float) -> Tensor:
    """F(A) = sum over channels of |A|^p (Eq. 10): (B, T, C) -> (B, T)."""
    return a.abs().pow(p).sum(-1)


def as_map(name: str, value: Tensor, p: float) -> Tensor:
    """A named model output as a map: (B, T) or (B, T, T)."""
    if not is_attention_map(name):
        if value.dim() != 3:
            raise ValueError(f"activation map {name!r} must be (B, T, C), not {tuple(value.shape)}")
        return activation_map(value, p)
    if value.dim() == 4:  # (B, H, T, T): one map per utterance, heads averaged
        return value.mean(1)
    if value.dim() in (2, 3):
        return value
    raise ValueError(f"attention map {name!r} must be (B, T), (B, T, T) or (B, H, T, T), "
                     f"not {tuple(value.shape)}")


def _valid(m: Tensor, n: int) -> Tensor:
    """One utterance's map cut to its ``n`` valid frames: (T,) -> (n,), (T, T) -> (n, n)."""
    return m[:n] if m.dim() == 1 else m[:n, :n]


def _key_weights(m: Tensor) -> Tensor:
    """(n, n) query x key weights -> (n,) weight each key receives, averaged over queries."""
    return m.mean(0)


def _resize(m: Tensor, n: int) -> Tensor:
    """A valid (t,) or (t, t) map -> (n,) or (n, n) by linear / bilinear interpolation."""
    if m.shape[0] == n:
        return m
    if m.dim() == 1:
        return F.interpolate(m[None, None], size=n, mode="linear", align_corners=True)[0, 0]
    return F.interpolate(m[None, None], size=(n, n), mode="bilinear", align_corners=True)[0, 0]


def l1_normalise(m: Tensor) -> Tensor:
    """m / ||m||_1 over all of its values (one utterance)."""
    return m / m.abs().sum().clamp_min(EPS)


def target(teacher_map: Tensor, t_len: int, student_rank: int, n: int) -> Tensor:
    """One utterance's teacher map as the student's target: valid part, matched rank,
    resized to the student's ``n`` frames, l1-normalised. (T,)/(T, T) -> (n,)/(n, n)."""
    m = _valid(teacher_map, t_len)
    if m.dim() == 2 and student_rank == 1:
        m = _key_weights(m)
    return l1_normalise(_resize(m.float(), n))


def normalised_student(m: Tensor, lengths: Tensor, rank: int) -> Tensor:
    """Student maps (B, T) / (B, T, T) zeroed on padding and l1-normalised per utterance;
    a (B, T, T) map asked for at rank 1 becomes per-key weights averaged over valid queries."""
    t = m.shape[1]
    mask = length_mask(lengths, t).to(m.dtype)  # (B, T)
    if m.dim() == 3:
        m = m * mask[:, :, None] * mask[:, None, :]
        if rank == 1:
            m = m.sum(1) / lengths.clamp(min=1)[:, None].to(m.dtype)
    else:
        m = m * mask
    total = m.abs().flatten(1).sum(1).clamp_min(EPS)
    return m / total.view(-1, *([1] * (m.dim() - 1)))


def pair_targets(s: Tensor, t: Tensor, lengths: Tensor,
                 t_lengths: Tensor | None = None) -> list[Tensor]:
    """Each utterance's normalised teacher target for student map s (B, T[, T]) from teacher
    map t (B, T'[, T']); teacher lengths default to ``lengths`` scaled by T' / T."""
    rank = 1 if min(s.dim(), t.dim()) == 2 else 2
    if t_lengths is None:
        t_lengths = torch.ceil(lengths * (t.shape[1] / s.shape[1])).long()
    return [target(t[i], int(t_lengths[i]), rank, int(lengths[i])) for i in range(len(lengths))]


def pad_targets(targets: Sequence[Tensor], t: int) -> Tensor:
    """Per-utterance targets (n_i,) / (n_i, n_i) -> zero-padded (B, T) / (B, T, T)."""
    rank = targets[0].dim()
    out = targets[0].new_zeros((len(targets),) + (t,) * rank)
    for i, m in enumerate(targets):
        n = m.shape[0]
        if rank == 1:
            out[i, :n] = m
        else:
            out[i, :n, :n] = m
    return out


def distance(s: Tensor, targets: Tensor, lengths: Tensor) -> Tensor:
    """Batch mean of ||s/|s|_1 - target||_1: s (B, T[, T]) a student map, targets padded."""
    s_norm = normalised_student(s.float(), lengths, targets.dim() - 1)
    return (s_norm - targets.to(s_norm)).abs().flatten(1).sum(1).mean()


def transfer_loss(student: dict[str, Tensor], teacher: dict[str, Tensor], lengths: Tensor,
                  pairs: Sequence[tuple[str, str]], p: float = 2.0,
                  teacher_lengths: Tensor | None = None) -> Tensor:
    """L_AT (Eq. 12) averaged over the batch: sum over pairs of ||s/|s|_1 - t/|t|_1||_1.

    student / teacher: named outputs ((B, T, C) layers or attention weights);
    lengths: (B,) valid student frames; teacher_lengths: the teacher's (default:
    scaled from ``lengths`` by the ratio of the two time axes).
    """
    total = torch.zeros(())
    for s_name, t_name in pairs:
        s = as_map(s_name, student[s_name], p)
        t = as_map(t_name, teacher[t_name], p).detach()
        targets = pad_targets(pair_targets(s, t, lengths, teacher_lengths), s.shape[1])
        total = total.to(s) + distance(s, targets, lengths)
    return total


class AttentionTransfer:
    """The L_AT term of one fold's training: a frozen teacher, its inputs and a cache.

    ``normalizer`` is the fold's feature normaliser: SER batches hold normalised
    features, the teacher reads features as stored, so batches are de-normalised
    before the teacher sees them.
    """

    name = "at"
    needs_maps = True

    def __init__(self, teacher: nn.Module, cfg: TransferConfig, mean: Any, std: Any,
                 device: torch.device | str = "cpu"):
        self.teacher = teacher
        self.weight, self.p = cfg.weight, cfg.p
        self.pairs = cfg.chosen_pairs()
        if not self.pairs:
            raise ConfigError(f"transfer.kind={cfg.kind} selects none of transfer.pairs "
                              f"{list(cfg.pairs)}")
        self.mean = torch.tensor(np.asarray(mean), dtype=torch.float32, device=device)
        self.std = torch.tensor(np.asarray(std), dtype=torch.float32, device=device)
        self.cache: dict[tuple[str, int, int], dict[str, Tensor]] | None = (
            {} if cfg.cache else None)
        self.teacher_calls = 0  # utterances the teacher has encoded (a cache measures itself)

    @torch.no_grad()
    def teacher_maps(self, x: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        """Teacher maps of a normalised batch x (B, T, F): de-normalised, padding zeroed."""
        raw = (x * self.std + self.mean) * length_mask(lengths, x.shape[1])[..., None].to(x)
        self.teacher_calls += len(lengths)
        return self.teacher.maps(raw, lengths)

    @torch.no_grad()
    def targets(self, student: dict[str, Tensor], x: Tensor, lengths: Tensor,
                keys: Sequence[tuple[str, int, int]]) -> dict[str, Tensor]:
        """Padded, normalised teacher targets per pair ``s:t``, from the cache or the teacher."""
        missing = [i for i, k in enumerate(keys) if self.cache is None or k not in self.cache]
        fresh: dict[int, dict[str, Tensor]] = {i: {} for i in missing}
        if missing:
            idx = torch.tensor(missing, device=x.device)
            sub_len = lengths[idx]
            maps = self.teacher_maps(x[idx, : int(sub_len.max())], sub_len)
            for s_name, t_name in self.pairs:
                if t_name not in maps:
                    raise ConfigError(f"transfer.pairs names teacher map {t_name!r}; the "
                                      f"teacher gives {sorted(maps)}")
                s = as_map(s_name, student[s_name][idx, : int(sub_len.max())], self.p)
                t = as_map(t_name, maps[t_name], self.p)
                for i, m in zip(missing, pair_targets(s, t, sub_len), strict=True):
                    # (T, T) targets dominate a cache's memory: half precision
                    fresh[i][f"{s_name}:{t_name}"] = m.half() if m.dim() == 2 else m
            if self.cache is not None:
                self.cache.update({keys[i]: fresh[i] for i in missing})
        per = [fresh[i] if i in fresh else self.cache[k] for i, k in enumerate(keys)]
        return {name: pad_targets([d[name].float() for d in per], x.shape[1]) for name in per[0]}

    def __call__(self, student: dict[str, Tensor], x: Tensor, lengths: Tensor,
                 keys: Sequence[tuple[str, int, int]]) -> Tensor:
        """L_AT of a batch (unweighted, Eq. 12). student: the model's maps; x (B, T, F)
        normalised features; lengths (B,); keys: (utterance id, crop start, frames) per item."""
        targets = self.targets(student, x, lengths, keys)
        total = x.new_zeros(())
        for s_name, t_name in self.pairs:
            s = as_map(s_name, student[s_name], self.p)
            total = total + distance(s, targets[f"{s_name}:{t_name}"], lengths)
        return total


def check_features(teacher_features: FeatureConfig, data_features: FeatureConfig) -> None:
    """The teacher must read the features the SER data holds; name every field that differs."""
    diff = [f"{f.name} {getattr(teacher_features, f.name)!r} vs {getattr(data_features, f.name)!r}"
            for f in fields(FeatureConfig)
            if getattr(teacher_features, f.name) != getattr(data_features, f.name)]
    if diff:
        raise ConfigError("transfer.teacher was trained on other features than the dataset's "
                          "(teacher vs data): " + "; ".join(diff))


def load_teacher(cfg: TransferConfig, variant: str, data_features: FeatureConfig,
                 device: torch.device | str = "cpu") -> nn.Module:
    """The frozen teacher named by ``transfer.teacher``, checked against the data's features."""
    if not cfg.teacher:
        raise ConfigError(f"model.variant {variant} trains with attention transfer: set "
                          f"transfer.teacher to a saved ASR teacher (satn teacher)")
    try:
        from satn.teacher_io import load_teacher as read_teacher
    except ImportError as e:
        raise ConfigError(f"transfer.teacher: this satn cannot read teachers ({e})") from e
    try:
        loaded = read_teacher(cfg.teacher, device=device)
    except FileNotFoundError as e:
        raise ConfigError(f"transfer.teacher: no teacher at {cfg.teacher}") from e
    check_features(loaded.features, data_features)
    teacher = loaded.model.eval()
    for q in teacher.parameters():
        q.requires_grad_(False)
    return teacher
