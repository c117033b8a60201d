"""Phase 1 and Phase 2 outputs on the Fashion-MNIST bench settings, saved for study.

For each noise setting and seed (as ``noisyclean bench`` injects them), saves
``DIR/<tag>.npz`` with the noisy and true labels of the train rows, Phase 1's dense
confidences, Phase 2's combined scores and suspicion, and the test rows' Recall@1 of
Smooth Proxy-Anchor. Resumable: a setting whose file exists is skipped. Used to choose
the flag rule and the noise estimate of issue 12 (``benchmarks/calibration.py``).

    nice .venv/bin/python benchmarks/calibration_data.py data/fm20k/manifest.csv \
        -o data/calib --seeds 3
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pandas as pd

from noisyclean.bench.noise import apply_noise, parse_noise
from noisyclean.confidence import ConfidenceConfig, TopClasses, score_confidences
from noisyclean.embedding import TrainConfig, embed, train_head
from noisyclean.features import FeatureConfig, extract_features
from noisyclean.manifest import load_manifest
from noisyclean.suspects import SuspectConfig, find_suspects

NOISES = ("symmetric:0.2", "symmetric:0.4", "pair:0.3")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("manifest", type=Path)
    ap.add_argument("-o", "--out", type=Path, default=Path("data/calib"))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--noise", action="append", default=None)
    ap.add_argument("--image-size", type=int, default=112)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    m = load_manifest(a.manifest)
    feats = extract_features(
        m,
        FeatureConfig(
            backbone="efficientnet-lite0",
            image_size=a.image_size,
            cache_dir=Path("data/feature-cache"),
            workers=1,
        ),
    )
    df = m.frame
    classes = sorted(df["true_label"].unique())
    true = pd.Categorical(df["true_label"], categories=classes).codes.astype(np.int64)
    train = (df["split"] != "test").to_numpy()
    x = np.ascontiguousarray(feats.values, dtype=np.float32)
    np.save(a.out / "true.npy", true)
    np.save(a.out / "train.npy", train)
    k = len(classes)
    for seed in range(a.seeds):
        for spec in a.noise or NOISES:
            noise = parse_noise(spec)
            tag = noise.tag(seed).removesuffix(f"-s{seed}") + f"-seed{seed}"
            path = a.out / f"{tag}.npz"
            if path.exists():
                continue
            t0 = time.perf_counter()
            y = true.copy()
            y[train] = apply_noise(
                noise, y[train], k, seed=seed, features=x[train], classes=[str(c) for c in classes]
            )
            conf = score_confidences(
                x, y, train=train, n_classes=k, config=ConfidenceConfig(seed=seed)
            )
            dense = conf.top.dense()
            top = TopClasses.from_dense(dense, y, width=k)
            head, _ = train_head(
                x, top, rows=np.flatnonzero(train), config=TrainConfig(seed=seed, device="cpu")
            )
            emb = embed(head, x)
            found = find_suspects(
                emb,
                top,
                usable=np.ones(len(y), dtype=bool),
                train=train,
                classes=[str(c) for c in range(k)],
                config=SuspectConfig(),
            )
            np.savez_compressed(
                path,
                noisy=y,
                true=true,
                train=train,
                conf=dense.astype(np.float32),
                suspicion=found.suspicion,
                is_suspect=found.is_suspect,
                emb=emb.astype(np.float16),
            )
            print(f"{tag}: {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
