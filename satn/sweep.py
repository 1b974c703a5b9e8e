"""Ray Tune + Optuna sweeps: the only module of satn that imports ray.tune or optuna.

One Tune trial is one configuration trained over all its folds
(:class:`satn.runner.CrossValidation`). After every epoch the trial reports the
fold-mean dev UA so ASHA can stop poor configurations early; Optuna's seeded
TPE proposes the next configurations. Each trial logs itself to MLflow; the
driver creates the MLflow experiment first and afterwards marks the runs of
trials that were stopped early or failed.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from satn.config import ConfigError, ExperimentConfig, RuntimeConfig
from satn.safenames import check_name
from satn.space import SearchSpace

# Set in a trial's last report once every fold has trained all its epochs.
COMPLETED = "satn_completed"
TRIAL_STATE = "trial_state.pt"  # a trial checkpoint's one file
KEEP_STATES = 2  # checkpoints of a trial whose state is kept (prune_states)
# A tracking URI may name the head node of a cluster, which only Ray knows.
HEAD_IP = "{head_ip}"


@dataclass(frozen=True)
class SweepResult:
    name: str
    n_trials: int
    n_stopped_early: int
    n_errors: int
    best_params: dict[str, Any]
    best_metrics: dict[str, float]
    best_run_id: str | None
    tracking_uri: str
    storage_path: str
    failed: tuple[tuple[str, str], ...] = ()  # (trial, first line of its error)
    repaired: int = 0  # runs of ended processes marked before the sweep started


def config_dir() -> Path:
    """satn's folder in the user's configuration directory (XDG)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "satn"


def ensure_token(path: Path) -> Path:
    """A random Ray token at ``path`` that only the user can read (created if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.exists():
        if path.stat().st_mode & 0o077:  # readable by others: a leaked secret is no secret
            os.chmod(path, 0o600)
        if not path.read_text().strip():
            raise ConfigError(f"Ray token file {path} is empty; delete it and satn makes a new one")
        return path
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return path


def ray_environment(runtime: RuntimeConfig) -> dict[str, str]:
    """The environment Ray must see, before it is imported, for ``runtime``.

    Local: every Ray service on loopback (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
    makes Ray bind its GCS, raylet, object manager and workers to 127.0.0.1) and,
    as a second wall, token authentication. Cluster: token authentication with the
    token the nodes were started with (cluster/ray_config.yaml).
    """
    ray = runtime.ray
    env = {"RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_DISABLE_TELEMETRY": "true",
           "RAY_AUTH_MODE": ray.auth}
    local = ray.address == "local"
    if local:
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    if ray.auth == "token":
        if ray.token_path:
            env["RAY_AUTH_TOKEN_PATH"] = str(Path(ray.token_path).expanduser())
        elif local:
            env["RAY_AUTH_TOKEN_PATH"] = str(config_dir() / "ray_auth_token")
    return env


def configure_ray(runtime: RuntimeConfig) -> dict[str, str]:
    """Put :func:`ray_environment` into this process (and so into every Ray process it starts).

    Ray reads these variables once, when it is imported; when something imported
    it earlier in this process, the two values it cached are refreshed here.
    """
    env = ray_environment(runtime)
    if runtime.ray.auth == "token":
        if runtime.ray.address == "local":
            ensure_token(Path(env["RAY_AUTH_TOKEN_PATH"]))
        elif not os.environ.get("RAY_AUTH_TOKEN"):
            token = Path(env.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
            if not token.is_file():
                raise ConfigError(f"ray.auth is token but the token file {token} does not "
                                  f"exist; copy the cluster's token there (docs/cluster.md)")
    os.environ.update(env)
    if "ray" in sys.modules:
        from ray._private import ray_constants
        from ray._raylet import Config

        ray_constants.ENABLE_RAY_CLUSTER = env.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") != "0"
        Config.initialize("")  # re-read RAY_AUTH_MODE and the token
    return env


def init_ray(runtime: RuntimeConfig) -> bool:
    """Start (local) or join (cluster) Ray; True when this call started it."""
    configure_ray(runtime)
    import ray

    if ray.is_initialized():
        return False
    if runtime.ray.address == "local":
        ray.init(num_cpus=runtime.ray.num_cpus, num_gpus=runtime.ray.num_gpus,
                 _node_ip_address=runtime.ray.node_ip, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    else:
        ray.init(address=runtime.ray.address, log_to_driver=False)
    return True


def write_cluster_secrets(path: Path, user: str = "satn", force: bool = False) -> Path:
    """``cluster.env`` (0600): the MLflow basic-auth account that the cluster's server creates
    and that every trial logs in with (cluster/start_mlflow.sh, cluster/ray_config.yaml)."""
    if path.exists() and not force:
        raise ConfigError(f"{path} exists; keep it (the running cluster uses it) or pass --force")
    password = secrets.token_urlsafe(24)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"MLFLOW_AUTH_ADMIN_USERNAME={user}\nMLFLOW_AUTH_ADMIN_PASSWORD={password}\n"
                f"MLFLOW_TRACKING_USERNAME={user}\nMLFLOW_TRACKING_PASSWORD={password}\n"
                # the server's CSRF key (MLflow's auth app refuses to start without one)
                f"MLFLOW_FLASK_SERVER_SECRET_KEY={secrets.token_hex(32)}\n")
    os.chmod(path, 0o600)  # O_TRUNC keeps an old file's mode
    return path


def resolve_tracking_uri(uri: str) -> str:
    """Replace ``{head_ip}`` with this node's address as Ray sees it (the driver runs on the head)."""
    if HEAD_IP not in uri:
        return uri
    import ray

    return uri.replace(HEAD_IP, ray.util.get_node_ip_address())


