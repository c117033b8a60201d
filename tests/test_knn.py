from __future__ import annotations

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
