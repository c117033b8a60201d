"""Outliers: rows that belong to no class (a logo, a blank, an object outside the label set).

A relabel cannot fix such a row, so it is kept apart from the wrong-label suspicion: a
flagged row's suggestion is ``drop``. Every usable row gets an ``outlier`` score from
parts measured in the backbone space that Phase 1 already worked in:

- ``centroid`` (how far the class it fits best is, geometrically): ``1 − max_c
  cos(x, μ_c)``, the cosine distance to the nearest class centroid, μ_c the direction of
  the mean unit feature of class c's train rows (a train row is left out of its own
  class's mean);
- ``spread`` (how well it fits its best class, in Phase 1's eyes): the perplexity
  ``exp(H(p))`` of its T best confidences normalised to sum to 1, p_i = C_i / Σ_j C_j:
  about 1 for a row of one class, 2 for one between two look-alike classes, up to T for
  a row that fits none (its neighbours and the MLP spread their votes over many classes);
- ``confidence``: ``1 − max_c C[x, c]``, and ``neighbours``: the mean cosine distance
  ``1 − s`` to the k nearest train rows of Phase 1's search (cleanlab's
  ``OutOfDistribution`` score on features, made monotone). Both are reported; neither is
  in the default score (``docs/design.md`` §5: planted outliers come in groups of
  look-alikes, each other's neighbours, and the neighbour distance ranks them below the
  in-set rows' median).

Each part ``p`` is put on one scale by a robust z-score against the usable train rows,
``z = (t(p) − median) / (1.4826 · MAD)``, with ``t(p) = log(p + ε)`` for the two
distances (right-skewed, bounded below; ε is a hundredth of their median) and ``t(p) =
p`` for the others, and a least scale per part (``_MIN_SCALE``: half a class for the
spread); optionally per class (the median and MAD of the rows whose nearest centroid is
the same class). The parts' mean ``m`` is standardised the same way:

    score = (m − median(m)) / (1.4826 · MAD(m))

so the score reads as "robust standard deviations above a typical train row", and a row
is flagged when ``score > threshold`` (default ``DEFAULT_THRESHOLD``): a rule that needs
no knowledge of the outlier rate. ``docs/design.md`` §5 has the measurements behind
the defaults.

Nothing here holds a dense (N, K) array: features are read in chunks (a memory map
works), class sums are grouped by sorting each chunk, and class similarities are computed
for at most about ``_CHUNK_VALUES`` values (rows × classes) at a time. The centroid
distance costs one (N, D) × (D, K) product, in chunks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from noisyclean.confidence import TopClasses
from noisyclean.configs import OUTLIER_PARTS as PARTS
from noisyclean.configs import OUTLIER_THRESHOLD, OutlierConfig

__all__ = ["PARTS", "OutlierConfig", "OutlierScores", "outlier_scores"]

#: The parts standardised in log: distances, right-skewed and bounded below.
_DISTANCES = frozenset({"centroid", "neighbours"})
#: The least scale of each part's z-score, in its own units (after the log for the
#: distances): differences smaller than this are not evidence. A Phase 1 sure of nearly
#: every row makes the spread's MAD tiny; without its floor of half a class, a row
#: between two look-alike classes (a relabel question) would score as an outlier.
_MIN_SCALE = {"spread": 0.5, "confidence": 0.05, "centroid": 0.05, "neighbours": 0.05}
#: The default cut-off of the score (robust standard deviations); see docs/design.md.
DEFAULT_THRESHOLD = OUTLIER_THRESHOLD
#: Rows read at a time, at most...
_CHUNK_ROWS = 65_536
#: ...and at most about this many values (rows × feature dimensions, rows × classes).
_CHUNK_VALUES = 1 << 22
#: 1.4826 · MAD estimates the standard deviation of a normal distribution.
_MAD_SCALE = 1.4826


@dataclass(frozen=True)
class OutlierScores:
    """Every row's outlier score, its flag and the parts it was built from.

    Attributes:
        score: (N,) float32, robust standard deviations above a typical train row (see
            the module's docstring); NaN for a row without one (not usable, or one of
            the parts is missing).
        is_outlier: (N,) bool, ``score > threshold``; suggest ``drop``.
        threshold: the cut-off used.
        centroid_distance: (N,) float32, cosine distance to the nearest class centroid;
            NaN unless usable.
        nearest_class: (N,) int64, the class of that centroid; -1 unless usable.
        spread: (N,) float32, perplexity of Phase 1's confidences over the row's best
            classes, in [1, T]; NaN without confidences or unless usable.
        confidence_gap: (N,) float32, 1 − Phase 1's confidence in the row's best class;
            NaN without confidences or unless usable.
        neighbour_distance: (N,) float32, mean cosine distance to the k nearest train
            rows; NaN without similarities, where a row has no neighbour, or unless usable.
        parts: the parts averaged into ``score``.
        reference: (N,) bool, the rows whose medians and MADs set the scale (usable
            train rows with every part).
        config: the options used.
    """

    score: np.ndarray
    is_outlier: np.ndarray
    threshold: float
    centroid_distance: np.ndarray
    nearest_class: np.ndarray
    spread: np.ndarray
    confidence_gap: np.ndarray
    neighbour_distance: np.ndarray
    parts: tuple[str, ...]
    reference: np.ndarray
    config: OutlierConfig


def neighbour_distance(
    similarities: np.ndarray, neighbours: np.ndarray | None = None
) -> np.ndarray:
    """(N,) float32 mean cosine distance ``1 − s`` over each row's found neighbours.

    Args:
        similarities: (N, k) cosine similarities; ``-inf`` or NaN pads.
        neighbours: (N, k) their positions; ``-1`` pads (default: pads by similarity only).

    Returns:
        The mean over the row's non-pad entries; NaN for a row with none.
    """
    n = len(similarities)
    out = np.full(n, np.nan, dtype=np.float32)
    for start in range(0, n, _CHUNK_ROWS):
        s = np.asarray(similarities[start : start + _CHUNK_ROWS], dtype=np.float64)
        valid = np.isfinite(s)
        if neighbours is not None:
            valid &= np.asarray(neighbours[start : start + _CHUNK_ROWS]) >= 0
        found = valid.sum(axis=1)
        total = np.where(valid, 1.0 - np.clip(np.where(valid, s, 0.0), -1.0, 1.0), 0.0).sum(axis=1)
        mean = np.divide(total, found, out=np.full(len(s), np.nan), where=found > 0)
        out[start : start + _CHUNK_ROWS] = mean
    return out


def _chunk(width: int) -> int:
    """Rows per chunk for (rows, ``width``) temporaries."""
    return int(min(_CHUNK_ROWS, max(64, _CHUNK_VALUES // max(width, 1))))


def _unit_chunk(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` as unit-length float32 (a new array; zero rows stay zero)."""
    x = np.array(x, dtype=np.float32)
    x /= np.maximum(np.sqrt(np.einsum("nd,nd->n", x, x)), 1e-12)[:, None]
    return x


