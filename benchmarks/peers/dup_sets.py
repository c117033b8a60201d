"""Export a duplicates-benchmark work folder for the peer tools (project venv).

For a work folder of ``benchmarks/duplicates.py`` (``data/dupbench/rows20000-...``), with
its own feature cache (``data/dupbench/cache``, the ``FeatureConfig`` the benchmark
used: efficientnet-lite0 at 112 px), writes to ``-o``:

- ``features.npy`` + ``ids.csv``: the benchmark's features (from the cache; nothing is
  recomputed when the cache is warm), checked against the stamp of the benchmark's
  ``search.npz`` (rows and the sum of |x|), so they are the very features it searched;
- ``manifest.csv``: ``id, path, label, is_copy, origin`` (origin: the original's id)
  for ``run_peers.py``;
- ``pairs.csv``: every true pair (``id_a, id_b``: two rows from one original, at least
  one a copy).

    .venv/bin/python benchmarks/peers/dup_sets.py data/dupbench/rows20000-copies0.1-seed0-scale4 \
        -o /work/peers/dup20k-x4

``truth(work)`` rebuilds the benchmark's ``Truth`` from the work folder's manifest (the
copy ids name their original), as ``score_dups.py`` and ``centring_probe.py`` use it.
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd

from noisyclean.bench.duplicates import Truth
from noisyclean.features import FeatureConfig, extract_features
from noisyclean.manifest import load_manifest


def frame(work: Path) -> pd.DataFrame:
    """The work folder's manifest with origin (row position), is_copy, relabelled."""
    f = pd.read_csv(work / "manifest.csv", dtype=str, keep_default_na=False)
    pos = {i: k for k, i in enumerate(f["id"])}
    is_copy = f["id"].str.startswith("copy-").to_numpy()
    origin = np.arange(len(f))
    for k in np.flatnonzero(is_copy):
        origin[k] = pos[f["id"].iat[k][len("copy-") :].rsplit("-", 1)[0]]
    f["is_copy"] = is_copy
    f["origin"] = origin
    f["relabelled"] = f["label"] != f["true_label"]
    return f


def truth(work: Path) -> Truth:
    f = frame(work)
    classes = sorted(f["true_label"].unique())
    return Truth(
        origin=f["origin"].to_numpy(dtype=np.int64),
        is_copy=f["is_copy"].to_numpy(dtype=bool),
        relabelled=f["relabelled"].to_numpy(dtype=bool),
        is_test=(f["split"] == "test").to_numpy(),
        labels=pd.Categorical(f["label"], categories=classes).codes.astype(np.int64),
        ops=np.full(len(f), "", dtype=object),
    )


def config(work: Path) -> FeatureConfig:
    """The benchmark's FeatureConfig (benchmarks/duplicates.py)."""
    return FeatureConfig(
        backbone="efficientnet-lite0",
        image_size=112,
        cache_dir=work.parent / "cache",
        device="cpu",
        workers=0,
        batch_size=64,
    )


def features(work: Path) -> np.ndarray:
    """The benchmark's features, checked against its search.npz stamp."""
    t = time.monotonic()
    feats = extract_features(load_manifest(work / "manifest.csv"), config(work))
    x = feats.values
    print(
        f"{work.name}: {len(x)} x {x.shape[1]}, {feats.computed} computed, "
        f"{time.monotonic() - t:.1f} s"
    )
    z = np.load(work / "search.npz")
    st = z["stamp"]
    if int(st[0]) != len(x) or not np.isclose(
        st[3], float(np.abs(x).sum(dtype=np.float64)), rtol=1e-9
    ):
        raise SystemExit(f"features differ from {work}/search.npz's stamp")
    return x


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("work", type=Path)
    p.add_argument("-o", "--out", type=Path, required=True)
    a = p.parse_args()
    import torch

    torch.set_num_threads(2)
    a.out.mkdir(parents=True, exist_ok=True)
    x = features(a.work)
    f = frame(a.work)
    np.save(a.out / "features.npy", x.astype(np.float32))
    f[["id"]].assign(status="ok").to_csv(a.out / "ids.csv", index=False)
    ids = f["id"].to_numpy()
    f.assign(is_copy=f["is_copy"].astype(int), origin=ids[f["origin"]])[
        ["id", "path", "label", "is_copy", "origin"]
    ].to_csv(a.out / "manifest.csv", index=False)
    rows = []
    for g in f.groupby("origin").groups.values():
        if len(g) > 1:
            rows += [tuple(sorted((ids[i], ids[j]))) for i, j in itertools.combinations(g, 2)]
    pd.DataFrame(rows, columns=["id_a", "id_b"]).to_csv(a.out / "pairs.csv", index=False)
    print(
        f"{len(f)} rows, {int(f['is_copy'].sum())} copies, {len(rows)} true pairs, "
        f"truth.true_pairs = {truth(a.work).true_pairs}"
    )


if __name__ == "__main__":
    main()
