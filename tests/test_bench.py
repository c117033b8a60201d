"""`noisyclean bench`: a smoke run on ~500 real rows, plus the runner's pure parts.

The report's parts are tested in test_bench_report.py.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import BACKBONE, EXAMPLE_DIR, SMALL_SIZE, write_csv
from typer.testing import CliRunner

from noisyclean.bench import runner
from noisyclean.bench.methods import METHODS, PHASE1, Job, Method
from noisyclean.bench.noise import parse_noise
from noisyclean.bench.report import DETECTORS, RETRIEVERS
from noisyclean.bench.runner import BenchConfig, _jobs, _stratified_holdout
from noisyclean.cli import app
from noisyclean.errors import NoisyCleanError
from noisyclean.features import FeatureConfig, Features
from noisyclean.manifest import Manifest

DETECTION = (
    "auroc",
    "ap",
    "p_at_n",
    "flag_precision",
    "flag_recall",
    "flag_f1",
    "noise_est",
    "noise_true",
    "noise_err",
    "class_err_max",
)
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


NOISES = (parse_noise("symmetric:0.2"), parse_noise("pair:0.3"))


def _plan(*methods: str, seeds: int = 2) -> list[tuple[str, str, int]]:
    config = BenchConfig(noises=NOISES, seeds=seeds, methods=methods)
    return [(j.method, j.tag, j.seed) for j in _jobs(config, Path("work"))]


def test_plan_runs_noisy_methods_per_setting_and_seed_and_references_once_or_per_seed() -> None:
    jobs = _plan(*METHODS)
    tags = {tag for _, tag, _ in jobs if tag}
    assert tags == {"symmetric-0.2-s0", "pair-0.3-s0", "symmetric-0.2-s1", "pair-0.3-s1"}
    noisy = [m for m, how in METHODS.items() if how.noisy]
    for tag in tags:
        assert [m for m, t, _ in jobs if t == tag] == noisy
    assert [s for m, _, s in jobs if m == "proxy-anchor-clean"] == [0, 1]
    assert [s for m, _, s in jobs if m == "raw-features"] == [0]
    assert len(jobs) == 4 * len(noisy) + 2 + 1


def test_plan_schedules_phase1_before_each_method_that_reads_it() -> None:
    assert METHODS["smooth-proxy-anchor"].needs_phase1
    jobs = _plan("smooth-proxy-anchor")
    assert [m for m, _, _ in jobs] == [PHASE1, "smooth-proxy-anchor"] * 4
    assert jobs[0][1:] == jobs[1][1:]  # same noisy labels and seed
    assert {m for m, _, _ in _plan("cleanlab", "raw-features")} == {"cleanlab", "raw-features"}


def test_plan_reads_needs_phase1_not_the_method_name(monkeypatch: pytest.MonkeyPatch) -> None:
    def run(ws: object, job: object) -> dict:
        return {}

    monkeypatch.setitem(METHODS, "reads-phase1", Method(run, needs_phase1=True))
    monkeypatch.setitem(METHODS, "alone", Method(run))
    assert [m for m, _, _ in _plan("reads-phase1", seeds=1)] == [PHASE1, "reads-phase1"] * 2
    assert [m for m, _, _ in _plan("alone", seeds=1)] == ["alone"] * 2


def test_worker_sets_passive_openmp_before_torch_or_faiss_load() -> None:
    # A finder that notes OMP_WAIT_POLICY when torch or faiss is first imported.
    code = """
import os, sys
seen = []
class Spy:
    def find_spec(self, name, path=None, target=None):
        if name in ("torch", "faiss") and not seen:
            seen.append(os.environ.get("OMP_WAIT_POLICY"))
