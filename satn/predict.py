"""Classify audio files with a trained checkpoint."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from satn.audio import AudioError, read_audio
from satn.batching import Normalizer
from satn.checkpoint import Checkpoint
from satn.engine import chunked_logits
from satn.features import FeatureError, FeatureExtractor


@dataclass(frozen=True)
class Prediction:
    path: str
    label: str | None  # None when the file could not be used
    probs: dict[str, float]
    error: str | None = None


@torch.no_grad()
def predict_files(paths: list[str], ckpt: Checkpoint, device: str = "cpu") -> list[Prediction]:
    """One prediction per path; a bad file gives an error row, the rest still run."""
    fcfg = ckpt.cfg.features
    extract = FeatureExtractor(fcfg, device=device)
    model = ckpt.model.to(device).eval()
    out = []
    for path in paths:
        try:
            feats = extract([read_audio(path, fcfg.sample_rate)])[0]
        except (AudioError, FeatureError) as e:
            out.append(Prediction(path, None, {}, str(e)))
            continue
        if ckpt.cfg.recipe.normalisation == "speaker":
            # trained on speaker-standardised features: one file is its own speaker here
            feats = Normalizer.fit([feats])(feats)
        x = torch.from_numpy(np.ascontiguousarray(ckpt.normalizer(feats), dtype=np.float32))
        x, lengths = x.unsqueeze(0).to(device), torch.tensor([x.shape[0]], device=device)
        recipe = ckpt.cfg.recipe
        if recipe.chunk_frames is not None:  # scored as in training: mean of chunk logits
            logits = chunked_logits(model, x, lengths, recipe.chunk_frames, recipe.hop, 32)
        else:
            logits = model(x, lengths).logits
        p = logits.softmax(-1)[0].cpu().numpy()
        out.append(Prediction(path, ckpt.classes[int(p.argmax())],
                              {c: float(v) for c, v in zip(ckpt.classes, p, strict=True)}))
    return out
