"""Near-duplicate groups on small constructed neighbour lists whose pairs are known."""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pytest

from noisyclean.duplicates import (
    CANDIDATE_SIMILARITY,
    COSINE_THRESHOLD,
    KINDS,
    MATCH_THRESHOLD,
    SCHEMA,
    Duplicates,
    find_duplicates,
    pixel_matches,
    pool_to_rows,
)

NAMES = ["a", "b", "c"]


def _lists(
    n: int, pairs: list[tuple[int, int, float]], k: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """(n, k) neighbour lists holding ``pairs`` (each listed from its first row only),
    -1 / -inf pads elsewhere."""
    nb = np.full((n, k), -1, dtype=np.int64)
    sims = np.full((n, k), -np.inf, dtype=np.float32)
    used = np.zeros(n, dtype=np.int64)
    for i, j, s in pairs:
        nb[i, used[i]], sims[i, used[i]] = j, s
        used[i] += 1
    return nb, sims


def _find(
    n: int,
    pairs: list[tuple[int, int, float]],
    *,
    labels: np.ndarray | None = None,
    is_test: np.ndarray | None = None,
    usable: np.ndarray | None = None,
    **kw: object,
) -> Duplicates:
    nb, sims = _lists(n, pairs)
    return find_duplicates(
        nb,
        sims,
        np.zeros(n, dtype=np.int64) if labels is None else labels,
        np.zeros(n, dtype=bool) if is_test is None else is_test,
        np.ones(n, dtype=bool) if usable is None else usable,
        **kw,  # type: ignore[arg-type]
    )


def test_components_numbered_by_smallest_row_and_singletons_left_out() -> None:
    # Groups {2, 5, 7} (a chain 7-5, 5-2) and {0, 3}; 1, 4, 6 alone; 6-4 below threshold.
    d = _find(8, [(7, 5, 0.99), (5, 2, 0.97), (3, 0, 0.98), (6, 4, 0.5)], threshold=0.9)
    assert d.group.tolist() == [0, -1, 1, 0, -1, 1, -1, 1]
    assert d.first.tolist() == [0, 2]
    assert d.size.tolist() == [2, 3]
    assert d.members.tolist() == [0, 3, 2, 5, 7]
    assert d.n_groups == 2


def test_threshold_is_inclusive_and_moves_the_groups() -> None:
    pairs = [(1, 0, 0.95), (3, 2, 0.9)]
    assert _find(4, pairs, threshold=0.95).group.tolist() == [0, 0, -1, -1]
    assert _find(4, pairs, threshold=0.9).group.tolist() == [0, 0, 1, 1]
    assert _find(4, pairs, threshold=0.96).n_groups == 0
    assert 0.0 < CANDIDATE_SIMILARITY < COSINE_THRESHOLD <= 1.0 and 0.0 < MATCH_THRESHOLD <= 1.0
    with pytest.raises(ValueError, match="threshold"):
        _find(4, pairs, threshold=1.5)


def test_kinds() -> None:
    labels = np.array([0, 1, 2, 2, 0, 0, 1, 1])
    is_test = np.array([0, 0, 0, 1, 0, 0, 0, 1], dtype=bool)
    keys = np.array([[1, 1], [2, 2], [3, 3], [4, 4], [9, 9], [9, 9], [5, 5], [6, 6]], np.uint64)
    # {0, 1}: labels differ -> conflict. {2, 3}: test row 3 copies train row 2 -> leak.
    # {4, 5}: same bytes -> exact (found by key alone, not listed). {6, 7}: conflict-free
    # test/train -> leak.
    pairs = [(1, 0, 0.99), (3, 2, 0.99), (7, 6, 0.99)]
    d = _find(8, pairs, labels=labels, is_test=is_test, content_keys=keys, threshold=0.9)
    assert d.first.tolist() == [0, 2, 4, 6]
    assert d.conflict.tolist() == [True, False, False, False]
    assert d.leak.tolist() == [False, True, False, True]
    assert d.exact.tolist() == [False, False, True, False]
    assert d.kind.tolist() == ["conflict", "leak", "exact", "leak"]
    assert d.in_conflict.tolist() == [True, True] + [False] * 6
    assert d.similarity[[4, 5]].tolist() == [1.0, 1.0]  # byte-identical: similarity 1


def test_several_kinds_keep_every_flag_and_the_most_urgent_word() -> None:
    # Test row 1 copies train row 0 with another label, byte for byte: all three kinds.
    keys = np.array([7, 7, 8], dtype=np.uint64)
    d = _find(
        3,
        [(1, 0, 1.0)],
        labels=np.array([0, 1, 1]),
        is_test=np.array([False, True, False]),
        content_keys=keys,
    )
    assert (d.conflict[0], d.leak[0], d.exact[0]) == (True, True, True)
    assert d.kind.tolist() == ["conflict"]
    assert KINDS[0] == "conflict" and KINDS[-1] == "near"
    # Without keys nothing is exact; a group with no kind is "near".
    plain = _find(3, [(1, 0, 0.99)], threshold=0.9)
    assert plain.kind.tolist() == ["near"] and not plain.exact.any()


def test_exact_copies_found_by_key_even_when_not_listed_test_with_test() -> None:
    # Rows 1 and 3 are test rows with the same bytes: no listed pair, still a group.
    keys = np.array([1, 5, 2, 5], dtype=np.uint64)
    d = _find(4, [], is_test=np.array([False, True, False, True]), content_keys=keys)
    assert d.group.tolist() == [-1, 0, -1, 0]
    assert d.exact.tolist() == [True] and d.leak.tolist() == [False]


def test_pads_and_unusable_rows_are_ignored() -> None:
    nb = np.array([[1, -1], [0, -1], [0, 1], [-1, -1]], dtype=np.int64)
    sims = np.array([[0.99, -np.inf], [0.99, 0.0], [0.99, 0.99], [np.nan, -np.inf]], np.float32)
    usable = np.array([True, True, False, True])
    keys = np.array([3, 4, 3, 3], dtype=np.uint64)  # row 2's bytes equal 0's and 3's
    d = find_duplicates(
        nb,
        sims,
        np.array([0, 0, 1, 0]),
        np.zeros(4, bool),
        usable,
        threshold=0.9,
        content_keys=keys,
    )
    # Row 2 (unusable) links nothing; 0 and 3 share a key; 0-1 listed both ways.
    assert d.group.tolist() == [0, 0, -1, 0]
    assert not d.conflict[0]  # the unusable row's other label doesn't count
    # A self-pair never makes a group.
    nb_self = np.array([[0], [1]], dtype=np.int64)
    d2 = find_duplicates(
        nb_self, np.ones((2, 1), np.float32), np.zeros(2), np.zeros(2, bool), np.ones(2, bool)
    )
    assert d2.n_groups == 0


def test_similarity_to_first_member_measured_bound_and_from_features() -> None:
    # Unit vectors at angles 0, 0.1, 0.25 rad: pairs 0-1 and 1-2 listed, 0-2 not.
    angles = np.array([0.0, 0.1, 0.25, 2.0])
    x = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    s01, s12 = float(np.cos(0.1)), float(np.cos(0.15))
    d = _find(4, [(1, 0, s01), (2, 1, s12)], threshold=0.95)
    assert d.group.tolist() == [0, 0, 0, -1]
    assert d.measured.tolist() == [True, True, False, False]
    assert d.similarity[0] == 1.0
    assert d.similarity[1] == pytest.approx(s01, abs=1e-6)
    # Not listed: cos of the summed angles, a lower bound (equal here: on one great circle).
    assert d.similarity[2] == pytest.approx(np.cos(0.25), abs=1e-5)
    assert np.isnan(d.similarity[3])
    # A listed pair below the threshold is still the measured similarity.
    d = _find(4, [(1, 0, s01), (2, 1, s12), (2, 0, 0.5)], threshold=0.95)
    assert d.measured[2] and d.similarity[2] == pytest.approx(0.5)
    # With features: exact cosines for every member.
    d = _find(4, [(1, 0, s01), (2, 1, s12)], threshold=0.95, features=3.0 * x)
    assert d.measured.tolist() == [True, True, True, False]
    np.testing.assert_allclose(d.similarity[:3], np.cos(angles[:3]), atol=1e-6)


def test_path_similarity_is_a_lower_bound_and_exact_where_measured() -> None:
    # Tight clusters of points on the sphere in 3-D; exact 3-NN lists by brute force.
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(20, 3))
    x = np.repeat(centres, 6, axis=0) + rng.normal(scale=0.08, size=(120, 3))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    s = x @ x.T
    np.fill_diagonal(s, -np.inf)
    nb = np.argsort(-s, axis=1)[:, :3]
    sims = np.take_along_axis(s, nb, axis=1).astype(np.float32)
    args = (np.zeros(120, np.int64), np.zeros(120, bool), np.ones(120, bool))
    bound = find_duplicates(nb, sims, *args, threshold=0.97)
    exact = find_duplicates(nb, sims, *args, threshold=0.97, features=x)
    np.testing.assert_array_equal(bound.group, exact.group)
    m = bound.members
    assert not bound.measured[m].all()  # some pairs with the first member are not listed
    assert (bound.similarity[m] <= exact.similarity[m] + 1e-5).all()
    np.testing.assert_allclose(
        bound.similarity[m][bound.measured[m]], exact.similarity[m][bound.measured[m]], atol=1e-5
    )


