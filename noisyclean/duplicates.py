"""Near-duplicate groups, from the neighbour search Phase 1 has already run.

Phase 1 (``noisyclean.confidence``) finds every usable row's ``k`` nearest train rows by
cosine similarity of its unit-length backbone features: each train row among the other
train rows (leave-one-out), each test row among the train rows. Those (N, k) neighbour
positions and similarities are all this module reads, so duplicates cost no second
search.

**Definition.** A listed pair (one row among the other's ``k`` nearest neighbours) is
*checked* when its cosine is at least ``candidates`` and both images could be read
again: it is a near-duplicate pair when its pixel match (:func:`pixel_matches`,
``noisyclean.pixel_match``: one image against crops of the other, mirrored back where
that fits better) is at least ``match_threshold``. A listed pair that was not checked
is one when its cosine is at least ``threshold``; and rows whose files are
byte-identical (same content key, where the caller gives keys) always are. A *group*
is a connected component of that relation; a row with no such pair is in no group.
Groups are numbered 0, 1, … in the order of their smallest row position, which is also
the group's *first member*: the same inputs always give the same groups.

**Kinds** (each a boolean per group; a group may be several):

- ``conflict``: its members carry two or more distinct labels. Copies of one image
  have one true class, so at least one of those labels is wrong whatever any model
  thinks: these rows join the suspects (``Duplicates.in_conflict``).
- ``leak``: it holds a test row and a train row, so the test row is a near-copy of
  something trained on and its score overstates how well the model generalises.
- ``exact``: two of its members are byte-identical files (same content key).

``kind``, one word per group, names the first of ``conflict`` > ``leak`` > ``exact``
that applies, else ``near``: the most urgent thing to do about the group (fix a label,
then fix the split, then drop a redundant copy). The three booleans are kept beside it,
so nothing is lost when a group is several kinds, and each filters in pandas without
parsing (``df[df.leak]``); the one word is for display and ``groupby``.

**What can be found.** Only pairs present in the neighbour lists (and byte-identical
pairs, found exhaustively by sorting the content keys):

- train–train pairs and test–train pairs where one row is among the other's ``k``
  nearest train rows;
- never test–test pairs found by similarity: test rows are only searched against the
  train rows (byte-identical test rows are found when content keys are given);
- a set of more than ``k + 1`` near-identical copies may not be found whole: each copy
  lists only ``k`` of the others, and a copy whose ``k`` slots are all taken by copies
  of something even closer can fall out, or a group can split into several. Ties among
  exact copies make this depend on the search's order. A larger ``k`` finds more;
- on the approximate (IVF) search path, a pair the search missed is not found.

**Similarity to the first member.** Each member's ``similarity`` is its cosine to the
group's first member: computed exactly from the features where they are given; else
the searched similarity where that pair is in either row's neighbour list (``measured``
true), else a lower bound from the lists: the cosine of the shortest path of angles
``arccos(similarity)`` between the two through the group's listed pairs (angles on the
unit sphere obey the triangle inequality, so the true cosine is at least that;
``measured`` false). Byte-identical rows count as similarity 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components, dijkstra

from noisyclean.configs import DUPLICATE_CANDIDATES, DUPLICATE_COSINE, DUPLICATE_THRESHOLD

#: Pixel match at or above which a checked pair is near-duplicates (see ``configs``).
MATCH_THRESHOLD = DUPLICATE_THRESHOLD
#: Cosine at or above which a listed pair is checked (see ``configs``).
CANDIDATE_SIMILARITY = DUPLICATE_CANDIDATES
#: Cosine at or above which an unchecked pair is near-duplicates (see ``configs``).
COSINE_THRESHOLD = DUPLICATE_COSINE
#: Listed pairs at or above this similarity may be byte-identical files (equal bytes give
#: equal features, up to the rounding of the batch they were computed in): only their
#: files are hashed (``exact_candidates``).
EXACT_SIMILARITY = 0.999
#: Group kinds, most urgent first; ``kind`` is the first that applies.
KINDS = ("conflict", "leak", "exact", "near")
#: Member rows whose features are read at a time when the similarities are computed.
_CHUNK_ROWS = 65_536
#: Pairs whose thumbnails are gathered at a time for the pixel check.
_CHUNK_PAIRS = 16_384
#: Smallest angle given to an edge: sparse graphs drop zero weights.
_MIN_ANGLE = 1e-12

#: duplicates.parquet's columns, in order.
SCHEMA = pa.schema(
    [
        ("group", pa.int64()),
        ("id", pa.string()),
        ("similarity", pa.float32()),
        ("label", pa.string()),
        ("kind", pa.string()),
        ("split", pa.string()),
        ("measured", pa.bool_()),
        ("conflict", pa.bool_()),
        ("leak", pa.bool_()),
        ("exact", pa.bool_()),
    ]
)


@dataclass(frozen=True)
class Duplicates:
    """Near-duplicate groups of N rows, as arrays (G groups, M member rows in all).

    Attributes:
        group: (N,) int64, each row's group, -1 for rows in none.
        similarity: (N,) float32, cosine to the group's first member (1 for the first
            member itself); NaN outside groups. See the module's docstring.
        measured: (N,) bool, ``similarity`` is the pair's own cosine rather than a lower
            bound through other members; false outside groups.
        members: (M,) int64 row positions of all members, by group, then by row position
            (so each group's first member comes first).
        first: (G,) int64, each group's first member (its smallest row position).
        size: (G,) int64, members per group (at least 2).
        conflict: (G,) bool, the members carry two or more distinct labels.
        leak: (G,) bool, the group holds a test row and a train row.
        exact: (G,) bool, two members have the same content key.
        labels: (N,) the class index of each row, as given.
        is_test: (N,) bool, test rows.
        threshold: the cosine at or above which an unchecked pair counted.
        match_threshold: the pixel match at or above which a checked pair counted
            (None: no pair was checked).
        candidates: the cosine at or above which a checked pair could count.
    """

    group: np.ndarray
    similarity: np.ndarray
    measured: np.ndarray
    members: np.ndarray
    first: np.ndarray
    size: np.ndarray
    conflict: np.ndarray
    leak: np.ndarray
    exact: np.ndarray
    labels: np.ndarray
    is_test: np.ndarray
    threshold: float
    match_threshold: float | None = None
    candidates: float | None = None

    @property
    def n_groups(self) -> int:
        """G, the number of groups."""
        return len(self.first)

    @property
    def kind_codes(self) -> np.ndarray:
        """(G,) int8 index into ``KINDS`` of each group's kind (its most urgent one)."""
        code = np.full(self.n_groups, KINDS.index("near"), dtype=np.int8)
        for i, flags in reversed(list(enumerate((self.conflict, self.leak, self.exact)))):
            code[flags] = i
        return code

    @property
    def kind(self) -> np.ndarray:
        """(G,) each group's kind as a string (see ``KINDS``)."""
        return np.array(KINDS, dtype=object)[self.kind_codes]

    @property
    def in_conflict(self) -> np.ndarray:
        """(N,) bool, the row is in a ``conflict`` group: a label error to review."""
        out = np.zeros(len(self.group), dtype=bool)
        grouped = self.group >= 0
        out[grouped] = self.conflict[self.group[grouped]]
        return out

    def table(self, ids: pa.Array | pa.ChunkedArray, label_names: list[str]) -> pa.Table:
        """duplicates.parquet: one row per member, by group, first member first.

        Columns as in ``SCHEMA``: ``group``, ``id``, ``similarity`` (to the first
        member), ``label`` (given), ``kind`` (``KINDS``), ``split`` (``train`` or
        ``test``), ``measured``, and the group's ``conflict``, ``leak`` and ``exact``
        flags. Built from the arrays with pyarrow: no Python object per value.

        Args:
            ids: the N row ids.
            label_names: class names, indexed by ``labels``.
        """
        if isinstance(ids, pa.ChunkedArray):
            ids = ids.combine_chunks()
        rows = self.members
        groups = self.group[rows]

        def coded(codes: np.ndarray, names: list[str] | tuple[str, ...]) -> pa.Array:
            index = pa.array(np.asarray(codes, dtype=np.int32), type=pa.int32())
            dictionary = pa.array(list(names), type=pa.string())
            return pa.DictionaryArray.from_arrays(index, dictionary).cast(pa.string())

        columns = [
            pa.array(groups.astype(np.int64), type=pa.int64()),
            ids.take(pa.array(rows, type=pa.int64())).cast(pa.string()),
            pa.array(self.similarity[rows].astype(np.float32), type=pa.float32()),
            coded(self.labels[rows], label_names),
            coded(self.kind_codes[groups], KINDS),
            coded(self.is_test[rows].astype(np.int32), ("train", "test")),
            pa.array(self.measured[rows], type=pa.bool_()),
            pa.array(self.conflict[groups], type=pa.bool_()),
            pa.array(self.leak[groups], type=pa.bool_()),
            pa.array(self.exact[groups], type=pa.bool_()),
        ]
        return pa.Table.from_arrays(columns, schema=SCHEMA)


def pool_to_rows(neighbours: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """Neighbour positions into a searched pool (e.g. the train rows) as row positions.

    Args:
        neighbours: (Q, k) positions into ``pool``; -1 pads.
        pool: (P,) the row position of each pooled row.

    Returns:
        (Q, k) int64 row positions; -1 pads kept.
    """
    nb = np.asarray(neighbours)
    pool = np.asarray(pool, dtype=np.int64)
    if len(pool) == 0:
        return np.full(nb.shape, -1, dtype=np.int64)
    return np.where(nb >= 0, pool[np.maximum(nb, 0)], -1).astype(np.int64)


def exact_candidates(
    neighbours: np.ndarray,
    similarities: np.ndarray,
    usable: np.ndarray,
    *,
    minimum: float = EXACT_SIMILARITY,
) -> np.ndarray:
    """Row positions in a listed pair with a similarity of at least ``minimum``, sorted.

    At the default, the rows that may have a byte-identical copy: hashing only their
    files gives ``find_duplicates`` its content keys without reading every image again.
    At ``CANDIDATE_SIMILARITY``, the rows whose images the pixel check needs
    (:func:`pixel_matches`)."""
    usable = np.asarray(usable, dtype=bool)
    a, b, _ = _listed_pairs(
        np.asarray(neighbours), np.asarray(similarities), usable, minimum=minimum
    )
    return np.unique(np.r_[a, b])


def pixel_matches(
    neighbours: np.ndarray,
    similarities: np.ndarray,
    usable: np.ndarray,
    rows: np.ndarray,
    thumbnails: np.ndarray,
    *,
    minimum: float = CANDIDATE_SIMILARITY,
    device: str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """The pixel match (``noisyclean.pixel_match``) of every listed pair at a cosine of
    at least ``minimum`` whose two rows have thumbnails; each unordered pair is
    compared once.

    Args:
        neighbours, similarities, usable: as for :func:`find_duplicates`.
        rows: (R,) sorted row positions that have a thumbnail (an image that could not
            be read again has none: its pairs stay unchecked).
        thumbnails: (R, SIDE, SIDE) uint8, ``rows``' thumbnails, in that order.
        minimum: the cosine at which a listed pair is checked.
        device: where the comparison runs (``cpu``, ``cuda``).
        progress: called with (pairs done, pairs).

    Returns:
        (N, k) float32 ``matches`` for :func:`find_duplicates`: NaN where unchecked.
    """
    from noisyclean.pixel_match import match  # torch: only where pairs are checked

    nb = np.asarray(neighbours)
    sims = np.asarray(similarities)
    rows = np.asarray(rows, dtype=np.int64)
    out = np.full(nb.shape, np.nan, dtype=np.float32)
    has = np.zeros(len(nb), dtype=bool)
    has[rows] = True
    keep = (nb >= 0) & (sims >= minimum) & np.asarray(usable, dtype=bool)[:, None]
    q, slot = np.nonzero(keep)
    other = nb[q, slot].astype(np.int64)
    ok = has[q] & has[other] & (other != q)
    q, slot, other = q[ok], slot[ok], other[ok]
    if not len(q):
        return out
    lo, hi = np.minimum(q, other), np.maximum(q, other)
    pair_key, inverse = np.unique(lo * len(nb) + hi, return_inverse=True)
    plo, phi = pair_key // len(nb), pair_key % len(nb)
    ia, ib = np.searchsorted(rows, plo), np.searchsorted(rows, phi)
    scores = np.empty(len(pair_key), dtype=np.float32)
    if progress:
        progress(0, len(scores))
    for start in range(0, len(scores), _CHUNK_PAIRS):  # thumbnails gathered a chunk at a time
        stop = min(start + _CHUNK_PAIRS, len(scores))
        scores[start:stop] = match(
            thumbnails[ia[start:stop]], thumbnails[ib[start:stop]], device=device
        )
        if progress:
            progress(stop, len(scores))
    out[q, slot] = scores[inverse]
    return out


def find_duplicates(
    neighbours: np.ndarray,
    similarities: np.ndarray,
    labels: np.ndarray,
    is_test: np.ndarray,
    usable: np.ndarray,
    *,
    threshold: float = COSINE_THRESHOLD,
    matches: np.ndarray | None = None,
    match_threshold: float = MATCH_THRESHOLD,
    candidates: float = CANDIDATE_SIMILARITY,
    content_keys: np.ndarray | None = None,
    features: np.ndarray | None = None,
) -> Duplicates:
    """Groups of near-duplicate rows from a k-NN search's results.

    Vectorised throughout (one sparse graph, ``connected_components``; the similarities
    to the first members by one multi-source ``dijkstra`` or a chunked dot product),
    so a million rows with k = 10 take seconds.

    Args:
        neighbours: (N, k) int row positions of each row's nearest neighbours, -1 pads
            (Phase 1's search, in row positions: see :func:`pool_to_rows`).
        similarities: (N, k) float cosine similarity of each listed pair (``-inf`` or
            NaN pads are ignored).
        labels: (N,) int class index of each row.
        is_test: (N,) bool, test rows.
        usable: (N,) bool; rows that are not (missing, unreadable) are in no pair.
        threshold: unchecked pairs (no finite ``matches`` entry) at or above this
            cosine are near-duplicates.
        matches: (N, k) float pixel match of each listed pair (:func:`pixel_matches`),
            NaN where the pair was not checked; None: no pair was.
        match_threshold: checked pairs whose match is at least this, and whose cosine
            is at least ``candidates``, are near-duplicates; a checked pair below it is
            not, whatever its cosine.
        candidates: see ``match_threshold``.
        content_keys: (N,) or (N, 2) uint64 hash of each row's file bytes; rows with
            equal keys are byte-identical copies (``exact``), whatever their listed
            similarity. None: no ``exact`` groups.
        features: (N, D) the rows' features (any float dtype, may be a memory map); when
            given, each member's similarity to its group's first member is computed
            from them exactly (on unit-length rows, as the search did).

    Returns:
        The groups (see the module's docstring for what can be found).

    Raises:
        ValueError: shapes that don't fit together, a neighbour position out of range,
            or a threshold outside [-1, 1].
    """
    nb = np.asarray(neighbours)
    sims = np.asarray(similarities)
    labels = np.asarray(labels)
    is_test = np.asarray(is_test, dtype=bool)
    usable = np.asarray(usable, dtype=bool)
    n = len(labels)
    if nb.ndim != 2 or sims.shape != nb.shape or len(nb) != n:
        raise ValueError(
            f"need (N, k) neighbours and similarities for N = {n} labels, "
            f"got {nb.shape} and {sims.shape}"
        )
    if is_test.shape != (n,) or usable.shape != (n,):
        raise ValueError(f"is_test and usable must be ({n},), got {is_test.shape}, {usable.shape}")
    if not np.issubdtype(nb.dtype, np.integer):
        raise ValueError(f"neighbours must be integer row positions, got {nb.dtype}")
    if nb.size and int(nb.max()) >= n:
        raise ValueError(f"neighbour position {int(nb.max())} out of range for {n} rows")
    if not -1.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in [-1, 1], got {threshold}")
    if features is not None and (features.ndim != 2 or len(features) != n):
        raise ValueError(f"features must be (N, D) with N = {n}, got {features.shape}")
    if matches is not None and np.shape(matches) != nb.shape:
        raise ValueError(f"matches must be (N, k) as neighbours, got {np.shape(matches)}")

    # Near-duplicate pairs (checked ones by their match, the rest by cosine), and
    # byte-identical pairs.
    if matches is None:
        a, b, _ = _listed_pairs(nb, sims, usable, minimum=float(threshold))
    else:
        m = np.asarray(matches, dtype=np.float32)
        checked = np.isfinite(m)
        near = np.where(
            checked,
            (sims >= candidates) & (m >= match_threshold),
            sims >= threshold,
        )
        a, b, _ = _listed_pairs(nb, np.where(near, sims, -np.inf), usable)
    ea, eb = _equal_key_pairs(content_keys, usable, n)
    graph = coo_matrix(
        (np.ones(len(a) + len(ea), dtype=np.float32), (np.r_[a, ea], np.r_[b, eb])), shape=(n, n)
    ).tocsr()
    n_comp, comp = connected_components(graph, directed=False)
    del graph

    # Groups: components of two or more rows, numbered by their smallest row.
    comp_size = np.bincount(comp, minlength=n_comp)
    _, comp_first = np.unique(comp, return_index=True)  # rows run 0..N-1: the smallest
    kept = np.flatnonzero(comp_size >= 2)
    kept = kept[np.argsort(comp_first[kept], kind="stable")]
    comp_to_group = np.full(n_comp, -1, dtype=np.int64)
    comp_to_group[kept] = np.arange(len(kept))
    group = comp_to_group[comp]
    in_group = np.flatnonzero(group >= 0)
    members = in_group[np.argsort(group[in_group], kind="stable")]
    size = np.bincount(group[members], minlength=len(kept)).astype(np.int64)
    starts = np.zeros(len(kept), dtype=np.int64)
    np.cumsum(size[:-1], out=starts[1:])
    first = members[starts]

    # Kinds.
    if len(kept):
        member_labels = labels[members]
        conflict = np.minimum.reduceat(member_labels, starts) != np.maximum.reduceat(
            member_labels, starts
        )
        n_test = np.add.reduceat(is_test[members].astype(np.int64), starts)
        leak = (n_test > 0) & (n_test < size)
    else:
        conflict = np.zeros(0, dtype=bool)
        leak = np.zeros(0, dtype=bool)
    exact = np.zeros(len(kept), dtype=bool)
    exact[group[ea]] = True

    # Similarity to the first member.
    similarity = np.full(n, np.nan, dtype=np.float32)
    measured = np.zeros(n, dtype=bool)
    if features is not None:
        similarity[members] = _cosines(features, members, first[group[members]])
        measured[members] = True
    elif len(members):
        _path_similarities(nb, sims, usable, group, members, first, ea, eb, similarity, measured)

    return Duplicates(
        group=group,
        similarity=similarity,
        measured=measured,
        members=members,
        first=first,
        size=size,
        conflict=conflict,
        leak=leak,
        exact=exact,
        labels=labels,
        is_test=is_test,
        threshold=float(threshold),
        match_threshold=None if matches is None else float(match_threshold),
        candidates=None if matches is None else float(candidates),
    )


def _listed_pairs(
    nb: np.ndarray,
    sims: np.ndarray,
    usable: np.ndarray,
    *,
    minimum: float | None = None,
    rows_mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The listed pairs (query row, neighbour row, similarity) between two different
    usable rows, with a finite similarity of at least ``minimum``, from the query rows
    in ``rows_mask`` (default all)."""
    keep = nb >= 0
    keep &= np.isfinite(sims) if minimum is None else sims >= minimum
    keep &= usable[:, None]
    if rows_mask is not None:
        keep &= rows_mask[:, None]
    rows, cols = np.nonzero(keep)
    other = nb[rows, cols].astype(np.int64)
    ok = usable[other] & (other != rows)
    return rows[ok].astype(np.int64), other[ok], sims[rows[ok], cols[ok]].astype(np.float64)


def _equal_key_pairs(
    keys: np.ndarray | None, usable: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of usable rows with equal content keys: each row with the next one of the
    same key in key order (a chain, which connects all of them)."""
    empty = np.zeros(0, dtype=np.int64)
    if keys is None:
        return empty, empty
    k = np.asarray(keys)
    if k.ndim == 1:
        k = k[:, None]
    if k.ndim != 2 or len(k) != n:
        raise ValueError(f"content_keys must be (N,) or (N, 2) with N = {n}, got {k.shape}")
    rows = np.flatnonzero(usable)
    k = k[rows]
    order = np.lexsort(tuple(k[:, j] for j in reversed(range(k.shape[1]))))
    k = k[order]
    same = np.all(k[1:] == k[:-1], axis=1)
    return rows[order[:-1][same]], rows[order[1:][same]]


def _cosines(features: np.ndarray, rows: np.ndarray, others: np.ndarray) -> np.ndarray:
    """(M,) float32 cosine of each row's features with its ``others`` row's, in chunks."""
    out = np.empty(len(rows), dtype=np.float32)
    for start in range(0, len(rows), _CHUNK_ROWS):
        stop = min(start + _CHUNK_ROWS, len(rows))
        x = np.asarray(features[rows[start:stop]], dtype=np.float64)
        y = np.asarray(features[others[start:stop]], dtype=np.float64)
        dot = np.einsum("nd,nd->n", x, y)
        norms = np.sqrt(np.einsum("nd,nd->n", x, x) * np.einsum("nd,nd->n", y, y))
        out[start:stop] = np.clip(dot / np.maximum(norms, 1e-24), -1.0, 1.0)
    return out


def _path_similarities(
    nb: np.ndarray,
    sims: np.ndarray,
    usable: np.ndarray,
    group: np.ndarray,
    members: np.ndarray,
    first: np.ndarray,
    ea: np.ndarray,
    eb: np.ndarray,
    similarity: np.ndarray,
    measured: np.ndarray,
) -> None:
    """Fill ``similarity`` and ``measured`` of the members from the listed pairs.

    Every listed pair inside a group counts, below the threshold too: the pair with the
    first member where listed (exact), else the shortest path of angles to it through
    the group's pairs (a lower bound on the cosine).
    """
    n = len(group)
    a, b, s = _listed_pairs(nb, sims, usable, rows_mask=group >= 0)
    same = group[a] == group[b]
    a, b, s = np.r_[a[same], ea], np.r_[b[same], eb], np.r_[s[same], np.ones(len(ea))]
    # One entry per unordered pair, the highest similarity listed for it.
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    key = lo * n + hi
    order = np.lexsort((-s, key))
    key, lo, hi, s = key[order], lo[order], hi[order], s[order]
    one = np.r_[True, key[1:] != key[:-1]]
    key, lo, hi, s = key[one], lo[one], hi[one], np.clip(s[one], -1.0, 1.0)

    # Members whose pair with the first member is listed.
    root = first[group[members]]
    want = np.minimum(root, members) * n + np.maximum(root, members)
    at = np.minimum(np.searchsorted(key, want), max(len(key) - 1, 0))
    direct = (key[at] == want) if len(key) else np.zeros(len(members), dtype=bool)
    is_root = members == root
    sim = np.where(direct, s[at] if len(key) else 0.0, np.nan)
    sim[is_root] = 1.0
    found = direct | is_root

    if not found.all():
        # Shortest angular paths from every group's first member at once, over the
        # members only (local positions 0..M-1).
        local = np.full(n, -1, dtype=np.int64)
        local[members] = np.arange(len(members))
        angle = np.maximum(np.arccos(s), _MIN_ANGLE)
        m = len(members)
        graph = coo_matrix((angle, (local[lo], local[hi])), shape=(m, m)).tocsr()
        dist = dijkstra(graph, directed=False, indices=local[first], min_only=True)
        bound = np.cos(np.minimum(dist, np.pi))
        sim = np.where(found, sim, bound)
    similarity[members] = sim.astype(np.float32)
    measured[members] = found
