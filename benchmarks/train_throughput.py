"""Training throughput over the folds: per variant, CPU vs GPU, folds in turn or packed,
trials packed.

Runs the real runner and engine (``satn.runner.CrossValidation``) on synthetic
features of IEMOCAP's size: by default 2943 utterances (SATN's improvised set)
of 120 values per frame, lengths drawn around IEMOCAP's (mean ~4.5 s = 450
frames, clipped to 100..2000), 5 sessions x 2 speakers, four classes. Only the
speed is measured; the features are noise, so the accuracy means nothing.

    python benchmarks/train_throughput.py --device cpu --epochs 1
    python benchmarks/train_throughput.py --device cuda --fold-workers 1,5 --epochs 3
    python benchmarks/train_throughput.py --device cuda --variants tcn_self,tcn_soft,blstm_self,\
        blstm_soft --fold-workers 1,5 --trials 1,2 --epochs 3
    python benchmarks/train_throughput.py --device cuda --epochs 3 \
        --levers fp32,bf16,compile,resident,all
    python benchmarks/train_throughput.py --device cpu --eval-pass maps,fused

``--levers``: one row per setting of the ``train.*`` GPU levers: ``fp32`` (none),
``bf16`` (``train.precision``), ``compile`` (``train.compile``), ``resident``
(``train.resident``), ``all`` (the three together). ``--eval-pass``: instead of
training, time one evaluation pass (``satn.engine.evaluate``) over long
utterances, each mode in a fresh process: ``maps`` builds every batch's
(B, H, T, T) attention map as evaluation did before the fused path (a zero-weight
term that asks for maps), ``fused`` is evaluation as it runs now.

Prints one row per setting: seconds per epoch of all folds (the first epoch,
which includes warm-up, is left out when there are two or more), training
utterances per second (of all trials together), and peak GPU memory. Fold
workers 1: folds in turn; 5: the five folds packed on the device (threads);
trials N: N configurations trained at once on the same device, as a sweep
packs trials on one GPU.
"""

from __future__ import annotations

import argparse
import multiprocessing
import threading
import time

import numpy as np
import pandas as pd
import torch

from satn.batching import SequenceDataset
from satn.config import ExperimentConfig
from satn.engine import evaluate
from satn.models import build_model
from satn.runner import CrossValidation

CLASSES = ("neu", "hap", "sad", "ang")
LEVERS = {"fp32": {}, "bf16": {"train.precision": "bf16"}, "compile": {"train.compile": True},
          "resident": {"train.resident": True},
          "all": {"train.precision": "bf16", "train.compile": True, "train.resident": True}}


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
    exps = [CrossValidation(cfg, data, fold_workers=fold_workers) for _ in range(trials)]
    n_train = sum(len(pf.fold.train) for pf in exps[0].prepared)
    stamps: list[list[float]] = [[] for _ in exps]

    class Clock:
        def __init__(self, k: int):
            self.k = k

        def on_start(self, cv) -> None:
            stamps[self.k].append(time.perf_counter())

        def on_epoch(self, cv, epoch, stats, final) -> None:
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


class WantsMaps:
    """A zero-weight loss term that asks for the model's maps: evaluation as it was
    before the fused attention path, when every forward built (B, H, T, T) weights."""

    name, weight, needs_maps = "maps", 0.0, True

    def __call__(self, maps, x, lengths, keys):
        return torch.zeros((), device=x.device)


