from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import SmallSet

from noisyclean import knn
from noisyclean.features import Features
from noisyclean.manifest import Manifest


def _brute(xb: np.ndarray, xq: np.ndarray, k: int, exclude_self: bool) -> np.ndarray:
    """Cosine top-k by numpy: (Q, k) similarities, nearest first."""
    a = xb / np.linalg.norm(xb, axis=1, keepdims=True)
    q = xq / np.linalg.norm(xq, axis=1, keepdims=True)
    sims = q @ a.T
    if exclude_self:
        np.fill_diagonal(sims, -np.inf)
    return -np.sort(-sims, axis=1)[:, :k]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 5, 10])
def test_exclude_self_matches_brute_force_and_never_returns_the_row(seed: int, k: int) -> None:
    x = np.random.default_rng(seed).normal(size=(200, 16)).astype(np.float32)
    sims, idx = knn.search(x, x, k=k, exclude_self=True)
    assert sims.shape == idx.shape == (200, k)
    assert not (idx == np.arange(200)[:, None]).any()
    assert (idx >= 0).all()
    np.testing.assert_allclose(sims, _brute(x, x, k, True), atol=1e-5)
    # Returned similarities are those of the returned rows, nearest first.
    xn = knn.normalize(x)
    np.testing.assert_allclose(sims, np.einsum("qd,qkd->qk", xn, xn[idx]), atol=1e-5)
    assert (np.diff(sims, axis=1) <= 1e-6).all()


@pytest.mark.parametrize("seed", [0, 1])
def test_queries_against_another_set_match_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    xb = rng.normal(size=(120, 8)).astype(np.float32)
    xq = rng.normal(size=(30, 8)).astype(np.float32)
    sims, idx = knn.search(xb, xq, k=7)
    np.testing.assert_allclose(sims, _brute(xb, xq, 7, False), atol=1e-5)
    assert ((idx >= 0) & (idx < 120)).all()


def test_cosine_not_euclidean() -> None:
    xb = np.array([[1.0, 0.0], [100.0, 1.0], [0.0, 1.0]], dtype=np.float32)
    _, idx = knn.search(xb, np.array([[0.5, 0.0]], dtype=np.float32), k=3)
    assert idx[0].tolist() == [0, 1, 2]  # [100, 1] is far in distance, close in angle


def test_exact_duplicates_still_exclude_only_the_row_itself() -> None:
    x = np.repeat(np.eye(3, dtype=np.float32), 4, axis=0)  # 3 groups of 4 identical rows
    sims, idx = knn.search(x, x, k=3, exclude_self=True)
    rows = np.arange(12)[:, None]
    assert not (idx == rows).any()
    assert (idx // 4 == rows // 4).all()  # the 3 twins of each row
    np.testing.assert_allclose(sims, 1.0, atol=1e-6)


def test_more_duplicates_than_k() -> None:
    x = np.ones((30, 4), dtype=np.float32)
    _, idx = knn.search(x, x, k=5, exclude_self=True)
    assert not (idx == np.arange(30)[:, None]).any()
    assert (idx >= 0).all()
    assert all(len(set(r)) == 5 for r in idx.tolist())


@pytest.mark.parametrize("exclude_self", [False, True])
def test_pads_with_minus_one_when_fewer_rows_than_k(exclude_self: bool) -> None:
    x = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
    sims, idx = knn.search(x, x, k=6, exclude_self=exclude_self)
    found = 3 if exclude_self else 4
    assert idx.shape == (4, 6)
    assert (idx[:, :found] >= 0).all() and (idx[:, found:] == -1).all()
    assert np.isneginf(sims[:, found:]).all() and np.isfinite(sims[:, :found]).all()
    if exclude_self:
        assert not (idx == np.arange(4)[:, None]).any()
    else:
        assert (idx[:, 0] == np.arange(4)).all()


def _clustered(n: int = 3000, d: int = 32, centres: int = 30, seed: int = 0) -> np.ndarray:
    """(n, d) float32 rows around ``centres`` random centres."""
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=(centres, d))
    return (centre[rng.integers(0, centres, n)] + 0.4 * rng.normal(size=(n, d))).astype(np.float32)


