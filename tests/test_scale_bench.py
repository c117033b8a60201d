"""The scale benchmark script (benchmarks/scale.py): its generator, and a tiny run end to end."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "scale.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("scale_bench", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


scale = _load()


def test_generator_is_seeded_and_shaped() -> None:
    config = scale.DataConfig(seed=3)
    a = scale.generate(3000, 20, config)
    b = scale.generate(3000, 20, config)
    c = scale.generate(3000, 20, scale.DataConfig(seed=4))

    assert a.features.shape == (3000, scale.DIM)
    assert a.features.dtype == np.float16
    np.testing.assert_allclose(np.linalg.norm(a.features.astype(np.float32), axis=1), 1, atol=1e-2)
    for name in ("features", "true", "noisy", "train", "outlier"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.features, c.features)
    assert set(np.unique(a.true)) == set(range(20))


def test_generator_noise_split_and_imbalance() -> None:
    config = scale.DataConfig(noise=0.2, test_fraction=0.1, imbalance=10.0, overlap=0.2)
    data = scale.generate(10_000, 10, config)
    wrong = data.noisy != data.true

    assert data.train.sum() == 9000
    assert not wrong[~data.train].any()  # test rows are clean
    assert wrong[data.train].mean() == pytest.approx(0.2, abs=1e-3)
    assert data.outlier.mean() == pytest.approx(0.2, abs=0.02)
    sizes = np.bincount(data.true, minlength=10)
    assert sizes.max() / sizes.min() == pytest.approx(10, rel=0.05)
    # A flipped label is another class, uniformly: every class receives some.
    assert len(np.unique(data.noisy[wrong])) == 10


def test_rows_vary_along_their_own_class_subspace() -> None:
    config = scale.DataConfig(seed=1)
    data = scale.generate(4000, 8, config)
    x = data.features.astype(np.float32)
    c = 3
    rows = np.flatnonzero((data.true == c) & ~data.outlier)
    spread = x[rows] - x[rows].mean(axis=0)
    own = np.linalg.norm(spread @ scale.class_basis(c, config.seed)) ** 2
    other = np.linalg.norm(spread @ scale.class_basis(c + 1, config.seed)) ** 2
    total = np.linalg.norm(spread) ** 2
    assert own / total > 0.8  # most of the variation lies in the class's own subspace
    assert other / total < 0.1


def test_class_sizes_add_up() -> None:
    for rows, classes in ((100, 7), (2000, 50), (10_000, 1000), (999, 999)):
        sizes = scale.class_sizes(rows, classes, 10.0)
        assert sizes.sum() == rows
        assert sizes.min() >= 1


def test_parse_point() -> None:
    assert scale.parse_point("300000x1000") == scale.Point(300_000, 1000, False)
    assert scale.parse_point("300000x1000:exact") == scale.Point(300_000, 1000, True)
    with pytest.raises(Exception, match="ROWSxCLASSES"):
        scale.parse_point("300k")


def test_a_stage_past_its_timeout_is_recorded_as_such(tmp_path: Path) -> None:
    stage = scale.run_measured(
        ["sleep", "30"], log_file=tmp_path / "sleep.log", env={"PATH": "/usr/bin:/bin"}, timeout=1
    )
    assert stage.status == "timeout"
    assert stage.seconds < 20


def test_a_failing_stage_keeps_its_last_line(tmp_path: Path) -> None:
    stage = scale.run_measured(
        [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"],
        log_file=tmp_path / "fail.log",
        env={},
        timeout=60,
    )
    assert (stage.status, stage.returncode, stage.note) == ("failed", 3, "boom")
    assert stage.peak_rss_mb > 0


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_tiny_points_end_to_end(tmp_path: Path) -> None:
    work = tmp_path / "work"
    points = ["2000x10", "2000x50", "2000x50:exact"]
    assert scale.main(["--points", *points, "--work", str(work), "--cleanup"]) == 0

    for name in ("2000x10/auto", "2000x50/auto", "2000x50/exact"):
        result = json.loads((work / name / "result.json").read_text())
        assert result["status"] == "ok", result
        for stage in scale.STAGES:
            assert result["stages"][stage]["status"] == "ok"
            assert result["stages"][stage]["seconds"] > 0
            assert result["stages"][stage]["peak_rss_mb"] > 10
        assert result["conf_bytes"] > 0 and result["page_bytes"] > 0
        assert 0.6 < result["auroc_phase1"] <= 1 and 0.6 < result["auroc_phase2"] <= 1
        assert result["auroc_score"] == result["auroc_phase1"]
        assert result["auroc_computed"]["phase1"] == pytest.approx(result["auroc_phase1"], abs=1e-3)
        assert result["neighbours"]["method"] == "exact"  # 2,000 rows: under any IVF limit
        assert result["cleanlab"]["status"] == "ok"
        assert 0.5 < result["cleanlab"]["auroc"] <= 1
        assert result["rows"] == 2000 and result["data"]["facts"]["mislabelled"] == 360
    exact = json.loads((work / "2000x50/exact/result.json").read_text())
    assert exact["mode"] == "exact" and exact["cleanlab"]["from"] == "auto"
    # --cleanup: the data and big outputs are gone, the results and logs stay.
    assert not (work / "2000x50" / "features.parquet").exists()
    assert not (work / "2000x50" / "auto" / "conf.parquet").exists()
    assert (work / "2000x50" / "auto" / "score.log").is_file()
    assert "2000x10" in (work / "scale.log").read_text()

    # A rerun skips finished points.
    before = (work / "2000x10/auto/result.json").stat().st_mtime_ns
    assert scale.main(["--points", "2000x10", "--work", str(work)]) == 0
    assert (work / "2000x10/auto/result.json").stat().st_mtime_ns == before

    out = tmp_path / "docs"
    assert scale.main(["report", "--work", str(work), "-o", str(out)]) == 0
    table = (out / "results.md").read_text()
    assert "| 2,000 × 10 | auto |" in table and "| 2,000 × 50 | exact |" in table
    assert len(json.loads((out / "results.json").read_text())) == 3
    assert "Approximate against exact search" in table
    assert (out / "time_memory.png").stat().st_size > 1000
