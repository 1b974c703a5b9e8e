"""MLflow's local SQLite store under many trials writing at once.

Each writer process does what one satn trial does to MLflow: a configuration run,
five fold runs, then every epoch a metrics batch per fold and one for the
configuration run, and at the end a small artifact per fold. N writers start
together against one store. Reported per N: wall time, the slowest writer, the
latency of a metrics batch (median and 95th percentile), and errors (e.g.
"database is locked"), which are what would make satn start a tracking server.

    .venv/bin/python benchmarks/mlflow_concurrency.py --writers 1,4,8,16 --epochs 20
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path


def writer(uri: str, exp_id: str, epochs: int, start: float, out) -> None:
    from mlflow.entities import Metric

    from satn.tracking import open_client

    client = open_client(uri)
    while time.time() < start:  # all writers begin at once
        time.sleep(0.005)
    lat, errors, t0 = [], [], time.perf_counter()
    try:
        parent = client.create_run(exp_id, run_name="config").info.run_id
        folds = [client.create_run(exp_id, run_name=f"fold{i}", tags={
            "mlflow.parentRunId": parent}).info.run_id for i in range(5)]
        for epoch in range(1, epochs + 1):
            for run in [*folds, parent]:
                t = time.perf_counter()
                try:
                    client.log_batch(run, metrics=[Metric(k, 0.5, int(time.time() * 1000), epoch)
                                                   for k in ("train_loss", "dev_loss", "dev_ua",
                                                             "dev_wa", "dev_f1", "epoch_seconds")])
                except Exception as e:  # what a trial would die of
                    errors.append(type(e).__name__ + ": " + str(e).splitlines()[0][:120])
                lat.append(time.perf_counter() - t)
        with tempfile.TemporaryDirectory() as tmp:
            f = Path(tmp) / "summary.json"
            f.write_text("{}")
            for run in folds:
                client.log_artifact(run, str(f), "results")
                client.set_terminated(run, "FINISHED")
        client.set_terminated(parent, "FINISHED")
    except Exception as e:
        errors.append(type(e).__name__ + ": " + str(e).splitlines()[0][:120])
    out.put((time.perf_counter() - t0, lat, errors))


def run(n: int, epochs: int) -> dict:
    from satn.tracking import ensure_experiment

    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        exp_id = ensure_experiment(uri, "bench")
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        start = time.time() + 8.0  # time for every process to import mlflow
        procs = [ctx.Process(target=writer, args=(uri, exp_id, epochs, start, out))
                 for _ in range(n)]
        for p in procs:
            p.start()
        results = [out.get() for _ in procs]
        for p in procs:
            p.join()
        wall = time.time() - start
    lat = sorted(x for _, ls, _ in results for x in ls)
    errors = [e for _, _, es in results for e in es]
    return {"writers": n, "wall_s": wall, "slowest_s": max(r[0] for r in results),
            "batch_p50_ms": 1000 * statistics.median(lat),
            "batch_p95_ms": 1000 * lat[int(0.95 * (len(lat) - 1))],
            "batches": len(lat), "errors": len(errors), "first_error": errors[0] if errors else ""}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--writers", default="1,4,8,16")
    ap.add_argument("--epochs", type=int, default=20)
    args = ap.parse_args()
    print("| writers | wall s | slowest writer s | batch p50 ms | batch p95 ms | batches | errors |")
    print("|---|---|---|---|---|---|---|")
    for n in (int(x) for x in args.writers.split(",")):
        r = run(n, args.epochs)
        print(f"| {r['writers']} | {r['wall_s']:.1f} | {r['slowest_s']:.1f} | "
              f"{r['batch_p50_ms']:.0f} | {r['batch_p95_ms']:.0f} | {r['batches']} | "
              f"{r['errors']} {r['first_error']} |", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