def class_sums(
    features: np.ndarray, labels: np.ndarray, rows: np.ndarray, n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class sums of unit features over ``rows``, read in chunks.

    Args:
        features: (N, D) features (a memory map works; rows are made unit length).
        labels: (N,) class index of each row.
        rows: positions of the rows to sum (e.g. the usable train rows).
        n_classes: K.

    Returns:
        ``(sums, counts)``: (K, D) float64 and (K,) int64.
    """
    rows = np.asarray(rows, dtype=np.int64)
    sums = np.zeros((n_classes, features.shape[1]), dtype=np.float64)
    step = _chunk(features.shape[1])
    for start in range(0, len(rows), step):
        part = rows[start : start + step]
        lab = np.asarray(labels[part], dtype=np.int64)
        order = np.argsort(lab, kind="stable")
        lab = lab[order]
        x = _unit_chunk(features[part[order]])
        first = np.flatnonzero(np.concatenate([[True], lab[1:] != lab[:-1]]))
        sums[lab[first]] += np.add.reduceat(x, first, axis=0, dtype=np.float64)
    counts = np.bincount(np.asarray(labels[rows], dtype=np.int64), minlength=n_classes)
    return sums, counts


def centroid_distance(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    rows: np.ndarray,
    train: np.ndarray,
    sums: np.ndarray,
    counts: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine distance of ``rows`` to their nearest class centroid.

    A centroid is the direction of its class's sum of unit train features; a train row
    is left out of its own class's sum (a class whose only train row it is has no
    centroid for it).

    Args:
        features: (N, D) features (a memory map works).
        labels: (N,) class index of each row.
        rows: positions of the rows to score.
        train: (N,) bool, the rows ``sums`` was summed over.
        sums: (K, D) per-class sums of unit train features (``class_sums``).
        counts: (K,) train rows per class.

    Returns:
        ``(distance, nearest)``: (R,) float32 ``1 − max_c cos(x, μ_c)`` and (R,) int64
        that class; NaN and -1 where no class has a centroid.
    """
    n_classes = len(counts)
    rows = np.asarray(rows, dtype=np.int64)
    norms = np.linalg.norm(sums, axis=1)
    has = (counts > 0) & (norms > 1e-12)
    unit = (sums / np.maximum(norms, 1e-12)[:, None]).astype(np.float32)
    square = (norms * norms).astype(np.float64)
    distance = np.full(len(rows), np.nan, dtype=np.float32)
    nearest = np.full(len(rows), -1, dtype=np.int64)
    step = _chunk(max(n_classes, features.shape[1]))
    for start in range(0, len(rows), step):
        part = rows[start : start + step]
        x = _unit_chunk(features[part])
        sims = x @ unit.T
        own = np.asarray(labels[part], dtype=np.int64)
        inside = np.flatnonzero(np.asarray(train[part], dtype=bool))
        c = own[inside]
        dot = sims[inside, c].astype(np.float64) * norms[c]  # x·S of its own class
        sims[:, ~has] = -np.inf
        # A train row's own class, without it: cos(x, S − x) = (x·S − |x|²) / |S − x|.
        if len(inside):
            self_sq = np.einsum("nd,nd->n", x[inside], x[inside]).astype(np.float64)
            rest = np.sqrt(np.maximum(square[c] - 2.0 * dot + self_sq, 0.0))
            alone = (counts[c] <= 1) | (rest <= 1e-9)
            loo = np.divide(dot - self_sq, rest, out=np.zeros_like(dot), where=~alone)
            sims[inside, c] = np.where(alone, -np.inf, loo).astype(np.float32)
        best = np.argmax(sims, axis=1)
        top = sims[np.arange(len(part)), best]
        ok = np.isfinite(top)
        distance[start : start + step] = np.where(ok, 1.0 - np.clip(top, -1.0, 1.0), np.nan)
        nearest[start : start + step] = np.where(ok, best, -1)
    return distance, nearest


def _grouped_median(values: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """(G,) median of ``values`` within each group (NaN for an empty group); one sort."""
    counts = np.bincount(groups, minlength=n_groups)
    order = np.lexsort((values, groups))
    ordered = values[order]
    starts = np.cumsum(counts) - counts
    low = starts + np.maximum(counts - 1, 0) // 2
    high = starts + counts // 2
    safe = np.minimum(np.stack([low, high]), max(len(values) - 1, 0))
    picked = ordered[safe] if len(values) else np.zeros_like(safe, dtype=np.float64)
    return np.where(counts > 0, 0.5 * (picked[0] + picked[1]), np.nan)


def robust_z(
    values: np.ndarray,
    reference: np.ndarray,
    *,
    groups: np.ndarray | None = None,
    n_groups: int = 0,
    min_rows: int = 30,
    min_scale: float = 0.0,
) -> np.ndarray:
    """(N,) robust z-scores ``(v − median) / (1.4826 · MAD)`` against the ``reference`` rows.

    Args:
        values: (N,) values; NaN stays NaN.
        reference: (N,) bool, the rows that set the median and MAD.
        groups: (N,) group of each row in [0, n_groups) (or -1: global); each group with
            at least ``min_rows`` reference rows gets its own median and MAD.
        n_groups: G.
        min_rows: reference rows a group needs.
        min_scale: the least scale (1.4826 · MAD) used, in the values' units.
    """
    values = np.asarray(values, dtype=np.float64)
    ref = np.asarray(reference, dtype=bool) & np.isfinite(values)
    if not ref.any():
        return np.full(len(values), np.nan)
    v = values[ref]
    centre = float(np.median(v))
    scale = _MAD_SCALE * float(np.median(np.abs(v - centre)))
    floor = max(min_scale, 1e-6 * (abs(centre) + 1.0), 1e-12)
    centres = np.full(len(values), centre)
    scales = np.full(len(values), max(scale, floor))
    if groups is not None and n_groups > 0:
        g = np.asarray(groups, dtype=np.int64)
        in_group = ref & (g >= 0)
        gv, gg = values[in_group], g[in_group]
        g_centre = _grouped_median(gv, gg, n_groups)
        g_scale = _MAD_SCALE * _grouped_median(np.abs(gv - g_centre[gg]), gg, n_groups)
        enough = np.bincount(gg, minlength=n_groups) >= min_rows
        own = (g >= 0) & enough[np.maximum(g, 0)]
        centres[own] = g_centre[g[own]]
        # A class's scale is never below half the global one: a tight class must not
        # turn small differences into large scores.
        scales[own] = np.maximum(g_scale[g[own]], 0.5 * scales[own])
    return (values - centres) / scales


def confidence_spread(confidences: TopClasses) -> tuple[np.ndarray, np.ndarray]:
    """Phase 1's view of how well each row fits its best class.

    Returns:
        ``(spread, gap)``, each (N,) float32: the perplexity ``exp(H(p))`` of the row's
        T best confidences normalised to sum to 1 (1: one class, T: all alike; T for a
        row with no confidence at all), and ``1 − max_c C[x, c]``.
    """
    n, width = confidences.scores.shape
    spread = np.empty(n, dtype=np.float32)
    gap = np.empty(n, dtype=np.float32)
    for start in range(0, n, _CHUNK_ROWS):
        sc = np.clip(
            np.asarray(confidences.scores[start : start + _CHUNK_ROWS], np.float64), 0, None
        )
        given = np.asarray(confidences.given[start : start + _CHUNK_ROWS], dtype=np.float64)
        total = sc.sum(axis=1, keepdims=True)
        p = np.divide(sc, total, out=np.full_like(sc, 1.0 / max(width, 1)), where=total > 0)
        entropy = -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=1)
        spread[start : start + _CHUNK_ROWS] = np.exp(entropy)
        best = np.maximum(sc.max(axis=1, initial=0.0), given)
        gap[start : start + _CHUNK_ROWS] = np.clip(1.0 - best, 0.0, 1.0)
    return spread, gap


def outlier_scores(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    train: np.ndarray,
    n_classes: int,
    confidences: TopClasses | None = None,
    similarities: np.ndarray | None = None,
    neighbours: np.ndarray | None = None,
    usable: np.ndarray | None = None,
    config: OutlierConfig | None = None,
) -> OutlierScores:
    """Score every row by how little it belongs to any class, and flag the outliers.

    Args:
        features: (N, D) backbone features (unit length or not; may be a memory map,
            read in chunks, never changed); rows that aren't usable are ignored.
        labels: (N,) given class index of each row (read for usable train rows: the
            centroids).
        train: (N,) bool, train rows: they make the centroids and set the scale.
        n_classes: K.
        confidences: Phase 1's confidences of the N rows; needed by the ``spread`` and
            ``confidence`` parts (the default uses ``spread``).
        similarities: (N, k) cosine similarities of each row's k nearest train rows,
            from Phase 1's search (a train row is never its own neighbour); ``-inf``
            pads. Needed by the ``neighbours`` part; reported when given.
        neighbours: (N, k) those neighbours' positions, ``-1`` pads (optional: pads are
            also read from the similarities).
        usable: (N,) bool, rows with features (default: all).
        config: options; defaults to ``OutlierConfig()``.

    Returns:
        OutlierScores of all N rows, in input order.

    Raises:
        ValueError: a part of ``config.parts`` lacks its input.
    """
    cfg = config or OutlierConfig()
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    ok = np.ones(n, dtype=bool) if usable is None else np.asarray(usable, dtype=bool)
    is_train = np.asarray(train, dtype=bool) & ok
    needs = {"neighbours": similarities, "spread": confidences, "confidence": confidences}
    missing = [p for p in cfg.parts if p in needs and needs[p] is None]
    if missing:
        raise ValueError(f"the {', '.join(missing)} part needs its input (see outlier_scores)")

    rows = np.flatnonzero(ok)
    sums, counts = class_sums(features, labels, np.flatnonzero(is_train), n_classes)
    centroid = np.full(n, np.nan, dtype=np.float32)
    nearest = np.full(n, -1, dtype=np.int64)
    centroid[rows], nearest[rows] = centroid_distance(
        features, labels, rows=rows, train=is_train, sums=sums, counts=counts
    )
    spread = np.full(n, np.nan, dtype=np.float32)
    gap = np.full(n, np.nan, dtype=np.float32)
    if confidences is not None:
        all_spread, all_gap = confidence_spread(confidences)
        spread[rows], gap[rows] = all_spread[rows], all_gap[rows]
    near = np.full(n, np.nan, dtype=np.float32)
    if similarities is not None:
        near = neighbour_distance(similarities, neighbours)
        near[~ok] = np.nan

    values = {"centroid": centroid, "spread": spread, "confidence": gap, "neighbours": near}
    chosen = {p: values[p].astype(np.float64) for p in cfg.parts}
    have = ok.copy()
    for v in chosen.values():
        have &= np.isfinite(v)
    reference = have & is_train
    zs = []
    for part, v in chosen.items():
        if part in _DISTANCES:  # right-skewed, bounded below: standardised in log
            v = np.log(np.maximum(v, 0.0) + _log_floor(v, reference))
        groups = nearest if cfg.per_class else None
        zs.append(
            robust_z(
                v,
                reference,
                groups=groups,
                n_groups=n_classes,
                min_rows=cfg.min_class_rows,
                min_scale=_MIN_SCALE[part],
            )
        )
    score = zs[0] if len(zs) == 1 else robust_z(np.mean(np.stack(zs), axis=0), reference)
    score = np.where(have, score, np.nan).astype(np.float32)
    return OutlierScores(
        score=score,
        is_outlier=np.nan_to_num(score, nan=-np.inf) > cfg.threshold,
        threshold=cfg.threshold,
        centroid_distance=centroid,
        nearest_class=nearest,
        spread=spread,
        confidence_gap=gap,
        neighbour_distance=near,
        parts=tuple(cfg.parts),
        reference=reference,
        config=cfg,
    )


def _log_floor(values: np.ndarray, reference: np.ndarray) -> float:
    """ε of ``log(p + ε)``: a hundredth of the reference rows' median (at least 1e-6), so
    that rows at 0 (an exact duplicate's distance) stay finite and near the others."""
    v = values[reference & np.isfinite(values)]
    return max(0.01 * float(np.median(v)) if len(v) else 0.0, 1e-6)
