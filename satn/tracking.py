"""MLflow tracking: the only module of satn that imports mlflow.

One parent run per configuration, one child run per fold. Everything is
logged through ``MlflowClient`` with explicit run ids (no active-run globals),
so runs can be written from Ray workers and finished or marked by the driver.
The data of a fold's best epoch (checkpoint, per-utterance predictions, confusion
tables, attention arrays) is logged as soon as the fold improves, before a tuner may
stop the trial. Its pictures are drawn once, from the final best, when the fold's run
ends: drawing them at every improvement cost more than training a small model. A trial
a tuner stops early gets its pictures from the sweep's driver, drawn from that data
(:func:`draw_stored_figures`); a run killed with its driver keeps the data only.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from satn.engine import EpochStats
from satn.errors import InputError
from satn.folddata import eval_labels
from satn.plots import attention_png, confusion_png
from satn.runner import CrossValidation, CrossValidationResult
from satn.safenames import INDEX, safe_names, write_index

DEFAULT_EXPERIMENT = "satn"
WRITER_TAG = "satn.writer"  # host:pid:process start time of the process that writes a run
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
    client = _client(tracking_uri)
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
                            f"{_first_line(e)}") from e


def require_store(tracking_uri: str) -> str:
    """``tracking_uri`` if it names a store that exists; reading must not create one."""
    if tracking_uri.startswith("sqlite:///"):
        path = Path(tracking_uri[len("sqlite:///"):])
        if not path.is_file():
            raise TrackingError(f"no MLflow store at {path} (pass --tracking-uri, or set "
                                f"MLFLOW_TRACKING_URI)")
    return tracking_uri


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:300] if lines else type(e).__name__


def ui_hint(tracking_uri: str) -> str:
    if tracking_uri.startswith("sqlite:///"):
        root = default_artifact_root(tracking_uri)
        return (f"mlflow ui --backend-store-uri {tracking_uri} --default-artifact-root {root} "
                f"--workers 1   # then open http://127.0.0.1:5000")
    return f"open the MLflow server at {tracking_uri}"


class MlflowObserver:
    """Logs an :class:`CrossValidation` (runner observer) to MLflow."""

    def __init__(self, tracking_uri: str, experiment_id: str, run_name: str,
                 tags: dict[str, str] | None = None):
        self.client = _client(tracking_uri)
        self.experiment_id = experiment_id
        self.run_name = run_name
        # which process writes these runs: `satn runs repair` knows them orphaned once it ends
        self.tags = {WRITER_TAG: writer_id(), **(tags or {})}
        self.parent_id: str | None = None
        self.fold_runs: dict[str, str] = {}

    def resume(self, parent_id: str, fold_runs: dict[str, str]) -> None:
        """Continue logging into the runs of an earlier attempt of the same trial.

        A killed sweep's runs were marked KILLED (``repair_runs``); they are
        RUNNING again while the restored trial trains, so each fold stays one run.
        """
        self.parent_id, self.fold_runs = parent_id, dict(fold_runs)
        for run_id in [parent_id, *fold_runs.values()]:
            tags = self.client.get_run(run_id).data.tags
            for key in ("satn.outcome", "satn.reason"):  # what repair said of the kill
                if key in tags:
                    self.client.delete_tag(run_id, key)
            self.client.update_run(run_id, status="RUNNING")
            self.client.set_tag(run_id, WRITER_TAG, self.tags[WRITER_TAG])
            self.client.set_tag(run_id, "satn.resumed", str(int(tags.get("satn.resumed", 0)) + 1))

    # ------------------------------------------------------------ observer hooks
    def on_start(self, cv: CrossValidation) -> None:
        if self.parent_id is not None:  # resumed: the runs exist
            return
        cfg = cv.cfg
        manifest = cv.dataset_manifest
        tags = {
            "satn.variant": cfg.model.variant,
            "satn.corpus": str(manifest.get("corpus", cfg.data.corpus)),
            "satn.protocol": cfg.data.protocol,
            "satn.features_key": str(manifest.get("key", "")),
            "satn.folds": ",".join(cv.fold_names),
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
        ensembles = cfg.selection.ensembles
        for pf in cv.prepared:
            name = pf.fold.name
            # with an ensemble per outer fold, the fold runs are the ensembles' (logged at
            # the end), and each model's run is a member of one
            level = ({"satn.level": "member", "satn.outer": pf.fold.scored_as} if ensembles
                     else {"satn.level": "fold"})
            child = self.client.create_run(
                self.experiment_id, run_name=f"{self.run_name}/{name}",
                tags={**tags, "mlflow.parentRunId": self.parent_id, **level,
                      "satn.fold": name, "satn.held_out": pf.fold.group})
            run_id = child.info.run_id
            self.fold_runs[name] = run_id
            self._log_params(run_id, {
                **cfg.flat(), "fold.name": name, "fold.group": pf.fold.group,
                "fold.n_train": len(pf.fold.train), "fold.n_dev": len(pf.fold.dev),
                "fold.n_test": len(pf.fold.test), "fold.probes": ",".join(pf.data.probe_ids)})

    def on_epoch(self, cv: CrossValidation, epoch: int, stats: dict[str, EpochStats],
                 final: CrossValidationResult | None) -> None:
        from mlflow.entities import Metric

        now = _now_ms()
        for name, s in stats.items():
            metrics = {"train_loss": s.train_loss, "dev_loss": s.dev_loss, "dev_wa": s.dev.wa,
                       "dev_ua": s.dev.ua, "dev_f1": s.dev.f1, "epoch_seconds": s.seconds,
                       "lr": s.lr}
            # each loss term by name (L_SER, L_AT, ...), on both sides, beside the totals
            metrics.update({f"train_loss_{k}": v for k, v in s.train_losses.items()})
            metrics.update({f"dev_loss_{k}": v for k, v in s.dev_losses.items()})
            where = cv.placement.get(name)
            if where and epoch == 1:  # which worker, node and GPU trained it, and when
                self.client.set_tag(self.fold_runs[name], "satn.placement",
                                    json.dumps(where, default=str))
            self.client.log_batch(self.fold_runs[name], metrics=[
                Metric(k, float(v), now, epoch) for k, v in metrics.items()])
            if s.improved:
                self._log_best(cv, name)
        summary = cv.epoch_summary(stats)
        self.client.log_batch(self.parent_id, metrics=[
            Metric(k, float(v), now, epoch) for k, v in summary.items()])
        if final is not None:
            self._finish(cv, final)

    # ------------------------------------------------------------ helpers
    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow's per-batch limit
            self.client.log_batch(run_id, params=items[i:i + 100])

    def _log_best(self, cv: CrossValidation, name: str) -> None:
        """Checkpoint, predictions, confusion tables and attention arrays of a fold's new
        best epoch (the pictures follow when the fold ends: :meth:`_log_best_figures`)."""
        from mlflow.entities import Metric

        from satn.checkpoint import save_checkpoint

        run_id = self.fold_runs[name]
        trainer = cv.trainers[name]
        pf = next(p for p in cv.prepared if p.fold.name == name)
        best = trainer.best
        classes = cv.classes
        now = _now_ms()
        metrics = {"best_epoch": best.epoch,
                   **{f"best_dev_{k}": v for k, v in _scalars(best.dev).items()},
                   **{f"best_test_{k}": v for k, v in _scalars(best.test).items()}}
        self.client.log_batch(run_id, metrics=[
            Metric(k, float(v), now, best.epoch) for k, v in metrics.items()])
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            save_checkpoint(tmp / "best.pt", best.state_dict, cfg=cv.cfg,
                            classes=classes, normalizer=pf.normalizer,
                            frame_shape=cv.frame_shape,
                            extra={"fold": name, "epoch": best.epoch,
                                   "dev": _scalars(best.dev), "test": _scalars(best.test),
                                   "features_key": cv.dataset_manifest.get("key")})
            self.client.log_artifact(run_id, str(tmp / "best.pt"), "checkpoint")
            conf = _confusions(tmp, classes, best.dev, best.test, pictures=False)
            self.client.log_artifacts(run_id, str(conf), "confusion")
            if best.evaluations:
                _write_neural_predictions(cv, pf, best.evaluations, tmp / "predictions")
                self.client.log_artifacts(run_id, str(tmp / "predictions"), "predictions")
            if best.attention:
                att = tmp / "attention"
                att.mkdir()
                # ids come from the corpus: file names must not (../../x, /abs, a/b)
                names = safe_names(best.attention)
                for safe, uid in names.items():
                    np.save(att / f"{safe}.npy", best.attention[uid])
                write_index(att, names)
                self.client.log_artifacts(run_id, str(att), "attention")

    def _log_best_figures(self, cv: CrossValidation, name: str) -> None:
        """The pictures of a fold's final best epoch: its dev and test confusion matrices
        and its probes' attention maps, beside the tables and arrays they draw."""
        trainer = cv.trainers.get(name)
        best = trainer.best if trainer is not None else None
        if best is None:
            return
        names = safe_names(best.attention or {})
        with tempfile.TemporaryDirectory() as tmp:
            _log_figures(self.client, self.fold_runs[name], Path(tmp), cv.classes,
                         {"dev": best.dev.confusion, "test": best.test.confusion},
                         {safe: (uid, best.attention[uid]) for safe, uid in names.items()},
                         name, best.epoch)

    def _finish(self, cv: CrossValidation, result: CrossValidationResult) -> None:
        from mlflow.entities import Metric

        now = _now_ms()
        for fr in result.members or result.folds:
            run_id = self.fold_runs[fr.name]
            self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0)
                                                   for k, v in _final_metrics(fr).items()])
            self._log_best_figures(cv, fr.name)
            self.client.set_terminated(run_id, "FINISHED")
        for fr in result.folds if result.ensembles else ():
            self._log_ensemble(cv, fr, result.ensembles[fr.name])
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

    def _log_ensemble(self, cv: CrossValidation, fr, evaluations) -> None:
        """An outer fold scored by several models: a fold run of its own with the combined
        figures, confusion matrices and per-utterance predictions (``satn compare``)."""
        from mlflow.entities import Metric

        cfg = cv.cfg
        group = cv.outer_folds()[fr.name]
        parent = self.client.get_run(self.parent_id).data.tags
        tags = {k: v for k, v in parent.items() if k.startswith("satn.") and k != "satn.level"}
        run_id = self.client.create_run(
            self.experiment_id, run_name=f"{self.run_name}/{fr.name}",
            tags={**tags, "mlflow.parentRunId": self.parent_id, "satn.level": "fold",
                  "satn.fold": fr.name, "satn.held_out": fr.group,
                  "satn.members": ",".join(pf.fold.name for pf in group)}).info.run_id
        self.fold_runs[fr.name] = run_id
        self._log_params(run_id, {
            **cfg.flat(), "fold.name": fr.name, "fold.group": fr.group,
            "fold.members": len(group), "fold.n_test": len(group[0].fold.test),
            "fold.n_dev": len(evaluations["dev"].ids)})
        metrics = {**_final_metrics(fr), "best_epoch_median": fr.best_epoch}
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), _now_ms(), 0)
                                               for k, v in metrics.items()])
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            conf = _confusions(tmp, cv.classes, fr.dev, fr.test,
                               f"{fr.name} {{side}} (ensemble of {len(group)})")
            self.client.log_artifacts(run_id, str(conf), "confusion")
            _write_predictions_of(cv, evaluations, eval_labels(group),
                                  tmp / "predictions")
            self.client.log_artifacts(run_id, str(tmp / "predictions"), "predictions")
        self.client.set_terminated(run_id, "FINISHED")

    def fail(self, status: str = "FAILED") -> None:
        """Mark the runs of a cross-validation that did not finish (error or early stop)."""
        for run_id in [*self.fold_runs.values(), self.parent_id]:
            if run_id and self.client.get_run(run_id).info.status == "RUNNING":
                self.client.set_terminated(run_id, status)


