"""Near-duplicate groups on real images: calibrate the threshold, compare with Datalab.

The command line of ``noisyclean.bench.duplicates.run_duplicates_bench`` (its
docstring says what is planted and how it is counted): takes ``--rows`` images of a
Fashion-MNIST manifest (``examples/make_fashion_mnist.py`` writes one; their labels,
``true_label`` where present, are taken as clean), adds near-copies of a share of them
(resize 0.5–2× bilinear, JPEG quality 60–90, crop ≤ 8% a side; half relabelled, a
fifth of the single copies in test), and scores ``find_duplicates`` over a sweep of
thresholds and Datalab's ``near_duplicate`` issue on the same efficientnet-lite0
features, by pairs. Pairs between two original images (natural near-duplicates of
Fashion-MNIST itself) are reported separately, never counted.

Writes ``results.json``, ``results.md``, ``natural.png`` (top and borderline natural
pairs) and ``copies.png`` (the copies least similar to their originals) to ``-o``.
Everything slow is cached under ``--work`` (the copies, the search, the Datalab run;
the features in ``--work``'s parent folder's ``cache``), so a rerun costs seconds.

    .venv/bin/python benchmarks/duplicates.py --rows 300 -o /tmp/dup-small
    .venv/bin/python benchmarks/duplicates.py --rows 20000 -o docs/duplicates

Datalab needs ``cleanlab[datalab]`` (the ``datasets`` package), which the ``bench``
extra installs; without it, its row says "not installed".
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: see tests/conftest.py

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--manifest", type=Path, default=ROOT / "data/fm20k/manifest.csv")
    p.add_argument("--rows", type=int, default=20_000, help="original images")
    p.add_argument("--copies", type=float, default=0.1, help="share of originals copied")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--scale",
        type=int,
        default=1,
        help="enlarge the 28 px originals this many times (bicubic) before copying them",
    )
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--backbone", default="efficientnet-lite0")
    p.add_argument("--image-size", type=int, default=112)
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--workers", type=int, default=1, help="image decoding processes")
    p.add_argument("--work", type=Path, default=None, help="cache folder (default data/dupbench/…)")
    p.add_argument("--no-datalab", action="store_true")
    p.add_argument("-o", "--out", type=Path, default=ROOT / "docs/duplicates")
    args = p.parse_args(argv)
    if args.work is None:
        name = f"rows{args.rows}-copies{args.copies}-seed{args.seed}-scale{args.scale}"
        args.work = ROOT / "data/dupbench" / name
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from noisyclean.bench.duplicates import run_duplicates_bench
    from noisyclean.features import FeatureConfig
    from noisyclean.manifest import load_manifest

    torch.set_num_threads(args.threads)
    config = FeatureConfig(
        backbone=args.backbone,
        image_size=args.image_size,
        cache_dir=args.work.parent / "cache",
        device="cpu",
        workers=args.workers,
        batch_size=64,
    )
    shown = [0.0]

    def progress(done: int, total: int) -> None:
        if time.monotonic() - shown[0] > 30 or done == total:
            shown[0] = time.monotonic()
            print(f"  features {done}/{total}", flush=True)

    result = run_duplicates_bench(
        load_manifest(args.manifest),
        args.out,
        features=config,
        rows=args.rows,
        copies=args.copies,
        scale=args.scale,
        seed=args.seed,
        k=args.k,
        datalab=not args.no_datalab,
        work=args.work,
        log=lambda line: print(line, flush=True),
        feature_progress=progress,
    )
    print(result.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
