"""Outlier benchmark: images of no class in the label set, planted in Fashion-MNIST.

The command line of ``noisyclean.bench.outliers.run_outliers_bench`` (its docstring
says what is planted and how it is scored). For each scenario (``--pairs``), ``--rows``
rows are drawn from the manifest (``data/fm20k/manifest.csv``, both splits, every row a
train row). A pair of held-out classes (``Shirt,Sandal``): the in-set rows from the 8
other classes with their true labels, and ``--rate`` of the rows (2% by default) from
the 2 held-out classes, each under a uniformly random in-set label. ``junk``: in-set
rows from all 10 classes, and ``--rate`` of generated images of nothing (blanks, noise,
letters, shapes, stripes, gradients) under random labels. ``--label-noise`` also gives
that share of the in-set rows a random other label, to check that wrong labels are not
taken for outliers. Features: ``efficientnet-lite0`` at 112 px through
``noisyclean.features.extract_features`` (cached under ``--cache``).

Compared on the same features: ``noisyclean.outliers.outlier_scores`` (defaults, its
variants, the default score at other ``--thresholds``), cleanlab's
``OutOfDistribution`` and Datalab's ``outlier`` issue (both from the ``bench`` extra,
``cleanlab[datalab]``; without it their rows say "not installed"). A second run per
scenario on the in-set rows alone counts the flags on clean data (``--no-clean`` skips
it).

Writes ``results.json`` and ``results.md`` to ``-o`` (default ``docs/outliers``);
``--dump DIR`` also saves each scenario's arrays (features, labels, Phase 1's outputs).

Usage::

    .venv/bin/python benchmarks/outliers.py --rows 20000
    .venv/bin/python benchmarks/outliers.py --rows 1000 -o /tmp/outliers  # a quick check
    .venv/bin/python benchmarks/outliers.py --rows 8000 --label-noise 0.1 --no-clean
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PAIRS = ("Shirt,Sandal", "Bag,Trouser", "Coat,Sneaker", "junk")


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

    from noisyclean.bench.outliers import run_outliers_bench
    from noisyclean.features import FeatureConfig
    from noisyclean.manifest import load_manifest

    config = FeatureConfig(
        backbone="efficientnet-lite0",
        image_size=112,
        cache_dir=args.cache,
        device="cpu",
        workers=0,
    )
    run_outliers_bench(
        load_manifest(args.manifest),
        args.output,
        features=config,
        rows=args.rows,
        rate=args.rate,
        pairs=args.pairs,
        seed=args.seed,
        label_noise=args.label_noise,
        clean=not args.no_clean,
        thresholds=args.thresholds,
        work=args.work,
        dump=args.dump,
        log=log,
    )
    log(f"wrote {args.output}/results.json and results.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
