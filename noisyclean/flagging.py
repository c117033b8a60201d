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
        joint: (P, 3) the confident joint's nonzero cells as rows of (given label,
            confident class, count), sorted: sparse, since K may be in the thousands.
    """

    flagged: np.ndarray
    confident_class: np.ndarray
    thresholds: np.ndarray
    noise_rate: np.ndarray
    joint: np.ndarray

    def seen_instead(self, given: int, n: int = 2) -> list[tuple[int, int]]:
        """The ``n`` classes rows labelled ``given`` are most often confidently of instead,
        as (class, count), most frequent first."""
        rows = self.joint[(self.joint[:, 0] == given) & (self.joint[:, 1] != given)]
        order = np.argsort(-rows[:, 2], kind="stable")[:n]
        return [(int(rows[i, 1]), int(rows[i, 2])) for i in order]

    def dense_joint(self) -> np.ndarray:
        """(K, K) counts of (given label, confident class); for small K only."""
        k = len(self.thresholds)
        out = np.zeros((k, k), dtype=np.int64)
        out[self.joint[:, 0], self.joint[:, 1]] = self.joint[:, 2]
        return out


def confident_flags(scores: np.ndarray, labels: np.ndarray, n_classes: int) -> Flags:
    """Flag rows by per-class thresholds and prune-by-class, from dense scores.

    Args:
        scores: (N, K) per-class scores in [0, 1] (need not sum to 1).
        labels: (N,) given class index of each row.
        n_classes: K.
    """
    scores = np.asarray(scores)
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    own = scores[np.arange(n), labels] if n else np.zeros(0)
    classes = np.broadcast_to(np.arange(n_classes), (n, n_classes))
    return sparse_flags(own, classes, scores, labels, n_classes)


def sparse_flags(
    own: np.ndarray,
    classes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
) -> Flags:
    """Flag rows by per-class thresholds and prune-by-class, from each row's candidate classes.

    A class that is not among a row's candidates scores 0 there. With every class a
    candidate this is exactly the dense rule; with each row's top classes it differs
    only where a class outside them would have reached its threshold.

    Args:
        own: (N,) each row's score for its given label.
        classes: (N, M) candidate class indices; -1 pads. A class may repeat in a row
            (with the same score).
        scores: (N, M) their scores.
        labels: (N,) given class index of each row.
        n_classes: K.
    """
    own = np.asarray(own, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    classes = np.asarray(classes)
    n = len(labels)
    counts = np.bincount(labels, minlength=n_classes)
    sums = np.bincount(labels, weights=own, minlength=n_classes)
    thresholds = np.divide(sums, counts, out=np.ones(n_classes), where=counts > 0)

    confident = np.full(n, -1, dtype=np.int64)
    for start in range(0, n, _CHUNK):
        c = classes[start : start + _CHUNK]
        sc = np.asarray(scores[start : start + _CHUNK], dtype=np.float64)
        valid = c >= 0
        reach = valid & (sc >= thresholds[np.where(valid, c, 0)])
        best = np.where(reach, sc, -np.inf).max(axis=1, initial=-np.inf)
        # Ties go to the lowest class index, as a dense argmax would.
        tied = reach & (sc == best[:, None])
        pick = np.where(tied, c, n_classes).min(axis=1, initial=n_classes)
        confident[start : start + _CHUNK] = np.where(pick < n_classes, pick, -1)

    has = confident >= 0
    cell, cell_count = np.unique(labels[has] * n_classes + confident[has], return_counts=True)
    joint = np.stack([cell // n_classes, cell % n_classes, cell_count], axis=1).astype(np.int64)
    joint = joint.reshape(-1, 3)
    row_sums = np.bincount(labels[has], minlength=n_classes)
    diag = np.bincount(labels[has & (confident == labels)], minlength=n_classes)
    share = np.divide(row_sums - diag, row_sums, out=np.zeros(n_classes), where=row_sums > 0)
    n_wrong = np.rint(share * counts).astype(np.int64)

    # Within each class, rows by their own score (ties by position): the first n_c go.
    order = np.lexsort((own, labels))
    start_of = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(n) - start_of[labels[order]]
    flagged = np.zeros(n, dtype=bool)
    flagged[order[rank < n_wrong[labels[order]]]] = True
    noise_rate = np.divide(n_wrong, counts, out=np.zeros(n_classes), where=counts > 0)
    return Flags(
        flagged=flagged,
        confident_class=confident,
        thresholds=thresholds,
        noise_rate=noise_rate,
        joint=joint,
    )


#: Rows per chunk when comparing candidates with thresholds: bounds the temporaries.
_CHUNK = 65_536
