"""``noisyclean bench``: inject known noise, run every method on the same features.

Features are computed (or read from the cache) once. Every method then runs in
its own subprocess (``noisyclean.bench.worker``) so that its wall time and peak
RSS are its own. The runs are summarised and written as ``results.json``, plus
``results.md`` (``noisyclean.bench.report``) and two plots
(``noisyclean.bench.plots``).

An open-set setting (``openset:RATE``, ``noisyclean.bench.openset``) keeps other rows
and K − 2 classes: its noisy-label jobs see its view of the workspace, and the
clean-label methods run once more (per seed) on the in-set rows alone for it.

A run is resumable: each finished job's figures are kept in ``OUT/work/runs/`` until
the report is written, under a fingerprint of everything the jobs read (features,
labels, split, noise settings and matrices, seeds, options, version). Run the same
command again after an interruption and only the unfinished jobs run; a changed input
starts afresh.
"""

from __future__ import annotations

import hashlib
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
from noisyclean.bench.methods import METHODS, PHASE1, Job
from noisyclean.bench.noise import NoiseSpec, apply_noise
from noisyclean.bench.openset import (
    CLEAN_VIEW,
    View,
    clean_view,
    held_out_classes,
    openset_view,
)
from noisyclean.bench.plots import write_plots
from noisyclean.bench.report import DETECTION_FIGURES, render_markdown
from noisyclean.errors import NoisyCleanError
from noisyclean.features import FeatureConfig, extract_features
from noisyclean.features import Progress as FeatureProgress
from noisyclean.manifest import Manifest

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


def _noisy_view(noise: NoiseSpec, seed: int) -> str:
    """The view a noisy-label job of this setting sees: its own for open-set noise."""
    return noise.tag(seed) if noise.kind == "openset" else ""


def _clean_view(noise: NoiseSpec) -> str:
    """The view whose clean-label runs count for this setting."""
    return CLEAN_VIEW if noise.kind == "openset" else ""


def prepare_workspace(
    work: Path,
    x: np.ndarray,
    true: np.ndarray,
    train: np.ndarray,
    classes: Sequence[str],
    noises: Sequence[NoiseSpec],
    seeds: int,
) -> dict[str, dict[str, Any]]:
    """Write the workspace the methods read (``noisyclean.bench.methods``): features,
    clean labels, the train mask, and per noise setting and seed the noisy labels (and
    an open-set setting's views).

    Args:
        work: the folder (made if missing).
        x: (N, D) features of the usable rows.
        true: (N,) their clean class indices into ``classes``.
        train: (N,) the row is a train row (its label gets the noise).
        classes: the class names.
        noises: the noise settings.
        seeds: seeds 0 .. seeds-1.

    Returns:
        Per view written (open-set settings only), its rows: ``train``, ``test``,
        ``planted`` (train rows of held-out classes), ``classes`` (K) and ``held_out``.
    """
    work.mkdir(parents=True, exist_ok=True)
    np.save(work / "features.npy", x)
    np.save(work / "true.npy", true)
    np.save(work / "train.npy", train)
    write_json(work / "workspace.json", {"n_classes": len(classes), "classes": list(classes)})
    names = np.asarray(classes, dtype=str)[true]
    held = held_out_classes(list(classes)) if any(n.kind == "openset" for n in noises) else None
    views: dict[str, dict[str, Any]] = {}

    def save(name: str, view: View) -> None:
        view.save(work / f"view-{name}.npz")
        views[name] = {
            "train": int(view.train.sum()),
            "test": int((~view.train).sum()),
            "planted": int(view.planted.sum()),
            "classes": len(view.classes),
            "held_out": view.held_out,
        }

    if held is not None:
        save(CLEAN_VIEW, clean_view(names, train, held))
    for seed in range(seeds):
        for noise in noises:
            tag = noise.tag(seed)
            if noise.kind == "openset":
                view = openset_view(names, train, noise.rate, seed, held)
                save(tag, view)
                np.save(work / f"labels-{tag}.npy", view.labels)
                continue
            y = true.copy()
            y[train] = apply_noise(
                noise, y[train], len(classes), seed=seed, features=x[train], classes=classes
            )
            np.save(work / f"labels-{tag}.npy", y)
    return views


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
    """The jobs to run, in order: per seed, each noise setting's noisy-label methods,
    then the clean-label ones (once per view: all rows, and the in-set rows where an
    open-set setting needs them); last the methods that run once (per view)."""
    opts = {"confidence": config.confidence, "train": config.train}
    wanted = set(config.methods)
    if any(METHODS[m].needs_phase1 for m in wanted):
        wanted.add(PHASE1)
    # METHODS order puts Phase 1 before the methods that read its conf-<tag>.npy.
    chosen = [(m, METHODS[m]) for m in METHODS if m in wanted]
    views = list(dict.fromkeys(_clean_view(n) for n in config.noises))
    jobs: list[Job] = []
    for seed in range(config.seeds):
        for noise in config.noises:
            tag, view = noise.tag(seed), _noisy_view(noise, seed)
            jobs += [
                Job(m, str(work), tag, seed, view=view, **opts) for m, how in chosen if how.noisy
            ]
        jobs += [
            Job(m, str(work), "", seed, view=view, **opts)
            for view in views
            for m, how in chosen
            if not how.noisy and how.per_seed
        ]
    jobs += [
        Job(m, str(work), "", 0, view=view, **opts)
        for view in views
        for m, how in chosen
        if not how.noisy and not how.per_seed
    ]
    return jobs


