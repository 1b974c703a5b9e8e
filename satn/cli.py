"""Command line: each command parses options, builds a config and calls one function."""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import sys
import tempfile
from pathlib import Path

import click

from satn.config import (
    CORPORA,
    FEATURE_KINDS,
    PROTOCOLS,
    ConfigError,
    ExperimentConfig,
    RuntimeConfig,
)
from satn.errors import InputError

# satn-sweep's exit status: 0 every trial trained (or was stopped early by the scheduler),
# 1 bad input or every trial failed, 3 some trials failed (the rest are logged and ranked).
EXIT_TRIALS_FAILED = 3

# ---------------------------------------------------------------- shared options


def _parse_sets(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for p in pairs:
        key, eq, value = p.partition("=")
        if not eq or not key:
            raise click.BadParameter(f"{p!r}: expected KEY=VALUE, e.g. model.attention.heads=8",
                                     param_hint="--set")
        out[key.strip()] = value.strip()
    return out


def experiment_options(fn):
    """--config / --corpus / --root / --protocol / --set / --ray-config."""
    opts = [
        click.option("--config", "config_path", type=click.Path(dir_okay=False),
                     help="Experiment YAML (see experiments/); defaults are used without it."),
        click.option("--corpus", type=click.Choice(CORPORA), default=None,
                     help="Corpus kind (default: demo, generated on first use)."),
        click.option("--root", default=None,
                     help="Corpus root (IEMOCAP/RAVDESS folder, or the manifest CSV/TSV)."),
        click.option("--protocol", type=click.Choice(PROTOCOLS), default=None,
                     help="IEMOCAP protocol: satn (improvised, 4 classes) or full."),
        click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                     help="Override any config key, e.g. --set model.attention.heads=8 "
                          "(repeatable)."),
        click.option("--ray-config", "runtime_path", type=click.Path(dir_okay=False),
                     default=None, help="Runtime settings (default: ./ray_config.yaml)."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def load_experiment(config_path, corpus, root, protocol, sets) -> ExperimentConfig:
    cfg = ExperimentConfig.from_yaml(config_path) if config_path else ExperimentConfig()
    overrides: dict[str, str] = {}
    if corpus:
        overrides["data.corpus"] = corpus
    if root:
        overrides["data.root"] = root
    if protocol:
        overrides["data.protocol"] = protocol
    overrides.update(_parse_sets(sets))
    return cfg.override(overrides)


def load_runtime(path: str | None) -> RuntimeConfig:
    if path:
        return RuntimeConfig.from_yaml(path)
    for candidate in (Path.cwd() / "ray_config.yaml",
                      Path(__file__).resolve().parents[1] / "ray_config.yaml"):
        if candidate.is_file():
            return RuntimeConfig.from_yaml(candidate)
    return RuntimeConfig()


def resolve_teacher(cfg: ExperimentConfig, runtime: RuntimeConfig,
                    tracking_uri: str | None) -> ExperimentConfig:
    """``transfer.teacher`` as a local file: an MLflow run id is downloaded (once) beside the
    data, where every trial of a sweep can read it."""
    ref = cfg.transfer.teacher
    if not ref or Path(ref).is_file():
        return cfg
    from satn.safenames import safe_name
    from satn.tracking import default_tracking_uri, teacher_path

    dest = Path(runtime.data_dir).resolve() / "teachers" / safe_name(ref)
    cached = dest / "teacher" / "teacher.pt"
    path = cached if cached.is_file() else teacher_path(
        ref, tracking_uri or runtime.mlflow.tracking_uri or default_tracking_uri(), dest)
    return cfg.override({"transfer.teacher": str(Path(path).resolve())})


def friendly_errors(fn):
    """Configuration and input errors end with one clear line, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (InputError, FileNotFoundError) as e:
            raise click.ClickException(str(e)) from e

    return wrapper


# ---------------------------------------------------------------- satn


@click.group()
@click.version_option(package_name="satn")
def main() -> None:
    """satn: speech emotion recognition with attention transfer and temporal attention."""


@main.command("demo-corpus")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--per-class", default=8, show_default=True,
              help="Improvised utterances per speaker and class.")
@click.option("--seed", default=0, show_default=True)
@click.option("--backend", type=click.Choice(["auto", "espeak", "formant"]), default="auto",
              show_default=True, help="Speech synthesiser.")
@friendly_errors
def demo_corpus(out: str, per_class: int, seed: int, backend: str) -> None:
    """Write a small synthetic corpus in the IEMOCAP layout to OUT."""
    from satn.demo import write_demo_corpus

    s = write_demo_corpus(Path(out), per_class=per_class, seed=seed, backend=backend)
    click.echo(f"{s.n_wavs} wav files in {s.root} (backend {s.backend}, {s.seconds:.1f} s)")


@main.command()
@experiment_options
@click.option("--out", default=None, help="Features directory (default: from ray_config.yaml).")
@click.option("--kind", type=click.Choice(FEATURE_KINDS), default=None)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N")
@click.option("--no-progress", is_flag=True)
@friendly_errors
def features(config_path, corpus, root, protocol, sets, runtime_path, out, kind, device,
             no_progress) -> None:
    """Extract features of a corpus into a cached Arrow dataset."""
    from dataclasses import replace

    from satn.prepare import prepare_dataset

    cfg = load_experiment(config_path, corpus, root, protocol, sets)
    if kind:
        cfg = cfg.override({"features.kind": kind})
    runtime = load_runtime(runtime_path)
    if out:
        runtime = replace(runtime, features_dir=out)
    _, info = prepare_dataset(cfg, runtime, device=device, progress=not no_progress,
                              echo=click.echo)
    click.echo(info.uri)


@main.command()
@experiment_options
@friendly_errors
def folds(config_path, corpus, root, protocol, sets, runtime_path) -> None:
    """Show the folds of a corpus: sizes and speakers of each side."""
    from satn.folds import make_folds
    from satn.prepare import prepare_dataset
    from satn.store import open_dataset

    cfg = load_experiment(config_path, corpus, root, protocol, sets)
    cfg, info = prepare_dataset(cfg, load_runtime(runtime_path), progress=False,
                                echo=lambda s: None)
    meta = open_dataset(info.uri).meta
    speakers = dict(zip(meta["id"], meta["speaker"], strict=True))
    click.echo(f"{'fold':<14}{'held out':<10}{'train':>7}{'dev':>6}{'test':>6}  dev / test speakers")
    for f in make_folds(meta, cfg.folds):
        dev = ",".join(sorted({speakers[u] for u in f.dev}))
        test = ",".join(sorted({speakers[u] for u in f.test}))
        click.echo(f"{f.name:<14}{f.group:<10}{len(f.train):>7}{len(f.dev):>6}{len(f.test):>6}"
                   f"  {dev} / {test}")


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
        click.echo(f"epoch {epoch:3d}  {loss}  dev UA {s['dev_ua']:.3f} "
                   f"WA {s['dev_wa']:.3f}  best dev UA {s['dev_ua_best']:.3f} "
                   f"(test UA there {s['test_ua_at_best']:.3f})")
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
        from satn.tracking import MlflowObserver, default_tracking_uri, ensure_experiment, ui_hint

        uri = tracking_uri or runtime.mlflow.tracking_uri or default_tracking_uri()
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
@click.option("--tracking-uri", default=None, help="MLflow store for run ids.")
@click.option("--device", default="cpu", show_default=True)
@friendly_errors
def predict(audio, model_ref, fmt, tracking_uri, device) -> None:
    """Print the emotion and class probabilities of each AUDIO file."""
    from satn.checkpoint import load_checkpoint
    from satn.predict import predict_files

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(model_ref)
        if not path.is_file():
            from satn.tracking import default_tracking_uri, find_checkpoint, require_store

            if path.suffix in (".pt", ".pth", ".ckpt") or "/" in model_ref or path.exists():
                raise ConfigError(f"--model {model_ref}: no such checkpoint file")
            uri = require_store(tracking_uri or default_tracking_uri())
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


def _public_uri(uri: str) -> str:
    """``uri`` without a user name or password in it: it is logged as a run parameter."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _floats(text: str | None, option: str = "--c") -> tuple[float, ...] | None:
    if not text:
        return None
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as e:
        raise click.BadParameter(f"{text!r}: expected numbers separated by commas",
                                 param_hint=option) from e


@main.command()
@experiment_options
@click.option("--features", "feature_sets", multiple=True,
              type=click.Choice(["egemaps", "compare", "logmel_stats"]),
              help="Utterance features (repeatable; default: egemaps and logmel_stats).")
@click.option("--classifier", "classifiers", multiple=True, type=click.Choice(["svm", "logreg"]),
              help="Linear SVM and/or logistic regression (repeatable; default: both).")
@click.option("--c", "c_grid", default=None,
              help="C values tried on each fold's dev side, comma-separated "
                   "(default: 1e-5,1e-4,...,1).")
@click.option("--fold", "fold_ids", multiple=True,
              help="Fold number (1-based) or name; repeatable; default: all folds.")
@click.option("--tracking-uri", default=None, help="MLflow store (default: ./mlflow.db).")
@click.option("--no-mlflow", is_flag=True, help="Print only; log nothing to MLflow.")
@click.option("--no-progress", is_flag=True)
@friendly_errors
def baseline(config_path, corpus, root, protocol, sets, runtime_path, feature_sets, classifiers,
             c_grid, fold_ids, tracking_uri, no_mlflow, no_progress) -> None:
    """Classical baselines: openSMILE / log-mel statistics + linear SVM / logistic regression
    on the experiment's folds, C chosen on each fold's dev side; one MLflow run each."""
    from satn.baselines import BaselineConfig, run_baseline, utterance_features

    cfg = load_experiment(config_path, corpus, root, protocol, sets)
    runtime = load_runtime(runtime_path)
    grid = _floats(c_grid)
    configs = [BaselineConfig(features=f, classifier=c, **({"c_grid": grid} if grid else {}),
                              seed=cfg.train.seed, class_weighting=cfg.train.class_weighting)
               for f in (feature_sets or ("egemaps", "logmel_stats"))
               for c in (classifiers or ("svm", "logreg"))]
    if not no_mlflow:
        from satn.tracking import default_tracking_uri, ensure_experiment, log_baseline, ui_hint

        uri = tracking_uri or runtime.mlflow.tracking_uri or default_tracking_uri()
        exp_id = ensure_experiment(uri, runtime.mlflow.experiment)
    rows = []
    features = {}
    for bcfg in configs:
        if bcfg.features not in features:
            cfg, features[bcfg.features] = utterance_features(
                cfg, runtime, bcfg.features, progress=not no_progress, echo=click.echo)
        feats = features[bcfg.features]
        result = run_baseline(feats.x, feats.meta, cfg, bcfg, list(fold_ids) or None)
        for f in result.folds:
            click.echo(f"  {bcfg.name:<20} {f.name:<12} C {f.c:<8g} dev UA {f.dev.ua:.3f}  "
                       f"test WA {f.test.wa:.3f} UA {f.test.ua:.3f} F1 {f.test.f1:.3f}")
        run_id = ""
        if not no_mlflow:
            run_id = log_baseline(uri, exp_id, cfg, result, tags={"satn.entry": "satn baseline"},
                                  features={"uri": feats.uri, "key": feats.key})
        rows.append((result, run_id))
    click.echo(f"\n{'baseline':<20} {'dims':>5} {'test WA':>15} {'test UA':>15} "
               f"{'test F1':>7}  MLflow run")
    for result, run_id in rows:
        t = result.test
        dims = features[result.cfg.features].x.shape[1]
        click.echo(f"{result.name:<20} {dims:>5} {t.wa_mean:7.3f} ± {t.wa_std:.3f} "
                   f"{t.ua_mean:7.3f} ± {t.ua_std:.3f} {t.f1_mean:7.3f}  {run_id}")
    if not no_mlflow:
        click.echo(f"MLflow: {uri}\n  {ui_hint(uri)}")


@main.command()
@click.argument("run_a")
@click.argument("run_b")
@click.option("--tracking-uri", default=None, help="MLflow store (default: ./mlflow.db).")
@click.option("--tracking-uri-b", default=None,
              help="RUN_B's store, when it is not RUN_A's (default: --tracking-uri).")
@click.option("--side", type=click.Choice(["test", "dev"]), default="test", show_default=True)
@click.option("--resamples", type=click.IntRange(min=100), default=10000, show_default=True,
              help="Bootstrap and permutation resamples.")
@click.option("--level", type=click.FloatRange(0.5, 0.999), default=0.95, show_default=True,
              help="Confidence level of the intervals.")
@click.option("--seed", default=0, show_default=True)
@friendly_errors
def compare(run_a, run_b, tracking_uri, tracking_uri_b, side, resamples, level, seed) -> None:
    """UA and WA of two MLflow runs (config or fold runs) on the same utterances: A - B with a
    bootstrap CI, a paired permutation test over utterances and paired tests over folds."""
    from satn.significance import bootstrap_ci
    from satn.significance import compare as compare_runs
    from satn.tracking import default_tracking_uri, load_predictions

    uri = tracking_uri or load_runtime(None).mlflow.tracking_uri or default_tracking_uri()
    a, b = load_predictions(uri, run_a), load_predictions(tracking_uri_b or uri, run_b)
    pct = f"{level:.0%}"
    for tag, f in (("A", a), ("B", b)):
        n_folds = f["fold"].nunique()
        cis = "  ".join(
            f"{m.upper()} {bootstrap_ci(f, m, side=side, n_resamples=resamples, level=level, seed=seed)}"  # noqa: E501
            for m in ("ua", "wa"))
        click.echo(f"{tag}: {f.attrs['run_name']} ({f.attrs['run_id']}, {n_folds} fold(s))  "
                   f"{side} {cis}  ({pct} CI)")
    for metric in ("ua", "wa"):
        c = compare_runs(a, b, metric, side=side, n_resamples=resamples, level=level, seed=seed)
        click.echo(f"{metric.upper()}: A - B = {c.diff.estimate:+.3f}  {pct} CI "
                   f"[{c.diff.low:+.3f}, {c.diff.high:+.3f}]  paired permutation p = "
                   f"{c.p_utterances:.4f} ({c.n_utterances} utterances)  folds: paired t p = "
                   f"{c.p_folds_t:.4f}, Wilcoxon p = {c.p_folds_wilcoxon:.4f} "
                   f"({len(c.fold_a)} folds)")


@main.command()
@click.argument("run_a")
@click.argument("run_b")
@click.option("--tracking-uri", default=None,
              help="MLflow store of RUN_A, where the fused run is logged (default: ./mlflow.db).")
@click.option("--tracking-uri-b", default=None,
              help="RUN_B's store, when it is not RUN_A's (default: --tracking-uri).")
@click.option("--weights", default=None,
              help="Weights of RUN_A tried on each fold's dev side, comma-separated "
                   "(default: 0,0.1,...,1).")
@click.option("--no-mlflow", is_flag=True, help="Print only; log nothing to MLflow.")
@friendly_errors
def fuse(run_a, run_b, tracking_uri, tracking_uri_b, weights, no_mlflow) -> None:
    """Late fusion of two runs on the same folds (a network and a classical baseline, say):
    p = w p_A + (1 - w) p_B per utterance, w chosen on each fold's dev side; logged as a run
    that `satn report` and `satn compare` read like any other."""
    from satn.fusion import GRID
    from satn.fusion import fuse as fuse_runs
    from satn.significance import fold_scores
    from satn.tracking import default_tracking_uri, load_predictions, log_fusion

    uri = tracking_uri or load_runtime(None).mlflow.tracking_uri or default_tracking_uri()
    uri_b = tracking_uri_b or uri
    a, b = load_predictions(uri, run_a), load_predictions(uri_b, run_b)
    grid = _floats(weights, "--weights") or GRID
    if not all(0.0 <= w <= 1.0 for w in grid):
        raise click.BadParameter(f"{weights!r}: weights lie in [0, 1]", param_hint="--weights")
    result = fuse_runs(a, b, grid)
    alone = {tag: fold_scores(f, "ua") for tag, f in (("A", a), ("B", b))}
    click.echo(f"A: {a.attrs['run_name']} ({a.attrs['run_id']})\n"
               f"B: {b.attrs['run_name']} ({b.attrs['run_id']})")
    click.echo(f"{'fold':<14} {'w(A)':>5} {'dev UA':>7} {'test UA':>8} {'A alone':>8} "
               f"{'B alone':>8}")
    for f in result.folds:
        click.echo(f"{f.name:<14} {f.weight:5.2f} {f.dev.ua:7.3f} {f.test.ua:8.3f} "
                   f"{alone['A'][f.name]:8.3f} {alone['B'][f.name]:8.3f}")
    t = result.test
    click.echo(f"{'mean':<14} {'':>5} {result.dev.ua_mean:7.3f} {t.ua_mean:8.3f} "
               f"{sum(alone['A'].values()) / len(alone['A']):8.3f} "
               f"{sum(alone['B'].values()) / len(alone['B']):8.3f}")
    click.echo(f"fused test WA {t.wa_mean:.3f} ± {t.wa_std:.3f}  UA {t.ua_mean:.3f} ± "
               f"{t.ua_std:.3f}  F1 {t.f1_mean:.3f}")
    if no_mlflow:
        return
    runs = {side: {"run_id": f.attrs["run_id"], "name": f.attrs["run_name"],
                   "variant": f.attrs["variant"] or f.attrs["run_name"], "uri": _public_uri(u)}
            for side, f, u in (("a", a, uri), ("b", b, uri_b))}
    run_id = log_fusion(uri, a.attrs["experiment_id"], result, runs)
    click.echo(f"MLflow run {run_id} in {uri}\n  compare: satn compare {run_id} "
               f"{a.attrs['run_id']} --tracking-uri {uri}")


@main.command()
@click.argument("run_id")
@click.option("--tracking-uri", default=None,
              help="MLflow store of RUN_ID, where the refit is logged (default: ./mlflow.db).")
@click.option("--ray-config", "runtime_path", type=click.Path(dir_okay=False), default=None,
              help="Runtime settings: where the run's features are (default: ./ray_config.yaml).")
@click.option("--device", default=None, help="cpu, cuda, cuda:N (default: the run's).")
@click.option("--no-mlflow", is_flag=True, help="Print only; log nothing to MLflow.")
@friendly_errors
def refit(run_id, tracking_uri, runtime_path, device, no_mlflow) -> None:
    """Retrain each outer fold of a run selected by inner folds (selection.inner_k) on all its
    training speakers, for the epochs its inner folds chose, and score the outer test with
    that model; logged as a run to report, compare and fuse like any other."""
    import pandas as pd

    from satn.checkpoint import save_checkpoint
    from satn.predictions import predictions_frame, scores_of
    from satn.prepare import dataset_of_run
    from satn.refit import chosen_epoch, mean_curve
    from satn.refit import refit as refit_run
    from satn.tracking import (
        default_tracking_uri,
        load_predictions,
        log_refit,
        member_curves,
        run_config,
        run_tags,
    )

    runtime = load_runtime(runtime_path)
    uri = tracking_uri or runtime.mlflow.tracking_uri or default_tracking_uri()
    cfg = ExperimentConfig.from_dict(run_config(uri, run_id))
    if not cfg.selection.inner_k:
        raise ConfigError(f"run {run_id} chose its epochs on one dev side (selection.inner_k "
                          f"= 0): a refit needs the epochs chosen by inner folds")
    if device:
        cfg = cfg.override({"train.device": device})
    curves = member_curves(uri, run_id)
    inner = load_predictions(uri, run_id)
    epochs = {k: chosen_epoch(c) for k, c in sorted(curves.items())}
    if sorted(epochs) != sorted(inner["fold"].unique()):
        raise InputError(f"run {run_id}: member runs of folds {sorted(epochs)} but fold runs "
                         f"{sorted(inner['fold'].unique())}; was it trained to the end?")
    click.echo("epochs chosen by the inner folds: "
               + ", ".join(f"{k} {e}" for k, e in epochs.items()))
    dataset = dataset_of_run(cfg, runtime, run_tags(uri, run_id).get("satn.features_key", ""),
                             echo=click.echo)
    results = refit_run(cfg, dataset, epochs, echo=click.echo)
    classes = tuple(cfg.data.classes)
    speakers = dict(zip(dataset.meta["id"], dataset.meta["speaker"], strict=True))
    folds, inner_ua = [], []
    with tempfile.TemporaryDirectory() as tmp:
        click.echo(f"{'fold':<8} {'epochs':>6} {'inner test UA':>14} {'refit test UA':>14}")
        for r in results:
            rows = inner[inner["fold"] == r.name]
            dev_rows, test_rows = rows[rows["side"] == "dev"], rows[rows["side"] == "test"]
            truth = dict(zip(test_rows["id"], test_rows["true"], strict=True))
            y = [classes.index(truth[u]) for u in r.test.ids]
            frame = predictions_frame(r.test.ids, [speakers[u] for u in r.test.ids], y,
                                      r.test.probs, classes, "test")
            dev, inner_test = scores_of(dev_rows, classes), scores_of(test_rows, classes)
            ckpt = save_checkpoint(Path(tmp) / r.name / "best.pt", r.state_dict, cfg=cfg,
                                   classes=classes, normalizer=r.normalizer,
                                   frame_shape=tuple(dataset.frame_shape),
                                   extra={"fold": f"{r.name}-refit", "epoch": r.epoch,
                                          "refit_of": run_id})
            inner_ua.append(inner_test.ua)
            click.echo(f"{r.name:<8} {r.epoch:>6} {inner_test.ua:>14.3f} "
                       f"{r.test.scores.ua:>14.3f}")
            folds.append({"name": r.name, "epoch": r.epoch, "seconds": r.seconds,
                          "dev_ua_by_epoch": mean_curve(curves[r.name]), "dev": dev,
                          "test": r.test.scores, "checkpoint": ckpt,
                          "predictions": pd.concat([dev_rows.drop(columns="fold"), frame],
                                                   ignore_index=True)})
        n = len(results)
        click.echo(f"{'mean':<8} {'':>6} {sum(inner_ua) / n:>14.3f} "
                   f"{sum(f['test'].ua for f in folds) / n:>14.3f}")
        if no_mlflow:
            return
        source = {"run_id": run_id, "name": inner.attrs["run_name"],
                  "variant": inner.attrs["variant"] or cfg.model.variant}
        # beside the run it refits, whatever experiment the runtime names
        new_id = log_refit(uri, inner.attrs["experiment_id"], cfg, source, folds, classes)
    click.echo(f"MLflow run {new_id} in {uri}\n  compare: satn compare {new_id} {run_id} "
               f"--tracking-uri {uri}")


@main.command()
@experiment_options
@click.option("--teacher-config", "teacher_path", type=click.Path(dir_okay=False), default=None,
              help="YAML of teacher settings (satn.teacher_train.TeacherTrainConfig); "
                   "--set teacher.KEY=VALUE overrides any of them.")
@click.option("--epochs", type=int, default=None)
@click.option("--heldout-speaker", "heldout_speakers", multiple=True,
              help="Speaker held out for evaluation (repeatable).")
@click.option("--heldout-prompts", type=float, default=None,
              help="Fraction of distinct transcripts held out for evaluation (default 0.1).")
@click.option("--decode", type=click.Choice(["greedy", "beam"]), default=None,
              help="Decoding of the final evaluation.")
@click.option("--device", default=None, help="cpu, cuda, cuda:N (default: auto).")
@click.option("--out", default=None,
              help="Teacher file to write (default: satn-runs/teachers/CORPUS-TIME.pt).")
@click.option("--tracking-uri", default=None, help="MLflow store (default: ./mlflow.db).")
@click.option("--no-mlflow", is_flag=True, help="Print only; log nothing to MLflow.")
@friendly_errors
def teacher(config_path, corpus, root, protocol, sets, runtime_path, teacher_path, epochs,
            heldout_speakers, heldout_prompts, decode, device, out, tracking_uri,
            no_mlflow) -> None:
    """Train the ASR teacher (phonemes from transcripts) that attention transfer reads."""
    import time

    from satn.config import from_dict, load_yaml, override
    from satn.prepare import prepare_dataset
    from satn.store import open_dataset
    from satn.teacher_io import save_teacher
    from satn.teacher_train import TeacherTrainConfig, teacher_report, train_teacher

    pairs = _parse_sets(sets)
    tsets = {k.removeprefix("teacher."): v for k, v in pairs.items() if k.startswith("teacher.")}
    rest = tuple(f"{k}={v}" for k, v in pairs.items() if not k.startswith("teacher."))
    cfg = load_experiment(config_path, corpus, root, protocol, rest)
    tcfg = TeacherTrainConfig()
    if teacher_path:
        try:
            tcfg = from_dict(TeacherTrainConfig, load_yaml(teacher_path) or {})
        except ConfigError as e:
            raise ConfigError(f"{teacher_path}: {e}") from e
    extra = {"epochs": epochs, "heldout_prompts": heldout_prompts, "decode": decode,
             "device": device, "heldout_speakers": ",".join(heldout_speakers) or None}
    tcfg = override(tcfg, {**{k: v for k, v in extra.items() if v is not None}, **tsets})
    runtime = load_runtime(runtime_path)
    cfg, info = prepare_dataset(cfg, runtime, echo=click.echo)
    dataset = open_dataset(info.uri)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(out or Path("satn-runs") / "teachers" / f"{cfg.data.corpus}-{stamp}.pt")
    observers = [TeacherConsole()]
    tracker = None
    if not no_mlflow:
        from satn.tracking import TeacherMlflowObserver, default_tracking_uri, ensure_experiment

        uri = tracking_uri or runtime.mlflow.tracking_uri or default_tracking_uri()
        exp_id = ensure_experiment(uri, runtime.mlflow.experiment)
        params = {k: v for k, v in cfg.flat().items() if k.startswith(("data.", "features."))}
        tracker = TeacherMlflowObserver(uri, exp_id, run_name=f"teacher/{cfg.data.corpus}",
                                        params={**params, "features.key": info.key},
                                        tags={"satn.entry": "satn teacher",
                                              "satn.corpus": cfg.data.corpus})
        observers.insert(0, tracker)
    try:
        result = train_teacher(dataset, tcfg, observers)
        report = teacher_report(result, tcfg, corpus=cfg.data.corpus, root=cfg.data.root,
                                features_uri=info.uri)
        save_teacher(path, result.model, features=cfg.features, lexicon=result.lexicon,
                     extra={"report": report})
        if tracker is not None:
            tracker.finish(result.final, path, report)
    except BaseException:
        if tracker is not None:
            tracker.fail("FAILED")
        raise
    f = result.final
    click.echo(f"held out ({f.n} utterances, {f.decode} decoding): PER {f.per:.3f} "
               f"({f.phoneme_errors}/{f.phonemes})  WER {f.wer:.3f} ({f.word_errors}/{f.words});"
               f" {f.ambiguous} of {f.groups} decoded words ambiguous, {f.unknown} unknown; "
               f"WER of the look-up alone (reference phonemes -> words) {f.lookup_wer:.3f}")
    click.echo(f"teacher file: {path.resolve()}")
    if tracker is not None:
        from satn.tracking import ui_hint

        click.echo(f"MLflow run {tracker.run_id} in {uri}\n  {ui_hint(uri)}")


class TeacherConsole:
    """Prints the split, the OOV report and one line per teacher epoch."""

    def on_start(self, cfg, data) -> None:
        s = data.split
        click.echo(f"teacher: {s['n_train']} training / {s['n_heldout']} held-out utterances "
                   f"(speakers held out: {', '.join(s['heldout_speakers']) or 'none'}; "
                   f"{s['n_heldout_prompts']} held-out prompts); "
                   f"{data.dropped} utterance(s) without a transcript or phoneme left out")
        click.echo(f"phonemes: {data.oov.summary()}")

    def on_epoch(self, e) -> None:
        r = e.heldout
        click.echo(f"epoch {e.epoch:3d}  loss {e.train_loss:.3f}  held-out loss "
                   f"{e.heldout_loss:.3f}  PER {r.per:.3f}  WER {r.wer:.3f} "
                   f"({r.n} utt, {r.decode})  {e.seconds:.0f} s")


@main.command("pretrain-vqvae")
@experiment_options
@click.option("--audio-dir", type=click.Path(file_okay=False), default=None,
              help="A folder of unlabeled audio (e.g. ARCTIC); replaces --corpus/--root.")
@click.option("--steps", type=int, default=2000, show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True, help="Segments per step.")
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--heldout", type=float, default=0.1, show_default=True,
              help="Share of utterances held out for the reported figures.")
@click.option("--eval-every", type=int, default=200, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N")
@click.option("--out", default="satn-runs/vqvae", show_default=True,
              help="Folder for the artifact (vqvae-<corpus>-<hash>.pt).")
@click.option("--tracking-uri", default=None, help="MLflow store (default: ./mlflow.db).")
@click.option("--no-mlflow", is_flag=True, help="Print only; log nothing to MLflow.")
@friendly_errors
def pretrain_vqvae_cmd(config_path, corpus, root, protocol, sets, runtime_path, audio_dir, steps,
                       batch_size, lr, heldout, eval_every, seed, device, out, tracking_uri,
                       no_mlflow) -> None:
    """Train a VQ-VAE (model.vqvae.*) on the spectrogram segments of a corpus, labels unused.

    Reports held-out reconstruction error and codebook perplexity, saves a
    versioned artifact for model.vqvae.checkpoint and logs the run to MLflow.
    """
    from satn.config import PretrainConfig, short_hash
    from satn.prepare import corpus_tag, prepare_dataset
    from satn.pretrain import pretrain_vqvae
    from satn.store import open_dataset

    cfg = load_experiment(config_path, corpus, root, protocol, sets)
    runtime = load_runtime(runtime_path)
    if audio_dir:
        from satn.corpora.manifest import write_folder_manifest

        name = Path(audio_dir).resolve().name
        csv_path = write_folder_manifest(audio_dir, Path(runtime.data_dir) / "manifests"
                                         / f"{name}-unlabeled.csv")
        # the manifest loader keeps rows whose label is a class: one "speech" class (and a
        # second name, since a config needs two) lets every file through
        cfg = cfg.override({"data.corpus": "manifest", "data.root": str(csv_path),
                            "data.classes": "speech,none", "data.label_map": ""})
    cfg = cfg.override({"features.kind": "spectrogram_segments"})
    pre = PretrainConfig(steps=steps, batch_size=batch_size, lr=lr, heldout=heldout,
                         eval_every=eval_every, seed=seed, device=device)
    cfg, info = prepare_dataset(cfg, runtime, echo=click.echo)
    dataset = open_dataset(info.uri)
    ids = list(dataset.meta["id"])
    tag = Path(audio_dir).resolve().name if audio_dir else corpus_tag(cfg)
    click.echo(f"pretraining a VQ-VAE on {len(ids)} utterances of {tag} "
               f"({pre.steps} steps of {pre.batch_size} segments; labels unused)")

    def show(ev) -> None:
        click.echo(f"step {ev.step:6d}  train recon {ev.train_reconstruction:.4f}  held-out recon "
                   f"{ev.heldout_reconstruction:.4f}  perplexity {ev.heldout_perplexity:.1f}  "
                   f"codes used {ev.codes_used}  ({ev.seconds:.0f} s)")

    result = pretrain_vqvae(dataset.arrays(), ids, cfg.model.vqvae, pre, on_eval=show)
    _save_pretraining(cfg, pre, info, result, out, runtime, tracking_uri, no_mlflow,
                      short_hash({"features": info.key, "pretrain": pre,
                                  "vqvae": cfg.model.vqvae.sizes()}, 10), tag)


def _save_pretraining(cfg, pre, info, result, out, runtime, tracking_uri, no_mlflow, key,
                      tag) -> None:
    """Artifact file, figures and (unless --no-mlflow) one MLflow run of a pretraining."""
    from dataclasses import asdict

    import numpy as np

    from satn.checkpoint import save_vqvae
    from satn.plots import curves_png, reconstruction_png

    f = result.final
    summary = {"heldout_reconstruction": f.heldout_reconstruction,
               "heldout_perplexity": f.heldout_perplexity, "codes_used": f.codes_used,
               "steps": f.step, "seconds": f.seconds, "n_train_utterances": len(result.train_ids),
               "n_heldout_utterances": len(result.heldout_ids),
               "n_train_segments": result.n_train_segments,
               "n_heldout_segments": result.n_heldout_segments}
    path = save_vqvae(Path(out) / f"vqvae-{tag}-{key}.pt", result.model,
                      settings=cfg.model.vqvae, normalizer=result.normalizer,
                      extra={"corpus": tag, "features_key": info.key,
                             "features": asdict(cfg.features), "pretrain": asdict(pre),
                             "heldout": summary, "heldout_ids": list(result.heldout_ids)})
    figs = Path(out) / f"vqvae-{tag}-{key}-figures"
    figs.mkdir(parents=True, exist_ok=True)
    reconstruction_png(result.examples, figs / "reconstruction.png",
                       title=f"held-out segments of {tag}: input (top), reconstruction (bottom)")
    steps = np.array([e.step for e in result.history])
    curves_png(steps, {"held-out reconstruction MSE": np.array(
                           [e.heldout_reconstruction for e in result.history]),
                       "held-out codebook perplexity": np.array(
                           [e.heldout_perplexity for e in result.history])},
               figs / "heldout_curves.png", title=f"VQ-VAE pretraining on {tag}")
    click.echo(f"held out ({summary['n_heldout_utterances']} utterances, "
               f"{summary['n_heldout_segments']} segments): reconstruction MSE "
               f"{f.heldout_reconstruction:.4f}, perplexity {f.heldout_perplexity:.1f} of "
               f"{cfg.model.vqvae.codebook_size} codes ({f.codes_used} used)")
    click.echo(f"artifact {path}\nfigures {figs}")
    if no_mlflow:
        return
    from satn.tracking import default_tracking_uri, ensure_experiment, log_finished_run

    uri = tracking_uri or runtime.mlflow.tracking_uri or default_tracking_uri()
    exp_id = ensure_experiment(uri, runtime.mlflow.experiment)
    params = {**{f"model.vqvae.{k}": v for k, v in asdict(cfg.model.vqvae).items()},
              **{f"pretrain.{k}": v for k, v in asdict(pre).items()},
              "corpus": tag, "features.key": info.key,
              **{k: v for k, v in cfg.flat().items() if k.startswith("features.")}}
    history = [{"step": e.step, "train_reconstruction": e.train_reconstruction,
                "heldout_reconstruction": e.heldout_reconstruction,
                "heldout_perplexity": e.heldout_perplexity, "codes_used": e.codes_used}
               for e in result.history]
    run_id = log_finished_run(uri, exp_id, f"pretrain-vqvae/{tag}", params, history,
                             {"model": path, "figures": figs},
                             tags={"satn.entry": "satn pretrain-vqvae", "satn.corpus": tag,
                                   "satn.artifact": path.name})
    click.echo(f"MLflow run {run_id} in {uri}")


@main.command("tacn-figures")
@click.argument("run_ids", nargs=-1, required=True)
@click.option("--fold", default="fold1", show_default=True, help="The fold whose test side is shown.")
@click.option("--out", default="satn-runs/tacn-figures", show_default=True)
@click.option("--ray-config", "runtime_path", default=None, help="Runtime settings (features).")
@click.option("--tracking-uri", default=None, help="MLflow store (default: ./mlflow.db).")
@click.option("--seed", default=0, show_default=True, help="t-SNE seed.")
@friendly_errors
def tacn_figures(run_ids, fold, out, runtime_path, tracking_uri, seed) -> None:
    """TACN's Figures 4 and 5 from trained deep_* / fusion_* runs (MLflow config-run ids).

    Figure 4: t-SNE of each run's test-side representation (R_d of a deep_* run,
    R_f of a fusion_* run), one point per utterance. Figure 5: the runs' test
    confusion matrices (four runs: Deep/Fusion x TCN/TACN). Logged to MLflow.
    """
    from satn.batching import SequenceDataset
    from satn.checkpoint import load_checkpoint
    from satn.folds import fold_by_name, make_folds
    from satn.plots import confusion_grid_png, scatter_panels_png
    from satn.prepare import prepare_dataset
    from satn.representations import run_side, tsne_2d
    from satn.store import open_dataset
    from satn.tracking import (
        default_tracking_uri,
        ensure_experiment,
        fold_checkpoint,
        log_finished_run,
    )

    runtime = load_runtime(runtime_path)
    uri = tracking_uri or runtime.mlflow.tracking_uri or default_tracking_uri()
    sides, classes = {}, None
    with tempfile.TemporaryDirectory() as tmp:
        for rid in run_ids:
            ckpt = load_checkpoint(fold_checkpoint(uri, rid, fold, Path(tmp) / rid))
            cfg, info = prepare_dataset(ckpt.cfg, runtime, progress=False, echo=lambda _: None)
            ds = open_dataset(info.uri)
            meta = ds.meta
            test = fold_by_name(make_folds(meta, cfg.folds), fold).test
            row = {u: i for i, u in enumerate(meta["id"])}
            arrays = ds.arrays([row[u] for u in test])
            label = dict(zip(meta["id"], meta["label"], strict=True))
            classes = ckpt.classes
            data = SequenceDataset(arrays, [classes.index(label[u]) for u in test], list(test),
                                   normalizer=ckpt.normalizer)
            name = cfg.model.variant
            sides[name] = run_side(ckpt.model, data, len(classes))
            sc = sides[name].scores
            click.echo(f"{name:<14} {fold} test: WA {sc.wa:.3f}  UA {sc.ua:.3f}  F1 {sc.f1:.3f}  "
                       f"({len(test)} utterances)")
    figs = Path(out)
    figs.mkdir(parents=True, exist_ok=True)
    panels = {}
    for name, side in sides.items():
        rep = "R_f" if "R_f" in side.representations else "R_d"
        panels[f"{rep} ({name})"] = (tsne_2d(side.representations[rep], seed), side.labels)
    scatter_panels_png(panels, classes, figs / "tsne_test.png",
                       title=f"t-SNE of the test side ({fold}), one point per utterance")
    confusion_grid_png({f"{n} (UA {s.scores.ua:.2f})": s.scores.confusion
                        for n, s in sides.items()}, classes, figs / "confusion_test.png",
                       title=f"test confusion ({fold}), rows normalised")
    exp_id = ensure_experiment(uri, runtime.mlflow.experiment)
    run_id = log_finished_run(uri, exp_id, "tacn-figures", {"runs": ",".join(run_ids),
                              "fold": fold, "seed": seed}, [], {"figures": figs},
                              tags={"satn.entry": "satn tacn-figures"}, level="figures")
    click.echo(f"figures in {figs}; MLflow run {run_id} in {uri}")


@main.command()
def variants() -> None:
    """List the registered model variants and the model.* settings each reads."""
    from satn.models import available, families, uses_transfer

    for name in available():
        reads = ["model.dropout", *(f"model.{f}.*" for f in families(name))]
        if uses_transfer(name):
            reads.append("transfer.* (a teacher)")
        click.echo(f"{name:16s} reads " + ", ".join(reads))


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
    from satn.tracking import default_tracking_uri, read_runs

    runtime = load_runtime(runtime_path)
    uri = tracking_uri or runtime.mlflow.tracking_uri or default_tracking_uri()
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
@click.option("--tracking-uri", default=None, help="MLflow store (default: ./mlflow.db).")
@click.option("--experiment", "experiments", multiple=True,
              help="Only this experiment (repeatable; default: all).")
@click.option("--older-than", type=float, default=None, metavar="HOURS",
              help="Also take RUNNING runs written on other hosts that started longer ago.")
@click.option("--dry-run", is_flag=True, help="List what would be marked; change nothing.")
@friendly_errors
def runs_repair(tracking_uri, experiments, older_than, dry_run) -> None:
    """Mark KILLED the runs left RUNNING by a process that has ended (a killed sweep or train),
    and draw the confusion and attention pictures their folds did not reach."""
    from satn.tracking import default_tracking_uri, repair_runs, require_store

    uri = require_store(tracking_uri or default_tracking_uri())
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


# ---------------------------------------------------------------- satn-sweep


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
