"""The files a fold run holds beside its metrics: confusion tables and pictures,
attention pictures, drawn at a fold's end or later from what was logged."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from satn.plots import attention_png, confusion_png


def write_confusions(tmp: Path, classes, dev, test, title: str = "", *,
                pictures: bool = True) -> Path:
    """``tmp/confusion`` with ``{dev,test}.csv`` and, when asked, ``{dev,test}.png`` of
    two ``Scores``; ``{side}`` in ``title`` names each picture's side."""
    conf = tmp / "confusion"
    conf.mkdir()
    for side, scores in (("dev", dev), ("test", test)):
        write_confusion_csv(scores.confusion, classes, conf / f"{side}.csv")
        if pictures:
            confusion_png(scores.confusion, classes, conf / f"{side}.png",
                          title=title.replace("{side}", side))
    return conf


def log_figures(client, run_id: str, tmp: Path, classes: tuple[str, ...],
                 confusions: dict[str, np.ndarray],
                 attention: dict[str, tuple[str, np.ndarray]], name: str, epoch: int) -> None:
    """Draw and log ``confusion/{side}.png`` for each ``{side: (C, C) counts}`` and
    ``attention/{safe}.png`` for each ``{safe: (utterance id, map)}`` of one best epoch."""
    conf = tmp / "confusion_png"
    conf.mkdir()
    for side, matrix in confusions.items():
        confusion_png(matrix, classes, conf / f"{side}.png",
                      title=f"{name} {side} (epoch {epoch})")
    client.log_artifacts(run_id, str(conf), "confusion")
    if attention:
        att = tmp / "attention_png"
        att.mkdir()
        for safe, (uid, attn) in attention.items():
            attention_png(attn, att / f"{safe}.png", title=f"{uid} (epoch {epoch})")
        client.log_artifacts(run_id, str(att), "attention")


def write_confusion_csv(matrix: np.ndarray, classes: tuple[str, ...], path: Path,
                         fmt: str = "%d") -> None:
    header = "true\\pred," + ",".join(classes)
    rows = [f"{c}," + ",".join(fmt % v for v in row) for c, row in zip(classes, matrix,
                                                                      strict=True)]
    path.write_text("\n".join([header, *rows]) + "\n")


def read_confusion_csv(path: Path) -> tuple[tuple[str, ...], np.ndarray]:
    """``(classes, (C, C) counts)`` of a table :func:`write_confusion_csv` wrote."""
    header, *rows = [line.split(",") for line in path.read_text().splitlines() if line]
    return tuple(header[1:]), np.array([[float(v) for v in r[1:]] for r in rows])
