"""The mean of several finished runs (`satn average`): equal weights, dev and test alike,
the known answer on constructed predictions, and a clear error when the runs did not score
the same utterances."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fakes import scored_run
from hypothesis import given, settings
from hypothesis import strategies as st

from satn.fusion import average, fuse, probabilities
from satn.predictions import PredictionsError, common_classes
from satn.significance import ComparisonError
from satn.tracking.finished import average_variant

CLASSES = ("neu", "hap", "sad", "ang")


def _run(true, scores, kind="probability", classes=CLASSES):
    """A finished run's predictions table over two folds."""
    return scored_run(true, scores, kind, ("fold1", "fold2"), classes)


def _labels(n_per_class: int) -> np.ndarray:
    return np.repeat(np.arange(4), n_per_class)


def _right_on(true: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Sure (0.7) of the true class on ``rows``, sure of the next class elsewhere."""
    p = np.full((len(true), 4), 0.1)
    wrong = ~np.isin(np.arange(len(true)), rows)
    p[np.arange(len(true)), np.where(wrong, (true + 1) % 4, true)] = 0.7
    return p


def test_two_of_three_right_is_right_one_of_three_is_not():
    """Three runs, each wrong on its own third of the utterances: every utterance has two
    runs right, so their mean is right everywhere, though each run alone scores two thirds."""
    y = {"dev": _labels(6), "test": _labels(3)}
    runs = [_run(y, {s: _right_on(y[s], np.setdiff1d(np.arange(len(y[s])),
                                                    np.arange(k, len(y[s]), 3)))
                     for s in y}) for k in range(3)]
    res = average(runs)
    assert res.n_runs == 3 and len(res.folds) == 2
    for f in res.folds:
        assert f.test.ua == pytest.approx(1.0) and f.dev.ua == pytest.approx(1.0)
        assert all(ua < 0.75 for ua in f.members_test_ua + f.members_dev_ua)
    # two runs wrong on the same third outvote the one right there
    bad = [runs[0], runs[0].copy(), runs[1]]
    bad[1].attrs = runs[0].attrs
    assert max(f.test.ua for f in average(bad).folds) < 1.0


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 4), st.integers(0, 2**31 - 1))
def test_the_mean_is_the_mean_of_the_probabilities_in_any_run_and_row_order(n, seed):
    rng = np.random.default_rng(seed)
    y = {"dev": _labels(3), "test": _labels(2)}
    runs = [_run(y, {s: rng.random((len(y[s]), 4)) for s in y}) for _ in range(n)]
    res = average(runs)
    for f in res.folds:
        for side in ("dev", "test"):
            rows = f.predictions[f.predictions.side == side]
            want = np.mean([probabilities(r[(r.fold == f.name) & (r.side == side)], CLASSES)
                            for r in runs], axis=0)
            np.testing.assert_allclose(probabilities(rows, CLASSES), want, atol=1e-12)
            np.testing.assert_allclose(rows[[f"score.{c}" for c in CLASSES]].sum(1), 1.0)
    shuffled = [r.sample(frac=1.0, random_state=seed % 1000) for r in runs[::-1]]
    for s, r in zip(shuffled, runs[::-1], strict=True):
        s.attrs = r.attrs
    again = average(shuffled)
    assert [f.test.ua for f in again.folds] == [f.test.ua for f in res.folds]
    assert [f.dev.ua for f in again.folds] == [f.dev.ua for f in res.folds]


def test_the_mean_of_two_is_an_even_fusion():
    rng = np.random.default_rng(5)
    y = {"dev": _labels(5), "test": _labels(4)}
    a, b = (_run(y, {s: rng.random((len(y[s]), 4)) for s in y}) for _ in range(2))
    mean, even = average([a, b]), fuse(a, b, grid=(0.5,))
    for m, e in zip(mean.folds, even.folds, strict=True):
        pd.testing.assert_frame_equal(m.predictions, e.predictions)


def test_a_decision_run_enters_by_its_softmax_and_a_shift_changes_nothing():
    rng = np.random.default_rng(6)
    y = {"dev": _labels(4), "test": _labels(4)}
    z = {s: rng.normal(size=(len(y[s]), 4)) for s in y}
    p = _run(y, {s: rng.random((len(y[s]), 4)) for s in y})
    svm = _run(y, z, kind="decision")
    shifted = _run(y, {s: z[s] + rng.normal(size=(len(y[s]), 1)) for s in y}, kind="decision")
    for f, g in zip(average([p, svm]).folds, average([p, shifted]).folds, strict=True):
        np.testing.assert_allclose(f.predictions.filter(like="score.").to_numpy(),
                                   g.predictions.filter(like="score.").to_numpy(), atol=1e-12)


def test_runs_that_scored_different_things_cannot_be_averaged():
    y = {"dev": _labels(4), "test": _labels(2)}
    rng = np.random.default_rng(7)
    scores = {s: rng.random((len(y[s]), 4)) for s in y}
    a = _run(y, scores)
    with pytest.raises(ValueError, match="at least two runs"):
        average([a])
    fewer = _run({"dev": y["dev"][:-1], "test": y["test"]},
                 {"dev": scores["dev"][:-1], "test": scores["test"]})
    with pytest.raises(ComparisonError, match=r"dev sides differ .*only in 3"):
        average([a, a, fewer])
    with pytest.raises(ComparisonError, match=r"different folds.*\(run 2\)"):
        average([a, scored_run(y, scores)])
    with pytest.raises(ComparisonError, match="different classes"):
        average([a, a.rename(columns={"score.ang": "score.cal"})])


def test_runs_on_more_classes_are_restricted_to_the_fewest():
    rng = np.random.default_rng(8)
    y4 = {"dev": _labels(3), "test": _labels(2)}
    eight = CLASSES + ("cal", "fea", "dis", "sur")
    y8 = {s: np.concatenate([y4[s], np.full(2, 5)]) for s in y4}  # two fearful rows more
    big = _run(y8, {s: rng.random((len(y8[s]), 8)) for s in y8}, classes=eight)
    small = _run(y4, {s: rng.random((len(y4[s]), 4)) for s in y4})
    (b, s, s2), notes = common_classes([big, small, small], ["1", "2", "3"])
    assert len(notes) == 1 and notes[0].startswith("run 1 scored 8 classes")
    assert "of run 2" in notes[0]
    assert len(b) == len(s) and set(b["true"]) <= set(CLASSES)
    assert len(average([b, s, s2]).folds) == 2
    y3 = {k: v % 3 for k, v in y4.items()}
    three = _run(y3, {k: rng.random((len(v), 3)) for k, v in y3.items()},
                 classes=("neu", "hap", "cal"))
    with pytest.raises(PredictionsError, match="neither is a subset"):
        common_classes([small, three], ["1", "2"])


def test_a_mean_of_one_variant_is_named_short():
    assert average_variant(["tcn_self"] * 3) == "mean/tcn_self(3)"
    assert average_variant(["tcn_self", "tcn_soft"]) == "mean/tcn_self+tcn_soft"
