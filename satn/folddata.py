"""A feature dataset split by the folds into training, dev and test sets: the data
preparation of one configuration, before any model exists.

Each fold's sets are standardised with statistics of its own training side (or each
speaker's own, ``recipe.normalisation = speaker``); speed-perturbed copies join the
training side only; dev probes are fixed per fold. :func:`levels_for` maps a fold's
training features back to log power for gain and noise augmentation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from satn.augment import Levels
from satn.batching import Normalizer, SequenceDataset
from satn.config import ConfigError, ExperimentConfig, FeatureConfig
from satn.engine import FoldData
from satn.folds import Fold, FoldError, fold_by_name, make_folds, member_folds


@dataclass
class PreparedFold:
    fold: Fold
    data: FoldData
    normalizer: Normalizer
    # speaker -> that speaker's own statistics (recipe.normalisation = speaker), else empty
    speaker_norms: dict[str, Normalizer] = field(default_factory=dict)


def pick_probes(ids: Sequence[str], labels: Sequence[int], n: int) -> tuple[str, ...]:
    """A fixed, class-balanced set of ``n`` utterances (round-robin over classes by id)."""
    by_class: dict[int, list[str]] = {}
    for uid, y in sorted(zip(ids, labels, strict=True)):
        by_class.setdefault(y, []).append(uid)
    probes: list[str] = []
    queues = [by_class[c] for c in sorted(by_class)]
    while len(probes) < n and any(queues):
        for q in queues:
            if q and len(probes) < n:
                probes.append(q.pop(0))
    return tuple(probes)


def prepare_folds(dataset, cfg: ExperimentConfig, only: Sequence[str | int] | None = None,
                  n_probes: int = 4, perturbed: Sequence = (),
                  members: Sequence[Fold] | None = None) -> list[PreparedFold]:
    """Split ``dataset`` (a ``satn.store.FeatureDataset``) into normalised fold datasets.

    ``perturbed``: speed-perturbed copies of ``dataset`` (``satn.speed.speed_variants``);
    a copy of a training utterance joins that fold's training side, the others nothing.
    ``members``: the models' folds (default: ``cfg``'s folds and selection,
    :func:`satn.folds.member_folds`), e.g. the refits of :func:`satn.folds.refit_folds`.
    """
    from satn.speed import original_id

    meta = dataset.meta
    classes = tuple(cfg.data.classes)
    if meta["label"].isna().any():  # e.g. ARCTIC: transcripts for the ASR teacher, no emotions
        raise ConfigError(f"{meta['label'].isna().sum()} utterance(s) of this dataset have no "
                          f"emotion label: an unlabelled corpus cannot train a classifier")
    unknown = sorted(set(meta["label"]) - set(classes))
    if unknown:
        raise ConfigError(f"dataset labels {unknown} are not among data.classes {list(classes)}")
    outer = make_folds(meta, cfg.folds)
    sel = cfg.selection
    folds = (list(members) if members is not None
             else member_folds(meta, outer, sel.inner_k, sel.seeds, cfg.folds.seed))
    if only:
        picked = []
        for f in only:
            try:  # an outer fold brings all its models
                name = fold_by_name(outer, f).name
                picked += [m for m in folds if m.scored_as == name]
            except FoldError:  # one model of it (a sweep's fold worker)
                picked.append(fold_by_name(folds, f))
        # 1 and "fold1" name the same fold: train it once
        folds = list({f.name: f for f in picked}.values())
    arrays = dataset.arrays()
    speakers = meta["speaker"].tolist()
    row = {uid: i for i, uid in enumerate(meta["id"])}
    # perturbed copies by original id; a copy's label and speaker are its original's
    copies: dict[str, list[tuple[str, np.ndarray]]] = {}
    for variant in perturbed:
        for uid, a in zip(variant.meta["id"], variant.arrays(), strict=True):
            if original_id(uid) in row:
                copies.setdefault(original_id(uid), []).append((uid, a))
    by_speaker: dict[str, Normalizer] = {}
    if cfg.recipe.normalisation == "speaker":
        # a speaker's statistics from their original utterances; copies use the same
        by_speaker = speaker_normalizers(arrays, speakers)
        arrays = [by_speaker[s](a) for a, s in zip(arrays, speakers, strict=True)]
        copies = {u: [(p, by_speaker[speakers[row[u]]](a)) for p, a in c]
                  for u, c in copies.items()}
    # chunked training crops to the chunk; otherwise today's crop of long utterances
    crop = cfg.recipe.chunk_frames or cfg.train.max_frames
    label_of = {uid: classes.index(lab) for uid, lab in zip(meta["id"], meta["label"],
                                                             strict=True)}
    prepared = []
    for fold in folds:
        # statistics from the original training side only: dev and test stay unseen, and
        # speed copies stay out of them, so that dev and test (never perturbed) are
        # standardised exactly as without perturbation and a run with speeds differs from
        # one without by its training data alone
        norm = Normalizer.fit([arrays[row[u]] for u in fold.train])

        def side(ids: tuple[str, ...], train: bool, norm: Normalizer = norm,
                 seed: int = cfg.train.seed + fold.seed) -> SequenceDataset:
            return SequenceDataset(
                [arrays[row[u]] for u in ids], [label_of[u] for u in ids], list(ids),
                normalizer=norm, max_frames=crop if train else None, seed=seed)

        train = side(fold.train, True)
        extra = [c for u in fold.train for c in copies.get(u, ())]
        if extra:
            train = SequenceDataset(
                train.arrays + [a for _, a in extra],
                list(train.labels) + [label_of[original_id(p)] for p, _ in extra],
                train.ids + [p for p, _ in extra], normalizer=norm, max_frames=crop,
                seed=cfg.train.seed + fold.seed)
        probes = pick_probes(fold.dev, [label_of[u] for u in fold.dev], n_probes)
        data = FoldData(fold.name, train, side(fold.dev, False),
                        side(fold.test, False), len(classes), probes)
        prepared.append(PreparedFold(fold, data, norm, by_speaker))
    return prepared


def eval_labels(folds: Sequence[PreparedFold]) -> dict[str, int]:
    """Utterance id -> class id over the dev and test sides of ``folds``."""
    return {u: y for pf in folds for side in (pf.data.dev, pf.data.test)
            for u, y in zip(side.ids, side.labels, strict=True)}


def speaker_normalizers(arrays: Sequence[np.ndarray],
                        speakers: Sequence[str]) -> dict[str, Normalizer]:
    """Each speaker's own statistics (all of that speaker's frames, any side; features
    only, labels never enter)."""
    by_speaker: dict[str, list[int]] = {}
    for i, spk in enumerate(speakers):
        by_speaker.setdefault(spk, []).append(i)
    return {spk: Normalizer.fit([arrays[i] for i in rows]) for spk, rows in by_speaker.items()}


def speaker_normalised(arrays: Sequence[np.ndarray], speakers: Sequence[str]) -> list[np.ndarray]:
    """Each array standardised with its speaker's own statistics (:func:`speaker_normalizers`)."""
    norms = speaker_normalizers(arrays, speakers)
    return [norms[s](a) for a, s in zip(arrays, speakers, strict=True)]


