"""``satn baseline``, ``satn compare``, ``satn fuse``, ``satn average``, ``satn choose``,
``satn refit``: classical rows, the significance of a difference, late fusion, the mean of
finished runs (a seed ensemble), the choice among runs by dev alone and the refit after
selection by inner folds."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from satn.cli.common import (
    experiment_options,
    floats,
    friendly_errors,
    load_experiment,
    load_runtime,
    main,
    public_uri,
    store_uri,
)
from satn.config import ConfigError, ExperimentConfig
from satn.errors import InputError


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
    grid = floats(c_grid)
    configs = [BaselineConfig(features=f, classifier=c, **({"c_grid": grid} if grid else {}),
                              seed=cfg.train.seed, class_weighting=cfg.train.class_weighting)
               for f in (feature_sets or ("egemaps", "logmel_stats"))
               for c in (classifiers or ("svm", "logreg"))]
    if not no_mlflow:
        from satn.tracking import ensure_experiment, log_baseline, ui_hint

        uri = store_uri(tracking_uri, runtime)
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
    bootstrap CI, a paired permutation test over utterances and paired tests over folds. A run
    that scored a superset of the other's classes (trained on all eight emotions) is scored on
    the other's classes alone."""
    from satn.predictions import align_classes
    from satn.significance import bootstrap_ci
    from satn.significance import compare as compare_runs
    from satn.tracking import load_predictions

    uri = store_uri(tracking_uri, load_runtime(None))
    a, b, note = align_classes(load_predictions(uri, run_a),
                               load_predictions(tracking_uri_b or uri, run_b))
    if note:
        click.echo(note)
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
        click.echo(_difference_line(c, "A - B"))


def _difference_line(c, what: str) -> str:
    """One :class:`satn.significance.Comparison` as `satn compare` prints it."""
    return (f"{c.metric.upper()}: {what} = {c.diff.estimate:+.3f}  {c.diff.level:.0%} CI "
            f"[{c.diff.low:+.3f}, {c.diff.high:+.3f}]  paired permutation p = "
            f"{c.p_utterances:.4f} ({c.n_utterances} utterances)  folds: paired t p = "
            f"{c.p_folds_t:.4f}, Wilcoxon p = {c.p_folds_wilcoxon:.4f} ({len(c.fold_a)} folds)")


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
@click.option("--calibrate", is_flag=True,
              help="Temperature-scale each run on each fold's dev side before weighing them.")
@click.option("--no-mlflow", is_flag=True, help="Print only; log nothing to MLflow.")
@friendly_errors
def fuse(run_a, run_b, tracking_uri, tracking_uri_b, weights, calibrate, no_mlflow) -> None:
    """Late fusion of two runs on the same folds (a network and a classical baseline, say):
    p = w p_A + (1 - w) p_B per utterance, w chosen on each fold's dev side; logged as a run
    that `satn report` and `satn compare` read like any other. With --calibrate, each run's
    scores are first temperature-scaled to their least dev-side log-loss. A run that scored a
    superset of the other's classes (trained on all eight emotions, fused with a four-class
    baseline) is restricted to the other's classes first."""
    from satn.fusion import GRID
    from satn.fusion import fuse as fuse_runs
    from satn.predictions import align_classes
    from satn.significance import fold_scores
    from satn.tracking import load_predictions, log_fusion

    uri = store_uri(tracking_uri, load_runtime(None))
    uri_b = tracking_uri_b or uri
    a, b, note = align_classes(load_predictions(uri, run_a), load_predictions(uri_b, run_b))
    grid = floats(weights, "--weights") or GRID
    if not all(0.0 <= w <= 1.0 for w in grid):
        raise click.BadParameter(f"{weights!r}: weights lie in [0, 1]", param_hint="--weights")
    result = fuse_runs(a, b, grid, calibrate=calibrate)
    alone = {tag: fold_scores(f, "ua") for tag, f in (("A", a), ("B", b))}
    click.echo(f"A: {a.attrs['run_name']} ({a.attrs['run_id']})\n"
               f"B: {b.attrs['run_name']} ({b.attrs['run_id']})")
    if note:
        click.echo(note)
    temps = f" {'T(A)':>6} {'T(B)':>6}" if calibrate else ""
    click.echo(f"{'fold':<14} {'w(A)':>5} {'dev UA':>7} {'test UA':>8} {'A alone':>8} "
               f"{'B alone':>8}{temps}")
    for f in result.folds:
        temps = (f" {f.temperatures[0]:6.2f} {f.temperatures[1]:6.2f}" if calibrate else "")
        click.echo(f"{f.name:<14} {f.weight:5.2f} {f.dev.ua:7.3f} {f.test.ua:8.3f} "
                   f"{alone['A'][f.name]:8.3f} {alone['B'][f.name]:8.3f}{temps}")
    t = result.test
    click.echo(f"{'mean':<14} {'':>5} {result.dev.ua_mean:7.3f} {t.ua_mean:8.3f} "
               f"{sum(alone['A'].values()) / len(alone['A']):8.3f} "
               f"{sum(alone['B'].values()) / len(alone['B']):8.3f}")
    click.echo(f"fused test WA {t.wa_mean:.3f} ± {t.wa_std:.3f}  UA {t.ua_mean:.3f} ± "
               f"{t.ua_std:.3f}  F1 {t.f1_mean:.3f}")
    if no_mlflow:
        return
    runs = {side: {"run_id": f.attrs["run_id"], "name": f.attrs["run_name"],
                   "variant": f.attrs["variant"] or f.attrs["run_name"], "uri": public_uri(u)}
            for side, f, u in (("a", a, uri), ("b", b, uri_b))}
    run_id = log_fusion(uri, a.attrs["experiment_id"], result, runs)
    click.echo(f"MLflow run {run_id} in {uri}\n  compare: satn compare {run_id} "
               f"{a.attrs['run_id']} --tracking-uri {uri}")


