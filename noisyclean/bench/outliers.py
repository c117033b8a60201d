"""Outlier benchmark: images of no class in the label set, planted among labelled ones.

For each scenario (``pairs``), ``rows`` usable rows are drawn from the manifest (both
splits, every row a train row; labels are ``true_label`` where every row has one, else
``label``, taken as clean). A pair of held-out classes (``"Shirt,Sandal"``): the in-set
rows from the other classes with their true labels, and ``rate`` of the rows (2% by
default) from the 2 held-out classes, each under a uniformly random in-set label.
``junk``: in-set rows from all classes, and ``rate`` of generated images of nothing
(``make_junk``: blanks, noise, letters, shapes, stripes, gradients) under random
labels. ``label_noise`` also gives that share of the in-set rows a random other label,
to check that wrong labels are not taken for outliers. Features come through
``noisyclean.features.extract_features`` (the same cache as every other command).
Phase 1 (``score_confidences``) runs on them, and its k-NN search
(``knn.search_with_info`` as ``confidence.py`` calls it, k = 10, leave-one-out) gives
the neighbours' similarities.

Scored on the same features, as rankings of every row (AUROC, average precision,
precision at n, n = the planted outliers), and as flagged sets (precision, recall):

- ``noisyclean`` (``noisyclean.outliers.outlier_scores``, defaults) and its variants
  (``VARIANTS``: other parts, per-class scales), for the choice of the defaults, and
  the default score's flags at other thresholds (``thresholds``);
- ``cleanlab-ood``: ``cleanlab.outlier.OutOfDistribution().fit_score(features=…)``,
  inverted (it is higher for in-distribution rows);
- ``datalab``: ``Datalab(...).find_issues(features=…, issue_types={"outlier": {}})``,
  1 − its ``outlier_score`` and its own ``is_outlier_issue`` flags.

cleanlab and Datalab come with the ``bench`` extra (``cleanlab[datalab]``); without
them their rows say ``not installed``. A second run per scenario on the in-set rows
alone (no outliers planted, Phase 1 rerun) counts how many rows each flag rule flags on
clean data (``clean=False`` skips it). Figures are single runs (one seed); the means
are over the held-out pairs.

:func:`run_outliers_bench` writes ``results.json`` and ``results.md``;
``benchmarks/outliers.py`` is its command line.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from noisyclean import knn
from noisyclean.artifacts import write_text
from noisyclean.backbones import native_image_size
from noisyclean.confidence import Confidences, score_confidences
from noisyclean.configs import ConfidenceConfig
from noisyclean.errors import NoisyCleanError
from noisyclean.features import FeatureConfig, extract_features
from noisyclean.features import Progress as FeatureProgress
from noisyclean.manifest import Embedded, Manifest
from noisyclean.metrics import auroc, average_precision
from noisyclean.outliers import OutlierConfig, OutlierScores, outlier_scores

#: The scenario whose outliers are generated junk images, not held-out classes.
JUNK = "junk"
#: Fashion-MNIST's scenarios: three pairs of held-out classes, and junk.
DEFAULT_PAIRS = ("Shirt,Sandal", "Bag,Trouser", "Coat,Sneaker", JUNK)
#: Cut-offs of the default score whose flags are counted.
DEFAULT_THRESHOLDS = (3.0, 4.0, 4.5, 5.0, 5.5, 6.0, 8.0)
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
#: What a peer's rows say when its package is missing.
NOT_INSTALLED = "not installed"

Log = Callable[[str], None]


# ---------------------------------------------------------------- the rows


@dataclass(frozen=True)
class Pool:
    """Every row a scenario may draw: the manifest's rows, then the junk rows.

    Attributes:
        true: (N + J,) each row's clean label (``JUNK`` for a junk row).
        usable: (N + J,) the row may be drawn (its image is there).
        junk: (N + J,) the row is a generated junk image.
        n_manifest: N, the manifest's rows.
    """

    true: np.ndarray
    usable: np.ndarray
    junk: np.ndarray
    n_manifest: int


def parse_pair(pair: str) -> list[str]:
    """``"Shirt,Sandal"`` -> ``["Shirt", "Sandal"]``; ``"junk"`` -> ``["junk"]``."""
    names = [p.strip() for p in pair.split(",")]
    if not all(names) or len(set(names)) != len(names):
        raise ValueError(f"a scenario is {JUNK!r} or held-out class names with commas: {pair!r}")
    return names


def _need(rows: int, rate: float) -> tuple[int, int]:
    """(in-set rows, outliers) of a scenario of ``rows`` rows."""
    n_out = round(rate * rows)
    return rows - n_out, n_out


def max_rows(pool: Pool, pair: Sequence[str], rate: float, n_junk: int | None = None) -> int:
    """The most rows a scenario can have: its in-set rows and outliers both suffice
    (junk images are made as needed, unless ``n_junk`` caps them)."""
    is_junk = list(pair) == [JUNK]
    fashion = pool.usable & ~pool.junk
    held = np.isin(pool.true, list(pair)) & fashion
    n_in = int((fashion & ~held).sum())
    n_pool = (n_junk if n_junk is not None else 1 << 62) if is_junk else int(held.sum())
    lo, hi = 0, n_in + min(n_pool, n_in + 1)
    while lo < hi:  # both needs grow with the rows: the feasible counts are a prefix
        mid = (lo + hi + 1) // 2
        n_inset, n_out = _need(mid, rate)
        if n_inset <= n_in and n_out <= n_pool:
            lo = mid
        else:
            hi = mid - 1
    return lo


def choose_rows(
    pool: Pool, pair: Sequence[str], rows: int, rate: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pool positions of ``rows`` rows (sorted) and whether each is a planted outlier.

    Rows are taken in one seeded order of the manifest's usable rows, whatever the
    pair, so that runs of different pairs share most of their rows (and their cached
    features). The pair ``junk`` takes its outliers from the junk rows.
    """
    fashion = np.flatnonzero(pool.usable & ~pool.junk)
    order = fashion[np.random.default_rng(seed).permutation(len(fashion))]
    held = np.isin(pool.true[order], list(pair))
    n_inset, n_out = _need(rows, rate)
    source = np.flatnonzero(pool.junk & pool.usable) if list(pair) == [JUNK] else order[held]
    inset, out = order[~held][:n_inset], source[:n_out]
    if len(inset) < n_inset or len(out) < n_out:
        raise NoisyCleanError(f"the manifest has too few rows for {rows} rows with {pair}")
    picked = np.concatenate([inset, out])
    is_out = np.concatenate([np.zeros(len(inset), bool), np.ones(len(out), bool)])
    sort = np.argsort(picked)
    return picked[sort], is_out[sort]