def log_baseline(tracking_uri: str, experiment_id: str, cfg, result, *,
                 run_name: str | None = None, tags: dict[str, str] | None = None,
                 features: dict[str, str] | None = None) -> str:
    """Log a classical baseline (``satn.baselines.BaselineResult``) as neural runs are logged.

    A config run (``satn.level=config``, ``satn.variant`` = e.g. ``svm/egemaps``) with the
    fold-mean metrics (``test_ua_mean``, ...) and ``results/``; a child run per fold
    (``satn.level=fold``) with ``best_dev_*`` / ``best_test_*`` and ``*_final`` metrics,
    the chosen C, confusion matrices and ``predictions/predictions.parquet``.
    ``features``: ``uri`` and ``key`` of the cached feature dataset. Returns the config run id.
    """
    bcfg = result.cfg
    features = features or {}
    base_tags = {
        "satn.variant": bcfg.name, "satn.kind": "classical", "satn.corpus": cfg.data.corpus,
        "satn.protocol": cfg.data.protocol, "satn.features_key": features.get("key", ""),
        "satn.folds": ",".join(f.name for f in result.folds), **(tags or {})}
    params = {**{k: v for k, v in cfg.flat().items() if k.split(".")[0] in
                 ("data", "folds", "features", "selection")}, **bcfg.flat(),
              "model.variant": bcfg.name,
              "baseline.features_uri": features.get("uri", "")}
    config = {**cfg.to_dict(), "baseline": {k.split(".", 1)[1]: v
                                            for k, v in bcfg.flat().items()}}
    folds = [_ScoredFold(
        name=fr.name, tags={"satn.held_out": fr.group},
        params={"fold.name": fr.name, "fold.group": fr.group,
                **{f"fold.n_{k}": v for k, v in fr.sizes.items()}, "baseline.c": fr.c},
        metrics={"baseline_c": fr.c}, curve=("dev_ua_by_c", fr.dev_ua_by_c), dev=fr.dev,
        test=fr.test, predictions=fr.predictions,
        title=f"{fr.name} {{side}} ({bcfg.name}, C={fr.c:g})", summary={"c": fr.c})
        for fr in result.folds]
    return _log_scored_run(
        _client(tracking_uri), experiment_id, run_name or f"baseline/{bcfg.name}", base_tags,
        params, config, folds, result.classes, bcfg.score_kind, result.summary(),
        result.test.confusion_normalised_mean, bcfg.name, {"seconds": result.seconds})