def param_space(space: SearchSpace) -> dict[str, Any]:
    """The space's params as Ray Tune sampling primitives (OptunaSearch converts them)."""
    from ray import tune

    make = {
        "choice": lambda p: tune.choice(list(p.values)),
        "grid": lambda p: tune.grid_search(list(p.values)),
        "uniform": lambda p: tune.uniform(p.low, p.high),
        "loguniform": lambda p: tune.loguniform(p.low, p.high),
        "int": lambda p: tune.randint(int(p.low), int(p.high) + 1),
    }
    return {key: make[p.kind](p) for key, p in space.params.items()}


def run_trial(params: dict[str, Any], *, base: dict[str, Any], dataset_uri: str,
              tracking_uri: str, experiment_id: str, sweep: str, fold_workers: int,
              threads: int, placement: str = "threads", fold_threads: int = 1,
              experiment_path: str | None = None) -> None:
    """The Tune trainable: one configuration over all folds, reporting every epoch.

    ``placement="workers"``: each fold trains in a Ray actor of its own, in its bundle
    of this trial's placement group (:class:`RemoteFold`); this process only drives
    them, logs and reports. ``experiment_path``: the sweep's folder in Ray's storage, where
    a restored trial looks for its own checkpoints (:func:`trial_storage_dir`).
    """
    import torch
    from ray import tune

    from satn.runner import CrossValidation
    from satn.store import open_dataset
    from satn.tracking import MlflowObserver

    torch.set_num_threads(max(1, threads))
    cfg = ExperimentConfig.from_dict(base).override(params)
    if placement == "threads" and cfg.train.device == "auto":
        import ray

        # Ray limits CUDA_VISIBLE_DEVICES to the trial's GPUs when it has some; with none,
        # "auto" would take cuda:0, which is some other trial's
        if not ray.get_gpu_ids():
            cfg = cfg.override({"train.device": "cpu"})
    ctx = tune.get_context()
    trial = ctx.get_trial_name() or "trial"
    if placement == "workers":
        folds = RemoteFolds(cfg, dataset_uri, fold_threads)
        cv = CrossValidation(cfg, open_dataset(dataset_uri), trainers=folds,
                             fold_workers=64)  # threads here only wait on the workers
        cv.placement.update(folds.placement)
    else:
        cv = CrossValidation(cfg, open_dataset(dataset_uri), fold_workers=fold_workers)
    tracker = MlflowObserver(tracking_uri, experiment_id, run_name=run_name(sweep, cfg, params),
                             tags={
                                 "satn.sweep": sweep, "satn.trial": ctx.get_trial_id() or trial,
                                 "satn.search_params": json.dumps(params, sort_keys=True,
                                                                  default=str)})
    # a resumed sweep, or a retry after this trial's worker died: the newest state the trial
    # kept in its own folder, which Tune's record (saved every few seconds) may lag behind
    # or point at a checkpoint emptied since (prune_states); behind a URI, Tune's record
    own_dir = trial_storage_dir(experiment_path, ctx.get_trial_dir())
    restored, state = tune.get_checkpoint(), own_trial_state(own_dir)
    if state is None and restored is not None:
        with restored.as_directory() as folder:
            if (Path(folder) / TRIAL_STATE).is_file():
                state = torch.load(Path(folder) / TRIAL_STATE, weights_only=False)
    if state is not None:
        cv.load_state(state["folds"])
        tracker.resume(state["mlflow_parent"], state["mlflow_folds"])

    class Report:
        def on_start(self, cv: CrossValidation) -> None:
            pass

        def on_epoch(self, cv, epoch, stats, final) -> None:
            metrics: dict[str, Any] = cv.epoch_summary(stats)
            if final is not None:
                metrics.update(final.summary())
            metrics = {k: float(v) for k, v in metrics.items() if _is_number(v)}
            # not Tune's reserved "done": Tune sets that on every trial ASHA stops
            metrics[COMPLETED] = float(final is not None)
            metrics["mlflow_run_id"] = tracker.parent_id
            with tempfile.TemporaryDirectory() as folder:
                # every fold's weights, optimiser, epoch and best so far: a restored or
                # retried trial continues from here, in the same MLflow runs
                torch.save({"folds": cv.state(), "mlflow_parent": tracker.parent_id,
                            "mlflow_folds": tracker.fold_runs}, Path(folder) / TRIAL_STATE)
                # ASHA may stop the trial inside this call: MLflow has been written already
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
            prune_states(own_dir, KEEP_STATES)

    try:
        cv.run([tracker, Report()])
    except Exception:
        tracker.fail()
        raise


