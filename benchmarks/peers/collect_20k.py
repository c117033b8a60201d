"""Gather the 20k peer runs (``run_20k.sh``'s output folder) into one JSON."""

import argparse
import json
from pathlib import Path

p = argparse.ArgumentParser()
p.add_argument("runs", type=Path)
p.add_argument("-o", "--out", type=Path, required=True)
a = p.parse_args()
R = a.runs


def load(name: str) -> dict:
    return json.loads((R / name).read_text())


def summary(name: str) -> dict:
    s = json.loads((R / name / "summary.json").read_text())
    return {k: v for k, v in s.items() if k not in ("sweep_by_similarity", "at_tool_threshold")}


out: dict = {"duplicates": {}, "centring_probe": {}, "outliers": load("outliers-scores.json")}
for s, name in (("x4", "x4"), ("x1", "native")):
    d = {}
    for tool, run in (
        ("fastdup, same features", f"fastdup-feat-{s}"),
        ("fiftyone, same features", f"fiftyone-feat-{s}"),
        ("fastdup, own model", f"fastdup-images-{s}"),
    ):
        f = R / f"score-{run}.json"
        if f.exists():
            d[tool] = {**load(f.name), "run": summary(run)}
    out["duplicates"][name] = d
    out["centring_probe"][name] = load(f"centring-{s}.json")
out["notes"] = {
    "pairs": "scored with noisyclean.bench.duplicates.score_pairs; FiftyOne's natural-pair "
    "rule on mean-centred unit features, fastdup's on its own features' cosine",
    "fiftyone_sweep_step": 0.01,
    "fastdup_sweep_step": 0.005,
}
a.out.write_text(json.dumps(out, indent=1) + "\n")
print("wrote", a.out)
