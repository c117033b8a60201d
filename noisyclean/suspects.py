"""Suspected mislabels: Phase 1's confidences joined with a vote in the learned space.

Each usable row's k nearest neighbours in the Phase-2 embedding vote for their own
labels, each vote weighted by the neighbour's Phase-1 confidence in its own label,
so that doubted rows carry little weight. The combined score of class c is
``weight * C[x, c] + (1 - weight) * vote[x, c]``.

Suspects are flagged on the combined scores by ``noisyclean.flagging``'s rule:
per-class thresholds estimate how many labels are wrong, and that many of the least
supported rows are flagged (or a review budget of them). A row's support is its
combined score for its label over that plus its best other class's; ``suspicion`` is
``1 - support``, the order of the review. A fixed cut-off on the raw score would flag
every row of a class the model finds hard, and none of an easy one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from noisyclean import knn
from noisyclean.artifacts import id_lists
from noisyclean.confidence import TopClasses
from noisyclean.configs import SuspectConfig
from noisyclean.flagging import Flags, sparse_flags

#: Scores made dense per chunk are at most about this many values (rows × classes).
_CHUNK_VALUES = 1 << 22


@dataclass(frozen=True)
class Suspects:
    """Every row's suspicion, suggested label and neighbours, as arrays.

    Attributes:
        suggested: (N,) class index suggested instead of the given label; -1 unless usable.
        suspicion: (N,) float32, 1 − support (best other / (own + best other) of the
            combined scores); NaN unless usable.
        confidence: (N,) float32, Phase 1's C[x, label]; NaN unless usable.
        agreement: (N,) float32, the weighted vote for the given label; NaN unless usable.
        neighbours: (N, k) the nearest train rows (row positions), nearest first; -1 pads.
        given_neighbours: (N, show) the nearest train rows with the given label.
        suggested_neighbours: (N, show) the nearest train rows with the suggested label.
        is_suspect: (N,) bool, flagged.
        rank: (N,) int64, 1 = most suspicious; 0 unless usable.
        flags: the flags over the usable rows.
        usable: (N,) bool, the rows ``flags`` describes.
        classes: class names.
        config: the options used.
        search: how the learned-space search ran (the voters' self-search).
    """

    suggested: np.ndarray
    suspicion: np.ndarray
    confidence: np.ndarray
    agreement: np.ndarray
    neighbours: np.ndarray
    given_neighbours: np.ndarray
    suggested_neighbours: np.ndarray
    is_suspect: np.ndarray
    rank: np.ndarray
    flags: Flags
    usable: np.ndarray
    classes: list[str]
    config: SuspectConfig
    search: knn.SearchInfo | None = None

    def table(self, ids: pa.Array | pa.ChunkedArray, labels: np.ndarray) -> pa.Table:
        """suspects.parquet's columns but ``path`` and ``status``, built from the arrays
        (no Python object per value). ``ids`` are the N row ids, ``labels`` their class
        indices."""
        names = pa.array(self.classes, type=pa.string())
        usable = self.usable
        if isinstance(ids, pa.ChunkedArray):  # a big column from pandas comes in chunks
            ids = ids.combine_chunks()

        def label_column(codes: np.ndarray, valid: np.ndarray) -> pa.Array:
            idx = pa.array(np.where(valid, codes, 0).astype(np.int32), mask=~valid)
            return pa.DictionaryArray.from_arrays(idx, names).cast(pa.string())

        def floats(values: np.ndarray) -> pa.Array:
            return pa.array(values.astype(np.float32), mask=~usable)

        return pa.table(
            {
                "id": ids,
                "label": label_column(labels, np.ones(len(labels), dtype=bool)),
                "suggested_label": label_column(self.suggested, usable),
                "suspicion": floats(self.suspicion),
                "confidence": floats(self.confidence),
                "neighbour_agreement": floats(self.agreement),
                "neighbours": id_lists(ids, self.neighbours, usable),
                "neighbours_suggested": id_lists(ids, self.suggested_neighbours, usable),
                "is_suspect": pa.array(self.is_suspect),
                "rank": pa.array(self.rank, mask=~usable),
                "neighbours_given": id_lists(ids, self.given_neighbours, usable),
            }
        )


def _first_of_class(
    near: np.ndarray, near_labels: np.ndarray, wanted: np.ndarray, n: int
) -> np.ndarray:
    """(B, n): per row, the first ``n`` entries of ``near`` whose label is ``wanted``; -1 pads."""
    hit = (near_labels == wanted[:, None]) & (near >= 0)
    position = np.cumsum(hit, axis=1) - 1
    out = np.full((len(near), n), -1, dtype=np.int64)
    rows, cols = np.nonzero(hit & (position < n))
    out[rows, position[rows, cols]] = near[rows, cols]
    return out


def find_suspects(
    embeddings: np.ndarray,
    confidences: TopClasses,
    *,
    usable: np.ndarray,
    train: np.ndarray,
    config: SuspectConfig | None = None,
    classes: list[str],
    progress: knn.Progress | None = None,
) -> Suspects:
    """Rank every usable row by how likely its label is wrong.

    Args:
        embeddings: (N, E) learned embeddings (rows that aren't usable are ignored).
        confidences: Phase 1's C of the N rows, with their given labels.
        usable: (N,) bool, rows with features.
        train: (N,) bool, usable rows whose labels the embedding was trained on; only
            they vote (test rows are voted on, but never vote).
        config: options.
        classes: K class names.
        progress: called as the neighbour index is built and searched.

    Returns:
        Suspects of every input row, in input order.
    """
    cfg = config or SuspectConfig()
    labels = confidences.labels
    n, n_classes = len(labels), confidences.n_classes
    rows = np.flatnonzero(usable)
    voters = np.flatnonzero(train)
    weights = confidences.given[voters]

    # Each usable row's `pool` nearest voters, never itself: the vote takes the first k.
    pool = min(cfg.pool, max(len(voters) - 1, 1))
    near = np.full((n, max(pool, cfg.k)), -1, dtype=np.int64)
    is_voter = np.isin(rows, voters)
    info: knn.SearchInfo | None = None
    for query, self_ in ((rows[is_voter], True), (rows[~is_voter], False)):
        if len(query) == 0:
            continue
        # A voter never votes on itself; voters are searched in their own order then.
        voter_rows = knn.Rows(embeddings, voters)
        q_emb = voter_rows if self_ else knn.Rows(embeddings, query)
        _, idx, found = knn.search_with_info(
            voter_rows, q_emb, k=near.shape[1], exclude_self=self_, progress=progress
        )
        info = info or found
        target = voters if self_ else query
        near[target] = np.where(idx >= 0, voters[np.maximum(idx, 0)], -1)
    # Positions within `voters`, for the vote.
    voter_pos = np.full(n, -1, dtype=np.int64)
    voter_pos[voters] = np.arange(len(voters))

    suggested = np.full(n, -1, dtype=np.int64)
    agreement = np.full(n, np.nan, dtype=np.float32)
    suspicion = np.full(n, np.nan, dtype=np.float32)
    width = min(n_classes, confidences.classes.shape[1] + cfg.k + 1)
    cand_classes = np.zeros((len(rows), width), dtype=np.int32)
    cand_scores = np.zeros((len(rows), width), dtype=np.float32)
    own = np.zeros(len(rows), dtype=np.float32)
    step = max(256, _CHUNK_VALUES // max(n_classes, 1))
    for start in range(0, len(rows), step):
        part = rows[start : start + step]
        first = near[part, : cfg.k]
        nb = np.where(first >= 0, voter_pos[np.maximum(first, 0)], -1)
        vote = knn.vote(nb, labels[voters], n_classes, weights=weights)
        combined = cfg.weight * confidences.dense(part) + (1.0 - cfg.weight) * vote
        top = TopClasses.from_dense(combined, labels[part], width=width)
        cand_classes[start : start + step] = top.classes
        cand_scores[start : start + step] = top.scores
        own[start : start + step] = top.given
        agreement[part] = vote[np.arange(len(part)), labels[part]]

    flags = sparse_flags(
        own, cand_classes, cand_scores, labels[rows], n_classes, budget=cfg.flag_budget
    )
    # The class it is confidently of, where that is another class; else the best other.
    other = cand_classes != labels[rows, None]
    best_other = cand_classes[np.arange(len(rows)), other.argmax(axis=1)]
    confident = flags.confident_class
    suggested[rows] = np.where(
        (confident >= 0) & (confident != labels[rows]), confident, best_other
    )
    suspicion[rows] = 1.0 - flags.support

    given_nb = np.full((n, cfg.show), -1, dtype=np.int64)
    sugg_nb = np.full((n, cfg.show), -1, dtype=np.int64)
    for start in range(0, len(rows), 65_536):
        part = rows[start : start + 65_536]
        pool_rows = near[part]
        pool_labels = np.where(pool_rows >= 0, labels[np.maximum(pool_rows, 0)], -1)
        given_nb[part] = _first_of_class(pool_rows, pool_labels, labels[part], cfg.show)
        sugg_nb[part] = _first_of_class(pool_rows, pool_labels, suggested[part], cfg.show)

    is_suspect = np.zeros(n, dtype=bool)
    is_suspect[rows] = flags.flagged
    rank = np.zeros(n, dtype=np.int64)
    # By support (suspicion's float64 source): a budget's rows are ranks 1..budget.
    rank[rows[np.argsort(flags.support, kind="stable")]] = np.arange(1, len(rows) + 1)
    confidence = np.full(n, np.nan, dtype=np.float32)
    confidence[rows] = confidences.given[rows]
    return Suspects(
        suggested=suggested,
        suspicion=suspicion,
        confidence=confidence,
        agreement=agreement,
        neighbours=np.where(usable[:, None], near[:, : cfg.k], -1),
        given_neighbours=given_nb,
        suggested_neighbours=sugg_nb,
        is_suspect=is_suspect,
        rank=rank,
        flags=flags,
        usable=usable,
        classes=classes,
        config=cfg,
        search=info,
    )
