"""`satn baseline`, `satn compare`, `satn fuse`, `satn average` and `satn choose` through the
installed CLI on a tiny demo corpus: the MLflow layout of neural runs, predictions kept for
every fold, comparisons, fusions, means and choices read back."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from satn.cli import main

# minutes on a shared 2-core machine (three fresh CLI processes, each importing MLflow)
pytestmark = pytest.mark.slow

TINY = {
    "data": {"corpus": "demo", "demo_per_class": 2},
    "model": {"tcn": {"channels": 16, "dilations": [1, 2]}, "attention": {"heads": 2}},
    "train": {"epochs": 2, "batch_size": 8, "lr": 3e-3, "device": "cpu"},
}
SATN = Path(sys.executable).with_name("satn")  # the installed console script


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("baseline")
    (root / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    (root / "runtime.yaml").write_text(yaml.safe_dump({
        "features_dir": str(root / "features"), "data_dir": str(root / "data"),
        "mlflow": {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "experiment": "bl"}}))
    return root


def _uri(ws: Path) -> str:
    return f"sqlite:///{ws / 'mlflow.db'}"


def _satn(ws: Path, *args) -> str:
    res = subprocess.run([str(SATN), *map(str, args)], cwd=ws, capture_output=True, text=True,
                         timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def _cli(*args, code: int = 0):
    """The same command in this process: each command runs once installed (`_satn`); the
    further calls run here, sparing a fresh process that imports MLflow and torch again."""
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == code, res.output
    return res


@pytest.fixture(scope="module")
def baseline_runs(ws):
    out = _satn(ws, "baseline", "--config", ws / "tiny.yaml", "--ray-config",
                ws / "runtime.yaml", "--features", "logmel_stats", "--classifier", "svm",
                "--classifier", "logreg", "--c", "0.01,1", "--no-progress")
    table = out.split("MLflow run")[1].splitlines()[1:3]
    return out, {ln.split()[0]: ln.split()[-1] for ln in table}


def test_baseline_logs_the_layout_of_neural_runs(ws, baseline_runs):
    from mlflow.tracking import MlflowClient

    from satn.predictions import read_predictions

    out, runs = baseline_runs
    assert set(runs) == {"svm/logmel_stats", "logreg/logmel_stats"}
    client = MlflowClient(tracking_uri=_uri(ws))
    for variant, run_id in runs.items():
        parent = client.get_run(run_id)
        assert parent.info.status == "FINISHED"
        assert parent.data.tags["satn.level"] == "config"
        assert parent.data.tags["satn.variant"] == variant
        children = client.search_runs([parent.info.experiment_id],
                                      f"tags.mlflow.parentRunId = '{run_id}'")
        assert sorted(c.data.tags["satn.fold"] for c in children) == [
            f"fold{i}" for i in range(1, 6)]
        fold_ua = []
        for child in children:
            assert child.data.tags["satn.level"] == "fold"
            assert float(child.data.params["baseline.c"]) in (0.01, 1.0)
            arts = {a.path for a in client.list_artifacts(child.info.run_id, "confusion")}
            assert arts == {f"confusion/{s}.{e}" for s in ("dev", "test") for e in ("csv", "png")}
            path = client.download_artifacts(child.info.run_id,
                                             "predictions/predictions.parquet", str(ws / "dl"))
            pred = read_predictions(path)
            test = pred[pred["side"] == "test"]
            ua = np.mean([(g["pred"] == g["true"]).mean() for _, g in test.groupby("true")])
            assert ua == pytest.approx(child.data.metrics["best_test_ua"])
            fold_ua.append(child.data.metrics["best_test_ua"])
        assert parent.data.metrics["test_ua_mean"] == pytest.approx(np.mean(fold_ua))
        line = next(ln for ln in out.splitlines() if ln.startswith(variant + " "))
        assert f"{np.mean(fold_ua):.3f}" in line


def test_neural_runs_keep_predictions_and_compare_reads_both(ws, baseline_runs):
    from mlflow.tracking import MlflowClient

    _, runs = baseline_runs
    res = CliRunner().invoke(main, ["train", "--config", str(ws / "tiny.yaml"), "--ray-config",
                                    str(ws / "runtime.yaml"), "--fold", "1"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    neural = res.output.split("MLflow run ")[1].split()[0]
    client = MlflowClient(tracking_uri=_uri(ws))
    svm = runs["svm/logmel_stats"]
    svm_fold1 = client.search_runs(
        [client.get_run(svm).info.experiment_id],
        f"tags.mlflow.parentRunId = '{svm}' and tags.`satn.fold` = 'fold1'")[0].info.run_id
    out = _satn(ws, "compare", neural, svm_fold1, "--tracking-uri", _uri(ws),
                "--resamples", "500")
    lines = {ln.split(":")[0]: ln for ln in out.splitlines()}
    assert {"A", "B", "UA", "WA"} <= set(lines)
    neural_ua = client.search_runs([client.get_run(neural).info.experiment_id],
                                   f"tags.mlflow.parentRunId = '{neural}'")[0] \
        .data.metrics["best_test_ua"]
    svm_ua = client.get_run(svm_fold1).data.metrics["best_test_ua"]
    assert f"A - B = {neural_ua - svm_ua:+.3f}" in lines["UA"]
    # B from a store of its own: the same comparison
    import shutil

    other = ws / "other.db"
    shutil.copy(ws / "mlflow.db", other)
    apart = _cli("compare", neural, svm_fold1, "--tracking-uri", _uri(ws),
                 "--tracking-uri-b", f"sqlite:///{other}", "--resamples", "500").stdout
    assert apart == out
    # the whole baseline against one fold of the neural run: not the same utterances
    bad = _cli("compare", neural, svm, "--tracking-uri", _uri(ws), "--resamples", "200", code=1)
    assert "Error: the runs' test sides differ" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_fuse_logs_a_run_that_report_and_compare_read(ws, baseline_runs):
    from mlflow.tracking import MlflowClient

    _, runs = baseline_runs
    svm, logreg = runs["svm/logmel_stats"], runs["logreg/logmel_stats"]
    out = _satn(ws, "fuse", svm, logreg, "--tracking-uri", _uri(ws))
    fused = out.split("MLflow run ")[1].split()[0]
    client = MlflowClient(tracking_uri=_uri(ws))
    run = client.get_run(fused)
    assert run.data.tags["satn.variant"] == "fusion/svm/logmel_stats+logreg/logmel_stats"
    assert run.data.tags["satn.kind"] == "fusion" and run.info.status == "FINISHED"
    assert run.data.params["data.classes"] == client.get_run(svm).data.params["data.classes"]
    assert run.data.params["fusion.grid"] == ",".join(f"{i / 10:g}" for i in range(11))
    folds = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{fused}'")
    assert len(folds) == len(client.search_runs(
        [run.info.experiment_id], f"tags.mlflow.parentRunId = '{svm}'"))
    weights = [f.data.metrics["fusion_weight_a"] for f in folds]
    assert all(w in {i / 10 for i in range(11)} for w in weights)
    uas = [f.data.metrics["best_test_ua"] for f in folds]
    assert run.data.metrics["test_ua_mean"] == pytest.approx(np.mean(uas))
    assert f"UA {np.mean(uas):.3f}" in out.split("fused test")[1]
    # the fused run is a run like any other: reported, and compared utterance by utterance
    report = _cli("report", "--tracking-uri", _uri(ws), "--experiment", "bl",
                  "--layout", "tacn").stdout
    assert "fusion/svm/logmel_stats+logreg/logmel_stats" in report
    cmp = _cli("compare", fused, svm, "--tracking-uri", _uri(ws), "--resamples", "200").stdout
    assert "UA: A - B =" in cmp
    # one weight, 1: the fusion is run A's predictions again
    alone = _cli("fuse", svm, logreg, "--tracking-uri", _uri(ws), "--weights", "1",
                 "--no-mlflow").stdout
    rows = [ln.split() for ln in alone.splitlines() if re.match(r"fold\d", ln)]
    assert rows and all(r[1] == "1.00" and r[3] == r[4] for r in rows), alone
    bad = _cli("fuse", svm, logreg, "--tracking-uri", _uri(ws), "--weights", "0.5,2", code=2)
    assert "weights lie in [0, 1]" in bad.stderr
    # calibrated: the temperatures are printed and logged beside the weight
    out = _satn(ws, "fuse", svm, logreg, "--tracking-uri", _uri(ws), "--calibrate")
    assert "T(A)" in out and "T(B)" in out
    cal = out.split("MLflow run ")[1].split()[0]
    assert client.get_run(cal).data.params["fusion.calibrate"] == "True"
    assert run.data.params["fusion.calibrate"] == "False"
    for f in client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{cal}'"):
        assert f.data.metrics["fusion_temperature_a"] > 0
        assert f.data.metrics["fusion_temperature_b"] > 0


def test_average_logs_a_mean_that_report_fuse_and_compare_read(ws, baseline_runs):
    from mlflow.tracking import MlflowClient

    from satn.fusion import probabilities
    from satn.tracking import load_predictions

    _, runs = baseline_runs
    svm, logreg = runs["svm/logmel_stats"], runs["logreg/logmel_stats"]
    out = _satn(ws, "average", svm, logreg, "--tracking-uri", _uri(ws))
    mean = out.split("MLflow run ")[1].split()[0]
    client = MlflowClient(tracking_uri=_uri(ws))
    run = client.get_run(mean)
    assert run.data.tags["satn.kind"] == "average" and run.info.status == "FINISHED"
    assert run.data.tags["satn.variant"] == "mean/svm/logmel_stats+logreg/logmel_stats"
    assert run.data.tags["satn.average_of"] == f"{svm},{logreg}"
    folds = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{mean}'")
    uas = [f.data.metrics["best_test_ua"] for f in folds]
    assert len(folds) == 5 and run.data.metrics["test_ua_mean"] == pytest.approx(np.mean(uas))
    assert f"UA {np.mean(uas):.3f}" in out.split("mean of 2 runs")[1]
    # the logged predictions are the mean of the two runs' probabilities, row by row
    key = ["fold", "side", "id"]
    m = load_predictions(_uri(ws), mean).sort_values(key)
    a, b = (load_predictions(_uri(ws), r).sort_values(key) for r in (svm, logreg))
    classes = tuple(c.split(".", 1)[1] for c in m.columns if c.startswith("score."))
    np.testing.assert_allclose(probabilities(m, classes),
                               (probabilities(a, classes) + probabilities(b, classes)) / 2,
                               atol=1e-9)
    report = _cli("report", "--tracking-uri", _uri(ws), "--experiment", "bl",
                  "--layout", "tacn").stdout
    assert "mean/svm/logmel_stats+logreg/logmel_stats" in report
    # a run named by id is reported from whichever experiment holds it; an unknown id is
    # one clear line
    named = _cli("report", "--tracking-uri", _uri(ws), "--experiment", "elsewhere", "--run",
                 mean, "--no-ci").stdout
    assert "mean/svm/logmel_stats+logreg/logmel_stats" in named and "| 5 |" in named
    missing = _cli("report", "--tracking-uri", _uri(ws), "--run", "0" * 32, code=1).output
    assert f"no MLflow run '{'0' * 32}'" in missing and "Traceback" not in missing
    fused = _cli("fuse", mean, svm, "--tracking-uri", _uri(ws), "--no-mlflow").stdout
    assert "A: mean/svm/logmel_stats+logreg/logmel_stats" in fused
    assert "UA: A - B =" in _cli("compare", mean, svm, "--tracking-uri", _uri(ws),
                                  "--resamples", "200").stdout
    assert "at least two runs" in _cli("average", svm, "--tracking-uri", _uri(ws),
                                       code=2).output
    assert "given more than once" in _cli("average", svm, logreg, svm, "--tracking-uri",
                                          _uri(ws), code=2).output


def test_choose_names_the_best_dev_run_and_only_then_compares_its_test(ws, baseline_runs):
    import json

    from satn.significance import compare, fold_scores
    from satn.tracking import load_predictions

    _, runs = baseline_runs
    svm, logreg = runs["svm/logmel_stats"], runs["logreg/logmel_stats"]
    out = _satn(ws, "choose", f"svm={svm}", logreg, "--against", svm, "--tracking-uri",
                _uri(ws), "--json", ws / "choice.json", "--resamples", "200")
    frames = {r: load_predictions(_uri(ws), r) for r in (svm, logreg)}
    dev = {r: np.mean(list(fold_scores(f, "ua", side="dev").values()))
           for r, f in frames.items()}
    best = logreg if dev[logreg] > dev[svm] + 1e-12 else svm  # a tie: the first given
    record = json.loads((ws / "choice.json").read_text())
    assert record["chosen"] == best
    assert [c["label"] for c in record["candidates"]] == ["svm", "2"]
    assert re.search(r"^\*? *svm +\d\.\d{4} ", out, re.M)  # the label names its row
    assert [c["selection_score"] for c in record["candidates"]] == pytest.approx(
        [dev[svm], dev[logreg]])
    chosen_line = next(ln for ln in out.splitlines() if ln.startswith("chosen by"))
    assert best in chosen_line
    ua = compare(frames[best], frames[svm], "ua", n_resamples=200)
    assert record["against"][0]["ua"]["diff"] == pytest.approx(ua.diff.estimate)
    assert f"UA: chosen - this = {ua.diff.estimate:+.3f}" in out
    assert "at least two runs to choose among" in _cli("choose", svm, "--tracking-uri",
                                                       _uri(ws), code=2).output
    assert "its own non-empty label" in _cli("choose", f"a={svm}", f"a={logreg}",
                                             "--tracking-uri", _uri(ws), code=2).output
    unknown = _cli("choose", svm, logreg, "--against", "0" * 32, "--tracking-uri", _uri(ws),
                   code=1).output
    assert f"no MLflow run '{'0' * 32}'" in unknown and "chosen" not in unknown


def test_a_run_on_more_classes_is_fused_and_compared_on_the_others(ws, baseline_runs):
    """A four-class run against a three-class one on the same folds: the four-class run is
    scored on the three (the way a network trained on eight emotions meets a four-class
    baseline)."""
    from mlflow.tracking import MlflowClient

    _, runs = baseline_runs
    svm = runs["svm/logmel_stats"]
    three = ws / "three.yaml"
    three.write_text(yaml.safe_dump({**TINY, "data": {**TINY["data"],
                                                      "classes": ["neu", "hap", "sad"]}}))
    out = _cli("baseline", "--config", three, "--ray-config", ws / "runtime.yaml", "--features",
               "logmel_stats", "--classifier", "logreg", "--c", "1", "--no-progress").stdout
    small = out.split("MLflow run")[1].splitlines()[1].split()[-1]
    fused_out = _cli("fuse", svm, small, "--tracking-uri", _uri(ws), "--weights", "1").stdout
    assert "run A scored 4 classes" in fused_out and "on the 3 of the other run" in fused_out
    client = MlflowClient(tracking_uri=_uri(ws))
    fused = fused_out.split("MLflow run ")[1].split()[0]
    assert client.get_run(fused).data.params["data.classes"] == "neu,hap,sad"
    # w = 1: run A alone, on three classes: every row of the fused run is an A row renormalised
    from satn.predictions import restrict_classes
    from satn.tracking import load_predictions

    a3 = restrict_classes(load_predictions(_uri(ws), svm), ("neu", "hap", "sad"))
    f = load_predictions(_uri(ws), fused)
    assert len(f) == len(a3) and set(f["true"]) <= {"neu", "hap", "sad"}
    key = ["fold", "side", "id"]
    assert (f.sort_values(key)["pred"].to_numpy() == a3.sort_values(key)["pred"].to_numpy()).all()
    cmp = _cli("compare", svm, small, "--tracking-uri", _uri(ws), "--resamples", "200").stdout
    assert "run A scored 4 classes" in cmp and "UA: A - B =" in cmp
    n3 = int((a3["side"] == "test").sum())
    assert f"({n3} utterances)" in cmp
    # averaged: the four-class run is scored on the three as well
    avg = _cli("average", small, svm, "--tracking-uri", _uri(ws), "--no-mlflow").stdout
    assert "run 2 scored 4 classes" in avg and "on the 3 of the other run" in avg
