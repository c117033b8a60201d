"""Score a peer tool's pairs with the duplicates benchmark's own rules (project venv).

Reads ``run_peers.py``'s ``pairs.csv`` (fastdup: its k-NN list with the cosine of every
pair; a threshold keeps the pairs at or above it) or ``sweep_pairs.csv`` (FiftyOne: the
pairs inside its groups at each threshold of the sweep), maps ids to the benchmark's
rows and scores each threshold with ``noisyclean.bench.duplicates.score_pairs``: pair
precision leaving out pairs whose two originals are near-duplicates by the same tool's
rule (``cut``: cosine ≥ the threshold, on raw unit features for fastdup, on mean-centred
unit features for FiftyOne, which centres before its cosine distance), strict precision,
pair recall and conflict recall (relabelled copies in a pair with two labels).

    .venv/bin/python benchmarks/peers/score_dups.py WORK RUN_DIR --tool fastdup \
        [--default 0.9] -o scores.json

Prints and writes the sweep, the tool's default, and the threshold with the highest
recall among those whose precision is at least 0.95 (and 0.99).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dup_sets import frame, truth

from noisyclean import knn
from noisyclean.bench.duplicates import score_pairs

KEYS = (
    "precision",
    "precision_strict",
    "recall",
    "conflict_recall",
    "pairs_with_copy",
    "true_positive",
    "false_positive",
    "natural_explained",
    "natural_pairs",
)


def best_at(sweep: list[dict], floor: float) -> dict | None:
    """Highest recall among thresholds with precision >= floor (ties: higher threshold)."""
    ok = [r for r in sweep if r["precision"] is not None and r["precision"] >= floor]
    return max(ok, key=lambda r: (r["recall"], r["threshold"])) if ok else None


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("work", type=Path)
    p.add_argument("run", type=Path, help="run_peers.py's output folder")
    p.add_argument("--tool", choices=["fastdup", "fiftyone"], required=True)
    p.add_argument("--features", type=Path, required=True, help="features.npy (row order)")
    p.add_argument("--default", type=float, required=True, help="the tool's default (cosine)")
    p.add_argument("--sweep", type=float, nargs=3, default=(0.80, 0.995, 0.005))
    p.add_argument("-o", "--out", type=Path)
    a = p.parse_args()
    f = frame(a.work)
    t = truth(a.work)
    pos = {i: k for k, i in enumerate(f["id"])}
    x = np.load(a.features).astype(np.float32)
    if a.tool == "fiftyone":
        x = x - x.mean(axis=0, keepdims=True)
    unit = knn.normalize(x)

    def rows(df: pd.DataFrame) -> np.ndarray:
        return (
            np.stack([df["id_a"].map(pos).to_numpy(), df["id_b"].map(pos).to_numpy()], axis=1)
            .astype(np.int64)
            .reshape(-1, 2)
        )

    if a.tool == "fastdup":
        pairs = pd.read_csv(a.run / "pairs.csv", dtype={"id_a": str, "id_b": str})
        grid = sorted(
            set(np.round(np.arange(a.sweep[0], a.sweep[1] + 1e-9, a.sweep[2]), 3)) | {a.default}
        )
        steps = {float(th): pairs[pairs["similarity"] >= th] for th in grid}
    else:
        sp = pd.read_csv(a.run / "sweep_pairs.csv", dtype={"id_a": str, "id_b": str})
        steps = {float(th): g for th, g in sp.groupby("threshold")}
        if a.default not in steps:
            steps[a.default] = pd.read_csv(a.run / "pairs.csv", dtype={"id_a": str, "id_b": str})
    sweep = []
    for th in sorted(steps):
        r = score_pairs(rows(steps[th]), t, unit, th)
        sweep.append({"threshold": th, **{k: r[k] for k in KEYS}})
    out = {
        "tool": a.tool,
        "set": a.work.name,
        "true_pairs": t.true_pairs,
        "relabelled_copies": int(t.relabelled.sum()),
        "similarity": "cosine of mean-centred features" if a.tool == "fiftyone" else "cosine",
        "at_default": next(r for r in sweep if r["threshold"] == a.default),
        "best_p95": best_at(sweep, 0.95),
        "best_p99": best_at(sweep, 0.99),
        "sweep": sweep,
    }
    if a.out:
        a.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"{a.tool} {a.work.name}")
    for r in sweep:
        print(
            f"  {r['threshold']:.3f}  P {r['precision']}  strict {r['precision_strict']}  "
            f"R {r['recall']}  conflict {r['conflict_recall']}  pairs {r['pairs_with_copy']}"
        )
    for k in ("at_default", "best_p95", "best_p99"):
        print(k, out[k] and {kk: out[k][kk] for kk in ("threshold", "precision", "recall")})


if __name__ == "__main__":
    main()
