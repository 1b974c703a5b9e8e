"""Configuration: one frozen dataclass per concern.

YAML files in ``experiments/`` load into :class:`ExperimentConfig`; search
spaces and the CLI change it through dotted overrides
(``{"model.attention.heads": 4}``);
:meth:`ExperimentConfig.flat` gives the flat dict that MLflow and Ray Tune log.
Values that Optuna cannot hold (lists such as dilation schedules) travel as
strings (``"1,2,4,8,16"``) and are parsed back here, in one place.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from satn.errors import InputError


class ConfigError(InputError):
    """A configuration value is missing, unknown or of the wrong kind."""


CORPORA = ("demo", "iemocap", "ravdess", "manifest", "arctic")
PROTOCOLS = ("satn", "full")
FEATURE_KINDS = ("logmel", "spectrogram_segments")
# frame-level descriptors a log-mel frame can carry after its bands (``features.lld``),
# by name -> how many: openSMILE's eGeMAPSv02 low-level descriptors (F0, jitter,
# shimmer, HNR, formants, loudness, spectral balance: what log-mel bands hold only
# implicitly, and what separates sad from neutral or calm from neutral); ComParE_2016's
# 65 (F0, voicing, jitter, shimmer, HNR, energy, auditory bands, spectral shape, MFCCs:
# the frames the strongest classical baseline's functionals summarise)
LLD_SETS = {"none": 0, "egemaps": 25, "compare": 65}
# openSMILE's name of each set satn reads (frame descriptors here, functionals in
# satn.baselines)
OPENSMILE_SETS = {"egemaps": "eGeMAPSv02", "compare": "ComParE_2016"}
FOLD_SCHEMES = ("loso", "speaker_kfold", "heldout_speakers", "stratified_split")
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def _check(section: str, rules: dict[str, tuple[bool, str]]) -> None:
    """Raise one ConfigError naming every ``section.key`` whose rule fails."""
    bad = [f"{section}.{key} {why}" for key, (ok, why) in rules.items() if not ok]
    if bad:
        raise ConfigError("; ".join(bad))


def _one_of(value: Any, allowed: tuple[str, ...]) -> tuple[bool, str]:
    return value in allowed, f"must be one of {', '.join(allowed)}, not {value!r}"


def check_device(name: str) -> tuple[bool, str]:
    return bool(_DEVICE.fullmatch(name)), f"must be auto, cpu, cuda or cuda:N, not {name!r}"


# The four classes of the SATN protocol, in the order used for logits,
# confusion matrices and reports.
DEFAULT_CLASSES = ("neu", "hap", "sad", "ang")


@dataclass(frozen=True)
class DataConfig:
    """Which corpus, and how its labels become classes."""

    corpus: str = "demo"  # demo | iemocap | ravdess | manifest | arctic (unlabelled)
    root: str = ""  # corpus root (demo: where it is generated); manifest: the CSV/TSV file
    protocol: str = "satn"  # iemocap: satn (improvised, 4 classes) | full (impro + scripted)
    classes: tuple[str, ...] = DEFAULT_CLASSES
    # raw label -> class; labels mapped to nothing (absent) are left out
    label_map: Mapping[str, str] = field(default_factory=lambda: {"exc": "hap"})
    demo_per_class: int = 8  # demo corpus: utterances per speaker and class
    demo_seed: int = 0

    def __post_init__(self) -> None:
        _check("data", {
            "corpus": _one_of(self.corpus, CORPORA),
            "protocol": _one_of(self.protocol, PROTOCOLS),
            "classes": (len(self.classes) >= 2 and len(set(self.classes)) == len(self.classes),
                        f"must name two or more distinct classes, not {list(self.classes)}"),
            "demo_per_class": (self.demo_per_class >= 1, "must be at least 1"),
        })


@dataclass(frozen=True)
class FeatureConfig:
    """Waveform -> feature matrix. Changing any field changes the cache key."""

    kind: str = "logmel"  # logmel | spectrogram_segments
    sample_rate: int = 16000
    # log-mel (SATN): 40 bands, 25 ms window, 10 ms hop, + delta + delta-delta
    n_mels: int = 40
    win_ms: float = 25.0
    hop_ms: float = 10.0
    n_fft: int = 512
    f_min: float = 0.0
    f_max: float | None = None  # None: sample_rate / 2
    log_floor: float = 1e-10  # natural log of max(power, floor)
    deltas: int = 2  # 0: static only, 1: + delta, 2: + delta-delta
    # regression deltas over this many frames (torchaudio.functional.compute_deltas);
    # equals librosa.feature.delta(width=5, mode="nearest").
    delta_width: int = 5
    # spectrogram segments (TACN's CNN front end, Satt et al.): 256-point FFT,
    # 8 ms hop -> 129 bins; 32 frames = 264 ms per segment.
    seg_n_fft: int = 256
    seg_hop: int = 128
    seg_frames: int = 32
    seg_stride: int = 32  # frames between segment starts
    # log-mel only: frame-level descriptors appended after static | delta | delta2
    # (LLD_SETS; satn.lld): "none" | "egemaps" | "compare"
    lld: str = "none"

    def __post_init__(self) -> None:
        nyquist = self.sample_rate / 2
        f_max = nyquist if self.f_max is None else self.f_max
        _check("features", {
            "kind": _one_of(self.kind, FEATURE_KINDS),
            "sample_rate": (self.sample_rate >= 1000, f"must be at least 1000 Hz, not {self.sample_rate}"),
            "n_mels": (self.n_mels >= 1, f"must be at least 1, not {self.n_mels}"),
            "hop_ms": (self.hop_length >= 1, f"must give a hop of 1 sample or more, not {self.hop_ms} ms"),
            "win_ms": (1 <= self.win_length <= self.n_fft,
                       f"must give a window of 1 to n_fft={self.n_fft} samples, not "
                       f"{self.win_length} ({self.win_ms} ms)"),
            "f_max": (0 < f_max <= nyquist, f"must be in (0, {nyquist:g}] Hz (Nyquist), not {f_max}"),
            "f_min": (0 <= self.f_min < f_max, f"must be in [0, f_max={f_max:g}) Hz, not {self.f_min}"),
            "log_floor": (self.log_floor > 0, f"must be > 0, not {self.log_floor}"),
            "deltas": (self.deltas in (0, 1, 2), f"must be 0, 1 or 2, not {self.deltas}"),
            # an even width gives the same deltas as the odd width below it
            "delta_width": (self.delta_width >= 3 and self.delta_width % 2 == 1,
                            f"must be odd and at least 3, not {self.delta_width}"),
            "seg_n_fft": (self.seg_n_fft >= 2, f"must be at least 2, not {self.seg_n_fft}"),
            "seg_hop": (self.seg_hop >= 1, f"must be at least 1, not {self.seg_hop}"),
            "seg_frames": (self.seg_frames >= 1, f"must be at least 1, not {self.seg_frames}"),
            "seg_stride": (self.seg_stride >= 1, f"must be at least 1, not {self.seg_stride}"),
            "lld": (_one_of(self.lld, tuple(LLD_SETS)) if self.lld not in LLD_SETS else
                    (self.lld == "none" or self.kind == "logmel",
                     f"descriptors go with log-mel frames, not features.kind={self.kind}")),
        })

    @property
    def win_length(self) -> int:
        return int(round(self.sample_rate * self.win_ms / 1000))

    @property
    def hop_length(self) -> int:
        return int(round(self.sample_rate * self.hop_ms / 1000))

    @property
    def banded(self) -> int:
        """Log-mel values per frame that are mel bands: static | delta | delta2 (what a
        frequency mask or a gain acts on); the rest of a frame are ``lld`` descriptors."""
        return self.n_mels * (1 + self.deltas)

    @property
    def dim(self) -> int:
        """Values per frame (logmel: the bands, then ``lld`` descriptors) or per segment
        row (segments: bins)."""
        if self.kind == "logmel":
            return self.banded + LLD_SETS[self.lld]
        return self.seg_n_fft // 2 + 1


@dataclass(frozen=True)
class FoldConfig:
    """How utterances are split into train / dev / test."""

    scheme: str = "loso"  # loso | speaker_kfold | heldout_speakers | stratified_split
    # loso: which speaker of the held-out session is dev; the other is test.
    # "F" / "M" pick by gender, "first" / "second" by sorted speaker id,
    # "both" gives two evaluations per fold (each speaker dev once).
    dev_speaker: str = "M"
    k: int = 5  # speaker_kfold: number of speaker groups
    dev_groups: int = 1  # speaker_kfold: groups (of the training side) used for dev
    test_speakers: tuple[str, ...] = ()  # heldout_speakers
    dev_speakers: tuple[str, ...] = ()  # heldout_speakers
    # stratified_split (TACN's protocol; mixes speakers across sides, unlike the others):
    # test_share of the utterances are test and dev_share are dev, each stratified by class;
    # splits > 1 draws that many independent splits (fold1..foldN) from the seed
    test_share: float = 0.2
    dev_share: float = 0.1
    splits: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        _check("folds", {
            "test_share": (0 < self.test_share < 1, f"must be in (0, 1), not {self.test_share}"),
            "dev_share": (0 < self.dev_share < 1 - self.test_share,
                          f"must be in (0, 1 - folds.test_share), not {self.dev_share}"),
            "splits": (self.splits >= 1, f"must be at least 1, not {self.splits}"),
            "scheme": _one_of(self.scheme, FOLD_SCHEMES),
            "k": (self.k >= 2, f"must be at least 2, not {self.k}"),
            "dev_groups": (0 <= self.dev_groups < self.k,
                           f"must be in [0, k={self.k}), not {self.dev_groups}"),
        })


OPTIMIZERS = ("adam", "adamw", "adadelta", "sgd")
SCHEDULES = ("none", "cosine", "onecycle")
PRECISIONS = ("fp32", "bf16")
RNN_CELLS = ("rnn", "gru", "lstm")
ATTENTION_FORMS = ("paper", "multihead")
POOLINGS = ("mean", "max")
TRANSFER_KINDS = ("activation", "attention", "both")


@dataclass(frozen=True)
class TCNSettings:
    """The dilated temporal convolutional encoder (``model.tcn.*``)."""

    channels: int = 64
    kernel_size: int = 3
    dilations: tuple[int, ...] = (1, 2, 4, 8, 16)
    causal: bool = True
    # 2: locuslab's residual block of two convolutions; 1: SATN's one-convolution layers
    convs_per_block: int = 2

    def __post_init__(self) -> None:
        _check("model.tcn", {
            "channels": (self.channels >= 1, f"must be at least 1, not {self.channels}"),
            "kernel_size": (self.kernel_size >= 1, f"must be at least 1, not {self.kernel_size}"),
            "dilations": (bool(self.dilations) and min(self.dilations) >= 1,
                          f"must be one or more positive integers, not {list(self.dilations)}"),
            "convs_per_block": (self.convs_per_block >= 1,
                                f"must be at least 1, not {self.convs_per_block}"),
        })


@dataclass(frozen=True)
class RecurrentSettings:
    """A recurrent encoder (``model.rnn.*``): SATN's BLSTM is one bidirectional LSTM of 128."""

    cell: str = "lstm"  # rnn | gru | lstm
    hidden: int = 128  # units per direction
    layers: int = 1
    bidirectional: bool = True

    def __post_init__(self) -> None:
        _check("model.rnn", {
            "cell": _one_of(self.cell, RNN_CELLS),
            "hidden": (self.hidden >= 1, f"must be at least 1, not {self.hidden}"),
            "layers": (self.layers >= 1, f"must be at least 1, not {self.layers}"),
        })

    @property
    def output_dim(self) -> int:
        return self.hidden * (2 if self.bidirectional else 1)


