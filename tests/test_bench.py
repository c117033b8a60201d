"""`noisyclean bench`: a smoke run on ~500 real rows, plus the runner's pure parts."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import BACKBONE, EXAMPLE_DIR, SMALL_SIZE, write_csv
from typer.testing import CliRunner

from noisyclean.bench.methods import METHODS
from noisyclean.bench.noise import parse_noise
from noisyclean.bench.runner import DETECTORS, RETRIEVERS, BenchConfig, _stratified_holdout, goals
from noisyclean.cli import app

DETECTION = ("auroc", "ap", "p_at_n", "flag_precision", "flag_recall", "flag_f1")
RECALL = ("recall@1", "recall@2", "recall@4", "recall@8")


def test_stratified_holdout_keeps_class_shares() -> None:
    labels = np.repeat(np.arange(4), [100, 50, 30, 20])
    test = _stratified_holdout(labels, 0.3, seed=0)
    assert [int(test[labels == c].sum()) for c in range(4)] == [30, 15, 9, 6]
    assert (test == _stratified_holdout(labels, 0.3, seed=0)).all()


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="at least one"):
        BenchConfig(noises=())
    with pytest.raises(ValueError, match="unknown method"):
        BenchConfig(noises=(parse_noise("pair:0.3"),), methods=("magic",))
    with pytest.raises(ValueError, match="test_fraction"):
        BenchConfig(noises=(parse_noise("pair:0.3"),), test_fraction=1.0)


def test_goals_state_met_or_not_with_the_margin() -> None:
    rows = [
        ("symmetric:0.4", "noisyclean-confidence", "auroc", 0.96),
        ("symmetric:0.4", "noisyclean-suspicion", "auroc", 0.97),
        ("symmetric:0.4", "cleanlab", "auroc", 0.93),
        ("symmetric:0.4", "knn-vote", "auroc", 0.98),
        ("symmetric:0.4", "smooth-proxy-anchor", "recall@1", 0.82),
        ("symmetric:0.4", "proxy-anchor", "recall@1", 0.79),
    ]
    summary = pd.DataFrame(
        [
            {"noise": n, "method": m, "figure": f, "mean": v, "std": 0.0, "n": 1}
            for n, m, f, v in rows
        ]
    )
    lines = goals(summary, ["symmetric:0.4"])
    assert "detection AUROC 0.970 vs best peer knn-vote 0.980 (-0.010) — NOT met" in lines[0]
    assert "Recall@1 82.00 vs proxy-anchor 79.00 (+3.00 points) — met" in lines[1]


@pytest.mark.slow
def test_bench_smoke_every_method_reports_every_figure(tmp_path: Path, feature_cache: Path) -> None:
    rows = list(pd.read_csv(EXAMPLE_DIR / "manifest.csv", dtype=str).to_dict("records"))
    random.Random(0).shuffle(rows)
    train = [r for r in rows if r["split"] == "train"][:350]
    test = [r for r in rows if r["split"] == "test"][:150]
    for r in train + test:
        r["path"] = str(EXAMPLE_DIR / r["path"])
    manifest = write_csv(tmp_path / "bench.csv", train + test)
    out = tmp_path / "bench"
    result = CliRunner().invoke(
        app,
        [
            "bench",
            str(manifest),
            "--noise",
            "symmetric:0.2",
            "--noise",
            "pair:0.3",
            "--seeds",
            "1",
            "-o",
            str(out),
            "--backbone",
            BACKBONE,
            "--image-size",
            str(SMALL_SIZE),
            "--cache-dir",
            str(feature_cache),
            "--device",
            "cpu",
            "--workers",
            "0",
            "--epochs",
            "2",
            "--folds",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["errors"] == []
    assert results["rows"] == {"usable": 500, "train": 350, "test": 150}
    summary = pd.DataFrame(results["summary"])
    for noise in ("symmetric:0.2", "pair:0.3"):
        for method in DETECTORS:
            have = set(summary[(summary.noise == noise) & (summary.method == method)].figure)
            assert set(DETECTION) <= have, (noise, method)
        for method in RETRIEVERS:
            have = set(summary[(summary.noise == noise) & (summary.method == method)].figure)
            assert set(RECALL) <= have, (noise, method)
        for method in METHODS:
            have = set(summary[(summary.noise == noise) & (summary.method == method)].figure)
            assert {"seconds", "peak_rss_mb", "rss_increase_mb"} <= have, (noise, method)
    tp = results["throughput"]
    assert tp["pipeline_images_per_s"] > 0 and tp["bare_forward_images_per_s"] > 0
    md = (out / "results.md").read_text()
    assert "## Detection — pair:0.3" in md and "## Goals" in md
    assert (out / "precision_recall.png").stat().st_size > 1000
    assert (out / "recall_vs_noise.png").stat().st_size > 1000
    assert not (out / "work").exists()
