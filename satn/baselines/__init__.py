"""Classical baselines: utterance-level features + linear classifiers on satn's folds."""

from satn.baselines.classify import (
    CLASSIFIERS,
    BaselineConfig,
    BaselineFold,
    BaselineResult,
    run_baseline,
    select_c,
)
from satn.baselines.features import FEATURE_SETS, UtteranceFeatures, utterance_features

__all__ = ["CLASSIFIERS", "FEATURE_SETS", "BaselineConfig", "BaselineFold", "BaselineResult",
           "UtteranceFeatures", "run_baseline", "select_c", "utterance_features"]
