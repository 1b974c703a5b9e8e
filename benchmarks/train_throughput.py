"""Training throughput over the folds: per variant, CPU vs GPU, folds in turn or packed,
trials packed.

Runs the real runner and engine (``satn.runner.Experiment``) on synthetic
features of IEMOCAP's size: by default 2943 utterances (SATN's improvised set)
of 120 values per frame, lengths drawn around IEMOCAP's (mean ~4.5 s = 450
frames, clipped to 100..2000), 5 sessions x 2 speakers, four classes. Only the
speed is measured; the features are noise, so the accuracy means nothing.

    python benchmarks/train_throughput.py --device cpu --epochs 1
    python benchmarks/train_throughput.py --device cuda --fold-workers 1,5 --epochs 3
    python benchmarks/train_throughput.py --device cuda --variants tcn_self,tcn_soft,blstm_self,\
        blstm_soft --fold-workers 1,5 --trials 1,2 --epochs 3

Prints one row per setting: seconds per epoch of all folds (the first epoch,
which includes warm-up, is left out when there are two or more), training
utterances per second (of all trials together), and peak GPU memory. Fold
workers 1: folds in turn; 5: the five folds packed on the device (threads);
trials N: N configurations trained at once on the same device, as a sweep
packs trials on one GPU.
"""

from __future__ import annotations

import argparse
import threading
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


def measure(data: SyntheticFeatures, cfg: ExperimentConfig, fold_workers: int,
            trials: int = 1) -> dict:
    exps = [Experiment(cfg, data, fold_workers=fold_workers) for _ in range(trials)]
    n_train = sum(len(pf.fold.train) for pf in exps[0].prepared)
    stamps: list[list[float]] = [[] for _ in exps]

    class Clock:
        def __init__(self, k: int):
            self.k = k

        def on_start(self, experiment) -> None:
            stamps[self.k].append(time.perf_counter())

        def on_epoch(self, experiment, epoch, stats, final) -> None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            stamps[self.k].append(time.perf_counter())

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    runs = [threading.Thread(target=e.run, args=([Clock(k)],)) for k, e in enumerate(exps)]
    for t in runs:
        t.start()
    for t in runs:
        t.join()
    per_trial = []
    for st in stamps:
        epochs = np.diff(st)
        per_trial.append(float((epochs[1:] if len(epochs) > 1 else epochs).mean()))
    per_epoch = float(np.mean(per_trial))
    return {"s_per_epoch": per_epoch, "first_epoch_s": float(np.diff(stamps[0])[0]),
            "train_utt_per_s": trials * n_train / per_epoch,
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
    ap.add_argument("--variants", default="tcn_self",
                    help="comma list of log-mel variants (the *_at ones need --teacher)")
    ap.add_argument("--teacher", default=None, help="teacher file for *_at variants")
    ap.add_argument("--trials", default="1", help="configurations trained at once, e.g. 1,2")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = SyntheticFeatures(args.utterances, args.mean_frames)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"# {len(data)} utterances, mean {data.mean_frames:.0f} frames, 5 folds, "
          f"channels {args.channels}, batch {args.batch_size}, device {name}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print("| variant | device | fold workers | trials | s / epoch (5 folds) | first epoch s "
          "| train utt / s | peak GPU GiB |")
    print("|---|---|---|---|---|---|---|---|")
    for variant in args.variants.split(","):
        cfg = ExperimentConfig().override({
            "model.variant": variant, "train.device": args.device, "train.epochs": args.epochs,
            "train.batch_size": args.batch_size, "model.tcn.channels": args.channels,
            **({"transfer.teacher": args.teacher} if args.teacher else {})})
        for w in (int(x) for x in args.fold_workers.split(",")):
            for n in (int(x) for x in args.trials.split(",")):
                r = measure(data, cfg, w, n)
                print(f"| {variant} | {name} | {w} | {n} | {r['s_per_epoch']:.2f} "
                      f"| {r['first_epoch_s']:.2f} | {r['train_utt_per_s']:.0f} "
                      f"| {r['peak_gpu_gib']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
