"""The bench report: goals, the Markdown tables (against the committed results), no torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

from noisyclean.bench.report import RETRIEVERS, goals, render_markdown
from noisyclean.losses import LOSSES

DOCS = Path(__file__).resolve().parents[1] / "docs" / "bench"


def _summary(rows: list[tuple[str, str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"noise": n, "method": m, "figure": f, "mean": v, "std": 0.0, "n": 1}
            for n, m, f, v in rows
        ]
    )


def test_goals_state_met_or_not_with_the_margin() -> None:
    summary = _summary(
        [
            ("symmetric:0.4", "noisyclean-confidence", "auroc", 0.96),
            ("symmetric:0.4", "noisyclean-suspicion", "auroc", 0.97),
            ("symmetric:0.4", "cleanlab", "auroc", 0.93),
            ("symmetric:0.4", "knn-vote", "auroc", 0.98),
            ("symmetric:0.4", "smooth-proxy-anchor", "recall@1", 0.82),
            ("symmetric:0.4", "proxy-anchor", "recall@1", 0.79),
            ("symmetric:0.4", "noisyclean-confidence", "seconds", 12.0),
            ("symmetric:0.4", "cleanlab", "seconds", 30.0),
        ]
    )
    (auroc, auroc_met), (recall, recall_met), (speed, speed_met) = goals(summary, ["symmetric:0.4"])
    assert auroc == (
        "symmetric:0.4: detection AUROC 0.970 vs best peer knn-vote 0.980 (-0.010) — NOT met"
    )
    assert auroc_met is False  # though the text ends in "met"
    assert recall.endswith("Recall@1 82.00 vs proxy-anchor 79.00 (+3.00 points) — met")
    assert recall_met is True
    assert speed == "symmetric:0.4: score 12.0 s vs cleanlab 30.0 s on the same features — met"
    assert speed_met is True


def test_goals_skip_figures_the_summary_lacks() -> None:
    assert goals(_summary([("pair:0.3", "cleanlab", "auroc", 0.9)]), ["pair:0.3"]) == []


def test_markdown_of_the_committed_results_is_the_committed_markdown() -> None:
    results = json.loads((DOCS / "results.json").read_text())
    markdown = render_markdown(pd.DataFrame(results["summary"]), results)
    assert markdown == (DOCS / "results.md").read_text()


def test_retrievers_start_with_the_losses() -> None:
    assert RETRIEVERS[: len(LOSSES)] == LOSSES


def test_report_does_not_import_torch() -> None:
    code = "import sys, noisyclean.bench.report; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_goals_judge_multi_similarity_on_paired_differences_and_the_noise_estimate() -> None:
    noise = "symmetric:0.2"
    summary = _summary(
        [
            (noise, "smooth-proxy-anchor", "recall@1", 0.80),
            (noise, "multi-similarity", "recall@1", 0.80),
            (noise, "noisyclean-suspicion", "noise_est", 0.215),
            (noise, "noisyclean-suspicion", "noise_true", 0.2),
            (noise, "noisyclean-suspicion", "noise_err", 0.015),
            (noise, "noisyclean-suspicion", "class_err_max", 0.06),
            (noise, "noisyclean-suspicion", "flag_f1", 0.91),
            ("pair:0.3", "noisyclean-confidence", "noise_est", 0.27),
            ("pair:0.3", "noisyclean-confidence", "noise_true", 0.3),
            ("pair:0.3", "noisyclean-confidence", "noise_err", -0.03),
            ("pair:0.3", "noisyclean-confidence", "class_err_max", 0.06),
        ]
    )
    runs = [
        {"method": m, "noise": noise, "seed": s, "retrieval": {"recall@1": v}}
        for m, s, v in (
            ("smooth-proxy-anchor", 0, 0.81),
            ("smooth-proxy-anchor", 1, 0.79),
            ("multi-similarity", 0, 0.80),
            ("multi-similarity", 1, 0.78),
        )
    ]
    texts = dict(goals(summary, [noise, "pair:0.3"], runs))
    assert texts == {
        "symmetric:0.2: Smooth Proxy-Anchor Recall@1 80.00 at or above multi-similarity 80.00 "
        "(+1.00 points, mean paired difference over 2 seed(s)) — met": True,
        "symmetric:0.2: noisyclean-suspicion estimated noise 21.50% vs injected 20.00% "
        "(+1.50 points; within 2) — met": True,
        "symmetric:0.2: noisyclean-suspicion every class's estimated noise within 5 points: "
        "worst 6.00 — NOT met": False,
        "symmetric:0.2: noisyclean-suspicion flagged F1 0.910 (goal ≥ 0.90) — met": True,
        "pair:0.3: noisyclean-confidence estimated noise 27.00% vs injected 30.00% "
        "(-3.00 points; within 2) — NOT met": False,
        "pair:0.3: noisyclean-confidence every class's estimated noise within 8 points: "
        "worst 6.00 — met": True,
    }
    # Without the runs: the difference of the means, which is 0 here (at, so met).
    (ms_text, ms_met), *_ = goals(summary, [noise])
    assert ms_text.endswith("(+0.00 points, difference of the means) — met") and ms_met


def test_markdown_has_the_noise_estimate_table_and_the_openset_note() -> None:
    noise = "openset:0.02"
    figures = {"noise_est": 0.025, "noise_true": 0.02, "noise_err": 0.005}
    summary = _summary(
        [(noise, "noisyclean-confidence", f, v) for f, v in figures.items()]
        + [(noise, "noisyclean-confidence", "expected_precision", 0.7)]
        + [(noise, "cleanlab", "noise_err", -0.01)]
    )
    results = {
        "manifest": "m.csv",
        "rows": {"train": 100, "test": 50},
        "classes": list("abcdefghij"),
        "backbone": "b",
        "image_size": 64,
        "seeds": 1,
        "seconds_total": 60.0,
        "noises": [noise],
        "views": {
            "openset-clean": {"train": 80, "test": 40, "planted": 0, "classes": 8},
            "openset-0.02-s0": {
                "train": 82,
                "test": 40,
                "planted": 2,
                "classes": 8,
                "held_out": ["Shirt", "Sandal"],
            },
        },
        "throughput": {
            "pipeline_images_per_s": 1.0,
            "bare_forward_images_per_s": 2.0,
            "batch_size": 8,
            "images": 8,
        },
        "errors": [],
    }
    md = render_markdown(summary, results)
    assert (
        "| noisyclean-confidence | 2.50 ± 0.00 | 2.00 ± 0.00 | +0.50 ± 0.00 | – | – "
        "| 0.700 ± 0.000 |" in md
    )
    assert "| cleanlab | – | – | -1.00 ± 0.00 | – | – | – |" in md
    assert "Open set: Shirt and Sandal are held out of the label set (K = 8); 2 of the 82 " in md


def test_printed_goals_are_the_report_goals() -> None:
    from noisyclean import reporting

    results = json.loads((DOCS / "results.json").read_text())
    with reporting.out.capture() as captured:
        reporting.bench_summary(pd.DataFrame(results["summary"]), results, DOCS)
    printed = " ".join(captured.get().split())
    goal_lines = (DOCS / "results.md").read_text().split("## Goals")[1].strip().splitlines()
    assert any("mean paired difference" in line for line in goal_lines)
    for line in goal_lines:
        assert " ".join(line.removeprefix("- ").split()) in printed
