"""Fold splits: counts, no speaker leakage, every utterance once, configured dev/test speakers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from satn.config import ConfigError, FoldConfig
from satn.folds import Fold, FoldError, check_fold, fold_by_name, make_folds

LABELS = ("neu", "hap", "sad", "ang")


def iemocap_meta(per_speaker: int = 30, seed: int = 0) -> pd.DataFrame:
    """5 sessions x 2 speakers (Ses0iF, Ses0iM), rows in a shuffled order."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(1, 6):
        for g in ("F", "M"):
            spk = f"Ses0{s}{g}"
            for j in range(per_speaker):
                rows.append({"id": f"{spk}_impro01_{g}{j:03d}", "speaker": spk,
                             "session": f"Ses0{s}", "gender": g,
                             "label": LABELS[rng.integers(4)]})
    return pd.DataFrame(rows).sample(frac=1, random_state=seed).reset_index(drop=True)


def ravdess_meta(per_actor: int = 12) -> pd.DataFrame:
    """16 actors, session == speaker; odd actors male, even female (as in RAVDESS)."""
    rows = []
    for a in range(1, 17):
        spk = f"Actor_{a:02d}"
        for j in range(per_actor):
            rows.append({"id": f"03-01-01-01-01-{j:02d}-{a:02d}", "speaker": spk,
                         "session": spk, "gender": "M" if a % 2 else "F",
                         "label": LABELS[j % 4]})
    return pd.DataFrame(rows)


def speakers_of(meta: pd.DataFrame, ids: tuple[str, ...]) -> set[str]:
    speaker = dict(zip(meta["id"], meta["speaker"], strict=True))
    return {speaker[i] for i in ids}


def assert_clean(fold: Fold, meta: pd.DataFrame) -> None:
    """Independent of check_fold: exact cover, disjoint sides, no speaker on two sides."""
    sides = [fold.train, fold.dev, fold.test]
    assert sum(len(s) for s in sides) == len(meta)
    assert set().union(*map(set, sides)) == set(meta["id"])
    spk = [speakers_of(meta, s) if s else set() for s in sides]
    assert not (spk[0] & spk[1]) and not (spk[0] & spk[2]) and not (spk[1] & spk[2])


# ---------------------------------------------------------------- loso


@pytest.mark.parametrize("dev, dev_letter", [("M", "M"), ("F", "F"), ("first", "F"),
                                             ("second", "M")])
def test_loso_holds_out_each_session_split_by_speaker(dev: str, dev_letter: str) -> None:
    meta = iemocap_meta()
    folds = make_folds(meta, FoldConfig(scheme="loso", dev_speaker=dev))
    assert [f.name for f in folds] == [f"fold{i}" for i in range(1, 6)]
    assert [f.group for f in folds] == [f"Ses0{i}" for i in range(1, 6)]
    test_letter = "M" if dev_letter == "F" else "F"
    for i, f in enumerate(folds, start=1):
        assert_clean(f, meta)
        assert speakers_of(meta, f.dev) == {f"Ses0{i}{dev_letter}"}
        assert speakers_of(meta, f.test) == {f"Ses0{i}{test_letter}"}
        assert f.dev_speakers == (f"Ses0{i}{dev_letter}",)
        assert not any(u.startswith(f"Ses0{i}") for u in f.train)
        assert len(f.train) == 8 * 30 and len(f.dev) == len(f.test) == 30


def test_loso_both_gives_two_folds_per_session_with_dev_and_test_swapped() -> None:
    meta = iemocap_meta()
    folds = make_folds(meta, FoldConfig(scheme="loso", dev_speaker="both"))
    assert len(folds) == 10
    assert [f.name for f in folds[:2]] == ["fold1-devF", "fold1-devM"]
    for a, b in zip(folds[::2], folds[1::2], strict=True):
        assert a.group == b.group
        assert a.dev == b.test and a.test == b.dev and a.train == b.train
        assert_clean(a, meta)
        assert_clean(b, meta)
    assert len({f.name for f in folds}) == 10


def test_loso_is_deterministic_and_independent_of_row_order() -> None:
    meta = iemocap_meta(seed=0)
    cfg = FoldConfig(scheme="loso")
    assert make_folds(meta, cfg) == make_folds(meta.copy(), cfg)
    shuffled = make_folds(iemocap_meta(seed=1), cfg)
    for a, b in zip(make_folds(meta, cfg), shuffled, strict=True):
        assert (a.name, a.group, set(a.train), set(a.dev), set(a.test)) == \
            (b.name, b.group, set(b.train), set(b.dev), set(b.test))


