"""``satn-sweep``: a search space swept with Ray Tune + Optuna, tracked in MLflow."""

from __future__ import annotations

import math
import sys

import click

from satn.cli.common import (
    experiment_options,
    friendly_errors,
    load_experiment,
    load_runtime,
    resolve_teacher,
)
from satn.config import ConfigError

# satn-sweep's exit status: 0 every trial trained (or was stopped early by the scheduler),
# 1 bad input or every trial failed, 3 some trials failed (the rest are logged and ranked).
EXIT_TRIALS_FAILED = 3


@click.command("satn-sweep")
@click.option("--space", required=True,
              help="Search space name (experiments/spaces/NAME.yaml) or a YAML path.")
@experiment_options
@click.option("--trials", type=int, default=None, help="Number of trials (default: the space's).")
@click.option("--epochs", type=int, default=None, help="Epochs per fold (default: the space's).")
@click.option("--name", default=None, help="Sweep name (default: SPACE-timestamp).")
@click.option("--resume", is_flag=True,
              help="Continue the sweep --name after its driver was killed (finished trials "
                   "are kept, unfinished ones continue from their last epoch).")
@click.option("--tracking-uri", default=None, help="MLflow store (default: ./mlflow.db).")
@click.option("--device", default="cpu", show_default=True, help="Feature extraction device.")
@friendly_errors
def sweep_main(space, config_path, corpus, root, protocol, sets, runtime_path, trials, epochs,
               name, resume, tracking_uri, device) -> None:
    """Search a space of configurations with Ray Tune + Optuna, tracked in MLflow."""
    from dataclasses import replace

    from satn.prepare import prepare_dataset
    from satn.space import load_space
    from satn.speed import speed_variants, sweep_factors
    from satn.store import open_dataset
    from satn.sweep import run_sweep
    from satn.tracking import ui_hint

    cfg = load_experiment(config_path, corpus, root, protocol, sets)
    search = load_space(space)
    search.validate(cfg)  # fail before any work
    if resume and not name:
        raise ConfigError("--resume needs --name: the sweep to continue")
    if name:
        from satn.safenames import check_name

        check_name(name, "sweep name")
    runtime = load_runtime(runtime_path)
    if tracking_uri:
        runtime = replace(runtime, mlflow=replace(runtime.mlflow, tracking_uri=tracking_uri))
    cfg = resolve_teacher(cfg, runtime, tracking_uri)
    cfg, info = prepare_dataset(cfg, runtime, device=device, echo=click.echo)
    factors = sweep_factors(cfg, search)
    if factors:  # built here, once: trials only open them
        speed_variants(open_dataset(info.uri), factors, device=device, echo=click.echo)
    grid = math.prod(len(p.values) for p in search.grid.values())  # 1 without grid params
    click.echo(f"sweep {search.name}: {(trials or search.num_samples) * grid} trial(s), "
               f"{search.algorithm} search, {search.scheduler.kind} scheduler, "
               f"metric {search.metric} ({search.mode})")
    result = run_sweep(cfg, search, runtime, info.uri, num_samples=trials, epochs=epochs,
                       name=name, resume=resume)
    if result.repaired:
        click.echo(f"marked {result.repaired} run(s) that ended processes had left RUNNING "
                   f"(see `satn runs repair --dry-run`)")
    click.echo(f"\nsweep {result.name}: {result.n_trials} trial(s), "
               f"{result.n_stopped_early} stopped early, {result.n_errors} failed")
    for trial, error in result.failed:
        click.echo(f"  failed: {trial}: {error}")
    if result.best_metrics:
        m = result.best_metrics
        click.echo(f"best configuration (MLflow run {result.best_run_id}):")
        for k, v in sorted(result.best_params.items()):
            click.echo(f"  {k} = {v}")
        click.echo("  " + "  ".join(f"{k} {m[k]:.3f}" for k in
                                    ("dev_ua_best", "test_wa_mean", "test_ua_mean",
                                     "test_ua_at_best") if k in m))
    click.echo(f"Ray Tune results: {result.storage_path}")
    click.echo(f"MLflow: {result.tracking_uri}\n  {ui_hint(result.tracking_uri)}")
    if result.n_errors == result.n_trials:
        raise click.ClickException("every trial failed; see the Ray Tune results above")
    if result.n_errors:
        # the other trials' results stand, but a script must not take this for a clean sweep
        click.echo(f"{result.n_errors} of {result.n_trials} trial(s) failed", err=True)
        sys.exit(EXIT_TRIALS_FAILED)