class PeakRSS:
    """Peak resident memory of this process while the block runs, sampled every 2 ms."""

    def __enter__(self):
        import psutil

        self._proc, self._stop = psutil.Process(), threading.Event()
        self.start = self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(0.002)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def eval_pass(mode: str, args, out) -> None:
    """One evaluate() over ``--eval-utterances`` long utterances (in a fresh process)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    lengths = rng.integers(args.eval_min_frames, args.eval_max_frames + 1, args.eval_utterances)
    arrays = [rng.standard_normal((int(t), 120), dtype=np.float32) for t in lengths]
    ds = SequenceDataset(arrays, [i % 4 for i in range(len(arrays))],
                         [f"u{i}" for i in range(len(arrays))])
    cfg = ExperimentConfig().override({"model.variant": "tcn_self",
                                       "model.tcn.channels": args.channels,
                                       "train.precision": args.eval_precision})
    torch.manual_seed(0)
    model = build_model(cfg.model, (120,), 4).to(device)
    aux = [WantsMaps()] if mode == "maps" else []
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated() if device.type == "cuda" else 0
    with PeakRSS() as rss:
        start = time.perf_counter()
        ev = evaluate(model, ds, args.batch_size, device, aux=aux,
                      max_cost=cfg.train.eval_cost, precision=cfg.train.precision)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    gpu = (torch.cuda.max_memory_allocated() - base) / 2**30 if device.type == "cuda" else 0.0
    out.put({"mode": mode, "seconds": seconds, "rss_gib": (rss.peak - rss.start) / 2**30,
             "gpu_gib": gpu, "frames": int(lengths.sum()), "longest": int(lengths.max()),
             "probs": ev.probs})


def eval_main(args) -> None:
    print(f"# evaluate(): {args.eval_utterances} utterances of {args.eval_min_frames}-"
          f"{args.eval_max_frames} frames, tcn_self channels {args.channels}, 4 heads, batch "
          f"{args.batch_size} within train.eval_cost, {args.eval_precision}, device "
          f"{args.device}, torch {torch.__version__}, threads {args.threads or 'torch default'}")
    print("| pass | seconds | peak RSS growth GiB | peak GPU GiB | max abs diff of probs |")
    print("|---|---|---|---|---|")
    ctx = multiprocessing.get_context("spawn")
    first = None
    for mode in args.eval_pass.split(","):
        q = ctx.Queue()
        proc = ctx.Process(target=eval_pass, args=(mode, args, q))
        proc.start()
        r = q.get()
        proc.join()
        first = r["probs"] if first is None else first
        print(f"| {mode} | {r['seconds']:.2f} | {r['rss_gib']:.2f} | {r['gpu_gib']:.2f} "
              f"| {np.abs(r['probs'] - first).max():.1e} |", flush=True)


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
    ap.add_argument("--levers", default="fp32",
                    help=f"comma list of train.* lever settings: {', '.join(LEVERS)}")
    ap.add_argument("--eval-pass", default=None,
                    help="time one evaluation pass instead of training: maps,fused")
    ap.add_argument("--eval-utterances", type=int, default=32)
    ap.add_argument("--eval-min-frames", type=int, default=1500)
    ap.add_argument("--eval-max-frames", type=int, default=3400)
    ap.add_argument("--eval-precision", default="fp32", help="fp32 or bf16")
    args = ap.parse_args()
    if args.eval_pass:
        eval_main(args)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    levers = args.levers.split(",")
    unknown = set(levers) - set(LEVERS)
    if unknown:
        ap.error(f"--levers: unknown {sorted(unknown)}; known: {', '.join(LEVERS)}")
    data = SyntheticFeatures(args.utterances, args.mean_frames)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"# {len(data)} utterances, mean {data.mean_frames:.0f} frames, 5 folds, "
          f"channels {args.channels}, batch {args.batch_size}, device {name}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print("| variant | levers | device | fold workers | trials | s / epoch (5 folds) "
          "| first epoch s | train utt / s | peak GPU GiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for variant in args.variants.split(","):
        for lever in levers:
            cfg = ExperimentConfig().override({
                "model.variant": variant, "train.device": args.device,
                "train.epochs": args.epochs, "train.batch_size": args.batch_size,
                "model.tcn.channels": args.channels, **LEVERS[lever],
                **({"transfer.teacher": args.teacher} if args.teacher else {})})
            for w in (int(x) for x in args.fold_workers.split(",")):
                for n in (int(x) for x in args.trials.split(",")):
                    r = measure(data, cfg, w, n)
                    print(f"| {variant} | {lever} | {name} | {w} | {n} "
                          f"| {r['s_per_epoch']:.2f} | {r['first_epoch_s']:.2f} "
                          f"| {r['train_utt_per_s']:.0f} | {r['peak_gpu_gib']:.2f} |",
                          flush=True)


if __name__ == "__main__":
    main()