def trial_storage_dir(experiment_path: str | None, trial_dir: str | None) -> Path | None:
    """The folder in Ray's storage where Tune persists a trial's checkpoints.

    ``tune.get_context().get_trial_dir()`` is a staging folder of the current Ray
    session (``/tmp/ray/session_*/...``), empty in the session that resumes a sweep; the
    checkpoints are under the sweep's storage folder, in a folder of the same name.
    ``None`` for storage behind a URI (s3://, gs://), which only Tune's own record of
    the trial's checkpoints can resume from.
    """
    if not experiment_path or not trial_dir or "://" in experiment_path:
        return None
    return Path(experiment_path) / Path(trial_dir).name


def prune_states(trial_dir: str | Path | None, keep: int) -> None:
    """Delete the state file of all but the newest ``keep`` checkpoints in a trial's folder,
    leaving the folders.

    Tune's record of a trial's newest checkpoint, saved every few seconds, can lag
    several reports behind its folders. Had Tune pruned the folders itself
    (``CheckpointConfig(num_to_keep=...)``), a driver killed in that window would resume
    the trial from a folder that no longer exists, and the trial would fail. An emptied
    folder still restores; the trial then continues from the newest state it kept
    (:func:`own_trial_state`), and old states cost no disk.
    """
    if not trial_dir or not Path(trial_dir).is_dir():
        return
    states = sorted(Path(trial_dir).glob(f"checkpoint_*/{TRIAL_STATE}"),
                    key=lambda f: (f.stat().st_mtime, f.parent.name), reverse=True)
    for f in states[keep:]:
        f.unlink(missing_ok=True)


def own_trial_state(trial_dir: str | Path | None) -> dict[str, Any] | None:
    """The newest state this trial saved in its own folder, when Tune restored it with none.

    Tune writes its experiment state every few seconds, not at every report: a driver
    killed in between resumes a running trial as if it had never reported, and it would
    start again from epoch 1, in new MLflow runs beside its old ones. Its checkpoints are
    still in its folder in Ray's storage (:func:`trial_storage_dir`), so it continues from
    the newest one that loads (a checkpoint half-written by the killed process is passed
    over). Tune's own iteration count restarts; the epochs, the fold states and the MLflow
    runs do not.
    """
    import torch

    if not trial_dir or not Path(trial_dir).is_dir():
        return None

    def written(folder: Path) -> tuple[float, str]:
        # newest first by time: a resumed attempt numbers its checkpoints from 0 again,
        # over the folders of the attempt before
        f = folder / TRIAL_STATE
        return (f.stat().st_mtime if f.is_file() else float("-inf"), folder.name)

    for folder in sorted(Path(trial_dir).glob("checkpoint_*"), key=written, reverse=True):
        try:
            return torch.load(folder / TRIAL_STATE, weights_only=False)
        except Exception:  # noqa: BLE001  (missing or half-written: try the one before)
            continue
    return None


