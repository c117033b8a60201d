"""Tests for seeded label-noise injection."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from noisyclean.bench.noise import (
    NoiseSpec,
    apply_noise,
    centroid_mapping,
    pair_noise,
    parse_noise,
    symmetric_noise,
    transition_noise,
)

K = 10


@pytest.fixture
def labels() -> np.ndarray:
    rng = np.random.default_rng(123)
    return rng.integers(0, K, size=2_003)


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.2, 0.45, 0.9])
@pytest.mark.parametrize("seed", [0, 7])
def test_symmetric_flips_exactly_round_rate_n_to_other_classes(
    labels: np.ndarray, rate: float, seed: int
) -> None:
    original = labels.copy()
    noisy = symmetric_noise(labels, K, rate=rate, seed=seed)
    np.testing.assert_array_equal(labels, original)
    assert noisy is not labels
    assert noisy.shape == labels.shape and noisy.dtype == labels.dtype
    assert int((noisy != labels).sum()) == round(rate * labels.size)
    assert noisy.min() >= 0 and noisy.max() < K


def test_symmetric_targets_are_roughly_uniform_over_other_classes() -> None:
    labels = np.zeros(30_000, dtype=np.int64)
    noisy = symmetric_noise(labels, 4, rate=0.6, seed=1)
    counts = np.bincount(noisy[noisy != 0], minlength=4)[1:]
    assert counts.sum() == 18_000
    np.testing.assert_allclose(counts / counts.sum(), 1 / 3, atol=0.02)


def test_symmetric_with_two_classes_swaps_the_label() -> None:
    labels = np.array([0, 1] * 50)
    noisy = symmetric_noise(labels, 2, rate=0.5, seed=3)
    flipped = noisy != labels
    assert flipped.sum() == 50
    np.testing.assert_array_equal(noisy[flipped], 1 - labels[flipped])


@pytest.mark.parametrize("rate", [0.0, 0.3, 0.5])
def test_pair_flips_exactly_per_class_and_follows_the_mapping(
    labels: np.ndarray, rate: float
) -> None:
    mapping = [3, 0, 9, 4, 5, 6, 7, 8, 2, 1]
    original = labels.copy()
    noisy = pair_noise(labels, K, rate=rate, seed=5, mapping=mapping)
    np.testing.assert_array_equal(labels, original)
    for c in range(K):
        rows = labels == c
        flipped = rows & (noisy != labels)
        assert flipped.sum() == round(rate * rows.sum())
        assert np.all(noisy[flipped] == mapping[c])


def test_pair_default_mapping_is_next_class(labels: np.ndarray) -> None:
    noisy = pair_noise(labels, K, rate=0.3, seed=0)
    flipped = noisy != labels
    np.testing.assert_array_equal(noisy[flipped], (labels[flipped] + 1) % K)


def _blob_features() -> tuple[np.ndarray, np.ndarray]:
    # Class centroids point along: 0 -> (1, 0, 0), 1 -> (0.9, 0.1, 0) (near 0),
    # 2 -> (0, 0, 1), 3 -> (0, 0.2, 1) (near 2). Scale must not matter.
    directions = np.array([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 0.0, 1.0], [0.0, 0.2, 1.0]])
    scales = np.array([1.0, 50.0, 0.1, 7.0])
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 25)
    features = directions[labels] * scales[labels, None]
    features = features + rng.normal(scale=1e-3, size=features.shape) * scales[labels, None]
    return features, labels


def test_centroid_mapping_picks_the_nearest_other_centroid() -> None:
    features, labels = _blob_features()
    assert centroid_mapping(features, labels, 4) == [1, 0, 3, 2]


def test_pair_uses_feature_centroids_when_no_mapping() -> None:
    features, labels = _blob_features()
    noisy = pair_noise(labels, 4, rate=0.4, seed=2, features=features)
    flipped = noisy != labels
    assert flipped.sum() == 4 * 10
    np.testing.assert_array_equal(noisy[flipped], np.array([1, 0, 3, 2])[labels[flipped]])


def test_pair_explicit_mapping_wins_over_features() -> None:
    features, labels = _blob_features()
    noisy = pair_noise(labels, 4, rate=0.4, seed=2, mapping=[2, 3, 0, 1], features=features)
    flipped = noisy != labels
    np.testing.assert_array_equal(noisy[flipped], np.array([2, 3, 0, 1])[labels[flipped]])


def test_centroid_mapping_falls_back_for_an_empty_class() -> None:
    features, labels = _blob_features()
    keep = labels != 1
    mapping = centroid_mapping(features[keep], labels[keep], 4)
    assert mapping[1] == 2
    assert mapping[0] in (2, 3) and mapping[2] == 3 and mapping[3] == 2


@pytest.mark.parametrize(
    "mapping", [[1, 0, 3], [0, 2, 3, 1], [1, 0, 3, 4]], ids=["short", "self", "range"]
)
def test_pair_rejects_bad_mapping(mapping: list[int]) -> None:
    with pytest.raises(ValueError, match="mapping"):
        pair_noise(np.arange(4), 4, rate=0.2, seed=0, mapping=mapping)


def test_transition_statistics_match_the_matrix() -> None:
    k = 3
    matrix = np.array([[0.7, 0.2, 0.1], [0.0, 1.0, 0.0], [0.25, 0.25, 0.5]])
    labels = np.repeat(np.arange(k), [8_000, 5_000, 7_000])
    original = labels.copy()
    noisy = transition_noise(labels, k, matrix=matrix, seed=11)
    np.testing.assert_array_equal(labels, original)
    observed = np.zeros((k, k))
    np.add.at(observed, (labels, noisy), 1)
    observed /= observed.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(observed, matrix, atol=0.02)
    assert np.all(noisy[labels == 1] == 1)


def test_transition_identity_keeps_labels(labels: np.ndarray) -> None:
    np.testing.assert_array_equal(transition_noise(labels, K, matrix=np.eye(K), seed=0), labels)


@pytest.mark.parametrize(
    ("matrix", "match"),
    [
        (np.full((3, 2), 0.5), "shape"),
        (np.array([[1.2, -0.2, 0.0], [0, 1, 0], [0, 0, 1]]), "non-negative"),
        (np.array([[0.5, 0.4, 0.0], [0, 1, 0], [0, 0, 1]]), "row 0 sums"),
        (np.array([[1.0, 0.0, 0.0], [0, 1, 0], [0, 0, np.nan]]), "finite"),
    ],
    ids=["shape", "negative", "sum", "nan"],
)
def test_transition_rejects_bad_matrix(matrix: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        transition_noise(np.array([0, 1, 2]), 3, matrix=matrix, seed=0)


def test_transition_accepts_rows_summing_to_one_within_tolerance() -> None:
    matrix = np.eye(3) * (1 - 5e-7)
    transition_noise(np.array([0, 1, 2]), 3, matrix=matrix, seed=0)


@pytest.mark.parametrize(
    "inject",
    [
        lambda y, s: symmetric_noise(y, K, rate=0.3, seed=s),
        lambda y, s: pair_noise(y, K, rate=0.3, seed=s),
        lambda y, s: transition_noise(y, K, matrix=np.full((K, K), 1 / K), seed=s),
    ],
    ids=["symmetric", "pair", "transition"],
)
def test_same_seed_same_result(
    labels: np.ndarray, inject: Callable[[np.ndarray, int], np.ndarray]
) -> None:
    a, b, c = inject(labels, 0), inject(labels, 0), inject(labels, 1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"labels": np.array([0, 1, 3])}, r"\[0, 3\)"),
        ({"labels": np.array([[0, 1]])}, "shape"),
        ({"labels": np.array([0.0, 1.0])}, "integer"),
        ({"n_classes": 1}, "at least 2"),
        ({"rate": 1.0}, r"\[0, 1\)"),
        ({"rate": -0.1}, r"\[0, 1\)"),
    ],
    ids=["range", "ndim", "dtype", "classes", "rate-one", "rate-negative"],
)
def test_symmetric_rejects_bad_input(bad: dict[str, Any], match: str) -> None:
    kwargs: dict[str, Any] = {
        "labels": np.array([0, 1, 0]),
        "n_classes": 3,
        "rate": 0.2,
    }
    kwargs.update(bad)
    with pytest.raises(ValueError, match=match):
        symmetric_noise(kwargs["labels"], kwargs["n_classes"], rate=kwargs["rate"], seed=0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("symmetric:0.2", NoiseSpec("symmetric", 0.2)),
        ("pair:0.3", NoiseSpec("pair", 0.3)),
        (" Pair : 0 ", NoiseSpec("pair", 0.0)),
    ],
)
def test_parse_noise(text: str, expected: NoiseSpec) -> None:
    spec = parse_noise(text)
    assert spec == expected
    assert parse_noise(str(spec)) == spec


def test_noise_spec_str_gives_back_the_spec() -> None:
    assert str(parse_noise("symmetric:0.2")) == "symmetric:0.2"
    assert str(parse_noise("pair:0.3")) == "pair:0.3"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("symmetric", "KIND:RATE"),
        ("", "KIND:RATE"),
        ("uniform:0.2", "one of symmetric|pair"),
        ("pair:abc", "number"),
        ("pair:", "number"),
        ("symmetric:1", r"\[0, 1\)"),
        ("symmetric:1.5", r"\[0, 1\)"),
        ("symmetric:-0.1", r"\[0, 1\)"),
        ("symmetric:nan", r"\[0, 1\)"),
    ],
)
def test_parse_noise_errors_are_one_line(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        parse_noise(text)
    assert "\n" not in str(info.value)


def test_noise_spec_validates_on_construction() -> None:
    with pytest.raises(ValueError, match="one of"):
        NoiseSpec("class", 0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        NoiseSpec("pair", 1.0)


def test_apply_noise_dispatches(labels: np.ndarray) -> None:
    np.testing.assert_array_equal(
        apply_noise(parse_noise("symmetric:0.2"), labels, K, seed=4),
        symmetric_noise(labels, K, rate=0.2, seed=4),
    )
    np.testing.assert_array_equal(
        apply_noise(parse_noise("pair:0.2"), labels, K, seed=4),
        pair_noise(labels, K, rate=0.2, seed=4),
    )
    features, small = _blob_features()
    np.testing.assert_array_equal(
        apply_noise(NoiseSpec("pair", 0.4), small, 4, seed=1, features=features),
        pair_noise(small, 4, rate=0.4, seed=1, features=features),
    )


def test_transition_spec_reads_its_matrix_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    matrix = np.array([[0.8, 0.2, 0.0], [0.0, 1.0, 0.0], [0.3, 0.0, 0.7]])
    np.savetxt(path, matrix, delimiter=",")
    spec = parse_noise(f"transition:{path}")
    assert spec.kind == "transition" and spec.rate == pytest.approx(0.5 / 3)
    assert parse_noise(str(spec)) == spec
    labels = np.repeat(np.arange(3), 5000)
    noisy = apply_noise(spec, labels, 3, seed=0)
    assert np.array_equal(noisy, transition_noise(labels, 3, matrix=matrix, seed=0))
    assert (noisy[labels == 1] == 1).all()
    assert abs((noisy[labels == 0] == 1).mean() - 0.2) < 0.02


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "transition matrix"), ("0.5,0.5\n", "not square"), ("a,b\nc,d\n", "transition matrix")],
)
def test_transition_spec_errors_are_one_line(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "m.csv"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=message) as err:
        parse_noise(f"transition:{path}")
    assert "\n" not in str(err.value)


def test_transition_matrix_with_class_names_follows_the_data_order(tmp_path: Path) -> None:
    path = tmp_path / "named.csv"
    path.write_text(
        "# from somewhere, counted\n"
        "cat, dog, owl\n"
        "0.9,0.1,0.0\n"
        "0.0,1.0,0.0\n"
        "# a comment between rows\n"
        "0.0,0.5,0.5\n"
    )
    spec = parse_noise(f"transition:{path}")
    assert spec.rate == pytest.approx(0.6 / 3)
    # The data's classes in another order: rows and columns follow them.
    classes = ["owl", "cat", "dog"]
    expected = np.array([[0.5, 0.0, 0.5], [0.0, 0.9, 0.1], [0.0, 0.0, 1.0]])
    np.testing.assert_array_equal(spec.load_matrix(classes), expected)
    labels = np.repeat(np.arange(3), 4000)
    noisy = apply_noise(spec, labels, 3, seed=2, classes=classes)
    np.testing.assert_array_equal(noisy, transition_noise(labels, 3, matrix=expected, seed=2))
    assert (noisy[labels == 2] == 2).all()  # dog stays dog
    assert set(np.unique(noisy[labels == 0])) == {0, 2}  # owl goes to dog


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        (None, "names its classes"),
        (["cat", "dog", "emu"], "do not match.*'emu'"),
    ],
)
def test_transition_matrix_names_must_match_the_data(
    tmp_path: Path, classes: list[str] | None, message: str
) -> None:
    path = tmp_path / "named.csv"
    path.write_text("cat,dog,owl\n1,0,0\n0,1,0\n0,0,1\n")
    spec = parse_noise(f"transition:{path}")
    with pytest.raises(ValueError, match=message) as err:
        apply_noise(spec, np.array([0, 1, 2]), 3, seed=0, classes=classes)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_transition_matrix_names_and_shape_must_agree(tmp_path: Path) -> None:
    path = tmp_path / "named.csv"
    path.write_text("cat,dog\n1,0,0\n0,1,0\n0,0,1\n")
    with pytest.raises(ValueError, match="2 class names but a"):
        parse_noise(f"transition:{path}")


def test_transition_matrix_header_may_name_classes_by_number(tmp_path: Path) -> None:
    path = tmp_path / "numbers.csv"
    path.write_text("2,10,1\n1,0,0\n0,1,0\n0.5,0,0.5\n")
    spec = parse_noise(f"transition:{path}")
    assert spec.rate == pytest.approx(0.5 / 3)
    # The data's classes "1", "10", "2" (sorted as text): class "1" is the file's last row.
    expected = np.array([[0.5, 0.0, 0.5], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    np.testing.assert_array_equal(spec.load_matrix(["1", "10", "2"]), expected)
    # Without the header row the same numbers are a plain matrix, in sorted order.
    path.write_text("1,0,0\n0,1,0\n0.5,0,0.5\n")
    plain = parse_noise(f"transition:{path}")
    assert plain.load_matrix()[2, 0] == 0.5
