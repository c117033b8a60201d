"""The outlier score on synthetic features whose outliers are known."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from noisyclean import knn
from noisyclean.confidence import TopClasses
from noisyclean.outliers import (
    OutlierConfig,
    OutlierScores,
    centroid_distance,
    class_sums,
    confidence_spread,
    neighbour_distance,
    outlier_scores,
    robust_z,
)


def _classes(n: int, k: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit rows around k class centres; returns (features, labels, centres)."""
    rng = np.random.default_rng(seed)
    centres = knn.normalize(rng.normal(size=(k, dim)).astype(np.float32))
    labels = rng.integers(0, k, n)
    x = centres[labels] + rng.normal(0, 0.35 / np.sqrt(dim), (n, dim)).astype(np.float32)
    return knn.normalize(x), labels, centres


def _phase1(x: np.ndarray, centres: np.ndarray, labels: np.ndarray, width: int) -> TopClasses:
    """Phase-1-like confidences: a softmax over the similarities to the class centres."""
    logits = 12.0 * (x @ centres.T)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return TopClasses.from_dense(p.astype(np.float32), labels, width=width)


def _planted(
    n: int = 2_000, k: int = 8, dim: int = 32, n_out: int = 40, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, TopClasses, np.ndarray, np.ndarray]:
    """In-set rows plus a tight cluster of ``n_out`` rows far from every class, under
    random labels; returns (features, labels, is_out, confidences, sims, neighbours)."""
    rng = np.random.default_rng(seed)
    x, labels, centres = _classes(n, k, dim, seed)
    far = -centres.mean(axis=0)
    far = far / np.linalg.norm(far)
    out = knn.normalize(far + rng.normal(0, 0.05 / np.sqrt(dim), (n_out, dim)).astype(np.float32))
    x = np.concatenate([x, out])
    labels = np.concatenate([labels, rng.integers(0, k, n_out)])
    is_out = np.arange(len(x)) >= n
    conf = _phase1(x, centres, labels, width=k)
    # Phase 1 on rows of no class: its vote and MLP spread over the random labels.
    spread = rng.dirichlet(np.ones(k), n_out).astype(np.float32)
    dense = conf.dense()
    dense[is_out] = spread
    conf = TopClasses.from_dense(dense, labels, width=k)
    sims, idx = knn.search(x, x, k=10, exclude_self=True)
    return x, labels, is_out, conf, sims, idx


def _score(
    x: np.ndarray,
    labels: np.ndarray,
    conf: TopClasses,
    *,
    train: np.ndarray | None = None,
    usable: np.ndarray | None = None,
    similarities: np.ndarray | None = None,
    neighbours: np.ndarray | None = None,
    config: OutlierConfig | None = None,
) -> OutlierScores:
    """``outlier_scores`` with every row a train row unless told, K from ``conf``."""
    return outlier_scores(
        x,
        labels,
        train=np.ones(len(x), dtype=bool) if train is None else train,
        n_classes=conf.n_classes,
        confidences=conf,
        similarities=similarities,
        neighbours=neighbours,
        usable=usable,
        config=config,
    )


def test_planted_far_cluster_scores_highest() -> None:
    x, labels, is_out, conf, sims, idx = _planted()
    found = _score(x, labels, conf, similarities=sims, neighbours=idx)
    top = np.argsort(-found.score)[: is_out.sum()]
    assert is_out[top].all()
    assert found.is_outlier[is_out].all()
    assert found.is_outlier[~is_out].sum() <= 0.005 * (~is_out).sum()
    # Each part on its own sees the cluster too; the neighbour distance does not (the
    # planted rows are each other's neighbours), which is why it is not in the default.
    assert found.centroid_distance[is_out].min() > np.nanmax(found.centroid_distance[~is_out])
    assert found.spread[is_out].mean() > 3 * np.median(found.spread[~is_out])
    assert np.median(found.neighbour_distance[is_out]) < np.median(
        found.neighbour_distance[~is_out]
    )
    assert found.parts == ("centroid", "spread")


def test_every_part_alone_without_the_others() -> None:
    x, labels, is_out, conf, sims, _ = _planted(seed=1)
    n = len(x)
    alone = outlier_scores(
        x, labels, train=np.ones(n, bool), n_classes=8, config=OutlierConfig(parts=("centroid",))
    )
    assert np.isnan(alone.spread).all() and np.isnan(alone.neighbour_distance).all()
    assert is_out[np.argsort(-alone.score)[: is_out.sum()]].all()
    for parts in [("spread",), ("confidence",), ("neighbours",), ("neighbours", "centroid")]:
        found = _score(x, labels, conf, similarities=sims, config=OutlierConfig(parts=parts))
        assert np.isfinite(found.score).all(), parts


