"""The driver's clean-up: runs of trials that were stopped, failed or orphaned get a
status and a reason, and a trial stopped early gets the pictures it never drew."""

from __future__ import annotations

import json
import socket
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from satn.safenames import INDEX
from satn.tracking.artifacts import log_figures, read_confusion_csv
from satn.tracking.store import first_line, open_client

WRITER_TAG = "satn.writer"  # host:pid:process start time of the process that writes a run


def mark_runs(tracking_uri: str, parent_id: str, status: str, tags: dict[str, str]) -> bool:
    """Driver-side clean-up: set status and tags on a parent run and its unfinished fold runs.

    A run already FINISHED is left alone: its trial trained to the end and logged
    its results before the tuner's stop reached it. Returns False when the
    parent itself had finished (nothing was lost).
    """
    client = open_client(tracking_uri)
    parent = client.get_run(parent_id)
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")
    for run in [parent, *children]:
        if run.info.status == "FINISHED":
            continue
        for k, v in tags.items():
            client.set_tag(run.info.run_id, k, v)
        if run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, status)
    return parent.info.status != "FINISHED"


def draw_stored_figures(tracking_uri: str, parent_id: str) -> int:
    """Draw the pictures of a config run's fold runs that ended before drawing them.

    A trial a tuner stops early, or a run whose process was killed, never reaches the
    end of its folds, where pictures are drawn; the data of each fold's best
    (confusion tables, attention arrays and their index) was logged at once, so the
    driver or ``satn runs repair`` draws from it. Returns how many fold runs got
    pictures.
    """
    client = open_client(tracking_uri)
    parent = client.get_run(parent_id)
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")
    drawn = 0
    for run in children:
        run_id = run.info.run_id
        have = {a.path for a in client.list_artifacts(run_id, "confusion")}
        if "confusion/dev.csv" not in have or "confusion/dev.png" in have:
            continue  # nothing logged yet, or drawn already
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            stored = Path(client.download_artifacts(run_id, "confusion", str(tmp)))
            tables = {side: read_confusion_csv(stored / f"{side}.csv")
                      for side in ("dev", "test") if (stored / f"{side}.csv").is_file()}
            classes = next(iter(tables.values()))[0]
            attention: dict[str, tuple[str, np.ndarray]] = {}
            if any(a.path == f"attention/{INDEX}" for a in client.list_artifacts(
                    run_id, "attention")):
                folder = Path(client.download_artifacts(run_id, "attention", str(tmp)))
                index = json.loads((folder / INDEX).read_text())
                attention = {safe: (uid, np.load(folder / f"{safe}.npy"))
                             for safe, uid in index.items() if (folder / f"{safe}.npy").is_file()}
            log_figures(client, run_id, tmp, classes,
                         {side: m for side, (_, m) in tables.items()}, attention,
                         run.data.tags.get("satn.fold", run.info.run_name or run_id),
                         int(run.data.metrics.get("best_epoch", 0)))
            drawn += 1
    return drawn


def draw_or_warn(tracking_uri: str, parent_id: str) -> None:
    """:func:`draw_stored_figures`, where a store that fails costs the pictures only (with
    a warning), never the clean-up or the summary that follows."""
    try:
        draw_stored_figures(tracking_uri, parent_id)
    except Exception as e:  # noqa: BLE001 - the runs are marked already; pictures are extra
        warnings.warn(f"pictures of run {parent_id} not drawn: {first_line(e)}", stacklevel=2)


def writer_id(pid: int | None = None) -> str:
    """``host:pid:start`` of a process: a pid alone is reused, its start time is not."""
    import psutil

    proc = psutil.Process(pid)
    return f"{socket.gethostname()}:{proc.pid}:{proc.create_time():.3f}"


def writer_alive(writer: str) -> bool | None:
    """True/False for a writer on this host; None when it ran elsewhere (cannot tell)."""
    import psutil

    host, _, rest = writer.partition(":")
    pid, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    try:
        return f"{psutil.Process(int(pid)).create_time():.3f}" == started
    except psutil.NoSuchProcess:
        return False


@dataclass(frozen=True)
class Orphan:
    run_id: str
    run_name: str
    experiment: str
    reason: str


def find_orphans(tracking_uri: str, experiments: list[str] | None = None,
                 older_than_hours: float | None = None) -> list[Orphan]:
    """RUNNING runs whose writing process has ended.

    On this host the writer's pid and start time tell for sure. A run written on
    another host (a cluster worker) is only taken when ``older_than_hours`` is
    given and it started longer ago than that.
    """
    import time

    client = open_client(tracking_uri)
    exps = ([client.get_experiment_by_name(n) for n in experiments] if experiments
            else client.search_experiments())
    now = time.time() * 1000
    out = []
    for exp in [e for e in exps if e is not None]:
        runs = client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'",
                                  max_results=50000)
        for run in runs:
            writer = run.data.tags.get(WRITER_TAG)
            alive = writer_alive(writer) if writer else None
            if alive is False:
                reason = f"the process that wrote it ({writer}) has ended"
            elif alive is None and older_than_hours is not None and \
                    now - run.info.start_time > older_than_hours * 3_600_000:
                reason = (f"RUNNING for more than {older_than_hours:g} h and written "
                          f"{'on ' + writer.partition(':')[0] if writer else 'by an unknown process'}")
            else:
                continue
            out.append(Orphan(run.info.run_id, run.info.run_name or "", exp.name, reason))
    return out


def repair_runs(tracking_uri: str, experiments: list[str] | None = None,
                older_than_hours: float | None = None, dry_run: bool = False) -> list[Orphan]:
    """Mark orphaned runs (:func:`find_orphans`) KILLED, tagged with why, and draw the
    pictures their folds never reached the end to draw."""
    orphans = find_orphans(tracking_uri, experiments, older_than_hours)
    if not dry_run:
        client = open_client(tracking_uri)
        for o in orphans:
            client.set_tag(o.run_id, "satn.outcome", "orphaned")
            client.set_tag(o.run_id, "satn.reason", o.reason)
            client.set_terminated(o.run_id, "KILLED")
        for o in orphans:  # a config run's folds never reached their end, where they draw
            draw_or_warn(tracking_uri, o.run_id)
    return orphans


def mark_sweep_leftovers(tracking_uri: str, experiment_id: str, sweep: str) -> int:
    """After a sweep: its runs still RUNNING belong to trials that died; mark them FAILED."""
    client = open_client(tracking_uri)
    runs = client.search_runs(
        [experiment_id], f"tags.`satn.sweep` = '{sweep}' and attributes.status = 'RUNNING'",
        max_results=50000)
    for run in runs:
        client.set_tag(run.info.run_id, "satn.outcome", "error")
        client.set_tag(run.info.run_id, "satn.reason",
                       "its trial ended before finishing the run (worker died or raised)")
        client.set_terminated(run.info.run_id, "FAILED")
    return len(runs)
