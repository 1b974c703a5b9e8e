"""A stand-in for the ASR teacher, to the contract ``satn.teacher_io`` keeps.

``load_teacher(path, device) -> LoadedTeacher(model, features)``; ``model.maps(x,
lengths)`` reads un-normalised features (B, T, F) and returns
``encoder.layer0..4`` (B, T, C) and ``encoder.attention`` (B, T, T). Built from
satn's own blocks (five one-convolution TCN layers, one-head self-attention),
randomly initialised: transfer only needs maps with the teacher's shapes.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from satn.config import FeatureConfig, to_dict
from satn.models.attention import MultiHeadSelfAttention
from satn.models.tcn import TCN


class StandInTeacher(nn.Module):
    def __init__(self, dim: int, channels: int = 8, mean: float = 0.0, std: float = 1.0):
        super().__init__()
        self.register_buffer("mean", torch.full((dim,), float(mean)))
        self.register_buffer("std", torch.full((dim,), float(std)))
        self.encoder = TCN(dim, channels, (1, 2, 4, 8, 16), dropout=0.0, convs_per_block=1)
        self.attention = MultiHeadSelfAttention(channels, 1, out_proj=False)

    def maps(self, x: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        x = (x - self.mean) / self.std  # the teacher normalises its own input
        layers = self.encoder.forward_layers(x, lengths)
        _, attn = self.attention(layers[-1], lengths, weights=True)
        out = {f"encoder.layer{i}": a for i, a in enumerate(layers)}
        out["encoder.attention"] = attn[:, 0]
        return out


@dataclass
class LoadedTeacher:
    model: nn.Module
    features: FeatureConfig


def save(path: Path, features: FeatureConfig, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = StandInTeacher(features.dim)
    torch.save({"state_dict": model.state_dict(), "features": to_dict(features)}, path)
    return path


def load_teacher(path, device="cpu") -> LoadedTeacher:
    blob = torch.load(path, map_location=device, weights_only=True)
    features = FeatureConfig(**blob["features"])
    model = StandInTeacher(features.dim)
    model.load_state_dict(blob["state_dict"])
    model.to(device).eval().requires_grad_(False)
    return LoadedTeacher(model, features)


def install(monkeypatch) -> None:
    """Make ``satn.teacher_io.load_teacher`` this stand-in (the module may not exist yet)."""
    try:
        import satn.teacher_io as module
    except ImportError:
        module = types.ModuleType("satn.teacher_io")
        monkeypatch.setitem(sys.modules, "satn.teacher_io", module)
    monkeypatch.setattr(module, "load_teacher", load_teacher, raising=False)