@main.command()
@click.argument("run_ids", metavar="RUN RUN [RUN ...]", nargs=-1, required=True)
@click.option("--tracking-uri", default=None,
              help="MLflow store of the runs, where the mean is logged (default: ./mlflow.db).")
@click.option("--no-mlflow", is_flag=True, help="Print only; log nothing to MLflow.")
@friendly_errors
def average(run_ids, tracking_uri, no_mlflow) -> None:
    """The mean of several finished runs' class probabilities, equal weights, per utterance:
    a seed ensemble of runs trained apart (`--set train.seed=N`), or of configurations that
    scored the same folds. Nothing is chosen on dev or test; the mean's dev side (with inner
    folds, the selection score) says whether it beats one seed, and `satn fuse` weighs it
    against a baseline like any run. Runs that scored more classes than the smallest run are
    scored on its classes."""
    from satn.fusion import average as average_runs
    from satn.predictions import common_classes
    from satn.tracking import load_predictions, log_average

    _distinct(run_ids, "to average")
    uri = store_uri(tracking_uri, load_runtime(None))
    tags = [str(i + 1) for i in range(len(run_ids))]
    frames, notes = common_classes([load_predictions(uri, r) for r in run_ids], tags)
    result = average_runs(frames)
    for tag, f in zip(tags, frames, strict=True):
        click.echo(f"{tag}: {f.attrs['run_name']} ({f.attrs['run_id']})")
    for note in notes:
        click.echo(note)
    click.echo(f"{'fold':<14} {'dev UA':>7} {'test UA':>8} {'runs alone (test UA)':>22}")
    for f in result.folds:
        click.echo(f"{f.name:<14} {f.dev.ua:7.3f} {f.test.ua:8.3f}   "
                   + " ".join(f"{ua:.3f}" for ua in f.members_test_ua))
    alone = [sum(f.members_test_ua[i] for f in result.folds) / len(result.folds)
             for i in range(result.n_runs)]
    t = result.test
    click.echo(f"{'mean':<14} {result.dev.ua_mean:7.3f} {t.ua_mean:8.3f}   "
               + " ".join(f"{ua:.3f}" for ua in alone))
    click.echo(f"mean of {result.n_runs} runs: test WA {t.wa_mean:.3f} ± {t.wa_std:.3f}  UA "
               f"{t.ua_mean:.3f} ± {t.ua_std:.3f}  F1 {t.f1_mean:.3f}")
    if no_mlflow:
        return
    runs = [{"run_id": f.attrs["run_id"], "name": f.attrs["run_name"],
             "variant": f.attrs["variant"] or f.attrs["run_name"], "uri": public_uri(uri)}
            for f in frames]
    run_id = log_average(uri, frames[0].attrs["experiment_id"], result, runs)
    click.echo(f"MLflow run {run_id} in {uri}\n  fuse: satn fuse {run_id} <baseline run> "
               f"--tracking-uri {uri}")


def _distinct(run_ids: tuple[str, ...], purpose: str) -> None:
    if len(run_ids) < 2:
        raise click.UsageError(f"give at least two runs {purpose}")
    twice = sorted({r for r in run_ids if run_ids.count(r) > 1})
    if twice:
        raise click.UsageError(f"run {twice[0]} given more than once")


@main.command()
@click.argument("run_ids", metavar="[LABEL=]RUN [LABEL=]RUN ...", nargs=-1, required=True)
@click.option("--against", "baselines", multiple=True, metavar="RUN",
              help="Compare the chosen run with this one on test (repeatable): the best "
                   "classical baseline, say.")