def test_table_schema_and_values() -> None:
    labels = np.array([0, 1, 2, 2, 0])
    is_test = np.array([False, False, False, True, False])
    d = _find(5, [(1, 0, 0.99), (3, 2, 0.97)], labels=labels, is_test=is_test, threshold=0.9)
    ids = pa.chunked_array([pa.array(["r0", "r1"]), pa.array(["r2", "r3", "r4"])])
    t = d.table(ids, NAMES)
    assert t.schema == SCHEMA
    df = t.to_pandas()
    assert df["group"].tolist() == [0, 0, 1, 1]
    assert df["id"].tolist() == ["r0", "r1", "r2", "r3"]
    assert df["label"].tolist() == ["a", "b", "c", "c"]
    assert df["kind"].tolist() == ["conflict", "conflict", "leak", "leak"]
    assert df["split"].tolist() == ["train", "train", "train", "test"]
    assert df["conflict"].tolist() == [True, True, False, False]
    np.testing.assert_allclose(df["similarity"], [1.0, 0.99, 1.0, 0.97], rtol=1e-6)
    # No groups: an empty table with the same schema.
    empty = _find(5, [], threshold=0.9).table(pa.array(["r0", "r1", "r2", "r3", "r4"]), NAMES)
    assert empty.schema == SCHEMA and empty.num_rows == 0


