"""Checkpoints that load without unpickling arbitrary objects.

A checkpoint is a plain dict of tensors plus one JSON string (the resolved
experiment config, classes, normaliser statistics, frame shape and scores), so
``torch.load(weights_only=True)`` reads it and a model is rebuilt by name from
the registry. A pretrained VQ-VAE (``satn pretrain-vqvae``) is stored the same
way, with its per-bin normaliser and sizes (format ``satn-vqvae/1``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from satn import __version__
from satn.batching import Normalizer
from satn.config import ConfigError, ExperimentConfig, VQVAESettings, from_dict, to_dict
from satn.models import SERModel, build_model
from satn.models.vqvae import ARTIFACT_FORMAT, VQVAE, ArtifactError, build_vqvae, read_artifact

FORMAT = "satn-checkpoint/1"


@dataclass
class Checkpoint:
    model: SERModel  # eval mode
    cfg: ExperimentConfig
    classes: tuple[str, ...]
    normalizer: Normalizer
    frame_shape: tuple[int, ...]
    meta: dict[str, Any]


def save_checkpoint(path: str | Path, state_dict: dict[str, torch.Tensor], *,
                    cfg: ExperimentConfig, classes: tuple[str, ...], normalizer: Normalizer,
                    frame_shape: tuple[int, ...], extra: dict[str, Any] | None = None) -> Path:
    meta = {
        "format": FORMAT,
        "satn_version": __version__,
        "config": cfg.to_dict(),
        "classes": list(classes),
        "normalizer": normalizer.to_dict(),
        "frame_shape": list(frame_shape),
        **(extra or {}),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"state_dict": state_dict, "meta": json.dumps(meta)}, tmp)
    tmp.replace(path)  # never leave a half-written checkpoint under the real name
    return path


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    try:
        blob = torch.load(path, map_location=device, weights_only=True)
        meta = json.loads(blob["meta"])
    except FileNotFoundError:
        raise
    except Exception as e:  # a foreign or damaged file: say which and why
        raise ValueError(f"{path}: not a satn checkpoint ({e})") from e
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown checkpoint format {meta.get('format')!r}")
    cfg = ExperimentConfig.from_dict(meta["config"])
    classes = tuple(meta["classes"])
    frame_shape = tuple(meta["frame_shape"])
    # the weights hold everything, a pretrained VQ-VAE's too: its artifact need not exist here
    model = build_model(cfg.override({"model.vqvae.checkpoint": ""}).model, frame_shape,
                        len(classes))
    model.load_state_dict(blob["state_dict"])
    return Checkpoint(model.to(device).eval(), cfg, classes,
                      Normalizer.from_dict(meta["normalizer"]), frame_shape, meta)


# ---------------------------------------------------------------- VQ-VAE artifacts

@dataclass
class VQVAEArtifact:
    model: VQVAE  # eval mode
    settings: VQVAESettings  # the sizes it was built with
    normalizer: Normalizer  # per-bin statistics of its training side
    segment_shape: tuple[int, int]
    meta: dict[str, Any]


def save_vqvae(path: str | Path, model: VQVAE, *, settings: VQVAESettings,
               normalizer: Normalizer, extra: dict[str, Any] | None = None) -> Path:
    """Write a pretrained VQ-VAE (weights + JSON meta) that loads with ``weights_only``."""
    meta = {"format": ARTIFACT_FORMAT, "satn_version": __version__,
            "vqvae": to_dict(settings), "segment_shape": list(model.segment_shape),
            "normalizer": normalizer.to_dict(), **(extra or {})}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"state_dict": model.state_dict(), "meta": json.dumps(meta)}, tmp)
    tmp.replace(path)
    return path


def load_vqvae(path: str | Path, device: str | torch.device = "cpu") -> VQVAEArtifact:
    """Read an artifact of :func:`save_vqvae`; a missing or foreign file raises ``ConfigError``."""
    try:
        state, meta = read_artifact(path, device)
    except ArtifactError as e:
        raise ConfigError(f"model.vqvae.checkpoint: {e}") from e
    settings = from_dict(VQVAESettings, meta["vqvae"], "vqvae.")
    shape = tuple(meta["segment_shape"])
    model = build_vqvae(settings, shape)
    model.load_state_dict(state)
    return VQVAEArtifact(model.to(device).eval(), settings, Normalizer.from_dict(
        meta["normalizer"]), shape, meta)
