"""The RAVDESS accuracy target from finished runs: seeds averaged, fused, chosen on dev.

Given the seed runs of both shipped files (``satn train --config
experiments/ravdess.yaml`` and ``experiments/ravdess8.yaml``, ``--set train.seed=N``) and
each protocol's baseline runs (``satn baseline ... --features compare --classifier svm
--classifier logreg``) in one MLflow store, this runs the procedure of docs/results.md
("Seeds averaged") through the installed ``satn``, as a user would type it:

    E = satn average <eight-class seed runs>      (one seed: that run)
    F = satn average <four-class seed runs>
    M = satn average F E                          (E scored on the four classes)
    eight classes: satn choose <fuse E svm8> <fuse E logreg8> --against both baselines
    four classes:  satn choose <fuse F, E, M with svm4, logreg4> --against both baselines

Every candidate and every rule (the candidates, their order, the selection score) is
fixed here, before test is read; ``satn choose`` reads test only for the chosen run.
One JSON record comes out: the runs made, each protocol's candidates with their selection
score and test UA, the chosen run and its paired tests against both baselines.

    cd <store dir> && python <repo>/benchmarks/ravdess_target.py --label s4 \\
        --eight RUN [RUN ...] --four RUN [RUN ...] \\
        --baselines8 SVM_RUN LOGREG_RUN --baselines4 SVM_RUN LOGREG_RUN --out target_s4.json
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

SATN = str(Path(sys.executable).with_name("satn"))


def satn(*args: str) -> str:
    res = subprocess.run([SATN, *args], capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"satn {' '.join(args)} failed:\n{res.stdout}{res.stderr}")
    return res.stdout


def new_run(*args: str) -> str:
    """Run a command that logs a run; its id."""
    return re.search(r"MLflow run ([0-9a-f]{32})", satn(*args)).group(1)


def mean_of(runs: list[str], uri: str) -> str:
    return runs[0] if len(runs) == 1 else new_run("average", *runs, "--tracking-uri", uri)


def choose(candidates: dict[str, str], baselines: list[str], uri: str,
           resamples: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "choice.json"
        print(satn("choose", *(f"{k}={v}" for k, v in candidates.items()),
                   *(a for b in baselines for a in ("--against", b)), "--tracking-uri", uri,
                   "--json", str(out), "--resamples", str(resamples)))
        record = json.loads(out.read_text())
    record["chosen_candidate"] = next(c["label"] for c in record["candidates"]
                                      if c["run_id"] == record["chosen"])
    # the best baseline is the one with the higher test UA (the issue's "best classical
    # baseline measured in the same run"), whichever was named first
    record["best_baseline"] = max(record["against"], key=lambda a: a["ua"]["this"])
    return record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--label", required=True, help="names the seed set in the record")
    ap.add_argument("--eight", nargs="+", required=True, help="eight-class seed runs")
    ap.add_argument("--four", nargs="+", required=True, help="four-class seed runs")
    ap.add_argument("--baselines8", nargs=2, required=True, metavar=("SVM", "LOGREG"))
    ap.add_argument("--baselines4", nargs=2, required=True, metavar=("SVM", "LOGREG"))
    ap.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    ap.add_argument("--resamples", type=int, default=10000)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    uri = a.tracking_uri
    e, f = mean_of(a.eight, uri), mean_of(a.four, uri)
    m = new_run("average", f, e, "--tracking-uri", uri)
    rec = {"label": a.label, "eight_seeds": a.eight, "four_seeds": a.four,
           "E": e, "F": f, "M": m}

    def fuse(net: str, base: str) -> str:
        return new_run("fuse", net, base, "--tracking-uri", uri)

    svm8, lr8 = a.baselines8
    rec["eight_classes"] = choose({"eight+svm": fuse(e, svm8), "eight+logreg": fuse(e, lr8)},
                                  [lr8, svm8], uri, a.resamples)
    svm4, lr4 = a.baselines4
    four = {f"{net}+{b}": fuse(run, base) for net, run in (("four", f), ("eight", e), ("mean", m))
            for b, base in (("svm", svm4), ("logreg", lr4))}
    rec["four_classes"] = choose(four, [lr4, svm4], uri, a.resamples)
    Path(a.out).write_text(json.dumps(rec, indent=1))
    for proto in ("eight_classes", "four_classes"):
        r = rec[proto]
        best = next(c for c in r["candidates"] if c["run_id"] == r["chosen"])
        ua = r["best_baseline"]["ua"]
        print(f"{a.label} {proto}: chosen {r['chosen_candidate']} ({r['chosen']}), selection "
              f"{best['selection_score']:.4f}, test UA {best['test_ua_mean']:.3f}; against "
              f"{r['best_baseline']['name']} ({ua['this']:.3f}): {ua['diff']:+.3f} "
              f"[{ua['low']:+.3f}, {ua['high']:+.3f}], p = {ua['p_utterances']:.4f}, "
              f"folds t p = {ua['p_folds_t']:.4f}")
    print(f"written: {a.out}")


if __name__ == "__main__":
    main()
