"""Training time per epoch of TACN's fourteen variants (deep_/fusion_ x seven sequence models).

Runs the real engine (``satn.engine.FoldTrainer``) on synthetic spectrogram
segments (32 x 129) with lengths drawn around IEMOCAP's (mean ~4.5 s, i.e. ~17
segments of 265 ms; 1..60 segments), at the model config's default sizes
(TACN 8 layers, k = 3, 8 heads; the segment CNN and VQ-VAE defaults) or those
given with --set. Only speed is measured: the features are noise.

    python benchmarks/tacn_epoch_time.py --utterances 256 --threads 1
    python benchmarks/tacn_epoch_time.py --variants deep_tacn,fusion_tacn --device cuda

Prints, per variant: parameters, seconds per training epoch (best of --epochs
after the first, which includes warm-up, when --epochs >= 2), and utterances per
second; an IEMOCAP-size epoch (TACN's 80 % of 5531 = 4425 utterances) scales
from the latter.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from satn.batching import SequenceDataset
from satn.config import ExperimentConfig
from satn.engine import FoldData, FoldTrainer, seed_everything
from satn.models import build_model
from satn.models.segment_variants import VARIANTS

SHAPE = (32, 129)


def synthetic(n: int, seed: int = 0) -> SequenceDataset:
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.gamma(4.0, 17 / 4.0, n), 1, 60).astype(int)
    arrays = [rng.standard_normal((t, *SHAPE), dtype=np.float32) for t in lengths]
    return SequenceDataset(arrays, [i % 4 for i in range(n)], [f"u{i}" for i in range(n)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--utterances", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)  # TACN 3.1
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    overrides = dict(s.split("=", 1) for s in args.sets)
    train = synthetic(args.utterances)
    small = synthetic(8, seed=1)  # dev / test: kept tiny, the epoch time is training's
    data = FoldData("bench", train, small, small, 4)
    mean_len = float(train.lengths.mean())
    print(f"{args.utterances} utterances, {mean_len:.1f} segments on average, batch "
          f"{args.batch_size}, {args.threads} thread(s), {args.device}")
    print(f"{'variant':<14}{'params':>10}{'s/epoch':>10}{'utt/s':>9}{'IEMOCAP epoch s':>17}")
    for variant in args.variants.split(","):
        cfg = ExperimentConfig().override({**overrides, "model.variant": variant,
                                           "train.batch_size": args.batch_size,
                                           "train.epochs": args.epochs,
                                           "train.optimizer": "adadelta", "train.lr": 1.0,
                                           "train.device": args.device})
        seed_everything(0)
        model = build_model(cfg.model, SHAPE, 4)
        trainer = FoldTrainer(model, data, cfg.train)
        times = []
        for _ in range(args.epochs):
            start = time.perf_counter()
            trainer.step()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        t = min(times[1:]) if len(times) > 1 else times[0]
        params = sum(p.numel() for p in model.parameters())
        rate = args.utterances / t
        print(f"{variant:<14}{params:>10,}{t:>10.2f}{rate:>9.1f}{4425 / rate:>17.0f}",
              flush=True)


if __name__ == "__main__":
    main()