def test_loso_sessions_with_more_than_two_speakers_split_in_halves() -> None:
    rows = [{"id": f"{s}-{spk}-{j}", "speaker": f"{s}-{spk}", "session": s, "gender": g}
            for s in ("A", "B") for spk, g in (("p1", "F"), ("p2", "M"), ("p3", "F"))
            for j in range(4)]
    meta = pd.DataFrame(rows)
    first = make_folds(meta, FoldConfig(scheme="loso", dev_speaker="first"))
    assert first[0].dev_speakers == ("A-p1",) and first[0].test_speakers == ("A-p2", "A-p3")
    second = make_folds(meta, FoldConfig(scheme="loso", dev_speaker="second"))
    assert second[0].dev_speakers == ("A-p3",)
    female = make_folds(meta, FoldConfig(scheme="loso", dev_speaker="F"))
    assert female[1].dev_speakers == ("B-p1",)
    male = make_folds(meta, FoldConfig(scheme="loso", dev_speaker="M"))
    assert male[1].dev_speakers == ("B-p2",)
    both = make_folds(meta, FoldConfig(scheme="loso", dev_speaker="both"))
    assert [f.name for f in both] == ["fold1-dev1", "fold1-dev2", "fold2-dev1", "fold2-dev2"]
    for f in first + second + female + male + both:
        assert_clean(f, meta)


def test_loso_errors_are_clear() -> None:
    with pytest.raises(FoldError, match="one speaker.*speaker_kfold"):
        make_folds(ravdess_meta(), FoldConfig(scheme="loso"))
    with pytest.raises(FoldError, match="dev_speaker"):
        make_folds(iemocap_meta(), FoldConfig(scheme="loso", dev_speaker="male"))
    unknown_gender = iemocap_meta().assign(gender=None)
    with pytest.raises(FoldError, match="genders"):
        make_folds(unknown_gender, FoldConfig(scheme="loso", dev_speaker="F"))
    # ... while first/second need no gender
    assert len(make_folds(unknown_gender, FoldConfig(scheme="loso", dev_speaker="first"))) == 5
    moved = iemocap_meta()
    moved.loc[0, "session"] = "Ses09"  # one speaker now in two sessions
    with pytest.raises(FoldError, match="appears in sessions"):
        make_folds(moved, FoldConfig(scheme="loso"))


# ---------------------------------------------------------------- speaker k-fold


def test_speaker_kfold_tests_every_speaker_once_with_next_group_as_dev() -> None:
    meta = ravdess_meta()
    folds = make_folds(meta, FoldConfig(scheme="speaker_kfold", k=4, dev_groups=1, seed=3))
    assert len(folds) == 4
    tested = [s for f in folds for s in f.test_speakers]
    assert sorted(tested) == sorted(meta["speaker"].unique())
    gender = meta.groupby("speaker")["gender"].first()
    for i, f in enumerate(folds):
        assert_clean(f, meta)
        assert f.dev_speakers == folds[(i + 1) % 4].test_speakers
        assert sorted(gender[list(f.test_speakers)]) == ["F", "F", "M", "M"]  # balanced
        assert len(f.train) == 8 * 12


def test_speaker_kfold_groups_are_balanced_when_k_does_not_divide() -> None:
    meta = ravdess_meta()
    gender = meta.groupby("speaker")["gender"].first()
    for seed in range(5):
        folds = make_folds(meta, FoldConfig(scheme="speaker_kfold", k=5, dev_groups=2,
                                            seed=seed))
        sizes = sorted(len(f.test_speakers) for f in folds)
        assert sizes == [3, 3, 3, 3, 4]
        for f in folds:
            assert len(f.dev_speakers) in (6, 7)
            n_f = int((gender[list(f.test_speakers)] == "F").sum())
            assert n_f in (1, 2)  # 8 F over 5 groups: floor or ceil
            assert_clean(f, meta)


def test_speaker_kfold_is_deterministic_by_seed() -> None:
    meta = ravdess_meta()

    def groups(seed: int) -> list[tuple[str, ...]]:
        folds = make_folds(meta, FoldConfig(scheme="speaker_kfold", k=4, seed=seed))
        return [f.test_speakers for f in folds]

    assert groups(0) == groups(0)
    assert any(groups(s) != groups(0) for s in range(1, 6))


