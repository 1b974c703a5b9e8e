"""Device names from configs and options -> ``torch.device``, with one clear error."""

from __future__ import annotations

import torch

from satn.config import ConfigError


def resolve_device(name: str | torch.device) -> torch.device:
    """``"auto"`` is CUDA when there is one, else the CPU; a CUDA device must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"unknown device {str(name)!r} (auto, cpu, cuda or cuda:N)") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {str(name)!r} requested but CUDA is not available")
    return device
