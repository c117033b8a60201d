from __future__ import annotations

import numpy as np
import pytest

from noisyclean.flagging import THRESHOLD_QUANTILE, Flags, confident_flags, sparse_flags

# Six rows, four classes (no row is labelled 3). Scores need not sum to 1.
# Thresholds, the upper quartile (linear) of each class's own scores:
# t_0 of [0.2, 0.7, 0.9] = 0.7 + 0.5 * 0.2 = 0.8; t_1 of [0.4, 0.6] = 0.55; t_2 = 0.5; t_3 = 1.
SCORES = np.array(
    [
        [0.9, 0.1, 0.0, 0.99],  # 0: labelled 0, confidently 0 (0.99 < t_3); support 0.9/1.89
        [0.7, 0.2, 0.1, 0.0],  # 1: labelled 0, reaches nothing; support 0.7/0.9
        [0.2, 0.8, 0.0, 0.0],  # 2: labelled 0, confidently 1; support 0.2
        [0.1, 0.6, 0.3, 0.0],  # 3: labelled 1, confidently 1; support 0.6/0.9
        [0.0, 0.4, 0.9, 0.0],  # 4: labelled 1, below t_1, confidently 2; support 0.4/1.3
        [0.5, 0.5, 0.5, 0.0],  # 5: labelled 2, reaches only t_2; support 0.5
    ]
)
LABELS = np.array([0, 0, 0, 1, 1, 2])


def assert_estimates(flags: Flags, raw: np.ndarray) -> None:
    """The reported per-class estimates are the raw ones moved toward the overall one
    by at most one bootstrap standard deviation each (the interval moves with them)."""
    sd = (flags.noise_high - flags.noise_low) / (2 * 1.96)
    moved = flags.noise_rate - np.asarray(raw, dtype=float)
    assert np.all(np.abs(moved) <= sd + 1e-9), (flags.noise_rate, raw, sd)
    assert np.all(moved * (flags.noise - np.asarray(raw)) >= -1e-12)  # toward the overall


def test_constructed_example() -> None:
    flags = confident_flags(SCORES, LABELS, 4)
    np.testing.assert_allclose(flags.thresholds, [0.8, 0.55, 0.5, 1.0])
    assert flags.confident_class.tolist() == [0, -1, 1, 1, 2, 2]
    # The confident joint counts (given label, confident class) over every row with one.
    joint = np.zeros((4, 4), dtype=int)
    joint[0, 0], joint[0, 1], joint[1, 1], joint[1, 2], joint[2, 2] = 1, 1, 1, 1, 1
    np.testing.assert_array_equal(flags.dense_joint(), joint)
    # Unweighted off-diagonal shares 1/2, 1/2, 0. A third of the rows labelled 0 reach
    # t_0, half of which are clean by that estimate: class-0 rows reach t_0 at a rate of
    # 2/3, so the (0, 0) cell counts 1 / (2/3) = 1.5 rows; class 1's and 2's rows reach
    # theirs at a rate of 1. Class 0: 1 / 2.5 of 3 rows = 1.2 -> 1; class 1: 1 of 2.
    assert_estimates(flags, [1 / 3, 1 / 2, 0.0, 0.0])
    assert flags.noise_rate[3] == 0.0  # no rows: no estimate to move
    assert flags.noise == pytest.approx(2 / 6)
    np.testing.assert_allclose(
        flags.support, [0.9 / 1.89, 0.7 / 0.9, 0.2, 0.6 / 0.9, 0.4 / 1.3, 0.5]
    )
    # The two least supported rows of all: row 2 (class 0) and row 4 (class 1).
    assert flags.flagged.tolist() == [False, False, True, False, True, False]
    assert flags.expected_precision == pytest.approx(1 - (0.2 + 0.4 / 1.3) / 2)
    # With a budget of three, the three least supported rows of all: row 0 supports
    # class 3 more than its own label.
    assert confident_flags(SCORES, LABELS, 4, budget=3).flagged.tolist() == [
        True,
        False,
        True,
        False,
        True,
        False,
    ]
    assert flags.budget is None