@dataclass(frozen=True)
class AttentionSettings:
    """The temporal readout (``model.attention.*``).

    Self-attention comes in two forms: ``paper`` (SATN Eqs. 7-8: one head,
    d_k = d, no output projection) and ``multihead`` (``heads`` heads, output
    projection, residual + LayerNorm). Either is pooled over valid frames by
    ``pooling``, which the paper leaves unsaid. Soft attention (Eqs. 1-3)
    scores frames through tanh(W h + b) of width ``energy_dim`` (None: the
    encoder's width).
    """

    form: str = "multihead"  # paper | multihead (self-attention variants)
    heads: int = 4  # multihead form only; the paper form has one
    pooling: str = "mean"  # mean | max, over valid frames (self-attention variants)
    energy_dim: int | None = None  # soft attention: width of the tanh energy layer

    def __post_init__(self) -> None:
        _check("model.attention", {
            "form": _one_of(self.form, ATTENTION_FORMS),
            "heads": (self.heads >= 1, f"must be at least 1, not {self.heads}"),
            "pooling": _one_of(self.pooling, POOLINGS),
            "energy_dim": (self.energy_dim is None or self.energy_dim >= 1,
                           f"must be at least 1 or none, not {self.energy_dim}"),
        })


@dataclass(frozen=True)
class CNNSettings:
    """The segment CNN of the deep representation R_d (``model.cnn.*``; TACN Sec. 3.1)."""

    channels: tuple[int, ...] = (32, 64, 64)  # one conv-ReLU-maxpool block per entry
    kernel_size: int = 3
    out_dim: int = 128  # size of one segment's vector

    def __post_init__(self) -> None:
        _check("model.cnn", {
            "channels": (bool(self.channels) and min(self.channels) >= 1,
                         f"must be one or more positive integers, not {list(self.channels)}"),
            "kernel_size": (self.kernel_size >= 1 and self.kernel_size % 2 == 1,
                            f"must be odd and at least 1, not {self.kernel_size}"),
            "out_dim": (self.out_dim >= 1, f"must be at least 1, not {self.out_dim}"),
        })