def _recall(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each row's exact neighbours (ids) that were found."""
    return float(
        np.mean(
            [
                len(set(a) & set(b)) / len(b)
                for a, b in zip(found.tolist(), exact.tolist(), strict=True)
            ]
        )
    )


# The IVF path on small data: 3,000 rows with the exact-search limit lowered to 1,000.
IVF = {"exact_max_rows": 1000}


def test_small_sets_search_exactly() -> None:
    x = _clustered(300)
    _, _, info = knn.search_with_info(x, x, k=5, exclude_self=True)
    assert info == knn.SearchInfo(method="exact", nlist=0, nprobe=0, recall=None, sample=0)


@pytest.mark.parametrize("exclude_self", [False, True])
def test_ivf_recall_against_exact_search(exclude_self: bool) -> None:
    x = _clustered()
    _, exact = knn.search(x, x, k=10, exclude_self=exclude_self)
    sims, idx, info = knn.search_with_info(x, x, k=10, exclude_self=exclude_self, **IVF)
    assert info.method == "ivf" and info.nlist == knn.choose_nlist(3000) == 64
    assert info.sample == knn.RECALL_SAMPLE
    assert info.recall is not None and info.recall >= knn.RECALL_TARGET
    assert _recall(idx, exact) >= 0.95
    assert sims.shape == idx.shape == (3000, 10) and (idx >= 0).all()
    xn = knn.normalize(x)
    np.testing.assert_allclose(sims, np.einsum("qd,qkd->qk", xn, xn[idx]), atol=1e-5)
    assert (np.diff(sims, axis=1) <= 1e-6).all()


def test_ivf_queries_against_another_set() -> None:
    x = _clustered(3500)
    xb, xq = x[:3000], x[3000:]
    _, exact = knn.search(xb, xq, k=7)
    _, idx, info = knn.search_with_info(xb, xq, k=7, **IVF)
    assert info.method == "ivf" and info.sample == 500  # every query, fewer than the sample
    assert info.recall is not None and info.recall >= 0.95
    assert _recall(idx, exact) >= 0.95


def test_ivf_is_deterministic_for_a_seed() -> None:
    x = _clustered()
    a_s, a_i, a_info = knn.search_with_info(x, x, k=10, exclude_self=True, seed=3, **IVF)
    b_s, b_i, b_info = knn.search_with_info(x, x, k=10, exclude_self=True, seed=3, **IVF)
    np.testing.assert_array_equal(a_i, b_i)
    np.testing.assert_array_equal(a_s, b_s)
    assert a_info == b_info and a_info.recall is not None


def test_ivf_widens_the_search_until_recall_is_reached() -> None:
    x = _clustered()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the target is reached: no warning
        _, idx, info = knn.search_with_info(x, x, k=10, exclude_self=True, nprobe=1, **IVF)
    assert info.nprobe > 1
    assert info.recall is not None and info.recall >= knn.RECALL_TARGET
    _, exact = knn.search(x, x, k=10, exclude_self=True)
    assert _recall(idx, exact) >= 0.95


def test_ivf_warns_when_the_widest_search_falls_short() -> None:
    x = _clustered()
    with pytest.warns(knn.RecallWarning, match="not surely above the target"):
        _, _, info = knn.search_with_info(
            x, x, k=10, exclude_self=True, nprobe=1, max_nprobe=2, recall_target=1.0, **IVF
        )
    assert info.nprobe == 2  # widened once, to the bound
    assert info.recall is not None and 0.5 < info.recall < 1.0
    with pytest.warns(knn.RecallWarning):  # the default target, one list probed
        _, _, info = knn.search_with_info(
            x, x, k=10, exclude_self=True, nprobe=1, max_nprobe=1, **IVF
        )
    assert info.nprobe == 1 and info.recall is not None and info.recall < knn.RECALL_TARGET


def test_ivf_never_returns_the_row_as_its_own_neighbour() -> None:
    x = _clustered(1500)
    x = np.concatenate([x, x])  # every row has an exact twin, 1,500 rows apart
    sims, idx = knn.search(x, x, k=3, exclude_self=True, **IVF)
    rows = np.arange(3000)
    assert not (idx == rows[:, None]).any()
    assert (idx >= 0).all()
    assert (idx[:, 0] % 1500 == rows % 1500).mean() > 0.99  # the twin, nearest
    np.testing.assert_allclose(sims[:, 0], 1.0, atol=1e-5)


@pytest.mark.parametrize("exclude_self", [False, True])
def test_ivf_pads_with_minus_one_when_fewer_rows_than_k(exclude_self: bool) -> None:
    x = _clustered(200)
    # 4 lists, all probed: every row is a candidate.
    sims, idx, info = knn.search_with_info(
        x, x, k=250, exclude_self=exclude_self, exact_max_rows=100, nprobe=4
    )
    assert (info.method, info.nlist, info.nprobe) == ("ivf", 4, 4)
    found = 199 if exclude_self else 200
    assert idx.shape == sims.shape == (200, 250)
    assert (idx[:, :found] >= 0).all() and (idx[:, found:] == -1).all()
    assert np.isneginf(sims[:, found:]).all() and np.isfinite(sims[:, :found]).all()
    assert not exclude_self or not (idx == np.arange(200)[:, None]).any()


@pytest.mark.parametrize("exact_max_rows", [1000, None])
def test_progress_in_chunks_gives_the_same_neighbours(
    exact_max_rows: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = _clustered()
    whole = knn.search(x, x, k=5, exclude_self=True, exact_max_rows=exact_max_rows)
    monkeypatch.setattr(knn, "CHUNK_ROWS", 700)
    calls: list[tuple[str, int, int]] = []
    chunked = knn.search(
        x,
        x,
        k=5,
        exclude_self=True,
        exact_max_rows=exact_max_rows,
        progress=lambda *a: calls.append(a),
    )
    np.testing.assert_array_equal(whole[1], chunked[1])
    np.testing.assert_array_equal(whole[0], chunked[0])
    stages = [c[0] for c in calls]
    want = ["train", "add", "search"] if exact_max_rows else ["add", "search"]
    assert list(dict.fromkeys(stages)) == want  # in that order, each stage once
    for stage in want:
        done = [d for s, d, _ in calls if s == stage]
        total = {t for s, _, t in calls if s == stage}
        assert done == sorted(done) and done[0] == 0 and total == {done[-1]}
    assert [d for s, d, _ in calls if s == "add"] == [0, 700, 1400, 2100, 2800, 3000]


def test_exact_max_rows_is_read_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    x = _clustered()
    monkeypatch.setattr(knn, "EXACT_MAX_ROWS", 1000)
    assert knn.search_with_info(x, x, k=3)[2].method == "ivf"
    assert knn.search_with_info(x, x, k=3, exact_max_rows=5000)[2].method == "exact"


def test_choose_nlist() -> None:
    assert knn.choose_nlist(100_000) == 1024  # 4 * sqrt(1e5) = 1265
    assert knn.choose_nlist(1_000_000) == 4096  # 4000
    assert knn.choose_nlist(3000) == 64  # 219 → 256, but k-means needs 39 rows a list
    assert knn.choose_nlist(10**12) == 65_536
    assert knn.choose_nlist(10) == 1


def test_exclude_self_needs_the_indexed_rows_as_queries() -> None:
    x = _clustered(50)
    with pytest.raises(ValueError, match="exclude_self"):
        knn.search(x, x[:10], k=3, exclude_self=True)


def test_normalize_keeps_zero_rows_zero() -> None:
    x = np.array([[3.0, 4.0], [0.0, 0.0]])
    out = knn.normalize(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])


def test_vote_shares_sum_to_one() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=50)
    nb = rng.integers(0, 50, size=(20, 7))
    shares = knn.vote(nb, labels, 4)
    assert shares.shape == (20, 4) and shares.dtype == np.float32
    np.testing.assert_allclose(shares.sum(axis=1), 1.0, atol=1e-6)
    for q in range(20):
        want = np.bincount(labels[nb[q]], minlength=4) / 7
        np.testing.assert_allclose(shares[q], want, atol=1e-6)