def test_no_off_diagonal_evidence_flags_nothing() -> None:
    scores = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.3, 0.3]])
    flags = confident_flags(scores, np.array([0, 0, 1, 1]), 2)
    np.testing.assert_allclose(flags.thresholds, [0.875, 0.75])
    assert flags.confident_class.tolist() == [0, -1, 1, -1]
    assert not flags.flagged.any()
    assert flags.noise_rate.tolist() == [0.0, 0.0]
    assert flags.noise == 0.0 and np.isnan(flags.expected_precision)
    assert flags.noise_interval == (0.0, 0.0)


def test_per_class_thresholds_catch_a_class_that_never_scores_high() -> None:
    # Class 1 is hard: its clean rows score only ~0.35 for it. A global 0.5 cut would
    # never call a row class 1; its own threshold (0.3375) does.
    scores = np.array([[0.9, 0.05], [0.9, 0.1], [0.6, 0.34], [0.3, 0.35], [0.3, 0.3]])
    labels = np.array([0, 0, 0, 1, 1])
    flags = confident_flags(scores, labels, 2)
    np.testing.assert_allclose(flags.thresholds, [0.9, 0.3375])
    assert flags.confident_class.tolist() == [0, 0, 1, 1, -1]
    # Half the rows labelled 1 reach t_1 and none is wrong by the unweighted joint, so
    # row 2 counts as two class-1 rows against class 0's two: 1.5 -> 2 of class 0's 3.
    assert_estimates(flags, [2 / 3, 0.0])
    # Two rows are flagged, the least supported of all: class 1's near-ties (support 0.5
    # and 0.54) come before row 2 (0.64). The estimate says how many, support says which.
    assert flags.flagged.tolist() == [False, False, False, True, True]


def test_thresholds_are_each_class_quantile() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 7, size=500)
    labels[labels == 6] = 5  # class 6 has no rows
    scores = rng.random((500, 7))
    flags = confident_flags(scores, labels, 7)
    own = scores[np.arange(500), labels]
    want = [np.quantile(own[labels == c], THRESHOLD_QUANTILE) for c in range(6)] + [1.0]
    np.testing.assert_allclose(flags.thresholds, want)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_flagged_rows_are_the_least_supported_of_all(seed: int) -> None:
    rng = np.random.default_rng(seed)
    true = rng.integers(0, 4, size=300)
    scores = rng.random((300, 4)) * 0.6 + 0.4 * np.eye(4)[true]
    labels = np.where(rng.random(300) < 0.2, rng.integers(0, 4, size=300), true)
    flags = confident_flags(scores, labels, 4)
    assert flags.flagged.any()
    assert flags.support[flags.flagged].max() <= flags.support[~flags.flagged].min()
    counts = np.bincount(labels, minlength=4)
    joint = flags.dense_joint().astype(float)
    # Each cell divided by the rate at which its confident class's rows reach its
    # threshold: the share of the rows labelled so that reach it, over its clean share.
    own = scores[np.arange(300), labels]
    reached = np.array([(own[labels == c] >= flags.thresholds[c]).mean() for c in range(4)])
    first = (joint.sum(1) - np.diag(joint)) / joint.sum(1)
    rate = np.minimum(1.0, reached / (1 - first))
    weighted = joint / rate[None, :]
    share = (weighted.sum(1) - np.diag(weighted)) / weighted.sum(1)
    expected = np.rint(share * counts)
    assert_estimates(flags, expected / counts)
    assert flags.flagged.sum() == expected.sum()
    assert flags.noise == pytest.approx(expected.sum() / 300)
    assert joint.sum() == (flags.confident_class >= 0).sum()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clean_one_hot_scores_flag_nothing_and_swapped_rows_are_flagged(seed: int) -> None:
    rng = np.random.default_rng(seed)
    true = rng.integers(0, 5, size=200)
    scores = np.eye(5)[true] * 0.8 + 0.05
    given = true.copy()
    wrong = rng.choice(200, size=20, replace=False)
    given[wrong] = (true[wrong] + 1) % 5
    assert not confident_flags(scores, true, 5).flagged.any()
    flags = confident_flags(scores, given, 5)
    assert set(np.flatnonzero(flags.flagged)) == set(wrong)
    assert (flags.confident_class == true).all()
    truth = np.array([(given[wrong] == j).sum() / (given == j).sum() for j in range(5)])
    assert_estimates(flags, truth)
    want = np.zeros((5, 5), dtype=int)
    np.add.at(want, (given, true), 1)
    np.testing.assert_array_equal(flags.dense_joint(), want)
    # Each flagged row gives its label 0.05 against 0.85: expected precision 0.85 / 0.9.
    assert flags.expected_precision == pytest.approx(0.85 / 0.9)