@dataclass(frozen=True)
class TACNSettings:
    """TACN's tap-attention TCN (``model.tacn.*``; Eqs. 3-7): the paper's n = 8, k = 3, h = 8."""

    layers: int = 8  # dilations 1, 2, 4, ..., 2**(layers-1)
    kernel_size: int = 3  # taps per layer
    heads: int = 8
    channels: int = 64

    def __post_init__(self) -> None:
        _check("model.tacn", {
            "layers": (self.layers >= 1, f"must be at least 1, not {self.layers}"),
            "kernel_size": (self.kernel_size >= 1, f"must be at least 1, not {self.kernel_size}"),
            "heads": (self.heads >= 1 and self.channels % self.heads == 0,
                      f"must divide model.tacn.channels={self.channels}, not {self.heads}"),
            "channels": (self.channels >= 1, f"must be at least 1, not {self.channels}"),
        })


@dataclass(frozen=True)
class VQVAESettings:
    """The VQ-VAE of the latent representation R_l (``model.vqvae.*``; TACN Sec. 2.1).

    ``checkpoint`` names an artifact written by ``satn pretrain-vqvae``; its sizes
    must equal these. With ``finetune`` (the paper's choice) the VQ-VAE trains
    with the classifier and its losses join the loss by name, each times
    ``loss_weight``; without it, it is frozen.
    """

    hidden: int = 64
    code_dim: int = 16
    codebook_size: int = 256
    downsample: int = 2  # stride-2 convolutions: a 32 x 129 segment -> an 8 x 33 grid of codes
    beta: float = 0.25  # commitment weight
    ema: bool = True  # codebook by EMA (with dead-code restarts); false: by its loss
    decay: float = 0.99
    dead_code_threshold: float = 2.0  # EMA usage under which a code is re-seeded (0: never)
    kmeans_init: bool = True
    checkpoint: str = ""  # a pretrained artifact (.pt); empty: random initialisation
    finetune: bool = True
    loss_weight: float = 1.0

    def __post_init__(self) -> None:
        _check("model.vqvae", {
            "hidden": (self.hidden >= 1, f"must be at least 1, not {self.hidden}"),
            "code_dim": (self.code_dim >= 1, f"must be at least 1, not {self.code_dim}"),
            "codebook_size": (self.codebook_size >= 2, f"must be at least 2, not "
                              f"{self.codebook_size}"),
            "downsample": (1 <= self.downsample <= 4, f"must be 1 to 4, not {self.downsample}"),
            "beta": (self.beta >= 0, f"must be >= 0, not {self.beta}"),
            "decay": (0 < self.decay < 1, f"must be in (0, 1), not {self.decay}"),
            "dead_code_threshold": (self.dead_code_threshold >= 0,
                                    f"must be >= 0, not {self.dead_code_threshold}"),
            "loss_weight": (self.loss_weight >= 0, f"must be >= 0, not {self.loss_weight}"),
        })

    def sizes(self) -> dict[str, Any]:
        """The settings that fix the architecture (an artifact must match them)."""
        return {k: getattr(self, k) for k in ("hidden", "code_dim", "codebook_size",
                                              "downsample", "ema")}


