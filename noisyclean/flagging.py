"""Which labels to flag, by per-class thresholds as in confident learning.

Northcutt, Jiang & Chuang, "Confident Learning: Estimating Uncertainty in Dataset
Labels", JAIR 2021. A row is *confidently* of class j when its score for j reaches
t_j, the mean score for j over the rows labelled j. Each class gets its own
threshold because scores are not calibrated across classes: a class that is often
confused with another never reaches high scores, even on its clean rows. A row is
flagged when it is confidently of some class other than its given label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Flags:
    """Flags of N rows over K classes.

    Attributes:
        flagged: (N,) bool, the row is confidently of another class than its label.
        confident_class: (N,) the class each row is confidently of (highest score among
            the classes whose threshold it reaches), or -1 for none.
        thresholds: (K,) per-class thresholds t_j.
        noise_rate: (K,) share of each given class's rows that are flagged.
        joint: (K, K) counts of (given label, confident class) over flagged rows.
    """

    flagged: np.ndarray
    confident_class: np.ndarray
    thresholds: np.ndarray
    noise_rate: np.ndarray
    joint: np.ndarray


def confident_flags(scores: np.ndarray, labels: np.ndarray, n_classes: int) -> Flags:
    """Flag rows by per-class thresholds.

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
    flagged = (confident >= 0) & (confident != labels)
    counts = np.bincount(labels, minlength=n_classes)
    flagged_counts = np.bincount(labels[flagged], minlength=n_classes)
    noise_rate = np.divide(flagged_counts, counts, out=np.zeros(n_classes), where=counts > 0)
    joint = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(joint, (labels[flagged], confident[flagged]), 1)
    return Flags(
        flagged=flagged,
        confident_class=confident,
        thresholds=thresholds,
        noise_rate=noise_rate,
        joint=joint,
    )
