"""What TACN's figures show: per-utterance representations, their t-SNE, test confusions.

Figure 4 of TACN plots the test side's deep representation R_d against the
fused R_f (t-SNE); Figure 5 shows four confusion matrices (Deep/Fusion x
TCN/TACN). Here a segment model's front end names its representations
(``represent``: R_d; for fusion models also R_l and R_f), each utterance's
segments are averaged over its real segments into one point, and scikit-learn's
t-SNE maps the points to 2D. No MLflow here: ``satn tacn-figures`` logs the pictures.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from satn.batching import SequenceDataset, make_loader
from satn.metrics import Scores, score
from satn.models.masking import masked_mean


@dataclass
class SideResult:
    """One model on one fold's test side: predictions and per-utterance representations."""

    labels: np.ndarray  # (N,) class ids
    scores: Scores
    representations: dict[str, np.ndarray]  # name -> (N, D), mean over real segments
    ids: list[str]


@torch.no_grad()
def run_side(model, dataset: SequenceDataset, n_classes: int, batch_size: int = 32,
              device: str | torch.device = "cpu") -> SideResult:
    """Run ``model`` (a segment variant, eval mode) over ``dataset``."""
    model = model.to(device).eval()
    front = getattr(model.encoder, "front", None)
    if front is None or not hasattr(front, "represent"):
        raise ValueError("t-SNE of R_d / R_f needs a deep_* or fusion_* model")
    preds, ys, ids, reps = [], [], [], {}
    for batch in make_loader(dataset, batch_size, shuffle=False):
        batch = batch.to(device)
        preds.append(model(batch.x, batch.lengths).logits.argmax(-1).cpu().numpy())
        for name, r in front.represent(batch.x, batch.lengths).items():  # (B, T, D)
            reps.setdefault(name, []).append(masked_mean(r, batch.lengths).cpu().numpy())
        ys.append(batch.y.cpu().numpy())
        ids.extend(batch.ids)
    y, p = np.concatenate(ys), np.concatenate(preds)
    return SideResult(y, score(y, p, n_classes), {k: np.concatenate(v) for k, v in reps.items()},
                    ids)


def tsne_2d(x: np.ndarray, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """(N, D) -> (N, 2) with scikit-learn's t-SNE (features standardised first, PCA init)."""
    from sklearn.manifold import TSNE
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(x, dtype=np.float64)
    if len(x) < 3:
        raise ValueError(f"t-SNE needs at least 3 points, got {len(x)}")
    x = StandardScaler().fit_transform(x)
    # perplexity must stay below the number of points
    perp = min(perplexity, max(1.0, (len(x) - 1) / 3))
    return TSNE(2, perplexity=perp, init="pca", random_state=seed).fit_transform(x)
