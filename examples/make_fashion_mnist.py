"""Convert Fashion-MNIST's idx files into PNG images and a noisyclean manifest.

Writes ``images/<split>/<index>.png`` (28x28 grayscale, ``index`` being the
row's position in the official file) and ``manifest.csv`` with the columns
``id,path,label,split,true_label``. Injected noise touches train rows only;
``true_label`` always holds the official label.

Example (the committed ``examples/fashion-mnist-mini``)::

    python examples/make_fashion_mnist.py -o examples/fashion-mnist-mini \\
        --train 1000 --test 500 --noise symmetric:0.2 --seed 0
"""

from __future__ import annotations

import argparse
import csv
import gzip
import os
import struct
import sys
import tempfile
from collections.abc import Sequence
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image

from noisyclean.bench import FASHION_MNIST_CLASSES
from noisyclean.bench.noise import apply_noise, parse_noise

DEFAULT_SOURCE = Path("/usr/share/datasets/fashion-mnist")
# (split, image file, label file, rows in the official set)
SPLITS = (
    ("train", "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60_000),
    ("test", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10_000),
)
PARALLEL_FROM = 2_000  # below this, starting worker processes costs more than it saves


def read_idx(path: Path) -> np.ndarray:
    """Read a gzipped idx file of unsigned bytes; shape ``(N,)`` or ``(N, H, W)``."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an idx file of unsigned bytes")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def stratified_subset(labels: np.ndarray, n: int, *, seed: int) -> np.ndarray:
    """Sorted indices of ``n`` rows, each class keeping its share of ``labels`` (N,)."""
    if n >= labels.size:
        return np.arange(labels.size)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * n / labels.size
    take = np.floor(quota).astype(np.int64)
    # Largest remainder, ties to the lower class index, so the total is exactly n.
    order = np.argsort(-(quota - take), kind="stable")
    take[order[: n - int(take.sum())]] += 1
    chosen = [
        rng.choice(np.flatnonzero(labels == c), size=k, replace=False)
        for c, k in zip(classes, take, strict=True)
    ]
    return np.sort(np.concatenate(chosen))


def _write_png(job: tuple[str, np.ndarray]) -> None:
    path, pixels = job
    Image.fromarray(pixels).save(path, format="PNG", optimize=True)


def write_pngs(jobs: list[tuple[str, np.ndarray]], *, workers: int) -> None:
    """Write each ``(path, (28, 28) uint8)`` job as a grayscale PNG."""
    if workers <= 1 or len(jobs) < PARALLEL_FROM:
        for job in jobs:
            _write_png(job)
        return
    with Pool(workers) as pool:
        for _ in pool.imap_unordered(_write_png, jobs, chunksize=256):
            pass


def write_manifest(rows: list[dict[str, str]], path: Path) -> None:
    """Write the manifest CSV atomically: a temp file in the same folder, then rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".manifest-", suffix=".csv.tmp")
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["id", "path", "label", "split", "true_label"])
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--source",
        type=Path,
        default=DEFAULT_SOURCE,
        help=f"folder with the four idx .gz files (default {DEFAULT_SOURCE})",
    )
    parser.add_argument(
        "--train",
        type=int,
        default=60_000,
        metavar="N",
        help="stratified random train rows from the official 60,000 (default all)",
    )
    parser.add_argument(
        "--test",
        type=int,
        default=10_000,
        metavar="N",
        help="stratified random test rows from the official 10,000 (default all)",
    )
    parser.add_argument(
        "--noise",
        metavar="SPEC",
        help="label noise for train rows, e.g. symmetric:0.2 or pair:0.3 (pair "
        "flips each class to the class with the nearest pixel centroid)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for subset and noise")
    parser.add_argument("--workers", type=int, default=2, help="processes writing PNGs (default 2)")
    args = parser.parse_args(argv)
    for (split, _, _, total), n in zip(SPLITS, (args.train, args.test), strict=True):
        if not 0 <= n <= total:
            parser.error(f"--{split} must be in [0, {total}], got {n}")
    if args.noise is not None:
        try:
            args.noise = parse_noise(args.noise)
        except ValueError as err:
            parser.error(f"--noise: {err}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out
    rows: list[dict[str, str]] = []
    jobs: list[tuple[str, np.ndarray]] = []
    n_noisy = 0
    for split, images_file, labels_file, _ in SPLITS:
        try:
            images = read_idx(args.source / images_file)
            labels = read_idx(args.source / labels_file).astype(np.int64)
        except (OSError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        n = args.train if split == "train" else args.test
        index = stratified_subset(labels, n, seed=args.seed)
        true = labels[index]
        given = true
        if split == "train" and args.noise is not None:
            features = images[index].reshape(index.size, -1).astype(np.float32)
            given = apply_noise(
                args.noise,
                true,
                len(FASHION_MNIST_CLASSES),
                seed=args.seed,
                features=features,
                classes=FASHION_MNIST_CLASSES,
            )
            n_noisy = int((given != true).sum())
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        for i, g, t in zip(index, given, true, strict=True):
            rel = f"images/{split}/{i:05d}.png"
            jobs.append((str(out / rel), images[i]))
            rows.append(
                {
                    "id": f"{split}-{i:05d}",
                    "path": rel,
                    "label": FASHION_MNIST_CLASSES[g],
                    "split": split,
                    "true_label": FASHION_MNIST_CLASSES[t],
                }
            )
    write_pngs(jobs, workers=args.workers)
    # The manifest goes last, so its presence means every image it lists exists.
    write_manifest(rows, out / "manifest.csv")
    n_train = sum(r["split"] == "train" for r in rows)
    noise = f" ({args.noise})" if args.noise is not None else ""
    print(
        f"wrote {len(rows)} rows ({n_train} train, {len(rows) - n_train} test) to "
        f"{out}; {n_noisy} noisy train rows{noise}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
