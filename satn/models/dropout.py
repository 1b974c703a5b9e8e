"""Dropout whose masks come from a generator the fold's trainer owns.

Folds of one configuration train in step, one after another or in threads. With
torch's global generator, one fold's dropout masks would depend on which other
folds run beside it (and, in threads, on timing), so a fold trained alone would
not reproduce the same fold in a full run. Every model block uses this module
instead of ``nn.Dropout``; the trainer hands each model its own generator.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Dropout(nn.Module):
    """``nn.Dropout`` (inverted, elementwise) with an optional ``torch.Generator``."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must be in [0, 1), not {p}")
        self.p = p
        self.generator: torch.Generator | None = None

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.generator is None:
            return nn.functional.dropout(x, self.p, training=True)
        keep = torch.empty_like(x).bernoulli_(1.0 - self.p, generator=self.generator)
        return x * keep / (1.0 - self.p)

    def __deepcopy__(self, memo: dict) -> Dropout:
        # a generator is state of the training run, not of the model: copies go without it
        twin = Dropout(self.p)
        twin.training = self.training
        return twin

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_generator(model: nn.Module, generator: torch.Generator | None) -> int:
    """Point every satn ``Dropout`` in ``model`` at ``generator``; returns how many."""
    n = 0
    for m in model.modules():
        if isinstance(m, Dropout):
            m.generator = generator
            n += 1
    return n