def test_deterministic_under_reordered_lists() -> None:
    rng = np.random.default_rng(0)
    n, k = 2_000, 5
    nb = rng.integers(0, n, size=(n, k))
    sims = rng.uniform(0.8, 1.0, size=(n, k)).astype(np.float32)
    args = (np.arange(n) % 3, np.arange(n) % 7 == 0, np.ones(n, dtype=bool))
    d1 = find_duplicates(nb, sims, *args, threshold=0.99)
    perm = rng.permuted(np.tile(np.arange(k), (n, 1)), axis=1)  # same pairs, other order
    d2 = find_duplicates(
        np.take_along_axis(nb, perm, 1), np.take_along_axis(sims, perm, 1), *args, threshold=0.99
    )
    for name in ("group", "members", "first", "size", "conflict", "leak", "measured"):
        np.testing.assert_array_equal(getattr(d1, name), getattr(d2, name))
    np.testing.assert_array_equal(d1.similarity, d2.similarity)
    ids = pa.array([f"r{i}" for i in range(n)])
    assert d1.table(ids, NAMES).equals(d2.table(ids, NAMES))


def test_pool_to_rows() -> None:
    nb = np.array([[1, 0, -1], [2, -1, -1]])
    assert pool_to_rows(nb, np.array([3, 5, 9])).tolist() == [[5, 3, -1], [9, -1, -1]]


def test_bad_shapes_are_refused() -> None:
    nb, sims = _lists(3, [])
    ok = (np.zeros(3), np.zeros(3, bool), np.ones(3, bool))
    with pytest.raises(ValueError, match="neighbours and similarities"):
        find_duplicates(nb, sims[:2], *ok)
    with pytest.raises(ValueError, match="out of range"):
        find_duplicates(np.full((3, 3), 3), sims, *ok)
    with pytest.raises(ValueError, match="content_keys"):
        find_duplicates(nb, sims, *ok, content_keys=np.zeros(2, np.uint64))


