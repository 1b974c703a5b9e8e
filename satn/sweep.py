"""Ray Tune + Optuna sweeps: the only module of satn that imports ray.tune or optuna.

One Tune trial is one configuration trained over all its folds
(:class:`satn.runner.Experiment`). After every epoch the trial reports the
fold-mean dev UA so ASHA can stop poor configurations early; Optuna's seeded
TPE proposes the next configurations. Each trial logs itself to MLflow; the
driver creates the MLflow experiment first and afterwards marks the runs of
trials that were stopped early or failed.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from satn.config import ExperimentConfig, RuntimeConfig
from satn.space import SearchSpace

# Keep Ray local and quiet unless the runtime config names a cluster.
_RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}


# Set in a trial's last report once every fold has trained all its epochs.
COMPLETED = "satn_completed"


@dataclass(frozen=True)
class SweepResult:
    name: str
    n_trials: int
    n_stopped_early: int
    n_errors: int
    best_params: dict[str, Any]
    best_metrics: dict[str, float]
    best_run_id: str | None
    tracking_uri: str
    storage_path: str


def init_ray(runtime: RuntimeConfig) -> bool:
    """Start (local) or join (cluster) Ray; True when this call started it."""
    import ray

    if ray.is_initialized():
        return False
    for k, v in _RAY_ENV.items():
        os.environ.setdefault(k, v)
    if runtime.ray.address == "local":
        ray.init(num_cpus=runtime.ray.num_cpus, num_gpus=runtime.ray.num_gpus,
                 _node_ip_address=runtime.ray.node_ip, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    else:
        ray.init(address=runtime.ray.address, log_to_driver=False)
    return True


def param_space(space: SearchSpace) -> dict[str, Any]:
    """The space's params as Ray Tune sampling primitives (OptunaSearch converts them)."""
    from ray import tune

    make = {
        "choice": lambda p: tune.choice(list(p.values)),
        "grid": lambda p: tune.grid_search(list(p.values)),
        "uniform": lambda p: tune.uniform(p.low, p.high),
        "loguniform": lambda p: tune.loguniform(p.low, p.high),
        "int": lambda p: tune.randint(int(p.low), int(p.high) + 1),
    }
    return {key: make[p.kind](p) for key, p in space.params.items()}


def run_trial(params: dict[str, Any], *, base: dict[str, Any], dataset_uri: str,
              tracking_uri: str, experiment_id: str, sweep: str, fold_workers: int,
              threads: int) -> None:
    """The Tune trainable: one configuration over all folds, reporting every epoch."""
    import torch
    from ray import tune

    from satn.runner import Experiment
    from satn.store import open_dataset
    from satn.tracking import MlflowObserver

    torch.set_num_threads(max(1, threads))
    cfg = ExperimentConfig.from_dict(base).override(params)
    ctx = tune.get_context()
    trial = ctx.get_trial_name() or "trial"
    experiment = Experiment(cfg, open_dataset(dataset_uri), fold_workers=fold_workers)
    tracker = MlflowObserver(tracking_uri, experiment_id, run_name=f"{sweep}/{trial}", tags={
        "satn.sweep": sweep, "satn.trial": ctx.get_trial_id() or trial,
        "satn.search_params": json.dumps(params, sort_keys=True, default=str)})

    class Report:
        def on_start(self, experiment: Experiment) -> None:
            pass

        def on_epoch(self, experiment, epoch, stats, final) -> None:
            metrics: dict[str, Any] = experiment.epoch_summary(stats)
            if final is not None:
                metrics.update(final.summary())
                # not Tune's reserved "done": Tune sets that on every trial ASHA stops
                metrics[COMPLETED] = True
            metrics = {k: float(v) for k, v in metrics.items() if _is_number(v)}
            metrics["mlflow_run_id"] = tracker.parent_id
            # ASHA may stop the trial inside this call: MLflow has been written already
            tune.report(metrics)

    try:
        experiment.run([tracker, Report()])
    except Exception:
        tracker.fail()
        raise


