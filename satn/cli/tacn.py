"""``satn pretrain-vqvae`` and ``satn tacn-figures``: TACN's VQ-VAE and its figures."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from satn.cli.common import (
    experiment_options,
    friendly_errors,
    load_experiment,
    load_runtime,
    main,
    store_uri,
)


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
    from satn.tracking import ensure_experiment, log_finished_run

    uri = store_uri(tracking_uri, runtime)
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
        ensure_experiment,
        fold_checkpoint,
        log_finished_run,
    )

    runtime = load_runtime(runtime_path)
    uri = store_uri(tracking_uri, runtime)
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
