"""MLflow tracking: the only module of satn that imports mlflow.

One parent run per configuration, one child run per fold. Everything is
logged through ``MlflowClient`` with explicit run ids (no active-run globals),
so runs can be written from Ray workers and finished or marked by the driver.
Artifacts that matter (best checkpoint, confusion matrices, attention maps) are
logged as soon as a fold improves, before a tuner may stop the trial.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from satn.engine import EpochStats
from satn.plots import attention_png, confusion_png
from satn.runner import Experiment, ExperimentResult

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


def _client(tracking_uri: str):
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keep stdout clean
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def ensure_experiment(tracking_uri: str, name: str = DEFAULT_EXPERIMENT,
                      artifact_root: str | None = None) -> str:
    """The id of experiment ``name``, created (with its artifact root) if needed.

    Called once by the driver so that trial workers never race to create the
    store's schema or the experiment.
    """
    client = _client(tracking_uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.tags.get(EXPERIMENT_KIND_TAG) is None:  # experiments made before the tag
            client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return exp.experiment_id
    root = artifact_root if artifact_root is not None else default_artifact_root(tracking_uri)
    return client.create_experiment(name, artifact_location=root,
                                    tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})


def ui_hint(tracking_uri: str) -> str:
    if tracking_uri.startswith("sqlite:///"):
        root = default_artifact_root(tracking_uri)
        return (f"mlflow ui --backend-store-uri {tracking_uri} --default-artifact-root {root} "
                f"--workers 1   # then open http://127.0.0.1:5000")
    return f"open the MLflow server at {tracking_uri}"


class MlflowObserver:
    """Logs an :class:`Experiment` (runner observer) to MLflow."""

    def __init__(self, tracking_uri: str, experiment_id: str, run_name: str,
                 tags: dict[str, str] | None = None):
        self.client = _client(tracking_uri)
        self.experiment_id = experiment_id
        self.run_name = run_name
        self.tags = dict(tags or {})
        self.parent_id: str | None = None
        self.fold_runs: dict[str, str] = {}

    # ------------------------------------------------------------ observer hooks
    def on_start(self, experiment: Experiment) -> None:
        cfg = experiment.cfg
        manifest = experiment.dataset_manifest
        tags = {
            "satn.variant": cfg.model.variant,
            "satn.corpus": str(manifest.get("corpus", cfg.data.corpus)),
            "satn.protocol": cfg.data.protocol,
            "satn.features_key": str(manifest.get("key", "")),
            "satn.folds": ",".join(experiment.fold_names),
            **self.tags,
        }
        parent = self.client.create_run(self.experiment_id, run_name=self.run_name,
                                        tags={**tags, "satn.level": "config"})
        self.parent_id = parent.info.run_id
        self._log_params(self.parent_id, cfg.flat())
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "config.yaml"
            path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            self.client.log_artifact(self.parent_id, str(path))
        for pf in experiment.prepared:
            name = pf.fold.name
            child = self.client.create_run(
                self.experiment_id, run_name=f"{self.run_name}/{name}",
                tags={**tags, "mlflow.parentRunId": self.parent_id, "satn.level": "fold",
                      "satn.fold": name, "satn.held_out": pf.fold.group})
            run_id = child.info.run_id
            self.fold_runs[name] = run_id
            self._log_params(run_id, {
                **cfg.flat(), "fold.name": name, "fold.group": pf.fold.group,
                "fold.n_train": len(pf.fold.train), "fold.n_dev": len(pf.fold.dev),
                "fold.n_test": len(pf.fold.test), "fold.probes": ",".join(pf.data.probe_ids)})

    def on_epoch(self, experiment: Experiment, epoch: int, stats: dict[str, EpochStats],
                 final: ExperimentResult | None) -> None:
        from mlflow.entities import Metric

        now = _now_ms()
        for name, s in stats.items():
            metrics = {"train_loss": s.train_loss, "dev_loss": s.dev_loss, "dev_wa": s.dev.wa,
                       "dev_ua": s.dev.ua, "dev_f1": s.dev.f1, "epoch_seconds": s.seconds,
                       "lr": s.lr}
            # each loss term by name (L_SER, L_AT, ...), on both sides, beside the totals
            metrics.update({f"train_loss_{k}": v for k, v in s.train_losses.items()})
            metrics.update({f"dev_loss_{k}": v for k, v in s.dev_losses.items()})
            self.client.log_batch(self.fold_runs[name], metrics=[
                Metric(k, float(v), now, epoch) for k, v in metrics.items()])
            if s.improved:
                self._log_best(experiment, name)
        summary = experiment.epoch_summary(stats)
        self.client.log_batch(self.parent_id, metrics=[
            Metric(k, float(v), now, epoch) for k, v in summary.items()])
        if final is not None:
            self._finish(experiment, final)

    # ------------------------------------------------------------ helpers
    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow's per-batch limit
            self.client.log_batch(run_id, params=items[i:i + 100])

    def _log_best(self, experiment: Experiment, name: str) -> None:
        """Checkpoint, confusion matrices and attention maps of a fold's new best epoch."""
        from mlflow.entities import Metric

        from satn.checkpoint import save_checkpoint

        run_id = self.fold_runs[name]
        trainer = experiment.trainers[name]
        pf = next(p for p in experiment.prepared if p.fold.name == name)
        best = trainer.best
        classes = experiment.classes
        now = _now_ms()
        metrics = {"best_epoch": best.epoch,
                   **{f"best_dev_{k}": v for k, v in _scalars(best.dev).items()},
                   **{f"best_test_{k}": v for k, v in _scalars(best.test).items()}}
        self.client.log_batch(run_id, metrics=[
            Metric(k, float(v), now, best.epoch) for k, v in metrics.items()])
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            save_checkpoint(tmp / "best.pt", best.state_dict, cfg=experiment.cfg,
                            classes=classes, normalizer=pf.normalizer,
                            frame_shape=experiment.frame_shape,
                            extra={"fold": name, "epoch": best.epoch,
                                   "dev": _scalars(best.dev), "test": _scalars(best.test),
                                   "features_key": experiment.dataset_manifest.get("key")})
            self.client.log_artifact(run_id, str(tmp / "best.pt"), "checkpoint")
            conf = tmp / "confusion"
            conf.mkdir()
            for side, scores in (("dev", best.dev), ("test", best.test)):
                _write_confusion_csv(scores.confusion, classes, conf / f"{side}.csv")
                confusion_png(scores.confusion, classes, conf / f"{side}.png",
                              title=f"{name} {side} (epoch {best.epoch})")
            self.client.log_artifacts(run_id, str(conf), "confusion")
            if best.attention:
                att = tmp / "attention"
                att.mkdir()
                for uid, maps in best.attention.items():
                    np.save(att / f"{uid}.npy", maps)
                    attention_png(maps, att / f"{uid}.png", title=f"{uid} (epoch {best.epoch})")
                self.client.log_artifacts(run_id, str(att), "attention")

    def _finish(self, experiment: Experiment, result: ExperimentResult) -> None:
        from mlflow.entities import Metric

        now = _now_ms()
        for fr in result.folds:
            metrics = {**{f"dev_{k}_final": v for k, v in _scalars(fr.dev).items()},
                       **{f"test_{k}_final": v for k, v in _scalars(fr.test).items()},
                       "epochs_run": fr.epochs_run}
            run_id = self.fold_runs[fr.name]
            self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0)
                                                   for k, v in metrics.items()])
            self.client.set_terminated(run_id, "FINISHED")
        summary = result.summary()
        self.client.log_batch(self.parent_id, metrics=[
            Metric(k, float(v), now, 0) for k, v in summary.items() if np.isscalar(v)])
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            cm = result.test.confusion_normalised_mean
            _write_confusion_csv(cm, result.classes, tmp / "test_mean_normalised.csv", fmt="%.4f")
            confusion_png(cm, result.classes, tmp / "test_mean_normalised.png",
                          title="test, mean of row-normalised folds", normalise=False)
            (tmp / "summary.json").write_text(json.dumps(
                {"folds": [{"name": f.name, "best_epoch": f.best_epoch, "dev": _scalars(f.dev),
                            "test": _scalars(f.test)} for f in result.folds],
                 "summary": summary, "seconds": result.seconds}, indent=2, default=float))
            self.client.log_artifacts(self.parent_id, str(tmp), "results")
        self.client.set_terminated(self.parent_id, "FINISHED")

    def fail(self, status: str = "FAILED") -> None:
        """Mark the runs of an experiment that did not finish (error or early stop)."""
        for run_id in [*self.fold_runs.values(), self.parent_id]:
            if run_id and self.client.get_run(run_id).info.status == "RUNNING":
                self.client.set_terminated(run_id, status)


