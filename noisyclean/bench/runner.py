"""``noisyclean bench``: inject known noise, run every method on the same features, report.

Features are computed (or read from the cache) once. Every method then runs in
its own subprocess (``noisyclean.bench.worker``) so that its wall time and peak
RSS are its own. Results are written as ``results.json``, ``results.md`` and
two plots.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from noisyclean import __version__
from noisyclean.artifacts import write_json, write_text
from noisyclean.backbones import load_backbone
from noisyclean.bench.methods import METHODS, RECALL_KS, Job
from noisyclean.bench.noise import NoiseSpec, apply_noise
from noisyclean.errors import NoisyCleanError
from noisyclean.features import FeatureConfig, extract_features
from noisyclean.features import Progress as FeatureProgress
from noisyclean.manifest import Manifest

DETECTORS = ("noisyclean-confidence", "noisyclean-suspicion", "cleanlab", "knn-vote")
LOSSES = ("smooth-proxy-anchor", "proxy-anchor", "multi-similarity")
RETRIEVERS = (*LOSSES, "raw-features", "proxy-anchor-clean")

#: Called before each job with (jobs done, jobs to do, a description of the next).
JobProgress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class BenchConfig:
    """Options of a benchmark run.

    Attributes:
        noises: the noise settings, each injected into the train rows' clean labels.
        seeds: how many seeds (0 .. seeds-1) per noise setting.
        test_fraction: share of rows held out (stratified) as the clean test split,
            when the manifest has no ``split`` column.
        methods: which methods to run (default: all).
        confidence: ``ConfidenceConfig`` options for Phase 1.
        train: ``TrainConfig`` options shared by every loss.
        throughput_images: images timed for the feature-throughput figures.
    """

    noises: tuple[NoiseSpec, ...]
    seeds: int = 3
    test_fraction: float = 0.3
    methods: tuple[str, ...] = tuple(METHODS)
    confidence: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    throughput_images: int = 512

    def __post_init__(self) -> None:
        if not self.noises:
            raise ValueError("give at least one --noise")
        if self.seeds < 1:
            raise ValueError("seeds must be at least 1")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError("test_fraction must be in (0, 1)")
        unknown = set(self.methods) - set(METHODS)
        if unknown:
            raise ValueError(f"unknown method(s): {', '.join(sorted(unknown))}")


@dataclass(frozen=True)
class BenchResult:
    """What ``bench`` wrote: the summary table (one row per noise, method and figure)."""

    summary: pd.DataFrame
    results: dict[str, Any]
    markdown: str
    out_dir: Path


def _stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        rng.shuffle(rows)
        test[rows[: round(fraction * len(rows))]] = True
    return test


def _tag(noise: NoiseSpec, seed: int) -> str:
    name = Path(noise.matrix).stem if noise.matrix else f"{noise.rate:g}"
    return f"{noise.kind}-{name}-s{seed}"


def _throughput(manifest: Manifest, features: FeatureConfig, n_images: int) -> dict[str, float]:
    """Images/s of feature extraction (decode + preprocess + forward, uncached) against
    the backbone's bare forward pass at the same batch size."""
    rows = manifest.frame.index[manifest.ok_mask][:n_images]
    sub = Manifest(
        frame=manifest.frame.loc[rows].reset_index(drop=True),
        source=manifest.source,
        root=manifest.root,
        classes=manifest.classes,
    )
    with tempfile.TemporaryDirectory() as tmp:
        cfg = FeatureConfig(**{**asdict(features), "cache_dir": Path(tmp)})
        start = time.perf_counter()
        extract_features(sub, cfg)
        pipeline = len(sub) / (time.perf_counter() - start)
    size = features.image_size or 224
    model = load_backbone(features.backbone, image_size=size, device=features.device)
    device = next(model.model.parameters()).device
    batch = torch.randn(features.batch_size, 3, size, size, device=device)
    model(batch)  # warm-up
    start = time.perf_counter()
    done = 0
    while done < len(sub):
        model(batch)
        done += len(batch)
    bare = done / (time.perf_counter() - start)
    return {
        "images": float(len(sub)),
        "pipeline_images_per_s": pipeline,
        "bare_forward_images_per_s": bare,
        "batch_size": float(features.batch_size),
    }


