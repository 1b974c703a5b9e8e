"""End to end through the real entry points: demo corpus -> features -> train / sweep ->
MLflow -> predict. Shrunk to a tiny corpus and model so it runs in seconds on a CPU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from userenv import tiny_workspace

from satn.cli import main, sweep_main

TINY = {
    "data": {"corpus": "demo", "demo_per_class": 2},
    "model": {"tcn": {"channels": 16, "dilations": [1, 2]}, "attention": {"heads": 2}},
    "train": {"epochs": 2, "batch_size": 8, "lr": 3e-3, "device": "cpu"},
}


def open_client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return tiny_workspace(tmp_path_factory.mktemp("satn"), TINY, "e2e", 2)


def _run(cmd, args, check=True):
    result = CliRunner().invoke(cmd, [str(a) for a in args], catch_exceptions=False)
    if check:
        assert result.exit_code == 0, result.output
    return result


def _common(ws):
    return ["--config", ws / "tiny.yaml", "--ray-config", ws / "runtime.yaml"]


def test_features_then_cache_hit(workspace):
    first = _run(main, ["features", *_common(workspace), "--no-progress"])
    assert "(written)" in first.output
    again = _run(main, ["features", *_common(workspace), "--no-progress"])
    assert "cached, nothing to do" in again.output
    uri = again.output.strip().splitlines()[-1]
    import pandas as pd

    from satn.store import open_dataset

    ds = open_dataset(uri)
    assert len(ds) == 80  # 5 sessions x 2 speakers x 4 classes x 2 (demo_per_class)
    assert len(pd.read_parquet(ds.data_uri)) == 80  # plain pandas reads it too


def test_folds_command_shows_speaker_disjoint_sides(workspace):
    out = _run(main, ["folds", *_common(workspace)]).output
    lines = [ln for ln in out.splitlines() if ln.startswith("fold") and "held out" not in ln]
    assert len(lines) == 5
    for ln in lines:
        dev, test = ln.split()[-3], ln.split()[-1]
        assert dev.endswith("M") and test.endswith("F") and dev[:5] == test[:5]


def test_train_one_fold_logs_to_mlflow_and_predict_reads_it(workspace, tmp_path):
    out = _run(main, ["train", *_common(workspace), "--fold", "1"]).output
    assert "fold1" in out and "MLflow run" in out
    run_id = out.split("MLflow run ")[1].split()[0]
    uri = f"sqlite:///{workspace / 'mlflow.db'}"
    parent = open_client(uri).get_run(run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["satn.level"] == "config"

    wavs = sorted((workspace / "data" / "demo-corpus").rglob("*.wav"))[:2]
    bad = tmp_path / "corrupt.wav"
    bad.write_bytes(b"RIFF not really a wav")
    res = _run(main, ["predict", *wavs, bad, "--model", run_id, "--tracking-uri", uri,
                      "--format", "json"], check=False)
    assert res.exit_code == 1  # one bad file: reported, the others still predicted
    rows = json.loads(res.stdout)
    assert [r["error"] is None for r in rows] == [True, True, False]
    assert "corrupt.wav" in rows[2]["error"]
    for r in rows[:2]:
        assert r["label"] in ("neu", "hap", "sad", "ang")
        assert sum(r["probs"].values()) == pytest.approx(1.0, abs=1e-5)


def test_checkpoint_round_trip_gives_the_same_predictions(workspace, tmp_path):
    import torch

    from satn.checkpoint import load_checkpoint, save_checkpoint
    from satn.config import ExperimentConfig, RuntimeConfig
    from satn.predict import predict_files
    from satn.prepare import prepare_dataset
    from satn.runner import CrossValidation
    from satn.store import open_dataset

    cfg = ExperimentConfig.from_yaml(workspace / "tiny.yaml")
    cfg, info = prepare_dataset(cfg, RuntimeConfig.from_yaml(workspace / "runtime.yaml"),
                                progress=False, echo=lambda s: None)
    exp = CrossValidation(cfg, open_dataset(info.uri), folds=[2])
    exp.run()
    trainer, pf = exp.trainers["fold2"], exp.prepared[0]
    path = save_checkpoint(tmp_path / "best.pt", trainer.best.state_dict, cfg=cfg,
                           classes=exp.classes, normalizer=pf.normalizer,
                           frame_shape=exp.frame_shape)
    ckpt = load_checkpoint(path)
    x, _, uid = pf.data.dev[0]
    lengths = torch.tensor([x.shape[0]])
    expected = trainer.best_model()(x[None], lengths).logits
    assert torch.allclose(ckpt.model(x[None], lengths).logits, expected, atol=1e-5)
    # and from audio: predict_files runs the same features + normaliser
    wav = next((Path(cfg.data.root)).rglob(f"{uid}.wav"))
    p = predict_files([str(wav)], ckpt)[0]
    probs = expected.softmax(-1)[0].detach().numpy()
    assert np.allclose([p.probs[c] for c in ckpt.classes], probs, atol=1e-4)
    # a checkpoint is plain tensors + JSON: loads with weights_only
    blob = torch.load(path, weights_only=True)
    assert set(blob) == {"state_dict", "meta"}


VARIANTS = ["blstm_soft", "blstm_self", "tcn_soft", "tcn_self",
            "blstm_soft_at", "blstm_self_at", "tcn_soft_at", "tcn_self_at"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_table2_variant_trains_through_satn_train(workspace, variant, monkeypatch):
    import teacher_stand_in

    from satn.config import FeatureConfig

    args = ["train", *_common(workspace), "--fold", "3", "--variant", variant, "--epochs", "1",
            "--set", "model.rnn.hidden=8", "--set", "model.attention.form=paper"]
    if variant.endswith("_at"):
        teacher_stand_in.install(monkeypatch)
        path = workspace / "teacher.pt"
        if not path.exists():
            teacher_stand_in.save(path, FeatureConfig())
        args += ["--set", f"transfer.teacher={path}", "--set", "transfer.kind=both"]
    out = _run(main, args).output
    assert f"training {variant} on folds fold3" in out
    assert ("(ser " in out) == variant.endswith("_at")  # the loss terms, when there are two
    uri = f"sqlite:///{workspace / 'mlflow.db'}"
    run_id = out.split("MLflow run ")[1].split()[0]
    client = open_client(uri)
    fold = client.search_runs([client.get_run(run_id).info.experiment_id],
                              filter_string=f"tags.mlflow.parentRunId = '{run_id}'")[0]
    names = set(fold.data.metrics)
    assert {"train_loss", "train_loss_ser", "dev_loss", "dev_loss_ser", "best_test_ua"} <= names
    assert ("dev_loss_at" in names) == variant.endswith("_at")


def test_an_at_variant_without_a_teacher_is_one_line(workspace):
    res = _run(main, ["train", *_common(workspace), "--fold", "1", "--variant", "tcn_self_at",
                      "--no-mlflow"], check=False)
    assert res.exit_code == 1
    assert "Error: model.variant tcn_self_at trains with attention transfer: set " \
           "transfer.teacher" in res.output


def test_report_prints_table2_from_the_runs_and_the_experiment_opens_as_model_training(
        workspace, tmp_path):
    # its own store, so the test reads only the runs it makes, whatever ran before it
    runtime = yaml.safe_load((workspace / "runtime.yaml").read_text())
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runtime["mlflow"]["tracking_uri"] = uri
    (tmp_path / "runtime.yaml").write_text(yaml.safe_dump(runtime))
    common = ["--config", workspace / "tiny.yaml", "--ray-config", tmp_path / "runtime.yaml"]
    one_epoch = ["--fold", "3", "--epochs", "1", "--set", "model.rnn.hidden=8",
                 "--set", "model.attention.form=paper"]
    _run(main, ["train", *common, "--fold", "1"])
    for variant in ("tcn_self", "blstm_soft"):
        _run(main, ["train", *common, "--variant", variant, *one_epoch])
    client = open_client(uri)
    exp = client.get_experiment_by_name("e2e")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = client.search_runs([exp.experiment_id], "tags.`satn.entry` = 'satn train' AND "
                                                   "tags.`satn.level` = 'config'")
    assert len(runs) == 3
    figures = tmp_path / "paper.yaml"
    figures.write_text(yaml.safe_dump({"source": "a test", "rows": {
        "tcn_self": {"test_ua": 0.5}}}))
    png = tmp_path / "t2.png"
    out = _run(main, ["report", "--ray-config", tmp_path / "runtime.yaml", "--paper", figures,
                      "--png", png]).output
    lines = [ln for ln in out.splitlines() if ln.startswith("| ")]
    assert lines[0].startswith("| Model | Folds | Dev WA | Dev WA (paper) |")
    got = {ln.split(" | ")[0][2:]: ln for ln in lines[1:]}
    trained = {r.data.tags["satn.variant"] for r in runs}
    assert {label.split(" (")[0] for label in got} == trained == {"tcn_self", "blstm_soft"}
    # tcn_self ran twice with different settings: two rows, named by what differs, and
    # not by the BLSTM size that tcn_self never reads
    assert sorted(label for label in got if label.startswith("tcn_self ")) == [
        "tcn_self (model.attention.form=multihead, train.epochs=2)",
        "tcn_self (model.attention.form=paper, train.epochs=1)"]
    assert got["tcn_self (model.attention.form=paper, train.epochs=1)"].rstrip(" |").endswith(
        "50.0")  # the paper's test UA beside ours
    assert png.read_bytes()[:4] == b"\x89PNG"
    csv_out = _run(main, ["report", "--ray-config", tmp_path / "runtime.yaml",
                          "--format", "csv", "--run", runs[0].info.run_id]).output
    header, row = csv_out.strip().splitlines()
    assert header.startswith("model,variant,runs,folds,dev_wa_mean,dev_wa_std")
    assert row.split(",")[1] == runs[0].data.tags["satn.variant"]


def test_a_checkpoint_that_is_not_one_gets_a_clear_error(tmp_path):
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"\x00garbage")
    res = _run(main, ["predict", str(bad), "--model", str(bad)], check=False)
    assert res.exit_code == 1 and "not a satn checkpoint" in res.output


def _raylets() -> int:
    """Raylets this test process started (the sweep runs in it): other tests' Rays, in
    other processes at the same time, are not counted."""
    import psutil

    count = 0
    for p in psutil.Process().children(recursive=True):
        try:
            count += "raylet" in p.name()
        except psutil.NoSuchProcess:
            continue
    return count


def test_sweep_end_to_end_then_mlflow_holds_everything(workspace):
    space = workspace / "space.yaml"
    space.write_text(yaml.safe_dump({
        "name": "e2e", "metric": "dev_ua_best", "mode": "max", "num_samples": 2,
        "algorithm": "optuna", "seed": 0,
        "scheduler": {"kind": "asha", "grace_period": 1, "reduction_factor": 2},
        "params": {"model.tcn.dilations": {"choice": ["1,2", "1,2,4"]},
                   "train.lr": {"loguniform": [1e-3, 5e-3]}}}))
    before = _raylets()
    out = _run(sweep_main, ["--space", space, *_common(workspace), "--trials", 2,
                            "--name", "e2e-sweep"]).output
    assert "sweep e2e-sweep: 2 trial(s)" in out and "best configuration" in out
    assert _raylets() <= before  # the sweep shut down the Ray it started

    client = open_client(f"sqlite:///{workspace / 'mlflow.db'}")
    exp = client.get_experiment_by_name("e2e")
    runs = client.search_runs([exp.experiment_id], "tags.`satn.sweep` = 'e2e-sweep'")
    parents = [r for r in runs if r.data.tags["satn.level"] == "config"]
    folds = [r for r in runs if r.data.tags["satn.level"] == "fold"]
    assert len(parents) == 2 and len(folds) == 10
    for p in parents:
        children = [f for f in folds if f.data.tags["mlflow.parentRunId"] == p.info.run_id]
        assert sorted(f.data.tags["satn.fold"] for f in children) == [f"fold{i}" for i in
                                                                     range(1, 6)]
        stopped = p.data.tags.get("satn.outcome") == "stopped_early"
        assert p.info.status == ("KILLED" if stopped else "FINISHED")
        assert {f.info.status for f in children} == {p.info.status}
        assert {"model.tcn.dilations", "train.lr", "model.variant"} <= set(p.data.params)
        history = client.get_metric_history(p.info.run_id, "dev_ua")
        assert [m.step for m in history] == list(range(1, len(history) + 1))
        if not stopped:
            assert len(history) == 2 and "test_ua_mean" in p.data.metrics
            assert {a.path for a in client.list_artifacts(p.info.run_id, "results")} >= {
                "results/summary.json", "results/test_mean_normalised.png"}
        for f in children:
            assert 0.0 <= f.data.metrics["best_test_ua"] <= 1.0
            arts = {a.path for a in client.list_artifacts(f.info.run_id)}
            assert {"checkpoint", "confusion", "attention"} <= arts
            att = [a.path for a in client.list_artifacts(f.info.run_id, "attention")
                   if not a.path.endswith("index.json")]
            probes = f.data.params["fold.probes"].split(",")
            assert sorted(att) == sorted([f"attention/{u}.{e}" for u in probes
                                          for e in ("npy", "png")])
            local = client.download_artifacts(f.info.run_id, att[0] if att[0].endswith(".npy")
                                              else att[1])
            maps = np.load(local)
            assert maps.ndim == 3 and maps.shape[1] == maps.shape[2]
            assert np.allclose(maps.astype(np.float32).sum(-1), 1.0, atol=1e-2)
    best = [r for r in runs if r.data.tags.get("satn.best_of_sweep") == "e2e-sweep"]
    assert len(best) == 1


def test_a_sweep_with_failed_trials_names_them_and_exits_3(workspace):
    from satn.tracking import WRITER_TAG, ensure_experiment, open_client

    uri = f"sqlite:///{workspace / 'mlflow.db'}"
    # a run that an ended process left RUNNING: the next sweep on this store marks it
    stale = open_client(uri).create_run(ensure_experiment(uri, "e2e"), run_name="stale",
                                    tags={WRITER_TAG: "x:1:1.0".replace("x", _hostname())})
    space = workspace / "failing.yaml"
    space.write_text(yaml.safe_dump({
        "name": "failing", "metric": "dev_ua_best", "mode": "max", "num_samples": 1,
        "algorithm": "random", "scheduler": {"kind": "fifo"},
        # no machine here has a ninth GPU: that trial fails when it builds its folds
        "params": {"train.device": {"grid": ["cpu", "cuda:8"]}}}))
    res = _run(sweep_main, ["--space", space, *_common(workspace), "--epochs", 1,
                            "--name", "failing-sweep"], check=False)
    assert res.exit_code == 3, res.output
    assert "sweep failing: 2 trial(s), random search" in res.output  # grid points counted
    assert "2 trial(s), 0 stopped early, 1 failed" in res.output
    failed = [ln for ln in res.output.splitlines() if ln.strip().startswith("failed: ")]
    assert len(failed) == 1 and "cuda:8" in failed[0]
    assert "best configuration" in res.output  # the good trial still counts
    assert "marked 1 run(s) that ended processes had left RUNNING" in res.output
    client = open_client(uri)
    assert client.get_run(stale.info.run_id).info.status == "KILLED"
    exp = client.get_experiment_by_name("e2e")
    runs = client.search_runs([exp.experiment_id], "tags.`satn.sweep` = 'failing-sweep'")
    assert runs and "RUNNING" not in {r.info.status for r in runs}


@pytest.mark.slow
def test_a_sweep_selecting_by_inner_folds_scores_each_fold_by_its_ensemble(workspace):
    space = workspace / "inner.yaml"
    space.write_text(yaml.safe_dump({
        "name": "inner", "metric": "dev_ua_best", "mode": "max", "num_samples": 1,
        "algorithm": "random", "scheduler": {"kind": "fifo"},
        "params": {"train.lr": {"choice": [3e-3]}}}))
    out = _run(sweep_main, ["--space", space, *_common(workspace), "--epochs", 1,
                            "--set", "selection.inner_k=2", "--name", "inner-sweep"]).output
    assert "best configuration" in out
    client = open_client(f"sqlite:///{workspace / 'mlflow.db'}")
    exp = client.get_experiment_by_name("e2e")
    runs = client.search_runs([exp.experiment_id], "tags.`satn.sweep` = 'inner-sweep'")
    by_level: dict[str, list] = {}
    for r in runs:
        by_level.setdefault(r.data.tags["satn.level"], []).append(r)
    assert {k: len(v) for k, v in by_level.items()} == {"config": 1, "member": 10, "fold": 5}
    assert {r.info.status for r in runs} == {"FINISHED"}
    folds = sorted(by_level["fold"], key=lambda r: r.data.tags["satn.fold"])
    assert [r.data.tags["satn.fold"] for r in folds] == [f"fold{i}" for i in range(1, 6)]
    for f in folds:  # each outer fold: its two members' ensemble, with its predictions
        assert sorted(f.data.tags["satn.members"].split(",")) == [
            f"{f.data.tags['satn.fold']}-in{j}" for j in (1, 2)]
        assert {a.path for a in client.list_artifacts(f.info.run_id)} >= {"confusion",
                                                                          "predictions"}
    parent = by_level["config"][0]
    ua = [f.data.metrics["test_ua_final"] for f in folds]
    assert parent.data.metrics["test_ua_mean"] == pytest.approx(np.mean(ua))


def _hostname() -> str:
    import socket

    return socket.gethostname()


@pytest.mark.parametrize("args, message", [
    (["train", "--config", "/nonexistent.yaml"], "config file not found"),
    (["train", "--set", "model.attention.heads"], "expected KEY=VALUE"),
    (["train", "--set", "model.size=3", "--no-mlflow"], "unknown config key 'size'"),
    (["train", "--corpus", "iemocap", "--root", "/nonexistent/iemocap", "--no-mlflow"],
     "/nonexistent/iemocap"),
])
def test_bad_input_gets_one_clear_line(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, args)
    assert res.exit_code != 0 and message in res.output
    assert isinstance(res.exception, SystemExit)  # click's clean exit, not an exception


def _tone_manifest(root: Path, rows: list[tuple[str, str, str]], corrupt: bool = False) -> Path:
    import soundfile as sf

    for name, _, _ in rows:
        if corrupt:
            (root / name).write_bytes(b"RIFF....not audio")
        else:
            t = np.arange(8000) / 16000
            sf.write(root / name, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
    path = root / "m.csv"
    path.write_text("path,speaker,label\n" + "".join(f"{n},{s},{lab}\n" for n, s, lab in rows))
    return path


def test_a_fold_plan_the_corpus_cannot_meet_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # no sessions in the manifest: each speaker is its own session, too few for loso
    m = _tone_manifest(tmp_path, [("a.wav", "s1", "neu"), ("b.wav", "s2", "hap")])
    res = CliRunner().invoke(main, ["folds", "--corpus", "manifest", "--root", str(m),
                                    "--set", "data.classes=[neu, hap]"])
    assert res.exit_code == 1 and "has one speaker" in res.output
    assert isinstance(res.exception, SystemExit)


def test_a_corpus_whose_every_file_fails_stops_with_the_report(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    m = _tone_manifest(tmp_path, [("a.wav", "s1", "neu"), ("b.wav", "s2", "hap")], corrupt=True)
    res = CliRunner().invoke(main, ["features", "--corpus", "manifest", "--root", str(m),
                                    "--set", "data.classes=[neu, hap]"])
    assert res.exit_code == 1 and "all 2 input(s) failed, see" in res.output
    assert "report.json" in res.output


def test_a_bad_feature_setting_stops_before_any_work_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    m = _tone_manifest(tmp_path, [("a.wav", "s1", "neu"), ("b.wav", "s2", "hap")])
    res = CliRunner().invoke(main, ["features", "--corpus", "manifest", "--root", str(m),
                                    "--set", "data.classes=[neu, hap]", "--device", "gpu"])
    assert res.exit_code == 1 and "unknown device 'gpu'" in res.output
    assert not list(tmp_path.glob("satn-data/features/.partial-*"))


def test_unknown_space_is_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(sweep_main, ["--space", "nope"])
    assert res.exit_code == 1 and "no search space 'nope'" in res.output
    assert not (tmp_path / "satn-data").exists()