def test_speaker_kfold_errors() -> None:
    meta = ravdess_meta()
    with pytest.raises(FoldError, match="k="):
        make_folds(meta, FoldConfig(scheme="speaker_kfold", k=17))
    with pytest.raises(FoldError, match="dev_groups"):
        make_folds(meta, FoldConfig(scheme="speaker_kfold", k=3, dev_groups=2))


# ---------------------------------------------------------------- held-out speakers


def test_heldout_speakers_one_fold() -> None:
    meta = ravdess_meta()
    cfg = FoldConfig(scheme="heldout_speakers", test_speakers=("Actor_01", "Actor_02"),
                     dev_speakers=("Actor_03",))
    (fold,) = make_folds(meta, cfg)
    assert_clean(fold, meta)
    assert speakers_of(meta, fold.test) == {"Actor_01", "Actor_02"}
    assert speakers_of(meta, fold.dev) == {"Actor_03"}
    assert len(fold.train) == 13 * 12


def test_heldout_speakers_errors() -> None:
    meta = ravdess_meta()
    with pytest.raises(FoldError, match="unknown speaker.*Actor_99"):
        make_folds(meta, FoldConfig(scheme="heldout_speakers", test_speakers=("Actor_99",),
                                    dev_speakers=("Actor_01",)))
    with pytest.raises(FoldError, match="both"):
        make_folds(meta, FoldConfig(scheme="heldout_speakers", test_speakers=("Actor_01",),
                                    dev_speakers=("Actor_01",)))
    with pytest.raises(FoldError, match="needs test_speakers"):
        make_folds(meta, FoldConfig(scheme="heldout_speakers", dev_speakers=("Actor_01",)))


# ---------------------------------------------------------------- metadata, checks, lookup


def test_metadata_without_session_or_with_gender_words() -> None:
    meta = iemocap_meta().drop(columns="session")
    meta["gender"] = meta["gender"].map({"F": "female", "M": "Male"})
    folds = make_folds(meta, FoldConfig(scheme="speaker_kfold", k=5))
    assert all(len(f.test_speakers) == 2 for f in folds)
    gender = meta.groupby("speaker")["gender"].first()
    assert all(sorted(gender[list(f.test_speakers)].str[0].str.upper()) == ["F", "M"]
               for f in folds)
    empty_session = iemocap_meta().assign(session="")
    with pytest.raises(FoldError, match="one speaker"):  # empty session -> the speaker
        make_folds(empty_session, FoldConfig(scheme="loso"))


def test_bad_metadata_and_scheme() -> None:
    meta = iemocap_meta()
    with pytest.raises(ConfigError, match="folds.scheme must be one of"):
        make_folds(meta, FoldConfig(scheme="random"))
    with pytest.raises(FoldError, match="duplicate"):
        make_folds(pd.concat([meta, meta.head(1)]), FoldConfig())
    with pytest.raises(FoldError, match="speaker"):
        make_folds(meta.drop(columns="speaker"), FoldConfig())
    with pytest.raises(FoldError, match="no utterances"):
        make_folds(meta.head(0), FoldConfig())


def test_check_fold_catches_leaks_and_gaps() -> None:
    meta = iemocap_meta()
    good = make_folds(meta, FoldConfig())[0]
    check_fold(good, meta)
    leak = dataclasses.replace(good, train=good.train + good.test[:1], test=good.test[1:])
    with pytest.raises(FoldError, match="speaker"):
        check_fold(leak, meta)
    with pytest.raises(FoldError, match="no side"):
        check_fold(dataclasses.replace(good, train=good.train[1:]), meta)
    with pytest.raises(FoldError, match="both"):
        check_fold(dataclasses.replace(good, dev=good.dev + good.test[:1]), meta)
    with pytest.raises(FoldError, match="duplicate"):
        check_fold(dataclasses.replace(good, train=good.train + good.train[:1]), meta)
    with pytest.raises(FoldError, match="not in metadata"):
        check_fold(dataclasses.replace(good, test=good.test + ("nope",)), meta)
    with pytest.raises(FoldError, match="empty"):
        check_fold(dataclasses.replace(good, train=(), dev=good.dev + good.train), meta)


