"""Detection and retrieval metrics (each checked against scikit-learn in the tests)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` ranking ``positive`` rows first (ties count half).

    Returns NaN when either class is absent.
    """
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = pd.Series(np.asarray(scores, dtype=np.float64)).rank(method="average").to_numpy()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """Average precision, as scikit-learn's ``average_precision_score`` computes it."""
    positive = np.asarray(positive, dtype=bool)
    if not positive.any():
        return float("nan")
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")
    s, p = np.asarray(scores)[order], positive[order]
    tps = np.cumsum(p)
    # Tied scores form one threshold: keep only the last position of each run.
    last = np.r_[s[1:] != s[:-1], True]
    tp, seen = tps[last], np.flatnonzero(last) + 1
    precision, recall = tp / seen, tp / p.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def precision_at_n(scores: np.ndarray, positive: np.ndarray, n: int | None = None) -> float:
    """Share of positives among the ``n`` top-scored rows (default n = number of positives)."""
    positive = np.asarray(positive, dtype=bool)
    n = int(positive.sum()) if n is None else n
    if n == 0:
        return float("nan")
    top = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")[:n]
    return float(positive[top].mean())


def recall_at_k(
    neighbours: np.ndarray, labels: np.ndarray, ks: tuple[int, ...] = (1, 2, 4, 8)
) -> dict[int, float]:
    """Recall@K of retrieval: share of queries with a same-label row among their K nearest.

    Args:
        neighbours: (N, >= max(ks)) indices into ``labels`` of each query's nearest
            rows, nearest first, the query itself excluded.
        labels: (N,) class of each row.
    """
    hit = labels[neighbours] == labels[:, None]
    return {k: float(hit[:, :k].any(axis=1).mean()) for k in ks}
