"""WA / UA / F1 against sklearn and by hand; fold aggregation; confusion tables."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score

from satn.metrics import Aggregate, Scores, aggregate, format_confusion, normalize_rows, score


def test_scores_match_sklearn_on_random_labels() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        c = int(rng.integers(2, 7))
        n = int(rng.integers(1, 80))
        # skewed class priors so some classes are rare or absent on either side
        y_true = rng.choice(c, size=n, p=rng.dirichlet(np.full(c, 0.7)))
        right = rng.random(n) < rng.random()
        y_pred = np.where(right, y_true, rng.integers(0, c, size=n))
        s = score(y_true, y_pred, c)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sklearn warns when y_pred has unseen classes
            assert s.wa == pytest.approx(accuracy_score(y_true, y_pred))
            assert s.ua == pytest.approx(balanced_accuracy_score(y_true, y_pred))
            assert s.f1 == pytest.approx(f1_score(y_true, y_pred, average="macro",
                                                  zero_division=0))
        np.testing.assert_array_equal(s.confusion,
                                      confusion_matrix(y_true, y_pred, labels=range(c)))
        assert s.n == n == s.confusion.sum()


def test_hand_worked_imbalanced_example_separates_wa_from_ua() -> None:
    # 6 neutral, 3 happy, 1 sad. neutral: 5 right, 1 -> happy; happy: 2 right, 1 -> neutral;
    # sad: -> happy.
    y_true = [0] * 6 + [1] * 3 + [2]
    y_pred = [0, 0, 0, 0, 0, 1] + [1, 1, 0] + [1]
    s = score(y_true, y_pred, 3)
    np.testing.assert_array_equal(s.confusion, [[5, 1, 0], [1, 2, 0], [0, 1, 0]])
    assert s.wa == pytest.approx(7 / 10)
    np.testing.assert_allclose(s.recalls, [5 / 6, 2 / 3, 0])
    assert s.ua == pytest.approx((5 / 6 + 2 / 3 + 0) / 3)  # 0.5, not 0.7
    # F1 per class = 2 tp / (true + predicted): 10/12, 4/7, 0
    assert s.f1 == pytest.approx((10 / 12 + 4 / 7 + 0) / 3)
    assert s.to_dict() == pytest.approx({"wa": 0.7, "ua": 0.5, "f1": s.f1, "n": 10.0})


def test_classes_absent_from_truth_are_left_out_of_ua() -> None:
    s = score([0, 0, 1, 1], [0, 1, 1, 1], n_classes=4)
    assert np.isnan(s.recalls[2]) and np.isnan(s.recalls[3])
    assert s.ua == pytest.approx((0.5 + 1.0) / 2)
    s = score([0, 0, 1], [0, 3, 1], n_classes=4)  # class 3 predicted only: F1 counts it as 0
    assert s.f1 == pytest.approx((2 / 3 + 1.0 + 0.0) / 3)


def test_score_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="empty"):
        score([], [], 4)
    with pytest.raises(ValueError, match="predictions"):
        score([0, 1], [0], 4)
    with pytest.raises(ValueError, match="outside"):
        score([0, 4], [0, 1], 4)
    with pytest.raises(ValueError, match="integer"):
        score([0.0, 1.0], [0, 1], 4)


def fold_scores(rng: np.random.Generator, n: int, c: int = 4) -> Scores:
    y = rng.integers(0, c, size=n)
    y[:c] = np.arange(c)  # every class present
    pred = np.where(rng.random(n) < 0.6, y, rng.integers(0, c, size=n))
    return score(y, pred, c)


def test_aggregate_mean_sample_std_and_summed_confusion() -> None:
    rng = np.random.default_rng(1)
    folds = [fold_scores(rng, n) for n in (40, 120, 75, 60, 90)]
    agg = aggregate(folds)
    assert isinstance(agg, Aggregate) and agg.n_folds == 5 and agg.n == 385
    for key in ("wa", "ua", "f1"):
        values = [getattr(s, key) for s in folds]
        assert getattr(agg, f"{key}_mean") == pytest.approx(np.mean(values))
        assert getattr(agg, f"{key}_std") == pytest.approx(np.std(values, ddof=1))
    np.testing.assert_array_equal(agg.confusion, sum(s.confusion for s in folds))
    assert agg.wa_pooled == pytest.approx(np.trace(agg.confusion) / 385)
    flat = agg.to_dict()
    assert {"wa_mean", "wa_std", "ua_mean", "ua_std", "f1_mean", "f1_std"} <= flat.keys()
    assert all(isinstance(v, float) for v in flat.values())
    one = aggregate(folds[:1])
    assert one.wa_std == one.ua_std == one.f1_std == 0.0 and one.wa_mean == folds[0].wa


def test_normalised_confusion_averages_folds_with_equal_weight() -> None:
    rng = np.random.default_rng(2)
    folds = [fold_scores(rng, n) for n in (1000, 10, 50)]
    agg = aggregate(folds)
    np.testing.assert_allclose(agg.confusion_normalised_mean.sum(axis=1), 1.0)
    expected = np.mean([normalize_rows(s.confusion) for s in folds], axis=0)
    np.testing.assert_allclose(agg.confusion_normalised_mean, expected)
    # not the row-normalised sum, which the 1000-utterance fold would dominate
    assert not np.allclose(agg.confusion_normalised_mean, normalize_rows(agg.confusion))


def test_normalised_confusion_skips_folds_without_a_class() -> None:
    a = score([0, 0, 1, 1, 2], [0, 1, 1, 1, 2], 3)
    b = score([0, 0, 1, 1], [0, 0, 0, 1], 3)  # class 2 absent from this fold
    agg = aggregate([a, b])
    np.testing.assert_allclose(agg.confusion_normalised_mean.sum(axis=1), 1.0)
    np.testing.assert_allclose(agg.confusion_normalised_mean[2], [0, 0, 1])  # from fold a alone
    np.testing.assert_allclose(agg.confusion_normalised_mean[0], [0.75, 0.25, 0])


def test_aggregate_errors() -> None:
    with pytest.raises(ValueError, match="at least one"):
        aggregate([])
    with pytest.raises(ValueError, match="shapes"):
        aggregate([score([0, 1], [0, 1], 2), score([0, 1], [0, 1], 3)])


def test_format_confusion() -> None:
    classes = ("neu", "hap", "sad", "ang")
    counts = np.array([[50, 3, 2, 1], [4, 40, 0, 6], [7, 0, 30, 0], [1, 9, 0, 120]])
    text = format_confusion(counts, classes)
    lines = text.splitlines()
    assert len(lines) == 5 and all(c in lines[0] for c in classes)
    assert lines[4].split() == ["ang", "1", "9", "0", "120"]
    assert len({len(line) for line in lines}) == 1  # aligned columns
    norm = format_confusion(normalize_rows(counts), classes)
    assert norm.splitlines()[1].split()[1:] == ["0.89", "0.05", "0.04", "0.02"]
    with pytest.raises(ValueError, match="classes"):
        format_confusion(counts, classes[:3])
