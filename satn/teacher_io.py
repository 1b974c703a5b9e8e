"""The teacher file: a trained ASR teacher that attention-transfer students load frozen.

One ``torch.save`` dict that ``torch.load(weights_only=True)`` reads (no
unpickling of arbitrary objects)::

    {"format": "satn-teacher", "version": 1,
     "state_dict": {...tensors, normaliser statistics included...},
     "meta": JSON string: model config, input dim, tokens, feature config,
             phoneme settings (OOV mode, training word counts), scores, ...}

A file of another format or a newer version, or a damaged one, raises
:class:`TeacherFileError` naming the file. To fetch a teacher logged to MLflow
by run id, see :func:`satn.tracking.find_teacher`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from satn import __version__
from satn.config import FeatureConfig, from_dict, to_dict
from satn.errors import InputError
from satn.models.teacher import ASRTeacher, TeacherModelConfig
from satn.phonemes import TOKENS, Lexicon

FORMAT = "satn-teacher"
VERSION = 1


class TeacherFileError(InputError):
    """A teacher file that is missing, foreign, damaged or of an unknown version."""


@dataclass
class LoadedTeacher:
    """A frozen teacher (eval mode, no parameter requires grad) and what it was trained on.

    ``features``: the feature config its inputs must have (same frame rate and
    dimension as the student's dataset); ``lexicon``: its phoneme inventory and
    homophone preferences; ``meta``: everything else in the file (scores, corpus).
    """

    model: ASRTeacher
    features: FeatureConfig
    lexicon: Lexicon
    tokens: tuple[str, ...]
    meta: dict[str, Any]

    def check_features(self, features: FeatureConfig) -> None:
        """Raise :class:`TeacherFileError` unless ``features`` (a student's dataset) are the
        features the teacher was trained on: its maps mean nothing on other inputs."""
        mine, theirs = to_dict(self.features), to_dict(features)
        diff = [f"{k}: teacher {mine[k]!r}, dataset {theirs[k]!r}"
                for k in mine if mine[k] != theirs.get(k)]
        if diff:
            raise TeacherFileError("the teacher was trained on other features (" + "; ".join(diff)
                                   + "): extract the student's features with the same settings")

    @property
    def map_names(self) -> tuple[str, ...]:
        """Keys of ``model.maps(x, lengths)``."""
        n = len(self.model.cfg.dilations)
        return (*(f"encoder.layer{i}" for i in range(n)), "encoder.attention")


def save_teacher(path: str | Path, model: ASRTeacher, *, features: FeatureConfig,
                 lexicon: Lexicon, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (with its normaliser buffers) and its settings to ``path``, atomically."""
    if model.n_tokens != len(TOKENS):
        raise ValueError(f"model has {model.n_tokens} tokens, the inventory {len(TOKENS)}")
    meta = {
        "satn_version": __version__,
        "model": to_dict(model.cfg),
        "input_dim": model.input_dim,
        "tokens": list(TOKENS),
        "features": to_dict(features),
        "phonemes": {"oov": lexicon.oov, "word_counts": lexicon.word_counts},
        **(extra or {}),
    }
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    torch.save({"format": FORMAT, "version": VERSION, "state_dict": state,
                "meta": json.dumps(meta)}, tmp)
    tmp.replace(path)  # readers never see half a file under the real name
    return path


def load_teacher(path: str | Path, device: str | torch.device = "cpu") -> LoadedTeacher:
    """Read a teacher file; the model comes back frozen (eval, requires_grad False) on ``device``."""
    path = Path(path)
    if not path.is_file():
        raise TeacherFileError(f"teacher file not found: {path}")
    try:
        blob = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # a foreign or damaged file: say which and why
        raise TeacherFileError(f"{path}: not a readable satn teacher file ({e})") from e
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        what = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
        raise TeacherFileError(f"{path}: not a satn teacher file (format {what!r})")
    if blob.get("version") != VERSION:
        raise TeacherFileError(f"{path}: teacher file version {blob.get('version')!r}; this "
                               f"satn reads version {VERSION}")
    try:
        meta = json.loads(blob["meta"])
        cfg = from_dict(TeacherModelConfig, meta["model"])
        feats = from_dict(FeatureConfig, meta["features"])
        model = ASRTeacher(int(meta["input_dim"]), len(meta["tokens"]), cfg)
        model.load_state_dict(blob["state_dict"])
        lexicon = Lexicon(meta["phonemes"]["oov"], meta["phonemes"]["word_counts"])
    except (KeyError, TypeError, ValueError, RuntimeError, json.JSONDecodeError) as e:
        raise TeacherFileError(f"{path}: damaged teacher file ({type(e).__name__}: {e})") from e
    if tuple(meta["tokens"]) != TOKENS:
        raise TeacherFileError(f"{path}: its phoneme inventory differs from this satn's")
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return LoadedTeacher(model, feats, lexicon, tuple(meta["tokens"]), meta)
