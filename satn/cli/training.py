"""``satn train``, ``satn predict``, ``satn variants``: one configuration trained in-process,
its checkpoints applied to audio, and the models there are."""

from __future__ import annotations

import csv
import io
import json
import sys
import tempfile
from pathlib import Path

import click

from satn.cli.common import (
    experiment_options,
    friendly_errors,
    load_experiment,
    load_runtime,
    main,
    resolve_teacher,
    store_uri,
)
from satn.config import ConfigError


class ConsoleObserver:
    """Prints one line per epoch and the fold results at the end."""

    def on_start(self, cv) -> None:
        outer = cv.outer_folds()
        if len(outer) == len(cv.fold_names):
            click.echo(f"training {cv.cfg.model.variant} on folds "
                       f"{', '.join(cv.fold_names)}")
            return
        sel = cv.cfg.selection
        how = " x ".join(p for p in (sel.inner_k and f"{sel.inner_k} inner speaker folds",
                                     sel.seeds > 1 and f"{sel.seeds} seeds") if p)
        click.echo(f"training {cv.cfg.model.variant}: {len(cv.fold_names)} "
                   f"models ({how}) scoring folds {', '.join(outer)} as ensembles")

    def on_epoch(self, cv, epoch, stats, final) -> None:
        s = cv.epoch_summary(stats)
        terms = {k.removeprefix("train_loss_"): v for k, v in s.items()
                 if k.startswith("train_loss_")}
        loss = f"loss {s['train_loss']:.3f}"
        if len(terms) > 1:  # a total of several terms: show each (e.g. ser, at)
            loss += " (" + " ".join(f"{k} {v:.3f}" for k, v in terms.items()) + ")"
        there = f"test UA there {s['test_ua_at_best']:.3f}"
        if len(cv.outer_folds()) != len(cv.fold_names):
            # each model's own figures, averaged: the ensembles score the test at the end
            there += f"; means of {len(cv.fold_names)} models, not the ensembles"
        click.echo(f"epoch {epoch:3d}  {loss}  dev UA {s['dev_ua']:.3f} "
                   f"WA {s['dev_wa']:.3f}  best dev UA {s['dev_ua_best']:.3f} ({there})")
        if final is not None:
            for f in final.folds:
                click.echo(f"  {f.name:<12} best epoch {f.best_epoch:3d}  dev UA {f.dev.ua:.3f}  "
                           f"test WA {f.test.wa:.3f} UA {f.test.ua:.3f} F1 {f.test.f1:.3f}")
            t = final.test
            click.echo(f"test over {len(final.folds)} fold(s): WA {t.wa_mean:.3f} ± {t.wa_std:.3f}"
                       f"  UA {t.ua_mean:.3f} ± {t.ua_std:.3f}  F1 {t.f1_mean:.3f}")


@main.command()
@experiment_options
@click.option("--variant", default=None, help="Model variant (see `satn variants`).")
@click.option("--fold", "fold_ids", multiple=True,
              help="Fold number (1-based) or name; repeatable; default: all folds.")