def _jobs(config: BenchConfig, work: Path) -> list[Job]:
    opts = {"confidence": config.confidence, "train": config.train}
    wanted = set(config.methods)
    if "smooth-proxy-anchor" in wanted:
        wanted.add("noisyclean-confidence")  # Phase 2 reads Phase 1's output
    jobs: list[Job] = []
    noisy = [m for m in METHODS if METHODS[m][1] and m in wanted]  # Phase 1 first: dict order
    for seed in range(config.seeds):
        for noise in config.noises:
            tag = _tag(noise, seed)
            jobs += [Job(method=m, work=str(work), tag=tag, seed=seed, **opts) for m in noisy]
        if "proxy-anchor-clean" in wanted:
            jobs.append(Job(method="proxy-anchor-clean", work=str(work), tag="", seed=seed, **opts))
    if "raw-features" in wanted:
        jobs.append(Job(method="raw-features", work=str(work), tag="", seed=0, **opts))
    return jobs


def _run_job(job: Job) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "noisyclean.bench.worker", job.to_json()],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"{job.method} ({job.tag or 'clean'}) failed: {last}"}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _flatten(run: dict[str, Any]) -> dict[str, float]:
    flat: dict[str, float] = {}
    for group in ("detection", "retrieval", "cost"):
        for key, value in run.get(group, {}).items():
            flat[key] = float(value)
    return flat


def run_bench(
    manifest: Manifest,
    out_dir: Path,
    *,
    features: FeatureConfig,
    config: BenchConfig,
    feature_progress: FeatureProgress | None = None,
    job_progress: JobProgress | None = None,
) -> BenchResult:
    """Run the benchmark and write results.json, results.md and the plots into ``out_dir``."""
    started = time.perf_counter()
    df = manifest.frame
    clean_col = "true_label" if "true_label" in df.columns else "label"
    if df[clean_col].isna().any():
        raise NoisyCleanError(f"{manifest.source.name}: '{clean_col}' is empty on some rows")
    feats = extract_features(manifest, features, progress=feature_progress)
    ok = feats.status == "ok"
    classes = sorted(df[clean_col].unique())
    true = pd.Categorical(df[clean_col], categories=classes).codes.astype(np.int64)
    has_split = (df["split"] == "test").any()
    test = (
        (df["split"] == "test").to_numpy()
        if has_split
        else _stratified_holdout(true, config.test_fraction, seed=0)
    )
    if not (ok & test).any() or not (ok & ~test).any():
        raise NoisyCleanError("bench needs usable rows in both the train and the test split")

    out_dir.mkdir(parents=True, exist_ok=True)
    work = out_dir / "work"
    work.mkdir(exist_ok=True)
    x = feats.values[ok]
    np.save(work / "features.npy", x)
    np.save(work / "true.npy", true[ok])
    train = ~test[ok]
    np.save(work / "train.npy", train)
    write_json(work / "workspace.json", {"n_classes": len(classes), "classes": classes})
    for seed in range(config.seeds):
        for noise in config.noises:
            y = true[ok].copy()
            y[train] = apply_noise(noise, y[train], len(classes), seed=seed, features=x[train])
            np.save(work / f"labels-{_tag(noise, seed)}.npy", y)

    throughput = _throughput(manifest, features, config.throughput_images)
    jobs = _jobs(config, work)
    runs: list[dict[str, Any]] = []
    for i, job in enumerate(jobs):
        if job_progress:
            job_progress(i, len(jobs), f"{job.method} {job.tag}".strip())
        result = _run_job(job)
        setting = next((str(n) for n in config.noises if job.tag == _tag(n, job.seed)), "")
        runs.append({"method": job.method, "noise": setting, "seed": job.seed, **result})
    if job_progress:
        job_progress(len(jobs), len(jobs), "done")

    errors = [r["error"] for r in runs if "error" in r]
    summary = _summarise(runs, config)
    results = {
        "noisyclean_version": __version__,
        "manifest": str(manifest.source),
        "rows": {"usable": int(ok.sum()), "train": int(train.sum()), "test": int((~train).sum())},
        "classes": classes,
        "backbone": features.backbone,
        "image_size": feats.image_size,
        "noises": [str(n) for n in config.noises],
        "seeds": config.seeds,
        "confidence_options": config.confidence,
        "train_options": config.train,
        "throughput": throughput,
        "seconds_total": time.perf_counter() - started,
        "errors": errors,
        "runs": runs,
        "summary": summary.to_dict(orient="records"),
    }
    write_json(out_dir / "results.json", results)
    markdown = render_markdown(summary, results)
    write_text(out_dir / "results.md", markdown)
    _plots(summary, config, work, out_dir)
    shutil.rmtree(work, ignore_errors=True)
    return BenchResult(summary=summary, results=results, markdown=markdown, out_dir=out_dir)


