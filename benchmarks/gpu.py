"""The GPU path, measured and checked: one short script for a machine with a CUDA GPU.

It records, for the backbone at its default precision on ``--device`` (autocast to
bfloat16 with channels-last inputs on a GPU, float32 on a CPU):

1. the bare forward pass, in images/s, at batch 64 and 256 (random inputs already on the
   device: the ceiling);
2. the whole extraction path (decode, preprocess, pinned-memory loading, forward, cache
   write) on ``--images`` synthetic JPEGs, fresh cache, at batch 64 and 256;
3. that the device's features match float32 CPU features of the committed example's
   images (its first ``--check-rows``): cosine similarity per row (at least 0.999);
4. ``score`` and ``train`` on those rows through the command line with ``--device``,
   so Phase 1 and Phase 2 run on that device, with their wall time.

It writes everything to ``--output`` (JSON) and prints a Markdown table. It runs on a CPU
too (``--device cpu``, small ``--images``), which is how the test suite checks it works::

    python benchmarks/gpu.py --device cuda -o gpu.json
    python benchmarks/gpu.py --device cpu --images 16 --check-rows 100 --repeats 1 -o cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from noisyclean.backbones import load_backbone
from noisyclean.configs import OFFLINE_BACKBONE
from noisyclean.features import FeatureConfig, extract_features
from noisyclean.manifest import load_manifest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "fashion-mnist-mini"
BATCHES = (64, 256)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_forward(
    backbone_name: str, size: int, device: str, batch: int, repeats: int
) -> dict[str, Any]:
    """Images/s of the forward pass alone on random inputs already on the device."""
    backbone = load_backbone(backbone_name, image_size=size, device=device)
    dev = next(backbone.model.parameters()).device
    x = torch.randn(batch, 3, size, size, device=dev)
    for _ in range(2):  # warm-up (cuDNN autotuning, allocator)
        backbone(x)
    _sync(dev)
    started = time.perf_counter()
    for _ in range(repeats):
        backbone(x)
    _sync(dev)
    seconds = time.perf_counter() - started
    return {
        "batch": batch,
        "precision": backbone.spec.precision,
        "images_per_s": batch * repeats / seconds,
    }


def synthetic_images(folder: Path, n: int) -> Path:
    """``n`` 256×256 JPEGs of smooth random colour fields, and a manifest of them."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        small = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((256, 256), Image.Resampling.BICUBIC)
        image.save(folder / f"{i:06d}.jpg", quality=90)
        rows.append({"path": f"{i:06d}.jpg", "label": f"c{i % 10}"})
    manifest = folder / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


def pipeline(
    manifest: Path, backbone: str, size: int, device: str, batch: int, workers: int, cache: Path
) -> dict[str, Any]:
    """Images/s of ``extract_features`` from JPEG files, with a fresh cache."""
    m = load_manifest(manifest)
    config = FeatureConfig(
        backbone=backbone,
        image_size=size,
        cache_dir=cache,
        device=device,
        batch_size=batch,
        workers=workers,
    )
    started = time.perf_counter()
    computed = extract_features(m, config).computed
    seconds = time.perf_counter() - started
    return {"batch": batch, "images": computed, "images_per_s": computed / seconds}


def example_subset(rows: int, folder: Path) -> Path:
    """The committed example's first ``rows`` rows, as a manifest in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.read_csv(EXAMPLE / "manifest.csv", dtype=str).head(rows)
    frame["path"] = [str(EXAMPLE / p) for p in frame["path"]]
    frame.to_csv(folder / "manifest.csv", index=False)
    return folder / "manifest.csv"


def consistency(
    manifest: Path, backbone: str, size: int, device: str, cache: Path
) -> dict[str, Any]:
    """Per-row cosine similarity of the device's features with float32 CPU features."""
    m = load_manifest(manifest)
    values = {}
    for name, dev in (("cpu", "cpu"), ("device", device)):
        config = FeatureConfig(
            backbone=backbone, image_size=size, cache_dir=cache / name, device=dev, workers=2
        )
        values[name] = extract_features(m, config).values
    a, b = (v / np.linalg.norm(v, axis=1, keepdims=True) for v in values.values())
    cosine = np.einsum("nd,nd->n", a, b)
    return {
        "rows": len(m),
        "min_cosine": float(cosine.min()),
        "mean_cosine": float(cosine.mean()),
        "max_abs_difference": float(np.abs(values["cpu"] - values["device"]).max()),
    }


def cli_phases(manifest: Path, device: str, size: int, work: Path, cache: Path) -> dict[str, Any]:
    """``score`` then ``train`` on ``manifest`` with ``--device``: wall seconds each."""
    exe = [sys.executable, "-m", "noisyclean"]
    env = {**os.environ, "NOISYCLEAN_CACHE": str(cache), "COLUMNS": "200"}
    common = ["--device", device]
    steps = {
        "score": [
            *exe,
            "score",
            str(manifest),
            "-o",
            str(work / "conf.parquet"),
            "--backbone",
            OFFLINE_BACKBONE,
            "--image-size",
            str(size),
            *common,
        ],
        "train": [*exe, "train", "--weights", str(work / "conf.parquet"), "-o", str(work / "run")],
    }
    steps["train"] += common
    out: dict[str, Any] = {}
    for name, command in steps.items():
        started = time.perf_counter()
        proc = subprocess.run(command, env=env, capture_output=True, text=True)
        out[name] = {"seconds": time.perf_counter() - started, "rc": proc.returncode}
        if proc.returncode:
            out[name]["error"] = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", type=Path, required=True, help="JSON results.")
    parser.add_argument("--device", default="cuda", help="cuda or cpu.")
    parser.add_argument("--backbone", default=OFFLINE_BACKBONE)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--images", type=int, default=4096, help="Synthetic JPEGs to extract.")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--repeats", type=int, default=20, help="Timed bare forward passes.")
    parser.add_argument(
        "--check-rows", type=int, default=1500, help="Example rows compared and scored."
    )
    args = parser.parse_args(argv)

    results: dict[str, Any] = {
        "device": args.device,
        "card": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor(),
        "torch": torch.__version__,
        "backbone": args.backbone,
        "image_size": args.image_size,
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        manifest = synthetic_images(work / "images", args.images)
        results["bare"] = [
            bare_forward(args.backbone, args.image_size, args.device, b, args.repeats)
            for b in BATCHES
        ]
        results["pipeline"] = [
            pipeline(
                manifest,
                args.backbone,
                args.image_size,
                args.device,
                b,
                args.workers,
                work / f"cache-{b}",
            )
            for b in BATCHES
        ]
        subset = example_subset(args.check_rows, work / "example")
        results["consistency"] = consistency(
            subset, args.backbone, args.image_size, args.device, work / "check"
        )
        results["phases"] = cli_phases(subset, args.device, 112, work, work / "cli-cache")
    args.output.write_text(json.dumps(results, indent=1))

    print(f"{results['card']} ({args.device}), {args.backbone} at {args.image_size} px")
    print("| batch | bare forward (img/s) | whole path (img/s) |")
    print("|---|---|---|")
    for bare, whole in zip(results["bare"], results["pipeline"], strict=True):
        print(f"| {bare['batch']} | {bare['images_per_s']:.0f} | {whole['images_per_s']:.0f} |")
    check = results["consistency"]
    print(f"cosine vs float32 CPU over {check['rows']} rows: min {check['min_cosine']:.5f}")
    print("phases:", {k: round(v["seconds"], 1) for k, v in results["phases"].items()})
    ok = check["min_cosine"] >= 0.999 and all(v["rc"] == 0 for v in results["phases"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
