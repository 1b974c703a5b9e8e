"""Feature extraction: satn's FeatureExtractor vs librosa, throughput and agreement.

Seconds of audio processed per second of wall time for 40-band log-mel +
delta + delta-delta (the SATN features):

- satn: ``FeatureExtractor`` (torch.stft, float32 and float64 compute), batches
  of 1..32 waves sorted by length as ``satn.store`` batches them, 1 and 2 threads;
- librosa: ``melspectrogram`` + log + ``feature.delta`` twice, one file at a time,
  BLAS limited to 1 and 2 threads;
- satn's ``build_dataset`` end to end (read + resample + features + Parquet).

Also prints the max abs difference from librosa per block (static, delta,
delta2). Audio: ../shared/corpora (RAVDESS + CMU ARCTIC) when present, else a
synthetic speech-like signal. Times are the best of ``--repeat`` passes.

    .venv/bin/python benchmarks/features_vs_librosa.py [--files 200] [--repeat 3]
        [--threads 1,2] [--batches 1,8,16,32] [--device cuda] [--synthetic]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from satn.audio import read_audio  # noqa: E402
from satn.config import FeatureConfig  # noqa: E402
from satn.features import FeatureExtractor  # noqa: E402
from satn.reference import librosa_logmel, speechlike  # noqa: E402

SR = 16000
SHARED = Path(__file__).resolve().parents[2] / "shared" / "corpora"


def corpus_files(n: int) -> list[Path]:
    """n files spread over RAVDESS and ARCTIC (lengths ~1.5-6 s), or [] without the corpora."""
    if not SHARED.is_dir():
        return []
    pools = [sorted(SHARED.glob("ravdess/*/*.flac")), sorted(SHARED.glob("arctic/*/wav/*.flac"))]
    picked = []
    for pool in pools:
        step = max(1, len(pool) // (n // len(pools)))
        picked += pool[::step][: n // len(pools)]
    return picked


def best_time(fn, repeat: int) -> float:
    fn()  # warm-up: allocator, FFT plans, lazy imports
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def run_satn(ex: FeatureExtractor, waves: list[np.ndarray], batch: int) -> None:
    order = sorted(range(len(waves)), key=lambda i: waves[i].size)
    for s in range(0, len(order), batch):
        ex([waves[i] for i in order[s : s + batch]])


def build_store(paths: list[Path], out: str) -> None:
    from satn.corpora.base import CorpusLoad, Utterance
    from satn.store import build_dataset

    utts = [Utterance(f"u{i:05d}", str(p), "spk", "1", "neu") for i, p in enumerate(paths)]
    build_dataset(CorpusLoad(utts), FeatureConfig(), out, corpus_tag="bench", progress=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--files", type=int, default=200, help="number of utterances")
    ap.add_argument("--repeat", type=int, default=3, help="timed passes (best is kept)")
    ap.add_argument("--threads", default="1,2", help="CPU thread counts to try")
    ap.add_argument("--batches", default="1,8,16,32", help="satn batch sizes")
    ap.add_argument("--device", default="cpu", help="also time satn on this device (e.g. cuda)")
    ap.add_argument("--synthetic", action="store_true", help="synthetic audio even with corpora")
    args = ap.parse_args()
    from threadpoolctl import threadpool_limits

    paths = [] if args.synthetic else corpus_files(args.files)
    if paths:
        waves = [read_audio(p) for p in paths]
        source = f"{len(paths)} files of {SHARED}"
    else:
        rng = np.random.default_rng(0)
        waves = [speechlike(rng.uniform(1.0, 8.0), i) for i in range(args.files)]
        source = f"{args.files} synthetic speech-like waves"
    seconds = sum(w.size for w in waves) / SR
    print(f"audio: {source}, {seconds:.0f} s in all; torch {torch.__version__}, "
          f"{os.cpu_count()} CPU cores")  # fmt: skip

    rows = []
    batches = [int(b) for b in args.batches.split(",")]
    thread_counts = [int(t) for t in args.threads.split(",")]
    # librosa first, before torch's thread pool exists: timed after it, librosa with 2 BLAS
    # threads came out 4x slower here (threads competing for 2 cores)
    for threads in thread_counts:
        with threadpool_limits(threads):
            t = best_time(lambda: [librosa_logmel(w) for w in waves], args.repeat)
            rows.append(("librosa mel + 2x delta", threads, 1, seconds / t))
    for threads in thread_counts:
        torch.set_num_threads(threads)
        with threadpool_limits(threads):
            ex32 = FeatureExtractor(FeatureConfig())
            for b in batches:
                t = best_time(lambda b=b, ex=ex32: run_satn(ex, waves, b), args.repeat)
                rows.append(("satn float32", threads, b, seconds / t))
            ex64 = FeatureExtractor(FeatureConfig(), dtype=torch.float64)
            t = best_time(lambda ex=ex64: run_satn(ex, waves, 16), args.repeat)
            rows.append(("satn float64", threads, 16, seconds / t))
            if paths:
                with tempfile.TemporaryDirectory() as tmp:
                    n = iter(range(10**6))
                    t = best_time(lambda n=n: build_store(paths, f"{tmp}/{next(n)}"), 1)
                rows.append(
                    ("satn build_dataset (read+features+parquet)", threads, 16, seconds / t)
                )
    if args.device != "cpu":
        exd = FeatureExtractor(FeatureConfig(), device=args.device)
        for b in batches:
            t = best_time(lambda b=b: run_satn(exd, waves, b), args.repeat)
            rows.append((f"satn float32 on {args.device}", torch.get_num_threads(), b, seconds / t))

    # agreement with librosa, over every wave
    ref = [librosa_logmel(w) for w in waves]
    print("\nmax abs difference from librosa (log units): static / delta / delta2")
    for dtype in (torch.float32, torch.float64):
        ex = FeatureExtractor(FeatureConfig(), dtype=dtype)
        ours = [ex([w])[0] for w in waves]
        diffs = np.max([[np.abs(a[:, k * 40 : (k + 1) * 40] - b[:, k * 40 : (k + 1) * 40]).max()
                         for k in range(3)] for a, b in zip(ours, ref, strict=True)], axis=0)  # fmt: skip
        print(f"  satn {str(dtype).removeprefix('torch.'):8s}: "
              + " / ".join(f"{d:.1e}" for d in diffs))  # fmt: skip

    base = {th: v for name, th, _, v in rows if name.startswith("librosa")}
    print(f"\n{'method':<44}{'threads':>8}{'batch':>7}{'s audio/s':>11}{'x librosa':>11}")
    for name, th, b, v in rows:
        print(f"{name:<44}{th:>8}{b:>7}{v:>11,.0f}{v / base.get(th, v):>11.2f}")


if __name__ == "__main__":
    main()
