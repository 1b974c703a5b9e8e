"""MLflow tracking: the only package of satn that imports mlflow.

One parent run per configuration, one child run per fold. Everything is logged
through ``MlflowClient`` with explicit run ids (no active-run globals), so runs can
be written from Ray workers and finished or marked by the driver.

- :mod:`.store`: where the store is, opening it, experiments, shared small writers
- :mod:`.observer`: a cross-validation logged epoch by epoch as it trains
- :mod:`.finished`: runs written in one go (baselines, fusions, means, refits, pretraining)
- :mod:`.artifacts`: confusion tables and pictures, attention pictures
- :mod:`.read`: runs read back (configs, predictions, checkpoints, report records)
- :mod:`.cleanup`: the driver's clean-up of stopped, failed and orphaned runs
- :mod:`.teacher`: the ASR teacher's runs
"""

from satn.tracking.cleanup import (
    WRITER_TAG,
    Orphan,
    draw_or_warn,
    draw_stored_figures,
    find_orphans,
    mark_runs,
    mark_sweep_leftovers,
    repair_runs,
    writer_alive,
    writer_id,
)
from satn.tracking.finished import (
    log_average,
    log_baseline,
    log_finished_run,
    log_fusion,
    log_refit,
)
from satn.tracking.observer import MlflowObserver
from satn.tracking.read import (
    find_checkpoint,
    fold_checkpoint,
    load_predictions,
    member_curves,
    read_runs,
    run_config,
    run_tags,
)
from satn.tracking.store import (
    DEFAULT_EXPERIMENT,
    TrackingError,
    default_artifact_root,
    default_tracking_uri,
    ensure_experiment,
    open_client,
    require_store,
    tag_run,
    ui_hint,
)
from satn.tracking.teacher import (
    TEACHER_ARTIFACT,
    TeacherMlflowObserver,
    find_teacher,
    teacher_path,
)

__all__ = [
    "DEFAULT_EXPERIMENT", "TEACHER_ARTIFACT", "WRITER_TAG", "MlflowObserver", "Orphan",
    "TeacherMlflowObserver", "TrackingError", "default_artifact_root", "default_tracking_uri",
    "draw_or_warn", "draw_stored_figures", "ensure_experiment", "find_checkpoint", "find_orphans",
    "find_teacher", "fold_checkpoint", "load_predictions", "log_average", "log_baseline",
    "log_finished_run", "log_fusion", "log_refit", "mark_runs", "mark_sweep_leftovers",
    "member_curves", "open_client", "read_runs", "repair_runs", "require_store", "run_config",
    "run_tags", "tag_run", "teacher_path", "ui_hint", "writer_alive", "writer_id",
]
