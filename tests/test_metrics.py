from __future__ import annotations

import math

import numpy as np
import pytest

from noisyclean.metrics import auroc, average_precision, precision_at_n

metrics = pytest.importorskip("sklearn.metrics")


def _data(seed: int, n: int = 300, levels: int | None = 20) -> tuple[np.ndarray, np.ndarray]:
    """Scores correlated with the positives; ``levels`` rounds them so ties are common."""
    rng = np.random.default_rng(seed)
    positive = rng.random(n) < 0.2 + 0.1 * (seed % 3)
    scores = rng.normal(size=n) + 1.2 * positive
    if levels is not None:
        scores = np.round(scores * levels / 8) / (levels / 8)
    return scores, positive


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("levels", [None, 20, 3])
def test_auroc_matches_sklearn(seed: int, levels: int | None) -> None:
    scores, positive = _data(seed, levels=levels)
    if levels == 3:
        assert len(np.unique(scores)) < len(scores) / 10  # heavy ties really happen
    assert auroc(scores, positive) == pytest.approx(metrics.roc_auc_score(positive, scores))


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("levels", [None, 20, 3])
def test_average_precision_matches_sklearn(seed: int, levels: int | None) -> None:
    scores, positive = _data(seed, levels=levels)
    want = metrics.average_precision_score(positive, scores)
    assert average_precision(scores, positive) == pytest.approx(want)


@pytest.mark.parametrize("seed", range(8))
def test_precision_at_n_matches_sklearn_on_the_top_n(seed: int) -> None:
    scores, positive = _data(seed, levels=None)
    n_pos = int(positive.sum())
    for n in (None, 1, 10, n_pos, 299):
        cut = n_pos if n is None else n
        predicted = scores >= np.sort(scores)[::-1][cut - 1]  # no ties: exactly ``cut`` rows
        assert predicted.sum() == cut
        want = metrics.precision_score(positive, predicted)
        assert precision_at_n(scores, positive, n) == pytest.approx(want)


def test_precision_at_n_breaks_ties_by_row_order() -> None:
    scores = np.array([1.0, 1.0, 1.0, 0.0])
    assert precision_at_n(scores, np.array([0, 1, 1, 0], dtype=bool), 1) == 0.0
    assert precision_at_n(scores, np.array([1, 0, 0, 0], dtype=bool), 1) == 1.0


def test_perfect_and_reversed_rankings() -> None:
    positive = np.array([True, True, False, False, False])
    scores = np.array([0.9, 0.8, 0.3, 0.2, 0.1])
    assert auroc(scores, positive) == 1.0
    assert auroc(-scores, positive) == 0.0
    assert auroc(np.ones(5), positive) == 0.5
    assert average_precision(scores, positive) == 1.0
    assert precision_at_n(scores, positive) == 1.0
    assert precision_at_n(-scores, positive) == 0.0


def test_undefined_cases_are_nan() -> None:
    scores = np.array([0.1, 0.2, 0.3])
    assert math.isnan(auroc(scores, np.zeros(3, dtype=bool)))
    assert math.isnan(auroc(scores, np.ones(3, dtype=bool)))
    assert math.isnan(average_precision(scores, np.zeros(3, dtype=bool)))
    assert math.isnan(precision_at_n(scores, np.zeros(3, dtype=bool)))


def test_integer_scores_and_list_inputs() -> None:
    scores = [3, 1, 2, 2, 0]
    positive = [1, 0, 1, 0, 0]
    assert auroc(np.asarray(scores), np.asarray(positive)) == pytest.approx(
        metrics.roc_auc_score(positive, scores)
    )
    assert average_precision(np.asarray(scores), np.asarray(positive)) == pytest.approx(
        metrics.average_precision_score(positive, scores)
    )