def run_sweep(cfg: ExperimentConfig, space: SearchSpace, runtime: RuntimeConfig,
              dataset_uri: str, *, num_samples: int | None = None, epochs: int | None = None,
              name: str | None = None, verbose: int = 1) -> SweepResult:
    """Search ``space`` around ``cfg`` with Ray Tune + Optuna on the dataset at ``dataset_uri``."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from satn.tracking import default_tracking_uri, ensure_experiment, mark_runs

    space.validate(cfg)
    cfg = cfg.override(space.fixed)
    if epochs is not None:
        cfg = cfg.override({"train.epochs": epochs})
    epochs = cfg.train.epochs
    name = name or f"{space.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    tracking_uri = runtime.mlflow.tracking_uri or default_tracking_uri()
    experiment_id = ensure_experiment(tracking_uri, runtime.mlflow.experiment)
    storage = runtime.storage_path
    if "://" not in storage:  # Ray needs an absolute path (or a URI)
        storage = str(Path(storage).resolve())

    if space.algorithm == "optuna":
        from optuna.samplers import TPESampler
        from ray.tune.search.optuna import OptunaSearch

        search_alg = OptunaSearch(metric=space.metric, mode=space.mode,
                                  sampler=TPESampler(seed=space.seed))
    else:
        search_alg = None  # Ray's variant generator: grids x random samples
    if space.scheduler.kind == "asha":
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=epochs,
                                  grace_period=min(space.scheduler.grace_period, epochs),
                                  reduction_factor=space.scheduler.reduction_factor)
    else:
        scheduler = FIFOScheduler()

    per_trial = runtime.resources.per_trial
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, base=cfg.to_dict(), dataset_uri=dataset_uri,
                             tracking_uri=tracking_uri, experiment_id=experiment_id, sweep=name,
                             fold_workers=runtime.resources.folds_in_parallel,
                             threads=max(1, int(per_trial["cpu"]))),
        per_trial)
    started = init_ray(runtime)
    try:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(space),
            tune_config=tune.TuneConfig(
                metric=space.metric, mode=space.mode, search_alg=search_alg,
                scheduler=scheduler, num_samples=num_samples or space.num_samples,
                max_concurrent_trials=runtime.max_concurrent_trials),
            run_config=tune.RunConfig(name=name, storage_path=storage, verbose=verbose),
        )
        results = tuner.fit()
    finally:
        if started:
            import ray

            ray.shutdown()

    stopped, errors = 0, 0
    for r in results:
        metrics = r.metrics or {}
        run_id = metrics.get("mlflow_run_id")
        outcome = trial_outcome(metrics, r.error)
        if outcome == "error":
            errors += 1
            if run_id:
                mark_runs(tracking_uri, run_id, "FAILED", {"satn.outcome": "error"})
        elif outcome == "stopped_early":
            # ASHA's stop may reach a trial after it has trained to the end: not counted
            if run_id is None or mark_runs(tracking_uri, run_id, "KILLED", {
                    "satn.outcome": "stopped_early",
                    "satn.stopped_at_epoch": str(metrics.get("training_iteration"))}):
                stopped += 1
    best_params: dict[str, Any] = {}
    best_metrics: dict[str, float] = {}
    best_run = None
    ok = [r for r in results if r.error is None and r.metrics]
    if ok:
        best = results.get_best_result(space.metric, space.mode, scope="last")
        best_params = dict(best.config)
        best_metrics = {k: v for k, v in best.metrics.items()
                        if _is_number(v) and (k.startswith(("dev_", "test_")) or k == space.metric)}
        best_run = best.metrics.get("mlflow_run_id")
        if best_run:
            from satn.tracking import tag_run

            tag_run(tracking_uri, best_run, {"satn.best_of_sweep": name})
    return SweepResult(name, len(results), stopped, errors, best_params, best_metrics, best_run,
                       tracking_uri, str(Path(storage) / name) if "://" not in storage else
                       f"{storage}/{name}")


def trial_outcome(last_metrics: dict[str, Any], error: Exception | None) -> str:
    """``"completed"``, ``"stopped_early"`` or ``"error"`` from a trial's last report."""
    if error is not None:
        return "error"
    return "completed" if last_metrics.get(COMPLETED) else "stopped_early"


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