@dataclass(frozen=True)
class FusionSettings:
    """The fusion layer (``model.fusion.*``): R_f = ReLU(W [R_l ; R_d] + b)."""

    dim: int = 128

    def __post_init__(self) -> None:
        _check("model.fusion", {"dim": (self.dim >= 1, f"must be at least 1, not {self.dim}")})


@dataclass(frozen=True)
class ModelConfig:
    """A model variant from the registry, and the settings of each block family.

    A variant's builder reads only the families it names (``satn variants``
    lists them); the others are carried along unused.
    """

    variant: str = "tcn_self"
    dropout: float = 0.2
    tcn: TCNSettings = field(default_factory=TCNSettings)
    rnn: RecurrentSettings = field(default_factory=RecurrentSettings)
    attention: AttentionSettings = field(default_factory=AttentionSettings)
    cnn: CNNSettings = field(default_factory=CNNSettings)
    tacn: TACNSettings = field(default_factory=TACNSettings)
    vqvae: VQVAESettings = field(default_factory=VQVAESettings)
    fusion: FusionSettings = field(default_factory=FusionSettings)

    def __post_init__(self) -> None:
        _check("model", {
            "dropout": (0.0 <= self.dropout < 1.0, f"must be in [0, 1), not {self.dropout}"),
        })


def is_attention_map(name: str) -> bool:
    """A map named ``...attention`` holds attention weights; any other, activations."""
    return "attention" in name.split(".")[-1]


@dataclass(frozen=True)
class TransferConfig:
    """Attention transfer from a frozen ASR teacher (SATN Eqs. 10-12), for ``*_at`` variants.

    ``pairs`` match student maps to teacher maps by name, ``student:teacher``
    (e.g. ``encoder.layer4:encoder.layer4``, ``attention:encoder.attention``).
    """

    teacher: str = ""  # path of a saved teacher (the CLI also resolves an MLflow run id)
    weight: float = 1.0  # W_AT in L_T = L_SER + W_AT * L_AT
    p: float = 2.0  # activation map F(A) = sum_c |A_c|^p
    kind: str = "activation"  # activation | attention | both: which pairs count
    pairs: tuple[str, ...] = (
        "encoder.layer0:encoder.layer0", "encoder.layer1:encoder.layer1",
        "encoder.layer2:encoder.layer2", "encoder.layer3:encoder.layer3",
        "encoder.layer4:encoder.layer4", "attention:encoder.attention")
    cache: bool = True  # keep each training utterance's teacher maps after their first use

    def __post_init__(self) -> None:
        bad = [p for p in self.pairs if p.count(":") != 1 or "" in p.split(":")]
        _check("transfer", {
            "weight": (self.weight >= 0, f"must be >= 0, not {self.weight}"),
            "p": (self.p > 0, f"must be > 0, not {self.p}"),
            "kind": _one_of(self.kind, TRANSFER_KINDS),
            "pairs": (bool(self.pairs) and not bad,
                      f"must be one or more student:teacher map names, not {bad or '[]'}"),
        })

    def chosen_pairs(self) -> list[tuple[str, str]]:
        """The (student, teacher) map names that ``kind`` selects."""
        out = []
        for pair in self.pairs:
            s, t = pair.split(":")
            if self.kind == "both" or (self.kind == "attention") == is_attention_map(s):
                out.append((s, t))
        return out