@click.option("--epochs", type=int, default=None)
@click.option("--device", default=None, help="cpu, cuda, cuda:N (default: auto).")
@click.option("--tracking-uri", default=None, help="MLflow store (default: ./mlflow.db).")
@click.option("--no-mlflow", is_flag=True, help="Print only; log nothing to MLflow.")
@friendly_errors
def train(config_path, corpus, root, protocol, sets, runtime_path, variant, fold_ids, epochs,
          device, tracking_uri, no_mlflow) -> None:
    """Train one configuration in-process (no Ray), for debugging a trial."""
    from satn.prepare import prepare_dataset
    from satn.runner import CrossValidation
    from satn.store import open_dataset

    cfg = load_experiment(config_path, corpus, root, protocol, sets)
    extra = {"model.variant": variant, "train.epochs": epochs, "train.device": device}
    cfg = cfg.override({k: v for k, v in extra.items() if v is not None})
    runtime = load_runtime(runtime_path)
    cfg = resolve_teacher(cfg, runtime, tracking_uri)
    cfg, info = prepare_dataset(cfg, runtime, echo=click.echo)
    cv = CrossValidation(cfg, open_dataset(info.uri), folds=list(fold_ids) or None)
    observers = [ConsoleObserver()]
    if not no_mlflow:
        from satn.tracking import MlflowObserver, ensure_experiment, ui_hint

        uri = store_uri(tracking_uri, runtime)
        if "{head_ip}" in uri:
            raise ConfigError(f"mlflow.tracking_uri {uri}: {{head_ip}} is filled in by "
                              f"satn-sweep on a cluster; pass --tracking-uri to satn train")
        exp_id = ensure_experiment(uri, runtime.mlflow.experiment)
        tracker = MlflowObserver(uri, exp_id, run_name=f"train/{cfg.model.variant}",
                                 tags={"satn.entry": "satn train"})
        observers.insert(0, tracker)
    try:
        cv.run(observers)
    except BaseException:
        if not no_mlflow:
            tracker.fail("KILLED")
        raise
    if not no_mlflow:
        click.echo(f"MLflow run {tracker.parent_id} in {uri}\n  {ui_hint(uri)}")


@main.command()
@click.argument("audio", nargs=-1, required=True, type=click.Path())
@click.option("--model", "model_ref", required=True,
              help="A checkpoint file (best.pt) or an MLflow run id (config or fold run).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True)
@click.option("--tracking-uri", default=None,
              help="MLflow store for run ids (default: the runtime's, else ./mlflow.db).")
@click.option("--runtime", "runtime_path", type=click.Path(exists=True), default=None,
              help="Runtime config (default: ./ray_config.yaml if present).")
@click.option("--device", default="cpu", show_default=True)
@friendly_errors
def predict(audio, model_ref, fmt, tracking_uri, runtime_path, device) -> None:
    """Print the emotion and class probabilities of each AUDIO file."""
    from satn.checkpoint import load_checkpoint
    from satn.predict import predict_files

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(model_ref)
        if not path.is_file():
            from satn.tracking import find_checkpoint, require_store

            if path.suffix in (".pt", ".pth", ".ckpt") or "/" in model_ref or path.exists():
                raise ConfigError(f"--model {model_ref}: no such checkpoint file")
            uri = require_store(store_uri(tracking_uri, load_runtime(runtime_path)))
            try:
                path = find_checkpoint(uri, model_ref, tmp)
            except Exception as e:
                raise ConfigError(f"--model {model_ref!r} is neither a checkpoint file nor an "
                                  f"MLflow run with a checkpoint ({e})") from e
        try:
            ckpt = load_checkpoint(path, device)
        except ValueError as e:
            raise ConfigError(str(e)) from e
    preds = predict_files(list(audio), ckpt, device)
    classes = ckpt.classes
    if fmt == "json":
        click.echo(json.dumps([p.__dict__ for p in preds], indent=2))
    elif fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["path", "label", *classes, "error"])
        for p in preds:
            w.writerow([p.path, p.label or "", *(f"{p.probs.get(c, float('nan')):.4f}"
                                                 for c in classes), p.error or ""])
        click.echo(buf.getvalue().rstrip("\n"))
    else:
        click.echo(f"{'file':<40} {'emotion':<8} " + " ".join(f"{c:>6}" for c in classes))
        for p in preds:
            if p.error:
                click.echo(f"{p.path:<40} error: {p.error}")
            else:
                click.echo(f"{p.path:<40} {p.label:<8} "
                           + " ".join(f"{p.probs[c]:6.3f}" for c in classes))
    if any(p.error for p in preds):
        sys.exit(1)


@main.command()
def variants() -> None:
    """List the registered model variants and the model.* settings each reads."""
    from satn.models import available, families, uses_transfer

    for name in available():
        reads = ["model.dropout", *(f"model.{f}.*" for f in families(name))]
        if uses_transfer(name):
            reads.append("transfer.* (a teacher)")
        click.echo(f"{name:16s} reads " + ", ".join(reads))
