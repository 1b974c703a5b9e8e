"""Fold splits: pure functions of the utterance metadata.

The metadata is a DataFrame with one row per utterance and columns ``id``,
``speaker`` and optionally ``session`` (missing or empty: the speaker is the
session), ``gender`` (``"F"`` / ``"M"`` / None) and ``label`` (not used here).

Schemes (``FoldConfig.scheme``):

``loso``
    Leave one session out, sessions in sorted order (5 folds for IEMOCAP).
    The held-out session is split by speaker into dev and test, as in SATN:
    one speaker picks the epoch, the other is scored.
``speaker_kfold``
    For corpora without sessions (RAVDESS): speakers are dealt into ``k``
    gender-balanced groups; group ``i`` is test, the next ``dev_groups``
    groups (cyclically) are dev, the rest train.
``heldout_speakers``
    One fold: ``test_speakers`` test, ``dev_speakers`` dev, the rest train.
``stratified_split``
    TACN's protocol (Sec. 3.1: a random 80/20 split stratified by class):
    ``test_share`` of the utterances are test and ``dev_share`` dev, each side
    holding every class in proportion; ``splits`` independent draws from
    ``seed`` give ``fold1..foldN``, the same on every run. **It mixes speakers:**
    the same speakers (and in IEMOCAP the same dialogs) are on the training
    and the test side, so its figures are not speaker-independent and run higher
    than leave-one-session-out; use it to compare with papers that used it,
    and LOSO for claims about unseen speakers.

Every fold returned has passed :func:`check_fold`: every utterance used exactly
once and, for every scheme but ``stratified_split``, no speaker on two sides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from satn.config import FOLD_SCHEMES, FoldConfig
from satn.errors import InputError

SCHEMES = FOLD_SCHEMES  # one list, in config.py
SPEAKER_MIXING = ("stratified_split",)  # schemes that put a speaker on several sides
DEV_SPEAKER_CHOICES = ("F", "M", "first", "second", "both")


class FoldError(InputError):
    """The metadata cannot be split as asked, or a fold leaks or misses utterances."""


@dataclass(frozen=True)
class Fold:
    """One train / dev / test split of utterance ids (each side in metadata row order).

    ``group`` is the held-out session (loso) or speaker group; ``name`` is
    ``fold<i>`` (1-based), or ``fold<i>-dev<F|M|1|2>`` when ``dev_speaker="both"``
    gives two evaluations of one held-out session. ``dev_speakers`` and
    ``test_speakers`` name who is on those sides, for reports.
    """

    name: str
    group: str
    train: tuple[str, ...]
    dev: tuple[str, ...]
    test: tuple[str, ...]
    dev_speakers: tuple[str, ...] = ()
    test_speakers: tuple[str, ...] = ()
    # a member of an outer fold's ensemble (satn.config.SelectionConfig): the outer
    # fold's name ("" for a fold that is its own model) and the seed offset it trains with
    outer: str = ""
    seed: int = 0

    @property
    def scored_as(self) -> str:
        """The fold whose test figures this model's predictions count towards."""
        return self.outer or self.name

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "dev": len(self.dev), "test": len(self.test)}


# ---------------------------------------------------------------- public API


def make_folds(meta: pd.DataFrame, cfg: FoldConfig) -> list[Fold]:
    """Split ``meta`` into folds by ``cfg.scheme``; every fold is checked."""
    m = _prepare(meta)
    if cfg.scheme == "loso":
        folds = _loso(m, cfg.dev_speaker)
    elif cfg.scheme == "speaker_kfold":
        folds = _speaker_kfold(m, cfg.k, cfg.dev_groups, cfg.seed)
    elif cfg.scheme == "heldout_speakers":
        folds = [_heldout(m, cfg.test_speakers, cfg.dev_speakers)]
    elif cfg.scheme == "stratified_split":
        folds = _stratified(m, meta, cfg.test_share, cfg.dev_share, cfg.splits, cfg.seed)
    else:
        raise FoldError(f"unknown fold scheme {cfg.scheme!r}; known: {', '.join(SCHEMES)}")
    for fold in folds:
        _check(fold, m, speakers_apart=cfg.scheme not in SPEAKER_MIXING)
    return folds