sys.meta_path.insert(0, Spy())
import noisyclean.bench.worker
print(seen)
"""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "['PASSIVE']"


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
            assert ("expected_precision" in have) == method.startswith("noisyclean"), method
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


def _fake_inputs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Manifest:
    """A 90-row manifest whose features are made up (no images, no backbone)."""
    rng = np.random.default_rng(0)
    labels = np.repeat(["a", "b", "c"], 30)
    centres = rng.normal(size=(3, 16))
    values = (centres[np.repeat(np.arange(3), 30)] + 0.3 * rng.normal(size=(90, 16))).astype(
        np.float32
    )
    frame = pd.DataFrame(
        {
            "id": [str(i) for i in range(90)],
            "path": [f"{i}.png" for i in range(90)],
            "label": labels,
            "split": np.where(np.arange(90) % 3 == 0, "test", "train"),
            "status": "ok",
        }
    )
    feats = Features(
        values=values, status=np.full(90, "ok"), computed=0, image_size=SMALL_SIZE, reasons={}
    )
    monkeypatch.setattr(runner, "extract_features", lambda *a, **k: feats)
    speed = {"images": 0.0, "pipeline_images_per_s": 1.0, "bare_forward_images_per_s": 1.0}
    monkeypatch.setattr(runner, "_throughput", lambda *a, **k: {**speed, "batch_size": 1.0})
    return Manifest(frame=frame, source=tmp_path / "m.csv", root=tmp_path, classes=["a", "b", "c"])


@pytest.mark.timeout(300)
def test_an_interrupted_bench_resumes_with_the_jobs_it_finished(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    manifest = _fake_inputs(monkeypatch, tmp_path)
    real = runner._run_job
    ran: list[str] = []
    stop_after: int | None = None

    def counting(job: Job) -> dict:
        if len(ran) == stop_after:
            raise KeyboardInterrupt
        ran.append(f"{job.method} {job.tag} {job.seed}")
        return real(job)

    monkeypatch.setattr(runner, "_run_job", counting)

    def bench(**train: object) -> runner.BenchResult:
        config = BenchConfig(
            noises=(parse_noise("symmetric:0.2"),),
            seeds=2,
            methods=("knn-vote", "raw-features"),
            train=dict(train),
        )
        features = FeatureConfig(backbone=BACKBONE, image_size=SMALL_SIZE)
        return runner.run_bench(manifest, tmp_path / "out", features=features, config=config)

    # Jobs: knn-vote at seeds 0 and 1, then raw-features once. Stopped before the last:
    stop_after = 2
    with pytest.raises(KeyboardInterrupt):
        bench()
    assert len(list((tmp_path / "out/work/runs").glob("*.json"))) == 2
    # Another option: nothing of the interrupted run is reused.
    stop_after, ran = None, []
    assert bench(epochs=3).results["resumed_jobs"] == 0 and len(ran) == 3
    assert not (tmp_path / "out/work").exists()
    # The same command after an interruption runs only the job left.
    stop_after, ran = 2, []
    with pytest.raises(KeyboardInterrupt):
        bench()
    stop_after, ran = None, []
    result = bench()
    assert ran == ["raw-features  0"]
    assert result.results["resumed_jobs"] == 2 and result.results["errors"] == []
    assert "2 job(s) were kept from an interrupted one" in result.markdown
    assert not (tmp_path / "out/work").exists()
    # A finished run leaves nothing to resume: the same command runs every job again.
    ran = []
    assert bench().results["resumed_jobs"] == 0 and len(ran) == 3


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a,b,x\n1,0,0\n0,1,0\n0,0,1\n", r"do not match the data's \(first difference: 'c'\)"),
        ("1,0\n0,1\n", "2×2, but the data has 3 classes"),
    ],
    ids=["names", "size"],
)
def test_bench_refuses_a_matrix_that_does_not_fit_the_data_before_any_work(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: str, message: str
) -> None:
    manifest = _fake_inputs(monkeypatch, tmp_path)
    monkeypatch.setattr(runner, "extract_features", lambda *a, **k: pytest.fail("features read"))
    (tmp_path / "matrix.csv").write_text(content)
    config = BenchConfig(noises=(parse_noise(f"transition:{tmp_path / 'matrix.csv'}"),), seeds=1)
    features = FeatureConfig(backbone=BACKBONE, image_size=SMALL_SIZE)
    with pytest.raises(NoisyCleanError, match=message) as err:
        runner.run_bench(manifest, tmp_path / "out", features=features, config=config)
    assert "\n" not in str(err.value) and not (tmp_path / "out").exists()
