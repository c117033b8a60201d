"""Suspected mislabels: Phase 1's confidences joined with a vote in the learned space.

Each usable row's k nearest neighbours in the Phase-2 embedding vote for their own
labels, each vote weighted by the neighbour's Phase-1 confidence in its own label,
so that doubted rows carry little weight. The combined score of class c is
``weight * C[x, c] + (1 - weight) * vote[x, c]``; ``suspicion = 1 - combined[x, label]``.

Suspects are flagged on the combined scores by confident learning's rule with
prune-by-class (``noisyclean.flagging``): per-class thresholds estimate how many of
each class's labels are wrong, and that many least-supported rows of the class are
flagged. A fixed cut-off would flag every row of a class the model finds hard, and
none of an easy one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from noisyclean import knn
from noisyclean.configs import SuspectConfig
from noisyclean.flagging import Flags, confident_flags


@dataclass(frozen=True)
class Suspects:
    """The suspects table and what the summary needs.

    Attributes:
        table: one row per input row, in input order (columns of suspects.parquet
            except ``path`` and ``status``, which the caller knows).
        flags: per-class-threshold flags over the usable rows.
        usable: (N,) bool, the rows ``flags`` describes.
        classes: class names.
        config: the options used.
    """

    table: pd.DataFrame
    flags: Flags
    usable: np.ndarray
    classes: list[str]
    config: SuspectConfig


def _nearest_of_class(
    emb: np.ndarray,
    labels: np.ndarray,
    pool: np.ndarray,
    queries: np.ndarray,
    wanted: np.ndarray,
    n: int,
) -> list[np.ndarray]:
    """Per query row, the ``n`` nearest pool rows labelled ``wanted[query]``, itself excluded."""
    out: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * len(queries)
    for c in np.unique(wanted):
        members = pool[labels[pool] == c]
        asking = np.flatnonzero(wanted == c)
        if len(members) == 0 or len(asking) == 0:
            continue
        _, idx = knn.search(emb[members], emb[queries[asking]], k=n + 1)
        for j, row in zip(asking, idx, strict=True):
            found = members[row[row >= 0]]
            out[j] = found[found != queries[j]][:n]
    return out


def find_suspects(
    embeddings: np.ndarray,
    labels: np.ndarray,
    confidences: np.ndarray,
    *,
    ids: np.ndarray,
    usable: np.ndarray,
    train: np.ndarray,
    classes: list[str],
    config: SuspectConfig | None = None,
) -> Suspects:
    """Rank every usable row by how likely its label is wrong.

    Args:
        embeddings: (N, E) learned embeddings (rows that aren't usable are ignored).
        labels: (N,) given class indices.
        confidences: (N, K) Phase-1 confidences C.
        ids: (N,) row ids.
        usable: (N,) bool, rows with features.
        train: (N,) bool, usable rows whose labels the embedding was trained on; only
            they vote (test rows are voted on, but never vote).
        classes: K class names.
        config: options.

    Returns:
        Suspects with one table row per input row, in input order.
    """
    cfg = config or SuspectConfig()
    n, n_classes = len(labels), len(classes)
    rows = np.flatnonzero(usable)
    voters = np.flatnonzero(train)
    weights = confidences[voters, labels[voters]]

    vote = np.zeros((n, n_classes), dtype=np.float32)
    near = np.full((n, cfg.k), -1, dtype=np.int64)
    is_voter = np.isin(rows, voters)
    for query, self_ in ((rows[is_voter], True), (rows[~is_voter], False)):
        if len(query) == 0:
            continue
        # A voter never votes on itself; voters are searched in their own order then.
        q_emb = embeddings[voters] if self_ else embeddings[query]
        _, idx = knn.search(embeddings[voters], q_emb, k=cfg.k, exclude_self=self_)
        target = voters if self_ else query
        vote[target] = knn.vote(idx, labels[voters], n_classes, weights=weights)
        near[target] = np.where(idx >= 0, voters[np.maximum(idx, 0)], -1)

    combined = cfg.weight * confidences + (1.0 - cfg.weight) * vote
    flags = confident_flags(combined[rows], labels[rows], n_classes)
    others = np.where(np.arange(n_classes)[None, :] == labels[rows, None], -np.inf, combined[rows])
    # The class it is confidently of, where that is another class; else the best other.
    confident = flags.confident_class
    suggested = np.where(
        (confident >= 0) & (confident != labels[rows]), confident, others.argmax(1)
    )
    suspicion = 1.0 - combined[rows, labels[rows]]

    given_nb = _nearest_of_class(embeddings, labels, voters, rows, labels[rows], cfg.show)
    sugg_nb = _nearest_of_class(embeddings, labels, voters, rows, suggested, cfg.show)

    names = np.asarray(classes, dtype=object)
    table = pd.DataFrame(
        {
            "id": ids,
            "label": names[labels],
            "suggested_label": None,
            "suspicion": np.nan,
            "confidence": np.nan,
            "neighbour_agreement": np.nan,
            "neighbours": None,
            "neighbours_suggested": None,
            "is_suspect": False,
            "rank": pd.array([pd.NA] * n, dtype="Int64"),
            "neighbours_given": None,
        }
    ).astype({"suspicion": np.float32, "confidence": np.float32, "neighbour_agreement": np.float32})
    table.loc[rows, "suggested_label"] = names[suggested]
    table.loc[rows, "suspicion"] = suspicion.astype(np.float32)
    table.loc[rows, "confidence"] = confidences[rows, labels[rows]].astype(np.float32)
    table.loc[rows, "neighbour_agreement"] = vote[rows, labels[rows]]
    table.loc[rows, "is_suspect"] = flags.flagged
    id_arr = np.asarray(ids, dtype=object)
    table["neighbours"] = pd.Series(
        [[str(id_arr[j]) for j in near[i] if j >= 0] if usable[i] else None for i in range(n)],
        dtype=object,
    )
    for col, lists in (("neighbours_suggested", sugg_nb), ("neighbours_given", given_nb)):
        column: list[list[str] | None] = [None] * n
        for pos, i in enumerate(rows):
            column[i] = [str(id_arr[j]) for j in lists[pos]]
        table[col] = pd.Series(column, dtype=object)
    order = rows[np.argsort(-suspicion, kind="stable")]
    table.loc[order, "rank"] = np.arange(1, len(order) + 1)
    return Suspects(table=table, flags=flags, usable=usable, classes=classes, config=cfg)