@click.option("--tracking-uri", default=None, help="MLflow store (default: ./mlflow.db).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the candidates, the choice and the comparisons here.")
@click.option("--resamples", type=click.IntRange(min=100), default=10000, show_default=True,
              help="Bootstrap and permutation resamples of the comparisons.")
@click.option("--seed", default=0, show_default=True)
@friendly_errors
def choose(run_ids, baselines, tracking_uri, json_path, resamples, seed) -> None:
    """Choose one of several finished runs by the selection score (fold-mean dev UA; with
    inner folds, their pooled predictions) and only then read its test side, against each
    --against run with the paired tests of `satn compare`. A tie goes to the run given
    first. The runs must have scored the same utterances of the same folds; runs on more
    classes than the fewest are scored on those. LABEL=RUN names a candidate in the table
    (e.g. eight+svm=RUN); unlabelled runs are numbered."""
    import json

    from satn.choice import choose as choose_run
    from satn.predictions import align_classes
    from satn.significance import compare as compare_runs
    from satn.tracking import load_predictions

    labelled = [r.partition("=") if "=" in r else (str(i + 1), "", r)
                for i, r in enumerate(run_ids)]
    tags, runs = [t for t, _, _ in labelled], tuple(r for _, _, r in labelled)
    _distinct(runs, "to choose among")
    if len(set(tags)) < len(tags) or not all(tags):
        raise click.UsageError("each LABEL=RUN needs its own non-empty label")
    uri = store_uri(tracking_uri, load_runtime(None))
    # read every run first: a bad --against id fails before anything is printed
    frames = [load_predictions(uri, r) for r in runs]
    against = [load_predictions(uri, r) for r in baselines]
    choice = choose_run(frames, tags)
    for c in choice.candidates:
        click.echo(f"{c.tag}: {c.frame.attrs['run_name']} ({c.frame.attrs['run_id']})")
    for note in choice.notes:
        click.echo(note)
    width = max(4, *(len(t) for t in tags))
    click.echo(f"\n{'':2}{'run':<{width}} {'selection score':>15} {'test UA':>15}   "
               f"dev UA per fold ({', '.join(choice.folds)})")
    for i, c in enumerate(choice.candidates):
        mark = "*" if i == choice.chosen else ""
        click.echo(f"{mark:<2}{c.tag:<{width}} {c.selection_score:>15.4f} "
                   f"{c.test_ua_mean:>7.3f} ± {c.test_ua_std:.3f}   "
                   + " ".join(f"{ua:.3f}" for ua in c.dev_ua))
    best = choice.best
    click.echo(f"chosen by the selection score (fold-mean dev UA; test is not read): "
               f"{best.tag}, {best.frame.attrs['run_name']} ({best.frame.attrs['run_id']})")
    if choice.tied:
        click.echo("tie: run(s) " + ", ".join(choice.candidates[i].tag for i in choice.tied)
                   + " have the same selection score; the run given first is chosen")
    record = {"classes": list(choice.classes), "folds": list(choice.folds),
              "chosen": best.frame.attrs["run_id"],
              "tied": [choice.candidates[i].frame.attrs["run_id"] for i in choice.tied],
              "candidates": [{"label": c.tag, "run_id": c.frame.attrs["run_id"],
                              "name": c.frame.attrs["run_name"],
                              "selection_score": c.selection_score, "dev_ua": list(c.dev_ua),
                              "test_ua_mean": c.test_ua_mean, "test_ua": list(c.test_ua)}
                             for c in choice.candidates],
              "against": []}
    for base in against:
        a, b, note = align_classes(best.frame, base)
        click.echo(f"against {b.attrs['run_name']} ({b.attrs['run_id']}):")
        if note:
            click.echo(f"  {note}")
        entry = {"run_id": b.attrs["run_id"], "name": b.attrs["run_name"]}
        for metric in ("ua", "wa"):
            c = compare_runs(a, b, metric, n_resamples=resamples, seed=seed)
            click.echo("  " + _difference_line(c, "chosen - this"))
            entry[metric] = {"chosen": c.a, "this": c.b, "diff": c.diff.estimate,
                             "low": c.diff.low, "high": c.diff.high,
                             "p_utterances": c.p_utterances, "p_folds_t": c.p_folds_t,
                             "p_folds_wilcoxon": c.p_folds_wilcoxon}
        record["against"].append(entry)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(record, f, indent=1)
        click.echo(f"written: {json_path}")


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
        load_predictions,
        log_refit,
        member_curves,
        run_config,
        run_tags,
    )

    runtime = load_runtime(runtime_path)
    uri = store_uri(tracking_uri, runtime)
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