@pytest.mark.timeout(60)
def test_a_million_rows_take_seconds() -> None:
    rng = np.random.default_rng(1)
    n, k = 1_000_000, 10
    nb = rng.integers(0, n, size=(n, k), dtype=np.int64)
    sims = rng.uniform(0.0, 1.0, size=(n, k)).astype(np.float32)
    labels = rng.integers(0, 100, size=n)
    is_test = rng.uniform(size=n) < 0.1
    keys = rng.integers(0, 20 * n, size=n).astype(np.uint64)  # ~5% share a key
    ids = pa.array(np.arange(n).astype(str))
    start = time.process_time()
    d = find_duplicates(
        nb, sims, labels, is_test, np.ones(n, bool), threshold=0.99, content_keys=keys
    )
    d.table(ids, [str(c) for c in range(100)])
    elapsed = time.process_time() - start
    assert d.n_groups > 1_000 and d.exact.any() and d.conflict.any()
    assert np.isfinite(d.similarity[d.members]).all()
    assert elapsed < 20.0, f"{elapsed:.1f} s of CPU"


def test_checked_pairs_count_by_their_match_unchecked_ones_by_cosine() -> None:
    pairs = [
        (1, 0, 0.80),  # checked, matches: a crop the backbone sees as far
        (3, 2, 0.99),  # checked, does not match: a look-alike, however close
        (5, 4, 0.97),  # unchecked (an image not read again): the cosine rule
        (7, 6, 0.70),  # matches but below the candidate cosine: never checked
        (9, 8, 0.95),  # checked, exactly at the match threshold: inclusive
    ]
    nb, sims = _lists(10, pairs)
    matches = np.full(nb.shape, np.nan, dtype=np.float32)
    for (row, _other, _sim), value in zip(pairs, [0.97, 0.5, np.nan, 0.99, 0.95], strict=True):
        matches[row, 0] = value
    n = 10
    d = find_duplicates(
        nb,
        sims,
        np.zeros(n, dtype=np.int64),
        np.zeros(n, dtype=bool),
        np.ones(n, dtype=bool),
        matches=matches,
        match_threshold=0.95,
        candidates=0.78,
        threshold=0.965,
    )
    assert d.group.tolist() == [0, 0, -1, -1, 1, 1, -1, -1, 2, 2]
    assert (d.match_threshold, d.candidates, d.threshold) == (0.95, 0.78, 0.965)
    # Without matches the cosine rule holds alone, as before the pixel check.
    plain = find_duplicates(
        nb, sims, np.zeros(n, np.int64), np.zeros(n, bool), np.ones(n, bool), threshold=0.965
    )
    assert plain.group.tolist() == [-1, -1, 0, 0, 1, 1, -1, -1, -1, -1]
    assert plain.match_threshold is None
    with pytest.raises(ValueError, match="matches"):
        find_duplicates(
            nb,
            sims,
            np.zeros(n, np.int64),
            np.zeros(n, bool),
            np.ones(n, bool),
            matches=matches[:, :1],
        )


def test_pixel_matches_checks_each_candidate_pair_once_and_fills_both_listings() -> None:
    rng = np.random.default_rng(0)
    n = 5
    nb = np.array([[1, 2], [0, 3], [0, -1], [1, 4], [3, -1]])
    sims = np.array(
        [[0.9, 0.5], [0.9, 0.8], [0.5, -np.inf], [0.8, 0.9], [0.9, -np.inf]], dtype=np.float32
    )
    thumbs = rng.integers(0, 256, size=(n, 48, 48), dtype=np.uint8)
    thumbs[1] = thumbs[0]  # the same picture
    rows = np.array([0, 1, 3])  # 2 and 4 have no thumbnail (their images were unreadable)
    calls: list[tuple[int, int]] = []
    m = pixel_matches(
        nb,
        sims,
        np.ones(n, bool),
        rows,
        thumbs[rows],
        minimum=0.78,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert m[0, 0] == pytest.approx(1.0, abs=1e-5) and m[1, 0] == m[0, 0]
    assert np.isfinite(m[1, 1]) and m[3, 0] == m[1, 1] and m[1, 1] < 0.5
    assert np.isnan(m[0, 1]) and np.isnan(m[2, 0])  # below the candidate cosine
    assert np.isnan(m[3, 1]) and np.isnan(m[4, 0])  # row 4 has no thumbnail
    assert calls[0] == (0, 2) and calls[-1] == (2, 2)  # two distinct pairs checked
