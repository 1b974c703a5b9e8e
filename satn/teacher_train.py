"""Train and evaluate the ASR teacher on any feature dataset with transcripts.

Transcripts -> phoneme targets (:mod:`satn.phonemes`); utterances are split
into a training side and a held-out side by speaker (``heldout_speakers``)
and/or by prompt (``heldout_prompts``: a fraction of the distinct normalised
transcripts, with every reading of them, so no held-out sentence is ever
trained on). Each epoch: teacher-forced cross-entropy on the training side
(plus CTC when asked), then the held-out loss and phoneme / word error rates
(SATN Eq. 13) of greedy or beam decoding. The last epoch's model is the
teacher (the held-out side never picks an epoch). No Ray or MLflow here:
callers watch through an observer.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import Tensor, nn

from satn.batching import BucketBatchSampler, Normalizer
from satn.config import _check, _one_of, check_device
from satn.devices import resolve_device
from satn.engine import seed_everything
from satn.errors import InputError
from satn.metrics import error_rate
from satn.models.dropout import use_generator
from satn.models.teacher import ASRTeacher, TeacherModelConfig
from satn.phonemes import BOUNDARY, EOS_ID, OOV_MODES, PAD_ID, TOKENS, Lexicon, OOVReport


class TeacherDataError(InputError):
    """The dataset cannot train a teacher (no transcripts, an empty side, an unknown speaker)."""


@dataclass(frozen=True)
class TeacherTrainConfig:
    """How the teacher is trained and scored (SATN 4.3: Adam, lr 1e-4)."""

    model: TeacherModelConfig = field(default_factory=TeacherModelConfig)
    epochs: int = 20
    batch_size: int = 16
    lr: float = 1e-4
    grad_clip: float = 5.0  # 0: off
    ctc_weight: float = 0.0  # > 0 needs model.ctc_head; loss = (1 - w) attention + w CTC
    seed: int = 0
    device: str = "auto"
    oov: str = "spell"  # spell | skip: words missing from the CMU dictionary
    heldout_speakers: tuple[str, ...] = ()
    heldout_prompts: float = 0.1  # fraction of distinct transcripts held out
    decode: str = "greedy"  # greedy | beam: the final evaluation
    beam_width: int = 4
    eval_decode: str = "greedy"  # per-epoch evaluation (beam is slow on a CPU)
    eval_max: int | None = None  # per-epoch: at most this many held-out utterances
    bucket_width: int = 50
    # stop after the first epoch that ends past this many seconds of training (a CPU
    # run with a fixed time budget); None: all epochs
    time_budget_s: float | None = None

    def __post_init__(self) -> None:
        _check("teacher", {
            "epochs": (self.epochs >= 1, f"must be at least 1, not {self.epochs}"),
            "batch_size": (self.batch_size >= 1, f"must be at least 1, not {self.batch_size}"),
            "lr": (self.lr > 0, f"must be > 0, not {self.lr}"),
            "grad_clip": (self.grad_clip >= 0, f"must be >= 0 (0: off), not {self.grad_clip}"),
            "ctc_weight": (0 <= self.ctc_weight <= 1 and (self.ctc_weight == 0
                                                          or self.model.ctc_head),
                           f"must be in [0, 1] and needs model.ctc_head, not {self.ctc_weight}"),
            "device": check_device(self.device),
            "oov": _one_of(self.oov, OOV_MODES),
            "heldout_prompts": (0 <= self.heldout_prompts < 1,
                                f"must be in [0, 1), not {self.heldout_prompts}"),
            "decode": _one_of(self.decode, ("greedy", "beam")),
            "eval_decode": _one_of(self.eval_decode, ("greedy", "beam")),
            "beam_width": (self.beam_width >= 1, f"must be at least 1, not {self.beam_width}"),
            "eval_max": (self.eval_max is None or self.eval_max >= 1,
                         f"must be at least 1 or none, not {self.eval_max}"),
            "bucket_width": (self.bucket_width >= 1, f"must be at least 1, not {self.bucket_width}"),
            "time_budget_s": (self.time_budget_s is None or self.time_budget_s > 0,
                              f"must be > 0 or none, not {self.time_budget_s}"),
        })


# ---------------------------------------------------------------- data


@dataclass
class Side:
    """Utterances of one side: raw features (T_i, F), targets (<eos>-terminated), words."""

    ids: list[str]
    speakers: list[str]
    arrays: list[np.ndarray]
    targets: list[tuple[int, ...]]
    words: list[tuple[str, ...]]

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, n: int | None) -> Side:
        """``n`` utterances spread evenly over the side (every k-th first), all when None."""
        if n is None or n >= len(self):
            return self
        order = sorted(range(len(self)), key=lambda i: (i % max(1, len(self) // n), i))[:n]
        return Side(*([getattr(self, f)[i] for i in order]
                      for f in ("ids", "speakers", "arrays", "targets", "words")))


@dataclass
class TeacherData:
    train: Side
    heldout: Side
    oov: OOVReport
    split: dict  # how the held-out side was chosen, and its sizes
    dropped: int  # utterances without a transcript or without a single phoneme


def split_heldout(transcripts: Sequence[str], speakers: Sequence[str], *,
                  heldout_speakers: Sequence[str] = (), heldout_prompts: float = 0.1,
                  seed: int = 0) -> np.ndarray:
    """(N,) bool, True for held-out utterances: a held-out speaker's, or a held-out prompt's.

    Prompts are the distinct normalised transcripts; ``round(heldout_prompts * n)``
    of them (at least one when the fraction is > 0) are drawn with ``seed``, and
    every utterance of a drawn prompt is held out, whoever reads it.
    """
    from satn.phonemes import normalise

    keys = [" ".join(normalise(t)) for t in transcripts]
    unknown = sorted(set(heldout_speakers) - set(speakers))
    if unknown:
        raise TeacherDataError(f"teacher.heldout_speakers {unknown} are not speakers of the "
                               f"dataset ({', '.join(sorted(set(speakers))[:10])} ...)")
    prompts = sorted(set(keys))
    k = 0 if heldout_prompts == 0 else max(1, round(heldout_prompts * len(prompts)))
    rng = np.random.default_rng(seed)
    drawn = {prompts[i] for i in rng.choice(len(prompts), size=k, replace=False)} if k else set()
    held = set(heldout_speakers)
    return np.array([s in held or p in drawn for s, p in zip(speakers, keys, strict=True)])


def prepare_teacher_data(dataset, cfg: TeacherTrainConfig) -> tuple[TeacherData, Lexicon]:
    """Targets, split and homophone preferences from a ``satn.store.FeatureDataset``."""
    meta = dataset.meta
    has_text = [isinstance(t, str) and t.strip() != "" for t in meta["transcript"]]
    rows = [i for i, ok in enumerate(has_text) if ok]
    if not rows:
        raise TeacherDataError(f"no utterance of {dataset.uri} has a transcript: the teacher "
                               f"needs a corpus with transcripts (arctic, iemocap, demo)")
    texts = [meta["transcript"][i] for i in rows]
    lexicon = Lexicon(cfg.oov)
    encoded, oov = lexicon.encode_all(texts)
    keep = [j for j, e in enumerate(encoded) if len(e.ids) > 1]  # more than <eos> alone
    dropped = len(meta) - len(keep)
    rows = [rows[j] for j in keep]
    encoded = [encoded[j] for j in keep]
    speakers = [str(meta["speaker"][i]) for i in rows]
    held = split_heldout([texts[j] for j in keep], speakers,
                         heldout_speakers=cfg.heldout_speakers,
                         heldout_prompts=cfg.heldout_prompts, seed=cfg.seed)
    arrays = dataset.arrays(rows)

    def side(mask: np.ndarray) -> Side:
        idx = np.flatnonzero(mask).tolist()
        return Side([str(meta["id"][rows[i]]) for i in idx], [speakers[i] for i in idx],
                    [arrays[i] for i in idx], [encoded[i].ids for i in idx],
                    [encoded[i].words for i in idx])

    train, heldout = side(~held), side(held)
    if not len(train) or not len(heldout):
        raise TeacherDataError(f"the split leaves {len(train)} training and {len(heldout)} "
                               f"held-out utterance(s); change teacher.heldout_speakers / "
                               f"teacher.heldout_prompts")
    counts = Counter(w for ws in train.words for w in ws)
    lexicon = Lexicon(cfg.oov, dict(counts))
    split = {"heldout_speakers": list(cfg.heldout_speakers),
             "heldout_prompts": cfg.heldout_prompts,
             "n_train": len(train), "n_heldout": len(heldout),
             "train_speakers": sorted(set(train.speakers)),
             "heldout_speakers_seen": sorted(set(heldout.speakers)),
             "n_heldout_prompts": len({" ".join(w) for w in heldout.words})}
    return TeacherData(train, heldout, oov, split, dropped), lexicon


def _batches(side: Side, batch_size: int, *, shuffle: bool, seed: int, epoch: int,
             bucket_width: int):
    sampler = BucketBatchSampler([len(a) for a in side.arrays], batch_size, shuffle=shuffle,
                                 seed=seed, bucket_width=bucket_width)
    sampler.set_epoch(epoch)
    for idx in sampler:
        yield idx, _collate([side.arrays[i] for i in idx], [side.targets[i] for i in idx])


def _collate(arrays: list[np.ndarray], targets: list[tuple[int, ...]]
             ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """-> x (B, T, F) zero-padded, lengths (B,), targets (B, U) padded with <pad>, (B,) lengths."""
    lengths = torch.tensor([len(a) for a in arrays])
    x = torch.zeros(len(arrays), int(lengths.max()), arrays[0].shape[-1])
    for i, a in enumerate(arrays):
        x[i, : len(a)] = torch.tensor(np.asarray(a, dtype=np.float32))  # store arrays: read-only
    t_len = torch.tensor([len(t) for t in targets])
    y = torch.full((len(targets), int(t_len.max())), PAD_ID, dtype=torch.long)
    for i, t in enumerate(targets):
        y[i, : len(t)] = torch.tensor(t)
    return x, lengths, y, t_len


def teacher_loss(model: ASRTeacher, x: Tensor, lengths: Tensor, y: Tensor, y_len: Tensor,
                 ctc_weight: float) -> Tensor:
    """Mean per-token cross-entropy of teacher-forced decoding (+ CTC on the encoder)."""
    out = model(x, lengths, y)
    loss = nn.functional.cross_entropy(out.logits.transpose(1, 2), y, ignore_index=PAD_ID)
    if ctc_weight > 0:
        log_probs = out.ctc_logits.log_softmax(-1).transpose(0, 1)  # (T, B, V)
        # CTC targets: the phonemes and boundaries, no <eos>; <pad> (never a target) is the blank
        ctc = nn.functional.ctc_loss(log_probs, y.masked_fill(y == EOS_ID, PAD_ID), out.lengths,
                                     y_len - 1, blank=PAD_ID, zero_infinity=True)
        loss = (1 - ctc_weight) * loss + ctc_weight * ctc
    return loss


# ---------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class Recognition:
    """Error rates of one decoding pass over a side (SATN Eq. 13)."""

    per: float  # phoneme error rate (word boundaries left out)
    wer: float
    phoneme_errors: int
    phonemes: int
    word_errors: int
    words: int
    groups: int  # decoded phoneme groups (words) looked up
    ambiguous: int  # of which shared by several dictionary words (homophones)
    unknown: int  # of which no dictionary word has
    n: int  # utterances
    decode: str
    # WER of words looked up from the *reference* phonemes: what the way back from
    # phonemes to words (homophones, spelled OOV words) costs even with perfect phonemes
    lookup_wer: float = float("nan")
    examples: tuple[tuple[str, str, str], ...] = ()  # (id, reference, hypothesis) words

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["examples"] = [list(e) for e in self.examples]
        return d


def recognise(model: ASRTeacher, side: Side, lexicon: Lexicon, *, decode: str = "greedy",
              beam_width: int = 4, batch_size: int = 16, device: torch.device | str = "cpu",
              n_examples: int = 5) -> Recognition:
    """Decode every utterance of ``side``; phoneme and word error rates against its targets."""
    model.eval()
    ref_ph, hyp_ph, ref_w, hyp_w, ids, oracle_w = [], [], [], [], [], []
    groups = ambiguous = unknown = 0
    for idx, (x, lengths, _, _) in _batches(side, batch_size, shuffle=False, seed=0, epoch=0,
                                            bucket_width=50):
        x, lengths = x.to(device), lengths.to(device)
        hyps = (model.greedy(x, lengths) if decode == "greedy"
                else model.beam(x, lengths, beam_width))
        for i, h in zip(idx, hyps, strict=True):
            ref_ph.append([p for p in lexicon.phonemes(side.targets[i]) if p != BOUNDARY])
            hyp_ph.append([p for p in lexicon.phonemes(h) if p != BOUNDARY])
            d = lexicon.decode(h)
            groups, ambiguous, unknown = (groups + d.groups, ambiguous + d.ambiguous,
                                          unknown + d.unknown)
            ref_w.append(list(side.words[i]))
            oracle_w.append(list(lexicon.decode(side.targets[i]).words))
            hyp_w.append(list(d.words))
            ids.append(side.ids[i])
    per, wer = error_rate(ref_ph, hyp_ph), error_rate(ref_w, hyp_w)
    order = sorted(range(len(ids)), key=lambda k: ids[k])[:n_examples]
    examples = tuple((ids[k], " ".join(ref_w[k]), " ".join(hyp_w[k])) for k in order)
    return Recognition(per.rate, wer.rate, per.errors, per.n, wer.errors, wer.n, groups,
                       ambiguous, unknown, len(ids), decode,
                       lookup_wer=error_rate(ref_w, oracle_w).rate, examples=examples)


@torch.no_grad()
def heldout_loss(model: ASRTeacher, side: Side, cfg: TeacherTrainConfig,
                 device: torch.device) -> float:
    """The training loss (same definition) on ``side``, in eval mode, utterance-weighted."""
    model.eval()
    total, n = 0.0, 0
    for idx, (x, lengths, y, y_len) in _batches(side, cfg.batch_size, shuffle=False, seed=0,
                                                epoch=0, bucket_width=cfg.bucket_width):
        loss = teacher_loss(model, x.to(device), lengths.to(device), y.to(device),
                            y_len.to(device), cfg.ctc_weight)
        total += float(loss) * len(idx)
        n += len(idx)
    return total / max(n, 1)


# ---------------------------------------------------------------- training


@dataclass(frozen=True)
class TeacherEpoch:
    epoch: int  # 1-based
    train_loss: float
    heldout_loss: float
    heldout: Recognition  # on at most cfg.eval_max held-out utterances
    seconds: float


@dataclass
class TeacherResult:
    model: ASRTeacher  # the last epoch's, eval mode
    lexicon: Lexicon
    data: TeacherData
    epochs: list[TeacherEpoch]
    final: Recognition  # all held-out utterances, cfg.decode
    seconds: float


class TeacherObserver(Protocol):
    def on_start(self, cfg: TeacherTrainConfig, data: TeacherData) -> None: ...

    def on_epoch(self, epoch: TeacherEpoch) -> None: ...


def train_teacher(dataset, cfg: TeacherTrainConfig,
                  observers: Sequence[TeacherObserver] = ()) -> TeacherResult:
    """Train a teacher on ``dataset`` (a ``satn.store.FeatureDataset`` with transcripts)."""
    start = time.perf_counter()
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    data, lexicon = prepare_teacher_data(dataset, cfg)
    for obs in observers:
        obs.on_start(cfg, data)
    norm = Normalizer.fit(data.train.arrays)
    dim = int(np.prod(dataset.frame_shape))
    model = ASRTeacher(dim, len(TOKENS), cfg.model)
    model.set_normalizer(norm.mean, norm.std)
    model.to(device)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    use_generator(model, gen)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    probe = data.heldout.subset(cfg.eval_max)
    history: list[TeacherEpoch] = []
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        total, n = 0.0, 0
        for idx, (x, lengths, y, y_len) in _batches(data.train, cfg.batch_size, shuffle=True,
                                                    seed=cfg.seed, epoch=epoch,
                                                    bucket_width=cfg.bucket_width):
            loss = teacher_loss(model, x.to(device), lengths.to(device), y.to(device),
                                y_len.to(device), cfg.ctc_weight)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"teacher loss is {value} at epoch {epoch}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            total += value * len(idx)
            n += len(idx)
        rec = recognise(model, probe, lexicon, decode=cfg.eval_decode, beam_width=cfg.beam_width,
                        batch_size=cfg.batch_size, device=device)
        ep = TeacherEpoch(epoch, total / n, heldout_loss(model, probe, cfg, device), rec,
                          time.perf_counter() - t0)
        history.append(ep)
        for obs in observers:
            obs.on_epoch(ep)
        if cfg.time_budget_s is not None and time.perf_counter() - start > cfg.time_budget_s:
            break
    final = recognise(model, data.heldout, lexicon, decode=cfg.decode,
                      beam_width=cfg.beam_width, batch_size=cfg.batch_size, device=device)
    use_generator(model, None)
    model.eval()
    return TeacherResult(model, lexicon, data, history, final, time.perf_counter() - start)


def teacher_report(result: TeacherResult, cfg: TeacherTrainConfig, **extra) -> dict:
    """A JSON-able account of a teacher run: split, OOV words, per-epoch and final scores."""
    from satn.config import to_dict

    return {
        "config": to_dict(cfg),
        "split": result.data.split,
        "dropped_utterances": result.data.dropped,
        "oov": result.data.oov.to_dict(),
        "epochs": [{"epoch": e.epoch, "train_loss": e.train_loss,
                    "heldout_loss": e.heldout_loss, "seconds": e.seconds,
                    "heldout": e.heldout.to_dict()} for e in result.epochs],
        "final": result.final.to_dict(),
        "seconds": result.seconds,
        **extra,
    }
