"""Late fusion of two runs: weights chosen on dev only, the known answer on constructed
predictions, and a clear error when the runs did not score the same utterances."""

from __future__ import annotations

import numpy as np
import pytest
from fakes import scored_run as _run
from hypothesis import given, settings
from hypothesis import strategies as st

from satn.fusion import TEMPERATURES, fit_temperature, fuse, log_scores, probabilities
from satn.metrics import score
from satn.significance import ComparisonError

CLASSES = ("neu", "hap", "sad", "ang")


def _expert(true: np.ndarray, knows: set[int]) -> np.ndarray:
    """Confident and right on the classes it ``knows``; on the others it prefers the next
    class (0.4) over the true one (0.3)."""
    p = np.full((len(true), 4), 0.15)
    for i, y in enumerate(true):
        if y in knows:
            p[i] = 0.1 / 3
            p[i, y] = 0.9
        else:
            p[i, y] = 0.3
            p[i, (y + 1) % 4] = 0.4
    return p


def _labels(n_per_class: int = 5) -> np.ndarray:
    return np.repeat(np.arange(4), n_per_class)


def test_two_complementary_runs_fuse_to_a_perfect_one():
    y = {"dev": _labels(), "test": _labels(3)}
    a = _run(y, {s: _expert(y[s], {0, 1}) for s in y})
    b = _run(y, {s: _expert(y[s], {2, 3}) for s in y})
    for f in (a, b):  # each alone: half the classes
        assert score(y["test"], probabilities(f[f.side == "test"], CLASSES).argmax(1), 4).ua \
            == pytest.approx(0.5)
    (fold,) = fuse(a, b).folds
    assert fold.weight == 0.5  # every weight from 0.3 to 0.7 is perfect on dev: the middle one
    assert fold.dev.ua == 1.0 and fold.test.ua == 1.0
    assert fold.dev_ua_by_weight[0.0] == pytest.approx(0.5)
    assert fold.dev_ua_by_weight[1.0] == pytest.approx(0.5)
    p = fold.predictions
    assert list(p.side.unique()) == ["dev", "test"] and (p.true == p.pred).all()
    assert np.allclose(p.filter(like="score.").sum(1), 1.0)


def test_the_weight_is_chosen_on_dev_and_test_never_moves_it():
    y = {"dev": _labels(), "test": _labels(3)}
    rng = np.random.default_rng(0)
    good_dev = {"dev": _expert(y["dev"], {0, 1, 2, 3}), "test": rng.random((12, 4))}
    noise = {"dev": rng.random((20, 4)), "test": _expert(y["test"], {0, 1, 2, 3})}
    (only,) = fuse(_run(y, good_dev), _run(y, noise), (0.0, 1.0)).folds
    assert only.weight == 1.0 and only.test.ua < 1.0  # dev picks A; B was perfect on test
    (fold,) = fuse(_run(y, good_dev), _run(y, noise)).folds
    assert fold.dev_ua_by_weight[fold.weight] == 1.0 > fold.dev_ua_by_weight[0.0]
    # test scores and test labels changed: the weight stays where dev put it
    y2 = {"dev": y["dev"], "test": y["test"][::-1].copy()}
    (again,) = fuse(_run(y2, {**good_dev, "test": rng.random((12, 4))}),
                    _run(y2, {**noise, "test": rng.random((12, 4))})).folds
    assert again.weight == fold.weight and again.dev_ua_by_weight == fold.dev_ua_by_weight


def test_a_grid_of_one_weight_gives_that_run_alone():
    y = {"dev": _labels(), "test": _labels(3)}
    rng = np.random.default_rng(1)
    a = _run(y, {s: rng.random((len(y[s]), 4)) for s in y})
    b = _run(y, {s: rng.random((len(y[s]), 4)) for s in y})
    for grid, run in (((1.0,), a), ((0.0,), b)):
        (fold,) = fuse(a, b, grid).folds
        assert (fold.predictions.pred.to_numpy() == run.pred.to_numpy()).all()


def test_decision_values_are_a_softmax_so_a_shift_per_utterance_changes_nothing():
    y = {"dev": _labels(), "test": _labels(3)}
    rng = np.random.default_rng(2)
    dec = {s: rng.normal(size=(len(y[s]), 4)) for s in y}
    shifted = {s: d + rng.normal(size=(len(d), 1)) * 5 for s, d in dec.items()}
    other = _run(y, {s: rng.random((len(y[s]), 4)) for s in y})
    p1 = probabilities(_run(y, dec, "decision"), CLASSES)
    p2 = probabilities(_run(y, shifted, "decision"), CLASSES)
    assert np.allclose(p1, p2) and np.allclose(p1.sum(1), 1.0)
    f1 = fuse(_run(y, dec, "decision"), other).folds[0]
    f2 = fuse(_run(y, shifted, "decision"), other).folds[0]
    assert f1.weight == f2.weight and f1.test.ua == f2.test.ua


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_dev_ua_of_the_fusion_is_at_least_either_run_alone(seed):
    rng = np.random.default_rng(seed)
    y = {"dev": rng.integers(0, 4, 30), "test": rng.integers(0, 4, 10)}
    a = _run(y, {s: rng.random((len(y[s]), 4)) for s in y}, folds=("fold1", "fold2"))
    b = _run(y, {s: rng.random((len(y[s]), 4)) for s in y}, folds=("fold1", "fold2"))
    res = fuse(a, b)
    assert [f.name for f in res.folds] == ["fold1", "fold2"]
    for f in res.folds:
        assert f.dev.ua >= max(f.dev_ua_by_weight[0.0], f.dev_ua_by_weight[1.0])
        assert f.dev.ua == max(f.dev_ua_by_weight.values())
    assert res.summary()["test_ua_mean"] == pytest.approx(np.mean([f.test.ua
                                                                    for f in res.folds]))


