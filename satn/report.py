"""Tables in the layout of SATN's Table 2 from tracked runs: rows = variants,
columns = dev and test WA / UA, mean and std over folds.

Reads plain records (``satn.tracking.read_runs`` gives them from MLflow), so
this module imports neither MLflow nor Ray. Reference figures from a paper
come from a YAML file (``experiments/paper/<name>.figures.yaml`` or a path)::

    source: where the figures were read (paper, table)
    rows:
      tcn_self_at: {dev_wa: 0.70, dev_ua: 0.66, test_wa: 0.68, test_ua: 0.63}

Scores are fractions in [0, 1] throughout and printed as percentages. Records
that carry their per-utterance ``predictions`` (``satn.tracking.load_predictions``)
get a bootstrap confidence interval of test WA and UA beside the fold means
(``satn.significance.bootstrap_ci``; the runs of a row pooled, each run's folds
its own strata).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from satn.config import ConfigError, load_yaml

COLUMNS = ("dev_wa", "dev_ua", "test_wa", "test_ua")
HEADERS = {"dev_wa": "Dev WA", "dev_ua": "Dev UA", "test_wa": "Test WA", "test_ua": "Test UA",
           "test_f1": "Test F1"}
# Table 2's row order: encoders, then attention, then transfer
TABLE2_ORDER = ("blstm_soft", "blstm_self", "tcn_soft", "tcn_self",
                "blstm_soft_at", "blstm_self_at", "tcn_soft_at", "tcn_self_at")
# TACN's Tables 1-2: Deep_* then Fusion_*, sequence models in the paper's order; F1, WA, UA
TACN_ORDER = tuple(f"{f}_{s}" for f in ("deep", "fusion")
                   for s in ("rnn", "gru", "bigru", "lstm", "blstm", "tcn", "tacn"))
LAYOUTS = {"satn": (COLUMNS, TABLE2_ORDER), "tacn": (("test_f1", "test_wa", "test_ua"),
                                                      TACN_ORDER)}
PAPER_DIR = Path(__file__).resolve().parents[1] / "experiments" / "paper"


@dataclass(frozen=True)
class Row:
    """One variant (and the searched values it was run with) over its folds."""

    label: str
    variant: str
    runs: int
    folds: int
    mean: dict[str, float]
    std: dict[str, float]  # sample std (ddof=1) as papers report; 0 for one fold
    # test WA / UA -> (low, high) of a 95% bootstrap CI; empty when a run has no predictions
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), (float(a.std(ddof=1)) if len(a) > 1 else 0.0)


def _order(variant: str, order: Sequence[str] = TABLE2_ORDER) -> tuple[int, str]:
    return (order.index(variant) if variant in order else len(order), variant)


# settings that say where or how fast a run went, not what it learned: never split a row
NOT_IDENTITY = frozenset({"data.root", "train.device", "train.resident", "train.eval_cost",
                          "train.probe_frames", "transfer.cache"})


def summarise(records: Sequence[Mapping[str, Any]], layout: str = "satn",
              reads: Callable[[str, str], bool] | None = None) -> list[Row]:
    """Group config runs by variant, the other searched values, any other setting that
    differs between runs of the variant, and the class set; fold scores pooled.

    Runs without any scored fold are left out. Runs on different class sets (a store with
    four- and eight-class runs) never share a row; their labels then say which is which.
    Runs of one variant whose logged config (``config``) differs outside the searched
    values (a recipe, the epochs) never share a row either: the label names the settings
    that differ. A setting logged by only some runs (older code) does not split them,
    nor one the variant never reads: ``reads(variant, key)`` says which it reads (the CLI
    asks the model registry; default: every setting counts).
    """
    scored = [r for r in records if r["folds"]]
    by_variant: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in scored:
        by_variant.setdefault((str(r["variant"]), str(r.get("classes") or "")), []).append(r)
    groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    for (variant, classes), runs in by_variant.items():
        differ = [k for k in _differing_settings(runs) if reads is None or reads(variant, k)]
        for r in runs:
            searched = {k: v for k, v in r.get("params", {}).items() if k != "model.variant"}
            settings = {**{k: r["config"][k] for k in differ if k not in searched}, **searched}
            extra = ", ".join(f"{k}={v}" for k, v in sorted(settings.items()))
            groups.setdefault((variant, extra, classes), []).append(r)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {sorted(LAYOUTS)}, not {layout!r}")
    columns, order = LAYOUTS[layout]
    class_label = _class_labels({g[2] for g in groups})
    rows = []
    for (variant, extra, classes), runs in sorted(groups.items(), key=lambda g: (
            _order(g[0][0], order), g[0][1], g[0][2].count(","), g[0][2])):
        folds = [f for r in runs for f in r["folds"] if all(c in f for c in columns)]
        if not folds:
            continue
        stats = {c: _mean_std([f[c] for f in folds]) for c in columns}
        label = f"{variant} ({extra})" if extra else variant
        if class_label.get(classes):
            label += f" [{class_label[classes]}]"
        rows.append(Row(label, variant, len(runs),
                        len(folds), {c: s[0] for c, s in stats.items()},
                        {c: s[1] for c, s in stats.items()}, _cis(runs, columns)))
    return rows


def _differing_settings(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The logged settings that all ``runs`` have and that do not all agree, sorted."""
    configs = [r.get("config") or {} for r in runs]
    shared = set.intersection(*(set(c) for c in configs)) if configs else set()
    return sorted(k for k in shared - NOT_IDENTITY - {"model.variant", "data.classes"}
                  if len({c[k] for c in configs}) > 1)