def check_fold(fold: Fold, meta: pd.DataFrame, speakers_apart: bool = True) -> None:
    """Raise :class:`FoldError` unless ``fold`` is a clean split of ``meta``.

    Clean: train, dev and test are pairwise disjoint, hold no duplicates or
    unknown ids, together are every utterance of ``meta``, train and test are
    non-empty, and (with ``speakers_apart``) no speaker has utterances on two sides.
    """
    _check(fold, _prepare(meta), speakers_apart)


def _check(fold: Fold, m: pd.DataFrame, speakers_apart: bool = True) -> None:
    """:func:`check_fold` on metadata already through :func:`_prepare`."""
    sides = {"train": fold.train, "dev": fold.dev, "test": fold.test}
    for side in ("train", "test"):
        if not sides[side]:
            raise FoldError(f"{fold.name}: {side} side is empty")
    all_ids = set(m["id"])
    seen: dict[str, str] = {}
    for side, ids in sides.items():
        if len(set(ids)) != len(ids):
            dup = pd.Series(ids)[pd.Series(ids).duplicated()].unique()[:5].tolist()
            raise FoldError(f"{fold.name}: duplicate ids in {side}: {dup}")
        unknown = [i for i in ids if i not in all_ids]
        if unknown:
            raise FoldError(f"{fold.name}: {len(unknown)} id(s) in {side} not in metadata: "
                            f"{unknown[:5]}")
        both = [i for i in ids if i in seen]
        if both:
            raise FoldError(f"{fold.name}: {len(both)} id(s) in both {seen[both[0]]} and "
                            f"{side}: {both[:5]}")
        seen.update(dict.fromkeys(ids, side))
    missing = all_ids - seen.keys()
    if missing:
        raise FoldError(f"{fold.name}: {len(missing)} utterance(s) on no side: "
                        f"{sorted(missing)[:5]}")
    if not speakers_apart:
        return
    sides_of: dict[str, set[str]] = {}
    for uid, spk in zip(m["id"], m["speaker"], strict=True):
        sides_of.setdefault(spk, set()).add(seen[uid])
    leaky = sorted(spk for spk, s in sides_of.items() if len(s) > 1)
    if leaky:
        shown = "; ".join(f"{spk}: {'+'.join(sorted(sides_of[spk]))}" for spk in leaky[:5])
        raise FoldError(f"{fold.name}: {len(leaky)} speaker(s) on two sides ({shown})")


def fold_by_name(folds: Sequence[Fold], name_or_index: str | int) -> Fold:
    """The fold called ``name_or_index``, or the one at that 1-based index."""
    names = [f.name for f in folds]
    key = str(name_or_index).strip()
    if key in names:
        return folds[names.index(key)]
    if key.isdigit():
        i = int(key)
        if 1 <= i <= len(folds):
            return folds[i - 1]
    raise FoldError(f"no fold {name_or_index!r}; available: {', '.join(names)} "
                    f"(or an index 1..{len(folds)})")