def test_missing_input_or_bad_options_raise() -> None:
    x, labels, _, conf, _, _ = _planted(n=200, n_out=5)
    n = len(x)
    with pytest.raises(ValueError, match="spread"):
        outlier_scores(x, labels, train=np.ones(n, bool), n_classes=8)
    with pytest.raises(ValueError, match="neighbours"):
        _score(x, labels, conf, config=OutlierConfig(parts=("neighbours",)))
    for bad in [(), ("centroid", "centroid"), ("knn",)]:
        with pytest.raises(ValueError, match="parts"):
            OutlierConfig(parts=bad)
    with pytest.raises(ValueError):
        OutlierConfig(min_class_rows=0)
    with pytest.raises(ValueError):
        OutlierConfig(threshold=float("nan"))


def test_unusable_rows_get_nan_and_no_flag() -> None:
    x, labels, _, conf, sims, idx = _planted(n=600, n_out=10)
    usable = np.ones(len(x), dtype=bool)
    usable[[3, 7, len(x) - 1]] = False  # one of them a planted outlier
    x = x.copy()
    x[~usable] = 0.0  # as extract_features leaves them
    sims, idx = sims.copy(), idx.copy()
    sims[5], idx[5] = -np.inf, -1  # a row whose search found nothing
    found = _score(
        x,
        labels,
        conf,
        usable=usable,
        similarities=sims,
        neighbours=idx,
        config=OutlierConfig(parts=("centroid", "spread", "neighbours")),
    )
    assert np.isnan(found.score[~usable]).all()
    assert not found.is_outlier[~usable].any()
    assert (found.nearest_class[~usable] == -1).all()
    for part in (found.centroid_distance, found.spread, found.confidence_gap):
        assert np.isnan(part[~usable]).all() and np.isfinite(part[usable]).all()
    assert np.isnan(found.neighbour_distance[5]) and np.isnan(found.score[5])
    assert not found.reference[~usable].any() and not found.reference[5]
    assert np.isfinite(np.delete(found.score, [3, 5, 7, len(x) - 1])).all()
    # The unusable rows' zero features did not make a centroid.
    clean = _score(x, labels, conf, usable=usable, train=usable)
    assert np.allclose(clean.centroid_distance, found.centroid_distance, equal_nan=True)


def test_test_rows_are_scored_but_make_no_centroid_nor_scale() -> None:
    x, labels, is_out, conf, _, _ = _planted(n=1_000, n_out=20, seed=2)
    train = np.ones(len(x), dtype=bool)
    train[::5] = False
    train[is_out] = False  # held-out rows only: they must not pull a centroid
    found = _score(x, labels, conf, train=train)
    assert not found.reference[~train].any()
    assert np.isfinite(found.score).all()
    assert found.is_outlier[is_out].all()
    # Moving test rows changes nothing for the train rows.
    moved = x.copy()
    moved[~train & ~is_out] = knn.normalize(np.roll(moved[~train & ~is_out], 1, axis=1))
    again = _score(moved, labels, conf, train=train)
    assert np.array_equal(again.score[train], found.score[train])


def test_clean_data_flags_few() -> None:
    for seed in range(3):
        x, labels, centres = _classes(5_000, 20, 48, seed)
        conf = _phase1(x, centres, labels, width=10)
        found = _score(x, labels, conf)
        assert found.is_outlier.sum() <= 0.002 * len(x), seed
        assert np.isfinite(found.score).all()
        # The score is a robust z-score: centred on the train rows' median.
        assert abs(float(np.median(found.score))) < 1e-6


def test_deterministic() -> None:
    x, labels, _, conf, sims, idx = _planted(seed=3)
    cfg = OutlierConfig(parts=("centroid", "spread", "neighbours"), per_class=True)
    a = _score(x, labels, conf, similarities=sims, neighbours=idx, config=cfg)
    b = _score(x.copy(), labels.copy(), conf, similarities=sims.copy(), neighbours=idx, config=cfg)
    for name in ("score", "is_outlier", "centroid_distance", "nearest_class", "spread"):
        assert np.array_equal(getattr(a, name), getattr(b, name), equal_nan=True), name


def test_centroid_distance_matches_dense_leave_one_out() -> None:
    rng = np.random.default_rng(4)
    x = knn.normalize(rng.normal(size=(300, 6)).astype(np.float32))
    labels = rng.integers(0, 4, 300)
    labels[17] = 4  # alone in its class: no centroid of its own
    train = rng.random(300) < 0.8
    train[17] = True
    sums, counts = class_sums(x, labels, np.flatnonzero(train), 5)
    got, nearest = centroid_distance(
        x, labels, rows=np.arange(300), train=train, sums=sums, counts=counts
    )
    for i in range(300):
        sims = []
        for c in range(5):
            members = np.flatnonzero(train & (labels == c) & (np.arange(300) != i))
            if len(members) == 0:
                sims.append(-np.inf)
                continue
            mean = x[members].astype(np.float64).sum(axis=0)
            sims.append(float(x[i] @ mean / np.linalg.norm(mean)))
        assert got[i] == pytest.approx(1 - max(sims), abs=1e-5)
        assert nearest[i] == int(np.argmax(sims))
    assert nearest[17] != 4


