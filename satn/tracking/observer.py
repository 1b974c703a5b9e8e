"""Training as it happens: :class:`MlflowObserver` logs a cross-validation (a config
run and a run per fold) epoch by epoch.

The data of a fold's best epoch (checkpoint, per-utterance predictions, confusion
tables, attention arrays) is logged as soon as the fold improves, before a tuner may
stop the trial. Its pictures are drawn once, from the final best, when the fold's run
ends: drawing them at every improvement cost more than training a small model. A trial
a tuner stops early gets its pictures from the sweep's driver, drawn from that data
(:func:`satn.tracking.cleanup.draw_stored_figures`), and a run killed with its process
gets them from ``satn runs repair`` (which a resumed sweep runs first).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import yaml

from satn.engine import EpochStats
from satn.folddata import eval_labels
from satn.plots import confusion_png
from satn.runner import CrossValidation, CrossValidationResult
from satn.safenames import safe_names, write_index
from satn.tracking.artifacts import log_figures, write_confusion_csv, write_confusions
from satn.tracking.cleanup import WRITER_TAG, writer_id
from satn.tracking.store import log_params, now_ms, open_client, scalars


class MlflowObserver:
    """Logs an :class:`CrossValidation` (runner observer) to MLflow."""

    def __init__(self, tracking_uri: str, experiment_id: str, run_name: str,
                 tags: dict[str, str] | None = None):
        self.client = open_client(tracking_uri)
        self.experiment_id = experiment_id
        self.run_name = run_name
        # which process writes these runs: `satn runs repair` knows them orphaned once it ends
        self.tags = {WRITER_TAG: writer_id(), **(tags or {})}
        self.parent_id: str | None = None
        self.fold_runs: dict[str, str] = {}

    def resume(self, parent_id: str, fold_runs: dict[str, str]) -> None:
        """Continue logging into the runs of an earlier attempt of the same trial.

        A killed sweep's runs were marked KILLED (``repair_runs``); they are
        RUNNING again while the restored trial trains, so each fold stays one run.
        """
        self.parent_id, self.fold_runs = parent_id, dict(fold_runs)
        for run_id in [parent_id, *fold_runs.values()]:
            tags = self.client.get_run(run_id).data.tags
            for key in ("satn.outcome", "satn.reason"):  # what repair said of the kill
                if key in tags:
                    self.client.delete_tag(run_id, key)
            self.client.update_run(run_id, status="RUNNING")
            self.client.set_tag(run_id, WRITER_TAG, self.tags[WRITER_TAG])
            self.client.set_tag(run_id, "satn.resumed", str(int(tags.get("satn.resumed", 0)) + 1))

    # ------------------------------------------------------------ observer hooks
    def on_start(self, cv: CrossValidation) -> None:
        if self.parent_id is not None:  # resumed: the runs exist
            return
        cfg = cv.cfg
        manifest = cv.dataset_manifest
        tags = {
            "satn.variant": cfg.model.variant,
            "satn.corpus": str(manifest.get("corpus", cfg.data.corpus)),
            "satn.protocol": cfg.data.protocol,
            "satn.features_key": str(manifest.get("key", "")),
            "satn.folds": ",".join(cv.fold_names),
            **self.tags,
        }
        parent = self.client.create_run(self.experiment_id, run_name=self.run_name,
                                        tags={**tags, "satn.level": "config"})
        self.parent_id = parent.info.run_id
        log_params(self.client, self.parent_id, cfg.flat())
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "config.yaml"
            path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            self.client.log_artifact(self.parent_id, str(path))
        ensembles = cfg.selection.ensembles
        for pf in cv.prepared:
            name = pf.fold.name
            # with an ensemble per outer fold, the fold runs are the ensembles' (logged at
            # the end), and each model's run is a member of one
            level = ({"satn.level": "member", "satn.outer": pf.fold.scored_as} if ensembles
                     else {"satn.level": "fold"})
            child = self.client.create_run(
                self.experiment_id, run_name=f"{self.run_name}/{name}",
                tags={**tags, "mlflow.parentRunId": self.parent_id, **level,
                      "satn.fold": name, "satn.held_out": pf.fold.group})
            run_id = child.info.run_id
            self.fold_runs[name] = run_id
            log_params(self.client, run_id, {
                **cfg.flat(), "fold.name": name, "fold.group": pf.fold.group,
                "fold.n_train": len(pf.fold.train), "fold.n_dev": len(pf.fold.dev),
                "fold.n_test": len(pf.fold.test), "fold.probes": ",".join(pf.data.probe_ids)})

    def on_epoch(self, cv: CrossValidation, epoch: int, stats: dict[str, EpochStats],
                 final: CrossValidationResult | None) -> None:
        from mlflow.entities import Metric

        now = now_ms()
        for name, s in stats.items():
            metrics = {"train_loss": s.train_loss, "dev_loss": s.dev_loss, "dev_wa": s.dev.wa,
                       "dev_ua": s.dev.ua, "dev_f1": s.dev.f1, "epoch_seconds": s.seconds,
                       "lr": s.lr}
            # each loss term by name (L_SER, L_AT, ...), on both sides, beside the totals
            metrics.update({f"train_loss_{k}": v for k, v in s.train_losses.items()})
            metrics.update({f"dev_loss_{k}": v for k, v in s.dev_losses.items()})
            where = cv.placement.get(name)
            if where and epoch == 1:  # which worker, node and GPU trained it, and when
                self.client.set_tag(self.fold_runs[name], "satn.placement",
                                    json.dumps(where, default=str))
            self.client.log_batch(self.fold_runs[name], metrics=[
                Metric(k, float(v), now, epoch) for k, v in metrics.items()])
            if s.improved:
                self._log_best(cv, name)
        summary = cv.epoch_summary(stats)
        self.client.log_batch(self.parent_id, metrics=[
            Metric(k, float(v), now, epoch) for k, v in summary.items()])
        if final is not None:
            self._finish(cv, final)

    # ------------------------------------------------------------ helpers
    def _log_best(self, cv: CrossValidation, name: str) -> None:
        """Checkpoint, predictions, confusion tables and attention arrays of a fold's new
        best epoch (the pictures follow when the fold ends: :meth:`_log_best_figures`)."""
        from mlflow.entities import Metric

        from satn.checkpoint import save_checkpoint

        run_id = self.fold_runs[name]
        trainer = cv.trainers[name]
        pf = next(p for p in cv.prepared if p.fold.name == name)
        best = trainer.best
        classes = cv.classes
        now = now_ms()
        metrics = {"best_epoch": best.epoch,
                   **{f"best_dev_{k}": v for k, v in scalars(best.dev).items()},
                   **{f"best_test_{k}": v for k, v in scalars(best.test).items()}}
        self.client.log_batch(run_id, metrics=[
            Metric(k, float(v), now, best.epoch) for k, v in metrics.items()])
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            save_checkpoint(tmp / "best.pt", best.state_dict, cfg=cv.cfg,
                            classes=classes, normalizer=pf.normalizer,
                            frame_shape=cv.frame_shape,
                            extra={"fold": name, "epoch": best.epoch,
                                   "dev": scalars(best.dev), "test": scalars(best.test),
                                   "features_key": cv.dataset_manifest.get("key")})
            self.client.log_artifact(run_id, str(tmp / "best.pt"), "checkpoint")
            conf = write_confusions(tmp, classes, best.dev, best.test, pictures=False)
            self.client.log_artifacts(run_id, str(conf), "confusion")
            if best.evaluations:
                _write_neural_predictions(cv, pf, best.evaluations, tmp / "predictions")
                self.client.log_artifacts(run_id, str(tmp / "predictions"), "predictions")
            if best.attention:
                att = tmp / "attention"
                att.mkdir()
                # ids come from the corpus: file names must not (../../x, /abs, a/b)
                names = safe_names(best.attention)
                for safe, uid in names.items():
                    np.save(att / f"{safe}.npy", best.attention[uid])
                write_index(att, names)
                self.client.log_artifacts(run_id, str(att), "attention")

    def _log_best_figures(self, cv: CrossValidation, name: str) -> None:
        """The pictures of a fold's final best epoch: its dev and test confusion matrices
        and its probes' attention maps, beside the tables and arrays they draw."""
        trainer = cv.trainers.get(name)
        best = trainer.best if trainer is not None else None
        if best is None:
            return
        names = safe_names(best.attention or {})
        with tempfile.TemporaryDirectory() as tmp:
            log_figures(self.client, self.fold_runs[name], Path(tmp), cv.classes,
                         {"dev": best.dev.confusion, "test": best.test.confusion},
                         {safe: (uid, best.attention[uid]) for safe, uid in names.items()},
                         name, best.epoch)

    def _finish(self, cv: CrossValidation, result: CrossValidationResult) -> None:
        from mlflow.entities import Metric

        now = now_ms()
        for fr in result.members or result.folds:
            run_id = self.fold_runs[fr.name]
            self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0)
                                                   for k, v in _final_metrics(fr).items()])
            self._log_best_figures(cv, fr.name)
            self.client.set_terminated(run_id, "FINISHED")
        for fr in result.folds if result.ensembles else ():
            self._log_ensemble(cv, fr, result.ensembles[fr.name])
        summary = result.summary()
        self.client.log_batch(self.parent_id, metrics=[
            Metric(k, float(v), now, 0) for k, v in summary.items() if np.isscalar(v)])
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            cm = result.test.confusion_normalised_mean
            write_confusion_csv(cm, result.classes, tmp / "test_mean_normalised.csv", fmt="%.4f")
            confusion_png(cm, result.classes, tmp / "test_mean_normalised.png",
                          title="test, mean of row-normalised folds", normalise=False)
            (tmp / "summary.json").write_text(json.dumps(
                {"folds": [{"name": f.name, "best_epoch": f.best_epoch, "dev": scalars(f.dev),
                            "test": scalars(f.test)} for f in result.folds],
                 "summary": summary, "seconds": result.seconds}, indent=2, default=float))
            self.client.log_artifacts(self.parent_id, str(tmp), "results")
        self.client.set_terminated(self.parent_id, "FINISHED")

    def _log_ensemble(self, cv: CrossValidation, fr, evaluations) -> None:
        """An outer fold scored by several models: a fold run of its own with the combined
        figures, confusion matrices and per-utterance predictions (``satn compare``)."""
        from mlflow.entities import Metric

        cfg = cv.cfg
        group = cv.outer_folds()[fr.name]
        parent = self.client.get_run(self.parent_id).data.tags
        tags = {k: v for k, v in parent.items() if k.startswith("satn.") and k != "satn.level"}
        run_id = self.client.create_run(
            self.experiment_id, run_name=f"{self.run_name}/{fr.name}",
            tags={**tags, "mlflow.parentRunId": self.parent_id, "satn.level": "fold",
                  "satn.fold": fr.name, "satn.held_out": fr.group,
                  "satn.members": ",".join(pf.fold.name for pf in group)}).info.run_id
        self.fold_runs[fr.name] = run_id
        log_params(self.client, run_id, {
            **cfg.flat(), "fold.name": fr.name, "fold.group": fr.group,
            "fold.members": len(group), "fold.n_test": len(group[0].fold.test),
            "fold.n_dev": len(evaluations["dev"].ids)})
        metrics = {**_final_metrics(fr), "best_epoch_median": fr.best_epoch}
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now_ms(), 0)
                                               for k, v in metrics.items()])
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            conf = write_confusions(tmp, cv.classes, fr.dev, fr.test,
                               f"{fr.name} {{side}} (ensemble of {len(group)})")
            self.client.log_artifacts(run_id, str(conf), "confusion")
            _write_predictions_of(cv, evaluations, eval_labels(group),
                                  tmp / "predictions")
            self.client.log_artifacts(run_id, str(tmp / "predictions"), "predictions")
        self.client.set_terminated(run_id, "FINISHED")

    def fail(self, status: str = "FAILED") -> None:
        """Mark the runs of a cross-validation that did not finish (error or early stop)."""
        for run_id in [*self.fold_runs.values(), self.parent_id]:
            if run_id and self.client.get_run(run_id).info.status == "RUNNING":
                self.client.set_terminated(run_id, status)


def _write_neural_predictions(cv: CrossValidation, pf, evaluations, folder: Path) -> None:
    """The best epoch's dev and test probabilities of one fold as ``folder/predictions.parquet``."""
    _write_predictions_of(cv, evaluations, eval_labels([pf]), folder)


def _write_predictions_of(cv: CrossValidation, evaluations, labels: dict[str, int],
                          folder: Path) -> None:
    """``evaluations`` (side -> Evaluation) as ``folder/predictions.parquet``."""
    import pandas as pd

    from satn.predictions import FILE, predictions_frame, write_predictions

    folder.mkdir()
    frames = [predictions_frame(ev.ids, [cv.speakers[u] for u in ev.ids],
                                [labels[u] for u in ev.ids], ev.probs, cv.classes, side)
              for side, ev in evaluations.items()]
    write_predictions(pd.concat(frames, ignore_index=True), folder / FILE, "probability")


def _final_metrics(fr) -> dict[str, float]:
    return {**{f"dev_{k}_final": v for k, v in scalars(fr.dev).items()},
            **{f"test_{k}_final": v for k, v in scalars(fr.test).items()},
            "epochs_run": fr.epochs_run}
