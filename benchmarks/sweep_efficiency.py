"""How much of a local sweep's time is training.

Runs N trials of the demo corpus on local Ray (satn.sweep.run_sweep, FIFO, no early
stopping) and reads MLflow afterwards:

- training seconds: the sum of every fold's ``epoch_seconds`` (time in FoldTrainer.step);
- efficiency: training seconds / (sweep wall seconds x trial slots), the share of the
  slots' time spent training (1.0: no overhead at all);
- per-trial overhead: a configuration run's duration minus its folds' training
  seconds (start-up, data loading, evaluation bookkeeping, MLflow, checkpoints),
  for folds trained one after another (threads, folds_in_parallel 1) or the slowest
  fold (workers).

    .venv/bin/python benchmarks/sweep_efficiency.py --trials 4 --slots 2 --epochs 3
    .venv/bin/python benchmarks/sweep_efficiency.py --trials 4 --slots 1 --placement workers
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

TINY = {"data": {"corpus": "demo", "demo_per_class": 2},
        "model": {"tcn": {"channels": 16, "dilations": [1, 2]}, "attention": {"heads": 2}},
        "train": {"batch_size": 8, "lr": 3e-3, "device": "cpu"}}


def main() -> None:
    import yaml

    from satn.config import ExperimentConfig, RayConfig, ResourceConfig, Resources, RuntimeConfig
    from satn.prepare import prepare_dataset
    from satn.space import load_space
    from satn.sweep import run_sweep
    from satn.tracking import open_client

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--slots", type=int, default=2, help="trials at once")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--placement", choices=["threads", "workers"], default="threads")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        per_fold = (Resources(cpu=1.0) if args.placement == "threads"
                    else Resources(cpu=(args.cpus - 0.2) / 5 / args.slots))
        runtime = RuntimeConfig(
            ray=RayConfig(num_cpus=args.cpus), storage_path=str(tmp / "ray"),
            features_dir=str(tmp / "features"), data_dir=str(tmp / "data"),
            max_concurrent_trials=args.slots,
            resources=ResourceConfig(per_fold=per_fold, fold_placement=args.placement))
        runtime = replace(runtime, mlflow=replace(runtime.mlflow,
                                                  tracking_uri=f"sqlite:///{tmp}/m.db"))
        cfg, info = prepare_dataset(ExperimentConfig.from_dict(TINY), runtime, progress=False,
                                    echo=lambda s: None)
        space = tmp / "space.yaml"
        space.write_text(yaml.safe_dump({
            "name": "eff", "num_samples": args.trials, "algorithm": "random",
            "scheduler": {"kind": "fifo"}, "params": {"train.lr": {"loguniform": [1e-3, 5e-3]}}}))
        start = time.time()
        result = run_sweep(cfg, load_space(str(space)), runtime, info.uri,
                           epochs=args.epochs, name="eff", verbose=0)
        wall = time.time() - start

        client = open_client(result.tracking_uri)
        exp = client.get_experiment_by_name("satn")
        runs = client.search_runs([exp.experiment_id], "tags.`satn.sweep` = 'eff'")
        parents = [r for r in runs if r.data.tags["satn.level"] == "config"]
        train_of = {}
        for r in runs:
            if r.data.tags["satn.level"] == "fold":
                secs = sum(m.value for m in client.get_metric_history(r.info.run_id,
                                                                      "epoch_seconds"))
                train_of.setdefault(r.data.tags["mlflow.parentRunId"], []).append(secs)
        total_train = sum(sum(v) for v in train_of.values())
        overheads = []
        for p in parents:
            dur = (p.info.end_time - p.info.start_time) / 1000
            folds = train_of[p.info.run_id]
            busy = sum(folds) if args.placement == "threads" else max(folds)
            overheads.append(dur - busy)
    print(f"trials {args.trials}, slots {args.slots}, epochs {args.epochs}, "
          f"placement {args.placement}, {args.cpus} CPUs, failed {result.n_errors}")
    print(f"sweep wall {wall:.1f} s (incl. Ray start), training {total_train:.1f} s in all")
    print(f"efficiency (training / (wall x slots)): {total_train / (wall * args.slots):.2f}")
    print(f"per-trial overhead (config run time - its training): median "
          f"{statistics.median(overheads):.1f} s, max {max(overheads):.1f} s")


if __name__ == "__main__":
    main()
