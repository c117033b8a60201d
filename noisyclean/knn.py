"""Cosine k-nearest neighbours with faiss, and class votes over them.

Exact search (``IndexFlatIP``) up to ``EXACT_MAX_ROWS`` indexed rows, HNSW above.
"""

from __future__ import annotations

import faiss
import numpy as np

EXACT_MAX_ROWS = 100_000


def normalize(x: np.ndarray) -> np.ndarray:
    """Shape (N, D) float32 rows scaled to unit length (zero rows stay zero)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def search(
    index_vectors: np.ndarray,
    query_vectors: np.ndarray,
    *,
    k: int,
    exclude_self: bool = False,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest indexed rows of each query row by cosine similarity.

    Args:
        index_vectors: (M, D) rows to search among.
        query_vectors: (Q, D) rows to search for.
        k: neighbours per query (capped at the number of candidates).
        exclude_self: the queries are the indexed rows themselves, in the same order;
            a row is never its own neighbour (leave-one-out).

    Returns:
        ``(similarities, indices)``, each (Q, k), nearest first; indices point into
        ``index_vectors``; ``-1`` pads when there are fewer than ``k`` candidates.
    """
    xb = normalize(index_vectors)
    xq = normalize(query_vectors)
    k_eff = min(k + int(exclude_self), len(xb))
    if len(xb) <= EXACT_MAX_ROWS:
        index: faiss.Index = faiss.IndexFlatIP(xb.shape[1])
    else:
        index = faiss.IndexHNSWFlat(xb.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = max(64, 2 * k_eff)
        faiss.cvar.rand_seed = seed  # type: ignore[attr-defined]
    index.add(xb)
    sims, idx = index.search(xq, k_eff)
    if exclude_self:
        # Drop the row itself; with exact duplicates it may sit anywhere in the list,
        # so move it last (a stable sort keeps the others in order) and cut it off.
        order = np.argsort(idx == np.arange(len(xq))[:, None], axis=1, kind="stable")
        sims = np.take_along_axis(sims, order, axis=1)[:, : k_eff - 1]
        idx = np.take_along_axis(idx, order, axis=1)[:, : k_eff - 1]
    out_s = np.full((len(xq), k), -np.inf, dtype=np.float32)
    out_i = np.full((len(xq), k), -1, dtype=np.int64)
    out_s[:, : sims.shape[1]] = sims[:, :k]
    out_i[:, : idx.shape[1]] = idx[:, :k]
    return out_s, out_i


def vote(
    neighbours: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    *,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Each row's share of neighbour votes per class.

    Args:
        neighbours: (Q, k) indices into ``labels``; ``-1`` entries don't vote.
        labels: (M,) class index of each indexed row.
        n_classes: K.
        weights: (M,) weight of each indexed row's vote (default 1).

    Returns:
        (Q, K) shares that sum to 1 for every row with any vote, else 0.
    """
    valid = neighbours >= 0
    safe = np.where(valid, neighbours, 0)
    w = np.ones(len(labels), dtype=np.float64) if weights is None else weights.astype(np.float64)
    vw = np.where(valid, w[safe], 0.0)
    counts = np.zeros((len(neighbours), n_classes), dtype=np.float64)
    rows = np.repeat(np.arange(len(neighbours)), neighbours.shape[1])
    np.add.at(counts, (rows, labels[safe].ravel()), vw.ravel())
    total = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, total, out=np.zeros_like(counts), where=total > 0).astype(np.float32)