class RemoteFolds:
    """Trainer factory for ``CrossValidation``: each fold as a Ray actor in bundle i + 1 of the
    trial's placement group (bundle 0 is the trial itself)."""

    def __init__(self, cfg: ExperimentConfig, dataset_uri: str, threads: int):
        self.cfg, self.dataset_uri, self.threads = cfg, dataset_uri, threads
        self.placement: dict[str, dict] = {}
        self.count = 0

    def __call__(self, pf) -> RemoteFold:
        import ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        group = ray.util.get_current_placement_group()
        self.count += 1
        strategy = (PlacementGroupSchedulingStrategy(
            placement_group=group, placement_group_bundle_index=self.count)
            if group is not None else None)  # outside a trial (tests): plain scheduling
        bundle = group.bundle_specs[self.count] if group is not None else {}
        actor = ray.remote(FoldWorker).options(
            num_cpus=bundle.get("CPU", 1), num_gpus=bundle.get("GPU", 0),
            scheduling_strategy=strategy).remote(self.cfg.to_dict(), self.dataset_uri,
                                                 pf.fold.name, self.threads)
        fold = RemoteFold(actor)
        self.placement[pf.fold.name] = fold.placement
        return fold


class FoldWorker:
    """One fold's trainer in a Ray actor: it trains on the device Ray assigned to it."""

    def __init__(self, cfg: dict[str, Any], dataset_uri: str, fold: str, threads: int):
        import ray
        import torch

        from satn.runner import CrossValidation
        from satn.store import open_dataset

        torch.set_num_threads(threads)  # the CPUs Ray gave this fold: no oversubscription
        config = ExperimentConfig.from_dict(cfg)
        gpus = ray.get_gpu_ids()
        device = config.train.device
        if device == "auto":
            # Ray limits CUDA_VISIBLE_DEVICES to this fold's GPU: "cuda" is that one;
            # no GPU assigned means CPU, even on a GPU node
            device = "cuda" if gpus and torch.cuda.is_available() else "cpu"
        elif device.startswith("cuda") and not gpus:
            raise ConfigError(f"train.device={device} but Ray gave fold {fold} no GPU "
                              f"(resources.per_fold.gpu)")
        config = config.override({"train.device": device})
        cv = CrossValidation(config, open_dataset(dataset_uri), folds=[fold])
        self.trainer = cv.trainers[fold]
        self.placement = {
            "pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(),
            "gpu_ids": [str(g) for g in gpus], "threads": torch.get_num_threads(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "device": str(self.trainer.device)}

    def where(self) -> dict[str, Any]:
        return self.placement

    def step(self):
        start = time.time()
        stats = self.trainer.step()
        best = self.trainer.best if stats.improved else None  # weights travel only when new
        return stats, best, self.trainer.finished, (start, time.time())

    def state(self) -> dict:
        return self.trainer.state()

    def load_state(self, state: dict) -> None:
        self.trainer.load_state(state)


class RemoteFold:
    """What the runner sees of a :class:`FoldWorker`: FoldTrainer's step, best, epoch, history."""

    def __init__(self, actor):
        import ray

        self.actor = actor
        self.placement: dict[str, Any] = ray.get(actor.where.remote())
        self.epoch, self.best, self.history, self._finished = 0, None, [], False
        self.device = self.placement["device"]

    @property
    def finished(self) -> bool:
        return self._finished

    def step(self):
        import ray

        stats, best, self._finished, span = ray.get(self.actor.step.remote())
        self.epoch = stats.epoch
        self.history.append(stats)
        if best is not None:
            self.best = best
        self.placement.setdefault("epoch_spans", []).append(span)
        return stats

    def state(self) -> dict:
        import ray

        return ray.get(self.actor.state.remote())

    def load_state(self, state: dict) -> None:
        import ray

        ray.get(self.actor.load_state.remote(state))
        self.epoch, self.best = state["epoch"], state["best"]
        self.history = list(state["history"])


def run_sweep(cfg: ExperimentConfig, space: SearchSpace, runtime: RuntimeConfig,
              dataset_uri: str, *, num_samples: int | None = None, epochs: int | None = None,
              name: str | None = None, verbose: int = 1, resume: bool = False) -> SweepResult:
    """Search ``space`` around ``cfg`` with Ray Tune + Optuna on the dataset at ``dataset_uri``.

    ``resume`` continues the sweep ``name`` after its driver was killed: Tune restores
    the experiment (finished trials stay finished, unfinished ones continue from
    their last epoch's checkpoint) and Optuna its study.
    """
    from satn.tracking import (
        default_tracking_uri,
        draw_or_warn,
        ensure_experiment,
        mark_runs,
        mark_sweep_leftovers,
        repair_runs,
    )

    space.validate(cfg)
    cfg = cfg.override(space.fixed)
    if epochs is not None:
        cfg = cfg.override({"train.epochs": epochs})
    epochs = cfg.train.epochs
    name = check_name(name or f"{space.name}-{time.strftime('%Y%m%d-%H%M%S')}", "sweep name")
    storage = runtime.storage_path
    if "://" not in storage:  # Ray needs an absolute path (or a URI)
        storage = str(Path(storage).resolve())
        check_writable(Path(storage), "ray storage_path")
    experiment_path = f"{storage}/{name}"
    tracking_uri = runtime.mlflow.tracking_uri or default_tracking_uri()
    n_samples = num_samples or space.num_samples

    bundles = runtime.resources.bundles(count_folds(cfg, dataset_uri))
    started = init_ray(runtime)  # sets Ray's environment before anything imports it
    try:
        check_resources(bundles, runtime)
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

        tracking_uri = resolve_tracking_uri(tracking_uri)
        experiment_id = ensure_experiment(tracking_uri, runtime.mlflow.experiment)
        # runs that a killed sweep or train left RUNNING on this machine
        repaired = repair_runs(tracking_uri, [runtime.mlflow.experiment])
        if resume and not tune.Tuner.can_restore(experiment_path):
            raise ConfigError(f"--resume: no sweep {name!r} to continue at {experiment_path}")
        if not resume and "://" not in storage and Path(experiment_path).exists():
            raise ConfigError(f"sweep {name!r} exists at {experiment_path}: continue it with "
                              f"--resume, or choose another --name")
        max_concurrent = concurrency(space, n_samples, runtime.max_concurrent_trials)
        if space.algorithm == "optuna":
            from ray.tune.search import ConcurrencyLimiter

            search_alg = ConcurrencyLimiter(optuna_search(space, experiment_path, name),
                                            max_concurrent=max_concurrent)
        else:
            search_alg = None  # Ray's variant generator: grids x random samples
        if space.scheduler.kind == "asha":
            scheduler = ASHAScheduler(time_attr="training_iteration", max_t=epochs,
                                      grace_period=min(space.scheduler.grace_period, epochs),
                                      reduction_factor=space.scheduler.reduction_factor)
        else:
            scheduler = FIFOScheduler()

        res = runtime.resources
        workers = res.fold_placement == "workers"
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, base=cfg.to_dict(), dataset_uri=dataset_uri,
                                 tracking_uri=tracking_uri, experiment_id=experiment_id,
                                 sweep=name, fold_workers=res.folds_in_parallel,
                                 threads=1 if workers else max(1, int(res.per_trial["cpu"])),
                                 placement=res.fold_placement,
                                 fold_threads=res.per_fold.threads,
                                 experiment_path=experiment_path),
            tune.PlacementGroupFactory(bundles, strategy="PACK"))
        if resume:
            # the searcher, scheduler and trials come back from the experiment's own state
            tuner = tune.Tuner.restore(experiment_path, trainable, resume_unfinished=True,
                                       resume_errored=True)
        else:
            tuner = tune.Tuner(
                trainable,
                param_space=param_space(space),
                tune_config=tune.TuneConfig(
                    metric=space.metric, mode=space.mode, search_alg=search_alg,
                    scheduler=scheduler, num_samples=n_samples,
                    max_concurrent_trials=None if search_alg else max_concurrent),
                run_config=tune.RunConfig(
                    name=name, storage_path=storage, verbose=verbose,
                    failure_config=tune.FailureConfig(max_failures=runtime.max_failures),
                    # on local storage satn prunes states, not folders (prune_states);
                    # behind a URI, Tune prunes
                    checkpoint_config=tune.CheckpointConfig(
                        num_to_keep=KEEP_STATES if "://" in storage else None)),
            )
        results = list(tuner.fit())
    finally:
        if started:
            import ray

            ray.shutdown()

    stopped, failed = 0, []
    for r in results:
        metrics = r.metrics or {}
        run_id = metrics.get("mlflow_run_id")
        outcome = trial_outcome(metrics, r.error)
        if outcome == "error":
            failed.append((trial_label(r), _error_line(r.error)))
            if run_id:
                mark_runs(tracking_uri, run_id, "FAILED", {"satn.outcome": "error"})
        elif outcome == "stopped_early":
            # ASHA's stop may reach a trial after it has trained to the end: not counted
            if run_id is None or mark_runs(tracking_uri, run_id, "KILLED", {
                    "satn.outcome": "stopped_early",
                    "satn.stopped_at_epoch": str(metrics.get("training_iteration"))}):
                stopped += 1
        if outcome != "completed" and run_id:  # its folds never drew their pictures
            draw_or_warn(tracking_uri, run_id)
    # the sweep is over: a run of it still RUNNING belongs to a trial that died before
    # it could report (its worker crashed, or it raised before its first epoch ended)
    mark_sweep_leftovers(tracking_uri, experiment_id, name)

    best_params: dict[str, Any] = {}
    best_metrics: dict[str, float] = {}
    best_run = None
    best = best_completed(results, space.metric, space.mode)
    if best is not None:
        best_params = dict(best.config)
        best_metrics = {k: v for k, v in best.metrics.items()
                        if _is_number(v) and (k.startswith(("dev_", "test_")) or k == space.metric)}
        best_run = best.metrics.get("mlflow_run_id")
        if best_run:
            from satn.tracking import tag_run

            tag_run(tracking_uri, best_run, {"satn.best_of_sweep": name})
    return SweepResult(name, len(results), stopped, len(failed), best_params, best_metrics,
                       best_run, tracking_uri,
                       str(Path(storage) / name) if "://" not in storage else f"{storage}/{name}",
                       failed=tuple(failed), repaired=len(repaired))