def _class_labels(class_sets: set[str]) -> dict[str, str]:
    """A short label per class set ("4 classes"), only where the rows hold several sets;
    the list itself where two sets have as many classes."""
    if len(class_sets) < 2:
        return {}
    counts = {c: len([x for x in c.split(",") if x]) for c in class_sets}
    out = {}
    for c, n in counts.items():
        if not c:
            out[c] = "classes not logged"
        elif list(counts.values()).count(n) > 1:
            out[c] = c
        else:
            out[c] = f"{n} classes"
    return out


def _cis(runs: Sequence[Mapping[str, Any]], columns: Sequence[str],
         n_resamples: int = 2000) -> dict[str, tuple[float, float]]:
    """95% bootstrap CIs of the row's test metrics from its runs' predictions, if all have them."""
    import pandas as pd

    from satn.significance import bootstrap_ci

    frames = [r.get("predictions") for r in runs]
    if any(f is None for f in frames):
        return {}
    pooled = pd.concat([f.assign(fold=f"{r['run_id']}/" + f["fold"].astype(str))
                        for r, f in zip(runs, frames, strict=True)], ignore_index=True)
    out = {}
    for c in columns:
        side, _, metric = c.partition("_")
        if side == "test" and metric in ("wa", "ua"):
            ci = bootstrap_ci(pooled, metric, side="test", n_resamples=n_resamples)
            out[c] = (ci.low, ci.high)
    return out


def load_paper(ref: str) -> dict[str, Any]:
    """Reference figures by name (``experiments/paper/<name>.figures.yaml``) or path."""
    path = Path(ref)
    if not path.is_file():
        path = PAPER_DIR / f"{ref}.figures.yaml"
    if not path.is_file():
        raise ConfigError(f"--paper {ref}: no figures file {path} (YAML: source, rows: "
                          f"{{variant: {{dev_wa, dev_ua, test_wa, test_ua}}}} as fractions)")
    data = load_yaml(path) or {}
    rows = data.get("rows")
    if not isinstance(rows, Mapping) or not rows:
        raise ConfigError(f"{path}: needs 'rows' mapping variants to their figures")
    for variant, figs in rows.items():
        bad = [k for k in (figs or {}) if k not in HEADERS]
        if not isinstance(figs, Mapping) or bad:
            raise ConfigError(f"{path}: rows.{variant} must map {', '.join(COLUMNS)} to "
                              f"fractions; unknown {bad}")
        out = [k for k, v in figs.items() if not 0 <= float(v) <= 1]
        if out:
            raise ConfigError(f"{path}: rows.{variant}.{out[0]} must be a fraction in [0, 1]")
    return {"source": str(data.get("source", path.name)),
            "rows": {str(k): {c: float(v) for c, v in dict(f).items()} for k, f in rows.items()}}


