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