def mark_runs(tracking_uri: str, parent_id: str, status: str, tags: dict[str, str]) -> bool:
    """Driver-side clean-up: set status and tags on a parent run and its unfinished fold runs.

    A run already FINISHED is left alone: its trial trained to the end and logged
    its results before the tuner's stop reached it. Returns False when the
    parent itself had finished (nothing was lost).
    """
    client = _client(tracking_uri)
    parent = client.get_run(parent_id)
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")
    for run in [parent, *children]:
        if run.info.status == "FINISHED":
            continue
        for k, v in tags.items():
            client.set_tag(run.info.run_id, k, v)
        if run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, status)
    return parent.info.status != "FINISHED"


def find_checkpoint(tracking_uri: str, run_id: str, dest: str | Path) -> Path:
    """Download the best checkpoint of a fold run, or of a config run's best fold (dev UA)."""
    client = _client(tracking_uri)
    run = client.get_run(run_id)
    if run.data.tags.get("satn.level") == "config":
        children = client.search_runs(
            [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'",
            order_by=["metrics.best_dev_ua DESC"], max_results=1)
        if not children:
            raise FileNotFoundError(f"MLflow run {run_id} has no fold runs")
        run = children[0]
    path = client.download_artifacts(run.info.run_id, "checkpoint/best.pt", str(dest))
    return Path(path)


def _scalars(scores) -> dict[str, float]:
    return {"wa": scores.wa, "ua": scores.ua, "f1": scores.f1}


def _write_confusion_csv(matrix: np.ndarray, classes: tuple[str, ...], path: Path,
                         fmt: str = "%d") -> None:
    header = "true\\pred," + ",".join(classes)
    rows = [f"{c}," + ",".join(fmt % v for v in row) for c, row in zip(classes, matrix,
                                                                      strict=True)]
    path.write_text("\n".join([header, *rows]) + "\n")


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def tag_run(tracking_uri: str, run_id: str, tags: dict[str, str]) -> None:
    client = _client(tracking_uri)
    for k, v in tags.items():
        client.set_tag(run_id, k, v)


def log_finished_run(tracking_uri: str, experiment_id: str, run_name: str,
                     params: dict[str, Any], history: list[dict[str, float]],
                     artifacts: dict[str, str | Path], tags: dict[str, str] | None = None,
                     level: str = "pretrain") -> str:
    """One finished run for a job outside the runner (VQ-VAE pretraining, figures):
    params, per-step metrics, files by folder.

    ``history`` rows carry a ``step`` and metrics; ``artifacts`` maps an artifact
    folder (``model``, ``figures``) to a local file or folder. Returns the run id.
    """
    from mlflow.entities import Metric, Param

    client = _client(tracking_uri)
    run = client.create_run(experiment_id, run_name=run_name,
                            tags={"satn.level": level, **(tags or {})})
    run_id = run.info.run_id
    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=items[i:i + 100])
    now = _now_ms()
    metrics = [Metric(k, float(v), now, int(row["step"])) for row in history
               for k, v in row.items() if k != "step"]
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i:i + 1000])
    for folder, path in artifacts.items():
        path = Path(path)
        if path.is_dir():
            client.log_artifacts(run_id, str(path), folder)
        else:
            client.log_artifact(run_id, str(path), folder)
    client.set_terminated(run_id, "FINISHED")
    return run_id


