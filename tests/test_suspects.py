"""The suspect finder on small constructed embeddings whose wrong labels are known."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from noisyclean.confidence import TopClasses
from noisyclean.suspects import SuspectConfig, Suspects, find_suspects

K = 3
CLASSES = ["a", "b", "c"]


def _clusters(per_class: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three well separated clusters on the unit circle; returns (embeddings, true labels)."""
    rng = np.random.default_rng(seed)
    angles = np.repeat(np.array([0.0, 2.1, 4.2]), per_class) + rng.normal(0, 0.1, 3 * per_class)
    emb = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    return emb, np.repeat(np.arange(K), per_class)


def _setup(flip: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    emb, true = _clusters()
    labels = true.copy()
    for i in flip:
        labels[i] = (true[i] + 1) % K
    # A weak out-of-sample Phase 1: it leans to the true class, never sure of anything.
    conf = np.eye(K, dtype=np.float32)[true] * 0.6 + 0.2
    return emb, true, labels, conf


def _run(emb, labels, conf, **kw):  # type: ignore[no-untyped-def]
    """find_suspects on dense confidences, every class kept; returns suspects.parquet's
    columns as pandas (ids r0, r1, …)."""
    n = len(labels)
    usable = kw.pop("usable", np.ones(n, dtype=bool))
    train = kw.pop("train", usable.copy())
    found = find_suspects(
        emb,
        TopClasses.from_dense(conf, labels, width=K),
        usable=usable,
        train=train,
        classes=CLASSES,
        **kw,
    )
    ids = pa.array([f"r{i}" for i in range(n)])
    return Found(found, found.table(ids, labels).to_pandas())


@dataclass(frozen=True)
class Found:
    suspects: Suspects
    table: pd.DataFrame


def test_flipped_rows_rank_first_with_their_true_class_suggested() -> None:
    flip = [3, 40, 75]
    emb, true, labels, conf = _setup(flip)
    found = _run(emb, labels, conf)
    t = found.table
    top = set(t.sort_values("rank").head(len(flip)).index)
    assert top == set(flip)
    assert t.loc[flip, "is_suspect"].all()
    assert list(t.loc[flip, "suggested_label"]) == [CLASSES[true[i]] for i in flip]
    # A clean row's neighbours agree with it; a flipped row's don't.
    assert t.loc[0, "neighbour_agreement"] > 0.9
    assert (t.loc[flip, "neighbour_agreement"] < 0.2).all()
    assert t["suggested_label"].ne(t["label"]).all()


def test_neighbour_lists() -> None:
    emb, _, labels, conf = _setup([3])
    found = _run(emb, labels, conf, config=SuspectConfig(k=7, show=4, pool=89))
    t = found.table
    label_of = dict(zip(t["id"], t["label"], strict=True))
    for _, r in t.iterrows():
        assert r["id"] not in r["neighbours"]
        assert len(r["neighbours"]) == 7
        assert len(r["neighbours_suggested"]) == 4
        assert {label_of[i] for i in r["neighbours_suggested"]} == {r["suggested_label"]}
        assert {label_of[i] for i in r["neighbours_given"]} == {r["label"]}
        assert r["id"] not in r["neighbours_given"]
    # nearest first: the first listed neighbour is the most similar other row
    sims = emb @ emb[10]
    sims[10] = -np.inf
    assert t.loc[10, "neighbours"][0] == f"r{int(np.argmax(sims))}"


def test_votes_are_weighted_by_the_voters_confidence() -> None:
    emb, _, labels, conf = _setup([])
    # Row 0's cluster votes for "a"; make every "a" voter doubt its label completely.
    doubted = conf.copy()
    doubted[labels == 0, 0] = 0.0
    t = _run(emb, labels, doubted).table
    assert t.loc[0, "neighbour_agreement"] == 0.0
    assert _run(emb, labels, conf).table.loc[0, "neighbour_agreement"] == 1.0


def test_rows_that_are_not_usable_keep_their_place_with_null_scores() -> None:
    emb, _, labels, conf = _setup([3])
    usable = np.ones(len(labels), dtype=bool)
    usable[[5, 50]] = False
    t = _run(emb, labels, conf, usable=usable).table
    assert len(t) == len(labels)
    assert list(t["id"]) == [f"r{i}" for i in range(len(labels))]
    assert t.loc[[5, 50], "rank"].isna().all()
    assert t.loc[[5, 50], "neighbours"].isna().all()
    assert t.loc[[5, 50], "suspicion"].isna().all()
    assert not t.loc[[5, 50], "is_suspect"].any()
    ranks = t["rank"].dropna().astype(int)
    assert sorted(ranks) == list(range(1, len(labels) - 1))
    for nb in t["neighbours"].dropna():
        assert "r5" not in nb and "r50" not in nb


def test_test_rows_are_voted_on_but_never_vote() -> None:
    emb, _, labels, conf = _setup([])
    train = np.ones(len(labels), dtype=bool)
    train[::3] = False
    t = _run(emb, labels, conf, train=train).table
    test_ids = set(t["id"][~train])
    for nb in t["neighbours"]:
        assert not test_ids & set(nb)
    assert t.loc[~train, "rank"].notna().all()


def test_rank_follows_suspicion() -> None:
    emb, _, labels, conf = _setup([3, 40])
    t = _run(emb, labels, conf).table.sort_values("rank")
    assert t["suspicion"].is_monotonic_decreasing


@pytest.mark.parametrize(
    "bad", [{"k": 0}, {"show": 0}, {"weight": 1.5}, {"weight": -0.1}, {"k": 20, "pool": 10}]
)
def test_config_rejects_bad_values(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        SuspectConfig(**bad)  # type: ignore[arg-type]


def test_table_takes_ids_in_chunks() -> None:
    """A million-row id column converted from pandas arrives as a ChunkedArray."""
    emb, _, labels, conf = _setup([3])
    found = _run(emb, labels, conf).suspects
    ids = [f"r{i}" for i in range(len(labels))]
    chunked = pa.chunked_array([ids[:40], ids[40:]])
    table = found.table(chunked, labels)
    assert table.column("id").to_pylist() == ids
    assert table.column("neighbours").to_pylist()[0][0] in ids