def in_set_labels(
    true: np.ndarray, is_out: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, list[str]]:
    """The labels of chosen rows (``choose_rows``): an in-set row's own class, a planted
    row a uniformly random in-set class (drawn from ``rng``); and the in-set classes
    (those of the in-set rows, sorted), whose indices the labels are."""
    classes = sorted(set(true[~is_out]))
    labels = np.searchsorted(np.asarray(classes), true).astype(np.int64)
    labels[is_out] = rng.integers(0, len(classes), int(is_out.sum()))
    return labels, classes


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
        tmp = path.with_suffix(".tmp")
        img.save(tmp, "PNG")
        tmp.replace(path)
    return paths


def junk_manifest(folder: Path, n: int, seed: int) -> Manifest:
    """A manifest of ``n`` junk images (``make_junk``), label ``junk``."""
    paths = make_junk(folder, n, seed)
    frame = pd.DataFrame(
        {
            "id": [f"junk-{i}" for i in range(n)],
            "path": [str(p.resolve()) for p in paths],
            "label": JUNK,
            "split": "train",
            "status": "ok",
            "true_label": JUNK,
        },
        dtype=object,
    )
    # Built here, not loaded: a manifest file must hold two classes or more.
    return Manifest(
        frame=frame,
        source=folder.resolve() / "junk.csv",
        root=folder.resolve(),
        classes=[JUNK],
        embedded=Embedded(),
    )


