"""The cluster's MLflow server (cluster/start_mlflow.sh) runs MLflow's basic-auth app:
started here on 127.0.0.1 with the same settings file, it refuses anonymous requests
and satn's trials get in with the cluster.env credentials."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from satn.tracking import TrackingError, ensure_experiment


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory, repo_root_module):
    tmp = tmp_path_factory.mktemp("mlflow-auth")
    ini = (repo_root_module / "cluster" / "mlflow_auth.ini").read_text().replace(
        "sqlite:////shared/mlflow/basic_auth.db", f"sqlite:///{tmp / 'auth.db'}")
    (tmp / "auth.ini").write_text(ini)
    port = _free_port()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp), "MLFLOW_AUTH_CONFIG_PATH": str(tmp / "auth.ini"),
           "MLFLOW_AUTH_ADMIN_USERNAME": "satn", "MLFLOW_AUTH_ADMIN_PASSWORD": "s3cret-pass-word",
           "MLFLOW_FLASK_SERVER_SECRET_KEY": "k" * 64,
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # as cluster/start_mlflow.sh
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    proc = subprocess.Popen(
        [mlflow, "server", "--app-name", "basic-auth", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}",
         "--artifacts-destination", str(tmp / "artifacts")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)  # the server's uvicorn worker goes with it at the end
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            break
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(1)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the MLflow server did not start")
    yield url
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def repo_root_module() -> Path:
    return Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_anonymous_requests_are_refused(auth_server):
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{auth_server}/api/2.0/mlflow/experiments/search?max_results=1")
    assert e.value.code == 401


@pytest.mark.slow
def test_trials_log_in_with_the_cluster_credentials(auth_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "satn")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cret-pass-word")
    assert ensure_experiment(auth_server, "satn")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
    with pytest.raises(TrackingError, match="cannot be used"):
        ensure_experiment(auth_server, "satn")


def test_an_unreachable_store_is_one_clear_error_before_any_trial(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    with pytest.raises(TrackingError, match=r"MLflow store http://127.0.0.1:\d+ cannot be used"):
        ensure_experiment(f"http://127.0.0.1:{_free_port()}", "satn")
