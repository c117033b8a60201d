"""noisyclean's features of a manifest, as a .npy + ids CSV that run_peers.py reads.

Runs in the project venv (reads only; the feature cache goes to ``--cache``):

    .venv/bin/python benchmarks/peers/extract_features.py MANIFEST.csv -o DIR \
        [--backbone efficientnet-lite0 --image-size 112 --cache DIR/cache]

Writes ``DIR/features.npy`` ((N, D) float32, manifest order; rows that could not be read
are zero) and ``DIR/ids.csv`` (id, status).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd

from noisyclean.features import FeatureConfig, extract_features
from noisyclean.manifest import load_manifest


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("manifest", type=Path)
    p.add_argument("-o", "--out", type=Path, required=True)
    p.add_argument("--backbone", default="efficientnet-lite0")
    p.add_argument("--image-size", type=int, default=112)
    p.add_argument("--cache", type=Path, default=None)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    a.out.mkdir(parents=True, exist_ok=True)
    m = load_manifest(a.manifest)
    cfg = FeatureConfig(
        backbone=a.backbone,
        image_size=a.image_size,
        cache_dir=a.cache or a.out / "cache",
        device="cpu",
        workers=0,
    )
    t = time.monotonic()
    f = extract_features(m, cfg)
    np.save(a.out / "features.npy", f.values.astype(np.float32))
    pd.DataFrame({"id": m.frame["id"].astype(str), "status": f.status}).to_csv(
        a.out / "ids.csv", index=False
    )
    print(
        f"{len(f.values)} rows x {f.values.shape[1]}: {f.computed} computed in "
        f"{time.monotonic() - t:.1f} s"
    )


if __name__ == "__main__":
    main()