def test_fold_by_name() -> None:
    folds = make_folds(iemocap_meta(), FoldConfig(dev_speaker="both"))
    assert fold_by_name(folds, "fold2-devM") is folds[3]
    assert fold_by_name(folds, 1) is folds[0]
    assert fold_by_name(folds, "10") is folds[9]
    with pytest.raises(FoldError, match="fold1-devF.*fold5-devM"):
        fold_by_name(folds, "fold6")
    with pytest.raises(FoldError):
        fold_by_name(folds, 0)


# ---------------------------------------------------------------- property test


def random_meta(rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for s in range(int(rng.integers(2, 6))):
        for p in range(int(rng.integers(2, 5))):
            g = rng.choice(["F", "M", None])
            for j in range(int(rng.integers(1, 8))):
                rows.append({"id": f"u{s}-{p}-{j}", "speaker": f"s{s}p{p}",
                             "session": f"S{s}", "gender": g})
    return pd.DataFrame(rows).sample(frac=1, random_state=int(rng.integers(1 << 30)))


def test_random_metadata_always_gives_clean_folds() -> None:
    rng = np.random.default_rng(1234)
    for _ in range(40):
        meta = random_meta(rng)
        sessions = meta.groupby("speaker")["session"].first()
        n_spk = meta["speaker"].nunique()
        dev = str(rng.choice(["first", "second", "both"]))
        loso = make_folds(meta, FoldConfig(scheme="loso", dev_speaker=dev))
        assert len(loso) == meta["session"].nunique() * (2 if dev == "both" else 1)
        for f in loso:
            assert_clean(f, meta)
            held = set(sessions[list(f.dev_speakers + f.test_speakers)])
            assert held == {f.group}
            session = dict(zip(meta["id"], meta["session"], strict=True))
            assert f.group not in {session[i] for i in f.train}
        k = int(rng.integers(3, min(n_spk, 6) + 1))
        kfold = make_folds(meta, FoldConfig(scheme="speaker_kfold", k=k,
                                            dev_groups=int(rng.integers(1, k - 1)),
                                            seed=int(rng.integers(100))))
        assert sorted(s for f in kfold for s in f.test_speakers) == sorted(sessions.index)
        sizes = [len(f.test_speakers) for f in kfold]
        assert max(sizes) - min(sizes) <= 1
        for f in kfold:
            assert_clean(f, meta)


# ---------------------------------------------------------------- stratified_split (TACN)


def _labelled(n_per: dict[str, int], speakers: int = 4) -> pd.DataFrame:
    rows = []
    for label, n in n_per.items():
        for i in range(n):
            rows.append({"id": f"{label}{i:03d}", "speaker": f"s{i % speakers}", "label": label})
    return pd.DataFrame(rows)


def test_stratified_split_is_seeded_stratified_and_complete():
    meta = _labelled({"neu": 170, "hap": 160, "sad": 110, "ang": 110})
    cfg = FoldConfig(scheme="stratified_split", test_share=0.2, dev_share=0.1, splits=3, seed=7)
    folds = make_folds(meta, cfg)
    assert [f.name for f in folds] == ["fold1", "fold2", "fold3"]
    assert folds == make_folds(meta, cfg)  # repeatable
    assert folds != make_folds(meta, FoldConfig(scheme="stratified_split", splits=3, seed=8))
    assert folds[0].test != folds[1].test  # independent draws
    label = dict(zip(meta["id"], meta["label"], strict=True))
    for f in folds:
        assert len(f.test) == 110 and len(f.dev) == 55 and len(f.train) == 385
        for side, share in ((f.test, 0.2), (f.dev, 0.1)):
            for cls, total in meta["label"].value_counts().items():
                got = sum(label[u] == cls for u in side)
                assert abs(got - share * total) <= 1, (cls, got)


def test_stratified_split_mixes_speakers_which_speaker_checks_refuse():
    meta = _labelled({"neu": 20, "sad": 20})
    fold = make_folds(meta, FoldConfig(scheme="stratified_split"))[0]
    check_fold(fold, meta, speakers_apart=False)
    with pytest.raises(FoldError, match="speaker"):
        check_fold(fold, meta)


def test_stratified_split_needs_labels_and_enough_per_class():
    cfg = FoldConfig(scheme="stratified_split")
    with pytest.raises(FoldError, match="label"):
        make_folds(_labelled({"neu": 20}).drop(columns="label"), cfg)
    with pytest.raises(FoldError, match="'ang' has 2"):
        make_folds(_labelled({"neu": 20, "ang": 2}), cfg)
