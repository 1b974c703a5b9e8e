"""Selection by inner cross-validation over training speakers, and ensembles of models:
member folds are clean splits that never touch the outer test speakers for selection,
ensembles average logits, and the outer fold's figures and runs come from the combination."""

import numpy as np
import pytest
import torch
from fakes import MemoryDataset
from test_folds import ravdess_meta, speakers_of

from satn.config import ConfigError, ExperimentConfig, FoldConfig, SelectionConfig
from satn.engine import Evaluation
from satn.ensemble import Member, combine, mean_logits
from satn.folds import Fold, FoldError, make_folds, member_folds
from satn.metrics import score
from satn.runner import CrossValidation


def _outer():
    meta = ravdess_meta()
    return meta, make_folds(meta, FoldConfig(scheme="speaker_kfold", k=4, dev_groups=1))


@pytest.mark.parametrize("inner_k", [2, 3, 4])
def test_inner_folds_cover_the_training_speakers_and_keep_the_outer_test(inner_k):
    meta, outer = _outer()
    members = member_folds(meta, outer, inner_k=inner_k)
    assert len(members) == len(outer) * inner_k
    for fold in outer:
        inner = [m for m in members if m.scored_as == fold.name]
        assert len(inner) == inner_k
        pool = speakers_of(meta, fold.train + fold.dev)
        held = [speakers_of(meta, m.dev) for m in inner]
        # every training speaker is held out exactly once, and only training speakers
        assert set().union(*held) == pool and sum(map(len, held)) == len(pool)
        for m in inner:
            assert m.test == fold.test and m.group == fold.group and m.outer == fold.name
            assert not speakers_of(meta, m.train) & speakers_of(meta, m.dev)
            assert speakers_of(meta, m.train) | speakers_of(meta, m.dev) == pool
            sizes = [len(speakers_of(meta, x.dev)) for x in inner]
            assert max(sizes) - min(sizes) <= 1  # groups as even as the speakers allow


def test_seed_members_repeat_a_split_with_their_own_offsets():
    meta, outer = _outer()
    members = member_folds(meta, outer[:1], inner_k=0, seeds=3)
    assert [m.name for m in members] == ["fold1-s1", "fold1-s2", "fold1-s3"]
    assert [m.seed for m in members] == [0, 1, 2]
    assert all((m.train, m.dev, m.test) == (outer[0].train, outer[0].dev, outer[0].test)
               for m in members)
    assert member_folds(meta, outer) == outer  # nothing asked: the folds themselves


def test_inner_folds_refuse_speaker_mixing_splits_and_too_few_speakers():
    meta, _ = _outer()
    mixed = make_folds(meta, FoldConfig(scheme="stratified_split"))
    with pytest.raises(FoldError, match="mixes speakers"):
        member_folds(meta, mixed, inner_k=2)
    _, outer = _outer()
    with pytest.raises(FoldError, match="inner_k=13 needs as many training speakers"):
        member_folds(meta, outer, inner_k=13)
    with pytest.raises(ConfigError, match="selection.inner_k must be 0"):
        SelectionConfig(inner_k=1)
    with pytest.raises(ConfigError, match="selection.seeds"):
        SelectionConfig(seeds=0)


def _ev(ids, probs):
    probs = np.asarray(probs, dtype=np.float64)
    y = np.zeros(len(ids), dtype=np.int64)
    return Evaluation(score(y, probs.argmax(1), probs.shape[1]), 0.0, probs, list(ids))


def test_mean_logits_is_the_softmax_of_the_mean_logits_in_any_id_order():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 5, 4))  # 3 models, 5 utterances, 4 classes
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    ids = [f"u{i}" for i in range(5)]
    order = [4, 2, 0, 1, 3]  # one model evaluated the utterances in another order
    evs = [_ev(ids, probs[0]), _ev([ids[i] for i in order], probs[1][order]),
           _ev(ids, probs[2])]
    got_ids, got = mean_logits(evs)
    z = logits.mean(0)
    want = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    assert got_ids == ids
    np.testing.assert_allclose(got, want, atol=1e-9)
    with pytest.raises(ValueError, match="different utterances"):
        mean_logits([_ev(ids, probs[0]), _ev(ids[:4], probs[1][:4])])


def test_combine_stacks_inner_dev_sides_and_averages_the_test_side():
    labels = {"d1": 0, "d2": 1, "d3": 1, "t1": 0, "t2": 1}

    def member(name, dev, dev_p, test_p):
        fold = Fold(name, "g", ("x",), tuple(dev), ("t1", "t2"), outer="fold1")
        return Member(fold, 1, {"dev": _ev(dev, dev_p), "test": _ev(["t1", "t2"], test_p)})

    # inner group 1 holds d1, d2 (two seeds), inner group 2 holds d3
    out = combine([
        member("fold1-in1-s1", ["d1", "d2"], [[0.9, 0.1], [0.6, 0.4]], [[0.8, 0.2], [0.3, 0.7]]),
        member("fold1-in1-s2", ["d1", "d2"], [[0.7, 0.3], [0.2, 0.8]], [[0.4, 0.6], [0.4, 0.6]]),
        member("fold1-in2-s1", ["d3"], [[0.1, 0.9]], [[0.9, 0.1], [0.45, 0.55]]),
    ], labels)
    assert sorted(out["dev"].ids) == ["d1", "d2", "d3"]  # each training utterance once
    d = dict(zip(out["dev"].ids, out["dev"].probs.argmax(1), strict=True))
    # d2: seeds disagree (0.6 vs 0.8 for class 1 after the mean of logs): class 1 wins
    assert d == {"d1": 0, "d2": 1, "d3": 1}
    assert out["dev"].scores.ua == 1.0 and out["test"].scores.n == 2
    assert out["test"].probs.sum(1) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="overlap"):
        combine([member("a", ["d1"], [[1, 0]], [[1, 0], [0, 1]]),
                 member("b", ["d1", "d3"], [[1, 0], [0, 1]], [[1, 0], [0, 1]])], labels)


