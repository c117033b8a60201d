"""benchmarks/gpu.py, the script prepared for a GPU machine, run on the CPU at a tiny size."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


@pytest.mark.timeout(600)
def test_gpu_script_runs_and_records_every_figure(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("gpu_bench", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    out = tmp_path / "cpu.json"
    args = ["--device", "cpu", "--images", "16", "--check-rows", "100", "--repeats", "1"]
    assert module.main([*args, "--image-size", "64", "--workers", "0", "-o", str(out)]) == 0

    result = json.loads(out.read_text())
    assert [b["batch"] for b in result["bare"]] == [64, 256]
    assert all(b["images_per_s"] > 0 and b["precision"] == "float32" for b in result["bare"])
    assert all(p["images"] == 16 and p["images_per_s"] > 0 for p in result["pipeline"])
    assert result["consistency"]["rows"] == 100
    assert result["consistency"]["min_cosine"] > 0.9999  # the same device: the same features
    assert {name: p["rc"] for name, p in result["phases"].items()} == {"score": 0, "train": 0}