def test_hard_clean_rows_do_not_inflate_the_estimate() -> None:
    # 20% wrong labels (own score ~0.02, their true class ~0.8) and, among the clean
    # rows, a hard tenth that gives its own class 0.45 and another 0.7. The mean
    # threshold (pulled down to ~0.63 by the wrong labels) lets those hard rows reach
    # another class and the estimate rises to about 26%; the upper quartile does not.
    rng = np.random.default_rng(0)
    n, k = 5000, 5
    true = rng.integers(0, k, size=n)
    scores = np.full((n, k), 0.02)
    scores[np.arange(n), true] = 0.8 + rng.normal(0, 0.05, size=n)
    hard = rng.random(n) < 0.1
    other = (true + 1 + rng.integers(0, k - 1, size=n)) % k
    scores[hard, true[hard]] = 0.45
    scores[hard, other[hard]] = 0.7
    given = true.copy()
    wrong = rng.random(n) < 0.2
    given[wrong] = (true[wrong] + 1 + rng.integers(0, k - 1, size=wrong.sum())) % k
    flags = confident_flags(scores, given, k)
    truth = (given != true).mean()
    assert abs(flags.noise - truth) < 0.02
    low, high = flags.noise_interval
    assert low <= flags.noise <= high and high - low < 0.05


def test_unequal_noise_between_classes_is_less_underestimated() -> None:
    # Class 0 is clean; 40% of the rows labelled 1 are class-0 images. Each row scores
    # its true class like that class's clean rows do (uniformly). t_0 is the upper
    # quartile of clean rows, reached by a quarter of the class-0 images labelled 1;
    # t_1 is the upper quartile of the rows labelled 1, of which 60% are clean, so a
    # clean class-1 row reaches it with chance 0.25 / 0.6. The unweighted joint reads
    # 100 / (100 + 250) = 29%; one reweighting step, with that 29%, reads 36%.
    rng = np.random.default_rng(0)
    true = np.repeat([0, 0, 1], [1000, 400, 600])
    given = np.repeat([0, 1, 1], [1000, 400, 600])
    scores = np.zeros((2000, 2))
    scores[np.arange(2000), true] = rng.random(2000)
    flags = confident_flags(scores, given, 2)
    joint = flags.dense_joint()
    unweighted = joint[1, 0] / joint[1].sum()
    assert flags.noise_rate[0] == 0.0
    assert unweighted == pytest.approx(0.286, abs=0.03)
    assert flags.noise_rate[1] == pytest.approx(0.36, abs=0.03)


def test_budget_flags_that_many_of_the_least_supported_rows() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, size=400)
    scores = rng.random((400, 3))
    free = confident_flags(scores, labels, 3)
    for budget in (1, 25, 400, 1000):
        flags = confident_flags(scores, labels, 3, budget=budget)
        assert flags.flagged.sum() == min(budget, 400)
        order = np.argsort(flags.support, kind="stable")
        assert set(np.flatnonzero(flags.flagged)) == set(order[: min(budget, 400)])
        # The estimate does not depend on the budget.
        np.testing.assert_array_equal(flags.noise_rate, free.noise_rate)
        assert flags.noise_interval == free.noise_interval and flags.budget == budget
    with pytest.raises(ValueError, match="budget"):
        confident_flags(scores, labels, 3, budget=-1)


