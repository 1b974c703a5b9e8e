"""Training throughput of one configuration over its folds: CPU vs GPU, folds in threads.

Runs the real runner and engine (``satn.runner.Experiment``) on synthetic
features of IEMOCAP's size: by default 2943 utterances (SATN's improvised set)
of 120 values per frame, lengths drawn around IEMOCAP's (mean ~4.5 s = 450
frames, clipped to 100..2000), 5 sessions x 2 speakers, four classes. Only the
speed is measured; the features are noise, so the accuracy means nothing.

    python benchmarks/train_throughput.py --device cpu --epochs 1
    python benchmarks/train_throughput.py --device cuda --fold-workers 1,5 --epochs 3

Prints one row per setting: seconds per epoch of all folds (the first epoch,
which includes warm-up, is left out when there are two or more), training
utterances per second, and peak GPU memory.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch

from satn.config import ExperimentConfig
from satn.runner import Experiment

CLASSES = ("neu", "hap", "sad", "ang")


class SyntheticFeatures:
    """The interface of ``satn.store.FeatureDataset`` over random frames."""

    def __init__(self, n: int, mean_frames: int, dim: int = 120, seed: int = 0):
        rng = np.random.default_rng(seed)
        lengths = np.clip(rng.gamma(4.0, mean_frames / 4.0, n), 100, 2000).astype(int)
        rows, self._arrays = [], []
        for i, t in enumerate(lengths):
            session, gender = i % 5 + 1, "FM"[(i // 5) % 2]
            rows.append({"id": f"Ses0{session}{gender}_impro01_{gender}{i:05d}",
                         "speaker": f"Ses0{session}{gender}", "session": f"Ses0{session}",
                         "gender": gender, "label": CLASSES[i % 4]})
            self._arrays.append(rng.standard_normal((t, dim), dtype=np.float32))
        self.meta = pd.DataFrame(rows)
        self.frame_shape = (dim,)
        self.manifest = {"key": "synthetic", "corpus": "synthetic"}
        self.mean_frames = float(lengths.mean())

    def arrays(self, rows=None):
        return list(self._arrays) if rows is None else [self._arrays[i] for i in rows]

    def __len__(self) -> int:
        return len(self._arrays)


def measure(data: SyntheticFeatures, cfg: ExperimentConfig, fold_workers: int) -> dict:
    exp = Experiment(cfg, data, fold_workers=fold_workers)
    n_train = sum(len(pf.fold.train) for pf in exp.prepared)
    stamps: list[float] = []

    class Clock:
        def on_start(self, experiment) -> None:
            stamps.append(time.perf_counter())

        def on_epoch(self, experiment, epoch, stats, final) -> None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    exp.run([Clock()])
    epochs = np.diff(stamps)
    steady = epochs[1:] if len(epochs) > 1 else epochs
    per_epoch = float(steady.mean())
    return {"s_per_epoch": per_epoch, "first_epoch_s": float(epochs[0]),
            "train_utt_per_s": n_train / per_epoch,
            "peak_gpu_gib": (torch.cuda.max_memory_allocated() / 2**30
                             if torch.cuda.is_available() else 0.0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--utterances", type=int, default=2943)
    ap.add_argument("--mean-frames", type=int, default=450)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--fold-workers", default="1", help="comma list, e.g. 1,5")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = SyntheticFeatures(args.utterances, args.mean_frames)
    cfg = ExperimentConfig().override({
        "train.device": args.device, "train.epochs": args.epochs,
        "train.batch_size": args.batch_size, "model.tcn.channels": args.channels})
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"# {len(data)} utterances, mean {data.mean_frames:.0f} frames, 5 folds, "
          f"tcn_self channels {args.channels}, batch {args.batch_size}, device {name}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print("| device | fold workers | s / epoch (5 folds) | first epoch s | train utt / s "
          "| peak GPU GiB |")
    print("|---|---|---|---|---|---|")
    for w in (int(x) for x in args.fold_workers.split(",")):
        r = measure(data, cfg, w)
        print(f"| {name} | {w} | {r['s_per_epoch']:.2f} | {r['first_epoch_s']:.2f} "
              f"| {r['train_utt_per_s']:.0f} | {r['peak_gpu_gib']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