def subset(manifest: Manifest, positions: np.ndarray) -> Manifest:
    """Some rows of ``manifest``; a local file's path made absolute and resolved (the
    feature cache's key, as the manifest of those paths alone would give it)."""
    positions = np.asarray(positions, dtype=np.int64)
    frame = manifest.frame.iloc[positions].reset_index(drop=True)
    sources = manifest.sources
    paths = frame["path"].to_numpy(dtype=object).copy()
    for j, i in enumerate(positions.tolist()):
        where = sources[i]
        if isinstance(where, Path):
            paths[j] = str(where.resolve())
    embedded = None
    if manifest.embedded is not None:
        import pyarrow as pa

        e = manifest.embedded
        embedded = Embedded(
            paths=None if e.paths is None else e.paths[positions],
            images=None if e.images is None else e.images.take(pa.array(positions)),
        )
    return Manifest(
        frame=frame.assign(path=paths),
        source=manifest.source,
        root=manifest.root,
        classes=sorted(frame["label"].dropna().astype(str).unique()),
        embedded=embedded,
    )


def features_of(
    manifest: Manifest,
    junk: Manifest | None,
    positions: np.ndarray,
    config: FeatureConfig,
    progress: FeatureProgress | None = None,
) -> np.ndarray:
    """(len(positions), D) features of those pool rows (manifest rows, then junk rows)."""
    n = len(manifest)
    parts = [
        extract_features(subset(manifest, positions[positions < n]), config, progress=progress)
    ]
    if junk is not None and (positions >= n).any():
        parts.append(extract_features(subset(junk, positions[positions >= n] - n), config))
    bad = sum(int((p.status != "ok").sum()) for p in parts)
    if bad:
        raise NoisyCleanError(f"{bad} images could not be read")
    return np.concatenate([p.values for p in parts])


# ---------------------------------------------------------------- scoring


