"""Kill a sweep's driver mid-sweep, then `satn-sweep --resume`: nothing finished is rerun,
the interrupted trial continues in its own MLflow runs, and nothing is left RUNNING."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import yaml
from sweep_resume import SPACE, TINY, sweep_runs
from userenv import bare_env, entry_point


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
    # Tune saves its record of the trials every 10 s or more (longer on a loaded machine);
    # this sweep's trials last seconds, so the killed one saves it every second (the
    # resumed one runs as a user's would)
    killed_env = {**bare_env(home), "TUNE_GLOBAL_CHECKPOINT_S": "1"}
    proc = subprocess.Popen(args, cwd=tmp_path, env=killed_env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline, interrupted = time.time() + 600, None
    while time.time() < deadline and proc.poll() is None:
        time.sleep(1.0)
        try:
            client, runs = sweep_runs(uri)
        except Exception:  # the store is being created
            continue
        parents = [r for r in runs if r.data.tags.get("satn.level") == "config"]
        done = [p for p in parents if p.info.status == "FINISHED"]
        running = [p for p in parents if p.info.status == "RUNNING"]
        # one trial finished, the next past its second epoch's checkpoint, and Tune's own
        # record (saved every few seconds) knows that trial: one it never recorded comes
        # back as a new trial, which no resume can avoid
        if done and running and len(client.get_metric_history(running[0].info.run_id,
                                                                "dev_ua")) >= 2 \
                and _tune_knows(tmp_path, running[0].data.tags["satn.trial"]):
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
    assert "sweep r1: 2 trial(s)" in res.stdout and "best configuration" in res.stdout

    client, runs = sweep_runs(uri)
    parents = [r for r in runs if r.data.tags.get("satn.level") == "config"]
    folds = [r for r in runs if r.data.tags.get("satn.level") == "fold"]
    assert len(parents) == 2 and len(folds) == 6  # each trial and fold exactly once
    assert {r.info.status for r in runs} == {"FINISHED"}
    for run_id, end in finished_before.items():  # finished trials were not trained again
        assert client.get_run(run_id).info.end_time == end
    resumed = client.get_run(interrupted)
    assert resumed.data.tags.get("satn.resumed") == "1"
    steps = sorted({m.step for m in client.get_metric_history(interrupted, "dev_ua")})
    assert steps == [1, 2, 3, 4]  # continued from its checkpoint, not from epoch 1 again
    assert (tmp_path / "satn-runs" / "ray" / "r1" / "optuna.db").is_file()
    # every checkpoint folder Tune may have recorded is still there (a resume from a lagging
    # record finds it), and only the newest states of each trial take disk
    from satn.sweep import KEEP_STATES, TRIAL_STATE

    trials = list((tmp_path / "satn-runs" / "ray" / "r1").glob("run_trial_*"))
    assert len(trials) == 2
    # the trial that was never interrupted reported four epochs: four folders (a resumed
    # attempt may number its checkpoints from 0 again, over its earlier folders)
    assert max(len(list(t.glob("checkpoint_*"))) for t in trials) == 4
    for trial in trials:
        assert 1 <= len(list(trial.glob(f"checkpoint_*/{TRIAL_STATE}"))) <= KEEP_STATES


def _tune_knows(tmp_path, trial_id: str) -> bool:
    states = (tmp_path / "satn-runs" / "ray" / "r1").glob("experiment_state-*.json")
    return any(trial_id in f.read_text(errors="replace") for f in states)
