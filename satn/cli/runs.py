"""``satn report``, ``satn runs repair``, ``satn cluster-secrets``: reading the runs in an
MLflow store, looking after them, and the cluster store's credentials."""

from __future__ import annotations

from pathlib import Path

import click

from satn.cli.common import friendly_errors, load_runtime, main, store_uri


@main.command()
@click.option("--sweep", default=None, help="Sweep name (the runs tagged satn.sweep=NAME).")
@click.option("--run", "run_ids", multiple=True,
              help="A config run id (repeatable); default: the sweep's, or every config run.")
@click.option("--experiment", default=None, help="MLflow experiment (default: the runtime's).")
@click.option("--tracking-uri", default=None, help="MLflow store (default: ./mlflow.db).")
@click.option("--format", "fmt", type=click.Choice(["markdown", "csv"]), default="markdown",
              show_default=True)
@click.option("--paper", default=None,
              help="Reference figures beside ours: a name (experiments/paper/NAME.figures.yaml) "
                   "or a YAML path.")
@click.option("--png", type=click.Path(dir_okay=False), default=None,
              help="Also write a bar chart of test WA / UA (and the paper's) to this PNG.")
@click.option("--layout", type=click.Choice(["satn", "tacn"]), default="satn", show_default=True,
              help="satn: SATN Table 2 (dev / test WA, UA); tacn: TACN Tables 1-2 (test F1, WA, "
                   "UA; Deep_* then Fusion_*).")
@click.option("--ci/--no-ci", default=True, show_default=True,
              help="95% bootstrap CIs of test WA / UA from the runs' per-utterance predictions.")
@click.option("--ray-config", "runtime_path", type=click.Path(dir_okay=False), default=None)
@friendly_errors
def report(sweep, run_ids, experiment, tracking_uri, fmt, paper, png, layout, ci,
           runtime_path) -> None:
    """A table in a paper's layout from MLflow runs: rows = variants, scores as mean ± std
    over folds (SATN Table 2: dev / test WA and UA; TACN: test F1, WA and UA)."""
    from satn.report import comparison_png, load_paper, summarise, table
    from satn.tracking import read_runs

    runtime = load_runtime(runtime_path)
    uri = store_uri(tracking_uri, runtime)
    try:
        records = read_runs(uri, experiment or runtime.mlflow.experiment, sweep=sweep,
                            run_ids=tuple(run_ids))
    except LookupError as e:
        raise click.ClickException(str(e)) from e
    if ci:
        from satn.predictions import PredictionsError
        from satn.tracking import load_predictions

        for r in records:
            try:
                r["predictions"] = load_predictions(uri, r["run_id"])
            except PredictionsError:  # logged before satn kept predictions: no CI for its row
                r["predictions"] = None
    from satn.models import reads_setting

    rows = summarise(records, layout, reads=reads_setting)
    if not rows:
        raise click.ClickException(f"no scored runs found in {uri}"
                                   + (f" for sweep {sweep}" if sweep else ""))
    figures = load_paper(paper) if paper else None
    click.echo(table(rows, figures, fmt), nl=False)
    if png:
        comparison_png(rows, png, figures)
        click.echo(f"wrote {png}", err=True)


@main.group()
def runs() -> None:
    """Look after the runs in an MLflow store."""


@runs.command("repair")
@click.option("--tracking-uri", default=None,
              help="MLflow store (default: the runtime's, else ./mlflow.db).")
@click.option("--runtime", "runtime_path", type=click.Path(exists=True), default=None,
              help="Runtime config (default: ./ray_config.yaml if present).")
@click.option("--experiment", "experiments", multiple=True,
              help="Only this experiment (repeatable; default: all).")
@click.option("--older-than", type=float, default=None, metavar="HOURS",
              help="Also take RUNNING runs written on other hosts that started longer ago.")
@click.option("--dry-run", is_flag=True, help="List what would be marked; change nothing.")
@friendly_errors
def runs_repair(tracking_uri, runtime_path, experiments, older_than, dry_run) -> None:
    """Mark KILLED the runs left RUNNING by a process that has ended (a killed sweep or train),
    and draw the confusion and attention pictures their folds did not reach."""
    from satn.tracking import repair_runs, require_store

    uri = require_store(store_uri(tracking_uri, load_runtime(runtime_path)))
    orphans = repair_runs(uri, list(experiments) or None, older_than, dry_run=dry_run)
    for o in orphans:
        click.echo(f"{o.run_id}  {o.experiment}/{o.run_name}: {o.reason}")
    verb = "would mark" if dry_run else "marked"
    click.echo(f"{verb} {len(orphans)} run(s) KILLED in {uri}")


@main.command("cluster-secrets")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Where to write (default: ~/.config/satn/cluster.env).")
@click.option("--force", is_flag=True, help="Replace an existing file.")
@friendly_errors
def cluster_secrets(out, force) -> None:
    """Write the MLflow credentials that `ray up cluster/ray_config.yaml` copies to every node."""
    from satn.sweep import config_dir, write_cluster_secrets

    path = write_cluster_secrets(Path(out) if out else config_dir() / "cluster.env", force=force)
    click.echo(f"wrote {path} (0600); `ray up cluster/ray_config.yaml` copies it to every node")
