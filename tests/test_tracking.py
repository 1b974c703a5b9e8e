"""Driver-side MLflow clean-up on a real local store."""

import pytest

from satn.tracking import ensure_experiment, mark_runs, open_client


@pytest.fixture()
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return uri, ensure_experiment(uri, "t")


def _config_with_folds(uri, exp_id, parent_status, fold_statuses):
    client = open_client(uri)
    parent = client.create_run(exp_id, tags={"satn.level": "config"}).info.run_id
    folds = [client.create_run(exp_id, tags={"mlflow.parentRunId": parent}).info.run_id
             for _ in fold_statuses]
    for run_id, status in [(parent, parent_status), *zip(folds, fold_statuses, strict=True)]:
        if status != "RUNNING":
            client.set_terminated(run_id, status)
    return client, parent, folds


def test_a_stopped_trial_is_marked_killed_with_its_reason(store):
    client, parent, folds = _config_with_folds(*store, "RUNNING", ["RUNNING", "RUNNING"])
    assert mark_runs(store[0], parent, "KILLED", {"satn.outcome": "stopped_early"})
    for run_id in [parent, *folds]:
        run = client.get_run(run_id)
        assert run.info.status == "KILLED"
        assert run.data.tags["satn.outcome"] == "stopped_early"


def test_a_trial_that_finished_before_the_stop_reached_it_is_left_alone(store):
    client, parent, folds = _config_with_folds(*store, "FINISHED", ["FINISHED", "FINISHED"])
    assert not mark_runs(store[0], parent, "KILLED", {"satn.outcome": "stopped_early"})
    for run_id in [parent, *folds]:
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and "satn.outcome" not in run.data.tags


def test_a_failed_trial_keeps_its_status_and_gets_the_reason(store):
    client, parent, folds = _config_with_folds(*store, "FAILED", ["FAILED", "RUNNING"])
    assert mark_runs(store[0], parent, "FAILED", {"satn.outcome": "error"})
    assert [client.get_run(r).info.status for r in folds] == ["FAILED", "FAILED"]
    assert client.get_run(parent).data.tags["satn.outcome"] == "error"


def test_the_experiment_opens_as_model_training_even_when_made_before_the_tag(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    old = open_client(uri).create_experiment("older")  # as satn made them before
    assert ensure_experiment(uri, "older") == old
    fresh = ensure_experiment(uri, "fresh")
    for exp_id in (old, fresh):
        tags = open_client(uri).get_experiment(exp_id).tags
        assert tags["mlflow.experimentKind"] == "custom_model_development"


_OPEN_AT = """
import sys, time
from pathlib import Path
from satn.tracking import open_client, ensure_experiment
uri, ready, n = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
(ready / sys.argv[4]).touch()
while len(list(ready.iterdir())) < n:  # all past their imports, then open together
    time.sleep(0.001)
ensure_experiment(uri, "satn")
print(len(open_client(uri).search_experiments()))
"""


@pytest.mark.slow  # four processes importing MLflow at once: over half a minute
def test_processes_opening_a_new_store_together_all_succeed(tmp_path):
    """`satn train` creating its store while another satn process reads it: MLflow's
    schema migrations must not run twice at once (one of them used to die with
    'table _alembic_tmp_... already exists')."""
    import subprocess
    import sys

    store, ready = tmp_path / "store", tmp_path / "ready"
    store.mkdir()
    ready.mkdir()
    uri = f"sqlite:///{store / 'mlflow.db'}"
    procs = [subprocess.Popen([sys.executable, "-c", _OPEN_AT, uri, str(ready), "4", str(i)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(4)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
        assert out.strip().splitlines()[-1] == "2"  # Default and satn, created once
    assert [p.name for p in store.iterdir()] == ["mlflow.db"]  # no lock file left