def member_folds(meta: pd.DataFrame, folds: Sequence[Fold], inner_k: int = 0,
                 seeds: int = 1, seed: int = 0) -> list[Fold]:
    """The models that score each outer fold (``SelectionConfig``).

    ``inner_k >= 2``: the outer fold's train and dev speakers are dealt (by
    ``seed``, gender-balanced) into ``inner_k`` groups; member ``<outer>-in<j>``
    holds group ``j`` out as its dev side, trains on the other groups, and has the
    outer test side. ``seeds > 1``: every model is repeated as ``...-s<i>`` with
    seed offset ``i``. With neither, the folds come back as they are. Every
    member has passed :func:`check_fold`.
    """
    if inner_k == 0 and seeds == 1:
        return list(folds)
    m = _prepare(meta)
    genders = _speaker_genders(m)
    out = []
    for fold in folds:
        if inner_k:
            if not fold.test_speakers:
                raise FoldError(f"selection.inner_k needs folds held out by speaker; fold "
                                f"{fold.name} mixes speakers (folds.scheme "
                                f"{' / '.join(SPEAKER_MIXING)}): use selection.inner_k=0")
            pool = sorted(set(m.loc[m["id"].isin(fold.train + fold.dev), "speaker"]))
            if len(pool) < inner_k:
                raise FoldError(f"selection.inner_k={inner_k} needs as many training speakers; "
                                f"fold {fold.name} has {len(pool)}")
            inner = [_split(m, f"{fold.name}-in{j + 1}", fold.group, group, fold.test_speakers)
                     for j, group in enumerate(_deal(pool, genders, inner_k, seed))]
            inner = [replace(f, outer=fold.name) for f in inner]
        else:
            inner = [replace(fold, outer=fold.name)]
        for f in inner:
            for i in range(seeds):
                member = f if seeds == 1 else replace(f, name=f"{f.name}-s{i + 1}", seed=i)
                _check(member, m)
                out.append(member)
    return out


def refit_folds(meta: pd.DataFrame, folds: Sequence[Fold]) -> list[Fold]:
    """One model per outer fold trained on all of its training speakers (``satn refit``).

    Member ``<outer>-refit`` trains on the outer fold's train and dev sides together (the
    speakers its inner folds were dealt from), has no dev side, and the outer test side.
    Every member has passed :func:`check_fold`.
    """
    m = _prepare(meta)
    out = []
    for fold in folds:
        pool = set(fold.train) | set(fold.dev)
        member = replace(fold, name=f"{fold.name}-refit", outer=fold.name,
                         train=_ids(m, m["id"].isin(pool)), dev=(), dev_speakers=())
        _check(member, m)
        out.append(member)
    return out


# ---------------------------------------------------------------- metadata


def _prepare(meta: pd.DataFrame) -> pd.DataFrame:
    """Columns id, speaker, session, gender as clean strings (gender "F"/"M"/None)."""
    for col in ("id", "speaker"):
        if col not in meta.columns:
            raise FoldError(f"metadata has no {col!r} column (columns: {list(meta.columns)})")
    if len(meta) == 0:
        raise FoldError("metadata has no utterances")
    if meta["speaker"].isna().any():
        bad = meta.loc[meta["speaker"].isna(), "id"].head(5).tolist()
        raise FoldError(f"utterance(s) without a speaker: {bad}")
    meta = meta.reset_index(drop=True)  # a duplicated index must not misalign columns
    m = pd.DataFrame({"id": meta["id"].astype(str), "speaker": meta["speaker"].astype(str)})
    if "session" in meta.columns:
        # A manifest without sessions may leave the column empty: the speaker is the group.
        session = meta["session"].where(meta["session"].notna() & (meta["session"] != ""))
        m["session"] = session.fillna(m["speaker"]).astype(str)
    else:
        m["session"] = m["speaker"]
    m["gender"] = meta["gender"].map(_gender) if "gender" in meta.columns else None
    dup = m["id"][m["id"].duplicated()]
    if len(dup):
        raise FoldError(f"{len(dup)} duplicate utterance id(s): {dup.unique()[:5].tolist()}")
    return m


def _gender(value: object) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    g = str(value).strip().upper()[:1]  # accepts "F", "female", "M", "Male"
    return g if g in ("F", "M") else None


def _speaker_genders(m: pd.DataFrame) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for spk, g in m.groupby("speaker")["gender"]:
        known = set(g.dropna())
        if len(known) > 1:
            raise FoldError(f"speaker {spk} has more than one gender: {sorted(known)}")
        out[spk] = known.pop() if known else None
    return out