def test_spread_and_gap() -> None:
    dense = np.array([[1.0, 0, 0, 0], [0.5, 0.5, 0, 0], [0.25] * 4, [0, 0, 0, 0]], np.float32)
    conf = TopClasses.from_dense(dense, np.array([0, 1, 2, 3]), width=4)
    spread, gap = confidence_spread(conf)
    assert spread == pytest.approx([1.0, 2.0, 4.0, 4.0])
    assert gap == pytest.approx([0.0, 0.5, 0.75, 1.0])


def test_neighbour_distance_skips_pads() -> None:
    sims = np.array([[0.9, 0.7, -np.inf], [-np.inf, -np.inf, -np.inf], [1.2, 0.0, 0.5]])
    idx = np.array([[1, 2, -1], [-1, -1, -1], [0, 1, -1]])
    got = neighbour_distance(sims, idx)
    assert got[0] == pytest.approx(0.2)
    assert np.isnan(got[1])
    assert got[2] == pytest.approx(0.5)  # similarity clipped to 1; the -1 position dropped


def test_robust_z_per_group_and_fallback() -> None:
    rng = np.random.default_rng(5)
    groups = np.repeat([0, 1, 2], [200, 100, 5])
    values = np.concatenate([rng.normal(0, 1, 200), rng.normal(10, 3, 100), [50.0] * 5])
    ref = np.ones(len(values), dtype=bool)
    z = robust_z(values, ref, groups=groups, n_groups=3, min_rows=30)
    g1 = values[groups == 1]
    centre, scale = np.median(g1), 1.4826 * np.median(np.abs(g1 - np.median(g1)))
    assert z[groups == 1] == pytest.approx((g1 - centre) / scale)
    # Group 2 is too small: the global median and MAD.
    glob_c = np.median(values)
    glob_s = 1.4826 * np.median(np.abs(values - glob_c))
    assert z[groups == 2] == pytest.approx((50.0 - glob_c) / glob_s)
    assert np.isnan(robust_z(np.array([np.nan, 1.0]), np.array([True, False]))).all()


def _clustered_memmap(
    path: Path, rng: np.random.Generator, n: int, k: int, dim: int, noise: float, step: int
) -> tuple[np.ndarray, np.ndarray]:
    """(N, dim) rows around k random unit centres, written in chunks of ``step`` to a
    .npy file and opened read-only as a memory map; and each row's class."""
    centres = knn.normalize(rng.normal(size=(k, dim)).astype(np.float32))
    labels = rng.integers(0, k, n)
    features = np.lib.format.open_memmap(path, "w+", np.float32, (n, dim))
    for start in range(0, n, step):
        part = labels[start : start + step]
        features[start : start + step] = centres[part] + rng.normal(
            0, noise, (len(part), dim)
        ).astype(np.float32)
    features.flush()
    return np.load(path, mmap_mode="r"), labels


@pytest.mark.timeout(120)
def test_bounded_memory_at_200k_rows_and_300_classes(tmp_path: Path) -> None:
    n, k, dim, width = 200_000, 300, 32, 10
    rng = np.random.default_rng(6)
    features, labels = _clustered_memmap(tmp_path / "f.npy", rng, n, k, dim, 0.05, 50_000)
    # Top-10 confidences made sparse directly: a dense (N, K) would be the thing avoided.
    classes = np.stack([(labels + j) % k for j in range(width)], axis=1).astype(np.int32)
    scores = np.sort(rng.random((n, width)).astype(np.float32), axis=1)[:, ::-1].copy()
    conf = TopClasses(labels, scores[:, 0].copy(), classes, scores, k)
    sims = np.sort(rng.uniform(0.3, 1.0, (n, 10)).astype(np.float32), axis=1)[:, ::-1].copy()

    tracemalloc.start()
    started = time.perf_counter()
    found = outlier_scores(
        features,
        labels,
        train=np.ones(n, dtype=bool),
        n_classes=k,
        confidences=conf,
        similarities=sims,
        config=OutlierConfig(parts=("centroid", "spread", "neighbours"), per_class=True),
    )
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert np.isfinite(found.score).all()
    # A dense (N, K) float32 array alone would be 240 MB; the per-row outputs and chunk
    # temporaries stay well under it.
    assert peak < 100e6, peak / 1e6
    assert seconds < 60, seconds


@pytest.mark.timeout(120)
def test_bounded_memory_with_wide_features(tmp_path: Path) -> None:
    n, k, dim = 40_000, 10, 1024
    rng = np.random.default_rng(7)
    features, labels = _clustered_memmap(tmp_path / "f.npy", rng, n, k, dim, 0.02, 10_000)
    tracemalloc.start()
    found = outlier_scores(
        features,
        labels,
        train=np.ones(n, dtype=bool),
        n_classes=k,
        config=OutlierConfig(parts=("centroid",)),
    )
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert np.isfinite(found.score).all()
    # The features alone are 164 MB (float32), 328 MB as float64: read in chunks.
    assert peak < 80e6, peak / 1e6
