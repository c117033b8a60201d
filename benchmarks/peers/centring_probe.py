"""Does mean-centring the features help noisyclean's near-duplicate groups? (project venv)

On a duplicates-benchmark work folder (``data/dupbench/rows20000-...``), with the
benchmark's own features (``dup_sets.features``: cache, checked against its
``search.npz``), runs the benchmark's search (``noisyclean.bench.duplicates.search``:
train rows among train rows leave-one-out, test rows among train rows, exact k = 10;
cached under ``--cache``, never in the work folder) and ``find_duplicates`` over a sweep
of thresholds, scored by ``score_groups``, twice:

- ``raw``: the unit features, as noisyclean does now;
- ``centred``: the unit features minus their mean over the train rows, re-normalised
  (what FiftyOne's sklearn backend does before its cosine distance, there over all rows).

In each space a pair of originals counts as natural (left out of precision) by that
space's own rule (cosine ≥ threshold in that space); strict precision counts every pair
with a copy, so it does not depend on the space. Reports, per space, the highest recall
at precision ≥ 0.95 and ≥ 0.99 (and the same with strict precision), with the threshold.
A coarse sweep (step 0.005) is refined to 0.001 around each of those thresholds.

    .venv/bin/python benchmarks/peers/centring_probe.py \
        data/dupbench/rows20000-copies0.1-seed0-scale4 \
        -o /work/peers/results20k/centring-x4.json --cache /work/peers/centring-cache
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dup_sets import features, frame, truth

from noisyclean import knn
from noisyclean.bench.duplicates import content_keys, score_groups, search
from noisyclean.duplicates import COSINE_THRESHOLD as DEFAULT_THRESHOLD
from noisyclean.duplicates import find_duplicates

KEYS = (
    "threshold",
    "precision",
    "precision_strict",
    "recall",
    "conflict_recall",
    "leak_recall",
    "pairs_with_copy",
    "true_positive",
    "false_positive",
    "natural_explained",
    "natural_pairs",
    "groups",
    "largest_group",
)
FLOORS = (0.95, 0.99)


def best(sweep: list[dict], key: str, floor: float) -> dict | None:
    ok = [r for r in sweep if r[key] is not None and r[key] >= floor]
    return max(ok, key=lambda r: (r["recall"], r["threshold"])) if ok else None


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("work", type=Path)
    p.add_argument("-o", "--out", type=Path, required=True)
    p.add_argument("--cache", type=Path, required=True, help="where the two searches go")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    import torch

    torch.set_num_threads(2)
    a.cache.mkdir(parents=True, exist_ok=True)
    x = features(a.work)
    f = frame(a.work)
    t = truth(a.work)
    usable = np.ones(len(x), dtype=bool)
    keys = content_keys(f["path"].tolist())
    unit = knn.normalize(x)
    train = usable & ~t.is_test
    mu = unit[train].mean(axis=0, keepdims=True)
    spaces = {"raw": unit, "centred": knn.normalize(unit - mu)}
    out: dict = {
        "set": a.work.name,
        "rows": len(x),
        "true_pairs": t.true_pairs,
        "k": a.k,
        "mean_norm_of_unit_features": round(float(np.linalg.norm(mu)), 4),
        "spaces": {},
    }
    ref = np.load(a.work / "search.npz")
    for name, u in spaces.items():
        nb, sims, secs = search(
            u, usable, t.is_test, a.k, a.seed, a.cache / f"{a.work.name}-{name}.npz"
        )
        info = {"search_s": round(secs, 2)}
        if name == "raw":  # the benchmark's own search, recomputed: the same neighbours?
            info["same_neighbours_as_benchmark"] = round(float((nb == ref["nb"]).mean()), 6)
        scored: dict[float, dict] = {}

        def run(ths: np.ndarray, nb=nb, sims=sims, u=u, scored=scored) -> None:
            for th in np.round(ths, 4):
                th = float(th)
                if th in scored or not -1 <= th <= 1:
                    continue
                d = find_duplicates(
                    nb, sims, t.labels, t.is_test, usable, threshold=th, content_keys=keys
                )
                r = score_groups(d, t, u)
                scored[th] = {k: r[k] for k in KEYS}

        lo = 0.80 if name == "raw" else 0.50
        tt = time.monotonic()
        run(np.arange(lo, 0.9951, 0.005))
        run(np.array([DEFAULT_THRESHOLD]))
        for _ in range(2):
            sweep = [scored[k] for k in sorted(scored)]
            for key in ("precision", "precision_strict"):
                for fl in FLOORS:
                    b = best(sweep, key, fl)
                    if b:
                        run(b["threshold"] + np.arange(-0.01, 0.0101, 0.001))
        sweep = [scored[k] for k in sorted(scored)]
        info["sweep_s"] = round(time.monotonic() - tt, 1)
        info["at_default"] = scored[DEFAULT_THRESHOLD]
        for key in ("precision", "precision_strict"):
            for fl in FLOORS:
                info[f"best_{key}_{fl:g}"] = best(sweep, key, fl)
        info["sweep"] = sweep
        out["spaces"][name] = info
        print(name, {k: v for k, v in info.items() if k != "sweep"}, flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
