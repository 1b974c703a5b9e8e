"""``satn teacher``: the ASR teacher that attention transfer reads."""

from __future__ import annotations

from pathlib import Path

import click

from satn.cli.common import (
    experiment_options,
    friendly_errors,
    load_experiment,
    load_runtime,
    main,
    parse_sets,
    store_uri,
)
from satn.config import ConfigError


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

    pairs = parse_sets(sets)
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
        from satn.tracking import TeacherMlflowObserver, ensure_experiment

        uri = store_uri(tracking_uri, runtime)
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