def log_fusion(tracking_uri: str, experiment_id: str, result, runs: dict[str, dict[str, str]],
               *, run_name: str | None = None) -> str:
    """Log a late fusion (``satn.fusion.FusionResult``) of two runs like a baseline run.

    ``runs``: ``{"a": {...}, "b": {...}}`` with each fused run's ``run_id``, ``name``,
    ``variant``, ``uri`` (kept as ``fusion.*`` params and tags). Fold runs hold the weight
    chosen on dev (``fusion_weight_a``), dev UA over the weight grid, confusion matrices
    and the fused predictions. Returns the config run id.
    """
    variant = f"fusion/{runs['a']['variant']}+{runs['b']['variant']}"
    base_tags = {"satn.variant": variant, "satn.kind": "fusion",
                 "satn.fusion_of": f"{runs['a']['run_id']},{runs['b']['run_id']}",
                 "satn.folds": ",".join(f.name for f in result.folds)}
    params = {"model.variant": variant, "data.classes": ",".join(result.classes),
              **{f"fusion.{side}_{k}": v for side, r in runs.items() for k, v in r.items()},
              "fusion.grid": ",".join(f"{w:g}" for w in result.grid)}
    folds = [_ScoredFold(
        name=f.name, tags={}, params={"fold.name": f.name, "fusion.weight_a": f.weight},
        metrics={"fusion_weight_a": f.weight}, curve=("dev_ua_by_weight", f.dev_ua_by_weight),
        dev=f.dev, test=f.test, predictions=f.predictions,
        title=f"{f.name} {{side}} ({variant}, w={f.weight:g})", summary={"weight_a": f.weight})
        for f in result.folds]
    return _log_scored_run(
        _client(tracking_uri), experiment_id, run_name or variant, base_tags, params,
        {"fusion": runs}, folds, result.classes, "probability", result.summary(),
        result.test.confusion_normalised_mean, variant, {})