def run_name(sweep: str, cfg: ExperimentConfig, params: dict[str, Any]) -> str:
    """``sweep/variant key=value ...``: what a row of MLflow's runs table needs to be read."""
    shown = ", ".join(f"{k.rsplit('.', 1)[-1]}={_short(v)}" for k, v in sorted(params.items())
                      if k != "model.variant")
    return f"{sweep}/{cfg.model.variant}" + (f" {shown}" if shown else "")


def _short(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def count_folds(cfg: ExperimentConfig, dataset_uri: str) -> int:
    """How many fold models every trial trains (the fold plan depends on the data, not the
    trial): the folds, or with ``selection.*`` all their inner and seed members."""
    from satn.folds import make_folds, member_folds
    from satn.store import open_dataset

    meta = open_dataset(dataset_uri).meta
    sel = cfg.selection
    return len(member_folds(meta, make_folds(meta, cfg.folds), sel.inner_k, sel.seeds,
                            cfg.folds.seed))


def check_resources(bundles: list[dict[str, float]], runtime: RuntimeConfig) -> None:
    """One clear error when a trial's placement group can never be placed.

    Every bundle must fit one node, and on a local Ray the whole group must fit the
    machine (GPU fractions pack per GPU: 0.4 fits twice on one, not three times).
    """
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    if not nodes:
        return
    for kind in ("CPU", "GPU"):
        need = max(b.get(kind, 0) for b in bundles)
        most = max(n.get(kind, 0) for n in nodes)
        if need > most and runtime.ray.address == "local":
            raise ConfigError(f"resources: a fold needs {need:g} {kind} but this machine has "
                              f"{most:g} (ray_config.yaml resources.per_fold)")
    if runtime.ray.address != "local":
        return  # an autoscaling cluster may add nodes: Ray waits for them
    total = {k: sum(n.get(k, 0) for n in nodes) for k in ("CPU", "GPU")}
    cpu = sum(b.get("CPU", 0) for b in bundles)
    fractions = [b.get("GPU", 0) for b in bundles if 0 < b.get("GPU", 0) < 1]
    whole = sum(b.get("GPU", 0) for b in bundles if b.get("GPU", 0) >= 1)
    gpus = whole + _gpus_to_pack(fractions)
    if cpu > total["CPU"] + 1e-9:
        raise ConfigError(
            f"resources: one trial needs {cpu:g} CPUs ({len(bundles) - 1} folds x "
            f"per_fold.cpu + driver_cpu) but Ray has {total['CPU']:g}; lower "
            f"resources.per_fold.cpu (fractions are fine) or use fold_placement: threads")
    if gpus > total["GPU"]:
        raise ConfigError(f"resources: one trial needs {gpus:g} GPU(s) to pack its folds "
                          f"(per_fold.gpu) but Ray has {total['GPU']:g}")


def _gpus_to_pack(fractions: list[float]) -> int:
    """GPUs needed to hold these fractional shares, first fit decreasing (as Ray packs them)."""
    free: list[float] = []
    for f in sorted(fractions, reverse=True):
        for i, room in enumerate(free):
            if room + 1e-9 >= f:
                free[i] -= f
                break
        else:
            free.append(1.0 - f)
    return len(free)


def concurrency(space: SearchSpace, n_samples: int, configured: int | None) -> int | None:
    """How many trials may run at once.

    TPE proposes from finished trials: with 16 free slots and 20 trials, 16 would
    start before any result exists and the search would be mostly random. Unless
    ``max_concurrent_trials`` says otherwise, an Optuna search runs about a quarter
    of its trials at a time (at least 2); Optuna's constant liar keeps the pending
    ones from being proposed twice. Random and grid search need no limit (None).
    """
    if configured is not None:
        return configured
    if space.algorithm != "optuna":
        return None
    return max(2, math.ceil(n_samples / 4))


def optuna_search(space: SearchSpace, experiment_path: str, name: str):
    """Seeded TPE with constant liar; the study persists beside the Tune experiment."""
    from optuna.samplers import TPESampler
    from ray.tune.search.optuna import OptunaSearch

    storage = None
    if "://" not in experiment_path:  # a local or mounted folder: an RDB file beside it
        from optuna.storages import RDBStorage

        Path(experiment_path).mkdir(parents=True, exist_ok=True)
        storage = RDBStorage(f"sqlite:///{experiment_path}/optuna.db")
    return OptunaSearch(metric=space.metric, mode=space.mode, study_name=name, storage=storage,
                        sampler=TPESampler(seed=space.seed, constant_liar=True))


def best_completed(results: list, metric: str, mode: str):
    """The result with the best ``metric`` among trials that trained to the end.

    A trial that raised, or that ASHA stopped, may report a high value at an early
    epoch; it is not a configuration that was trained as the sweep asked.
    """
    done = [r for r in results
            if trial_outcome(r.metrics or {}, r.error) == "completed" and _is_number(
                (r.metrics or {}).get(metric))]
    if not done:
        return None
    pick = max if mode == "max" else min
    return pick(done, key=lambda r: r.metrics[metric])


def trial_label(result) -> str:
    """A trial's id as Tune names it (from its last report, else its folder)."""
    metrics = result.metrics or {}
    return str(metrics.get("trial_id") or Path(str(result.path)).name)


def check_writable(folder: Path, what: str) -> None:
    """Fail before any work when ``folder`` cannot be created or written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".satn-write-check-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"{what}: cannot write to {folder}: {e.strerror or e}") from e


def _error_line(error: BaseException | None) -> str:
    text = str(error or "").strip().splitlines()
    # Ray wraps the trial's exception: its last line is the one that says what went wrong
    return (text[-1] if text else type(error).__name__)[:300]


def trial_outcome(last_metrics: dict[str, Any], error: Exception | None) -> str:
    """``"completed"``, ``"stopped_early"`` or ``"error"`` from a trial's last report."""
    if error is not None:
        return "error"
    return "completed" if last_metrics.get(COMPLETED) else "stopped_early"


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
