"""An outer fold scored by several models: inner cross-validation and seed ensembles.

``satn.config.SelectionConfig`` turns each outer fold into member models
(``satn.folds.member_folds``): one per inner speaker group, times the seeds.
This module combines their best-epoch predictions into the outer fold's figures:

- **test**: every member predicts the same outer test side; the ensemble's
  logits are the members' mean logits. Softmax probabilities are what members
  keep, and ``mean(log p)`` differs from the mean logits by a constant per
  utterance, so both give the same softmax and the same predicted class.
- **dev**: members that share a dev side (the seeds of one inner group) are
  averaged the same way; different inner groups hold different speakers, so
  their dev predictions are stacked. With inner folds this is a cross-validated
  prediction of every training speaker's utterances: the selection score.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from satn.engine import Evaluation
from satn.folds import Fold
from satn.metrics import score

SIDES = ("dev", "test")


@dataclass(frozen=True)
class Member:
    """One trained model of an outer fold: its split and its best epoch's evaluations."""

    fold: Fold
    epoch: int
    evaluations: Mapping[str, Evaluation]  # "dev" / "test"


def mean_logits(evaluations: Sequence[Evaluation]) -> tuple[list[str], np.ndarray]:
    """Ids (the first evaluation's order) and (N, C) softmax of the mean log-probabilities.

    Raises ValueError unless every evaluation holds the same utterances.
    """
    ids = list(evaluations[0].ids)
    logs = []
    for ev in evaluations:
        if sorted(ev.ids) != sorted(ids):
            raise ValueError("ensemble members evaluated different utterances")
        row = {u: i for i, u in enumerate(ev.ids)}
        p = ev.probs[[row[u] for u in ids]]
        logs.append(np.log(np.clip(p, 1e-12, None)))
    z = np.mean(logs, axis=0)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return ids, p / p.sum(axis=1, keepdims=True)


def combine(members: Sequence[Member], labels: Mapping[str, int]) -> dict[str, Evaluation]:
    """The outer fold's ``dev`` and ``test`` evaluations from its members.

    ``labels``: utterance id -> class id for every dev and test utterance.
    Losses are not combined (each member's are in its own run): they are NaN here.
    """
    if not members:
        raise ValueError("an outer fold needs at least one member")
    by_dev: dict[tuple[str, ...], list[Member]] = {}
    for m in members:
        by_dev.setdefault(tuple(sorted(m.fold.dev)), []).append(m)
    dev_ids: list[str] = []
    dev_probs = []
    for group in by_dev.values():
        ids, p = mean_logits([m.evaluations["dev"] for m in group])
        dev_ids += ids
        dev_probs.append(p)
    if len(set(dev_ids)) != len(dev_ids):
        raise ValueError("inner dev sides overlap: members are not one cross-validation")
    test_ids, test_probs = mean_logits([m.evaluations["test"] for m in members])
    out = {}
    for side, ids, probs in (("dev", dev_ids, np.concatenate(dev_probs)),
                             ("test", test_ids, test_probs)):
        y = np.array([labels[u] for u in ids], dtype=np.int64)
        out[side] = Evaluation(score(y, probs.argmax(1), probs.shape[1]), float("nan"),
                               probs, ids)
    return out
