"""The variants of TACN's Table 1: ``deep_<seq>`` and ``fusion_<seq>`` for seven sequence models.

Each is one builder over shared blocks: a segment front end (``segments.py``)
and a sequence encoder, pooled over valid segments (``model.attention.pooling``)
into the classifier. The sequence models: ``rnn``, ``gru`` and ``lstm`` (one
direction), ``bigru`` and ``blstm`` (both), sized by ``model.rnn`` (its ``cell``
and ``bidirectional`` are fixed by the name); ``tcn`` (``model.tcn``); ``tacn``
(``model.tacn``).
"""

from __future__ import annotations

from collections.abc import Callable

from satn.config import ConfigError, ModelConfig
from satn.models.classifier import PoolReadout, SERModel
from satn.models.cnn import SegmentCNN
from satn.models.recurrent import RecurrentEncoder
from satn.models.registry import register
from satn.models.segments import DeepFront, FusionFront, SegmentSequenceEncoder
from satn.models.tacn import TACN
from satn.models.tcn import TCN
from satn.models.vqvae import VQVAE, ArtifactError, build_vqvae, read_artifact

# name -> (cell, bidirectional)
RECURRENT = {"rnn": ("rnn", False), "gru": ("gru", False), "bigru": ("gru", True),
             "lstm": ("lstm", False), "blstm": ("lstm", True)}
SEQUENCES = (*RECURRENT, "tcn", "tacn")
FRONTS = ("deep", "fusion")


def _segment_shape(variant: str, frame_shape: tuple[int, ...]) -> tuple[int, int]:
    if len(frame_shape) != 2:
        raise ConfigError(f"{variant} reads spectrogram segments (frames of shape (S, F)); got "
                          f"frames of shape {frame_shape} (use "
                          f"features.kind=spectrogram_segments)")
    return (int(frame_shape[0]), int(frame_shape[1]))


def sequence_encoder(kind: str, cfg: ModelConfig, input_dim: int):
    """The sequence model ``kind`` over (B, T, input_dim), from its family's settings."""
    if kind in RECURRENT:
        cell, bidirectional = RECURRENT[kind]
        r = cfg.rnn
        return RecurrentEncoder(input_dim, cell, r.hidden, r.layers, bidirectional, cfg.dropout)
    if kind == "tcn":
        t = cfg.tcn
        return TCN(input_dim, t.channels, t.dilations, t.kernel_size, cfg.dropout, t.causal,
                   t.convs_per_block)
    if kind == "tacn":
        a = cfg.tacn
        return TACN(input_dim, a.channels, a.layers, a.kernel_size, a.heads, cfg.dropout)
    raise ConfigError(f"unknown sequence model {kind!r}; known: {', '.join(SEQUENCES)}")


def pretrained_vqvae(cfg: ModelConfig, shape: tuple[int, int]) -> VQVAE:
    """The VQ-VAE of ``model.vqvae``: from its checkpoint when one is named, else new."""
    v = cfg.vqvae
    model = build_vqvae(v, shape)
    if not v.checkpoint:
        return model
    try:
        state, meta = read_artifact(v.checkpoint)
    except ArtifactError as e:
        raise ConfigError(f"model.vqvae.checkpoint: {e}") from e
    saved = meta.get("vqvae", {})
    differ = [f"{k}={saved.get(k)!r} (config {val!r})" for k, val in v.sizes().items()
              if saved.get(k) != val]
    if tuple(meta.get("segment_shape", ())) != shape:
        differ.append(f"segment shape {meta.get('segment_shape')} (data {list(shape)})")
    if differ:
        raise ConfigError(f"model.vqvae.checkpoint {v.checkpoint} was built with "
                          f"{'; '.join(differ)}: set model.vqvae.* to match")
    model.load_state_dict(state)
    return model


def _build(front: str, seq: str) -> Callable[[ModelConfig, tuple[int, ...], int], SERModel]:
    def build(cfg: ModelConfig, frame_shape: tuple[int, ...], n_classes: int) -> SERModel:
        shape = _segment_shape(cfg.variant, frame_shape)
        c = cfg.cnn
        cnn = SegmentCNN(shape, c.channels, c.kernel_size, c.out_dim, cfg.dropout)
        if front == "deep":
            head = DeepFront(cnn)
        else:
            v = cfg.vqvae
            head = FusionFront(cnn, pretrained_vqvae(cfg, shape), cfg.fusion.dim, v.finetune,
                               v.loss_weight)
        encoder = SegmentSequenceEncoder(head, sequence_encoder(seq, cfg, head.output_dim))
        return SERModel(encoder, PoolReadout(cfg.attention.pooling), encoder.output_dim,
                        n_classes, cfg.dropout)

    sizes = {"tcn": "TCN", "tacn": "TACN"}.get(seq, "recurrent network")
    fused = "R_f (VQ-VAE latent R_l fused with R_d)" if front == "fusion" else "R_d"
    build.__doc__ = f"TACN Table 1: {fused} per segment, then a {seq} {sizes}, pooled."
    return build


def _families(front: str, seq: str) -> tuple[str, ...]:
    own = "rnn" if seq in RECURRENT else seq
    return ("cnn", *(("vqvae", "fusion") if front == "fusion" else ()), own, "attention")


for _front in FRONTS:
    for _seq in SEQUENCES:
        register(f"{_front}_{_seq}", families=_families(_front, _seq))(_build(_front, _seq))

VARIANTS = tuple(f"{f}_{s}" for f in FRONTS for s in SEQUENCES)
__all__ = ["FRONTS", "SEQUENCES", "VARIANTS", "pretrained_vqvae", "sequence_encoder"]