@dataclass(frozen=True)
class TrainConfig:
    """The engine's optimisation settings.

    GPU levers, all off by default (figures: benchmarks/README.md):
    ``precision: bf16`` runs forward and loss of training and evaluation under
    ``torch.autocast`` in bfloat16 on the trainer's device type (weights, optimiser
    and logged attention maps stay float32; no loss scaling: bf16 has float32's
    range). ``compile`` trains through ``torch.compile`` of the model, with every
    training batch padded to the training crop (``max_frames``) (torch 2.14 specialises 1-D convolution
    backward on the time axis, so each new length would compile again, for tens of
    seconds; padding costs compute instead); checkpoints hold the plain model's keys;
    dropout then draws from torch's RNG, seeded by ``seed``, not from the fold's own
    generator, which would break the graph at every dropout: a run still repeats
    with its folds in turn or each in its own worker process, not as threads).
    ``resident`` puts a fold's normalised features on the device once and cuts
    every batch there (no per-batch host copy or normalisation; on CPU the same
    batches and results, for a normalised copy of the fold's features in memory).
    """

    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.0
    grad_clip: float = 5.0
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    class_weighting: str = "balanced"  # none | balanced (inverse class frequency)
    max_frames: int | None = 750  # random crop of long training utterances (eval: full)
    patience: int | None = None  # stop a fold after this many epochs without dev UA gain
    bucket_width: int = 50  # frames per length bucket
    # GPU runs bit for bit: deterministic kernels, no cuDNN autotuning, no TF32 (slower;
    # benchmarks/README.md). CPU runs are deterministic either way.
    deterministic: bool = False
    # evaluation batches: at most batch_size items and batch x longest**2 (frames) within
    # this, so the (B, H, T, T) attention scores of long turns fit (16e6: 32 items of
    # 700 frames, or one of 4000)
    eval_cost: int = 16_000_000
    # logged attention maps of utterances longer than this are pooled down to it
    probe_frames: int = 1000
    optimizer: str = "adam"  # adam | adamw | adadelta | sgd
    momentum: float = 0.9  # sgd only
    schedule: str = "none"  # none | cosine | onecycle: learning rate over the run, per step
    warmup_epochs: float = 0.0  # linear warm-up from 0 before the schedule (onecycle: its rise)
    precision: str = "fp32"  # fp32 | bf16 (autocast of forward + loss)
    compile: bool = False  # torch.compile the training forward
    resident: bool = False  # a fold's features on the device for the whole fold

    def __post_init__(self) -> None:
        _check("train", {
            "precision": _one_of(self.precision, PRECISIONS),
            "compile": (isinstance(self.compile, bool), f"must be true or false, not "
                                                        f"{self.compile!r}"),
            "resident": (isinstance(self.resident, bool), f"must be true or false, not "
                                                          f"{self.resident!r}"),
            "optimizer": _one_of(self.optimizer, OPTIMIZERS),
            "momentum": (0 <= self.momentum < 1, f"must be in [0, 1), not {self.momentum}"),
            "schedule": _one_of(self.schedule, SCHEDULES),
            "warmup_epochs": (0 <= self.warmup_epochs < self.epochs,
                              f"must be in [0, train.epochs={self.epochs}), not "
                              f"{self.warmup_epochs}"),
            "epochs": (self.epochs >= 1, f"must be at least 1, not {self.epochs}"),
            "batch_size": (self.batch_size >= 1, f"must be at least 1, not {self.batch_size}"),
            "lr": (self.lr > 0, f"must be > 0, not {self.lr}"),
            "weight_decay": (self.weight_decay >= 0, f"must be >= 0, not {self.weight_decay}"),
            "grad_clip": (self.grad_clip >= 0, f"must be >= 0 (0: off), not {self.grad_clip}"),
            "device": check_device(self.device),
            "class_weighting": _one_of(self.class_weighting, ("balanced", "none")),
            "max_frames": (self.max_frames is None or self.max_frames >= 1,
                           f"must be at least 1 or none, not {self.max_frames}"),
            "patience": (self.patience is None or self.patience >= 1,
                         f"must be at least 1 or none, not {self.patience}"),
            "bucket_width": (self.bucket_width >= 1, f"must be at least 1, not {self.bucket_width}"),
            "eval_cost": (self.eval_cost >= 1, f"must be at least 1, not {self.eval_cost}"),
            "probe_frames": (self.probe_frames >= 1,
                             f"must be at least 1, not {self.probe_frames}"),
        })


NORMALISATIONS = ("global", "speaker")


