"""Outlier benchmark: images of no class in the label set, planted in Fashion-MNIST.

For each scenario (``--pairs``), ``--rows`` rows are drawn from the manifest
(``data/fm20k/manifest.csv``, both splits, every row a train row). A pair of held-out
classes (``Shirt,Sandal``): the in-set rows from the 8 other classes with their true
labels, and ``--rate`` of the rows (2% by default) from the 2 held-out classes, each
under a uniformly random in-set label. ``junk``: in-set rows from all 10 classes, and
``--rate`` of generated images of nothing (``make_junk``: blanks, noise, letters,
shapes, stripes, gradients) under random labels. ``--label-noise`` also gives that
share of the in-set rows a random other label, to check that wrong labels are not taken
for outliers. Features: ``efficientnet-lite0`` at 112 px through
``noisyclean.features.extract_features`` (cached under ``--cache``). Phase 1
(``score_confidences``) runs on them, and its k-NN search (``knn.search_with_info`` as
``confidence.py`` calls it, k = 10, leave-one-out) gives the neighbours' similarities.

Scored on the same features, as rankings of every row (AUROC, average precision,
precision at n, n = the planted outliers), and as flagged sets (precision, recall):

- ``noisyclean`` (``noisyclean.outliers.outlier_scores``, defaults) and its
  variants (``VARIANTS``: other parts, per-class scales), for the choice of the
  defaults, and the default score's flags at other thresholds (``--thresholds``);
- ``cleanlab-ood``: ``cleanlab.outlier.OutOfDistribution().fit_score(features=…)``,
  inverted (it is higher for in-distribution rows);
- ``datalab``: ``Datalab(...).find_issues(features=…, issue_types={"outlier": {}})``,
  1 − its ``outlier_score`` and its own ``is_outlier_issue`` flags. Datalab needs
  ``cleanlab[datalab]`` (the ``datasets`` package), which the ``bench`` extra installs.

A second run per scenario on the in-set rows alone (no outliers planted, Phase 1
rerun) counts how many rows each flag rule flags on clean data (``--no-clean`` skips
it). Figures are single runs (one seed); the means are over the held-out pairs.

Writes ``results.json`` and ``results.md`` to ``-o`` (default ``docs/outliers``);
``--dump DIR`` also saves each scenario's arrays (features, labels, Phase 1's outputs).

Usage::

    .venv/bin/python benchmarks/outliers.py --rows 20000
    .venv/bin/python benchmarks/outliers.py --rows 1000 -o /tmp/outliers  # a quick check
    .venv/bin/python benchmarks/outliers.py --rows 8000 --label-noise 0.1 --no-clean
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd

from noisyclean import knn
from noisyclean.confidence import Confidences, score_confidences
from noisyclean.configs import ConfidenceConfig
from noisyclean.features import FeatureConfig, extract_features
from noisyclean.manifest import load_manifest
from noisyclean.outliers import OutlierConfig, OutlierScores, outlier_scores

ROOT = Path(__file__).resolve().parents[1]
#: The scenario whose outliers are generated junk images, not held-out classes.
JUNK = "junk"
DEFAULT_PAIRS = ("Shirt,Sandal", "Bag,Trouser", "Coat,Sneaker", JUNK)
#: Variants of the score measured beside the default (name -> options).
VARIANTS: dict[str, OutlierConfig] = {
    "centroid": OutlierConfig(parts=("centroid",)),
    "spread": OutlierConfig(parts=("spread",)),
    "confidence": OutlierConfig(parts=("confidence",)),
    "neighbours": OutlierConfig(parts=("neighbours",)),
    "centroid+confidence": OutlierConfig(parts=("centroid", "confidence")),
    "neighbours+spread": OutlierConfig(parts=("neighbours", "spread")),
    "neighbours+confidence": OutlierConfig(parts=("neighbours", "confidence")),
    "neighbours+centroid": OutlierConfig(parts=("neighbours", "centroid")),
    "neighbours+centroid+spread": OutlierConfig(parts=("neighbours", "centroid", "spread")),
    "centroid+spread, per class": OutlierConfig(parts=("centroid", "spread"), per_class=True),
}


def choose_rows(
    frame: pd.DataFrame, pair: Sequence[str], rows: int, rate: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Manifest positions of ``rows`` rows (sorted) and whether each is a planted outlier.

    Rows are taken in one seeded order of the manifest's Fashion-MNIST rows, whatever the
    pair, so that runs of different pairs share most of their rows (and their cached
    features). The pair ``junk`` takes its outliers from the junk rows (``with_junk``).
    """
    true = frame["true_label"].astype(str).str.strip().to_numpy()
    fashion = np.flatnonzero(true != JUNK)
    order = fashion[np.random.default_rng(seed).permutation(len(fashion))]
    held = np.isin(true[order], list(pair))
    n_out = round(rate * rows)
    pool = np.flatnonzero(true == JUNK) if list(pair) == [JUNK] else order[held]
    inset, out = order[~held][: rows - n_out], pool[:n_out]
    if len(inset) < rows - n_out or len(out) < n_out:
        raise SystemExit(f"the manifest has too few rows for --rows {rows} with {pair}")
    picked = np.concatenate([inset, out])
    is_out = np.concatenate([np.zeros(len(inset), bool), np.ones(len(out), bool)])
    sort = np.argsort(picked)
    return picked[sort], is_out[sort]


