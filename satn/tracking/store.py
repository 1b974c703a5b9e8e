"""The MLflow store: where it is, opening it, its experiments, and the small writers the
other tracking modules share (params in batches, timestamps, scores as metrics)."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Any

from satn.errors import InputError

DEFAULT_EXPERIMENT = "satn"
# MLflow 3's UI opens an experiment by its kind; untagged, it guesses and may open
# the GenAI traces overview. satn trains models: the model-training view.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def default_tracking_uri(workdir: str | Path | None = None) -> str:
    """A sqlite store in the working directory (MLFLOW_TRACKING_URI wins when set)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path(workdir or Path.cwd()).resolve() / 'mlflow.db'}"


def default_artifact_root(tracking_uri: str) -> str | None:
    """Artifacts beside a local sqlite store (``mlartifacts/``); the server decides otherwise."""
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri[len("sqlite:///"):]).parent / "mlartifacts").resolve().as_uri()
    return None


def open_client(tracking_uri: str):
    """An ``MlflowClient`` on ``tracking_uri``; a new sqlite store is created one process
    at a time."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keep stdout clean
    from mlflow.tracking import MlflowClient

    if not tracking_uri.startswith("sqlite:///"):
        return MlflowClient(tracking_uri=tracking_uri)
    # MlflowClient opens the store at once and, on a new sqlite file, runs MLflow's
    # schema migrations. Two processes doing that together (`satn train` creating
    # its store while `satn report` or a second train reads it) both create alembic's
    # temporary tables and one dies. Opening is serialised between processes.
    with _store_lock(Path(tracking_uri[len("sqlite:///"):]).parent):
        return MlflowClient(tracking_uri=tracking_uri)


@contextlib.contextmanager
def _store_lock(folder: Path):
    """An exclusive advisory lock on ``folder`` (flock on the directory itself, so no
    lock file is left behind). Where the filesystem cannot lock (some NFS mounts) it
    goes on unlocked, as MLflow itself would."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass
        yield
    finally:
        os.close(fd)  # closing releases the lock


class TrackingError(InputError):
    """The MLflow store cannot be reached or does not hold what was asked for."""


def ensure_experiment(tracking_uri: str, name: str = DEFAULT_EXPERIMENT,
                      artifact_root: str | None = None) -> str:
    """The id of experiment ``name``, created (with its artifact root) if needed.

    Called once by the driver so that trial workers never race to create the
    store's schema or the experiment. An unreachable store is one clear error here,
    before any trial starts.
    """
    client = open_client(tracking_uri)
    try:
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            if exp.tags.get(EXPERIMENT_KIND_TAG) is None:  # experiments made before the tag
                client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG,
                                          EXPERIMENT_KIND)
            return exp.experiment_id
        root = artifact_root if artifact_root is not None else default_artifact_root(tracking_uri)
        return client.create_experiment(name, artifact_location=root,
                                        tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    except Exception as e:  # MlflowException, connection errors, sqlite errors alike
        raise TrackingError(f"MLflow store {tracking_uri} cannot be used: "
                            f"{first_line(e)}") from e


def require_store(tracking_uri: str) -> str:
    """``tracking_uri`` if it names a store that exists; reading must not create one."""
    if tracking_uri.startswith("sqlite:///"):
        path = Path(tracking_uri[len("sqlite:///"):])
        if not path.is_file():
            raise TrackingError(f"no MLflow store at {path} (pass --tracking-uri, or set "
                                f"MLFLOW_TRACKING_URI)")
    return tracking_uri


def first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:300] if lines else type(e).__name__


def ui_hint(tracking_uri: str) -> str:
    if tracking_uri.startswith("sqlite:///"):
        root = default_artifact_root(tracking_uri)
        return (f"mlflow ui --backend-store-uri {tracking_uri} --default-artifact-root {root} "
                f"--workers 1   # then open http://127.0.0.1:5000")
    return f"open the MLflow server at {tracking_uri}"


def tag_run(tracking_uri: str, run_id: str, tags: dict[str, str]) -> None:
    client = open_client(tracking_uri)
    for k, v in tags.items():
        client.set_tag(run_id, k, v)


def log_params(client, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):  # MLflow's per-batch limit
        client.log_batch(run_id, params=items[i:i + 100])


def now_ms() -> int:
    import time

    return int(time.time() * 1000)


def scalars(scores) -> dict[str, float]:
    return {"wa": scores.wa, "ua": scores.ua, "f1": scores.f1}
