"""``satn demo-corpus``, ``satn features``, ``satn folds``: corpora to cached features."""

from __future__ import annotations

from pathlib import Path

import click

from satn.cli.common import experiment_options, friendly_errors, load_experiment, load_runtime, main
from satn.config import FEATURE_KINDS


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