def make_junk(folder: Path, n: int, seed: int) -> list[Path]:
    """``n`` 28×28 greyscale PNGs of nothing in Fashion-MNIST, as a web scrape brings:
    blanks, noise, text, shapes, stripes and gradients, in turn (written once, reused)."""
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    font = ImageFont.load_default()
    paths = []
    for i in range(n):
        path = folder / f"junk-{seed}-{i:05d}.png"
        paths.append(path)
        kind = i % 6
        params = rng.random(8)  # drawn for every image, so image i never depends on n
        if path.exists():
            continue
        if kind == 0:  # a blank, at some grey level, with a little sensor noise
            level = 255 * params[0]
            pixels = level + rng.normal(0, 2, (28, 28))
            img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        elif kind == 1:  # noise, more or less blurred
            pixels = rng.integers(0, 256, (28, 28), dtype=np.uint8)
            img = Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(float(2 * params[0])))
        elif kind == 2:  # a few letters or digits: a logo, a watermark
            img = Image.new("L", (28, 28), int(60 * params[0]))
            text = "".join(rng.choice(list("ABCDEFGHKMNPRSTXYZ0123456789"), 1 + int(3 * params[1])))
            xy = (int(10 * params[2]), int(14 * params[3]))
            ImageDraw.Draw(img).text(xy, text, fill=180 + int(75 * params[4]), font=font)
        elif kind == 3:  # a filled or outlined circle, ellipse or box
            img = Image.new("L", (28, 28), 0)
            draw = ImageDraw.Draw(img)
            x0, y0 = 2 + 10 * params[0], 2 + 10 * params[1]
            box = (x0, y0, x0 + 6 + 10 * params[2], y0 + 6 + 10 * params[3])
            fill = 120 + int(135 * params[4]) if params[5] < 0.5 else None
            shape = draw.ellipse if params[6] < 0.5 else draw.rectangle
            shape(box, fill=fill, outline=255, width=1 + int(2 * params[7]))
        elif kind == 4:  # stripes or a checkerboard
            period = 2 + int(6 * params[0])
            yy, xx = np.mgrid[:28, :28]
            if params[1] < 0.5:
                pixels = ((xx if params[2] < 0.5 else yy) // period) % 2
            else:
                pixels = (xx // period + yy // period) % 2
            img = Image.fromarray((pixels * (100 + 155 * params[3])).astype(np.uint8))
        else:  # a gradient
            ramp = np.linspace(0, 1, 28)
            pixels = np.outer(ramp, np.ones(28)) if params[0] < 0.5 else np.outer(np.ones(28), ramp)
            img = Image.fromarray(
                (255 * (pixels * params[1] + (1 - params[1]) * params[2])).astype(np.uint8)
            )
        img.save(path)
    return paths


def with_junk(frame: pd.DataFrame, folder: Path, n: int, seed: int) -> pd.DataFrame:
    """The manifest's rows and ``n`` junk rows (true label ``junk``) after them."""
    paths = make_junk(folder, n, seed)
    junk = pd.DataFrame(
        {
            "id": [f"junk-{i}" for i in range(n)],
            "path": [str(p) for p in paths],
            "label": JUNK,
            "split": "train",
            "true_label": JUNK,
        }
    )
    return pd.concat([frame, junk], ignore_index=True)


def features_of(frame: pd.DataFrame, positions: np.ndarray, work: Path, cache: Path) -> np.ndarray:
    """(len(positions), D) features of those manifest rows (through the feature cache)."""
    work.mkdir(parents=True, exist_ok=True)
    sub = frame.iloc[positions].copy()
    manifest = work / f"manifest-{len(positions)}.csv"
    sub.to_csv(manifest, index=False)
    config = FeatureConfig(
        backbone="efficientnet-lite0", image_size=112, cache_dir=cache, device="cpu", workers=0
    )
    found = extract_features(load_manifest(manifest), config)
    bad = int((found.status != "ok").sum())
    if bad:
        raise SystemExit(f"{bad} images could not be read")
    return found.values


def ranking(score: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """AUROC, average precision and precision at n of a score (higher = more outlying)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    s = np.nan_to_num(np.asarray(score, dtype=np.float64), nan=-np.inf)
    n = int(truth.sum())
    top = np.argsort(-s, kind="stable")[:n]
    return {
        "auroc": float(roc_auc_score(truth, s)),
        "ap": float(average_precision_score(truth, s)),
        "p_at_n": float(truth[top].mean()) if n else float("nan"),
    }


def flagged(flags: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Precision, recall and count of a flagged set."""
    hit = int((flags & truth).sum())
    count = int(flags.sum())
    return {
        "flagged": count,
        "precision": hit / count if count else float("nan"),
        "recall": hit / int(truth.sum()) if truth.any() else float("nan"),
    }


def datalab_scores(x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Datalab's outlier issue on features: (1 − outlier_score, is_outlier_issue)."""
    from cleanlab import Datalab

    lab = Datalab(data={"label": labels}, label_name="label", verbosity=0)
    lab.find_issues(features=x, issue_types={"outlier": {}})
    issues = lab.get_issues("outlier")
    return (
        1.0 - issues["outlier_score"].to_numpy(dtype=np.float64),
        issues["is_outlier_issue"].to_numpy(dtype=bool),
    )


def phase1(
    x: np.ndarray, labels: np.ndarray, n_classes: int, seed: int
) -> tuple[Confidences, np.ndarray, np.ndarray, float]:
    """Phase 1's confidences and its search's (N, k) neighbours and similarities (the
    search ``confidence.py`` runs: unit rows, every row a train row, leave-one-out);
    and the seconds both took."""
    started = time.perf_counter()
    train = np.ones(len(x), dtype=bool)
    config = ConfidenceConfig(seed=seed)
    conf = score_confidences(x, labels, train=train, n_classes=n_classes, config=config)
    sims, idx, _ = knn.search_with_info(x, x, k=config.k, exclude_self=True, seed=seed)
    return conf, sims, idx, time.perf_counter() - started


def ours(
    x: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    conf: Confidences,
    sims: np.ndarray,
    idx: np.ndarray,
    config: OutlierConfig,
) -> tuple[OutlierScores, float]:
    """``outlier_scores`` on Phase 1's outputs, every row a train row; and its seconds."""
    started = time.perf_counter()
    found = outlier_scores(
        knn.normalize(x),
        labels,
        train=np.ones(len(x), dtype=bool),
        n_classes=n_classes,
        confidences=conf.top,
        similarities=sims,
        neighbours=idx,
        config=config,
    )
    return found, time.perf_counter() - started


def run_pair(
    frame: pd.DataFrame,
    pair: Sequence[str],
    args: argparse.Namespace,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Every method on one scenario (a pair of held-out classes, or junk): with the
    outliers, and clean."""
    positions, is_out = choose_rows(frame, pair, args.rows, args.rate, args.seed)
    true = frame["true_label"].astype(str).str.strip().to_numpy()[positions]
    classes = sorted(set(true[~is_out]))
    code = {c: i for i, c in enumerate(classes)}
    rng = np.random.default_rng(args.seed + 1)
    labels = np.array([code.get(t, 0) for t in true], dtype=np.int64)
    labels[is_out] = rng.integers(0, len(classes), int(is_out.sum()))
    wrong = np.zeros(len(labels), dtype=bool)
    if args.label_noise > 0:
        inset = np.flatnonzero(~is_out)
        wrong[rng.choice(inset, round(args.label_noise * len(inset)), replace=False)] = True
        shift = rng.integers(1, len(classes), int(wrong.sum()))
        labels[wrong] = (labels[wrong] + shift) % len(classes)

    log(f"{'/'.join(pair)}: features of {len(positions)} rows")
    x = features_of(frame, positions, args.work, args.cache)
    k = len(classes)
    result: dict[str, Any] = {
        "pair": list(pair),
        "rows": len(positions),
        "outliers": int(is_out.sum()),
        "wrong_labels": int(wrong.sum()),
        "methods": {},
        "variants": {},
        "clean": {},
    }
    log(f"{'/'.join(pair)}: Phase 1")
    conf, sims, idx, p1_seconds = phase1(x, labels, k, args.seed)
    result["phase1_seconds"] = p1_seconds
    dump: dict[str, np.ndarray] = {}
    if args.dump:
        dump.update(x=x, labels=labels, is_out=is_out, wrong=wrong, sims=sims, idx=idx)
        dump.update(given=conf.top.given, cls=conf.top.classes, sc=conf.top.scores)

    default, seconds = ours(x, labels, k, conf, sims, idx, OutlierConfig())
    result["methods"]["noisyclean"] = {
        **ranking(default.score, is_out),
        **flagged(default.is_outlier, is_out),
        "seconds": seconds,
        "wrong_labels_flagged": int((default.is_outlier & wrong).sum()),
    }
    for name, cfg in VARIANTS.items():
        found, _ = ours(x, labels, k, conf, sims, idx, cfg)
        result["variants"][name] = {
            **ranking(found.score, is_out),
            **flagged(found.is_outlier, is_out),
        }
    # The default score's flags at other thresholds: the calibration.
    result["thresholds"] = {
        f"{t:g}": flagged(np.nan_to_num(default.score, nan=-np.inf) > t, is_out)
        for t in args.thresholds
    }

    from cleanlab.outlier import OutOfDistribution

    started = time.perf_counter()
    ood = -OutOfDistribution().fit_score(features=x)
    result["methods"]["cleanlab-ood"] = {
        **ranking(ood, is_out),
        "seconds": time.perf_counter() - started,
    }
    try:
        started = time.perf_counter()
        dl_score, dl_flags = datalab_scores(x, labels)
        result["methods"]["datalab"] = {
            **ranking(dl_score, is_out),
            **flagged(dl_flags, is_out),
            "seconds": time.perf_counter() - started,
            "wrong_labels_flagged": int((dl_flags & wrong).sum()),
        }
    except ImportError as err:
        log(f"datalab skipped: {err}")
        dl_score = None

    if not args.no_clean:
        log(f"{'/'.join(pair)}: clean run (no outliers)")
        keep = ~is_out
        xc, lc = x[keep], labels[keep]
        conf_c, sims_c, idx_c, _ = phase1(xc, lc, k, args.seed)
        clean, _ = ours(xc, lc, k, conf_c, sims_c, idx_c, OutlierConfig())
        if args.dump:
            dump.update(c_sims=sims_c, c_idx=idx_c, c_given=conf_c.top.given)
            dump.update(c_cls=conf_c.top.classes, c_sc=conf_c.top.scores)
        result["clean"]["rows"] = int(keep.sum())
        result["clean"]["noisyclean"] = int(clean.is_outlier.sum())
        result["clean"]["noisyclean_by_threshold"] = {
            f"{t:g}": int((np.nan_to_num(clean.score, nan=-np.inf) > t).sum())
            for t in args.thresholds
        }
        if dl_score is not None:
            result["clean"]["datalab"] = int(datalab_scores(xc, lc)[1].sum())
    if args.dump:
        args.dump.mkdir(parents=True, exist_ok=True)
        np.savez(args.dump / f"{args.rows}-{'-'.join(pair)}.npz", **dump)  # type: ignore[arg-type]
    return result


def summarise(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over ``pairs`` of every figure (NaN-aware: a method without flags has none)."""

    def mean_of(get: Any) -> dict[str, float]:
        out = {}
        for key in get(pairs[0]):
            vals = [get(p)[key] for p in pairs if key in get(p)]
            out[key] = float(np.nanmean(vals)) if vals else float("nan")
        return out

    if not pairs:
        return {}
    first = pairs[0]
    return {
        "methods": {m: mean_of(lambda p, m=m: p["methods"][m]) for m in first["methods"]},
        "variants": {v: mean_of(lambda p, v=v: p["variants"][v]) for v in first["variants"]},
        "thresholds": {t: mean_of(lambda p, t=t: p["thresholds"][t]) for t in first["thresholds"]},
    }


def fmt(v: Any, digits: int = 3) -> str:
    """A figure for a table: NaN as a dash."""
    if isinstance(v, float):
        return "–" if np.isnan(v) else f"{v:.{digits}f}"
    return str(v)


def markdown(results: dict[str, Any]) -> str:
    """results.md: the comparison, per pair, the variants, the threshold calibration."""
    pairs = results["pairs"]
    held = [p for p in pairs if p["pair"] != [JUNK]]
    names = ["/".join(p["pair"]) for p in pairs]
    nan = float("nan")
    lines = [
        "# Outlier benchmark — Fashion-MNIST",
        "",
        f"{results['rows']} rows per scenario, every row a train row; {results['rate']:.0%} of "
        "them are outliers under uniformly random in-set labels: rows of 2 held-out classes "
        "(the other 8 are the label set), or, in the `junk` scenario, generated images of "
        "nothing (blanks, noise, text, shapes, stripes, gradients) among all 10 classes. "
        f"{results['label_noise']:.0%} of the in-set rows carry a wrong label. Backbone "
        f"efficientnet-lite0 at 112 px; seed {results['seed']}; {results['machine']}; "
        f"{results['seconds'] / 60:.1f} min in all. Produced by `benchmarks/outliers.py`.",
        "",
        "AUROC, average precision (AP) and precision at n (n = the number of outliers) rank "
        "every row; flagged P/R judge each method's own flags; *clean* is how many rows it "
        "flags when no outlier is planted (the same in-set rows, Phase 1 rerun on them).",
        "",
        f"## Methods, mean over the {len(held)} held-out pairs",
        "",
        "| method | AUROC | AP | P@n | flagged | flagged P | flagged R | clean | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    mean = results["mean"]
    for name, m in mean.get("methods", {}).items():
        clean = [p["clean"][name] for p in held if name in p.get("clean", {})]
        lines.append(
            f"| {name} | {fmt(m['auroc'])} | {fmt(m['ap'])} | {fmt(m['p_at_n'])} | "
            f"{fmt(m.get('flagged', nan), 1)} | {fmt(m.get('precision', nan))} | "
            f"{fmt(m.get('recall', nan))} | {fmt(float(np.mean(clean)), 1) if clean else '–'} | "
            f"{fmt(m['seconds'], 2)} |"
        )
    lines += [
        "",
        "noisyclean's seconds are `outlier_scores` alone, on Phase 1's outputs (Phase 1 and "
        "its search: see `phase1_seconds` in results.json). cleanlab-ood has no flag rule; "
        "Datalab flags rows whose mean k-NN distance exceeds Q3 + 1.7·IQR; noisyclean flags "
        f"score > {results['threshold']:g}.",
        "",
        "## Per scenario",
        "",
        "| scenario | method | AUROC | AP | P@n | flagged | flagged P | flagged R | clean |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, p in zip(names, pairs, strict=True):
        for method, m in p["methods"].items():
            clean = p.get("clean", {})
            lines.append(
                f"| {name} | {method} | {fmt(m['auroc'])} | {fmt(m['ap'])} | "
                f"{fmt(m['p_at_n'])} | {m.get('flagged', '–')} | "
                f"{fmt(m.get('precision', nan))} | {fmt(m.get('recall', nan))} | "
                f"{clean.get(method, '–')} of {clean.get('rows', '–')} |"
            )
    if results["label_noise"] > 0:
        lines += ["", "Wrong-label rows flagged as outliers:", ""]
        for name, p in zip(names, pairs, strict=True):
            got = {
                m: v["wrong_labels_flagged"]
                for m, v in p["methods"].items()
                if "wrong_labels_flagged" in v
            }
            lines.append(f"- {name}: {got} of {p['wrong_labels']}")
    lines += [
        "",
        "## Variants of the score (AUROC per scenario; P@n, flags: mean over held-out pairs)",
        "",
        "| parts | " + " | ".join(names) + " | held-out mean | P@n | flagged P | flagged R |",
        "|---|" + "---|" * (len(names) + 4),
    ]
    variants = {"default: " + "+".join(results["default_config"]["parts"]): "noisyclean"}
    variants.update({v: v for v in pairs[0]["variants"]})
    for label, key in variants.items():

        def get(p: dict[str, Any], key: str = key) -> dict[str, float]:
            return p["methods"][key] if key == "noisyclean" else p["variants"][key]

        aucs = " | ".join(fmt(get(p)["auroc"]) for p in pairs)
        hm = summarise([{"methods": {"x": get(p)}, "variants": {}, "thresholds": {}} for p in held])
        m = hm["methods"]["x"] if hm else {}
        lines.append(
            f"| {label} | {aucs} | {fmt(m.get('auroc', nan))} | {fmt(m.get('p_at_n', nan))} | "
            f"{fmt(m.get('precision', nan))} | {fmt(m.get('recall', nan))} |"
        )
    lines += [
        "",
        "## The default score's threshold",
        "",
        "Flagged / precision / recall per scenario, and rows flagged on the clean run.",
        "",
        "| threshold | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for t in pairs[0]["thresholds"]:
        cells = []
        for p in pairs:
            f = p["thresholds"][t]
            clean = p.get("clean", {}).get("noisyclean_by_threshold", {}).get(t, "–")
            cells.append(
                f"{f['flagged']} / {fmt(f['precision'], 2)} / {fmt(f['recall'], 2)}; clean {clean}"
            )
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", type=Path, default=ROOT / "data/fm20k/manifest.csv")
    parser.add_argument("--rows", type=int, default=20_000, help="rows per pair")
    parser.add_argument("--rate", type=float, default=0.02, help="share of planted outliers")
    parser.add_argument("--label-noise", type=float, default=0.0)
    parser.add_argument("--pairs", nargs="+", default=list(DEFAULT_PAIRS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=ROOT / "data/feature-cache")
    parser.add_argument("--work", type=Path, default=ROOT / "data/outliers-bench")
    parser.add_argument("--dump", type=Path, help="save each pair's arrays here (.npz)")
    parser.add_argument("--no-clean", action="store_true", help="skip the clean runs")
    parser.add_argument(
        "--thresholds", type=float, nargs="+", default=[3.0, 4.0, 4.5, 5.0, 5.5, 6.0, 8.0]
    )
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "docs/outliers")
    args = parser.parse_args(argv)
    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {msg}", file=sys.stderr, flush=True)

    frame = pd.read_csv(args.manifest)
    frame["path"] = [str((args.manifest.parent / p).resolve()) for p in frame["path"]]
    if JUNK in args.pairs:
        frame = with_junk(frame, args.work / "junk", round(args.rate * args.rows), args.seed)
    pairs = [run_pair(frame, p.split(","), args, log) for p in args.pairs]
    results = {
        "rows": args.rows,
        "rate": args.rate,
        "label_noise": args.label_noise,
        "seed": args.seed,
        "threshold": OutlierConfig().threshold,
        "default_config": {
            **asdict(replace(OutlierConfig())),
            "parts": list(OutlierConfig().parts),
        },
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "seconds": time.perf_counter() - started,
        "pairs": pairs,
        "mean": summarise([p for p in pairs if p["pair"] != [JUNK]]),
    }
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.output / "results.md").write_text(markdown(results))
    log(f"wrote {args.output}/results.json and results.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