def log_refit(tracking_uri: str, experiment_id: str, cfg, source: dict[str, str],
              folds: list[dict[str, Any]], classes: tuple[str, ...]) -> str:
    """Log a refit (``satn.refit``) of run ``source`` (``run_id``, ``name``, ``variant``) as
    a run that ``satn report``, ``satn compare`` and ``satn fuse`` read like any other.

    ``folds``: per outer fold ``name``, ``epoch`` (chosen by the inner folds),
    ``dev_ua_by_epoch`` (their mean dev curve), ``dev`` / ``test`` (Scores: the inner
    folds' pooled dev, the refit's test), ``predictions`` (those rows) and ``checkpoint``
    (the refit model, logged as ``checkpoint/best.pt`` for ``satn predict``).
    Returns the config run id.
    """
    from satn.metrics import aggregate

    variant = f"{source['variant']}+refit"
    base_tags = {"satn.variant": variant, "satn.kind": "refit",
                 "satn.refit_of": source["run_id"], "satn.corpus": cfg.data.corpus,
                 "satn.protocol": cfg.data.protocol,
                 "satn.folds": ",".join(f["name"] for f in folds)}
    params = {**cfg.flat(), "model.variant": cfg.model.variant,
              "refit.of": source["run_id"], "refit.of_name": source["name"]}
    scored = [_ScoredFold(
        name=f["name"], tags={}, params={"fold.name": f["name"], "refit.epoch": f["epoch"]},
        metrics={"refit_epoch": f["epoch"]}, curve=("dev_ua_by_epoch", f["dev_ua_by_epoch"]),
        dev=f["dev"], test=f["test"], predictions=f["predictions"],
        title=f"{f['name']} {{side}} ({variant}, {f['epoch']} epochs)",
        summary={"epoch": f["epoch"]}, artifacts={"checkpoint": f["checkpoint"]})
        for f in folds]
    test = aggregate([f.test for f in scored])
    dev = aggregate([f.dev for f in scored])
    summary = {f"{side}_{k}": v for side, agg in (("dev", dev), ("test", test))
               for k, v in agg.to_dict().items()}
    config = {**cfg.to_dict(), "refit": {"of": source["run_id"],
                                         "epochs": {f["name"]: f["epoch"] for f in folds}}}
    return _log_scored_run(
        _client(tracking_uri), experiment_id, f"refit/{source['name']}", base_tags, params,
        config, scored, classes, "probability", summary, test.confusion_normalised_mean,
        variant, {"seconds": float(sum(f["seconds"] for f in folds))})


def run_config(tracking_uri: str, run_id: str) -> dict[str, Any]:
    """The experiment config a run logged (its ``config.yaml`` artifact)."""
    client = _client(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, "config.yaml", tmp)
        except Exception as e:  # MLflow's own exception types for a missing run or file
            raise TrackingError(f"MLflow run {run_id} in {tracking_uri} has no config.yaml "
                                f"({_first_line(e)})") from e
        return yaml.safe_load(Path(path).read_text())


def run_tags(tracking_uri: str, run_id: str) -> dict[str, str]:
    """A run's tags (``satn.features_key``, ``satn.variant``, ...)."""
    return dict(_client(tracking_uri).get_run(run_id).data.tags)


