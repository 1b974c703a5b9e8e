"""Checkpoints that load without unpickling arbitrary objects.

A checkpoint is a plain dict of tensors plus one JSON string (the resolved
experiment config, classes, normaliser statistics, frame shape and scores), so
``torch.load(weights_only=True)`` reads it and a model is rebuilt by name from
the registry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from satn import __version__
from satn.batching import Normalizer
from satn.config import ExperimentConfig
from satn.models import SERModel, build_model

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
    model = build_model(cfg.model, frame_shape, len(classes))
    model.load_state_dict(blob["state_dict"])
    return Checkpoint(model.to(device).eval(), cfg, classes,
                      Normalizer.from_dict(meta["normalizer"]), frame_shape, meta)
