"""How far the selection score is from the test score, run by run.

For every neural config run of an MLflow experiment: the score a sweep would choose
by (``dev_ua_mean``: the outer dev side, or with ``selection.inner_k`` the pooled
inner cross-validation over the training speakers), the test UA, and the gap
between them; then, per selection mode, the rank correlation between the two
over the runs (does the selection score order configurations as the test does?).

    .venv/bin/python benchmarks/selection_gap.py --tracking-uri sqlite:////tmp/rav/mlflow.db \
        --experiment ravdess-baselines
"""

from __future__ import annotations

import argparse

import numpy as np
from mlflow.tracking import MlflowClient
from scipy.stats import spearmanr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tracking-uri", required=True)
    ap.add_argument("--experiment", required=True)
    ap.add_argument("--since", default=None, help="only runs started after this run id's start")
    ap.add_argument("--kind", choices=("neural", "baseline", "all"), default="neural",
                    help="baselines choose C, not epochs (default: neural runs only)")
    args = ap.parse_args()
    client = MlflowClient(tracking_uri=args.tracking_uri)
    exp = client.get_experiment_by_name(args.experiment)
    if exp is None:
        raise SystemExit(f"no experiment {args.experiment!r} in {args.tracking_uri}")
    runs = client.search_runs([exp.experiment_id], filter_string=(
        "tags.`satn.level` = 'config' and attributes.status = 'FINISHED'"),
        order_by=["attributes.start_time ASC"])
    if args.since:
        start = client.get_run(args.since).info.start_time
        runs = [r for r in runs if r.info.start_time >= start]
    rows = []
    for r in runs:
        m, p = r.data.metrics, r.data.params
        variant = r.data.tags.get("satn.variant", "")
        baseline = "/" in variant  # svm/egemaps, logreg/compare, ...
        if "dev_ua_mean" not in m or args.kind == ("baseline" if not baseline else "neural"):
            continue
        mode = (f"inner_k={p['selection.inner_k']} seeds={p.get('selection.seeds', '1')}"
                if p.get("selection.inner_k", "0") != "0" or p.get("selection.seeds", "1") != "1"
                else "outer dev")
        mode += f", {len(p.get('data.classes', '').split(','))} classes"
        rows.append((r.info.run_id[:8], variant, mode, m["dev_ua_mean"], m["test_ua_mean"]))
    print(f"{'run':<10}{'variant':<20}{'selection':<30}{'select UA':>10}{'test UA':>9}{'gap':>8}")
    for rid, variant, mode, dev, test in rows:
        print(f"{rid:<10}{variant:<20}{mode:<30}{dev:>10.3f}{test:>9.3f}{dev - test:>+8.3f}")
    for mode in sorted({r[2] for r in rows}):
        sub = [r for r in rows if r[2] == mode]
        gaps = np.array([r[3] - r[4] for r in sub])
        line = f"{mode}: {len(sub)} run(s), mean gap {gaps.mean():+.3f}"
        if len(sub) >= 3:
            rho = spearmanr([r[3] for r in sub], [r[4] for r in sub]).statistic
            line += f", Spearman rho(select, test) {rho:+.2f}"
        print(line)


if __name__ == "__main__":
    main()
