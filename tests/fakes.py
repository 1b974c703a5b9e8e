"""Stand-ins: an in-memory ``satn.store.FeatureDataset`` with learnable classes, and the
predictions table of a finished run."""

from __future__ import annotations

import numpy as np
import pandas as pd

CLASSES = ("neu", "hap", "sad", "ang")


class MemoryDataset:
    """5 sessions x 2 speakers; each class shifts a different block of feature dims."""

    def __init__(self, per_speaker_class: int = 6, dim: int = 12, seed: int = 0,
                 separation: float = 1.5):
        rng = np.random.default_rng(seed)
        rows, self._arrays = [], []
        for s in range(1, 6):
            for g in "FM":
                speaker = f"Ses0{s}{g}"
                offset = rng.normal(0, 0.3, dim)  # a per-speaker voice
                for c, label in enumerate(CLASSES):
                    for k in range(per_speaker_class):
                        t = int(rng.integers(20, 60))
                        x = rng.normal(0, 1, (t, dim)) + offset
                        x[:, c * (dim // 4):(c + 1) * (dim // 4)] += separation
                        self._arrays.append(x.astype(np.float32))
                        rows.append({"id": f"Ses0{s}F_impro01_{g}{c}{k:02d}", "speaker": speaker,
                                     "session": f"Ses0{s}", "gender": g, "label": label})
        self.meta = pd.DataFrame(rows)
        self.frame_shape = (dim,)
        self.manifest = {"key": "memory", "corpus": "memory"}

    def arrays(self, rows=None):
        return list(self._arrays) if rows is None else [self._arrays[i] for i in rows]

    def __len__(self):
        return len(self._arrays)


def scored_run(true: dict[str, np.ndarray], scores: dict[str, np.ndarray], kind="probability",
               folds=("fold1",), classes=CLASSES) -> pd.DataFrame:
    """A finished run's predictions table (``satn.tracking.load_predictions``): the same
    dev and test rows in each of ``folds``. ``true``/``scores``: per side, (N,) class ids
    and (N, C) scores."""
    from satn.predictions import predictions_frame

    frames = []
    for fold in folds:
        for side in ("dev", "test"):
            n = len(true[side])
            f = predictions_frame([f"{side}{i}" for i in range(n)], ["spk"] * n, true[side],
                                  scores[side], classes, side)
            frames.append(f.assign(fold=fold))
    out = pd.concat(frames, ignore_index=True)
    out.attrs = {"score_kind": kind}
    return out
