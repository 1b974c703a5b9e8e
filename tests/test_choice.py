"""Choosing among finished runs by dev alone (`satn choose`): the highest selection score
wins whatever test says, ties go to the run given first, and runs that did not score the
same utterances are a clear error."""

from __future__ import annotations

import numpy as np
import pytest
from fakes import scored_run
from hypothesis import given, settings
from hypothesis import strategies as st

from satn.choice import choose, highest
from satn.significance import ComparisonError

CLASSES = ("neu", "hap", "sad", "ang")
Y = {"dev": np.repeat(np.arange(4), 5), "test": np.repeat(np.arange(4), 3)}


def _right_on(true: np.ndarray, n_right: int) -> np.ndarray:
    """Sure of the true class on the first ``n_right`` utterances of each class, sure of
    the next class on the rest: each class's recall is n_right / its count."""
    p = np.full((len(true), 4), 0.1)
    rank = np.concatenate([np.arange((true == c).sum()) for c in range(4)])
    p[np.arange(len(true)), np.where(rank < n_right, true, (true + 1) % 4)] = 0.7
    return p


def _run(dev_right: int, test_right: int, folds=("fold1", "fold2"), classes=CLASSES):
    return scored_run(Y, {"dev": _right_on(Y["dev"], dev_right),
                          "test": _right_on(Y["test"], test_right)}, folds=folds,
                      classes=classes)


def test_the_highest_dev_ua_is_chosen_though_another_is_better_on_test():
    runs = [_run(3, 3), _run(4, 1), _run(2, 3)]
    c = choose(runs)
    assert c.chosen == 1 and c.tied == () and c.folds == ("fold1", "fold2")
    assert [x.selection_score for x in c.candidates] == pytest.approx([0.6, 0.8, 0.4])
    assert c.best.test_ua_mean == pytest.approx(1 / 3)
    assert max(x.test_ua_mean for x in c.candidates) == pytest.approx(1.0)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3)), min_size=2, max_size=5),
       st.integers(0, 2**31 - 1))
def test_test_predictions_never_move_the_choice(scores, seed):
    """Scramble every candidate's test scores: the same run is chosen, and it is the first
    of those with the highest dev UA."""
    runs = [_run(d, t) for d, t in scores]
    rng = np.random.default_rng(seed)
    scrambled = []
    for r in runs:
        s = r.copy()
        test = s["side"] == "test"
        cols = [f"score.{c}" for c in CLASSES]
        s.loc[test, cols] = rng.random((int(test.sum()), 4))
        s.loc[test, "pred"] = np.asarray(CLASSES)[s.loc[test, cols].to_numpy().argmax(1)]
        s.attrs = r.attrs
        scrambled.append(s)
    dev = [d for d, _ in scores]
    assert choose(runs).chosen == choose(scrambled).chosen == dev.index(max(dev))


def test_a_tie_goes_to_the_run_given_first():
    a, b, c = _run(3, 0), _run(1, 3), _run(3, 3)
    assert (choose([a, b, c]).chosen, choose([a, b, c]).tied) == (0, (2,))
    assert (choose([c, b, a]).chosen, choose([c, b, a]).tied) == (0, (2,))


def test_a_difference_in_the_last_bit_is_a_tie():
    # 0.1 + 0.2 + 0.3 is 0.6000000000000001 in floating point
    assert highest([sum([0.1, 0.2, 0.3]) / 3, sum([0.3, 0.2, 0.1]) / 3]) == (0, (1,))
    assert highest([0.2, 0.6, 0.6 + 1e-9]) == (2, ())


def test_runs_on_other_utterances_or_folds_are_named():
    other = _run(3, 3)
    other.loc[other["id"] == "dev0", "id"] = "elsewhere"
    with pytest.raises(ComparisonError, match=r"only in 2"):
        choose([_run(2, 2), other])
    with pytest.raises(ComparisonError, match=r"different folds.*run 2"):
        choose([_run(2, 2), _run(2, 2, folds=("fold1", "fold3"))])
    no_dev = _run(3, 3)
    no_dev = no_dev[no_dev["side"] == "test"]
    with pytest.raises(ComparisonError, match=r"run 3 has no dev predictions"):
        choose([_run(2, 2), _run(1, 1), no_dev])
    with pytest.raises(ValueError, match="at least two"):
        choose([_run(2, 2)])


def test_a_run_on_more_classes_is_chosen_on_the_fewest():
    """A run scored on four classes among runs on three (a network trained on more
    emotions among fusions with a smaller protocol's baselines) is scored on the three."""
    y3 = {s: v[v < 3] for s, v in Y.items()}
    three = scored_run(y3, {s: _right_on(y3[s], 2)[:, :3] for s in y3},
                       folds=("fold1", "fold2"), classes=CLASSES[:3])
    c = choose([three, _run(4, 3)])
    assert c.classes == CLASSES[:3] and len(c.notes) == 1 and "run 2 scored 4 classes" in c.notes[0]
    assert c.chosen == 1 and c.best.selection_score == pytest.approx(0.8)
