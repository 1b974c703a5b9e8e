"""Kill a sweep's driver mid-sweep, then `satn-sweep --resume`: nothing finished is rerun,
the interrupted trial continues in its own MLflow runs, and nothing is left RUNNING."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import psutil
import pytest
import yaml
from userenv import bare_env, entry_point

from satn.tracking import _client

TINY = {
    "data": {"corpus": "demo", "demo_per_class": 2},
    "folds": {"scheme": "speaker_kfold", "k": 3},  # three folds: resuming, not folds, is tested
    "model": {"tcn": {"channels": 8, "dilations": [1]}, "attention": {"heads": 2}},
    "train": {"epochs": 4, "batch_size": 8, "lr": 3e-3, "device": "cpu"},
}
SPACE = {"name": "resume", "metric": "dev_ua_best", "mode": "max", "num_samples": 3,
         "seed": 0, "scheduler": {"kind": "fifo"},
         "params": {"train.lr": {"loguniform": [1e-3, 5e-3]}}}


def _runs(uri: str):
    client = _client(uri)
    exp = client.get_experiment_by_name("satn")
    if exp is None:
        return client, []
    return client, client.search_runs([exp.experiment_id], "tags.`satn.sweep` = 'r1'")


@pytest.mark.slow
@pytest.mark.timeout(1560)  # its own deadlines bound it: 600 s to the kill, 900 s to resume
def test_a_killed_sweep_resumes_without_rerunning_or_duplicating(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(SPACE))
    (tmp_path / "ray_config.yaml").write_text(yaml.safe_dump(
        {"ray": {"num_cpus": 2}, "max_concurrent_trials": 1}))
    args = [entry_point("satn-sweep"), "--space", "space.yaml", "--config", "tiny.yaml",
            "--name", "r1"]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = subprocess.Popen(args, cwd=tmp_path, env=bare_env(home), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline, interrupted = time.time() + 600, None
    while time.time() < deadline and proc.poll() is None:
        time.sleep(1.0)
        try:
            client, runs = _runs(uri)
        except Exception:  # the store is being created
            continue
        parents = [r for r in runs if r.data.tags.get("satn.level") == "config"]
        done = [p for p in parents if p.info.status == "FINISHED"]
        running = [p for p in parents if p.info.status == "RUNNING"]
        # one trial finished, the next past its second epoch's checkpoint
        if done and running and len(client.get_metric_history(running[0].info.run_id,
                                                                "dev_ua")) >= 2:
            interrupted = running[0].info.run_id
            break
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray it started, as a kill -9 would
    proc.wait()
    assert interrupted, "the sweep never reached the point to interrupt"
    finished_before = {p.info.run_id: p.info.end_time for p in parents
                       if p.info.status == "FINISHED"}
    time.sleep(2)

    res = subprocess.run([*args, "--resume"], cwd=tmp_path, env=bare_env(home),
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "sweep r1: 3 trial(s)" in res.stdout and "best configuration" in res.stdout

    client, runs = _runs(uri)
    parents = [r for r in runs if r.data.tags.get("satn.level") == "config"]
    folds = [r for r in runs if r.data.tags.get("satn.level") == "fold"]
    assert len(parents) == 3 and len(folds) == 9  # each trial and fold exactly once
    assert {r.info.status for r in runs} == {"FINISHED"}
    for run_id, end in finished_before.items():  # finished trials were not trained again
        assert client.get_run(run_id).info.end_time == end
    resumed = client.get_run(interrupted)
    assert resumed.data.tags.get("satn.resumed") == "1"
    steps = sorted({m.step for m in client.get_metric_history(interrupted, "dev_ua")})
    assert steps == [1, 2, 3, 4]  # continued from its checkpoint, not from epoch 1 again
    assert (tmp_path / "satn-runs" / "ray" / "r1" / "optuna.db").is_file()


def _trial_workers(root: psutil.Process) -> list[psutil.Process]:
    """The Ray worker processes running a Tune trial (the trainable's actor)."""
    found = []
    for p in root.children(recursive=True):
        try:
            if p.name().startswith("ray::") and ("ImplicitFunc" in p.name()
                                                 or "run_trial" in p.name()):
                found.append(p)
        except psutil.NoSuchProcess:
            continue
    return found


@pytest.mark.slow
@pytest.mark.timeout(1560)  # its own deadlines bound it: 600 s to the kill, 900 s to the end
def test_a_trial_whose_worker_dies_is_retried_from_its_checkpoint(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    (tmp_path / "space.yaml").write_text(yaml.safe_dump({**SPACE, "num_samples": 1}))
    (tmp_path / "ray_config.yaml").write_text(yaml.safe_dump(
        {"ray": {"num_cpus": 2}, "max_failures": 1}))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = subprocess.Popen([entry_point("satn-sweep"), "--space", "space.yaml", "--config",
                             "tiny.yaml", "--name", "r1"], cwd=tmp_path, env=bare_env(home),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    driver, killed, deadline = psutil.Process(proc.pid), None, time.time() + 600
    while time.time() < deadline and proc.poll() is None and killed is None:
        time.sleep(1.0)
        try:
            client, runs = _runs(uri)
            parents = [r for r in runs if r.data.tags.get("satn.level") == "config"]
            if parents and len(client.get_metric_history(parents[0].info.run_id,
                                                         "dev_ua")) >= 2:
                workers = _trial_workers(driver)
                if workers:
                    workers[0].kill()  # the trial's worker dies, the driver lives
                    killed = parents[0].info.run_id
        except Exception:  # the store is being created
            continue
    output = proc.communicate(timeout=900)[0]
    assert killed, "the trial's worker was never found to kill"
    assert proc.returncode == 0, output[-3000:]
    assert "1 trial(s), 0 stopped early, 0 failed" in output

    client, runs = _runs(uri)
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    run = client.get_run(killed)
    assert run.data.tags.get("satn.resumed") == "1"  # retried in the same runs
    assert sorted({m.step for m in client.get_metric_history(killed, "dev_ua")}) == [1, 2, 3, 4]