def test_rows_in_another_order_fuse_the_same():
    y = {"dev": _labels(), "test": _labels(3)}
    rng = np.random.default_rng(3)
    a = _run(y, {s: rng.random((len(y[s]), 4)) for s in y})
    b = _run(y, {s: rng.random((len(y[s]), 4)) for s in y})
    shuffled = b.sample(frac=1.0, random_state=0)
    shuffled.attrs = b.attrs
    x, z = fuse(a, b).folds[0], fuse(a, shuffled).folds[0]
    assert x.weight == z.weight and x.test.ua == z.test.ua


def test_runs_that_scored_different_things_cannot_be_fused():
    y = {"dev": _labels(), "test": _labels(3)}
    rng = np.random.default_rng(4)
    scores = {s: rng.random((len(y[s]), 4)) for s in y}
    a = _run(y, scores)
    fewer = _run({"dev": y["dev"][:-1], "test": y["test"]},
                 {"dev": scores["dev"][:-1], "test": scores["test"]})
    with pytest.raises(ComparisonError, match="dev sides differ"):
        fuse(a, fewer)
    relabelled = a.copy()
    relabelled.loc[relabelled.side == "test", "true"] = "neu"
    with pytest.raises(ComparisonError, match="different true labels"):
        fuse(a, relabelled)
    with pytest.raises(ComparisonError, match="no dev predictions"):
        fuse(a, a[a.side == "test"])
    for other in (("fold1", "fold2"), ("fold2",)):
        with pytest.raises(ComparisonError, match="different folds"):
            fuse(a, _run(y, scores, folds=other))
    other_classes = a.rename(columns={"score.ang": "score.cal"})
    with pytest.raises(ComparisonError, match="different classes"):
        fuse(a, other_classes)


def test_a_store_uri_is_logged_without_credentials():
    from satn.cli.common import public_uri

    assert public_uri("https://ann:s3cret@mlflow.lab:5000/x") == "https://mlflow.lab:5000/x"
    assert public_uri("sqlite:////data/mlflow.db") == "sqlite:////data/mlflow.db"


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("scale", [3.0, 1 / 3])
def test_the_temperature_undoes_an_over_or_under_confident_scale(scale):
    """Labels drawn from softmax(z): scores z * s are fitted with T close to s."""
    rng = np.random.default_rng(4)
    z = rng.normal(size=(20_000, 4)) * 2.0
    y = (rng.random(len(z))[:, None] > np.cumsum(_softmax(z), 1)).sum(1)
    t = fit_temperature(z * scale, y)
    assert t == pytest.approx(scale, rel=0.1)
    assert fit_temperature(z, y) == pytest.approx(1.0, rel=0.1)


def test_calibration_keeps_each_run_alone_and_takes_nothing_from_test():
    y = {"dev": _labels(8), "test": _labels(3)}
    rng = np.random.default_rng(5)
    a = _run(y, {s: _softmax(rng.normal(size=(len(y[s]), 4)) * 4) for s in y})
    b = _run(y, {s: rng.normal(size=(len(y[s]), 4)) for s in y}, "decision")
    for grid, run in (((1.0,), a), ((0.0,), b)):
        (fold,) = fuse(a, b, grid, calibrate=True).folds
        assert (fold.predictions.pred.to_numpy() == run.pred.to_numpy()).all()
    (fold,) = fuse(a, b, calibrate=True).folds
    assert fold.temperatures != (1.0, 1.0)
    # other test scores and labels: the same temperatures, the same weight
    y2 = {"dev": y["dev"], "test": y["test"][::-1].copy()}
    a2 = _run(y2, {"dev": a[a.side == "dev"].filter(like="score.").to_numpy(),
                   "test": rng.random((12, 4))})
    b2 = _run(y2, {"dev": b[b.side == "dev"].filter(like="score.").to_numpy(),
                   "test": rng.normal(size=(12, 4))}, "decision")
    (again,) = fuse(a2, b2, calibrate=True).folds
    assert again.temperatures == fold.temperatures and again.weight == fold.weight


def test_calibrated_fusion_does_not_depend_on_a_runs_scale():
    """An SVM whose decision values are all k times larger is the same classifier: with
    calibration it fuses to the same predictions, without it the weight moves."""
    y = {"dev": _labels(10), "test": _labels(5)}
    rng = np.random.default_rng(6)
    truth = {s: np.eye(4)[y[s]] for s in y}
    a = _run(y, {s: _softmax(2 * truth[s] + rng.normal(size=(len(y[s]), 4))) for s in y})
    dec = {s: 0.3 * truth[s] + 0.3 * rng.normal(size=(len(y[s]), 4)) for s in y}
    k = TEMPERATURES[80] / TEMPERATURES[60]  # a whole number of grid steps
    b, b_scaled = (_run(y, {s: d * m for s, d in dec.items()}, "decision") for m in (1, k))
    assert (log_scores(b_scaled, CLASSES).argmax(1) == log_scores(b, CLASSES).argmax(1)).all()
    x, z = fuse(a, b, calibrate=True).folds[0], fuse(a, b_scaled, calibrate=True).folds[0]
    assert z.temperatures[1] == pytest.approx(k * x.temperatures[1])
    assert x.weight == z.weight and x.dev_ua_by_weight == z.dev_ua_by_weight
    assert (x.predictions.pred.to_numpy() == z.predictions.pred.to_numpy()).all()
    plain, plain_scaled = fuse(a, b).folds[0], fuse(a, b_scaled).folds[0]
    assert plain.dev_ua_by_weight != plain_scaled.dev_ua_by_weight