def _pct(v: float) -> str:
    return f"{100 * v:.1f}"


def table(rows: Sequence[Row], paper: Mapping[str, Any] | None = None,
          fmt: str = "markdown") -> str:
    """The table as markdown or CSV; with ``paper``, its figure beside each of ours.

    The columns are those the rows were summarised with (see ``LAYOUTS``).
    """
    ref = (paper or {}).get("rows", {})
    columns = tuple(rows[0].mean) if rows else COLUMNS

    def paper_value(r: Row, c: str) -> float | None:
        return ref.get(r.variant, {}).get(c)

    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        with_ci = [c for c in columns if any(c in r.ci for r in rows)]
        w.writerow(["model", "variant", "runs", "folds"] + [
            x for c in columns
            for x in [f"{c}_mean", f"{c}_std"]
            + ([f"{c}_ci_low", f"{c}_ci_high"] if c in with_ci else [])
            + ([f"{c}_paper"] if paper else [])])
        for r in rows:
            cells: list[Any] = [r.label, r.variant, r.runs, r.folds]
            for c in columns:
                cells += [f"{r.mean[c]:.4f}", f"{r.std[c]:.4f}"]
                if c in with_ci:
                    cells += [f"{r.ci[c][0]:.4f}", f"{r.ci[c][1]:.4f}"] if c in r.ci else ["", ""]
                if paper:
                    v = paper_value(r, c)
                    cells.append("" if v is None else f"{v:.4f}")
            w.writerow(cells)
        return buf.getvalue()
    if fmt != "markdown":
        raise ValueError(f"format must be markdown or csv, not {fmt!r}")
    header = ["Model", "Folds"]
    for c in columns:
        header += [HEADERS[c]] + ([f"{HEADERS[c]} (paper)"] if paper else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        line = [r.label, str(r.folds)]
        for c in columns:
            cell = f"{_pct(r.mean[c])} ± {_pct(r.std[c])}"
            if c in r.ci:
                cell += f" [{_pct(r.ci[c][0])}, {_pct(r.ci[c][1])}]"
            line.append(cell)
            if paper:
                v = paper_value(r, c)
                line.append("–" if v is None else _pct(v))
        lines.append("| " + " | ".join(line) + " |")
    names = " / ".join(dict.fromkeys(HEADERS[c].split()[-1] for c in columns))
    note = f"{names} in %, mean ± std over folds (each fold scored at its best dev UA epoch)"
    if any(r.ci for r in rows):
        note += ("; [low, high]: 95% bootstrap CI of the fold mean over test utterances "
                 "(resampled within fold and class; the model's training noise is not in it)")
    if paper:
        note += f"; paper: {paper['source']}"
    return "\n".join(lines) + f"\n\n{note}\n"


def comparison_png(rows: Sequence[Row], path: str | Path,
                   paper: Mapping[str, Any] | None = None) -> Path:
    """Bars of test WA and UA per row (error bars: std over folds), paper figures as marks."""
    from satn.plots import plt

    ref = (paper or {}).get("rows", {})
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(rows) + 2), 3.6))
    for k, (c, color) in enumerate((("test_wa", "tab:blue"), ("test_ua", "tab:orange"))):
        pos = x + (k - 0.5) * 0.38
        ax.bar(pos, [100 * r.mean[c] for r in rows], 0.36, yerr=[100 * r.std[c] for r in rows],
               color=color, alpha=0.8, capsize=3, label=f"{HEADERS[c]} (satn)")
        marks = [(p, 100 * ref[r.variant][c]) for p, r in zip(pos, rows, strict=True)
                 if c in ref.get(r.variant, {})]
        if marks:
            ax.scatter(*zip(*marks, strict=True), marker="D", color="black", zorder=3, s=18,
                       label=f"{HEADERS[c]} (paper)" if k == 0 else None)
    ax.set_xticks(x, [r.label for r in rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title("test WA / UA, mean ± std over folds", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
