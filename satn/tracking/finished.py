"""Runs written in one go once their work is done: classical baselines, late fusions and
means of runs, refits (a config run and a run per fold, as ``satn report`` and
``satn compare`` read neural runs) and single jobs outside the runner (VQ-VAE
pretraining, figures)."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from satn.plots import confusion_png
from satn.tracking.artifacts import write_confusion_csv, write_confusions
from satn.tracking.store import log_params, now_ms, open_client, scalars


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
        open_client(tracking_uri), experiment_id, run_name or f"baseline/{bcfg.name}", base_tags,
        params, config, folds, result.classes, bcfg.score_kind, result.summary(),
        result.test.confusion_normalised_mean, bcfg.name, {"seconds": result.seconds})


def log_fusion(tracking_uri: str, experiment_id: str, result, runs: dict[str, dict[str, str]],
               *, run_name: str | None = None) -> str:
    """Log a late fusion (``satn.fusion.FusionResult``) of two runs like a baseline run.

    ``runs``: ``{"a": {...}, "b": {...}}`` with each fused run's ``run_id``, ``name``,
    ``variant``, ``uri`` (kept as ``fusion.*`` params and tags). Fold runs hold the weight
    chosen on dev (``fusion_weight_a``), the temperatures when calibrated
    (``fusion_temperature_a`` / ``_b``), dev UA over the weight grid, confusion matrices
    and the fused predictions. Returns the config run id.
    """
    variant = f"fusion/{runs['a']['variant']}+{runs['b']['variant']}"
    base_tags = {"satn.variant": variant, "satn.kind": "fusion",
                 "satn.fusion_of": f"{runs['a']['run_id']},{runs['b']['run_id']}",
                 "satn.folds": ",".join(f.name for f in result.folds)}
    params = {"model.variant": variant, "data.classes": ",".join(result.classes),
              **{f"fusion.{side}_{k}": v for side, r in runs.items() for k, v in r.items()},
              "fusion.grid": ",".join(f"{w:g}" for w in result.grid),
              "fusion.calibrate": result.calibrated}
    temps = ("a", "b") if result.calibrated else ()
    folds = [_ScoredFold(
        name=f.name, tags={}, params={"fold.name": f.name, "fusion.weight_a": f.weight},
        metrics={"fusion_weight_a": f.weight,
                 **{f"fusion_temperature_{s}": f.temperatures[i] for i, s in enumerate(temps)}},
        curve=("dev_ua_by_weight", f.dev_ua_by_weight),
        dev=f.dev, test=f.test, predictions=f.predictions,
        title=f"{f.name} {{side}} ({variant}, w={f.weight:g})", summary={"weight_a": f.weight})
        for f in result.folds]
    return _log_scored_run(
        open_client(tracking_uri), experiment_id, run_name or variant, base_tags, params,
        {"fusion": runs}, folds, result.classes, "probability", result.summary(),
        result.test.confusion_normalised_mean, variant, {})


def average_variant(variants: list[str]) -> str:
    """``mean/tcn_self(3)`` for three runs of one variant, ``mean/a+b`` for different ones:
    short enough to read in a fusion's name."""
    if len(set(variants)) == 1:
        return f"mean/{variants[0]}({len(variants)})"
    return "mean/" + "+".join(variants)