def _ids(m: pd.DataFrame, mask: pd.Series) -> tuple[str, ...]:
    return tuple(m.loc[mask, "id"])


def _split(m: pd.DataFrame, name: str, group: str, dev: Sequence[str],
           test: Sequence[str]) -> Fold:
    """Dev and test speakers given; everyone else trains."""
    in_dev = m["speaker"].isin(dev)
    in_test = m["speaker"].isin(test)
    return Fold(name=name, group=group, train=_ids(m, ~in_dev & ~in_test), dev=_ids(m, in_dev),
                test=_ids(m, in_test), dev_speakers=tuple(sorted(dev)),
                test_speakers=tuple(sorted(test)))


# ---------------------------------------------------------------- schemes


def _loso(m: pd.DataFrame, dev_speaker: str) -> list[Fold]:
    if dev_speaker not in DEV_SPEAKER_CHOICES:
        raise FoldError(f"dev_speaker must be one of {DEV_SPEAKER_CHOICES}, got {dev_speaker!r}")
    sessions_of = m.groupby("speaker")["session"].unique()
    shared = sessions_of[sessions_of.map(len) > 1]
    if len(shared):
        spk, ses = next(iter(shared.items()))
        raise FoldError(f"speaker {spk} appears in sessions {sorted(ses)}: leaving one session "
                        "out would leak the speaker; use scheme speaker_kfold")
    genders = _speaker_genders(m)
    folds = []
    for i, session in enumerate(sorted(m["session"].unique()), start=1):
        speakers = sorted(m.loc[m["session"] == session, "speaker"].unique())
        if len(speakers) < 2:
            raise FoldError(f"session {session} has one speaker ({speakers[0]}): it cannot be "
                            "split into dev and test; for corpora where session == speaker "
                            "use scheme speaker_kfold")
        if dev_speaker == "both":
            first, second = _halves(speakers)
            tags = _both_tags(first, second, genders)
            folds.append(_split(m, f"fold{i}-dev{tags[0]}", session, first, second))
            folds.append(_split(m, f"fold{i}-dev{tags[1]}", session, second, first))
        else:
            dev = _pick_dev(session, speakers, dev_speaker, genders)
            test = [s for s in speakers if s not in dev]
            folds.append(_split(m, f"fold{i}", session, dev, test))
    return folds


def _halves(speakers: list[str]) -> tuple[list[str], list[str]]:
    """Sorted speakers -> (first n//2, the rest): the smaller half is dev when n is odd."""
    h = len(speakers) // 2
    return speakers[:h], speakers[h:]


def _pick_dev(session: str, speakers: list[str], how: str,
              genders: dict[str, str | None]) -> list[str]:
    """Dev speakers of a held-out session; n//2 of them, so two speakers give one each."""
    h = len(speakers) // 2
    if how == "first":
        return speakers[:h]
    if how == "second":
        return speakers[-h:]
    # "F" / "M": speakers of that gender first, then by id; both genders must be present
    # so that the choice means something.
    present = {genders[s] for s in speakers}
    if None in present or present != {"F", "M"}:
        shown = ", ".join(f"{s} ({genders[s] or '?'})" for s in speakers)
        raise FoldError(f"session {session}: dev_speaker={how!r} needs speakers of both known "
                        f"genders, got {shown}; use dev_speaker 'first' or 'second'")
    ordered = sorted(speakers, key=lambda s: (genders[s] != how, s))
    return ordered[:h]


def _both_tags(first: list[str], second: list[str],
               genders: dict[str, str | None]) -> tuple[str, str]:
    """Name suffixes: the dev gender when each half is one distinct gender, else 1 / 2."""
    g1 = {genders[s] for s in first}
    g2 = {genders[s] for s in second}
    if len(g1) == len(g2) == 1 and g1 != g2 and None not in g1 | g2:
        return next(iter(g1)), next(iter(g2))
    return "1", "2"