def ranking(score: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """AUROC, average precision and precision at n of a score (higher = more outlying;
    NaN ranks last)."""
    s = np.asarray(score, dtype=np.float64).copy()
    bad = ~np.isfinite(s)
    if bad.any():
        s[bad] = (s[~bad].min() - 1.0) if (~bad).any() else 0.0
    n = int(truth.sum())
    top = np.argsort(-s, kind="stable")[:n]
    return {
        "auroc": auroc(s, truth),
        "ap": average_precision(s, truth),
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
    """Datalab's outlier issue on features: (1 − outlier_score, is_outlier_issue).

    Raises:
        ImportError: cleanlab or its ``datalab`` extra is not installed.
    """
    from cleanlab import Datalab

    lab = Datalab(data={"label": labels}, label_name="label", verbosity=0)
    lab.find_issues(features=x, issue_types={"outlier": {}})
    issues = lab.get_issues("outlier")
    return (
        1.0 - issues["outlier_score"].to_numpy(dtype=np.float64),
        issues["is_outlier_issue"].to_numpy(dtype=bool),
    )


def phase1(
    x: np.ndarray, labels: np.ndarray, n_classes: int, config: ConfidenceConfig
) -> tuple[Confidences, np.ndarray, np.ndarray, float]:
    """Phase 1's confidences and its search's (N, k) neighbours and similarities (the
    search ``confidence.py`` runs: unit rows, every row a train row, leave-one-out);
    and the seconds both took."""
    started = time.perf_counter()
    train = np.ones(len(x), dtype=bool)
    conf = score_confidences(x, labels, train=train, n_classes=n_classes, config=config)
    sims, idx, _ = knn.search_with_info(x, x, k=config.k, exclude_self=True, seed=config.seed)
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


@dataclass(frozen=True)
class _Run:
    """What every scenario shares."""

    manifest: Manifest
    junk: Manifest | None
    pool: Pool
    rows: int
    rate: float
    seed: int
    label_noise: float
    clean: bool
    thresholds: tuple[float, ...]
    features: FeatureConfig
    confidence: ConfidenceConfig
    dump: Path | None
    missing: dict[str, str]
    log: Log
    feature_progress: FeatureProgress | None


def run_pair(run: _Run, pair: Sequence[str]) -> dict[str, Any]:
    """Every method on one scenario (a pair of held-out classes, or junk): with the
    outliers, and clean."""
    log = run.log
    positions, is_out = choose_rows(run.pool, pair, run.rows, run.rate, run.seed)
    true = run.pool.true[positions]
    rng = np.random.default_rng(run.seed + 1)
    labels, classes = in_set_labels(true, is_out, rng)
    wrong = np.zeros(len(labels), dtype=bool)
    if run.label_noise > 0:
        inset = np.flatnonzero(~is_out)
        wrong[rng.choice(inset, round(run.label_noise * len(inset)), replace=False)] = True
        shift = rng.integers(1, len(classes), int(wrong.sum()))
        labels[wrong] = (labels[wrong] + shift) % len(classes)

    name = "/".join(pair)
    log(f"{name}: features of {len(positions)} rows")
    x = features_of(run.manifest, run.junk, positions, run.features, run.feature_progress)
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
    log(f"{name}: Phase 1")
    conf, sims, idx, p1_seconds = phase1(x, labels, k, run.confidence)
    result["phase1_seconds"] = p1_seconds
    dump: dict[str, np.ndarray] = {}
    if run.dump:
        dump.update(x=x, labels=labels, is_out=is_out, wrong=wrong, sims=sims, idx=idx)
        dump.update(given=conf.top.given, cls=conf.top.classes, sc=conf.top.scores)

    default, seconds = ours(x, labels, k, conf, sims, idx, OutlierConfig())
    result["methods"]["noisyclean"] = {
        **ranking(default.score, is_out),
        **flagged(default.is_outlier, is_out),
        "seconds": seconds,
        "wrong_labels_flagged": int((default.is_outlier & wrong).sum()),
    }
    for variant, cfg in VARIANTS.items():
        found, _ = ours(x, labels, k, conf, sims, idx, cfg)
        result["variants"][variant] = {
            **ranking(found.score, is_out),
            **flagged(found.is_outlier, is_out),
        }
    # The default score's flags at other thresholds: the calibration.
    result["thresholds"] = {
        f"{t:g}": flagged(np.nan_to_num(default.score, nan=-np.inf) > t, is_out)
        for t in run.thresholds
    }

    if "cleanlab-ood" not in run.missing:
        try:
            from cleanlab.outlier import OutOfDistribution
        except ImportError as err:
            run.missing["cleanlab-ood"] = f"{NOT_INSTALLED} ({err})"
            log(f"cleanlab-ood skipped: {err}")
        else:
            started = time.perf_counter()
            ood = -OutOfDistribution().fit_score(features=x)
            result["methods"]["cleanlab-ood"] = {
                **ranking(ood, is_out),
                "seconds": time.perf_counter() - started,
            }
    dl_ran = False
    if "datalab" not in run.missing:
        try:
            started = time.perf_counter()
            dl_score, dl_flags = datalab_scores(x, labels)
        except ImportError as err:
            run.missing["datalab"] = f"{NOT_INSTALLED} ({err})"
            log(f"datalab skipped: {err}")
        else:
            dl_ran = True
            result["methods"]["datalab"] = {
                **ranking(dl_score, is_out),
                **flagged(dl_flags, is_out),
                "seconds": time.perf_counter() - started,
                "wrong_labels_flagged": int((dl_flags & wrong).sum()),
            }

    if run.clean:
        log(f"{name}: clean run (no outliers)")
        keep = ~is_out
        xc, lc = x[keep], labels[keep]
        conf_c, sims_c, idx_c, _ = phase1(xc, lc, k, run.confidence)
        clean, _ = ours(xc, lc, k, conf_c, sims_c, idx_c, OutlierConfig())
        if run.dump:
            dump.update(c_sims=sims_c, c_idx=idx_c, c_given=conf_c.top.given)
            dump.update(c_cls=conf_c.top.classes, c_sc=conf_c.top.scores)
        result["clean"]["rows"] = int(keep.sum())
        result["clean"]["noisyclean"] = int(clean.is_outlier.sum())
        result["clean"]["noisyclean_by_threshold"] = {
            f"{t:g}": int((np.nan_to_num(clean.score, nan=-np.inf) > t).sum())
            for t in run.thresholds
        }
        if dl_ran:
            result["clean"]["datalab"] = int(datalab_scores(xc, lc)[1].sum())
    if run.dump:
        run.dump.mkdir(parents=True, exist_ok=True)
        np.savez(run.dump / f"{run.rows}-{'-'.join(pair)}.npz", **dump)  # type: ignore[arg-type]
    return result


def summarise(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over ``pairs`` of every figure (NaN-aware: a method without flags has none)."""

    def mean_of(get: Any) -> dict[str, float]:
        out = {}
        for key in get(pairs[0]):
            vals = np.array([get(p)[key] for p in pairs if key in get(p)], dtype=np.float64)
            known = vals[~np.isnan(vals)]
            out[key] = float(known.mean()) if len(known) else float("nan")
        return out

    if not pairs:
        return {}
    first = pairs[0]
    return {
        "methods": {m: mean_of(lambda p, m=m: p["methods"][m]) for m in first["methods"]},
        "variants": {v: mean_of(lambda p, v=v: p["variants"][v]) for v in first["variants"]},
        "thresholds": {t: mean_of(lambda p, t=t: p["thresholds"][t]) for t in first["thresholds"]},
    }


# ---------------------------------------------------------------- the run


@dataclass(frozen=True)
class OutliersBenchResult:
    """What :func:`run_outliers_bench` wrote, and its headline figures.

    Attributes:
        results: what ``results.json`` holds.
        markdown: ``results.md``.
        out_dir: the folder written to.
        rows: rows per scenario.
        methods: per method (``noisyclean``, ``cleanlab-ood``, ``datalab``), its figures
            (``auroc``, ``ap``, ``p_at_n``; ``flagged``, ``precision``, ``recall`` where
            it flags; ``seconds``) averaged over the held-out pairs, or over every
            scenario when there are none.
        junk: the same for the ``junk`` scenario alone; None without it.
        not_installed: the peers that could not run, -> why.
        headline: a few lines to print.
    """

    results: dict[str, Any]
    markdown: str
    out_dir: Path
    rows: int
    methods: dict[str, dict[str, float]]
    junk: dict[str, dict[str, float]] | None
    not_installed: dict[str, str]
    headline: tuple[str, ...]


def default_pairs(classes: Sequence[str], seed: int = 0) -> list[str]:
    """``DEFAULT_PAIRS``' scenarios whose classes the manifest has, and ``junk``; with
    none of its pairs there (not Fashion-MNIST), one seeded pair of classes."""
    have = set(classes)
    pairs = [p for p in DEFAULT_PAIRS if p != JUNK and set(parse_pair(p)) <= have]
    if not pairs and len(classes) >= 4:
        pick = np.random.default_rng(seed).choice(len(classes), size=2, replace=False)
        pairs = [",".join(sorted(classes[i] for i in pick))]
    return [*pairs, JUNK]


def run_outliers_bench(
    manifest: Manifest,
    output: Path,
    *,
    features: FeatureConfig,
    rows: int | None = None,
    rate: float = 0.02,
    pairs: Sequence[str] | None = None,
    seed: int = 0,
    label_noise: float = 0.0,
    clean: bool = True,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    confidence: Mapping[str, Any] | None = None,
    work: Path | None = None,
    dump: Path | None = None,
    log: Log | None = None,
    feature_progress: FeatureProgress | None = None,
) -> OutliersBenchResult:
    """Plant outliers, score them with ``outlier_scores`` and cleanlab's two, and write
    ``results.json`` and ``results.md`` to ``output``.

    Args:
        manifest: labelled images (``true_label`` where every row has one, else
            ``label``, taken as clean).
        output: the folder written to.
        features: the backbone and feature cache.
        rows: rows per scenario; None: as many as every scenario can have.
        rate: share of each scenario's rows that are planted outliers.
        pairs: the scenarios: ``"A,B"`` holds classes A and B out, ``"junk"`` plants
            generated images of nothing; None: ``default_pairs``.
        seed: seeds the rows drawn, the labels given, Phase 1 and the junk images.
        label_noise: share of the in-set rows given a wrong label.
        clean: also run each scenario without its outliers (flags on clean data).
        thresholds: cut-offs of the default score whose flags are counted.
        confidence: ``ConfidenceConfig`` options for Phase 1 (its seed is ``seed``
            unless given here).
        work: where the junk images are kept (default ``output / "work"``).
        dump: save each scenario's arrays (features, labels, Phase 1's outputs) here.
        log: called with a line of progress now and then.
        feature_progress: called as features are computed.

    Raises:
        NoisyCleanError: a class not in the manifest, too few rows, unreadable images.
        ValueError: a bad option.
    """
    started = time.perf_counter()
    say: Log = log or (lambda _msg: None)
    if not 0.0 < rate < 0.5:
        raise ValueError(f"rate must be in (0, 0.5), got {rate}")
    if not 0.0 <= label_noise < 1.0:
        raise ValueError(f"label_noise must be in [0, 1), got {label_noise}")
    frame = manifest.frame
    true_col = "label"
    if "true_label" in frame:
        t = frame["true_label"]
        if t.notna().all() and (t.astype(str).str.strip() != "").all():
            true_col = "true_label"
    true = frame[true_col].astype(str).str.strip().to_numpy(dtype=object)
    classes = sorted(set(true[manifest.ok_mask]))
    scenarios = [parse_pair(p) for p in (default_pairs(classes, seed) if pairs is None else pairs)]
    if not scenarios:
        raise ValueError("give at least one scenario")
    for pair in scenarios:
        if pair == [JUNK]:
            continue
        unknown = [c for c in pair if c not in classes]
        if unknown:
            raise NoisyCleanError(f"no usable rows of class {', '.join(map(repr, unknown))}")
        if len(set(classes) - set(pair)) < 2:
            raise NoisyCleanError(f"holding out {pair} leaves fewer than two classes")
    work = output / "work" if work is None else work
    wants_junk = [JUNK] in scenarios

    def pool_of(n_junk: int) -> Pool:
        n = len(frame)
        return Pool(
            true=np.r_[true, np.full(n_junk, JUNK, dtype=object)],
            usable=np.r_[manifest.ok_mask, np.ones(n_junk, dtype=bool)],
            junk=np.r_[np.zeros(n, dtype=bool), np.ones(n_junk, dtype=bool)],
            n_manifest=n,
        )

    most = {"/".join(p): max_rows(pool_of(0), p, rate) for p in scenarios}
    if rows is None:
        rows = min(most.values())
        say(f"{rows} rows per scenario")
    short = [name for name, n in most.items() if n < rows]
    if short:
        raise NoisyCleanError(
            f"the manifest has too few rows for {rows} rows with {', '.join(short)} "
            f"(at most {min(most[n] for n in short)})"
        )
    if _need(rows, rate)[1] < 1:
        raise NoisyCleanError(f"{rows} rows at a rate of {rate:g} plant no outlier")
    n_junk = _need(rows, rate)[1] if wants_junk else 0
    junk = junk_manifest(work / "junk", n_junk, seed) if wants_junk else None
    run = _Run(
        manifest=manifest,
        junk=junk,
        pool=pool_of(n_junk),
        rows=rows,
        rate=rate,
        seed=seed,
        label_noise=label_noise,
        clean=clean,
        thresholds=tuple(float(t) for t in thresholds),
        features=features,
        confidence=ConfidenceConfig(**{"seed": seed, **dict(confidence or {})}),
        dump=dump,
        missing={},
        log=say,
        feature_progress=feature_progress,
    )
    results_pairs = [run_pair(run, p) for p in scenarios]
    held = [p for p in results_pairs if p["pair"] != [JUNK]]
    results = {
        "rows": rows,
        "rate": rate,
        "label_noise": label_noise,
        "seed": seed,
        "threshold": OutlierConfig().threshold,
        "default_config": {
            **asdict(replace(OutlierConfig())),
            "parts": list(OutlierConfig().parts),
        },
        "features": {
            "backbone": features.backbone,
            "image_size": features.image_size or native_image_size(features.backbone),
        },
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "seconds": time.perf_counter() - started,
        "not_installed": dict(run.missing),
        "pairs": results_pairs,
        "mean": summarise(held),
    }
    output.mkdir(parents=True, exist_ok=True)
    markdown_text = markdown(results)
    write_text(output / "results.json", json.dumps(results, indent=1) + "\n")
    write_text(output / "results.md", markdown_text)
    mean = summarise(held or results_pairs).get("methods", {})
    junk_run = next((p for p in results_pairs if p["pair"] == [JUNK]), None)
    return OutliersBenchResult(
        results=results,
        markdown=markdown_text,
        out_dir=output,
        rows=rows,
        methods=mean,
        junk=dict(junk_run["methods"]) if junk_run else None,
        not_installed=dict(run.missing),
        headline=tuple(headline(results)),
    )


# ---------------------------------------------------------------- the report


def fmt(v: Any, digits: int = 3) -> str:
    """A figure for a table: NaN as a dash."""
    if isinstance(v, float):
        return "–" if np.isnan(v) else f"{v:.{digits}f}"
    return str(v)


def _backbone(results: dict[str, Any]) -> str:
    f = results.get("features") or {"backbone": "efficientnet-lite0", "image_size": 112}
    return f"{f['backbone']} at {f['image_size']} px"


def headline(results: dict[str, Any]) -> list[str]:
    """A few lines for a terminal: each method's mean figures, the junk scenario's AUROC."""
    pairs = results["pairs"]
    held = [p for p in pairs if p["pair"] != [JUNK]]
    nan = float("nan")
    out = [
        f"{results['rows']} rows per scenario, {results['rate']:.0%} planted outliers; "
        f"{len(held)} held-out pair(s)" + (", junk" if len(held) < len(pairs) else "")
    ]
    mean = (summarise(held) or summarise(pairs)).get("methods", {})
    where = "mean over held-out pairs" if held else "junk"
    for name, m in mean.items():
        line = f"{name} ({where}): AUROC {fmt(m['auroc'])}, P@n {fmt(m['p_at_n'])}"
        if "precision" in m:
            line += (
                f"; flags {fmt(m.get('flagged', nan), 1)} rows, precision "
                f"{fmt(m['precision'])}, recall {fmt(m.get('recall', nan))}"
            )
        out.append(line)
    junk = next((p for p in pairs if p["pair"] == [JUNK]), None)
    if junk and held:
        out.append(
            "junk: AUROC "
            + ", ".join(f"{name} {fmt(m['auroc'])}" for name, m in junk["methods"].items())
        )
    out += [f"{name}: {why}" for name, why in results.get("not_installed", {}).items()]
    return out


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
        f"{_backbone(results)}; seed {results['seed']}; {results['machine']}; "
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
    for name in results.get("not_installed", {}):
        lines.append(f"| {name} | {NOT_INSTALLED} | – | – | – | – | – | – | – |")
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
