"""The near-duplicate benchmark (``noisyclean.bench.duplicates``): its scoring on pairs
whose truth is known, its image set, and a run end to end on 100 real images."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import SMALL_SIZE, SmallSet, feature_config
from PIL import Image

from noisyclean.bench.duplicates import (
    OPS,
    RESAVE,
    Truth,
    build_set,
    choose,
    make_copy,
    run_duplicates_bench,
    score_pairs,
)
from noisyclean.duplicates import COSINE_THRESHOLD, MATCH_THRESHOLD
from noisyclean.manifest import load_manifest


def _image(seed: int = 0, size: int = 28) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8))


def test_copies_are_seeded_and_use_only_the_ops_asked_for() -> None:
    img = _image()
    first = make_copy(img, np.random.default_rng([0, 1, 0]))
    assert first == make_copy(img, np.random.default_rng([0, 1, 0]))
    assert set(first[2]["ops"].split("+")) <= set(OPS)
    for seed in range(20):
        data, ext, params = make_copy(img, np.random.default_rng(seed), ("jpeg",))
        assert (ext, params["ops"]) == (".jpg", "jpeg") and 60 <= params["quality"] <= 90
        data, ext, params = make_copy(img, np.random.default_rng(seed), ("crop", "resize"))
        assert ext == ".png" and params["ops"] in ("crop", "resize", "crop+resize")
    data, ext, params = make_copy(img, np.random.default_rng(0), ())
    assert (ext, params) == (".png", {"ops": RESAVE})
    with Image.open(io.BytesIO(data)) as copy:
        assert (np.asarray(copy) == np.asarray(img)).all()


def test_pair_precision_leaves_out_natural_pairs_and_strict_precision_does_not() -> None:
    # Originals 0-3; row 4 copies 0 (relabelled), row 5 copies 1. Originals 1 and 2 are
    # near-duplicates themselves (cosine 0.99), 0 and 3 are not (0.5).
    unit = np.array(
        [[1, 0, 0], [0, 1, 0], [0, 0.99, np.sqrt(1 - 0.99**2)], [0.5, 0, np.sqrt(0.75)]],
        dtype=np.float32,
    )
    unit = np.r_[unit, unit[[0, 1]]]
    truth = Truth(
        origin=np.array([0, 1, 2, 3, 0, 1]),
        is_copy=np.array([0, 0, 0, 0, 1, 1], bool),
        relabelled=np.array([0, 0, 0, 0, 1, 0], bool),
        is_test=np.zeros(6, bool),
        labels=np.array([0, 1, 1, 0, 1, 1]),
        ops=np.array(["", "", "", "", "jpeg", "crop"], dtype=object),
    )
    pairs = np.array([[0, 4], [1, 5], [2, 5], [3, 4], [1, 2]])
    got = score_pairs(pairs, truth, unit, cut=0.95)
    assert got["true_positive"] == 2 and got["false_positive"] == 1
    assert got["natural_explained"] == 1 and got["natural_pairs"] == 1
    assert got["precision"] == round(2 / 3, 4) and got["precision_strict"] == 0.5
    assert got["recall"] == 1.0 and got["conflict_recall"] == 1.0
    # At a stricter rule the originals 1 and 2 are no near-duplicates: (2, 5) is wrong.
    assert score_pairs(pairs, truth, unit, cut=0.995)["precision"] == 0.5


def test_the_best_threshold_meets_both_targets_when_one_does() -> None:
    sweep = [
        {"threshold": 0.90, "precision": 0.90, "recall": 1.00},  # best F1, misses precision
        {"threshold": 0.95, "precision": 0.96, "recall": 0.95},
        {"threshold": 0.97, "precision": 1.00, "recall": 0.80},
        {"threshold": 0.99, "precision": None, "recall": 0.10},
    ]
    assert choose(sweep)["threshold"] == 0.95
    assert choose(sweep[2:])["threshold"] == 0.97  # none meets both: best F1


def test_the_image_set_is_the_same_for_a_seed(small_set: SmallSet, tmp_path: Path) -> None:
    manifest = load_manifest(small_set.manifest)
    a = build_set(manifest, 50, 0.2, 3, tmp_path / "a")
    b = build_set(manifest, 50, 0.2, 3, tmp_path / "b")
    c = build_set(manifest, 50, 0.2, 4, tmp_path / "c")
    fa, fb = a.frame, b.frame
    assert (fa.drop(columns="path") == fb.drop(columns="path")).all().all()
    copies = fa.index[fa["is_copy"]]
    assert len(copies) >= 10 and fa["relabelled"].sum() == round(len(copies) / 2)
    for i in copies:
        assert Path(fa.at[i, "path"]).read_bytes() == Path(fb.at[i, "path"]).read_bytes()
        assert Path(fa.at[i, "path"]).parent == tmp_path / "a" / "copies"
    # An original's copy keeps its true label; a relabelled one gets another class.
    origin_label = fa["label"].to_numpy()[fa["origin"].to_numpy()]
    assert (fa["true_label"] == origin_label).all()
    assert (fa["relabelled"] == (fa["label"] != fa["true_label"])).all()
    assert set(c.frame["id"]) != set(fa["id"])  # another seed, other originals
    # A rerun into the same folder leaves the files (and their cached features) alone.
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "a").rglob("*") if p.is_file()}
    build_set(manifest, 50, 0.2, 3, tmp_path / "a")
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}


@pytest.mark.timeout(180)
def test_png_resaved_copies_are_all_found_and_the_outputs_agree(
    small_set: SmallSet, feature_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = load_manifest(small_set.manifest)
    out = tmp_path / "out"
    kw = {"features": feature_config(feature_cache), "copies": 0.2, "ops": (), "seed": 1}
    result = run_duplicates_bench(manifest, out, rows=None, **kw)

    # Every copy is an exact re-save of its original: all found, and no pair with a copy
    # in it is wrong, once the originals' own near-duplicates (at 64 px there are some)
    # are left out; strict precision counts those.
    assert result.precision == 1.0 and result.recall == 1.0 and result.conflict_recall == 1.0
    r = json.loads((out / "results.json").read_text())
    d = r["at_default"]
    assert d["false_positive"] == 0 and d["true_positive"] == r["set"]["true_pairs"]
    assert result.precision_strict == round(d["true_positive"] / d["pairs_with_copy"], 4)
    assert r["set"]["originals"] == 100 and r["set"]["copies"] >= 20
    assert r["at_default"]["copy_recall_by_ops"] == {RESAVE: 1.0}
    assert r["at_default"]["leak_recall"] == 1.0
    assert r["default_threshold"] == MATCH_THRESHOLD == result.threshold
    assert r["pixel_check"]["pairs"] > 0 and r["cosine_only"]["cosine"] == COSINE_THRESHOLD
    assert r["match"]["copy_to_original_by_ops"][RESAVE]["q0"] >= 0.999  # a re-save is exact
    assert r["best"]["threshold"] == result.best_threshold
    assert r["at_default"]["natural_pairs"] == result.natural_pairs
    assert {"set", "features", "sweep", "datalab", "similarity", "match", "timing"} <= set(r)
    for name in ("results.md", "natural.png", "copies.png"):
        assert (out / name).stat().st_size > 0
    assert (out / "work" / "copies").is_dir()  # the copies live under the output by default

    md = (out / "results.md").read_text()
    assert md == result.markdown
    assert (
        f"| noisyclean (default) | match ≥ {MATCH_THRESHOLD} | {d['precision']:.4f} "
        f"| {d['precision_strict']:.4f} | {d['recall']:.4f} | {d['conflict_recall']:.4f} |"
    ) in md
    assert len(r["sweep"]) == md.count("\n| 0.")
    if r["datalab_status"] == "ran":
        dl = r["datalab"]
        assert result.datalab_recall == dl["recall"]
        assert f"| cosine ≥ {dl['cosine_threshold']:.4f} | {dl['precision']:.4f} |" in md
        assert any(line.startswith("Datalab near_duplicate (cosine") for line in result.headline)
    assert any(f"recall {result.recall:.4f}" in line for line in result.headline)

    # Without cleanlab: the same figures, Datalab's row says so.
    (out / "work" / "datalab.npz").unlink(missing_ok=True)
    monkeypatch.setitem(sys.modules, "cleanlab", None)
    again = run_duplicates_bench(manifest, out, rows=None, **kw)
    assert again.datalab == "not installed" and again.datalab_recall is None
    assert "| Datalab near_duplicate | not installed |" in again.markdown
    assert again.results["at_default"] == r["at_default"] and again.results["sweep"] == r["sweep"]
    assert "Datalab near_duplicate: not installed" in again.headline


@pytest.mark.timeout(240)
def test_the_cli_runs_each_suite(small_set: SmallSet, feature_cache: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from noisyclean.cli import app

    common = ["--backbone", "efficientnet-lite0", "--image-size", str(SMALL_SIZE)]
    common += ["--cache-dir", str(feature_cache), "--device", "cpu", "--workers", "0"]
    runner = CliRunner()
    manifest = str(small_set.manifest)
    dup_args = ["bench", manifest, "--suite", "duplicates", "--copies", "0.2", "--no-peers"]
    dup = runner.invoke(app, [*dup_args, *common, "-o", str(tmp_path / "d")])
    assert dup.exit_code == 0, dup.output
    assert "100 originals" in dup.output and (tmp_path / "d" / "results.md").is_file()
    out_args = ["bench", manifest, "--suite", "outliers", "--pair", "junk", "--rate", "0.05"]
    out = runner.invoke(app, [*out_args, *common, "--folds", "3", "-o", str(tmp_path / "o")])
    assert out.exit_code == 0, out.output
    assert json.loads((tmp_path / "o" / "results.json").read_text())["pairs"]
    for args, says in (
        (["--suite", "labels"], "needs at least one --noise"),
        (["--suite", "faces"], "--suite must be labels, duplicates or outliers"),
    ):
        bad = runner.invoke(app, ["bench", manifest, *args, "-o", str(tmp_path / "x")])
        assert bad.exit_code == 1 and says in bad.output
