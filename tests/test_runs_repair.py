"""Runs left RUNNING by a process that ended are found and marked, and nothing else is."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from userenv import bare_env, entry_point

from satn.cli import main
from satn.tracking import (
    WRITER_TAG,
    ensure_experiment,
    mark_sweep_leftovers,
    open_client,
    repair_runs,
    writer_id,
)


def _run_in_ended_process(uri: str, exp_id: str) -> str:
    """A run created by a process that then exits without ending it (as a kill -9 leaves it)."""
    code = textwrap.dedent(f"""
        from satn.tracking import WRITER_TAG, open_client, writer_id
        run = open_client({uri!r}).create_run({exp_id!r}, run_name="orphan",
                                          tags={{WRITER_TAG: writer_id()}})
        print(run.info.run_id)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def test_repair_marks_runs_of_ended_processes_only(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = ensure_experiment(uri, "satn")
    client = open_client(uri)
    orphan = _run_in_ended_process(uri, exp)
    alive = client.create_run(exp, run_name="alive", tags={WRITER_TAG: writer_id()}).info.run_id
    elsewhere = client.create_run(exp, run_name="elsewhere",
                                  tags={WRITER_TAG: "gpu-node-7:4242:1.000"}).info.run_id
    old = client.create_run(exp, run_name="old", start_time=int((time.time() - 7200) * 1000),
                            tags={WRITER_TAG: "gpu-node-7:4243:1.000"}).info.run_id

    dry = CliRunner().invoke(main, ["runs", "repair", "--tracking-uri", uri, "--dry-run"])
    assert dry.exit_code == 0 and "would mark 1 run(s)" in dry.output and orphan in dry.output
    assert client.get_run(orphan).info.status == "RUNNING"  # a dry run changes nothing

    res = CliRunner().invoke(main, ["runs", "repair", "--tracking-uri", uri])
    assert res.exit_code == 0 and "marked 1 run(s) KILLED" in res.output
    run = client.get_run(orphan)
    assert run.info.status == "KILLED" and run.data.tags["satn.outcome"] == "orphaned"
    assert "has ended" in run.data.tags["satn.reason"]
    for rid in (alive, elsewhere, old):
        assert client.get_run(rid).info.status == "RUNNING"
    # runs written on other hosts: only by age, when asked
    taken = repair_runs(uri, older_than_hours=1.0)
    assert [o.run_id for o in taken] == [old]
    assert client.get_run(elsewhere).info.status == "RUNNING"


def test_repair_never_creates_a_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["runs", "repair"])
    assert res.exit_code == 1 and "no MLflow store at" in res.output
    assert not (tmp_path / "mlflow.db").exists()


def test_a_sweep_closes_its_own_leftovers(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = ensure_experiment(uri, "satn")
    client = open_client(uri)
    mine = client.create_run(exp, tags={"satn.sweep": "s1"}).info.run_id
    done = client.create_run(exp, tags={"satn.sweep": "s1"}).info.run_id
    client.set_terminated(done, "FINISHED")
    other = client.create_run(exp, tags={"satn.sweep": "s2"}).info.run_id
    assert mark_sweep_leftovers(uri, exp, "s1") == 1
    assert client.get_run(mine).info.status == "FAILED"
    assert "trial ended" in client.get_run(mine).data.tags["satn.reason"]
    assert client.get_run(done).info.status == "FINISHED"
    assert client.get_run(other).info.status == "RUNNING"


@pytest.mark.slow  # a killed `satn train` and the installed repair: over half a minute
def test_runs_of_a_killed_train_are_repaired_by_the_installed_command(tmp_path):
    """kill -9 of `satn train` leaves its config and fold runs RUNNING; repair marks them all."""
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump({
        "data": {"corpus": "demo", "demo_per_class": 2},
        "model": {"tcn": {"channels": 8, "dilations": [1]}, "attention": {"heads": 2}},
        "train": {"epochs": 500, "batch_size": 8, "device": "cpu"}}))
    env = bare_env(home)
    log = (tmp_path / "train.log").open("w")
    proc = subprocess.Popen([entry_point("satn"), "train", "--config", "tiny.yaml"],
                            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    deadline = time.time() + 300
    runs = []
    while time.time() < deadline and proc.poll() is None:
        time.sleep(1.0)
        if not (tmp_path / "mlflow.db").exists():
            continue
        try:
            exp = open_client(uri).get_experiment_by_name("satn")
            runs = open_client(uri).search_runs([exp.experiment_id]) if exp else []
        except Exception:  # the store is still being created
            continue
        if len(runs) == 6:  # the config run and its five fold runs
            break
    assert proc.poll() is None, (tmp_path / "train.log").read_text()[-3000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(runs) == 6 and {r.info.status for r in runs} == {"RUNNING"}

    res = subprocess.run([entry_point("satn"), "runs", "repair"], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert res.returncode == 0 and "marked 6 run(s) KILLED" in res.stdout, res.stdout + res.stderr
    statuses = {r.info.status for r in open_client(uri).search_runs([runs[0].info.experiment_id])}
    assert statuses == {"KILLED"}


def test_a_missing_model_path_creates_no_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    wav = Path(__file__).parent / "nonexistent.wav"
    for ref in ("models/best.pt", "run-1234"):
        res = CliRunner().invoke(main, ["predict", str(wav), "--model", ref])
        assert res.exit_code == 1
        assert ("no such checkpoint file" in res.output) or ("no MLflow store" in res.output)
        assert res.output.count("\n") == 1  # one line, said once
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("name", ["../outside", "/abs", "a/b"])
def test_a_sweep_name_cannot_leave_the_results_folder(name, tmp_path, monkeypatch):
    from satn.cli import sweep_main

    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(sweep_main, ["--space", "satn_tcn", "--name", name])
    assert res.exit_code == 1 and "sweep name" in res.output
    assert not (tmp_path / "satn-data").exists()  # refused before any work


def test_repair_and_predict_read_the_runtimes_store(tmp_path, monkeypatch):
    """With no --tracking-uri, both commands use the store ./ray_config.yaml names, as
    train, baseline, fuse and report do, not ./mlflow.db."""
    store = tmp_path / "elsewhere" / "mlflow.db"
    store.parent.mkdir()
    uri = f"sqlite:///{store}"
    ensure_experiment(uri, "satn")
    work = tmp_path / "work"
    work.mkdir()
    (work / "ray_config.yaml").write_text(f"mlflow:\n  tracking_uri: {uri}\n")
    monkeypatch.chdir(work)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    res = CliRunner().invoke(main, ["runs", "repair"])
    assert res.exit_code == 0, res.output
    assert f"marked 0 run(s) KILLED in {uri}" in res.output
    res = CliRunner().invoke(main, ["predict", "x.wav", "--model", "0123abcd"])
    assert res.exit_code == 1
    assert "neither a checkpoint file nor an MLflow run" in res.output
    assert "no MLflow store" not in res.output
    assert not (work / "mlflow.db").exists()