def _check_matrices(noises: Sequence[NoiseSpec], classes: Sequence[str]) -> None:
    """Each transition matrix fits the data's classes (names and size), before any work."""
    for noise in noises:
        if noise.kind != "transition":
            continue
        try:
            m = noise.load_matrix(classes)
        except ValueError as err:
            raise NoisyCleanError(str(err)) from None
        if m.shape != (len(classes), len(classes)):
            raise NoisyCleanError(
                f"transition matrix {noise.matrix}: {m.shape[0]}×{m.shape[1]}, but the data "
                f"has {len(classes)} classes"
            )


def _fingerprint(
    x: np.ndarray,
    true: np.ndarray,
    train: np.ndarray,
    classes: Sequence[str],
    config: BenchConfig,
) -> str:
    """A hash of everything the jobs read: a resumed run may reuse a job's figures only
    when it matches."""
    h = hashlib.blake2b(digest_size=16)
    for array in (x, true, train):
        h.update(np.ascontiguousarray(array).tobytes())
    h.update(json.dumps([__version__, list(classes), config.seeds]).encode())
    h.update(json.dumps([config.confidence, config.train], sort_keys=True, default=str).encode())
    for noise in config.noises:
        h.update(str(noise).encode())
        if noise.matrix is not None:
            h.update(Path(noise.matrix).read_bytes())
    return h.hexdigest()


def _job_file(runs: Path, job: Job) -> Path:
    """Where a finished job's figures are kept while the run lasts."""
    key = hashlib.blake2b(job.to_json().encode(), digest_size=12).hexdigest()
    return runs / f"{job.method}-{job.tag or 'clean'}-{key}.json"


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
    classes = sorted(df[clean_col].unique())
    names = [str(c) for c in classes]
    _check_matrices(config.noises, names)
    feats = extract_features(manifest, features, progress=feature_progress)
    ok = feats.status == "ok"
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
    train = ~test[ok]
    fingerprint = _fingerprint(feats.values[ok], true[ok], train, names, config)
    stamp = work / "fingerprint.json"
    if not stamp.exists() or json.loads(stamp.read_text()).get("fingerprint") != fingerprint:
        shutil.rmtree(work, ignore_errors=True)  # another run's: nothing to reuse
    views = prepare_workspace(
        work, feats.values[ok], true[ok], train, names, config.noises, config.seeds
    )
    runs_dir = work / "runs"
    runs_dir.mkdir(exist_ok=True)
    write_json(stamp, {"fingerprint": fingerprint})

    throughput = _throughput(manifest, features, config.throughput_images)
    jobs = _jobs(config, work)
    runs: list[dict[str, Any]] = []
    resumed = 0
    for i, job in enumerate(jobs):
        saved = _job_file(runs_dir, job)
        if saved.exists():
            result = json.loads(saved.read_text())
            resumed += 1
        else:
            if job_progress:
                job_progress(i, len(jobs), f"{job.method} {job.tag}".strip())
            result = _run_job(job)
            if "error" not in result:
                write_json(saved, result)
        setting = next((str(n) for n in config.noises if job.tag == n.tag(job.seed)), "")
        runs.append(
            {"method": job.method, "noise": setting, "seed": job.seed, "view": job.view, **result}
        )
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
        "views": views,
        "seeds": config.seeds,
        "confidence_options": config.confidence,
        "train_options": config.train,
        "throughput": throughput,
        "seconds_total": time.perf_counter() - started,
        "resumed_jobs": resumed,
        "errors": errors,
        "runs": runs,
        "summary": summary.to_dict(orient="records"),
    }
    write_json(out_dir / "results.json", results)
    markdown = render_markdown(summary, results)
    write_text(out_dir / "results.md", markdown)
    curve_tags = [n.tag(0) for n in config.noises]
    write_plots(summary, config.noises, curve_tags, work / "scores", out_dir)
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
        # A clean-label run counts for every setting whose clean view it ran on.
        view = run.get("view", "")
        noises = (
            [run["noise"]]
            if run["noise"]
            else [str(n) for n in config.noises if _clean_view(n) == view]
        )
        for noise in noises:
            for figure, value in flat.items():
                name = method
                # Phase 2's detection is reported as its own detector.
                if method == "smooth-proxy-anchor" and figure in DETECTION_FIGURES:
                    name = "noisyclean-suspicion"
                rows.append({"noise": noise, "method": name, "figure": figure, "value": value})
    frame = pd.DataFrame(rows, columns=["noise", "method", "figure", "value"])
    if frame.empty:
        return pd.DataFrame(columns=["noise", "method", "figure", "mean", "std", "n"])
    grouped = frame.groupby(["noise", "method", "figure"], sort=False)["value"]
    return grouped.agg(mean="mean", std=lambda v: float(np.std(v, ddof=0)), n="count").reset_index()
