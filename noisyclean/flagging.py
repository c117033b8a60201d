"""Which labels to flag: confident learning's joint with per-class thresholds that noise
does not pull down, and one ranking of the rows.

Northcutt, Jiang & Chuang, "Confident Learning: Estimating Uncertainty in Dataset
Labels", JAIR 2021, with the changes measured in ``docs/design.md`` (§4.2, §5).

1. A row is *confidently* of class j when its score for j reaches t_j, the upper
   quartile of the scores for j over the rows labelled j. Each class gets its own
   threshold because scores are not calibrated across classes. Confident learning
   takes the mean; wrong labels score near 0 for the class they carry and pull the mean
   down by about the noise rate, so hard clean rows reach another class's threshold and
   the estimate rises with the noise it measures. The upper quartile stays among the
   clean rows while under 75% of a class is wrong.
2. The confident joint J counts rows by (given label, confident class). Calibrated
   so that each given class's row sums to its row count, its off-diagonal share
   estimates how many of that class's labels are wrong: n_c. A row of class j reaches
   t_j less often the noisier the rows labelled j are, so each cell is first divided
   by the rate at which its confident class's rows reach their threshold.
3. Flags by support: a row's *support* is its score for its own label over that plus
   its best other class's score. The Σ n_c least supported rows of all are flagged, or
   the B least supported with a review budget B: support, unlike a raw score, compares
   between classes, and one ranking over all rows does not carry each class's own
   estimation error into the flags (§5.11 measures both).
4. The overall estimate gets a 95% interval from a bootstrap over rows (the joint's
   cells resampled, thresholds held), and the flagged set an expected precision: the
   mean of ``1 − support`` over it.
5. Each class's estimate moves toward the overall one by the share ``B`` of the
   classes' scatter that sampling alone explains (empirical Bayes), but never by more
   than its own bootstrap standard deviation (Efron and Morris's limited translation):
   where every class has about the same noise their differences are sampling and
   shrink; a class far from the rest keeps its distance, less one standard deviation at
   most, so a few dirty classes among many still show. The total, and so the flags, do
   not move.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The per-class threshold is this quantile of the class's own-label scores (§5).
THRESHOLD_QUANTILE = 0.75
#: Bootstrap draws for the noise estimate's interval.
BOOTSTRAP_DRAWS = 200


@dataclass(frozen=True)
class Flags:
    """Flags of N rows over K classes.

    Attributes:
        flagged: (N,) bool, the row is among the sum(n_c) least supported rows of all
            (the budget's, with a budget).
        support: (N,) own score / (own score + best other class's score), in [0, 1]
            (0 where both are 0): the ranking, lowest first.
        confident_class: (N,) the class each row is confidently of (highest score among
            the classes whose threshold it reaches), or -1 for none.
        thresholds: (K,) per-class thresholds t_j.
        noise_rate: (K,) estimated share of wrong labels per given class, n_c / count_c.
        noise_low, noise_high: (K,) its 95% bootstrap interval per class.
        noise: the estimated share of wrong labels over all N rows, sum(n_c) / N.
        noise_interval: its 95% bootstrap interval (low, high).
        expected_precision: the mean of 1 - support over the flagged rows (NaN for none).
        budget: the number of rows asked for instead of the estimate, or None.
        shrinkage: B, the share of the per-class estimates' scatter that sampling
            explains, by which each moved toward the overall estimate (at most by its own
            standard deviation).
        joint: (P, 3) the confident joint's nonzero cells as rows of (given label,
            confident class, count), sorted: sparse, since K may be in the thousands.
    """

    flagged: np.ndarray
    support: np.ndarray
    confident_class: np.ndarray
    thresholds: np.ndarray
    noise_rate: np.ndarray
    noise_low: np.ndarray
    noise_high: np.ndarray
    noise: float
    noise_interval: tuple[float, float]
    expected_precision: float
    budget: int | None
    shrinkage: float
    joint: np.ndarray

    def summary(self) -> dict[str, float | int | None]:
        """The figures a person reads: estimate, interval, flagged count, expected
        precision, budget (JSON-ready)."""
        return {
            "noise": round(self.noise, 6),
            "noise_low": round(self.noise_interval[0], 6),
            "noise_high": round(self.noise_interval[1], 6),
            "flagged": int(self.flagged.sum()),
            "expected_precision": None
            if np.isnan(self.expected_precision)
            else round(self.expected_precision, 6),
            "budget": self.budget,
        }

    def seen_instead(self, given: int, n: int = 2) -> list[tuple[int, int]]:
        """The ``n`` classes rows labelled ``given`` are most often confidently of instead,
        as (class, count), most frequent first."""
        rows = self.joint[(self.joint[:, 0] == given) & (self.joint[:, 1] != given)]
        order = np.argsort(-rows[:, 2], kind="stable")[:n]
        return [(int(rows[i, 1]), int(rows[i, 2])) for i in order]

    def dense_joint(self) -> np.ndarray:
        """(K, K) counts of (given label, confident class); for small K only."""
        k = len(self.thresholds)
        out = np.zeros((k, k), dtype=np.int64)
        out[self.joint[:, 0], self.joint[:, 1]] = self.joint[:, 2]
        return out


def confident_flags(
    scores: np.ndarray, labels: np.ndarray, n_classes: int, *, budget: int | None = None
) -> Flags:
    """Flag rows by per-class thresholds and support, from dense scores.

    Args:
        scores: (N, K) per-class scores in [0, 1] (need not sum to 1).
        labels: (N,) given class index of each row.
        n_classes: K.
        budget: flag this many rows instead of the estimated number of wrong labels.
    """
    scores = np.asarray(scores)
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    own = scores[np.arange(n), labels] if n else np.zeros(0)
    classes = np.broadcast_to(np.arange(n_classes), (n, n_classes))
    return sparse_flags(own, classes, scores, labels, n_classes, budget=budget)


def sparse_flags(
    own: np.ndarray,
    classes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    *,
    budget: int | None = None,
    seed: int = 0,
) -> Flags:
    """Flag rows by per-class thresholds and support, from each row's candidate classes.

    A class that is not among a row's candidates scores 0 there. With every class a
    candidate this is exactly the dense rule; with each row's top classes it differs
    only where a class outside them would have reached its threshold.

    Args:
        own: (N,) each row's score for its given label.
        classes: (N, M) candidate class indices; -1 pads. A class may repeat in a row
            (with the same score).
        scores: (N, M) their scores.
        labels: (N,) given class index of each row.
        n_classes: K.
        budget: flag this many rows (at most N) instead of the estimated number of
            wrong labels; None for the estimate.
        seed: of the bootstrap.
    """
    if budget is not None and budget < 0:
        raise ValueError(f"budget must be at least 0, got {budget}")
    own = np.asarray(own, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    classes = np.asarray(classes)
    n = len(labels)
    counts = np.bincount(labels, minlength=n_classes)
    # Rows by (label, own score): each class's rows in a run, for its quantile.
    order = np.lexsort((own, labels))
    start_of = np.concatenate([[0], np.cumsum(counts)[:-1]])
    thresholds = _class_quantiles(own[order], start_of, counts, THRESHOLD_QUANTILE)

    confident = np.full(n, -1, dtype=np.int64)
    best_other = np.zeros(n)
    for start in range(0, n, _CHUNK):
        c = classes[start : start + _CHUNK]
        sc = np.asarray(scores[start : start + _CHUNK], dtype=np.float64)
        valid = c >= 0
        reach = valid & (sc >= thresholds[np.where(valid, c, 0)])
        best = np.where(reach, sc, -np.inf).max(axis=1, initial=-np.inf)
        # Ties go to the lowest class index, as a dense argmax would.
        tied = reach & (sc == best[:, None])
        pick = np.where(tied, c, n_classes).min(axis=1, initial=n_classes)
        confident[start : start + _CHUNK] = np.where(pick < n_classes, pick, -1)
        other = valid & (c != labels[start : start + _CHUNK, None])
        best_other[start : start + _CHUNK] = np.where(other, sc, 0.0).max(axis=1, initial=0.0)

    has = confident >= 0
    cell, cell_count = np.unique(labels[has] * n_classes + confident[has], return_counts=True)
    joint = np.stack([cell // n_classes, cell % n_classes, cell_count], axis=1).astype(np.int64)
    joint = joint.reshape(-1, 3)
    reached = np.divide(
        np.bincount(labels, weights=own >= thresholds[labels], minlength=n_classes),
        counts,
        out=np.zeros(n_classes),
        where=counts > 0,
    )
    n_wrong = _wrong_counts(joint, counts, reached, n_classes)

    total = own + best_other
    support = np.divide(own, total, out=np.zeros(n), where=total > 0)
    n_flag = int(n_wrong.sum()) if budget is None else min(int(budget), n)
    flagged = np.zeros(n, dtype=bool)
    # The least supported rows of all (ties: earlier row first).
    flagged[np.argsort(support, kind="stable")[:n_flag]] = True
    noise_rate = np.divide(n_wrong, counts, out=np.zeros(n_classes), where=counts > 0)
    low, high, interval = _bootstrap(joint, counts, reached, n_classes, seed)
    overall = float(n_wrong.sum() / n) if n else 0.0
    shrinkage, move = _limited_shrink(noise_rate, low, high, counts > 0, overall)
    noise_rate, low, high = (np.clip(v + move, 0.0, 1.0) for v in (noise_rate, low, high))
    return Flags(
        flagged=flagged,
        support=support,
        confident_class=confident,
        thresholds=thresholds,
        noise_rate=noise_rate,
        noise_low=low,
        noise_high=high,
        noise=overall,
        noise_interval=interval,
        expected_precision=float(1.0 - support[flagged].mean()) if n_flag else float("nan"),
        budget=budget,
        shrinkage=shrinkage,
        joint=joint,
    )


def _limited_shrink(
    rates: np.ndarray, low: np.ndarray, high: np.ndarray, present: np.ndarray, overall: float
) -> tuple[float, np.ndarray]:
    """B and each class's move toward ``overall``: ``B·(overall − rate)``, at most its
    standard deviation either way (0 for absent classes).

    ``B = s² / (s² + τ²)``: s² the mean sampling variance of the present classes'
    estimates (their 95% bootstrap intervals read as ±1.96 sd), τ² their mean squared
    distance from ``overall`` less s² (at least 0). B is 0 with fewer than two classes.
    """
    move = np.zeros(len(rates))
    if present.sum() < 2:
        return 0.0, move
    sd = (high - low) / (2 * 1.96)
    s2 = float(np.mean(sd[present] ** 2))
    tau2 = max(float(np.mean((rates[present] - overall) ** 2)) - s2, 0.0)
    b = s2 / (s2 + tau2) if s2 + tau2 > 0 else 0.0
    move[present] = np.clip(b * (overall - rates[present]), -sd[present], sd[present])
    return b, move


def _class_quantiles(
    sorted_own: np.ndarray, start_of: np.ndarray, counts: np.ndarray, q: float
) -> np.ndarray:
    """Each class's ``q`` quantile (linear, as numpy's default) of its rows' own scores,
    given them sorted by (class, score); 1 for a class with no rows."""
    present = counts > 0
    pos = q * np.maximum(counts - 1, 0)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, np.maximum(counts - 1, 0))
    at_lo = np.where(present, start_of + lo, 0)
    at_hi = np.where(present, start_of + hi, 0)
    if not len(sorted_own):
        return np.ones(len(counts))
    value = sorted_own[at_lo] + (pos - lo) * (sorted_own[at_hi] - sorted_own[at_lo])
    return np.where(present, value, 1.0)


def _wrong_counts(
    joint: np.ndarray, counts: np.ndarray, reached: np.ndarray, n_classes: int
) -> np.ndarray:
    """n_c: each class's count times its off-diagonal share of the confident joint, each
    cell weighted by how likely its rows were to be counted (0 where its row of the
    joint is empty; round half to even).

    ``reached[j]`` is the share of the rows labelled j whose score reaches t_j. A row
    of true class j reaches t_j about as often as that class's clean rows do:
    ``min(1, reached[j] / (1 − ρ_j))``, with ρ_j the share of wrong labels among the
    rows labelled j (from the unweighted joint). So J[i, j] counts the class-j rows
    labelled i at that rate, and each cell is divided by it. With equal noise in every
    class the weights cancel.
    """

    def shares(weights: np.ndarray) -> np.ndarray:
        row = np.bincount(joint[:, 0], weights=weights, minlength=n_classes)
        off = joint[:, 0] != joint[:, 1]
        off_sums = np.bincount(joint[off, 0], weights=weights[off], minlength=n_classes)
        return np.divide(off_sums, row, out=np.zeros(n_classes), where=row > 0)

    cells = joint[:, 2].astype(np.float64)
    clean = 1.0 - shares(cells)
    rate = np.minimum(1.0, np.divide(reached, clean, out=np.ones(n_classes), where=clean > 0))
    rate = np.where(rate > 0, rate, 1.0)
    return np.rint(shares(cells / rate[joint[:, 1]]) * counts).astype(np.int64)


def _bootstrap(
    joint: np.ndarray, counts: np.ndarray, reached: np.ndarray, n_classes: int, seed: int
) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """95% intervals of the per-class and overall estimates, resampling the rows.

    A row is its (given label, confident class or none) cell, so resampling rows is a
    draw over the cells: the Poisson bootstrap (each cell's count drawn from a Poisson
    of its count), the usual large-sample stand-in for the multinomial one. The
    thresholds and the shares reaching them are held at their values (quantiles of
    whole classes: they move little).
    """
    n = int(counts.sum())
    if n == 0:
        return np.zeros(n_classes), np.zeros(n_classes), (0.0, 0.0)
    # Cells with a confident class, then one "none" cell per class.
    none = counts - np.bincount(joint[:, 0], weights=joint[:, 2], minlength=n_classes)
    cls = np.flatnonzero(none > 0)
    given = np.concatenate([joint[:, 0], cls])
    conf = np.concatenate([joint[:, 1], np.full(len(cls), -1)])
    cell_counts = np.concatenate([joint[:, 2], none[cls]])
    rng = np.random.default_rng(seed)
    rates = np.empty((BOOTSTRAP_DRAWS, n_classes))
    overall = np.empty(BOOTSTRAP_DRAWS)
    has = conf >= 0
    for b in range(BOOTSTRAP_DRAWS):
        draw = rng.poisson(cell_counts)
        drawn_counts = np.bincount(given, weights=draw, minlength=n_classes)
        sample = np.stack([given[has], conf[has], draw[has]], axis=1)
        wrong = _wrong_counts(sample, drawn_counts, reached, n_classes)
        rates[b] = np.divide(wrong, drawn_counts, out=np.zeros(n_classes), where=drawn_counts > 0)
        overall[b] = wrong.sum() / max(int(draw.sum()), 1)
    low, high = np.percentile(rates, [2.5, 97.5], axis=0)
    lo_all, hi_all = np.percentile(overall, [2.5, 97.5])
    return low, high, (float(lo_all), float(hi_all))


#: Rows per chunk when comparing candidates with thresholds: bounds the temporaries.
_CHUNK = 65_536
