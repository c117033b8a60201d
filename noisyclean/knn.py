"""Cosine k-nearest neighbours with faiss, and class votes over them.

Up to ``EXACT_MAX_ROWS`` indexed rows the search is exact (``IndexFlatIP``). Above
it, an inverted-file index (``IndexIVFFlat``, inner product on unit rows) whose
coarse centroids come from seeded k-means on a seeded sample, so the same data and
seed always give the same index and the same neighbours. Its recall@k against exact
search is measured on a seeded sample of queries and the search is widened (more
lists probed) until it reaches ``RECALL_TARGET``; :class:`SearchInfo` records what
was done.

Memory: inputs are read in chunks of ``CHUNK_ROWS`` rows; each chunk gets its own
unit-length float32 copy, so besides the inputs and the (Q, k) outputs only the faiss
index (one (M, D) float32 copy of the indexed rows) is held in full.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import faiss
import numpy as np

#: Exact search up to this many indexed rows, IVF above (read at call time).
EXACT_MAX_ROWS = 100_000
#: Rows normalised, added or searched at a time (bounds the memory of the copies).
CHUNK_ROWS = 65_536
#: Recall@k of the approximate search against exact search that it must reach.
RECALL_TARGET = 0.95
#: Query rows on which that recall is measured.
RECALL_SAMPLE = 1_000
#: Lists probed first; doubled while the measured recall is too low (each try searches
#: only the recall sample, so starting low costs little and finds the cheapest setting)...
NPROBE_START = 1
#: ...up to at most this many, and never more than a quarter of the lists: past that
#: an IVF scan costs about as much as exact search.
MAX_NPROBE = 256
#: k-means trains on at most this many sampled rows per list.
TRAIN_ROWS_PER_LIST = 64
#: faiss wants at least this many training rows per centroid (fewer lists otherwise).
MIN_TRAIN_ROWS_PER_LIST = 39
#: k-means iterations (coarse centroids need not be optimal, only fixed by the seed).
KMEANS_ITERATIONS = 10
#: Similarity tolerance when matching approximate against exact neighbours.
_RECALL_TOL = 1e-5

Progress = Callable[[str, int, int], None]
"""Called with (stage, done, total); stages are "train", "add" and "search"."""


class RecallWarning(UserWarning):
    """The approximate search stayed below the recall target at its widest setting."""


class Rows:
    """Some rows of a matrix, as a (R, D) array-like that copies only what is read from
    it: the search reads its inputs in chunks, so the train rows of a million-row
    feature matrix can be searched without a copy of them.

    Args:
        matrix: (N, D) rows.
        rows: (R,) positions of the rows to present, in order.
    """

    ndim = 2

    def __init__(self, matrix: np.ndarray, rows: np.ndarray) -> None:
        self.matrix = matrix
        self.rows = np.asarray(rows)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.rows), int(self.matrix.shape[1]))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: slice | np.ndarray) -> np.ndarray:
        return np.asarray(self.matrix[self.rows[key]])


#: What the search reads rows from: an array, or some rows of one.
Matrix = np.ndarray | Rows


@dataclass(frozen=True)
class SearchInfo:
    """How a neighbour search was done, for output metadata.

    Attributes:
        method: "exact" (``IndexFlatIP``) or "ivf" (``IndexIVFFlat``).
        nlist: inverted lists of the IVF index (0 for exact search).
        nprobe: lists probed per query (0 for exact search).
        recall: recall@k of the IVF search against exact search, measured on
            ``sample`` query rows; None for exact search.
        sample: query rows on which the recall was measured (0 for exact search).
    """

    method: str
    nlist: int
    nprobe: int
    recall: float | None
    sample: int


def _exact_limit() -> int:
    """``EXACT_MAX_ROWS``, or ``$NOISYCLEAN_EXACT_MAX_ROWS`` where set: the benchmark
    compares the approximate path with a run forced to exact search through it."""
    text = os.environ.get("NOISYCLEAN_EXACT_MAX_ROWS", "").strip()
    return int(text) if text.isdigit() else EXACT_MAX_ROWS


def normalize(x: np.ndarray) -> np.ndarray:
    """Shape (N, D) float32 rows scaled to unit length (zero rows stay zero); a new array."""
    return _unit(x, owned=False)


def _unit(x: np.ndarray, *, owned: bool) -> np.ndarray:
    """(N, D) rows scaled to unit length as C-contiguous float32.

    Scaled in place when ``owned`` (the caller's own copy, e.g. from fancy indexing)
    and already C-contiguous float32, else in one new copy; no (N, D) temporaries.
    """
    if owned:
        x = np.ascontiguousarray(x, dtype=np.float32)
    else:
        x = np.array(x, dtype=np.float32, order="C")
    norms = np.sqrt(np.einsum("nd,nd->n", x, x))
    x /= np.maximum(norms, 1e-12)[:, None]
    return x


def choose_nlist(n_rows: int) -> int:
    """Inverted lists for an IVF index over ``n_rows`` rows.

    About 4·sqrt(M), as a power of two in [16, 65536]. A query compares with nlist
    centroids and scans nprobe lists of about M/nlist = sqrt(M)/4 rows: about
    sqrt(M)·(4 + nprobe/4) dot products against M for exact search (1.6% of it at
    100k rows and nprobe 4), so small lists let nprobe be tuned finely while the
    centroids stay cheap; more lists would make k-means (which costs about
    ``TRAIN_ROWS_PER_LIST``·nlist² per iteration) dear. Halved while k-means would
    get fewer than ``MIN_TRAIN_ROWS_PER_LIST`` rows per list. E.g. 3,000 rows: 64;
    100k rows: 1024; 1M rows: 4096.
    """
    nlist = 2 ** round(math.log2(max(4.0 * math.sqrt(max(n_rows, 1)), 1.0)))
    nlist = min(max(nlist, 16), 65_536)
    while nlist > 1 and nlist * MIN_TRAIN_ROWS_PER_LIST > n_rows:
        nlist //= 2
    return nlist


def search(
    index_vectors: Matrix,
    query_vectors: Matrix,
    *,
    k: int,
    exclude_self: bool = False,
    seed: int = 0,
    exact_max_rows: int | None = None,
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest indexed rows of each query row by cosine similarity.

    :func:`search_with_info` without the :class:`SearchInfo`; see it for the arguments.

    Returns:
        ``(similarities, indices)``, each (Q, k), nearest first; indices point into
        ``index_vectors``; ``-1`` (similarity ``-inf``) pads when there are fewer
        than ``k`` candidates.
    """
    sims, idx, _ = search_with_info(
        index_vectors,
        query_vectors,
        k=k,
        exclude_self=exclude_self,
        seed=seed,
        exact_max_rows=exact_max_rows,
        progress=progress,
    )
    return sims, idx


def search_with_info(
    index_vectors: Matrix,
    query_vectors: Matrix,
    *,
    k: int,
    exclude_self: bool = False,
    seed: int = 0,
    exact_max_rows: int | None = None,
    nprobe: int | None = None,
    max_nprobe: int | None = None,
    recall_target: float = RECALL_TARGET,
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray, SearchInfo]:
    """The ``k`` nearest indexed rows of each query row by cosine similarity.

    Exact up to ``exact_max_rows`` indexed rows; above, IVF with a recall@k against
    exact search of at least ``recall_target`` as measured on ``RECALL_SAMPLE``
    seeded query rows, less two standard errors (a :class:`RecallWarning` when it
    cannot be reached; lists probed are doubled from ``nprobe`` until it is). Recall
    counts a returned neighbour as right when it is at least as similar as the k-th
    exact one, so ties (exact duplicates) don't count as misses. Deterministic: the
    same inputs and seed give identical outputs (faiss threads are left as they are).

    Args:
        index_vectors: (M, D) rows to search among (any float dtype; not copied in
            full, so a memory map works).
        query_vectors: (Q, D) rows to search for.
        k: neighbours per query (``-1`` pads beyond the number of candidates).
        exclude_self: the queries are the indexed rows themselves, in the same order
            (Q == M); a row is never its own neighbour (leave-one-out).
        seed: seeds the k-means training sample, k-means and the recall sample.
        exact_max_rows: exact search up to this many indexed rows (default: the
            module's ``EXACT_MAX_ROWS`` at call time).
        nprobe: lists probed first on the IVF path (default ``NPROBE_START``).
        max_nprobe: widest setting tried (default ``min(MAX_NPROBE, nlist // 4)``,
            at least ``nprobe``).
        recall_target: recall@k the IVF search must reach, in (0, 1].
        progress: called with (stage, done, total) as the index is trained ("train",
            0/1 then 1/1), rows are added ("add", rows of M) and queries searched
            ("search", rows of Q).

    Returns:
        ``(similarities, indices, info)``: (Q, k) float32 and (Q, k) int64, nearest
        first, indices into ``index_vectors``, ``-1`` (similarity ``-inf``) padding;
        and how the search was done.
    """
    xb, xq = index_vectors, query_vectors
    if xb.ndim != 2 or xq.ndim != 2 or xb.shape[1] != xq.shape[1]:
        raise ValueError(f"need (M, D) and (Q, D) arrays, got {xb.shape} and {xq.shape}")
    if exclude_self and len(xb) != len(xq):
        raise ValueError("exclude_self needs the queries to be the indexed rows")
    if not 0.0 < recall_target <= 1.0:
        raise ValueError(f"recall_target must be in (0, 1], got {recall_target}")
    limit = _exact_limit() if exact_max_rows is None else exact_max_rows
    m, d = xb.shape
    k_eff = min(k + int(exclude_self), m)  # one more when the row itself may be found
    out_s = np.full((len(xq), k), -np.inf, dtype=np.float32)
    out_i = np.full((len(xq), k), -1, dtype=np.int64)
    if k_eff <= 0 or len(xq) == 0:
        info = SearchInfo("exact" if m <= limit else "ivf", 0, 0, None, 0)
        return out_s, out_i, info

    if m <= limit:
        index: faiss.Index = faiss.IndexFlatIP(d)
        _add(index, xb, progress=progress)
        info = SearchInfo(method="exact", nlist=0, nprobe=0, recall=None, sample=0)
    else:
        index, info = _build_ivf(
            xb,
            xq,
            k=k,
            exclude_self=exclude_self,
            seed=seed,
            nprobe=nprobe,
            max_nprobe=max_nprobe,
            recall_target=recall_target,
            progress=progress,
        )

    chunk = CHUNK_ROWS
    if progress is not None:
        progress("search", 0, len(xq))
    for start in range(0, len(xq), chunk):
        stop = min(start + chunk, len(xq))
        sims, idx = _search_rows(index, _unit(xq[start:stop], owned=False), k_eff)
        rows = np.arange(start, stop) if exclude_self else None
        sims, idx = _cut(sims, idx, rows=rows, k=k)
        out_s[start:stop, : sims.shape[1]] = sims
        out_i[start:stop, : idx.shape[1]] = idx
        if progress is not None:
            progress("search", stop, len(xq))
    return out_s, out_i, info


def _add(
    index: faiss.Index,
    xb: Matrix,
    *,
    progress: Progress | None,
    on_chunk: Callable[[int, np.ndarray], None] | None = None,
) -> None:
    """Add (M, D) rows to ``index`` as unit rows, a chunk at a time.

    ``on_chunk(start, unit_rows)`` sees each normalised chunk too.
    """
    chunk = CHUNK_ROWS
    if progress is not None:
        progress("add", 0, len(xb))
    for start in range(0, len(xb), chunk):
        stop = min(start + chunk, len(xb))
        unit = _unit(xb[start:stop], owned=False)
        index.add(unit)
        if on_chunk is not None:
            on_chunk(start, unit)
        if progress is not None:
            progress("add", stop, len(xb))


def _search_rows(index: faiss.Index, unit: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, k) similarities and indices of unit rows; ``-inf`` where the index is -1."""
    sims, idx = index.search(unit, k)
    sims[idx < 0] = -np.inf  # faiss pads inner products with -FLT_MAX
    return sims, idx


def _cut(
    sims: np.ndarray, idx: np.ndarray, *, rows: np.ndarray | None, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` of (n, k') results, nearest first, without each query's own row.

    Args:
        sims: (n, k') similarities, nearest first.
        idx: (n, k') indices.
        rows: (n,) each query's own index row, or None to keep every row.
        k: columns wanted (at most; fewer when k' is smaller).
    """
    if rows is not None:
        # Drop the row itself; with exact duplicates it may sit anywhere in the list,
        # and an approximate search may miss it: move it last (a stable sort keeps the
        # others in order) and cut the last column off either way.
        order = np.argsort(idx == rows[:, None], axis=1, kind="stable")
        sims = np.take_along_axis(sims, order, axis=1)[:, : idx.shape[1] - 1]
        idx = np.take_along_axis(idx, order, axis=1)[:, : idx.shape[1] - 1]
    return sims[:, :k], idx[:, :k]


def _build_ivf(
    xb: Matrix,
    xq: Matrix,
    *,
    k: int,
    exclude_self: bool,
    seed: int,
    nprobe: int | None,
    max_nprobe: int | None,
    recall_target: float,
    progress: Progress | None,
) -> tuple[faiss.IndexIVFFlat, SearchInfo]:
    """An IVF index over (M, D) rows, its nprobe set so that recall@k reaches the target.

    Exact neighbours of the recall sample are found while the rows are added, from the
    same normalised chunks.
    """
    m, d = xb.shape
    rng = np.random.default_rng(seed)
    nlist = choose_nlist(m)
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    index.cp.niter = KMEANS_ITERATIONS
    index.cp.spherical = True  # unit centroids, as the rows are
    index.cp.max_points_per_centroid = TRAIN_ROWS_PER_LIST  # no resampling by faiss
    n_train = min(m, TRAIN_ROWS_PER_LIST * nlist)
    train_rows = np.sort(rng.choice(m, size=n_train, replace=False))
    if progress is not None:
        progress("train", 0, 1)
    index.train(_unit(xb[train_rows], owned=True))
    if progress is not None:
        progress("train", 1, 1)

    # Recall sample: exact top-k' of some query rows over the whole index, chunk by chunk.
    k_eff = min(k + int(exclude_self), m)
    sample = np.sort(rng.choice(len(xq), size=min(len(xq), RECALL_SAMPLE), replace=False))
    q_unit = _unit(xq[sample], owned=True)
    true_s = np.full((len(sample), k_eff), -np.inf, dtype=np.float32)
    true_i = np.full((len(sample), k_eff), -1, dtype=np.int64)

    def merge(start: int, unit: np.ndarray) -> None:
        nonlocal true_s, true_i
        s, i = faiss.knn(q_unit, unit, min(k_eff, len(unit)), metric=faiss.METRIC_INNER_PRODUCT)
        s = np.concatenate([true_s, s], axis=1)
        i = np.concatenate([true_i, np.where(i >= 0, i + start, -1)], axis=1)
        top = np.argsort(-s, axis=1, kind="stable")[:, :k_eff]
        true_s, true_i = np.take_along_axis(s, top, axis=1), np.take_along_axis(i, top, axis=1)

    _add(index, xb, progress=progress, on_chunk=merge)
    rows = sample if exclude_self else None
    true_s, true_i = _cut(true_s, true_i, rows=rows, k=k)
    n_true = (true_i >= 0).sum(axis=1)
    threshold = true_s[np.arange(len(sample)), np.maximum(n_true - 1, 0)] - _RECALL_TOL

    def recall_at(probe: int) -> tuple[float, bool]:
        """Recall@k at ``probe`` lists, and whether it surely reaches the target."""
        index.nprobe = probe
        s, i = _search_rows(index, q_unit, k_eff)
        s, i = _cut(s, i, rows=rows, k=k)
        hits = np.minimum(((i >= 0) & (s >= threshold[:, None])).sum(axis=1), n_true)
        recall = float(hits.sum() / max(n_true.sum(), 1))
        # The sample's recall is an estimate: ask its lower 2-standard-error bound to
        # reach the target, so that recall over all queries does too.
        per_query = hits[n_true > 0] / n_true[n_true > 0]
        error = float(per_query.std() / math.sqrt(len(per_query))) if len(per_query) else 0.0
        return recall, recall - 2.0 * error >= recall_target

    probe = min(max(NPROBE_START if nprobe is None else nprobe, 1), nlist)
    widest = min(MAX_NPROBE, max(nlist // 4, 1)) if max_nprobe is None else max_nprobe
    widest = min(max(widest, probe), nlist)
    recall, reached = recall_at(probe)
    while not reached and probe < widest:
        probe = min(2 * probe, widest)
        recall, reached = recall_at(probe)
    if not reached:
        warnings.warn(
            f"approximate neighbour search: recall@{k} is {recall:.3f} on {len(sample)} "
            f"sampled queries, not surely above the target {recall_target:.3f}, at the widest "
            f"setting tried (nprobe={probe} of nlist={nlist}); going on with it",
            RecallWarning,
            stacklevel=3,
        )
    index.nprobe = probe
    info = SearchInfo(method="ivf", nlist=nlist, nprobe=probe, recall=recall, sample=len(sample))
    return index, info


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
