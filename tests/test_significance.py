"""Bootstrap CIs and paired tests give the known answers on constructed predictions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from satn.metrics import score
from satn.significance import ComparisonError, bootstrap_ci, compare, fold_scores

CLASSES = ("neu", "hap", "sad", "ang")


def table(true: list[str], pred: list[str], fold: str | list[str] = "fold1",
          side: str = "test") -> pd.DataFrame:
    n = len(true)
    return pd.DataFrame({"fold": fold if isinstance(fold, list) else [fold] * n,
                         "id": [f"u{i:04d}" for i in range(n)], "speaker": "s", "side": side,
                         "true": true, "pred": pred})


def mcnemar_pair(b: int, c: int, same_right: int, same_wrong: int):
    """A right and B wrong on b utterances, the reverse on c; both right / both wrong."""
    true = ["neu"] * (b + c + same_right + same_wrong)
    a_pred = ["neu"] * b + ["hap"] * c + ["neu"] * same_right + ["sad"] * same_wrong
    b_pred = ["hap"] * b + ["neu"] * c + ["neu"] * same_right + ["sad"] * same_wrong
    return table(true, a_pred), table(true, b_pred)


def test_identical_runs_differ_by_nothing():
    rng = np.random.default_rng(0)
    true = list(rng.choice(CLASSES, 200))
    pred = list(rng.choice(CLASSES, 200))
    a = table(true, pred)
    c = compare(a, a.copy(), "ua", n_resamples=500)
    assert c.diff.estimate == c.diff.low == c.diff.high == 0.0
    assert c.p_utterances == 1.0


def test_permutation_test_on_wa_is_mcnemars_exact_test():
    a, b = mcnemar_pair(b=15, c=5, same_right=40, same_wrong=10)
    res = compare(a, b, "wa", n_resamples=40000, seed=1)
    assert res.diff.estimate == pytest.approx(10 / 70)
    exact = stats.binomtest(15, 20, 0.5).pvalue  # 0.0414
    assert res.p_utterances == pytest.approx(exact, abs=0.006)
    # and the other way round: the same p, the opposite difference
    rev = compare(b, a, "wa", n_resamples=40000, seed=1)
    assert rev.diff.estimate == pytest.approx(-10 / 70)
    assert rev.p_utterances == pytest.approx(exact, abs=0.006)
    # no discordant pair gives no evidence at all
    same_a, same_b = mcnemar_pair(b=0, c=0, same_right=30, same_wrong=10)
    assert compare(same_a, same_b, "wa", n_resamples=500).p_utterances == 1.0


def test_bootstrap_ci_of_wa_matches_the_binomial_standard_error():
    n, k = 1000, 700
    a = table(["neu"] * n, ["neu"] * k + ["hap"] * (n - k))
    ci = bootstrap_ci(a, "wa", n_resamples=4000, seed=2)
    se = np.sqrt(0.7 * 0.3 / n)  # 0.0145
    assert ci.estimate == pytest.approx(0.7)
    assert ci.low == pytest.approx(0.7 - 1.96 * se, abs=0.006)
    assert ci.high == pytest.approx(0.7 + 1.96 * se, abs=0.006)


def test_fold_scores_and_the_ci_estimate_are_the_fold_mean_of_satn_metrics():
    rng = np.random.default_rng(3)
    frames = []
    for f in range(4):
        n = 50 + 10 * f
        true = rng.choice(CLASSES, n, p=[0.5, 0.2, 0.2, 0.1])
        pred = np.where(rng.random(n) < 0.6, true, rng.choice(CLASSES, n))
        frames.append(table(list(true), list(pred), f"fold{f + 1}"))
    frame = pd.concat(frames, ignore_index=True)
    idx = {c: i for i, c in enumerate(CLASSES)}
    for metric in ("ua", "wa"):
        expected = {
            f"fold{f + 1}": getattr(score(frames[f]["true"].map(idx).to_numpy(),
                                          frames[f]["pred"].map(idx).to_numpy(), 4), metric)
            for f in range(4)}
        got = fold_scores(frame, metric)
        assert got == pytest.approx(expected)
        ci = bootstrap_ci(frame, metric, n_resamples=1000)
        assert ci.estimate == pytest.approx(np.mean(list(expected.values())))
        assert ci.low < ci.estimate < ci.high


def test_ua_counts_each_class_equally_and_resampling_keeps_class_counts():
    """A run right on the 10 rare utterances only: UA 0.5 (2 classes), WA 10/110; every
    resample keeps 10 rare and 100 common utterances, so the CI is the point."""
    true = ["ang"] * 10 + ["neu"] * 100
    a = table(true, ["ang"] * 10 + ["hap"] * 100)
    ua = bootstrap_ci(a, "ua", n_resamples=500)
    wa = bootstrap_ci(a, "wa", n_resamples=500)
    assert (ua.estimate, ua.low, ua.high) == pytest.approx((0.5, 0.5, 0.5))
    assert (wa.estimate, wa.low, wa.high) == pytest.approx((10 / 110,) * 3)


def test_fold_level_tests():
    rng = np.random.default_rng(4)
    fa, fb = [], []
    for f in range(5):
        n = 40
        true = rng.choice(CLASSES, n)
        good = np.where(rng.random(n) < 0.8, true, "hap")
        bad = np.where(rng.random(n) < 0.4, true, "hap")
        fa.append(table(list(true), list(good), f"fold{f + 1}"))
        fb.append(table(list(true), list(bad), f"fold{f + 1}"))
    a, b = pd.concat(fa, ignore_index=True), pd.concat(fb, ignore_index=True)
    c = compare(a, b, "ua", n_resamples=2000)
    sa, sb = list(fold_scores(a, "ua").values()), list(fold_scores(b, "ua").values())
    assert c.fold_a == pytest.approx(sa) and c.fold_b == pytest.approx(sb)
    assert all(x > y for x, y in zip(sa, sb, strict=True))
    assert c.p_folds_t == pytest.approx(stats.ttest_rel(sa, sb).pvalue)
    assert c.p_folds_wilcoxon == pytest.approx(0.0625)  # 5 folds, all one way: 2 / 2**5
    assert c.diff.low > 0 and c.p_utterances < 0.01


def test_runs_on_different_utterances_cannot_be_paired():
    a = table(["neu", "hap"], ["neu", "hap"])
    b = table(["neu", "hap"], ["neu", "hap"], fold="fold2")
    with pytest.raises(ComparisonError, match="only in A"):
        compare(a, b, n_resamples=100)
    relabelled = table(["neu", "sad"], ["neu", "hap"])
    with pytest.raises(ComparisonError, match="different true labels"):
        compare(a, relabelled, n_resamples=100)
    with pytest.raises(ComparisonError, match="no test predictions"):
        compare(table(["neu"], ["neu"], side="dev"), a, n_resamples=100)