def test_vote_ignores_padding_and_rows_without_neighbours() -> None:
    labels = np.array([0, 1, 1, 2])
    nb = np.array([[1, 2, -1], [0, -1, -1], [-1, -1, -1]])
    shares = knn.vote(nb, labels, 3)
    np.testing.assert_allclose(shares, [[0, 1, 0], [1, 0, 0], [0, 0, 0]])


def test_vote_respects_weights() -> None:
    labels = np.array([0, 1, 1, 2])
    weights = np.array([3.0, 0.5, 0.5, 0.0])
    nb = np.array([[0, 1, 2], [1, 2, 3], [3, 3, 3]])
    shares = knn.vote(nb, labels, 3, weights=weights)
    np.testing.assert_allclose(shares[0], [0.75, 0.25, 0.0], atol=1e-6)
    np.testing.assert_allclose(shares[1], [0.0, 1.0, 0.0], atol=1e-6)  # zero weight: no vote
    np.testing.assert_allclose(shares[2], [0.0, 0.0, 0.0], atol=1e-6)


def test_leave_one_out_vote_on_real_features(
    small_features: tuple[Manifest, Features], small_set: SmallSet
) -> None:
    manifest, feats = small_features
    true = np.array([manifest.classes.index(r["true_label"]) for r in small_set.rows])
    _, nb = knn.search(feats.values, feats.values, k=5, exclude_self=True)
    shares = knn.vote(nb, true, len(manifest.classes))
    # 10 images per class at 64 px: far above chance (0.1), though not near perfect.
    assert (shares.argmax(axis=1) == true).mean() > 0.35


@pytest.mark.parametrize("ivf", [False, True], ids=["exact", "ivf"])
def test_rows_of_a_matrix_search_like_their_copy(ivf: bool) -> None:
    """``Rows`` presents some rows without copying them: the same neighbours as a copy."""
    x = _clustered(n=4000)
    rows = np.flatnonzero(np.arange(len(x)) % 4 != 0)
    opts = IVF if ivf else {}
    view = knn.Rows(x, rows)
    assert view.shape == (len(rows), x.shape[1]) and len(view) == len(rows)
    a = knn.search_with_info(view, view, k=10, exclude_self=True, seed=1, **opts)
    b = knn.search_with_info(x[rows], x[rows], k=10, exclude_self=True, seed=1, **opts)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[0], b[0])
    assert a[2] == b[2]