def levels_for(pf: PreparedFold, cfg: ExperimentConfig, speakers: dict[str, str],
               frame_shape: tuple[int, ...], features: FeatureConfig | None = None
               ) -> Levels | None:
    """The fold's gain and noise augmentation (None when both are off).

    Every training utterance's map back to log power: the fold's statistics, composed
    with its speaker's under per-speaker normalisation (``raw = y * scale + shift``).
    ``features``: the config the dataset was made with (default: ``cfg.features``).
    """
    from satn.features import frame_shape as shape_of
    from satn.features import slaney_mel_fbanks
    from satn.speed import original_id

    r, f = cfg.recipe, features or cfg.features
    if not (r.gain_db > 0 or r.noise_snr_db is not None):
        return None
    if tuple(frame_shape) != shape_of(f):
        raise ConfigError(f"recipe.gain_db / recipe.noise_snr_db need the features' layout: "
                          f"frames of {list(frame_shape)} are not what the feature config "
                          f"gives ({list(shape_of(f))})")
    norm = pf.normalizer
    affine = {}
    for uid in pf.data.train.ids:
        spk = pf.speaker_norms.get(speakers.get(original_id(uid), ""))
        if spk is None:  # (y * std + mean)
            affine[uid] = (norm.mean, norm.std)
        else:  # ((y * std + mean) * s_spk + m_spk)
            affine[uid] = (norm.mean * spk.std + spk.mean, norm.std * spk.std)
    if len(frame_shape) == 1:  # log-mel: static | delta | delta2
        f_max = f.f_max if f.f_max is not None else f.sample_rate / 2
        profile = slaney_mel_fbanks(f.n_fft // 2 + 1, f.f_min, f_max, f.n_mels,
                                    f.sample_rate).sum(axis=0)  # a flat spectrum per band
        n_static, deltas = f.n_mels, f.deltas
    else:  # spectrogram segments: every bin is a static log power
        n_static, deltas = frame_shape[-1], 0
        profile = np.ones(n_static)
    return Levels(r.gain_db, r.noise_snr_db, n_static, deltas, f.delta_width, profile, affine,
                  cfg.train.seed)