def test_bootstrap_interval_is_seeded_and_shrinks_with_rows() -> None:
    def flags_of(n: int, seed: int = 0):  # type: ignore[no-untyped-def]
        rng = np.random.default_rng(5)
        true = rng.integers(0, 4, size=n)
        scores = rng.random((n, 4)) * 0.5 + 0.5 * np.eye(4)[true]
        given = np.where(rng.random(n) < 0.3, rng.integers(0, 4, size=n), true)
        own = scores[np.arange(n), given]
        classes = np.broadcast_to(np.arange(4), (n, 4))
        return sparse_flags(own, classes, scores, given, 4, seed=seed)

    small, again, big = flags_of(400), flags_of(400), flags_of(20_000)
    assert small.noise_interval == again.noise_interval
    np.testing.assert_array_equal(small.noise_low, again.noise_low)
    for f in (small, big):
        assert f.noise_interval[0] <= f.noise <= f.noise_interval[1]
        assert (f.noise_low <= f.noise_rate + 1e-12).all()
        assert (f.noise_rate <= f.noise_high + 1e-12).all()
    width = lambda f: f.noise_interval[1] - f.noise_interval[0]  # noqa: E731
    assert width(big) < width(small) / 3
    assert flags_of(400, seed=1).noise_interval != small.noise_interval


def test_summary_is_json_ready() -> None:
    import json

    flags = confident_flags(SCORES, LABELS, 4, budget=2)
    summary = json.loads(json.dumps(flags.summary()))
    assert summary["flagged"] == 2 and summary["budget"] == 2
    assert summary["noise"] == pytest.approx(2 / 6, abs=1e-6)
    assert summary["noise_low"] <= summary["noise"] <= summary["noise_high"]


def _noisy(rates: np.ndarray, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Perfect one-hot scores of the true classes, and labels: ``per_class`` rows carry
    each label c, ``rates[c]`` of them (exactly) images of another class."""
    rng = np.random.default_rng(seed)
    k = len(rates)
    given = np.repeat(np.arange(k), per_class)
    true = given.copy()
    for c in range(k):
        rows = rng.choice(
            np.flatnonzero(given == c), size=round(rates[c] * per_class), replace=False
        )
        true[rows] = (c + rng.integers(1, k, size=len(rows))) % k
    return np.eye(k)[true] * 0.8 + 0.05, given


def test_equal_noise_shrinks_the_classes_scatter_toward_the_overall_estimate() -> None:
    # Every class about 20% wrong: the differences are within sampling error.
    rates = np.array([0.17, 0.23, 0.2, 0.19, 0.21, 0.2, 0.18, 0.22, 0.2, 0.2])
    scores, given = _noisy(rates, 400, seed=0)
    flags = confident_flags(scores, given, 10)
    wrong = scores.argmax(axis=1) != given
    raw = np.bincount(given[wrong], minlength=10) / np.bincount(given, minlength=10)
    assert flags.shrinkage > 0.5  # the scatter is mostly sampling
    assert_estimates(flags, raw)
    assert np.abs(flags.noise_rate - flags.noise).max() < np.abs(raw - flags.noise).max()
    assert flags.flagged.sum() == wrong.sum()  # the total, and the flags, do not move


def test_a_few_dirty_classes_among_many_keep_their_distance() -> None:
    rates = np.full(100, 0.05)
    rates[[3, 40]] = 0.4
    scores, given = _noisy(rates, 60, seed=1)
    flags = confident_flags(scores, given, 100)
    sd = (flags.noise_high - flags.noise_low) / (2 * 1.96)
    # Plain shrinkage would pull them a third of the way to the average (B = 0.36); here
    # they move by at most one standard deviation and stay far above every other class.
    assert np.all(flags.noise_rate[[3, 40]] >= 0.4 - sd[[3, 40]] - 1e-9)
    assert flags.noise_rate[[3, 40]].min() > np.delete(flags.noise_rate, [3, 40]).max() + 0.2
