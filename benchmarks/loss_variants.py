"""Smooth Proxy-Anchor variants against MultiSimilarity, paired by setting and seed.

Reads the Phase 1 confidences saved by ``benchmarks/calibration_data.py`` (one file per
noise setting and seed), trains each variant's head on the same features and labels,
and writes the test rows' Recall@1 (by their true labels) to a CSV, one line per
(file, variant). Resumable: lines already in the CSV are skipped, so a changed trainer
needs a fresh CSV.

    nice .venv/bin/python benchmarks/loss_variants.py data/fm20k/manifest.csv \
        --calib data/calib -o data/calib/variants-2.csv
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch

from noisyclean import knn
from noisyclean.confidence import TopClasses
from noisyclean.configs import TrainConfig
from noisyclean.embedding import embed, train_head
from noisyclean.features import FeatureConfig, extract_features
from noisyclean.manifest import load_manifest
from noisyclean.metrics import recall_at_k

Patch = Callable[[], Callable[[], None]]


def _none() -> Callable[[], None]:
    return lambda: None


def _constant_lr() -> Callable[[], None]:
    """The trainer's cosine schedule replaced by a constant rate (the trainer before
    2026-11-28) for the run."""
    original = torch.optim.lr_scheduler.CosineAnnealingLR

    class Constant(torch.optim.lr_scheduler.LambdaLR):
        def __init__(self, optimizer: torch.optim.Optimizer, **_: object) -> None:
            super().__init__(optimizer, lambda step: 1.0)

    torch.optim.lr_scheduler.CosineAnnealingLR = Constant  # type: ignore[misc, assignment]

    def undo() -> None:
        torch.optim.lr_scheduler.CosineAnnealingLR = original  # type: ignore[misc]

    return undo


#: name -> (loss, TrainConfig changes, patch). The defaults are the trainer's (α 20, cosine
#: schedule); the variants tried before (memberships, proxies, training settings, at α 32
#: with a constant rate) are in this script at commit e4e256c and in docs/design.md §6.
VARIANTS: dict[str, tuple[str, dict[str, object], Patch]] = {
    "multi-similarity": ("multi-similarity", {}, _none),
    "proxy-anchor": ("proxy-anchor", {}, _none),
    "spa": ("smooth-proxy-anchor", {}, _none),
    # References on the true labels (one-hot): what each loss reaches without noise.
    "multi-similarity-clean": ("multi-similarity", {}, _none),
    "proxy-anchor-clean": ("proxy-anchor", {}, _none),
    "proxy-anchor-alpha16-clean": ("proxy-anchor", {"alpha": 16.0}, _none),
    "proxy-anchor-alpha32-constant-clean": ("proxy-anchor", {"alpha": 32.0}, _constant_lr),
    "proxy-anchor-e512-clean": ("proxy-anchor", {"embedding_dim": 512}, _none),
    "proxy-anchor-lr1e-3-clean": ("proxy-anchor", {"lr": 1e-3}, _none),
    "proxy-anchor-epochs40-clean": ("proxy-anchor", {"epochs": 40}, _none),
    "proxy-anchor-proxylr10-clean": ("proxy-anchor", {"proxy_lr_mult": 10.0}, _none),
    "multi-similarity-e512-clean": ("multi-similarity", {"embedding_dim": 512}, _none),
    # The scale around the default.
    "spa-alpha12": ("smooth-proxy-anchor", {"alpha": 12.0}, _none),
    "spa-alpha16": ("smooth-proxy-anchor", {"alpha": 16.0}, _none),
    "spa-alpha24": ("smooth-proxy-anchor", {"alpha": 24.0}, _none),
    "spa-alpha32": ("smooth-proxy-anchor", {"alpha": 32.0}, _none),
    # The trainer before: a constant rate, and α 32 for the proxy losses.
    "multi-similarity-constant": ("multi-similarity", {}, _constant_lr),
    "proxy-anchor-alpha32-constant": ("proxy-anchor", {"alpha": 32.0}, _constant_lr),
    "spa-alpha32-constant": ("smooth-proxy-anchor", {"alpha": 32.0}, _constant_lr),
    "spa-constant": ("smooth-proxy-anchor", {}, _constant_lr),
    # A wider embedding, for both losses (compared with each other, not with E = 128).
    "multi-similarity-e512": ("multi-similarity", {"embedding_dim": 512}, _none),
    "spa-e512": ("smooth-proxy-anchor", {"embedding_dim": 512}, _none),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("manifest", type=Path)
    ap.add_argument("--calib", type=Path, default=Path("data/calib"))
    ap.add_argument("-o", "--out", type=Path, default=Path("data/calib/variants-2.csv"))
    ap.add_argument("--variant", action="append", default=None)
    ap.add_argument("--files", default="*-seed*", help="glob of the calibration files' stems")
    a = ap.parse_args()
    m = load_manifest(a.manifest)
    feats = extract_features(
        m,
        FeatureConfig(
            backbone="efficientnet-lite0",
            image_size=112,
            cache_dir=Path("data/feature-cache"),
            workers=1,
        ),
    )
    x = np.ascontiguousarray(feats.values, dtype=np.float32)
    done = set()
    if a.out.exists():
        with a.out.open() as fh:
            done = {(r["file"], r["variant"]) for r in csv.DictReader(fh)}
    new = not a.out.exists()
    with a.out.open("a", newline="") as fh:
        writer = csv.writer(fh)
        if new:
            writer.writerow(["file", "variant", "recall@1", "seconds"])
        for path in sorted(a.calib.glob(f"{a.files}.npz")):
            d = np.load(path)
            y, true, train = d["noisy"], d["true"], d["train"]
            k = int(true.max()) + 1
            seed = int(path.stem.rsplit("seed", 1)[1])
            for name in a.variant or VARIANTS:
                if (path.stem, name) in done:
                    continue
                loss, changes, patch = VARIANTS[name]
                given = true if name.endswith("-clean") else y
                dense = d["conf"] if loss == "smooth-proxy-anchor" else np.eye(k)[given]
                top = TopClasses.from_dense(dense.astype(np.float32), given, width=k)
                cfg = replace(TrainConfig(loss=loss, seed=seed, device="cpu"), **changes)
                undo = patch()
                t0 = time.perf_counter()
                try:
                    head, _ = train_head(x, top, rows=np.flatnonzero(train), config=cfg)
                finally:
                    undo()
                emb = embed(head, x)
                test = ~train
                _, nb = knn.search(emb[test], emb[test], k=1, exclude_self=True)
                r1 = recall_at_k(nb, true[test], (1,))[1]
                writer.writerow([path.stem, name, f"{r1:.4f}", f"{time.perf_counter() - t0:.1f}"])
                fh.flush()
                print(path.stem, name, f"{r1:.2f}", flush=True)


if __name__ == "__main__":
    main()
