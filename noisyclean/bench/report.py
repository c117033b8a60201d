"""The benchmark's report: its figures, the Markdown tables and the goals.

Reads only the summary DataFrame (one row per noise, method and figure, with
``mean``, ``std`` and ``n``) and the results dict; imports neither torch nor faiss.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: Detectors, in table order. noisyclean-suspicion is Phase 2's (smooth-proxy-anchor) detection.
DETECTORS = ("noisyclean-confidence", "noisyclean-suspicion", "cleanlab", "knn-vote")
#: Retrieval methods, in table order: ``noisyclean.losses.LOSSES`` (spelled out, as importing
#: it would load torch; a test keeps the two equal), then the two references.
RETRIEVERS = (
    "smooth-proxy-anchor",
    "proxy-anchor",
    "multi-similarity",
    "raw-features",
    "proxy-anchor-clean",
)
#: The K of each Recall@K figure.
RECALL_KS = (1, 2, 4, 8)
#: The figures a detector reports.
DETECTION_FIGURES = (
    "auroc",
    "ap",
    "p_at_n",
    "flag_precision",
    "flag_recall",
    "flag_f1",
    "flagged",
)


def _lookup(summary: pd.DataFrame, noise: str, method: str, figure: str) -> tuple[float, float]:
    """(mean, std) of one figure; NaNs when the summary lacks it."""
    hit = summary[
        (summary["noise"] == noise) & (summary["method"] == method) & (summary["figure"] == figure)
    ]
    if hit.empty:
        return float("nan"), float("nan")
    return float(hit["mean"].iloc[0]), float(hit["std"].iloc[0])


def cell(
    summary: pd.DataFrame, noise: str, method: str, figure: str, scale: float = 1.0, digits: int = 3
) -> str:
    """One figure as "mean ± std", or "–" when the summary lacks it."""
    m, s = _lookup(summary, noise, method, figure)
    return "–" if np.isnan(m) else f"{m * scale:.{digits}f} ± {s * scale:.{digits}f}"


def _mean(summary: pd.DataFrame, noise: str, method: str, figure: str) -> float:
    return _lookup(summary, noise, method, figure)[0]


def render_markdown(summary: pd.DataFrame, results: dict[str, Any]) -> str:
    """The results as Markdown tables (every figure mean ± std over seeds) plus goals."""
    lines = [
        f"# noisyclean bench — {Path(results['manifest']).name}",
        "",
        f"{results['rows']['train']} train rows with injected noise, "
        f"{results['rows']['test']} clean test rows, {len(results['classes'])} classes; "
        f"backbone `{results['backbone']}` at {results['image_size']} px; "
        f"{results['seeds']} seed(s); every figure is mean ± std over seeds. "
        f"Total wall time {results['seconds_total'] / 60:.1f} min.",
        "",
    ]
    cost_methods = {
        "noisyclean-confidence": "noisyclean-confidence",
        "noisyclean-suspicion": "smooth-proxy-anchor",
        "cleanlab": "cleanlab",
        "knn-vote": "knn-vote",
    }
    for noise in results["noises"]:
        lines += [
            f"## Detection — {noise}",
            "",
            "AUROC, average precision and precision at n (n = true number of noisy rows) rank "
            "the train rows; P/R/F1 judge each method's own flagged set.",
            "",
            "| method | AUROC | AP | P@n | flagged P | flagged R | flagged F1 | seconds "
            "| peak RSS MB | method's own MB |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for method in DETECTORS:
            cost = cost_methods[method]
            lines.append(
                f"| {method} | "
                + " | ".join(
                    cell(summary, noise, method, f)
                    for f in ("auroc", "ap", "p_at_n", "flag_precision", "flag_recall", "flag_f1")
                )
                + f" | {cell(summary, noise, cost, 'seconds', digits=1)}"
                + f" | {cell(summary, noise, cost, 'peak_rss_mb', digits=0)}"
                + f" | {cell(summary, noise, cost, 'rss_increase_mb', digits=0)} |"
            )
        lines += [
            "",
            "noisyclean-suspicion's seconds are Phase 2's own (training + suspects); "
            "it also needs Phase 1 (noisyclean-confidence). Peak RSS is the worker process's "
            "peak while the method ran, its imports (torch, faiss, scikit-learn: about 1.1 GB) "
            "and the loaded features included; the method's own MB is what it added above "
            "them. cleanlab runs "
            "scikit-learn's "
            "LogisticRegression with its defaults (as cleanlab's CleanLearning does), "
            "5 folds: that is its cost, not shrunk.",
            "",
            f"## Retrieval — {noise}",
            "",
            "Recall@K on the clean test rows (%).",
            "",
            "| method | "
            + " | ".join(f"R@{k}" for k in RECALL_KS)
            + " | seconds | peak RSS MB | method's own MB |",
            "|---|" + "---|" * (len(RECALL_KS) + 3),
        ]
        for method in RETRIEVERS:
            label = {
                "proxy-anchor-clean": "proxy-anchor on clean labels (reference)",
                "raw-features": "raw backbone features",
            }.get(method, method)
            lines.append(
                f"| {label} | "
                + " | ".join(
                    cell(summary, noise, method, f"recall@{k}", 100.0, 2) for k in RECALL_KS
                )
                + f" | {cell(summary, noise, method, 'seconds', digits=1)}"
                + f" | {cell(summary, noise, method, 'peak_rss_mb', digits=0)}"
                + f" | {cell(summary, noise, method, 'rss_increase_mb', digits=0)} |"
            )
        lines.append("")
    tp = results["throughput"]
    lines += [
        "## Feature extraction",
        "",
        f"{tp['pipeline_images_per_s']:.1f} images/s through the pipeline (decode, preprocess, "
        f"forward; uncached) against {tp['bare_forward_images_per_s']:.1f} images/s for the "
        f"backbone's bare forward pass, batch size {tp['batch_size']:.0f}, "
        f"{tp['images']:.0f} images.",
        "",
        "## Goals",
        "",
    ]
    lines += [f"- {text}" for text, _ in goals(summary, results["noises"])]
    if results["errors"]:
        lines += ["", "## Errors", ""] + [f"- {e}" for e in results["errors"]]
    return "\n".join(lines) + "\n"


def goals(summary: pd.DataFrame, noises: Sequence[str]) -> list[tuple[str, bool]]:
    """Each goal of the benchmark, stated as met or not, with the margin.

    Returns:
        ``(text, met)`` per goal whose figures the summary holds; ``text`` ends in
        "— met" or "— NOT met".
    """
    out: list[tuple[str, bool]] = []
    for noise in noises:
        for figure, name in (("auroc", "AUROC"), ("p_at_n", "P@n")):
            ours = max(
                _mean(summary, noise, "noisyclean-confidence", figure),
                _mean(summary, noise, "noisyclean-suspicion", figure),
            )
            peers = {m: _mean(summary, noise, m, figure) for m in ("cleanlab", "knn-vote")}
            best = max(peers, key=lambda m: -np.inf if np.isnan(peers[m]) else peers[m])
            if np.isnan(ours) or np.isnan(peers[best]):
                continue
            text = (
                f"{noise}: detection {name} {ours:.3f} vs best peer {best} {peers[best]:.3f} "
                f"({ours - peers[best]:+.3f})"
            )
            out.append(_goal(text, ours >= peers[best]))
        spa = _mean(summary, noise, "smooth-proxy-anchor", "recall@1")
        for peer in ("proxy-anchor", "multi-similarity"):
            other = _mean(summary, noise, peer, "recall@1")
            if np.isnan(spa) or np.isnan(other):
                continue
            text = (
                f"{noise}: Smooth Proxy-Anchor Recall@1 {100 * spa:.2f} vs {peer} "
                f"{100 * other:.2f} ({100 * (spa - other):+.2f} points)"
            )
            out.append(_goal(text, spa > other))
        ours_s = _mean(summary, noise, "noisyclean-confidence", "seconds")
        cl_s = _mean(summary, noise, "cleanlab", "seconds")
        if not (np.isnan(ours_s) or np.isnan(cl_s)):
            text = f"{noise}: score {ours_s:.1f} s vs cleanlab {cl_s:.1f} s on the same features"
            out.append(_goal(text, ours_s <= cl_s))
    return out


def _goal(text: str, met: bool) -> tuple[str, bool]:
    """``("<text> — met", True)`` or ``("<text> — NOT met", False)``."""
    return f"{text} — {'met' if met else 'NOT met'}", bool(met)
