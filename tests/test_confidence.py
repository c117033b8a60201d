"""The confidence module on real features of the committed example (1,500 Fashion-MNIST
images, 20% of the train labels flipped, true labels known)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from noisyclean import knn
from noisyclean.confidence import (
    ConfidenceConfig,
    TopClasses,
    _fit,
    _standardise,
    score_confidences,
    stratified_folds,
)
from noisyclean.features import Features
from noisyclean.manifest import Manifest
from noisyclean.metrics import auroc

K = 10
#: Fewer epochs where a test checks bookkeeping rather than quality.
QUICK = ConfidenceConfig(epochs=3, hidden=64)


@pytest.fixture(scope="module")
def example(
    example_features: tuple[Manifest, Features],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, given label index, train mask) of the whole example."""
    manifest, feats = example_features
    assert len(manifest) == 1500 and manifest.train_mask.sum() == 1000
    return feats.values, manifest.label_index, manifest.train_mask


@dataclasses.dataclass(frozen=True)
class Parts:
    """Dense (N, K) confidences of one configuration: blended, MLP alone, vote alone."""

    blended: np.ndarray
    mlp: np.ndarray
    knn: np.ndarray
    fold: np.ndarray
    small_classes: list[int]


def _parts(
    x: np.ndarray, y: np.ndarray, train: np.ndarray, cfg: ConfidenceConfig, k: int = K
) -> Parts:
    """The blend at cfg.blend and its two parts (blend 1 is the MLP alone, blend 0 the
    vote alone; each part is deterministic for a seed), all classes kept."""
    runs = [
        score_confidences(x, y, train=train, n_classes=k, config=dataclasses.replace(cfg, blend=b))
        for b in (cfg.blend, 1.0, 0.0)
    ]
    blended, mlp, vote = (r.top.dense() for r in runs)
    return Parts(blended, mlp, vote, runs[0].fold, runs[0].small_classes)


@pytest.fixture(scope="module")
def scored(example: tuple[np.ndarray, np.ndarray, np.ndarray]) -> Parts:
    x, y, train = example
    return _parts(x, y, train, ConfidenceConfig())


def _given(c: np.ndarray, y: np.ndarray) -> np.ndarray:
    return c[np.arange(len(y)), y]


def _fit_predict(
    x: np.ndarray, y: np.ndarray, probe: np.ndarray, k: int, cfg: ConfidenceConfig, seed: int
) -> np.ndarray:
    """The module's MLP fitted on (x, y), standardised as the module does, scoring ``probe``."""
    both = np.concatenate([x, probe]).astype(np.float32)
    rows = np.arange(len(x))
    _standardise(both, rows)
    t = torch.from_numpy(both)
    labels = torch.from_numpy(
        np.concatenate([y, np.zeros(len(probe), dtype=y.dtype)]).astype(np.int64)
    )
    model = _fit(t, rows, labels, k, cfg, seed, lambda: None)
    with torch.inference_mode():
        return torch.sigmoid(model(t[len(x) :])).numpy()