def _summarise(runs: Sequence[dict[str, Any]], config: BenchConfig) -> pd.DataFrame:
    """One row per (noise, method, figure) with mean, std and the number of seeds."""
    rows = []
    for run in runs:
        if "error" in run:
            continue
        flat = _flatten(run)
        method = run["method"]
        noises = [run["noise"]] if run["noise"] else [str(n) for n in config.noises]
        for noise in noises:
            for figure, value in flat.items():
                name = method
                # Phase 2's detection is reported as its own detector.
                if method == "smooth-proxy-anchor" and figure in _DETECTION_FIGURES:
                    name = "noisyclean-suspicion"
                rows.append({"noise": noise, "method": name, "figure": figure, "value": value})
    frame = pd.DataFrame(rows, columns=["noise", "method", "figure", "value"])
    if frame.empty:
        return pd.DataFrame(columns=["noise", "method", "figure", "mean", "std", "n"])
    grouped = frame.groupby(["noise", "method", "figure"], sort=False)["value"]
    return grouped.agg(mean="mean", std=lambda v: float(np.std(v, ddof=0)), n="count").reset_index()


_DETECTION_FIGURES = (
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
    lines += [f"- {g}" for g in goals(summary, results["noises"])]
    if results["errors"]:
        lines += ["", "## Errors", ""] + [f"- {e}" for e in results["errors"]]
    return "\n".join(lines) + "\n"


def goals(summary: pd.DataFrame, noises: Sequence[str]) -> list[str]:
    """Each goal of the benchmark, stated as met or not, with the margin."""
    out = []
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
            verdict = "met" if ours >= peers[best] else "NOT met"
            out.append(
                f"{noise}: detection {name} {ours:.3f} vs best peer {best} {peers[best]:.3f} "
                f"({ours - peers[best]:+.3f}) — {verdict}"
            )
        spa = _mean(summary, noise, "smooth-proxy-anchor", "recall@1")
        for peer in ("proxy-anchor", "multi-similarity"):
            other = _mean(summary, noise, peer, "recall@1")
            if np.isnan(spa) or np.isnan(other):
                continue
            verdict = "met" if spa > other else "NOT met"
            out.append(
                f"{noise}: Smooth Proxy-Anchor Recall@1 {100 * spa:.2f} vs {peer} "
                f"{100 * other:.2f} ({100 * (spa - other):+.2f} points) — {verdict}"
            )
        ours_s = _mean(summary, noise, "noisyclean-confidence", "seconds")
        cl_s = _mean(summary, noise, "cleanlab", "seconds")
        if not (np.isnan(ours_s) or np.isnan(cl_s)):
            verdict = "met" if ours_s <= cl_s else "NOT met"
            out.append(
                f"{noise}: score {ours_s:.1f} s vs cleanlab {cl_s:.1f} s on the same features "
                f"— {verdict}"
            )
    return out


def _plots(summary: pd.DataFrame, config: BenchConfig, work: Path, out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Recall@1 of each loss against the noise rate, one line per (loss, noise kind).
    fig, ax = plt.subplots(figsize=(6, 4))
    for loss in (*LOSSES, "proxy-anchor-clean"):
        for kind in sorted({n.kind for n in config.noises}):
            pts = sorted(
                (n.rate, _mean(summary, str(n), loss, "recall@1"))
                for n in config.noises
                if n.kind == kind
            )
            pts = [(r, v) for r, v in pts if not np.isnan(v)]
            if pts:
                ax.plot(
                    [p[0] for p in pts],
                    [100 * p[1] for p in pts],
                    marker="o",
                    label=f"{loss} ({kind})",
                )
    ax.set_xlabel("noise rate")
    ax.set_ylabel("Recall@1 on clean test rows (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "recall_vs_noise.png", dpi=120)
    plt.close(fig)

    # Precision-recall curves of the detectors, seed 0, one panel per noise setting.
    curves = sorted((work / "scores").glob("*.npz")) if (work / "scores").exists() else []
    if not curves:
        return
    fig, axes = plt.subplots(
        1, len(config.noises), figsize=(5 * len(config.noises), 4), squeeze=False
    )
    for ax, noise in zip(axes[0], config.noises, strict=True):
        for path in curves:
            method, _, tag = path.stem.partition("__")
            if tag != _tag(noise, 0):
                continue
            with np.load(path) as z:
                scores, wrong = z["scores"], z["wrong"].astype(bool)
            order = np.argsort(-scores, kind="mergesort")
            tp = np.cumsum(wrong[order])
            ax.plot(tp / max(wrong.sum(), 1), tp / np.arange(1, len(tp) + 1), label=method)
        ax.set_title(str(noise))
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "precision_recall.png", dpi=120)
    plt.close(fig)
