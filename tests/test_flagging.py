from __future__ import annotations

import numpy as np
import pytest

from noisyclean.flagging import confident_flags

# Six rows, four classes (no row is labelled 3). Scores need not sum to 1.
# Thresholds: t_0 = (0.9 + 0.7 + 0.2) / 3 = 0.6, t_1 = (0.6 + 0.4) / 2, t_2 = 0.5, t_3 = 1.
SCORES = np.array(
    [
        [0.9, 0.1, 0.0, 0.99],  # 0: labelled 0, confidently 0 (0.99 < t_3)
        [0.7, 0.2, 0.1, 0.0],  # 1: labelled 0, confidently 0
        [0.2, 0.8, 0.0, 0.0],  # 2: labelled 0, confidently 1
        [0.1, 0.6, 0.3, 0.0],  # 3: labelled 1, confidently 1
        [0.0, 0.4, 0.9, 0.0],  # 4: labelled 1, below t_1, confidently 2
        [0.5, 0.5, 0.5, 0.0],  # 5: labelled 2, reaches t_1 and t_2; tie -> the first, 1
    ]
)
LABELS = np.array([0, 0, 0, 1, 1, 2])


def test_constructed_example() -> None:
    flags = confident_flags(SCORES, LABELS, 4)
    np.testing.assert_allclose(flags.thresholds, [0.6, 0.5, 0.5, 1.0])
    assert flags.confident_class.tolist() == [0, 0, 1, 1, 2, 1]
    # The confident joint counts (given label, confident class) over every row with one.
    joint = np.zeros((4, 4), dtype=int)
    joint[0, 0], joint[0, 1], joint[1, 1], joint[1, 2], joint[2, 1] = 2, 1, 1, 1, 1
    np.testing.assert_array_equal(flags.dense_joint(), joint)
    # Off-diagonal shares 1/3, 1/2, 1 of 3, 2, 1 rows: one wrong label in each of 0, 1, 2,
    # and in each class it is the row with the lowest score for its own label.
    np.testing.assert_allclose(flags.noise_rate, [1 / 3, 1 / 2, 1.0, 0.0])
    assert flags.flagged.tolist() == [False, False, True, False, True, True]


def test_no_off_diagonal_evidence_flags_nothing() -> None:
    scores = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.3, 0.3]])
    flags = confident_flags(scores, np.array([0, 0, 1, 1]), 2)
    np.testing.assert_allclose(flags.thresholds, [0.85, 0.6])
    assert flags.confident_class.tolist() == [0, -1, 1, -1]
    assert not flags.flagged.any()
    assert flags.noise_rate.tolist() == [0.0, 0.0]


def test_per_class_thresholds_catch_a_class_that_never_scores_high() -> None:
    # Class 1 is hard: its clean rows score only ~0.3 for it. A global 0.5 cut would
    # never call a row class 1; its own threshold does.
    scores = np.array([[0.9, 0.05], [0.8, 0.1], [0.6, 0.33], [0.3, 0.35], [0.3, 0.3]])
    labels = np.array([0, 0, 0, 1, 1])
    flags = confident_flags(scores, labels, 2)
    assert flags.thresholds[1] == pytest.approx(0.325)
    assert flags.confident_class.tolist() == [0, 0, 1, 1, -1]
    assert flags.flagged.tolist() == [False, False, True, False, False]


def test_prune_by_class_flags_the_least_supported_rows() -> None:
    # Class 0 has 4 rows; one of the 3 with a confident class is off-diagonal, so about
    # 4 / 3 of its labels are wrong: the one row with the lowest score for class 0 is
    # flagged. That is row 3, which supports no class at all, not row 2.
    scores = np.array([[0.9, 0.05], [0.85, 0.1], [0.2, 0.9], [0.1, 0.1], [0.1, 0.9], [0.2, 0.8]])
    labels = np.array([0, 0, 0, 0, 1, 1])
    flags = confident_flags(scores, labels, 2)
    assert flags.confident_class.tolist() == [0, 0, 1, -1, 1, -1]
    assert flags.flagged.tolist() == [False, False, False, True, False, False]
    np.testing.assert_allclose(flags.noise_rate, [0.25, 0.0])


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_flagged_rows_are_the_least_supported_of_their_class(seed: int) -> None:
    rng = np.random.default_rng(seed)
    true = rng.integers(0, 4, size=300)
    scores = rng.random((300, 4)) * 0.6 + 0.4 * np.eye(4)[true]
    labels = np.where(rng.random(300) < 0.2, rng.integers(0, 4, size=300), true)
    flags = confident_flags(scores, labels, 4)
    own = scores[np.arange(300), labels]
    assert flags.flagged.any()
    for c in range(4):
        mine = labels == c
        hit, miss = own[mine & flags.flagged], own[mine & ~flags.flagged]
        if len(hit) and len(miss):
            assert hit.max() <= miss.min()
        assert flags.noise_rate[c] == pytest.approx(len(hit) / mine.sum())
        row = flags.dense_joint()[c]
        expected = np.rint((row.sum() - row[c]) / row.sum() * mine.sum())
        assert len(hit) == expected
    has = flags.confident_class >= 0
    assert flags.dense_joint().sum() == has.sum()


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
    for j in range(5):
        assert flags.noise_rate[j] == pytest.approx((given[wrong] == j).sum() / (given == j).sum())
    want = np.zeros((5, 5), dtype=int)
    np.add.at(want, (given, true), 1)
    np.testing.assert_array_equal(flags.dense_joint(), want)