def member_curves(tracking_uri: str, run_id: str) -> dict[str, list[list[float]]]:
    """Outer fold -> each of its member models' dev UA per epoch (a run selected by
    inner folds, ``selection.inner_k``); empty for a run without members."""
    client = _client(tracking_uri)
    run = client.get_run(run_id)
    members = client.search_runs(
        [run.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{run_id}' and tags.`satn.level` = 'member'")
    out: dict[str, list[list[float]]] = {}
    for m in sorted(members, key=lambda r: r.info.run_name or ""):
        history = sorted(client.get_metric_history(m.info.run_id, "dev_ua"),
                         key=lambda x: x.step)
        out.setdefault(m.data.tags.get("satn.outer", ""), []).append(
            [float(x.value) for x in history])
    return out


@dataclass(frozen=True)
class _ScoredFold:
    """One fold of a run that is scored, not trained epoch by epoch (baseline, fusion)."""

    name: str
    tags: dict[str, str]
    params: dict[str, Any]
    metrics: dict[str, float]       # the value chosen on dev (C, a weight)
    curve: tuple[str, dict]         # dev UA over the values tried, logged as steps
    dev: Any                        # satn.metrics.Scores
    test: Any
    predictions: Any                # predictions table, dev and test rows
    title: str                      # of the confusion pictures; "{side}" is filled in
    summary: dict[str, float]       # for results/summary.json
    artifacts: dict[str, Path] = field(default_factory=dict)  # folder -> a file (checkpoint)


def _log_scored_run(client, experiment_id: str, name: str, base_tags: dict[str, str],
                    params: dict[str, Any], config: dict, folds: list[_ScoredFold],
                    classes, score_kind: str, summary: dict[str, float],
                    test_confusion: np.ndarray, label: str, extra: dict) -> str:
    """A config run and one child run per fold, as ``satn report`` and ``satn compare`` read
    them: ``best_{dev,test}_*`` and ``*_final`` metrics, confusion matrices, predictions."""
    from mlflow.entities import Metric

    from satn.predictions import FILE, write_predictions

    parent_id = client.create_run(experiment_id, run_name=name,
                                  tags={**base_tags, "satn.level": "config"}).info.run_id
    now = _now_ms()
    try:
        _log_params_with(client, parent_id, params)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "config.yaml"
            path.write_text(yaml.safe_dump(config, sort_keys=False))
            client.log_artifact(parent_id, str(path))
        for fr in folds:
            run_id = client.create_run(
                experiment_id, run_name=f"{name}/{fr.name}",
                tags={**base_tags, **fr.tags, "mlflow.parentRunId": parent_id,
                      "satn.level": "fold", "satn.fold": fr.name}).info.run_id
            _log_params_with(client, run_id, {**params, **fr.params})
            metrics = {**fr.metrics,
                       **{f"best_dev_{k}": v for k, v in _scalars(fr.dev).items()},
                       **{f"best_test_{k}": v for k, v in _scalars(fr.test).items()},
                       **{f"dev_{k}_final": v for k, v in _scalars(fr.dev).items()},
                       **{f"test_{k}_final": v for k, v in _scalars(fr.test).items()}}
            client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0)
                                              for k, v in metrics.items()])
            curve, values = fr.curve
            client.log_batch(run_id, metrics=[
                Metric(curve, float(ua), now, i) for i, (_, ua) in enumerate(sorted(values.items()))])
            with tempfile.TemporaryDirectory() as tmp:
                tmp = Path(tmp)
                client.log_artifacts(run_id, str(_confusions(tmp, classes, fr.dev, fr.test,
                                                             fr.title)), "confusion")
                pred = tmp / "predictions"
                pred.mkdir()
                write_predictions(fr.predictions, pred / FILE, score_kind)
                client.log_artifacts(run_id, str(pred), "predictions")
            for folder, path in fr.artifacts.items():
                client.log_artifact(run_id, str(path), folder)
            client.set_terminated(run_id, "FINISHED")
        client.log_batch(parent_id, metrics=[Metric(k, float(v), now, 0)
                                             for k, v in summary.items()])
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            _write_confusion_csv(test_confusion, classes, tmp / "test_mean_normalised.csv",
                                 fmt="%.4f")
            confusion_png(test_confusion, classes, tmp / "test_mean_normalised.png",
                          title=f"{label}: test, mean of row-normalised folds", normalise=False)
            (tmp / "summary.json").write_text(json.dumps(
                {"folds": [{"name": f.name, **f.summary, "dev": _scalars(f.dev),
                            "test": _scalars(f.test)} for f in folds],
                 "summary": summary, **extra}, indent=2, default=float))
            client.log_artifacts(parent_id, str(tmp), "results")
    except BaseException:
        for run in client.search_runs([experiment_id],
                                      filter_string=f"tags.mlflow.parentRunId = '{parent_id}'"):
            if run.info.status == "RUNNING":
                client.set_terminated(run.info.run_id, "FAILED")
        client.set_terminated(parent_id, "FAILED")
        raise
    client.set_terminated(parent_id, "FINISHED")
    return parent_id


