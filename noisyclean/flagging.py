"""Which labels to flag: confident learning's per-class thresholds and prune-by-class.

Northcutt, Jiang & Chuang, "Confident Learning: Estimating Uncertainty in Dataset
Labels", JAIR 2021.

1. A row is *confidently* of class j when its score for j reaches t_j, the mean
   score for j over the rows labelled j. Each class gets its own threshold because
   scores are not calibrated across classes: a class that is often confused with
   another never reaches high scores, even on its clean rows.
2. The confident joint J counts rows by (given label, confident class). Calibrated
   so that each given class's row sums to its row count, its off-diagonal share
   estimates how many of that class's labels are wrong: n_c.
3. Prune by class: within each given class c, the n_c rows with the lowest score
   for c are flagged. So a flagged row is always more suspicious than every
   unflagged row of its class, and a row with no support for any class (below every
   threshold) can still be flagged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Flags:
    """Flags of N rows over K classes.

    Attributes:
        flagged: (N,) bool, the row is among its class's n_c least supported rows.
        confident_class: (N,) the class each row is confidently of (highest score among
            the classes whose threshold it reaches), or -1 for none.
        thresholds: (K,) per-class thresholds t_j.
        noise_rate: (K,) estimated share of wrong labels per given class, n_c / count_c.
        joint: (K, K) confident joint: counts of (given label, confident class).
    """

    flagged: np.ndarray
    confident_class: np.ndarray
    thresholds: np.ndarray
    noise_rate: np.ndarray
    joint: np.ndarray


def confident_flags(scores: np.ndarray, labels: np.ndarray, n_classes: int) -> Flags:
    """Flag rows by per-class thresholds and prune-by-class.

    Args:
        scores: (N, K) per-class scores in [0, 1] (need not sum to 1).
        labels: (N,) given class index of each row.
        n_classes: K.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    thresholds = np.ones(n_classes)
    for j in range(n_classes):
        mine = labels == j
        if mine.any():
            thresholds[j] = scores[mine, j].mean()
    above = np.where(scores >= thresholds[None, :], scores, -np.inf)
    confident = np.where(np.isfinite(above).any(axis=1), above.argmax(axis=1), -1)
    has = confident >= 0
    joint = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(joint, (labels[has], confident[has]), 1)

    counts = np.bincount(labels, minlength=n_classes)
    row_sums = joint.sum(axis=1)
    off = row_sums - np.diag(joint)
    share = np.divide(off, row_sums, out=np.zeros(n_classes), where=row_sums > 0)
    n_wrong = np.rint(share * counts).astype(np.int64)

    flagged = np.zeros(len(labels), dtype=bool)
    own = scores[np.arange(len(labels)), labels] if len(labels) else np.zeros(0)
    for c in range(n_classes):
        rows = np.flatnonzero(labels == c)
        if n_wrong[c] and len(rows):
            flagged[rows[np.argsort(own[rows], kind="stable")[: n_wrong[c]]]] = True
    noise_rate = np.divide(n_wrong, counts, out=np.zeros(n_classes), where=counts > 0)
    return Flags(
        flagged=flagged,
        confident_class=confident,
        thresholds=thresholds,
        noise_rate=noise_rate,
        joint=joint,
    )
