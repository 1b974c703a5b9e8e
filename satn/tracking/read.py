"""Reading runs back: configs, tags, curves, predictions, checkpoints, report records."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import yaml

from satn.tracking.store import DEFAULT_EXPERIMENT, TrackingError, first_line, open_client


def run_config(tracking_uri: str, run_id: str) -> dict[str, Any]:
    """The experiment config a run logged (its ``config.yaml`` artifact)."""
    client = open_client(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, "config.yaml", tmp)
        except Exception as e:  # MLflow's own exception types for a missing run or file
            raise TrackingError(f"MLflow run {run_id} in {tracking_uri} has no config.yaml "
                                f"({first_line(e)})") from e
        return yaml.safe_load(Path(path).read_text())


def run_tags(tracking_uri: str, run_id: str) -> dict[str, str]:
    """A run's tags (``satn.features_key``, ``satn.variant``, ...)."""
    return dict(open_client(tracking_uri).get_run(run_id).data.tags)


def member_curves(tracking_uri: str, run_id: str) -> dict[str, list[list[float]]]:
    """Outer fold -> each of its member models' dev UA per epoch (a run selected by
    inner folds, ``selection.inner_k``); empty for a run without members."""
    client = open_client(tracking_uri)
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


def load_predictions(tracking_uri: str, run_id: str):
    """Per-utterance predictions of a run: a fold run's table, or a config run's fold tables
    stacked, with a ``fold`` column. ``attrs``: ``run_id``, ``run_name``, ``experiment_id``,
    ``variant``, ``score_kind``.

    Raises ``PredictionsError`` (an InputError) when the run or a fold's table is missing.
    """
    import pandas as pd

    from satn.predictions import FILE, PredictionsError, read_predictions

    client = open_client(tracking_uri)
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


def find_checkpoint(tracking_uri: str, run_id: str, dest: str | Path) -> Path:
    """Download the best checkpoint of a fold run, or of a config run's best fold (dev UA)."""
    client = open_client(tracking_uri)
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


def fold_checkpoint(tracking_uri: str, run_id: str, fold: str, dest: str | Path) -> Path:
    """Download the best checkpoint of fold ``fold`` of config run ``run_id``."""
    client = open_client(tracking_uri)
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
    ``run_ids`` (in any experiment; an unknown id raises ``LookupError``), or every config
    run of ``experiment``. Each record: ``run_id``, ``name``, ``status``, ``variant``,
    ``classes`` (``data.classes``, comma-joined),
    ``params`` (searched values), ``config`` (every logged param, as strings), and
    ``folds``: a list of {``fold``, ``dev_wa``, ``dev_ua``, ``test_wa``, ``test_ua``}
    from each fold run's best dev epoch.
    """
    client = open_client(tracking_uri)
    if run_ids:  # named runs are found in whichever experiment holds them
        parents = []
        for r in run_ids:
            try:
                parents.append(client.get_run(r))
            except Exception as e:  # MLflow raises its own exception types for an unknown id
                raise LookupError(f"no MLflow run {r!r} in {tracking_uri}") from e
    else:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            raise LookupError(f"no MLflow experiment {experiment!r} in {tracking_uri}")
        where = "tags.`satn.level` = 'config'"
        if sweep:
            where += f" AND tags.`satn.sweep` = '{sweep}'"
        parents = client.search_runs([exp.experiment_id], filter_string=where,
                                     max_results=50000)
    records = []
    for run in parents:
        children = client.search_runs(
            [run.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'", max_results=50000)
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
