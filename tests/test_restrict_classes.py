"""A run scored on a subset of its classes (trained on eight emotions, scored on four):
rows of the other classes dropped, scores renormalised, and two runs brought to the same
classes before they are compared or fused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from satn.fusion import fuse, probabilities
from satn.predictions import (
    PredictionsError,
    align_classes,
    classes_of,
    predictions_frame,
    restrict_classes,
)

EIGHT = ("neu", "cal", "hap", "sad", "ang", "fea", "dis", "sur")
FOUR = ("neu", "hap", "sad", "ang")


def _table(true: np.ndarray, scores: np.ndarray, classes, kind="probability",
           folds=("fold1", "fold2"), ids=None) -> pd.DataFrame:
    """Dev and test rows of ``folds``, the same utterances (``ids``; ``u0``, ``u1``, ... by
    default) in each."""
    ids = [f"u{i}" for i in range(len(true))] if ids is None else list(ids)
    frames = [predictions_frame(ids, ["spk"] * len(true), true, scores, classes,
                                side).assign(fold=fold)
              for fold in folds for side in ("dev", "test")]
    out = pd.concat(frames, ignore_index=True)
    out.attrs = {"score_kind": kind, "run_id": "r"}
    return out


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 40))
def test_restricted_probabilities_keep_their_ratios_and_the_argmax_over_the_kept(seed, n):
    rng = np.random.default_rng(seed)
    true = rng.integers(0, len(EIGHT), n)
    p = rng.dirichlet(np.ones(len(EIGHT)), n)
    full = _table(true, p, EIGHT)
    out = restrict_classes(full, FOUR)
    kept = full["true"].isin(FOUR).to_numpy()
    assert len(out) == kept.sum() and set(out["true"]) <= set(FOUR)
    assert classes_of(out) == FOUR and out.attrs == full.attrs
    q = out[[f"score.{c}" for c in FOUR]].to_numpy()
    assert np.allclose(q.sum(1), 1.0)
    orig = full.loc[kept, [f"score.{c}" for c in FOUR]].to_numpy()
    assert np.allclose(q * orig.sum(1, keepdims=True), orig)  # ratios kept
    assert (out["pred"].to_numpy() == np.asarray(FOUR)[orig.argmax(1)]).all()
    assert (out[["fold", "id", "side", "true"]].to_numpy()
            == full.loc[kept, ["fold", "id", "side", "true"]].to_numpy()).all()


def test_decision_values_are_kept_so_their_softmax_is_the_renormalised_one():
    rng = np.random.default_rng(1)
    true = np.arange(16) % len(EIGHT)
    d = rng.normal(size=(16, len(EIGHT)))
    full = _table(true, d, EIGHT, kind="decision")
    out = restrict_classes(full, FOUR)
    kept = full["true"].isin(FOUR).to_numpy()
    cols = [f"score.{c}" for c in FOUR]
    assert np.array_equal(out[cols].to_numpy(), full.loc[kept, cols].to_numpy())
    e = np.exp(full.loc[kept, cols].to_numpy())
    assert np.allclose(probabilities(out, FOUR), e / e.sum(1, keepdims=True))


def test_a_class_the_run_never_scored_is_a_clear_error():
    full = _table(np.array([0, 1]), np.full((2, 4), 0.25), FOUR)
    with pytest.raises(PredictionsError, match=r"no scores for \['cal'\]"):
        restrict_classes(full, ("neu", "cal"))


def test_align_restricts_whichever_run_has_more_classes_in_the_others_order():
    rng = np.random.default_rng(2)
    true8 = np.arange(24) % len(EIGHT)
    big = _table(true8, rng.dirichlet(np.ones(8), 24), EIGHT)
    four = np.asarray(EIGHT, dtype=object)[true8]
    keep = np.isin(four, FOUR)
    order = ("ang", "sad", "hap", "neu")  # the small run's own class order wins
    small_true = np.array([order.index(c) for c in four[keep]])
    small = _table(small_true, rng.dirichlet(np.ones(4), keep.sum()), order,
                   ids=[f"u{i}" for i in np.flatnonzero(keep)])
    for a, b in ((big, small), (small, big)):
        x, y, note = align_classes(a, b)
        assert classes_of(x) == classes_of(y) == order
        assert "8 classes" in note and "on the 4 of the other run" in note
        assert sorted(x["id"]) == sorted(y["id"])
    same_a, same_b, note = align_classes(small, small)
    assert note == "" and same_a is small and same_b is small
    # fused: the same utterances, four classes, the eight-class run's other rows gone
    result = fuse(*align_classes(big, small)[:2])
    assert result.classes == order
    assert all(len(f.predictions) == 2 * keep.sum() for f in result.folds)


def test_classes_that_only_overlap_cannot_be_aligned():
    a = _table(np.array([0, 1]), np.full((2, 3), 1 / 3), ("neu", "hap", "cal"))
    b = _table(np.array([0, 1]), np.full((2, 3), 1 / 3), ("neu", "hap", "sad"))
    with pytest.raises(PredictionsError, match="neither is a subset"):
        align_classes(a, b)