def _cfg(**over):
    return ExperimentConfig().override({
        "model.tcn.channels": 8, "model.attention.heads": 2, "model.tcn.dilations": "1,2",
        "train.epochs": 2, "train.batch_size": 16, "train.device": "cpu",
        "folds.scheme": "speaker_kfold", "folds.k": 5, "folds.dev_groups": 1, **over})


def test_an_experiment_with_inner_folds_scores_its_outer_fold_by_their_ensemble(tmp_path):
    from mlflow.tracking import MlflowClient

    from satn.tracking import MlflowObserver, ensure_experiment, load_predictions, read_runs

    torch.set_num_threads(1)
    data = MemoryDataset(per_speaker_class=2)
    exp = CrossValidation(_cfg(**{"selection.inner_k": 2, "selection.seeds": 2}), data, folds=[1])
    assert sorted(exp.fold_names) == ["fold1-in1-s1", "fold1-in1-s2", "fold1-in2-s1",
                                      "fold1-in2-s2"]
    # seeds differ in initialisation, not in data
    w = {n: next(iter(t.model.parameters())).detach().clone() for n, t in exp.trainers.items()}
    assert not torch.equal(w["fold1-in1-s1"], w["fold1-in1-s2"])
    assert torch.equal(w["fold1-in1-s1"], w["fold1-in2-s1"])
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    obs = MlflowObserver(uri, ensure_experiment(uri, "t"), run_name="t")
    result = exp.run([obs])
    assert [f.name for f in result.folds] == ["fold1"] and len(result.members) == 4
    outer = exp.prepared[0].fold
    ens = result.ensembles["fold1"]
    pool = set(outer.train) | set(outer.dev)
    assert sorted(ens["dev"].ids) == sorted(pool)  # selection scored on every training speaker
    assert sorted(ens["test"].ids) == sorted(outer.test)
    # the outer test figure is the ensemble's, recomputed here from the members
    _, p = mean_logits([exp.trainers[n].best.evaluations["test"] for n in exp.fold_names])
    labels = dict(zip(exp.prepared[0].data.test.ids, exp.prepared[0].data.test.labels,
                      strict=True))
    y = [labels[u] for u in ens["test"].ids]
    assert result.folds[0].test.ua == pytest.approx(score(y, p.argmax(1), 4).ua)
    assert result.summary()["test_ua_mean"] == pytest.approx(result.folds[0].test.ua)
    # MLflow: the members' runs and one fold run for the ensemble, which compare and report read
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_run(obs.parent_id).info.experiment_id])
    levels = sorted(r.data.tags.get("satn.level") for r in runs)
    assert levels == ["config", "fold"] + ["member"] * 4
    assert all(r.info.status == "FINISHED" for r in runs)
    frame = load_predictions(uri, obs.parent_id)
    assert set(frame["fold"]) == {"fold1"}
    assert sorted(frame.loc[frame["side"] == "test", "id"]) == sorted(outer.test)
    record = read_runs(uri, "t")[0]
    assert [f["fold"] for f in record["folds"]] == ["fold1"]
    assert record["folds"][0]["test_ua"] == pytest.approx(result.folds[0].test.ua)
    # the whole logged config comes along, so a report can tell runs of one variant apart
    assert record["config"]["selection.inner_k"] == "2"


def test_training_one_outer_fold_by_name_brings_all_its_members_and_a_member_alone():
    data = MemoryDataset(per_speaker_class=1)
    cfg = _cfg(**{"selection.inner_k": 3})
    assert len(CrossValidation(cfg, data, folds=["fold2"]).fold_names) == 3
    assert CrossValidation(cfg, data, folds=["fold2-in3"]).fold_names == ["fold2-in3"]


def test_the_progress_line_says_its_figures_are_the_models_means_not_the_ensembles(capsys):
    from satn.cli.training import ConsoleObserver

    torch.set_num_threads(1)
    data = MemoryDataset(per_speaker_class=1)
    ens = CrossValidation(_cfg(**{"selection.inner_k": 2, "train.epochs": 1}), data, folds=[1])
    ens.run([ConsoleObserver()])
    out = capsys.readouterr().out
    (line,) = [ln for ln in out.splitlines() if ln.startswith("epoch")]
    assert "means of 2 models, not the ensembles" in line
    plain = CrossValidation(_cfg(**{"train.epochs": 1}), data, folds=[1])
    plain.run([ConsoleObserver()])
    (line,) = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("epoch")]
    assert "test UA there" in line and "models" not in line