def _speaker_kfold(m: pd.DataFrame, k: int, dev_groups: int, seed: int) -> list[Fold]:
    speakers = sorted(m["speaker"].unique())
    if k < 2 or k > len(speakers):
        raise FoldError(f"speaker_kfold needs 2 <= k <= number of speakers ({len(speakers)}), "
                        f"got k={k}")
    if not 1 <= dev_groups <= k - 2:
        raise FoldError(f"speaker_kfold needs 1 <= dev_groups <= k - 2 (so that some group "
                        f"trains), got dev_groups={dev_groups} with k={k}")
    groups = _deal(speakers, _speaker_genders(m), k, seed)
    folds = []
    for i in range(k):
        dev = [s for j in range(1, dev_groups + 1) for s in groups[(i + j) % k]]
        folds.append(_split(m, f"fold{i + 1}", f"group{i + 1}", dev, groups[i]))
    return folds


def _deal(speakers: list[str], genders: dict[str, str | None], k: int,
          seed: int) -> list[list[str]]:
    """Speakers -> k groups, gender-balanced and of sizes differing by at most one.

    Each gender (F, M, unknown) is shuffled by ``seed`` and dealt round-robin,
    the deal continuing across genders, so every group gets floor or ceil of
    each gender's share and of the total.
    """
    rng = np.random.default_rng(seed)
    groups: list[list[str]] = [[] for _ in range(k)]
    turn = 0
    for g in ("F", "M", None):
        same = [s for s in speakers if genders[s] == g]
        for j in rng.permutation(len(same)):
            groups[turn % k].append(same[j])
            turn += 1
    return [sorted(g) for g in groups]


def _heldout(m: pd.DataFrame, test: Sequence[str], dev: Sequence[str]) -> Fold:
    known = set(m["speaker"])
    for side, spk in (("test_speakers", test), ("dev_speakers", dev)):
        if not spk:
            raise FoldError(f"heldout_speakers needs {side}")
        unknown = sorted(set(spk) - known)
        if unknown:
            raise FoldError(f"{side}: unknown speaker(s) {unknown}; known: {sorted(known)}")
    overlap = sorted(set(test) & set(dev))
    if overlap:
        raise FoldError(f"speaker(s) {overlap} are in both test_speakers and dev_speakers")
    return _split(m, "fold1", "+".join(sorted(test)), list(dev), list(test))


def _stratified(m: pd.DataFrame, meta: pd.DataFrame, test_share: float, dev_share: float,
                splits: int, seed: int) -> list[Fold]:
    """``splits`` seeded class-stratified train / dev / test splits (speakers mixed)."""
    from sklearn.model_selection import StratifiedShuffleSplit

    if "label" not in meta.columns:
        raise FoldError("stratified_split needs a 'label' column in the metadata")
    labels = meta.reset_index(drop=True)["label"].astype(str).to_numpy()
    counts = pd.Series(labels).value_counts()
    if counts.min() < 3:
        raise FoldError(f"stratified_split needs at least 3 utterances per class (train, dev, "
                        f"test); class {counts.idxmin()!r} has {counts.min()}")
    ids = m["id"].to_numpy()
    outer = StratifiedShuffleSplit(splits, test_size=test_share, random_state=seed)
    folds = []
    for i, (rest, test) in enumerate(outer.split(ids, labels), start=1):
        # dev from the non-test side, stratified again; its own stream per split
        inner = StratifiedShuffleSplit(1, test_size=dev_share / (1 - test_share),
                                       random_state=seed + 1000 * i)
        train, dev = next(inner.split(rest, labels[rest]))
        order = {uid: j for j, uid in enumerate(ids)}  # keep metadata row order on each side

        def side(rows: np.ndarray, order: dict = order) -> tuple[str, ...]:
            return tuple(sorted(ids[rows], key=order.__getitem__))

        folds.append(Fold(name=f"fold{i}", group=f"split{i}", train=side(rest[train]),
                          dev=side(rest[dev]), test=side(test)))
    return folds
