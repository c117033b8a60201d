"""Export the outlier benchmark's scenarios for the peer tools, and score them (project venv).

``export``: rebuilds each scenario of ``benchmarks/outliers.py`` exactly as
``noisyclean.bench.outliers.run_outliers_bench`` does (same manifest, seed, rate, rows
drawn by ``choose_rows``, labels given, features from the same cache
``data/feature-cache``, efficientnet-lite0 at 112 px; the junk images already in
``data/outliers-bench/junk`` are reused, none is written) and writes, per scenario,
``DIR/<name>/features.npy``, ``ids.csv`` and ``manifest.csv`` (``id, path, label,
is_outlier``) for ``run_peers.py``. It also recomputes noisyclean's default score on
them (Phase 1 + ``outlier_scores``) as a check that the scenario is the benchmark's.

``score``: AUROC, AP and precision at n (``noisyclean.bench.outliers.ranking``, the
columns of docs/outliers/results.md) of each ``run_peers.py`` run's ``scores.csv``.

    .venv/bin/python benchmarks/peers/outlier_sets.py export -o /work/peers/out20k
    .venv/bin/python benchmarks/peers/outlier_sets.py score /work/peers/out20k \
        --runs fastdup=/work/peers/results20k/fastdup-out \
        fiftyone=/work/peers/results20k/fiftyone-out -o scores.json
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]


def name_of(pair: list[str]) -> str:
    return "-".join(pair)


def export(a: argparse.Namespace) -> None:
    import torch

    from noisyclean.bench import outliers as ob
    from noisyclean.configs import ConfidenceConfig
    from noisyclean.features import FeatureConfig
    from noisyclean.manifest import load_manifest
    from noisyclean.outliers import OutlierConfig

    torch.set_num_threads(2)
    manifest = load_manifest(a.manifest)
    config = FeatureConfig(
        backbone="efficientnet-lite0", image_size=112, cache_dir=a.cache, device="cpu", workers=0
    )
    frame = manifest.frame
    true = frame["true_label"].astype(str).str.strip().to_numpy(dtype=object)
    n = len(frame)
    n_junk = ob._need(a.rows, a.rate)[1]
    jdir = a.work / "junk"
    have = sorted(jdir.glob(f"junk-{a.seed}-*.png"))
    if len(have) < n_junk:
        raise SystemExit(f"{jdir} has {len(have)} junk images, {n_junk} needed (none written)")
    junk = ob.junk_manifest(jdir, n_junk, a.seed)
    pool = ob.Pool(
        true=np.r_[true, np.full(n_junk, ob.JUNK, dtype=object)],
        usable=np.r_[manifest.ok_mask, np.ones(n_junk, dtype=bool)],
        junk=np.r_[np.zeros(n, dtype=bool), np.ones(n_junk, dtype=bool)],
        n_manifest=n,
    )
    ids = np.r_[
        frame["id"].astype(str).to_numpy(dtype=object), junk.frame["id"].to_numpy(dtype=object)
    ]
    paths = np.r_[
        [str(p.resolve()) if isinstance(p, Path) else "" for p in manifest.sources],
        junk.frame["path"].to_numpy(dtype=object),
    ]
    checks = {}
    for pair in [ob.parse_pair(p) for p in a.pairs]:
        positions, is_out = ob.choose_rows(pool, pair, a.rows, a.rate, a.seed)
        t = pool.true[positions]
        classes = sorted(set(t[~is_out]))
        code = {c: i for i, c in enumerate(classes)}
        rng = np.random.default_rng(a.seed + 1)
        labels = np.array([code.get(c, 0) for c in t], dtype=np.int64)
        labels[is_out] = rng.integers(0, len(classes), int(is_out.sum()))
        x = ob.features_of(manifest, junk, positions, config)
        out = a.out / name_of(pair)
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / "features.npy", x.astype(np.float32))
        pd.DataFrame({"id": ids[positions], "status": "ok"}).to_csv(out / "ids.csv", index=False)
        pd.DataFrame(
            {
                "id": ids[positions],
                "path": paths[positions],
                "label": np.array(classes, dtype=object)[labels],
                "is_outlier": is_out.astype(int),
            }
        ).to_csv(out / "manifest.csv", index=False)
        cc = ConfidenceConfig(seed=a.seed)
        conf, sims, idx, _ = ob.phase1(x, labels, len(classes), cc)
        found, _ = ob.ours(x, labels, len(classes), conf, sims, idx, OutlierConfig())
        checks[name_of(pair)] = {k: round(v, 4) for k, v in ob.ranking(found.score, is_out).items()}
        print(
            name_of(pair),
            len(x),
            int(is_out.sum()),
            "noisyclean",
            checks[name_of(pair)],
            flush=True,
        )
    (a.out / "noisyclean-check.json").write_text(json.dumps(checks, indent=1) + "\n")


def score(a: argparse.Namespace) -> None:
    from noisyclean.bench.outliers import ranking

    res: dict = {}
    for spec in a.runs:
        tool, base = spec.split("=", 1)
        res[tool] = {}
        for sdir in sorted(p for p in a.sets.iterdir() if (p / "manifest.csv").exists()):
            run = Path(base) / sdir.name
            if not (run / "scores.csv").exists():
                continue
            m = pd.read_csv(sdir / "manifest.csv", dtype={"id": str})
            s = pd.read_csv(run / "scores.csv", dtype={"id": str}).set_index("id").loc[m["id"]]
            y = m["is_outlier"].to_numpy().astype(bool)
            r = {k: round(v, 4) for k, v in ranking(s["outlier_score"].to_numpy(), y).items()}
            r["outliers"] = int(y.sum())
            r["rows"] = len(m)
            if "in_outliers" in s:
                f = s["in_outliers"].to_numpy().astype(bool)
                r["flagged"] = int(f.sum())
                r["flag_precision"] = round(float(y[f].mean()), 4) if f.any() else None
                r["flag_recall"] = round(float(f[y].mean()), 4)
            summ = run / "summary.json"
            if summ.exists():
                info = json.loads(summ.read_text())
                r["seconds"] = info.get("total_s")
            res[tool][sdir.name] = r
            print(tool, sdir.name, r)
    if a.out:
        a.out.write_text(json.dumps(res, indent=1) + "\n")


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export")
    e.add_argument("-o", "--out", type=Path, required=True)
    e.add_argument("--manifest", type=Path, default=ROOT / "data/fm20k/manifest.csv")
    e.add_argument("--rows", type=int, default=20_000)
    e.add_argument("--rate", type=float, default=0.02)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument(
        "--pairs", nargs="+", default=["Shirt,Sandal", "Bag,Trouser", "Coat,Sneaker", "junk"]
    )
    e.add_argument("--cache", type=Path, default=ROOT / "data/feature-cache")
    e.add_argument("--work", type=Path, default=ROOT / "data/outliers-bench")
    s = sub.add_parser("score")
    s.add_argument("sets", type=Path)
    s.add_argument("--runs", nargs="+", required=True, help="tool=DIR (DIR/<scenario>/scores.csv)")
    s.add_argument("-o", "--out", type=Path)
    a = p.parse_args()
    export(a) if a.cmd == "export" else score(a)


if __name__ == "__main__":
    main()
