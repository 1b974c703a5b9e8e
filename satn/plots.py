"""Figures for reports and tracking: confusion matrices and attention maps (PNG)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: sweeps run on machines without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def confusion_png(matrix: np.ndarray, classes: tuple[str, ...], path: str | Path,
                  title: str = "", normalise: bool = True) -> Path:
    """Heatmap of a (C, C) confusion matrix, rows = true class; rows normalised when asked."""
    fig = confusion_figure(matrix, classes, title, normalise)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def confusion_figure(matrix: np.ndarray, classes: tuple[str, ...], title: str = "",
                     normalise: bool = True) -> plt.Figure:
    """The figure :func:`confusion_png` writes (the caller closes it)."""
    m = np.asarray(matrix, dtype=np.float64)
    if normalise:
        m = m / np.maximum(m.sum(1, keepdims=True), 1e-12)
    side = max(4.0, 0.6 * len(classes) + 1.2)  # eight classes' cells need room for "0.00"
    fig, ax = plt.subplots(figsize=(side, 0.9 * side))
    ax.imshow(m, cmap="Blues", vmin=0, vmax=1 if normalise else None)
    for (i, j), text in np.ndenumerate(cell_labels(m)):
        ax.text(j, i, text, ha="center", va="center",
                color="white" if m[i, j] > 0.5 * m.max() else "black")
    ax.set(xticks=range(len(classes)), yticks=range(len(classes)), xticklabels=classes,
           yticklabels=classes, xlabel="predicted", ylabel="true")
    # run names make long titles: wrapped, or the 4-inch figure cuts them off at both ends
    ax.set_title(textwrap.fill(title, 40), fontsize=9)
    fig.tight_layout()
    return fig


def cell_labels(m: np.ndarray) -> np.ndarray:
    """Cell texts of a matrix: counts as integers, anything else (rates, means) with 2 decimals."""
    counts = np.allclose(m, np.round(m)) and m.max(initial=0) > 1
    return np.vectorize(lambda v: f"{int(round(v))}" if counts else f"{v:.2f}")(m)


def attention_png(attn: np.ndarray, path: str | Path, title: str = "") -> Path:
    """Heads of a (H, T, T) attention map side by side, plus their mean; or the (T,)
    weights of soft attention over frames."""
    attn = np.asarray(attn, dtype=np.float32)
    if attn.ndim == 1:
        fig, ax = plt.subplots(figsize=(5, 2.2))
        ax.plot(np.arange(len(attn)), attn, lw=1)
        ax.set(xlabel="frame", ylabel="weight", ylim=(0, None))
        ax.set_title(title, fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=80)
        plt.close(fig)
        return Path(path)
    maps = list(attn) + [attn.mean(0)]
    fig, axes = plt.subplots(1, len(maps), figsize=(2.2 * len(maps), 2.4), squeeze=False)
    for i, (ax, m) in enumerate(zip(axes[0], maps, strict=True)):
        ax.imshow(m, cmap="viridis", aspect="auto", origin="lower")
        ax.set_title(f"head {i + 1}" if i < len(attn) else "mean", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][0].set(xlabel="key frame", ylabel="query frame")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return Path(path)


def reconstruction_png(pairs: np.ndarray, path: str | Path, title: str = "") -> Path:
    """(2, n, S, F) inputs and reconstructions -> n columns, input above output (bins upward)."""
    pairs = np.asarray(pairs, dtype=np.float32)
    n = pairs.shape[1]
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n + 0.6, 4.2), squeeze=False)
    lo, hi = np.percentile(pairs, [1, 99])
    for j in range(n):
        for i, name in enumerate(("input", "reconstruction")):
            ax = axes[i][j]
            ax.imshow(pairs[i, j].T, origin="lower", aspect="auto", cmap="magma", vmin=lo, vmax=hi)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(f"{name}\nbin", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def curves_png(steps: np.ndarray, series: dict[str, np.ndarray], path: str | Path,
               xlabel: str = "step", title: str = "") -> Path:
    """One panel per named series against ``steps`` (e.g. reconstruction, perplexity)."""
    fig, axes = plt.subplots(1, len(series), figsize=(3.4 * len(series), 2.8), squeeze=False)
    for ax, (name, ys) in zip(axes[0], series.items(), strict=True):
        ax.plot(steps, ys, marker="o", ms=3)
        ax.set(xlabel=xlabel, title=name)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def scatter_panels_png(panels: dict[str, tuple[np.ndarray, np.ndarray]], classes: tuple[str, ...],
                       path: str | Path, title: str = "") -> Path:
    """One 2D scatter per panel (points (N, 2), class ids (N,)), coloured by class."""
    fig, axes = plt.subplots(1, len(panels), figsize=(3.8 * len(panels), 3.6), squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax, (name, (pts, y)) in zip(axes[0], panels.items(), strict=True):
        for c, cls in enumerate(classes):
            sel = np.asarray(y) == c
            ax.scatter(pts[sel, 0], pts[sel, 1], s=8, alpha=0.7, color=colours(c), label=cls)
        ax.set(title=name, xticks=[], yticks=[])
    axes[0][0].legend(fontsize=7, markerscale=1.5, loc="best")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def confusion_grid_png(matrices: dict[str, np.ndarray], classes: tuple[str, ...],
                       path: str | Path, title: str = "", cols: int = 2) -> Path:
    """Row-normalised confusion matrices side by side (TACN Figure 5: four of them)."""
    n = len(matrices)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.8 * cols, 3.5 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, (name, cm) in zip(axes.flat, matrices.items(), strict=False):
        m = np.asarray(cm, dtype=np.float64)
        m = m / np.maximum(m.sum(1, keepdims=True), 1e-12)
        ax.imshow(m, cmap="Blues", vmin=0, vmax=1)
        for (i, j), text in np.ndenumerate(cell_labels(m)):
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if m[i, j] > 0.5 else "black")
        ax.set(xticks=range(len(classes)), yticks=range(len(classes)), xticklabels=classes,
               yticklabels=classes, xlabel="predicted", ylabel="true", title=name)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)