def log_average(tracking_uri: str, experiment_id: str, result,
                runs: list[dict[str, str]]) -> str:
    """Log the mean of several runs (``satn.fusion.AverageResult``) like a baseline run.

    ``runs``: each averaged run's ``run_id``, ``name``, ``variant``, ``uri`` (kept as
    ``average.run<i>_*`` params; ``satn.average_of`` lists their ids). Fold runs hold each
    run's dev UA alone (``dev_ua_by_run``, a step per run), confusion matrices and the mean
    predictions. Returns the config run id.
    """
    variant = average_variant([r["variant"] for r in runs])
    base_tags = {"satn.variant": variant, "satn.kind": "average",
                 "satn.average_of": ",".join(r["run_id"] for r in runs),
                 "satn.folds": ",".join(f.name for f in result.folds)}
    params = {"model.variant": variant, "data.classes": ",".join(result.classes),
              "average.n_runs": result.n_runs,
              **{f"average.run{i + 1}_{k}": v for i, r in enumerate(runs) for k, v in r.items()}}
    folds = [_ScoredFold(
        name=f.name, tags={}, params={"fold.name": f.name},
        metrics={"runs_dev_ua_mean": float(np.mean(f.members_dev_ua)),
                 "runs_test_ua_mean": float(np.mean(f.members_test_ua))},
        curve=("dev_ua_by_run", dict(enumerate(f.members_dev_ua))),
        dev=f.dev, test=f.test, predictions=f.predictions,
        title=f"{f.name} {{side}} ({variant})", summary={"runs": result.n_runs})
        for f in result.folds]
    return _log_scored_run(
        open_client(tracking_uri), experiment_id, variant, base_tags, params,
        {"average": runs}, folds, result.classes, "probability", result.summary(),
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
        open_client(tracking_uri), experiment_id, f"refit/{source['name']}", base_tags, params,
        config, scored, classes, "probability", summary, test.confusion_normalised_mean,
        variant, {"seconds": float(sum(f["seconds"] for f in folds))})


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
    now = now_ms()
    try:
        log_params(client, parent_id, params)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "config.yaml"
            path.write_text(yaml.safe_dump(config, sort_keys=False))
            client.log_artifact(parent_id, str(path))
        for fr in folds:
            run_id = client.create_run(
                experiment_id, run_name=f"{name}/{fr.name}",
                tags={**base_tags, **fr.tags, "mlflow.parentRunId": parent_id,
                      "satn.level": "fold", "satn.fold": fr.name}).info.run_id
            log_params(client, run_id, {**params, **fr.params})
            metrics = {**fr.metrics,
                       **{f"best_dev_{k}": v for k, v in scalars(fr.dev).items()},
                       **{f"best_test_{k}": v for k, v in scalars(fr.test).items()},
                       **{f"dev_{k}_final": v for k, v in scalars(fr.dev).items()},
                       **{f"test_{k}_final": v for k, v in scalars(fr.test).items()}}
            client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0)
                                              for k, v in metrics.items()])
            curve, values = fr.curve
            client.log_batch(run_id, metrics=[
                Metric(curve, float(ua), now, i) for i, (_, ua) in enumerate(sorted(values.items()))])
            with tempfile.TemporaryDirectory() as tmp:
                tmp = Path(tmp)
                client.log_artifacts(run_id, str(write_confusions(tmp, classes, fr.dev, fr.test,
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
            write_confusion_csv(test_confusion, classes, tmp / "test_mean_normalised.csv",
                                 fmt="%.4f")
            confusion_png(test_confusion, classes, tmp / "test_mean_normalised.png",
                          title=f"{label}: test, mean of row-normalised folds", normalise=False)
            (tmp / "summary.json").write_text(json.dumps(
                {"folds": [{"name": f.name, **f.summary, "dev": scalars(f.dev),
                            "test": scalars(f.test)} for f in folds],
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


def log_finished_run(tracking_uri: str, experiment_id: str, run_name: str,
                     params: dict[str, Any], history: list[dict[str, float]],
                     artifacts: dict[str, str | Path], tags: dict[str, str] | None = None,
                     level: str = "pretrain") -> str:
    """One finished run for a job outside the runner (VQ-VAE pretraining, figures):
    params, per-step metrics, files by folder.

    ``history`` rows carry a ``step`` and metrics; ``artifacts`` maps an artifact
    folder (``model``, ``figures``) to a local file or folder. Returns the run id.
    """
    from mlflow.entities import Metric

    client = open_client(tracking_uri)
    run = client.create_run(experiment_id, run_name=run_name,
                            tags={"satn.level": level, **(tags or {})})
    run_id = run.info.run_id
    log_params(client, run_id, params)
    now = now_ms()
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
