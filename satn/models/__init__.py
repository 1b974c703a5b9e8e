"""Model blocks and the registry of variants (importing this registers them)."""

from satn.models import segment_variants as _segment_variants  # noqa: F401  (registers)
from satn.models import variants as _variants  # noqa: F401  (registers the builders)
from satn.models.classifier import ModelOutput, SERModel
from satn.models.registry import (
    available,
    build_model,
    families,
    reads_setting,
    register,
    uses_transfer,
)

__all__ = ["ModelOutput", "SERModel", "available", "build_model", "families", "reads_setting",
           "register", "uses_transfer"]
