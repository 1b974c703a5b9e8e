"""Per-utterance predictions of one evaluated fold: a small Parquet table.

One row per utterance and side: ``id``, ``speaker``, ``side`` (dev | test),
``true`` and ``pred`` (class names), and one ``score.<class>`` column per class
in the model's class order. Scores are softmax probabilities for neural models
and logistic regression, decision values for a linear SVM; which is named in the
file's schema metadata (``satn.score_kind``). Neural and classical runs write the
same table, so :mod:`satn.significance` compares any two runs utterance by utterance.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from satn.errors import InputError
from satn.metrics import Scores, score

SCORE_PREFIX = "score."
SCORE_KINDS = ("probability", "decision")
COLUMNS = ("id", "speaker", "side", "true", "pred")
FILE = "predictions.parquet"  # the artifact name in every fold run


class PredictionsError(InputError):
    """A predictions table that is missing, damaged or does not fit its use."""


def predictions_frame(ids: Sequence[str], speakers: Sequence[str], true: Sequence[int],
                      scores: np.ndarray, classes: Sequence[str], side: str,
                      pred: Sequence[int] | None = None) -> pd.DataFrame:
    """Rows of one side. ``true``/``pred``: class ids; ``scores``: (N, C); ``pred`` defaults
    to the argmax of ``scores``."""
    s = np.asarray(scores, dtype=np.float64)
    n = len(ids)
    if s.shape != (n, len(classes)):
        raise ValueError(f"scores of shape {s.shape} for {n} ids and {len(classes)} classes")
    if len(speakers) != n or len(true) != n:
        raise ValueError(f"{n} ids but {len(speakers)} speakers and {len(true)} labels")
    p = s.argmax(1) if pred is None else np.asarray(pred)
    names = np.asarray(classes, dtype=object)
    frame = pd.DataFrame({"id": list(ids), "speaker": list(speakers), "side": side,
                          "true": names[np.asarray(true, dtype=np.int64)],
                          "pred": names[p.astype(np.int64)]})
    for j, c in enumerate(classes):
        frame[f"{SCORE_PREFIX}{c}"] = s[:, j]
    return frame


def scores_of(rows: pd.DataFrame, classes: Sequence[str]) -> Scores:
    """WA, UA, F1 and confusion of a table's rows (their ``true`` and ``pred`` names)."""
    index = {c: i for i, c in enumerate(classes)}
    return score(rows["true"].map(index).to_numpy(), rows["pred"].map(index).to_numpy(),
                 len(classes))


def classes_of(frame: pd.DataFrame) -> tuple[str, ...]:
    """The class order of a predictions table (its score columns)."""
    return tuple(c[len(SCORE_PREFIX):] for c in frame.columns if c.startswith(SCORE_PREFIX))


def renormalised(s: np.ndarray) -> np.ndarray:
    """(N, C) non-negative scores as rows summing to one (negatives clipped; a row of
    zeros becomes uniform)."""
    s = np.clip(s, 0.0, None)
    total = s.sum(1, keepdims=True)
    return np.divide(s, total, out=np.full_like(s, 1.0 / s.shape[1]), where=total > 0)


def restrict_classes(frame: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """The rows of ``frame`` whose true class is in ``classes``, scored on those classes alone.

    A network trained on eight emotions, scored on four: the rows of the other four are
    dropped and each row's probabilities renormalised over the kept classes (decision
    values are kept as they are: their softmax over the kept columns is the same
    renormalisation); ``pred`` is the argmax over the kept classes. Score columns come in
    ``classes`` order; every other column and ``attrs`` are kept.
    """
    have = classes_of(frame)
    missing = [c for c in classes if c not in have]
    if missing:
        raise PredictionsError(f"cannot score on classes {list(classes)}: the predictions "
                               f"have no scores for {missing} (classes {list(have)})")
    rows = frame[frame["true"].isin(list(classes))]
    s = rows[[f"{SCORE_PREFIX}{c}" for c in classes]].to_numpy(np.float64)
    if frame.attrs.get("score_kind", "probability") != "decision":
        s = renormalised(s)
    out = rows.drop(columns=[f"{SCORE_PREFIX}{c}" for c in have]).reset_index(drop=True)
    out["pred"] = np.asarray(classes, dtype=object)[s.argmax(1)] if len(s) else []
    for j, c in enumerate(classes):
        out[f"{SCORE_PREFIX}{c}"] = s[:, j]
    out.attrs = dict(frame.attrs)
    return out


def align_classes(frame_a: pd.DataFrame, frame_b: pd.DataFrame
                  ) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Two runs' tables on the same classes, and a line saying what was done ("" if
    nothing). When one run scored a superset of the other's classes (trained on all eight
    emotions, its partner on four), it is restricted to the other's (:func:`restrict_classes`);
    classes that only partly overlap cannot be compared and raise ``PredictionsError``."""
    (a, b), notes = common_classes((frame_a, frame_b), ("A", "B"))
    return a, b, "\n".join(notes)


def common_classes(frames: Sequence[pd.DataFrame], tags: Sequence[str]
                   ) -> tuple[list[pd.DataFrame], list[str]]:
    """Runs' tables on the classes of the run that scored fewest, and a line per run that
    was restricted to them (:func:`restrict_classes`). Every run's classes must include
    those: classes that only partly overlap raise ``PredictionsError``. ``tags`` name the
    runs in the lines and errors (``A``, ``B``, or ``1``, ``2``, ...)."""
    classes = [classes_of(f) for f in frames]
    k = min(range(len(frames)), key=lambda i: len(classes[i]))
    small = classes[k]
    other = "the other run" if len(frames) == 2 else f"run {tags[k]}"
    out, notes = [], []
    for tag, frame, cl in zip(tags, frames, classes, strict=True):
        if set(cl) == set(small):
            out.append(frame)
            continue
        if not set(small) < set(cl):
            raise PredictionsError(f"the runs have different classes: {list(small)} and "
                                   f"{list(cl)}; neither is a subset of the other")
        notes.append(f"run {tag} scored {len(cl)} classes {list(cl)}: scored here on the "
                     f"{len(small)} of {other} {list(small)} (rows of the others dropped, "
                     "scores renormalised over these)")
        out.append(restrict_classes(frame, small))
    return out, notes


def write_predictions(frame: pd.DataFrame, path: str | Path, score_kind: str) -> Path:
    if score_kind not in SCORE_KINDS:
        raise ValueError(f"score_kind must be one of {SCORE_KINDS}, not {score_kind!r}")
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing or not classes_of(frame):
        raise ValueError(f"not a predictions table: missing {missing or 'score columns'}")
    table = pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)
    meta = {**(table.schema.metadata or {}), b"satn.score_kind": score_kind.encode(),
            b"satn.classes": json.dumps(list(classes_of(frame))).encode()}
    path = Path(path)
    pq.write_table(table.replace_schema_metadata(meta), path, compression="zstd")
    return path


def read_predictions(path: str | Path) -> pd.DataFrame:
    """The table at ``path``; ``frame.attrs["score_kind"]`` says what the scores are."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as e:
        raise PredictionsError(f"{path}: not a readable predictions table ({e})") from e
    frame = table.to_pandas()
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing or not classes_of(frame):
        raise PredictionsError(f"{path}: not a predictions table (missing "
                               f"{', '.join(missing) or 'score columns'})")
    kind = (table.schema.metadata or {}).get(b"satn.score_kind", b"").decode()
    frame.attrs["score_kind"] = kind
    return frame
