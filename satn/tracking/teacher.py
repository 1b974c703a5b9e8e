"""The ASR teacher's runs: ``satn teacher`` logged, and a teacher found again by run id."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from satn.tracking.store import default_tracking_uri, log_params, now_ms, open_client

TEACHER_ARTIFACT = "teacher/teacher.pt"


class TeacherMlflowObserver:
    """Logs ``satn teacher`` (a :func:`satn.teacher_train.train_teacher` run) to MLflow:
    params, per-epoch loss / PER / WER, then the teacher file and its report."""

    def __init__(self, tracking_uri: str, experiment_id: str, run_name: str,
                 params: dict[str, Any], tags: dict[str, str] | None = None):
        self.client = open_client(tracking_uri)
        self.experiment_id = experiment_id
        self.run_name = run_name
        self.params = dict(params)
        self.tags = dict(tags or {})
        self.run_id: str | None = None

    def on_start(self, cfg, data) -> None:
        from satn.config import flatten, to_dict

        run = self.client.create_run(self.experiment_id, run_name=self.run_name,
                                     tags={"satn.level": "teacher", **self.tags})
        self.run_id = run.info.run_id
        split = {f"split.{k}": v for k, v in flatten(data.split).items()}
        log_params(self.client, self.run_id, {
            **self.params, **flatten(to_dict(cfg), "teacher."), **split,
            "phonemes.oov_words": data.oov.oov_total, "phonemes.words": data.oov.words_total,
            "phonemes.dropped_utterances": data.dropped})

    def on_epoch(self, epoch) -> None:
        from mlflow.entities import Metric

        now = now_ms()
        r = epoch.heldout
        metrics = {"train_loss": epoch.train_loss, "heldout_loss": epoch.heldout_loss,
                   "heldout_per": r.per, "heldout_wer": r.wer,
                   "heldout_ambiguous_rate": r.ambiguous / max(r.groups, 1),
                   "heldout_unknown_rate": r.unknown / max(r.groups, 1),
                   "epoch_seconds": epoch.seconds}
        self.client.log_batch(self.run_id, metrics=[
            Metric(k, float(v), now, epoch.epoch) for k, v in metrics.items()])

    def finish(self, final, teacher_path: str | Path, report: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        now = now_ms()
        metrics = {"final_per": final.per, "final_wer": final.wer,
                   "final_ambiguous_rate": final.ambiguous / max(final.groups, 1),
                   "final_unknown_rate": final.unknown / max(final.groups, 1),
                   "final_lookup_wer": final.lookup_wer}
        self.client.log_batch(self.run_id, metrics=[
            Metric(k, float(v), now, 0) for k, v in metrics.items()])
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "teacher"
            folder.mkdir()
            shutil.copyfile(teacher_path, folder / Path(TEACHER_ARTIFACT).name)
            (folder / "report.json").write_text(json.dumps(report, indent=2, default=str))
            self.client.log_artifacts(self.run_id, str(folder), "teacher")
        self.client.set_terminated(self.run_id, "FINISHED")

    def fail(self, status: str = "FAILED") -> None:
        if self.run_id and self.client.get_run(self.run_id).info.status == "RUNNING":
            self.client.set_terminated(self.run_id, status)


def find_teacher(tracking_uri: str, run_id: str, dest: str | Path) -> Path:
    """Download the teacher file of a ``satn teacher`` MLflow run into ``dest``; its path.

    Raises FileNotFoundError when the run has no teacher file (e.g. an SER run's id).
    """
    client = open_client(tracking_uri)
    run = client.get_run(run_id)
    names = {a.path for a in client.list_artifacts(run_id, "teacher")}
    if TEACHER_ARTIFACT not in names:
        raise FileNotFoundError(f"MLflow run {run_id} ({run.info.run_name}) has no "
                                f"{TEACHER_ARTIFACT}: not a `satn teacher` run")
    return Path(client.download_artifacts(run_id, TEACHER_ARTIFACT, str(dest)))


def teacher_path(ref: str | Path, tracking_uri: str | None, dest: str | Path) -> Path:
    """A teacher reference -> a local teacher file: ``ref`` itself when it is a file,
    else the teacher of MLflow run ``ref`` downloaded into ``dest``."""
    if Path(ref).is_file():
        return Path(ref)
    try:
        return find_teacher(tracking_uri or default_tracking_uri(), str(ref), dest)
    except Exception as e:  # unknown run id, unreachable store, not a teacher run
        from satn.teacher_io import TeacherFileError

        raise TeacherFileError(f"teacher {str(ref)!r} is neither a teacher file nor an MLflow "
                               f"run with one ({e})") from e