def fold_checkpoint(tracking_uri: str, run_id: str, fold: str, dest: str | Path) -> Path:
    """Download the best checkpoint of fold ``fold`` of config run ``run_id``."""
    client = _client(tracking_uri)
    run = client.get_run(run_id)
    children = client.search_runs(
        [run.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{run_id}' and tags.`satn.fold` = '{fold}'")
    if not children:
        raise FileNotFoundError(f"MLflow run {run_id} has no fold run {fold!r}")
    path = client.download_artifacts(children[0].info.run_id, "checkpoint/best.pt", str(dest))
    return Path(path)


def read_runs(tracking_uri: str, experiment: str = DEFAULT_EXPERIMENT, *,
              sweep: str | None = None, run_ids: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Configuration runs with their folds' best-dev-epoch scores, for reports.

    Picks the config runs of ``sweep`` (tag ``satn.sweep``), or those named in
    ``run_ids``, or every config run of ``experiment``. Each record: ``run_id``,
    ``name``, ``status``, ``variant``, ``params`` (searched values), and
    ``folds``: a list of {``fold``, ``dev_wa``, ``dev_ua``, ``test_wa``, ``test_ua``}
    from each fold run's best dev epoch.
    """
    client = _client(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise LookupError(f"no MLflow experiment {experiment!r} in {tracking_uri}")
    ids = [exp.experiment_id]
    if run_ids:
        parents = [client.get_run(r) for r in run_ids]
    else:
        where = "tags.`satn.level` = 'config'"
        if sweep:
            where += f" AND tags.`satn.sweep` = '{sweep}'"
        parents = client.search_runs(ids, filter_string=where, max_results=50000)
    records = []
    for run in parents:
        children = client.search_runs(
            ids, filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'",
            max_results=50000)
        folds = []
        for child in sorted(children, key=lambda c: c.data.tags.get("satn.fold", "")):
            m = child.data.metrics
            if "best_dev_ua" not in m:  # a fold that never finished an epoch
                continue
            folds.append({"fold": child.data.tags.get("satn.fold", child.info.run_name),
                          **{f"{side}_{k}": m[f"best_{side}_{k}"] for side in ("dev", "test")
                             for k in ("wa", "ua", "f1") if f"best_{side}_{k}" in m}})
        records.append({
            "run_id": run.info.run_id, "name": run.info.run_name, "status": run.info.status,
            "variant": run.data.tags.get("satn.variant", run.data.params.get("model.variant")),
            "params": json.loads(run.data.tags.get("satn.search_params", "{}")),
            "folds": folds})
    return records
