"""A transition matrix of real human label noise, from CIFAR-10N, for ``bench --noise``.

CIFAR-10N (Wei et al., "Learning with Noisy Labels Revisited: A Study Using Real-World
Human Annotations", ICLR 2022) gives each CIFAR-10 training image three labels from
three Amazon Mechanical Turk workers (``random_label1..3``) beside its clean label.
Counting (clean label, worker's label) over the images and workers gives the human
confusion matrix; each row, normalised, is P(a worker's label = j | true class i).

The bench maps it onto another dataset's classes by index (CIFAR-10's class i becomes
the dataset's class i in its official order), as issue 12 asks: the noise keeps its
real structure (which classes, how unevenly), not its meaning. The written CSV names
the target classes in its header row, so ``bench`` puts it in the data's class order.

    python benchmarks/human_noise_matrix.py labels.csv \
        -o benchmarks/noise/cifar10n-random.csv

``labels.csv`` has the columns ``clean_label`` and ``random_label1..3`` (CIFAR-10's
class indices), as the official ``CIFAR-10_human.pt`` holds them; a ``.pt`` file is
read with torch.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from noisyclean.bench import FASHION_MNIST_CLASSES
from noisyclean.bench.noise import parse_noise

CIFAR10 = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
WORKERS = ("random_label1", "random_label2", "random_label3")


def read_labels(path: Path) -> pd.DataFrame:
    """The clean label and the three workers' labels, one row per image."""
    if path.suffix == ".pt":
        import torch

        raw = torch.load(path, map_location="cpu", weights_only=False)
        frame = pd.DataFrame({k: np.asarray(raw[k]) for k in ("clean_label", *WORKERS)})
    else:
        frame = pd.read_csv(path)
    missing = [c for c in ("clean_label", *WORKERS) if c not in frame.columns]
    if missing:
        raise SystemExit(f"{path}: missing column(s) {', '.join(missing)}")
    values = frame[["clean_label", *WORKERS]]
    bad = ~values.isin(range(10)).all(axis=1)
    if bad.any():
        raise SystemExit(f"{path}: row {int(np.flatnonzero(bad)[0]) + 2} has a label outside 0-9")
    return values.astype(np.int64)


def human_counts(frame: pd.DataFrame) -> np.ndarray:
    """(10, 10) counts of (clean label, a worker's label) over images and workers."""
    counts = np.zeros((10, 10), dtype=np.int64)
    for worker in WORKERS:
        np.add.at(counts, (frame["clean_label"].to_numpy(), frame[worker].to_numpy()), 1)
    return counts


def matrix_csv(counts: np.ndarray, source: str, n_images: int) -> str:
    """The CSV text: provenance and counts as comments, the target class names, and
    the row-normalised counts (17 significant digits: rows sum to 1 within 1e-15)."""
    probs = counts / counts.sum(axis=1, keepdims=True)
    lines = [
        "# Human label noise: CIFAR-10N's workers (random_label1..3) against CIFAR-10's",
        "# clean labels, mapped onto Fashion-MNIST's classes by index. Row i: P(label j |",
        "# true class i). Made by benchmarks/human_noise_matrix.py.",
        f"# Source: {source}; {n_images} images x 3 workers.",
        f"# Mean flip probability {1 - np.diag(probs).mean():.4f}; counts "
        "(rows: CIFAR-10 true class " + ", ".join(CIFAR10) + "):",
        *("#   " + ",".join(str(int(v)) for v in row) for row in counts),
        ",".join(FASHION_MNIST_CLASSES),
        *(",".join(f"{v:.17g}" for v in row) for row in probs),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("labels", type=Path, help="CIFAR-10N labels: .csv or .pt")
    parser.add_argument("-o", "--output", type=Path, required=True, help="matrix CSV to write")
    parser.add_argument(
        "--source", default=None, help="provenance written into the file (default: the path)"
    )
    args = parser.parse_args()
    if args.output.resolve() == args.labels.resolve():
        raise SystemExit("--output would overwrite the labels file")
    frame = read_labels(args.labels)
    counts = human_counts(frame)
    empty = np.flatnonzero(counts.sum(axis=1) == 0)
    if empty.size:
        raise SystemExit(
            f"{args.labels}: no images of class {empty[0]} ({CIFAR10[empty[0]]}): "
            "its row of the matrix is undefined"
        )
    text = matrix_csv(counts, args.source or str(args.labels), len(frame))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=args.output.parent, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(tmp, args.output)
    # Read back as the bench will: its rate is the mean flip probability.
    flips = parse_noise(f"transition:{args.output}").rate
    print(f"wrote {args.output}: {len(frame)} images, mean flip probability {flips:.4f}")


if __name__ == "__main__":
    main()