def load_predictions(tracking_uri: str, run_id: str):
    """Per-utterance predictions of a run: a fold run's table, or a config run's fold tables
    stacked, with a ``fold`` column. ``attrs``: ``run_id``, ``run_name``, ``experiment_id``,
    ``variant``, ``score_kind``.

    Raises ``PredictionsError`` (an InputError) when the run or a fold's table is missing.
    """
    import pandas as pd

    from satn.predictions import FILE, PredictionsError, read_predictions

    client = _client(tracking_uri)
    try:
        run = client.get_run(run_id)
    except Exception as e:  # MLflow raises its own exception types for an unknown id
        raise PredictionsError(f"no MLflow run {run_id!r} in {tracking_uri}") from e
    runs = [run]
    if run.data.tags.get("satn.level") == "config":
        runs = client.search_runs(
            [run.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{run_id}' and tags.`satn.level` = 'fold'")
        if not runs:
            raise PredictionsError(f"MLflow run {run_id} has no fold runs")
    frames = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in sorted(runs, key=lambda r: r.data.tags.get("satn.fold", r.info.run_id)):
            try:
                path = client.download_artifacts(r.info.run_id, f"predictions/{FILE}",
                                                 str(Path(tmp) / r.info.run_id))
            except Exception as e:
                raise PredictionsError(
                    f"MLflow run {r.info.run_id} ({r.info.run_name}) has no predictions/{FILE}: "
                    "it was logged before satn kept per-utterance predictions") from e
            frame = read_predictions(path)
            frame.insert(0, "fold", r.data.tags.get("satn.fold", r.info.run_id))
            frames.append(frame)
    out = pd.concat(frames, ignore_index=True)
    out.attrs = {"run_id": run_id, "run_name": run.info.run_name or run_id,
                 "experiment_id": run.info.experiment_id,
                 "variant": run.data.tags.get("satn.variant", ""),
                 "score_kind": frames[0].attrs.get("score_kind", "")}
    return out


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
        # the models' runs (an ensemble's fold run holds no single model)
        children = [c for c in client.search_runs(
            [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'")
            if "best_dev_ua" in c.data.metrics]
        if not children:
            raise FileNotFoundError(f"MLflow run {run_id} has no fold runs")
        run = max(children, key=lambda c: c.data.metrics["best_dev_ua"])
    path = client.download_artifacts(run.info.run_id, "checkpoint/best.pt", str(dest))
    return Path(path)


def _write_neural_predictions(cv: CrossValidation, pf, evaluations, folder: Path) -> None:
    """The best epoch's dev and test probabilities of one fold as ``folder/predictions.parquet``."""
    _write_predictions_of(cv, evaluations, eval_labels([pf]), folder)


def _write_predictions_of(cv: CrossValidation, evaluations, labels: dict[str, int],
                          folder: Path) -> None:
    """``evaluations`` (side -> Evaluation) as ``folder/predictions.parquet``."""
    import pandas as pd

    from satn.predictions import FILE, predictions_frame, write_predictions

    folder.mkdir()
    frames = [predictions_frame(ev.ids, [cv.speakers[u] for u in ev.ids],
                                [labels[u] for u in ev.ids], ev.probs, cv.classes, side)
              for side, ev in evaluations.items()]
    write_predictions(pd.concat(frames, ignore_index=True), folder / FILE, "probability")


def _confusions(tmp: Path, classes, dev, test, title: str = "", *,
                pictures: bool = True) -> Path:
    """``tmp/confusion`` with ``{dev,test}.csv`` and, when asked, ``{dev,test}.png`` of
    two ``Scores``; ``{side}`` in ``title`` names each picture's side."""
    conf = tmp / "confusion"
    conf.mkdir()
    for side, scores in (("dev", dev), ("test", test)):
        _write_confusion_csv(scores.confusion, classes, conf / f"{side}.csv")
        if pictures:
            confusion_png(scores.confusion, classes, conf / f"{side}.png",
                          title=title.replace("{side}", side))
    return conf


def _log_figures(client, run_id: str, tmp: Path, classes: tuple[str, ...],
                 confusions: dict[str, np.ndarray],
                 attention: dict[str, tuple[str, np.ndarray]], name: str, epoch: int) -> None:
    """Draw and log ``confusion/{side}.png`` for each ``{side: (C, C) counts}`` and
    ``attention/{safe}.png`` for each ``{safe: (utterance id, map)}`` of one best epoch."""
    conf = tmp / "confusion_png"
    conf.mkdir()
    for side, matrix in confusions.items():
        confusion_png(matrix, classes, conf / f"{side}.png",
                      title=f"{name} {side} (epoch {epoch})")
    client.log_artifacts(run_id, str(conf), "confusion")
    if attention:
        att = tmp / "attention_png"
        att.mkdir()
        for safe, (uid, attn) in attention.items():
            attention_png(attn, att / f"{safe}.png", title=f"{uid} (epoch {epoch})")
        client.log_artifacts(run_id, str(att), "attention")


def draw_stored_figures(tracking_uri: str, parent_id: str) -> int:
    """Draw the pictures of a config run's fold runs that ended before drawing them.

    A trial a tuner stops early never reaches the end of its folds, where pictures
    are drawn; the data of each fold's best (confusion tables, attention arrays and
    their index) was logged at once, so the driver draws from it. Returns how many
    fold runs got pictures.
    """
    client = _client(tracking_uri)
    parent = client.get_run(parent_id)
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")
    drawn = 0
    for run in children:
        run_id = run.info.run_id
        have = {a.path for a in client.list_artifacts(run_id, "confusion")}
        if "confusion/dev.csv" not in have or "confusion/dev.png" in have:
            continue  # nothing logged yet, or drawn already
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            stored = Path(client.download_artifacts(run_id, "confusion", str(tmp)))
            tables = {side: _read_confusion_csv(stored / f"{side}.csv")
                      for side in ("dev", "test") if (stored / f"{side}.csv").is_file()}
            classes = next(iter(tables.values()))[0]
            attention: dict[str, tuple[str, np.ndarray]] = {}
            if any(a.path == f"attention/{INDEX}" for a in client.list_artifacts(
                    run_id, "attention")):
                folder = Path(client.download_artifacts(run_id, "attention", str(tmp)))
                index = json.loads((folder / INDEX).read_text())
                attention = {safe: (uid, np.load(folder / f"{safe}.npy"))
                             for safe, uid in index.items() if (folder / f"{safe}.npy").is_file()}
            _log_figures(client, run_id, tmp, classes,
                         {side: m for side, (_, m) in tables.items()}, attention,
                         run.data.tags.get("satn.fold", run.info.run_name or run_id),
                         int(run.data.metrics.get("best_epoch", 0)))
            drawn += 1
    return drawn


def _read_confusion_csv(path: Path) -> tuple[tuple[str, ...], np.ndarray]:
    """``(classes, (C, C) counts)`` of a table :func:`_write_confusion_csv` wrote."""
    header, *rows = [line.split(",") for line in path.read_text().splitlines() if line]
    return tuple(header[1:]), np.array([[float(v) for v in r[1:]] for r in rows])


def _final_metrics(fr) -> dict[str, float]:
    return {**{f"dev_{k}_final": v for k, v in _scalars(fr.dev).items()},
            **{f"test_{k}_final": v for k, v in _scalars(fr.test).items()},
            "epochs_run": fr.epochs_run}


def _log_params_with(client, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):  # MLflow's per-batch limit
        client.log_batch(run_id, params=items[i:i + 100])


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


# ---------------------------------------------------------------- runs left RUNNING


def writer_id(pid: int | None = None) -> str:
    """``host:pid:start`` of a process: a pid alone is reused, its start time is not."""
    import psutil

    proc = psutil.Process(pid)
    return f"{socket.gethostname()}:{proc.pid}:{proc.create_time():.3f}"


def writer_alive(writer: str) -> bool | None:
    """True/False for a writer on this host; None when it ran elsewhere (cannot tell)."""
    import psutil

    host, _, rest = writer.partition(":")
    pid, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    try:
        return f"{psutil.Process(int(pid)).create_time():.3f}" == started
    except psutil.NoSuchProcess:
        return False


@dataclass(frozen=True)
class Orphan:
    run_id: str
    run_name: str
    experiment: str
    reason: str


def find_orphans(tracking_uri: str, experiments: list[str] | None = None,
                 older_than_hours: float | None = None) -> list[Orphan]:
    """RUNNING runs whose writing process has ended.

    On this host the writer's pid and start time tell for sure. A run written on
    another host (a cluster worker) is only taken when ``older_than_hours`` is
    given and it started longer ago than that.
    """
    import time

    client = _client(tracking_uri)
    exps = ([client.get_experiment_by_name(n) for n in experiments] if experiments
            else client.search_experiments())
    now = time.time() * 1000
    out = []
    for exp in [e for e in exps if e is not None]:
        runs = client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'",
                                  max_results=50000)
        for run in runs:
            writer = run.data.tags.get(WRITER_TAG)
            alive = writer_alive(writer) if writer else None
            if alive is False:
                reason = f"the process that wrote it ({writer}) has ended"
            elif alive is None and older_than_hours is not None and \
                    now - run.info.start_time > older_than_hours * 3_600_000:
                reason = (f"RUNNING for more than {older_than_hours:g} h and written "
                          f"{'on ' + writer.partition(':')[0] if writer else 'by an unknown process'}")
            else:
                continue
            out.append(Orphan(run.info.run_id, run.info.run_name or "", exp.name, reason))
    return out


def repair_runs(tracking_uri: str, experiments: list[str] | None = None,
                older_than_hours: float | None = None, dry_run: bool = False) -> list[Orphan]:
    """Mark orphaned runs (:func:`find_orphans`) KILLED, tagged with why."""
    orphans = find_orphans(tracking_uri, experiments, older_than_hours)
    if not dry_run:
        client = _client(tracking_uri)
        for o in orphans:
            client.set_tag(o.run_id, "satn.outcome", "orphaned")
            client.set_tag(o.run_id, "satn.reason", o.reason)
            client.set_terminated(o.run_id, "KILLED")
    return orphans


def mark_sweep_leftovers(tracking_uri: str, experiment_id: str, sweep: str) -> int:
    """After a sweep: its runs still RUNNING belong to trials that died; mark them FAILED."""
    client = _client(tracking_uri)
    runs = client.search_runs(
        [experiment_id], f"tags.`satn.sweep` = '{sweep}' and attributes.status = 'RUNNING'",
        max_results=50000)
    for run in runs:
        client.set_tag(run.info.run_id, "satn.outcome", "error")
        client.set_tag(run.info.run_id, "satn.reason",
                       "its trial ended before finishing the run (worker died or raised)")
        client.set_terminated(run.info.run_id, "FAILED")
    return len(runs)


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
    ``name``, ``status``, ``variant``, ``classes`` (``data.classes``, comma-joined),
    ``params`` (searched values), ``config`` (every logged param, as strings), and
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
            if child.data.tags.get("satn.level") == "member":  # its ensemble's run counts
                continue
            # a model's fold run: its best epoch; an ensemble's: its combined figures
            kind = "best_{side}_{k}" if "best_dev_ua" in m else "{side}_{k}_final"
            if kind.format(side="dev", k="ua") not in m:  # never finished an epoch
                continue
            folds.append({"fold": child.data.tags.get("satn.fold", child.info.run_name),
                          **{f"{side}_{k}": m[kind.format(side=side, k=k)]
                             for side in ("dev", "test") for k in ("wa", "ua", "f1")
                             if kind.format(side=side, k=k) in m}})
        records.append({
            "run_id": run.info.run_id, "name": run.info.run_name, "status": run.info.status,
            "variant": run.data.tags.get("satn.variant", run.data.params.get("model.variant")),
            "classes": run.data.params.get("data.classes", ""),
            "params": json.loads(run.data.tags.get("satn.search_params", "{}")),
            "config": dict(run.data.params), "folds": folds})
    return records


# ---------------------------------------------------------------- the ASR teacher

TEACHER_ARTIFACT = "teacher/teacher.pt"


class TeacherMlflowObserver:
    """Logs ``satn teacher`` (a :func:`satn.teacher_train.train_teacher` run) to MLflow:
    params, per-epoch loss / PER / WER, then the teacher file and its report."""

    def __init__(self, tracking_uri: str, experiment_id: str, run_name: str,
                 params: dict[str, Any], tags: dict[str, str] | None = None):
        self.client = _client(tracking_uri)
        self.experiment_id = experiment_id
        self.run_name = run_name
        self.params = dict(params)
        self.tags = dict(tags or {})
        self.run_id: str | None = None

    def on_start(self, cfg, data) -> None:
        from satn.config import flatten, to_dict

        run = self.client.create_run(self.experiment_id, run_name=self.run_name,
                                     tags={"satn.level": "teacher", **self.tags})
        self.run_id = run.info.run_id
        split = {f"split.{k}": v for k, v in flatten(data.split).items()}
        _log_params(self.client, self.run_id, {
            **self.params, **flatten(to_dict(cfg), "teacher."), **split,
            "phonemes.oov_words": data.oov.oov_total, "phonemes.words": data.oov.words_total,
            "phonemes.dropped_utterances": data.dropped})

    def on_epoch(self, epoch) -> None:
        from mlflow.entities import Metric

        now = _now_ms()
        r = epoch.heldout
        metrics = {"train_loss": epoch.train_loss, "heldout_loss": epoch.heldout_loss,
                   "heldout_per": r.per, "heldout_wer": r.wer,
                   "heldout_ambiguous_rate": r.ambiguous / max(r.groups, 1),
                   "heldout_unknown_rate": r.unknown / max(r.groups, 1),
                   "epoch_seconds": epoch.seconds}
        self.client.log_batch(self.run_id, metrics=[
            Metric(k, float(v), now, epoch.epoch) for k, v in metrics.items()])

    def finish(self, final, teacher_path: str | Path, report: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        now = _now_ms()
        metrics = {"final_per": final.per, "final_wer": final.wer,
                   "final_ambiguous_rate": final.ambiguous / max(final.groups, 1),
                   "final_unknown_rate": final.unknown / max(final.groups, 1),
                   "final_lookup_wer": final.lookup_wer}
        self.client.log_batch(self.run_id, metrics=[
            Metric(k, float(v), now, 0) for k, v in metrics.items()])
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "teacher"
            folder.mkdir()
            shutil.copyfile(teacher_path, folder / Path(TEACHER_ARTIFACT).name)
            (folder / "report.json").write_text(json.dumps(report, indent=2, default=str))
            self.client.log_artifacts(self.run_id, str(folder), "teacher")
        self.client.set_terminated(self.run_id, "FINISHED")

    def fail(self, status: str = "FAILED") -> None:
        if self.run_id and self.client.get_run(self.run_id).info.status == "RUNNING":
            self.client.set_terminated(self.run_id, status)


def _log_params(client, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):  # MLflow's per-batch limit
        client.log_batch(run_id, params=items[i:i + 100])


def find_teacher(tracking_uri: str, run_id: str, dest: str | Path) -> Path:
    """Download the teacher file of a ``satn teacher`` MLflow run into ``dest``; its path.

    Raises FileNotFoundError when the run has no teacher file (e.g. an SER run's id).
    """
    client = _client(tracking_uri)
    run = client.get_run(run_id)
    names = {a.path for a in client.list_artifacts(run_id, "teacher")}
    if TEACHER_ARTIFACT not in names:
        raise FileNotFoundError(f"MLflow run {run_id} ({run.info.run_name}) has no "
                                f"{TEACHER_ARTIFACT}: not a `satn teacher` run")
    return Path(client.download_artifacts(run_id, TEACHER_ARTIFACT, str(dest)))


def teacher_path(ref: str | Path, tracking_uri: str | None, dest: str | Path) -> Path:
    """A teacher reference -> a local teacher file: ``ref`` itself when it is a file,
    else the teacher of MLflow run ``ref`` downloaded into ``dest``."""
    if Path(ref).is_file():
        return Path(ref)
    try:
        return find_teacher(tracking_uri or default_tracking_uri(), str(ref), dest)
    except Exception as e:  # unknown run id, unreachable store, not a teacher run
        from satn.teacher_io import TeacherFileError

        raise TeacherFileError(f"teacher {str(ref)!r} is neither a teacher file nor an MLflow "
                               f"run with one ({e})") from e
