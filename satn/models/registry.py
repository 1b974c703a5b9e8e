"""Model variants by name: each builder assembles shared blocks with fixed choices.

A builder takes the model config, the shape of one input frame and the number
of classes, and returns an ``SERModel``. New variants (BLSTM, soft attention,
attention transfer, TACN, VQ-VAE fusion) register here instead of copying a
class, so the engine, sweep and CLI reach them by name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from satn.config import ConfigError, ModelConfig
from satn.models.classifier import SERModel

Builder = Callable[[ModelConfig, tuple[int, ...], int], SERModel]
_BUILDERS: dict[str, Builder] = {}
_FAMILIES: dict[str, tuple[str, ...]] = {}
_TRANSFER: set[str] = set()


def register(name: str, families: tuple[str, ...] = (),
             transfer: bool = False) -> Callable[[Builder], Builder]:
    """Register a builder under ``name``; ``families`` are the ``model.*`` settings it reads;
    ``transfer``: the variant trains with attention transfer from a teacher (``transfer.*``)."""
    known = {f.name for f in dataclasses.fields(ModelConfig)
             if dataclasses.is_dataclass(f.default_factory)}  # every model.<family> section
    if not set(families) <= known:
        raise ValueError(f"model variant {name!r} names unknown families {set(families) - known}")

    def add(builder: Builder) -> Builder:
        if name in _BUILDERS:
            raise ValueError(f"model variant {name!r} is registered twice")
        _BUILDERS[name] = builder
        _FAMILIES[name] = tuple(families)
        if transfer:
            _TRANSFER.add(name)
        return builder

    return add


def available() -> list[str]:
    return sorted(_BUILDERS)


def families(name: str) -> tuple[str, ...]:
    """The ``model.<family>`` settings that variant ``name`` reads (besides ``model.dropout``)."""
    if name not in _FAMILIES:
        raise ConfigError(f"unknown model variant {name!r}; available: {available()}")
    return _FAMILIES[name]


def uses_transfer(name: str) -> bool:
    """Whether variant ``name`` trains with attention transfer (needs ``transfer.teacher``)."""
    families(name)  # unknown names say so
    return name in _TRANSFER


def reads_setting(name: str, key: str) -> bool:
    """Whether runs of variant ``name`` are shaped by the flat setting ``key``:
    ``model.<family>.*`` only for the families it reads, ``transfer.*`` only with
    attention transfer, everything else always. Names that are no variant (a baseline,
    a fusion) read everything."""
    if name not in _FAMILIES:
        return True
    section, _, rest = key.partition(".")
    if section == "model" and "." in rest:
        return rest.split(".", 1)[0] in _FAMILIES[name]
    if section == "transfer":
        return name in _TRANSFER
    return True


def build_model(cfg: ModelConfig, frame_shape: tuple[int, ...], n_classes: int) -> SERModel:
    """The variant ``cfg.variant`` for frames of ``frame_shape`` and ``n_classes`` outputs."""
    if cfg.variant not in _BUILDERS:
        raise ConfigError(f"unknown model variant {cfg.variant!r}; available: {available()}")
    return _BUILDERS[cfg.variant](cfg, tuple(frame_shape), n_classes)
