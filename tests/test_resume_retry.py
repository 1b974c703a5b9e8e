"""A trial whose Ray worker dies mid-sweep is retried from its checkpoint, in the same
MLflow runs, while the driver lives on."""

from __future__ import annotations

import subprocess
import time

import psutil
import pytest
import yaml
from sweep_resume import SPACE, TINY, sweep_runs
from userenv import bare_env, entry_point


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
            client, runs = sweep_runs(uri)
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

    client, runs = sweep_runs(uri)
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    run = client.get_run(killed)
    assert run.data.tags.get("satn.resumed") == "1"  # retried in the same runs
    assert sorted({m.step for m in client.get_metric_history(killed, "dev_ua")}) == [1, 2, 3, 4]