def test_shuffled_labels_stay_near_chance_out_of_fold_but_not_in_sample(
    example: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    x, y, train = example
    shuffled = y.copy()
    shuffled[train] = np.random.default_rng(0).permutation(y[train])
    cfg = ConfidenceConfig()
    conf = _parts(x, shuffled, train, cfg)
    out_of_fold = _given(conf.blended, shuffled)[train].mean()
    assert out_of_fold < 0.25, out_of_fold  # chance is 1/K = 0.1
    assert _given(conf.mlp, shuffled)[train].mean() < 0.25
    assert _given(conf.knn, shuffled)[train].mean() < 0.25
    # The same MLP, fitted long enough to fit them, scoring the rows it trained on has
    # memorised their random labels: what cross-fitting protects against.
    xn = knn.normalize(x)
    long_fit = dataclasses.replace(cfg, epochs=60)
    in_sample = _fit_predict(xn[train], shuffled[train], xn[train], K, long_fit, seed=0)
    in_sample_mean = _given(in_sample, shuffled[train]).mean()
    assert in_sample_mean > 0.4 and in_sample_mean > 3 * out_of_fold


def test_noisy_labels_of_the_example_are_found(
    example: tuple[np.ndarray, np.ndarray, np.ndarray],
    example_features: tuple[Manifest, Features],
    scored: Parts,
) -> None:
    _, y, _ = example
    frame = example_features[0].frame
    wrong = (frame["label"] != frame["true_label"]).to_numpy()
    assert wrong.sum() == 200
    assert auroc(1 - _given(scored.blended, y), wrong) > 0.9
    for part in (scored.mlp, scored.knn):
        assert auroc(1 - _given(part, y), wrong) > 0.85


def test_output_shapes_ranges_and_blend(
    example: tuple[np.ndarray, np.ndarray, np.ndarray], scored: Parts
) -> None:
    x, _, _ = example
    for part in (scored.blended, scored.mlp, scored.knn):
        assert part.shape == (len(x), K) and part.dtype == np.float32
        assert ((part >= 0) & (part <= 1)).all()
    np.testing.assert_allclose(scored.knn.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(scored.blended, 0.5 * scored.mlp + 0.5 * scored.knn, atol=1e-6)


@pytest.mark.parametrize("blend", [0.0, 1.0, 0.25])
def test_blend_weight(example: tuple[np.ndarray, np.ndarray, np.ndarray], blend: float) -> None:
    x, y, train = example
    c = _parts(x, y, train, dataclasses.replace(QUICK, blend=blend))
    np.testing.assert_allclose(c.blended, blend * c.mlp + (1 - blend) * c.knn, atol=1e-6)


def test_same_seed_same_output_different_seed_different(
    example: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    x, y, train = example
    a = _parts(x, y, train, QUICK)
    b = _parts(x, y, train, QUICK)
    c = _parts(x, y, train, dataclasses.replace(QUICK, seed=1))
    for field in ("blended", "mlp", "knn", "fold"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.fold, c.fold)
    assert not np.allclose(a.mlp, c.mlp)
    np.testing.assert_array_equal(a.knn, c.knn)  # the exact vote has no randomness


def test_test_rows_get_fold_minus_one_and_confidences(
    example: tuple[np.ndarray, np.ndarray, np.ndarray], scored: Parts
) -> None:
    _, y, train = example
    assert (scored.fold[~train] == -1).all()
    assert set(scored.fold[train].tolist()) == set(range(5))
    test = ~train
    assert (scored.mlp[test].sum(axis=1) > 0).all()
    np.testing.assert_allclose(scored.knn[test].sum(axis=1), 1.0, atol=1e-5)
    # The example's test rows are clean: most are predicted as their own label.
    assert (scored.blended[test].argmax(axis=1) == y[test]).mean() > 0.65


def test_labels_of_test_rows_are_never_read(
    example: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    x, y, train = example
    scrambled = y.copy()
    scrambled[~train] = (y[~train] + 3) % K
    a = score_confidences(x, y, train=train, n_classes=K, config=QUICK).top
    b = score_confidences(x, scrambled, train=train, n_classes=K, config=QUICK).top
    np.testing.assert_array_equal(a.classes, b.classes)
    np.testing.assert_array_equal(a.scores, b.scores)


def test_no_usable_row_gets_all_zero_mlp_scores(scored: Parts) -> None:
    # At 64 px ~100 feature dimensions are zero in every train row; scaling them by their
    # training std once gave some rows logits near -1e4 and all-zero sigmoid outputs.
    assert (scored.mlp.max(axis=1) > 1e-3).all()


def test_a_dimension_constant_in_training_does_not_dominate() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 40)
    x = rng.normal(size=(80, 6)).astype(np.float32)
    x[:, 0] += 3.0 * y
    x[:, 5] = 0.0
    probe = np.zeros((2, 6), dtype=np.float32)
    probe[:, 0] = [0.0, 3.0]
    probe[:, 5] = 0.05  # tiny, but never seen in training
    out = _fit_predict(x, y, probe, 2, ConfidenceConfig(epochs=50, batch_size=16), seed=0)
    assert out.argmax(axis=1).tolist() == [0, 1]
    assert (out.max(axis=1) > 0.5).all()


def test_folds_are_stratified() -> None:
    labels = np.repeat(np.arange(4), [50, 23, 7, 2])
    folds = stratified_folds(labels, 5, seed=3)
    for c in range(4):
        counts = np.bincount(folds[labels == c], minlength=5)
        assert counts.max() - counts.min() <= 1
    # Small classes are not all dealt into fold 0.
    assert np.bincount(folds, minlength=5).max() - np.bincount(folds, minlength=5).min() <= 1
    np.testing.assert_array_equal(folds, stratified_folds(labels, 5, seed=3))
    assert not np.array_equal(folds, stratified_folds(labels, 5, seed=4))


def test_a_class_with_fewer_train_rows_than_folds_is_reported(
    example: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    x, y, train = example
    rare = 4
    keep = (y != rare) | ~train
    keep[np.flatnonzero(train & (y == rare))[:3]] = True
    xs, ys, ts = x[keep], y[keep], train[keep]
    assert (ys[ts] == rare).sum() == 3
    c = _parts(xs, ys, ts, QUICK)
    assert c.small_classes == [rare]
    assert np.isfinite(c.blended).all()
    assert (c.fold[ts & (ys == rare)] >= 0).all()


def test_a_class_with_one_row_and_a_class_with_none(
    example: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    x, y, train = example
    rows = np.flatnonzero(train)[:200]
    labels = y[rows] % 3
    labels[0] = 3  # one row of class 3; class 4 has no row at all
    c = _parts(x[rows], labels, np.ones(200, bool), QUICK, k=5)
    assert c.small_classes == [3]
    assert c.blended.shape == (200, 5) and np.isfinite(c.blended).all()
    assert (c.knn[:, 4] == 0).all()
    # No model ever saw class 3 when scoring its only row; the vote can't either.
    assert c.knn[0, 3] == 0


@pytest.mark.parametrize(
    "bad",
    [
        {"folds": 1},
        {"folds": 0},
        {"k": 0},
        {"blend": -0.1},
        {"blend": 1.5},
        {"epochs": 0},
        {"batch_size": 0},
        {"hidden": 0},
    ],
)
def test_config_rejects_bad_values(bad: dict[str, float]) -> None:
    (name,) = bad
    with pytest.raises(ValueError, match=name):
        ConfidenceConfig(**bad)  # type: ignore[arg-type]


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        ConfidenceConfig().folds = 3  # type: ignore[misc]


def test_top_classes_keep_the_best_and_the_given_label(
    example: tuple[np.ndarray, np.ndarray, np.ndarray], scored: Parts
) -> None:
    x, y, train = example
    top = score_confidences(x, y, train=train, n_classes=K, top_classes=3).top
    assert top.classes.shape == (len(y), 3)
    dense = scored.blended
    # The 3 best classes in order, their scores, and the given label's score exactly.
    np.testing.assert_array_equal(np.take_along_axis(dense, top.classes, axis=1), top.scores)
    np.testing.assert_array_equal(np.sort(dense, axis=1)[:, ::-1][:, :3], top.scores)
    np.testing.assert_array_equal(_given(dense, y), top.given)
    # Dense again: the top classes and the given label, 0 elsewhere.
    again = top.dense()
    kept = again > 0
    np.testing.assert_array_equal(again[kept], dense[kept])


def test_top_classes_from_dense_breaks_ties_by_class_index() -> None:
    scores = np.array([[0.2, 0.5, 0.5, 0.1], [0.3, 0.3, 0.3, 0.3]], dtype=np.float32)
    for width in (2, 4):
        top = TopClasses.from_dense(scores, np.array([3, 0]), width=width)
        assert top.classes[:, :2].tolist() == [[1, 2], [0, 1]]
        assert top.given.tolist() == pytest.approx([0.1, 0.3])
    rel = TopClasses.from_dense(scores, np.array([3, 0]), width=2).relative()
    assert rel.scores[:, 0].tolist() == [1.0, 1.0] and rel.given.tolist() == pytest.approx(
        [0.2, 1.0]
    )


def test_the_voters_and_their_similarities_are_returned() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    y = rng.integers(0, 3, size=300)
    train = np.ones(300, dtype=bool)
    train[250:] = False
    out = score_confidences(x, y, train=train, n_classes=3, config=QUICK)
    rows, sims = out.neighbour_rows, out.neighbour_similarities
    assert rows is not None and sims is not None
    assert rows.shape == sims.shape == (300, QUICK.k)
    assert train[rows].all()  # only train rows vote, test rows included as queries
    assert not (rows == np.arange(300)[:, None]).any()  # never the row itself
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    cosine = np.einsum("nd,nkd->nk", unit, unit[rows])
    np.testing.assert_allclose(sims, cosine, atol=1e-5)
    assert (np.diff(sims, axis=1) <= 1e-6).all()  # nearest first
    exact = np.argsort(-(unit @ unit[train].T), axis=1)  # the exact voters of a test row
    assert set(rows[260]) == set(np.flatnonzero(train)[exact[260, : QUICK.k]])
