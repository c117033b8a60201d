"""The outlier benchmark (``noisyclean.bench.outliers``): how rows are drawn, its
ranking figures, and runs end to end on real images."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import EXAMPLE_MANIFEST, SmallSet, feature_config

from noisyclean.bench.outliers import (
    DEFAULT_PAIRS,
    JUNK,
    NOT_INSTALLED,
    Pool,
    choose_rows,
    default_pairs,
    max_rows,
    parse_pair,
    ranking,
    run_outliers_bench,
)
from noisyclean.errors import NoisyCleanError
from noisyclean.manifest import load_manifest

CLASSES = ["A", "B", "C", "D"]


def _pool(per_class: int = 50, n_junk: int = 10) -> Pool:
    true = np.repeat(np.array(CLASSES, dtype=object), per_class)
    usable = np.ones(len(true), dtype=bool)
    usable[::25] = False  # a few missing images
    return Pool(
        true=np.r_[true, np.full(n_junk, JUNK, dtype=object)],
        usable=np.r_[usable, np.ones(n_junk, dtype=bool)],
        junk=np.r_[np.zeros(len(true), dtype=bool), np.ones(n_junk, dtype=bool)],
        n_manifest=len(true),
    )


def test_rows_are_drawn_from_usable_rows_with_the_held_out_classes_as_outliers() -> None:
    pool = _pool()
    pos, out = choose_rows(pool, ["A", "B"], 80, 0.1, seed=0)
    assert len(pos) == 80 and out.sum() == 8 and (np.diff(pos) > 0).all()
    assert pool.usable[pos].all() and not pool.junk[pos].any()
    assert set(pool.true[pos[out]]) <= {"A", "B"} and set(pool.true[pos[~out]]) == {"C", "D"}
    again = choose_rows(pool, ["A", "B"], 80, 0.1, seed=0)
    assert (again[0] == pos).all() and (again[1] == out).all()
    # Every pair draws its in-set rows in one seeded order: they overlap across pairs.
    other, out2 = choose_rows(pool, ["C", "D"], 80, 0.1, seed=0)
    assert set(pool.true[other[~out2]]) == {"A", "B"}
    jpos, jout = choose_rows(pool, [JUNK], 50, 0.1, seed=0)
    assert pool.junk[jpos[jout]].all() and jout.sum() == 5 and not pool.junk[jpos[~jout]].any()
    with pytest.raises(NoisyCleanError, match="too few rows"):
        choose_rows(pool, ["A", "B"], 200, 0.1, seed=0)


def test_the_most_rows_a_scenario_can_have() -> None:
    pool = _pool()  # 48 usable rows a class, 10 junk images
    n = max_rows(pool, ["A", "B"], 0.1)
    assert n == 107  # 96 in-set rows and 11 outliers; 108 would need 97 in-set rows
    choose_rows(pool, ["A", "B"], n, 0.1, seed=0)
    with pytest.raises(NoisyCleanError):
        choose_rows(pool, ["A", "B"], n + 1, 0.1, seed=0)
    assert max_rows(pool, [JUNK], 0.02) == 196  # 192 in-set rows; junk is made as needed
    assert max_rows(pool, [JUNK], 0.1, n_junk=10) == 105
    few = pool.usable.copy()
    few[:100] = False
    few[40:50] = True  # 10 usable rows of A, none of B: the outliers run out first
    assert max_rows(Pool(pool.true, few, pool.junk, pool.n_manifest), ["A", "B"], 0.1) == 105


def test_scenario_names() -> None:
    assert parse_pair("Shirt, Sandal") == ["Shirt", "Sandal"] and parse_pair(JUNK) == [JUNK]
    for bad in ("A,", "A,A", ""):
        with pytest.raises(ValueError):
            parse_pair(bad)
    fashion = ["Ankle_boot", "Bag", "Coat", "Dress", "Pullover", "Sandal", "Shirt", "Sneaker"]
    assert default_pairs([*fashion, "T-shirt_top", "Trouser"]) == list(DEFAULT_PAIRS)
    assert default_pairs(fashion) == ["Shirt,Sandal", "Coat,Sneaker", JUNK]
    other = default_pairs(["cat", "dog", "emu", "fox", "gnu"], seed=3)
    assert (
        len(other) == 2
        and other[1] == JUNK
        and set(parse_pair(other[0]))
        < {
            "cat",
            "dog",
            "emu",
            "fox",
            "gnu",
        }
    )
    assert default_pairs(["cat", "dog"]) == [JUNK]


def test_ranking_matches_scikit_learn_and_puts_nan_last() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    truth = rng.random(300) < 0.1
    score = np.round(rng.normal(size=300) + 2 * truth, 1)  # with ties
    got = ranking(score, truth)
    assert got["auroc"] == pytest.approx(metrics.roc_auc_score(truth, score), abs=1e-12)
    assert got["ap"] == pytest.approx(metrics.average_precision_score(truth, score), abs=1e-12)
    top = np.argsort(-score, kind="stable")[: truth.sum()]
    assert got["p_at_n"] == truth[top].mean()
    score[truth] = np.nan
    assert ranking(score, truth)["auroc"] == 0.0


def test_bad_options_and_scenarios_are_refused(small_set: SmallSet, tmp_path: Path) -> None:
    manifest = load_manifest(small_set.manifest)
    kw = {"features": feature_config(tmp_path / "cache"), "rate": 0.1}
    with pytest.raises(NoisyCleanError, match="'Hat'"):
        run_outliers_bench(manifest, tmp_path, pairs=["Bag,Hat"], rows=50, **kw)
    with pytest.raises(NoisyCleanError, match="too few rows"):
        run_outliers_bench(manifest, tmp_path, pairs=["Bag,Trouser"], rows=95, **kw)
    with pytest.raises(NoisyCleanError, match="no outlier"):
        run_outliers_bench(manifest, tmp_path, pairs=[JUNK], rows=4, **kw)
    with pytest.raises(ValueError, match="rate"):
        run_outliers_bench(manifest, tmp_path, pairs=[JUNK], rows=50, **{**kw, "rate": 0.0})
    assert not (tmp_path / "results.json").exists()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_junk_images_score_above_in_set_rows_and_the_outputs_agree(
    feature_cache: Path, tmp_path: Path
) -> None:
    manifest = load_manifest(EXAMPLE_MANIFEST)
    out = tmp_path / "out"
    result = run_outliers_bench(
        manifest,
        out,
        features=feature_config(feature_cache),
        rows=300,
        rate=0.03,
        pairs=["Bag,Trouser", JUNK],
        thresholds=[3.0, 5.0],
    )
    # Generated images of nothing (blanks, noise, text, shapes...) rank far above the
    # Fashion-MNIST rows they are planted among.
    assert result.junk is not None
    assert result.junk["noisyclean"]["auroc"] >= 0.9
    assert result.junk["noisyclean"]["p_at_n"] >= 0.4

    r = json.loads((out / "results.json").read_text())
    assert r["rows"] == result.rows == 300 and [p["pair"] for p in r["pairs"]] == [
        ["Bag", "Trouser"],
        [JUNK],
    ]
    for p in r["pairs"]:
        assert p["rows"] == 300 and p["outliers"] == 9 and p["clean"]["rows"] == 291
        assert set(p["thresholds"]) == {"3", "5"} and len(p["variants"]) >= 5
        for m in p["methods"].values():
            assert 0.0 <= m["auroc"] <= 1.0 and 0.0 <= m["p_at_n"] <= 1.0
    held = r["pairs"][0]["methods"]
    assert r["mean"]["methods"]["noisyclean"]["auroc"] == held["noisyclean"]["auroc"]
    assert result.methods["noisyclean"]["auroc"] == held["noisyclean"]["auroc"]
    assert r["features"] == {"backbone": "efficientnet-lite0", "image_size": 64}
    # Junk images live in the work folder, under the output by default.
    assert len(list((out / "work" / "junk").glob("junk-0-*.png"))) == 9

    md = (out / "results.md").read_text()
    assert md == result.markdown
    for name, m in r["mean"]["methods"].items():
        assert f"| {name} | {m['auroc']:.3f} | {m['ap']:.3f} | {m['p_at_n']:.3f} |" in md
    for name, m in r["pairs"][1]["methods"].items():
        assert f"| junk | {name} | {m['auroc']:.3f} |" in md
    if "cleanlab" in sys.modules and not r["not_installed"]:
        assert set(held) == {"noisyclean", "cleanlab-ood", "datalab"}
        assert "datalab" in r["pairs"][1]["clean"]
    assert result.headline[0].startswith("300 rows per scenario")
    assert any(line.startswith("junk: AUROC noisyclean") for line in result.headline)


@pytest.mark.timeout(120)
def test_without_cleanlab_the_peers_say_not_installed(
    small_set: SmallSet, feature_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "cleanlab", None)
    monkeypatch.setitem(sys.modules, "cleanlab.outlier", None)
    result = run_outliers_bench(
        load_manifest(small_set.manifest),
        tmp_path / "out",
        features=feature_config(feature_cache),
        rows=60,
        rate=0.1,
        pairs=[JUNK],
        clean=False,
        work=tmp_path / "work",
    )
    assert set(result.not_installed) == {"cleanlab-ood", "datalab"}
    assert all(why.startswith(NOT_INSTALLED) for why in result.not_installed.values())
    assert set(result.methods) == {"noisyclean"} and result.junk is not None
    assert result.junk["noisyclean"]["auroc"] > 0.5
    r = json.loads((tmp_path / "out" / "results.json").read_text())
    assert r["not_installed"] == result.not_installed and r["pairs"][0]["clean"] == {}
    assert f"| datalab | {NOT_INSTALLED} |" in result.markdown
    assert any(line.startswith("cleanlab-ood: not installed") for line in result.headline)
    assert len(list((tmp_path / "work" / "junk").glob("*.png"))) == 6
