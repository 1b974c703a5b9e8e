"""Test-time speed averaging: do a run's models score better when each dev and test
utterance is also heard at the training speeds (0.9, 1.1), its log-probabilities averaged?

Reads a finished run selected by inner folds (``selection.inner_k``) from MLflow: its
config, its members' best checkpoints and its features (by key, as ``satn refit`` finds
them). Every member predicts its dev and test sides as they are and averaged over the
speed copies (the cached ``recipe.speeds`` datasets, standardised as the originals);
the members combine as in training (``satn.ensemble.combine``). Prints both runs' dev and
test UA, their paired comparison, and each with ``satn fuse``'s rule against the given
baseline runs. Nothing is logged; the models are not trained again.

    cd /tmp/exp5 && /work/main/.venv/bin/python /work/main/benchmarks/speed_averaging.py \
        9d8e4d1fdbf948878d1de36b58d36327 --tracking-uri sqlite:////tmp/exp5/mlflow.db \
        --baseline 6d4df526... --baseline d6bbd074...
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch


def main() -> None:
    from mlflow.tracking import MlflowClient

    from satn.batching import SequenceDataset
    from satn.checkpoint import load_checkpoint
    from satn.cli import load_runtime
    from satn.config import ExperimentConfig
    from satn.engine import evaluate
    from satn.ensemble import Member, combine, mean_logits
    from satn.folddata import eval_labels, prepare_folds
    from satn.fusion import fuse
    from satn.predictions import predictions_frame
    from satn.prepare import dataset_of_run
    from satn.significance import compare, fold_scores
    from satn.speed import original_id, speed_variants
    from satn.tracking import load_predictions, run_config, run_tags

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_id")
    ap.add_argument("--tracking-uri", required=True)
    ap.add_argument("--ray-config", default=None)
    ap.add_argument("--baseline", action="append", default=[])
    args = ap.parse_args()
    torch.set_num_threads(2)
    uri = args.tracking_uri
    cfg = ExperimentConfig.from_dict(run_config(uri, args.run_id))
    if not cfg.recipe.speeds:
        raise SystemExit("the run trained without recipe.speeds: no speed copies to average")
    dataset = dataset_of_run(cfg, load_runtime(args.ray_config),
                             run_tags(uri, args.run_id).get("satn.features_key", ""))
    copies = [dict(zip(map(original_id, v.meta["id"]), v.arrays(), strict=True))
              for v in speed_variants(dataset, cfg.recipe.speeds)]
    speakers = dict(zip(dataset.meta["id"], dataset.meta["speaker"], strict=True))
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_run(args.run_id).info.experiment_id
    runs = {r.data.tags["satn.fold"]: r.info.run_id for r in client.search_runs(
        [exp], f"tags.mlflow.parentRunId = '{args.run_id}' and tags.`satn.level` = 'member'")}
    prepared = prepare_folds(dataset, cfg, perturbed=[])
    cpu = torch.device("cpu")
    members: dict[str, dict[str, Member]] = {"as is": {}, "speed-averaged": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for pf in prepared:
            path = client.download_artifacts(runs[pf.fold.name], "checkpoint/best.pt",
                                             str(Path(tmp) / pf.fold.name))
            model = load_checkpoint(path).model
            plain, averaged = {}, {}
            for side in ("dev", "test"):
                data = getattr(pf.data, side)
                views = [evaluate(model, data, 32, cpu)]
                for c in copies:  # the copies, standardised as their originals are
                    arrays = [c[u] for u in data.ids]
                    if pf.speaker_norms:
                        arrays = [pf.speaker_norms[speakers[u]](a)
                                  for u, a in zip(data.ids, arrays, strict=True)]
                    views.append(evaluate(model, SequenceDataset(
                        arrays, list(data.labels), data.ids, normalizer=pf.normalizer), 32, cpu))
                ids, p = mean_logits(views)
                plain[side], averaged[side] = views[0], replace(views[0], ids=ids, probs=p)
            members["as is"][pf.fold.name] = Member(pf.fold, 0, plain)
            members["speed-averaged"][pf.fold.name] = Member(pf.fold, 0, averaged)
            print(f"{pf.fold.name}: scored", flush=True)
    outer: dict[str, list] = {}
    for pf in prepared:
        outer.setdefault(pf.fold.scored_as, []).append(pf)
    frames = {}
    for kind, by_name in members.items():
        rows = []
        for name, group in outer.items():
            labels = eval_labels(group)
            for side, ev in combine([by_name[pf.fold.name] for pf in group], labels).items():
                f = predictions_frame(ev.ids, [speakers[u] for u in ev.ids],
                                      [labels[u] for u in ev.ids], ev.probs, cfg.data.classes,
                                      side)
                f.insert(0, "fold", name)
                rows.append(f)
        frames[kind] = pd.concat(rows, ignore_index=True)
        dev = np.mean(list(fold_scores(frames[kind], "ua", "dev").values()))
        test = np.mean(list(fold_scores(frames[kind], "ua", "test").values()))
        print(f"{kind:<15} dev UA {dev:.4f}  test UA {test:.4f}")
    c = compare(frames["speed-averaged"], frames["as is"])
    print(f"speed-averaged - as is: test UA {c.diff}  paired permutation p = "
          f"{c.p_utterances:.3f}")
    for base in args.baseline:
        b = load_predictions(uri, base)
        for kind, f in frames.items():
            r = fuse(f, b)
            fused = pd.concat([x.predictions.assign(fold=x.name) for x in r.folds])
            cb = compare(fused, b)
            print(f"fused with {b.attrs['run_name']} ({kind}): dev UA {r.dev.ua_mean:.4f} "
                  f"test UA {r.test.ua_mean:.4f}, against it {cb.diff} p = "
                  f"{cb.p_utterances:.3f}")


if __name__ == "__main__":
    main()