@dataclass(frozen=True)
class RecipeConfig:
    """Training-recipe options beside the optimiser; every one is off by default.

    SpecAugment masks (training side only; masked values become 0, the normalised
    mean): ``time_masks`` masks of up to ``time_mask_frames`` frames and
    ``freq_masks`` masks of up to ``freq_mask_bands`` mel bands (the same bands in
    static, delta and delta-delta), inside each utterance's own frames.
    ``mixup_alpha`` > 0 mixes pairs of training utterances with a Beta(alpha, alpha)
    weight (and their losses with the same weight). ``label_smoothing``: as
    ``torch.nn.CrossEntropyLoss``. ``normalisation``: ``global`` standardises with the
    training side's statistics; ``speaker`` first standardises each speaker's
    features with that speaker's own statistics (features only, never labels; test
    speakers included, as a deployment that has some speech of each speaker would).
    ``chunk_frames``: train on random chunks of that many frames and score an
    utterance by the mean logits of its chunks (starts every ``chunk_hop`` frames,
    default half a chunk, the last chunk ending at the last frame).

    Speed, gain and noise (training side only; dev and test are never altered):
    ``speeds``: speed-perturbation factors (e.g. ``[0.9, 1.1]``; 1.0 is the original and
    adds nothing; empty: off). Each training utterance enters once more per factor, its
    waveform resampled to play f times as fast (tempo and pitch, as Kaldi's speed
    perturbation), with the same label and speaker and the id ``<id>@sp<f>``; the
    features of each factor are a cached dataset of their own (``satn.speed``).
    Normalisation statistics stay those of the original training utterances.
    ``gain_db`` > 0: a gain ~ U(-gain_db, +gain_db) dB per training utterance and epoch
    (a constant on the static log bands; deltas unchanged). ``noise_snr_db``: white
    noise at an SNR ~ U(noise_snr_db, noise_snr_db + 10) dB per training utterance and
    epoch, added to the band powers in the feature domain (``satn.augment.Levels`` says
    what that approximates); none: off. Both draw from the run's seed and the epoch.
    """

    time_masks: int = 0
    time_mask_frames: int = 20
    freq_masks: int = 0
    freq_mask_bands: int = 8
    mixup_alpha: float = 0.0
    label_smoothing: float = 0.0
    normalisation: str = "global"
    chunk_frames: int | None = None
    chunk_hop: int | None = None
    speeds: tuple[float, ...] = ()
    gain_db: float = 0.0
    noise_snr_db: float | None = None

    def __post_init__(self) -> None:
        _check("recipe", {
            "speeds": (all(0.5 <= f <= 2.0 for f in self.speeds)
                       and len(set(self.speeds)) == len(self.speeds),
                       f"must be distinct factors in [0.5, 2] (e.g. [0.9, 1.1]), not "
                       f"{list(self.speeds)}"),
            "gain_db": (0 <= self.gain_db <= 40, f"must be in [0, 40] dB (0: off), not "
                                                 f"{self.gain_db}"),
            "noise_snr_db": (self.noise_snr_db is None or -20 <= self.noise_snr_db <= 80,
                             f"must be in [-20, 80] dB or none (off), not {self.noise_snr_db}"),
            "time_masks": (self.time_masks >= 0, f"must be >= 0, not {self.time_masks}"),
            "time_mask_frames": (self.time_mask_frames >= 1,
                                 f"must be at least 1, not {self.time_mask_frames}"),
            "freq_masks": (self.freq_masks >= 0, f"must be >= 0, not {self.freq_masks}"),
            "freq_mask_bands": (self.freq_mask_bands >= 1,
                                f"must be at least 1, not {self.freq_mask_bands}"),
            "mixup_alpha": (self.mixup_alpha >= 0, f"must be >= 0 (0: off), not {self.mixup_alpha}"),
            "label_smoothing": (0 <= self.label_smoothing < 1,
                                f"must be in [0, 1), not {self.label_smoothing}"),
            "normalisation": _one_of(self.normalisation, NORMALISATIONS),
            "chunk_frames": (self.chunk_frames is None or self.chunk_frames >= 1,
                             f"must be at least 1 or none, not {self.chunk_frames}"),
            "chunk_hop": (self.chunk_hop is None or self.chunk_hop >= 1,
                          f"must be at least 1 or none, not {self.chunk_hop}"),
        })

    @property
    def hop(self) -> int | None:
        """Frames between evaluation chunk starts (None: chunking off)."""
        if self.chunk_frames is None:
            return None
        return self.chunk_hop or max(1, self.chunk_frames // 2)


@dataclass(frozen=True)
class SelectionConfig:
    """How a configuration's epochs are chosen and its test predictions made.

    ``inner_k = 0`` (the default): each fold's model keeps its best epoch on the
    fold's dev side, as a sweep has always done. ``inner_k >= 2``: cross-validation
    over the training speakers. Each outer fold's train and dev speakers are pooled
    and dealt into ``inner_k`` gender-balanced groups. One model per group trains on
    the others and keeps its best epoch on that group. The selection score (a
    sweep's ``dev_ua``) is then measured on every training speaker, not one small
    dev group. The outer test is scored by the ensemble of the inner models (mean
    logits). It costs ``inner_k`` models per outer fold; for corpora with few
    speakers (RAVDESS), where one dev group is too small to choose by.

    ``seeds > 1``: each model is trained with that many seeds (``train.seed``,
    ``+1``, ...) and the seeds' logits are averaged.
    """

    inner_k: int = 0
    seeds: int = 1

    def __post_init__(self) -> None:
        _check("selection", {
            "inner_k": (self.inner_k == 0 or self.inner_k >= 2,
                        f"must be 0 (off) or at least 2, not {self.inner_k}"),
            "seeds": (self.seeds >= 1, f"must be at least 1, not {self.seeds}"),
        })

    @property
    def ensembles(self) -> bool:
        """Whether an outer fold is scored by more than one model."""
        return self.inner_k > 0 or self.seeds > 1


@dataclass(frozen=True)
class PretrainConfig:
    """``satn pretrain-vqvae``: steps over random segments of unlabeled speech."""

    steps: int = 2000
    batch_size: int = 64  # segments per step
    lr: float = 1e-3
    heldout: float = 0.1  # share of utterances kept out for the held-out figures
    eval_every: int = 200  # steps between held-out evaluations
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        _check("pretrain", {
            "steps": (self.steps >= 1, f"must be at least 1, not {self.steps}"),
            "batch_size": (self.batch_size >= 1, f"must be at least 1, not {self.batch_size}"),
            "lr": (self.lr > 0, f"must be > 0, not {self.lr}"),
            "heldout": (0 < self.heldout < 1, f"must be in (0, 1), not {self.heldout}"),
            "eval_every": (self.eval_every >= 1, f"must be at least 1, not {self.eval_every}"),
            "device": check_device(self.device),
        })


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything one trial needs: data, features, folds, model, training, transfer, recipe,
    selection."""

    data: DataConfig = field(default_factory=DataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    folds: FoldConfig = field(default_factory=FoldConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ExperimentConfig:
        return from_dict(cls, d)

    @classmethod
    def from_yaml(cls, path: str | Path) -> ExperimentConfig:
        return _from_file(cls, path)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def flat(self) -> dict[str, Any]:
        """Dotted keys -> scalars (tuples as comma strings), for MLflow and Ray."""
        return flatten(self.to_dict())

    def override(self, overrides: Mapping[str, Any]) -> ExperimentConfig:
        """A new config with dotted keys replaced, e.g. ``{"model.attention.heads": 8}``."""
        return override(self, overrides)


# ---------------------------------------------------------------- helpers


def _from_file(cls: type, path: str | Path) -> Any:
    data = load_yaml(path) or {}
    try:
        return from_dict(cls, data)
    except ConfigError as e:  # say which file
        raise ConfigError(f"{path}: {e}") from e


def load_yaml(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e


def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return list(obj)
    return obj


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and not (prefix == "data." and k == "label_map"):
            out.update(flatten(v, key + "."))
        elif isinstance(v, Mapping):
            out[key] = ",".join(f"{a}:{b}" for a, b in v.items())
        elif isinstance(v, (list, tuple)):
            out[key] = ",".join(str(x) for x in v)
        else:
            out[key] = v
    return out


def from_dict(cls: type, d: Mapping[str, Any], where: str = "") -> Any:
    """Build dataclass ``cls`` from a plain mapping, checking keys and types."""
    if not isinstance(d, Mapping):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {d!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ConfigError(
            f"{where or cls.__name__}: unknown key(s) {sorted(unknown)}; known: {sorted(names)}"
        )
    kwargs = {k: coerce(v, hints[k], f"{where}{k}") for k, v in d.items()}
    return cls(**kwargs)


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML / Optuna / CLI value to the field type ``tp``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where + ".")
    if origin in (Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return coerce(value, inner[0], where)
    if origin is tuple:
        if isinstance(value, str):  # "1,2,4" as Optuna and MLflow hold it; "[a, b]" as typed
            value = [v.strip() for v in value.strip().removeprefix("[").removesuffix("]")
                     .split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            value = [value]
        return tuple(coerce(v, args[0], where) for v in value)
    if origin in (Mapping, dict) or tp is Mapping:
        if isinstance(value, str):  # "a:b,c:d" as flattened for MLflow
            value = dict(p.split(":", 1) for p in value.split(",") if p)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {str(k): str(v) for k, v in value.items()}
    try:
        if tp is bool:
            if isinstance(value, str):
                if value.lower() in ("true", "1", "yes"):
                    return True
                if value.lower() in ("false", "0", "no"):
                    return False
                raise ValueError(value)
            return bool(value)
        if tp is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if tp is float:
            return float(value)
        if tp is str:
            return str(value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: cannot read {value!r} as {tp.__name__}") from e
    return value


def override(cfg: Any, overrides: Mapping[str, Any]) -> Any:
    """Replace dotted-key fields of nested frozen dataclasses, with type coercion."""
    nested: dict[str, dict[str, Any]] = {}
    direct: dict[str, Any] = {}
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            direct[key] = value
    names = {f.name for f in dataclasses.fields(cfg)}
    hints = typing.get_type_hints(type(cfg))
    changes: dict[str, Any] = {}
    for key, value in direct.items():
        if key not in names:
            raise ConfigError(f"unknown config key {key!r} in {type(cfg).__name__}")
        changes[key] = coerce(value, hints[key], key)
    for head, sub in nested.items():
        if head not in names or not dataclasses.is_dataclass(getattr(cfg, head)):
            raise ConfigError(f"unknown config section {head!r} in {type(cfg).__name__}")
        changes[head] = override(getattr(cfg, head), sub)
    return dataclasses.replace(cfg, **changes)


def short_hash(payload: Any, n: int = 12) -> str:
    """Stable hex digest of a JSON-able payload (dataclasses allowed)."""
    import hashlib
    import json

    text = json.dumps(to_dict(payload), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:n]


# ---------------------------------------------------------------- runtime (ray_config.yaml)


RAY_AUTH_MODES = ("token", "disabled")


@dataclass(frozen=True)
class RayConfig:
    address: str = "local"  # local: start Ray in-process; auto / ray://host:10001: a cluster
    num_cpus: int | None = None  # local only: CPUs Ray may use (None: all)
    num_gpus: int | None = None  # local only
    node_ip: str = "127.0.0.1"  # local only: every Ray service binds to this loopback address
    # Ray's token authentication (RAY_AUTH_MODE). token: every Ray RPC and HTTP entry
    # point needs the shared secret; a local sweep generates one (0600) in
    # ~/.config/satn/ray_auth_token, a cluster reads the token its nodes were started with.
    auth: str = "token"
    token_path: str | None = None  # None: local ~/.config/satn/ray_auth_token; cluster: Ray's

    def __post_init__(self) -> None:
        _check("ray", {
            "auth": _one_of(self.auth, RAY_AUTH_MODES),
            # a local sweep is nobody else's business: refuse to bind Ray elsewhere
            "node_ip": (self.address != "local" or _is_loopback(self.node_ip),
                        f"must be a loopback address (127.0.0.1, ::1) for a local Ray, not "
                        f"{self.node_ip!r}; use ray.address to join a cluster"),
            "num_cpus": (self.num_cpus is None or self.num_cpus >= 1,
                         f"must be at least 1 or null, not {self.num_cpus}"),
            "num_gpus": (self.num_gpus is None or self.num_gpus >= 0,
                         f"must be 0 or more, or null, not {self.num_gpus}"),
        })


def _is_loopback(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Resources:
    cpu: float = 1.0
    gpu: float = 0.0

    def __post_init__(self) -> None:
        _check("resources.per_fold", {
            "cpu": (self.cpu > 0, f"must be > 0 (a fraction packs folds on a core), not {self.cpu}"),
            # Ray takes GPU fractions below one, and whole GPUs above
            "gpu": (self.gpu >= 0 and (self.gpu <= 1 or float(self.gpu).is_integer()),
                    f"must be a fraction in [0, 1] or a whole number of GPUs, not {self.gpu}"),
        })

    @property
    def threads(self) -> int:
        """torch threads of a fold: the whole CPUs Ray gave it (at least one)."""
        return max(1, int(self.cpu))


FOLD_PLACEMENTS = ("threads", "workers")


@dataclass(frozen=True)
class ResourceConfig:
    per_fold: Resources = field(default_factory=Resources)
    # threads: a trial trains its folds in its own process, folds_in_parallel at a time,
    #   on the trial's devices (a trial asks Ray for per_fold x folds_in_parallel).
    # workers: every fold is a Ray actor in its own bundle of the trial's placement group
    #   (per_fold each), so Ray decides its GPU (0.2 packs five folds on one; 1 spreads them).
    fold_placement: str = "threads"
    folds_in_parallel: int = 1
    driver_cpu: float = 0.2  # workers: what the trial's own process holds while folds train

    def __post_init__(self) -> None:
        _check("resources", {
            "fold_placement": _one_of(self.fold_placement, FOLD_PLACEMENTS),
            "folds_in_parallel": (self.folds_in_parallel >= 1,
                                  f"must be at least 1, not {self.folds_in_parallel}"),
            "driver_cpu": (self.driver_cpu > 0, f"must be > 0, not {self.driver_cpu}"),
        })

    @property
    def per_trial(self) -> dict[str, float]:
        n = self.folds_in_parallel
        return {"cpu": self.per_fold.cpu * n, "gpu": self.per_fold.gpu * n}

    def bundles(self, n_folds: int) -> list[dict[str, float]]:
        """The trial's placement group: its own process, then one bundle per fold."""
        if self.fold_placement == "threads":
            groups = [{"CPU": self.per_trial["cpu"], "GPU": self.per_trial["gpu"]}]
        else:
            fold = {"CPU": self.per_fold.cpu, "GPU": self.per_fold.gpu}
            groups = [{"CPU": self.driver_cpu}] + [dict(fold) for _ in range(n_folds)]
        return [{k: v for k, v in b.items() if v} for b in groups]  # Ray takes no zero amounts


@dataclass(frozen=True)
class MlflowConfig:
    tracking_uri: str | None = None  # None: sqlite:///<cwd>/mlflow.db (MLFLOW_TRACKING_URI wins)
    experiment: str = "satn"


@dataclass(frozen=True)
class RuntimeConfig:
    """Where a sweep runs and writes: ``ray_config.yaml``. Relative paths are
    resolved against the working directory; on a cluster they should name shared
    storage that every node mounts at the same path (or a URI)."""

    ray: RayConfig = field(default_factory=RayConfig)
    resources: ResourceConfig = field(default_factory=ResourceConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    storage_path: str = "satn-runs/ray"
    features_dir: str = "satn-data/features"
    data_dir: str = "satn-data"  # the demo corpus is generated here
    # None: Ray's resources decide for random/grid search; for Optuna, about a quarter of the
    # trials at a time (at least 2), so that TPE proposes from results (satn/sweep.py)
    max_concurrent_trials: int | None = None
    max_failures: int = 2  # a trial whose worker dies is retried this often, from its checkpoint

    @classmethod
    def from_yaml(cls, path: str | Path) -> RuntimeConfig:
        return _from_file(cls, path)
