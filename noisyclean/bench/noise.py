"""Seeded label-noise injection with known ground truth.

Plain functions over integer labels of shape ``(N,)``, in the manner of
cleanlab's ``benchmarking/noise_generation.py``. Every function returns a new
array and leaves its input untouched; the rows whose returned label differs
from the input are exactly the injected errors. The same seed gives the same
result.

Flip counts use Python's ``round`` (half to even): ``round(rate * N)`` rows
for symmetric noise and ``round(rate * n_c)`` rows of each class ``c`` for
pair noise.

Noise settings as the bench's ``--noise`` spells them (:func:`parse_noise`):

- ``symmetric:RATE``: ``RATE`` of the rows flip, each to a uniformly random other class;
- ``pair:RATE``: ``RATE`` of each class flips to its nearest class (feature centroids);
- ``transition:MATRIX.csv``: each row's label is drawn from its class's row of a K×K
  row-stochastic matrix; ``#`` lines are comments, and a first row of class names puts
  the matrix in the data's class order (without one, rows are in the bench's sorted
  order; a first row followed by K rows of K numbers is a header even when its names
  are numbers);
- ``openset:RATE``: open-set noise. Two classes are held out of the label set (the
  outlier benchmark's first pair, ``noisyclean.bench.outliers.DEFAULT_PAIRS``), and
  ``RATE`` of the train rows are images of them under uniformly random in-set labels:
  wrong labels whose true class is outside the label set. It changes which rows there
  are, so :func:`apply_noise` does not apply it; ``noisyclean.bench.openset`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast, get_args

import numpy as np

__all__ = [
    "NoiseKind",
    "NoiseSpec",
    "apply_noise",
    "centroid_mapping",
    "pair_noise",
    "parse_noise",
    "symmetric_noise",
    "transition_noise",
]

NoiseKind = Literal["symmetric", "pair", "transition", "openset"]
_KINDS: tuple[str, ...] = get_args(NoiseKind)


def _check_labels(labels: np.ndarray, n_classes: int) -> np.ndarray:
    labels = np.asarray(labels)
    if n_classes < 2:
        raise ValueError(f"n_classes must be at least 2, got {n_classes}")
    if labels.ndim != 1:
        raise ValueError(f"labels must have shape (N,), got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(
            f"labels must lie in [0, {n_classes}), got [{labels.min()}, {labels.max()}]"
        )
    return labels


def _check_rate(rate: float) -> float:
    rate = float(rate)
    if not 0.0 <= rate < 1.0:  # also rejects NaN
        raise ValueError(f"noise rate must be in [0, 1), got {rate}")
    return rate


def symmetric_noise(labels: np.ndarray, n_classes: int, *, rate: float, seed: int) -> np.ndarray:
    """Flip a random ``round(rate * N)`` rows, each to a uniformly random other class.

    Args:
        labels: Integer class indices in ``[0, n_classes)``. Shape ``(N,)``.
        n_classes: Number of classes ``K`` (at least 2).
        rate: Fraction of rows to flip, in ``[0, 1)``.
        seed: Seed for the random generator.

    Returns:
        New noisy labels, shape ``(N,)``, same dtype as ``labels``. Every
        flipped row gets a class different from its original one.

    Raises:
        ValueError: On bad labels, ``n_classes`` or ``rate``.
    """
    labels = _check_labels(labels, n_classes)
    rate = _check_rate(rate)
    rng = np.random.default_rng(seed)
    noisy = labels.copy()
    n_flip = round(rate * labels.size)
    rows = rng.choice(labels.size, size=n_flip, replace=False)
    # An offset in 1..K-1 modulo K is uniform over the K-1 other classes.
    offsets = rng.integers(1, n_classes, size=n_flip)
    noisy[rows] = (labels[rows] + offsets) % n_classes
    return noisy


def centroid_mapping(features: np.ndarray, labels: np.ndarray, n_classes: int) -> list[int]:
    """Map each class to the most similar other class by centroid cosine similarity.

    Rows of ``features`` are L2-normalised, averaged per class, and the
    centroids L2-normalised again; class ``c`` maps to the other class whose
    centroid has the highest cosine with its own (lowest index on ties). A
    class with no rows, or whose only candidates have no rows, falls back to
    ``(c + 1) % K``.

    Args:
        features: One feature vector per row. Shape ``(N, D)``.
        labels: Integer class indices in ``[0, n_classes)``. Shape ``(N,)``.
        n_classes: Number of classes ``K``.

    Returns:
        ``mapping`` of length ``K`` with ``mapping[c] != c``.

    Raises:
        ValueError: On bad labels or when ``features`` is not ``(N, D)``.
    """
    labels = _check_labels(labels, n_classes)
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim != 2 or feats.shape[0] != labels.size:
        raise ValueError(f"features must have shape (N={labels.size}, D), got {feats.shape}")
    norms = np.linalg.norm(feats, axis=1, keepdims=True)
    feats = feats / np.where(norms > 0, norms, 1.0)
    sums = np.zeros((n_classes, feats.shape[1]))
    np.add.at(sums, labels, feats)
    counts = np.bincount(labels, minlength=n_classes)
    present = counts > 0
    centroids = sums / np.maximum(counts, 1)[:, None]
    c_norms = np.linalg.norm(centroids, axis=1, keepdims=True)
    centroids = centroids / np.where(c_norms > 0, c_norms, 1.0)
    sim = centroids @ centroids.T
    np.fill_diagonal(sim, -np.inf)
    sim[:, ~present] = -np.inf
    mapping: list[int] = []
    for c in range(n_classes):
        best = int(np.argmax(sim[c]))
        if not present[c] or not np.isfinite(sim[c, best]):
            best = (c + 1) % n_classes
        mapping.append(best)
    return mapping


def pair_noise(
    labels: np.ndarray,
    n_classes: int,
    *,
    rate: float,
    seed: int,
    mapping: Sequence[int] | None = None,
    features: np.ndarray | None = None,
) -> np.ndarray:
    """Flip ``round(rate * n_c)`` random rows of each class ``c`` to ``mapping[c]``.

    The mapping is, in order of precedence: ``mapping`` as given; the nearest
    other class by centroid cosine similarity of ``features`` (see
    :func:`centroid_mapping`); otherwise ``(c + 1) % K``.

    Args:
        labels: Integer class indices in ``[0, n_classes)``. Shape ``(N,)``.
        n_classes: Number of classes ``K`` (at least 2).
        rate: Fraction of each class to flip, in ``[0, 1)``.
        seed: Seed for the random generator.
        mapping: Target class for each class, length ``K``, ``mapping[c] != c``.
        features: Row features used to choose the mapping. Shape ``(N, D)``.

    Returns:
        New noisy labels, shape ``(N,)``, same dtype as ``labels``.

    Raises:
        ValueError: On bad labels, ``n_classes``, ``rate``, ``mapping`` or
            ``features``.
    """
    labels = _check_labels(labels, n_classes)
    rate = _check_rate(rate)
    if mapping is not None:
        targets = [int(m) for m in mapping]
        if len(targets) != n_classes:
            raise ValueError(f"mapping must have {n_classes} entries, got {len(targets)}")
        for c, m in enumerate(targets):
            if not 0 <= m < n_classes or m == c:
                raise ValueError(f"mapping[{c}] must be another class in [0, {n_classes}), got {m}")
    elif features is not None:
        targets = centroid_mapping(features, labels, n_classes)
    else:
        targets = [(c + 1) % n_classes for c in range(n_classes)]
    rng = np.random.default_rng(seed)
    noisy = labels.copy()
    for c in range(n_classes):
        rows = np.flatnonzero(labels == c)
        chosen = rng.choice(rows, size=round(rate * rows.size), replace=False)
        noisy[chosen] = targets[c]
    return noisy


def transition_noise(
    labels: np.ndarray, n_classes: int, *, matrix: np.ndarray, seed: int
) -> np.ndarray:
    """Draw each row's new label from ``matrix[label]`` (class-conditional noise).

    ``matrix[c, j]`` is P(noisy label = j | true label = c), so a row may keep
    its class with probability ``matrix[c, c]``.

    Args:
        labels: Integer class indices in ``[0, n_classes)``. Shape ``(N,)``.
        n_classes: Number of classes ``K`` (at least 2).
        matrix: Row-stochastic transition matrix. Shape ``(K, K)``.
        seed: Seed for the random generator.

    Returns:
        New noisy labels, shape ``(N,)``, same dtype as ``labels``.

    Raises:
        ValueError: On bad labels or ``n_classes``, or when ``matrix`` is not
            ``(K, K)``, has a negative or non-finite entry, or has a row that
            does not sum to 1 within 1e-6.
    """
    labels = _check_labels(labels, n_classes)
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (n_classes, n_classes):
        raise ValueError(f"matrix must have shape ({n_classes}, {n_classes}), got {m.shape}")
    if not np.all(np.isfinite(m)) or np.any(m < 0):
        raise ValueError("matrix entries must be finite and non-negative")
    sums = m.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > 1e-6)
    if bad.size:
        raise ValueError(f"matrix row {bad[0]} sums to {sums[bad[0]]:.6g}, not 1")
    rng = np.random.default_rng(seed)
    noisy = labels.copy()
    for c in range(n_classes):
        rows = np.flatnonzero(labels == c)
        if rows.size:
            noisy[rows] = rng.choice(n_classes, size=rows.size, p=m[c] / sums[c])
    return noisy


@dataclass(frozen=True)
class NoiseSpec:
    """A noise setting, as written on the command line.

    ``"symmetric:0.2"`` and ``"pair:0.3"`` give a kind and a rate;
    ``"transition:matrix.csv"`` names a K×K row-stochastic CSV (no header) of
    P(noisy label = j | true label = c), whose mean off-diagonal mass is its rate;
    ``"openset:0.02"`` plants that share of rows of held-out classes among the train
    rows (``noisyclean.bench.openset``).

    Attributes:
        kind: ``"symmetric"``, ``"pair"``, ``"transition"`` or ``"openset"``.
        rate: Fraction of rows to flip, in ``[0, 1)`` (for ``transition``, the mean
            flip probability of a class; for ``openset``, the share of train rows that
            are planted images of held-out classes).
        matrix: Only for ``transition``: the path of the matrix CSV.
    """

    kind: NoiseKind
    rate: float
    matrix: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"noise kind must be one of {'|'.join(_KINDS)}, got {self.kind!r}")
        if (self.kind == "transition") != (self.matrix is not None):
            raise ValueError("a transition matrix goes with kind 'transition' only")
        object.__setattr__(self, "rate", _check_rate(self.rate))
        if self.kind == "openset" and not 0.0 < self.rate < 0.5:
            raise ValueError(f"an openset rate must be in (0, 0.5), got {self.rate}")

    def __str__(self) -> str:
        if self.kind == "transition":
            return f"transition:{self.matrix}"
        return f"{self.kind}:{self.rate!r}"

    def tag(self, seed: int) -> str:
        """The name of this setting's files at ``seed`` in the bench's workspace
        (``labels-<tag>.npy``, an open-set view's ``view-<tag>.npz``)."""
        name = Path(self.matrix).stem if self.matrix else f"{self.rate:g}"
        return f"{self.kind}-{name}-s{seed}"

    def load_matrix(self, classes: Sequence[str] | None = None) -> np.ndarray:
        """The transition matrix (K, K), read from its CSV.

        Lines starting with ``#`` are comments. When the first other line holds class
        names instead of numbers, they name the matrix's rows and columns, and the
        matrix comes back in the order of ``classes`` (which must be the same names).

        Raises:
            ValueError: One line naming the file, when it can't be read, is not numeric,
                or its names don't match ``classes`` (or ``classes`` is not given).
        """
        m, names = self._read_matrix()
        if names is None:
            return m
        where = f"transition matrix {self.matrix}"
        if classes is None:
            raise ValueError(f"{where}: it names its classes, so the data's classes are needed")
        if len(set(names)) != len(names) or set(names) != set(classes):
            odd = sorted(set(classes) ^ set(names))
            raise ValueError(
                f"{where}: its class names do not match the data's "
                f"({'first difference: ' + repr(odd[0]) if odd else 'a name is repeated'})"
            )
        order = [names.index(c) for c in classes]
        return m[np.ix_(order, order)]

    def _read_matrix(self) -> tuple[np.ndarray, list[str] | None]:
        """The matrix in the file's own order, and its class names if it has them."""
        where = f"transition matrix {self.matrix}"
        if self.matrix is None:
            raise ValueError(f"noise {self} has no transition matrix")
        try:
            lines = Path(self.matrix).read_text(encoding="utf-8").splitlines()
            rows = [x for x in lines if x.strip() and not x.lstrip().startswith("#")]
            names = _class_header(rows) if rows else None
            m = np.loadtxt(rows[1:] if names else rows, delimiter=",", dtype=np.float64, ndmin=2)
        except (OSError, UnicodeDecodeError, ValueError) as err:
            first = (str(err).splitlines() or [type(err).__name__])[0]
            raise ValueError(f"{where}: {first}") from None
        if names is not None and m.shape != (len(names), len(names)):
            raise ValueError(f"{where}: {len(names)} class names but a {m.shape} matrix")
        return m, names


def _class_header(rows: Sequence[str]) -> list[str] | None:
    """The class names in a matrix file's first row, or None when it has none: the row
    is a header when it is not all numbers, or when a K×K matrix follows it (so classes
    named by numbers can be named too)."""
    cells = [c.strip() for c in rows[0].split(",")]
    try:
        [float(c) for c in cells]
    except ValueError:
        return cells
    return cells if len(rows) == len(cells) + 1 else None


def parse_noise(spec: str) -> NoiseSpec:
    """Parse ``"KIND:RATE"`` such as ``"symmetric:0.2"``, ``"pair:0.3"`` or
    ``"openset:0.02"``, or ``"transition:matrix.csv"``.

    ``parse_noise(str(s)) == s`` for every :class:`NoiseSpec` ``s``.

    Raises:
        ValueError: With a one-line message when the spec is malformed, the
            kind is unknown, the rate is outside ``[0, 1)``, or the matrix file
            can't be read.
    """
    kind, sep, rate_text = spec.strip().partition(":")
    if not sep:
        raise ValueError(f"noise spec must look like KIND:RATE (e.g. symmetric:0.2), got {spec!r}")
    kind = kind.strip().lower()
    if kind not in _KINDS:
        raise ValueError(f"noise kind must be one of {'|'.join(_KINDS)}, got {kind!r}")
    if kind == "transition":
        probe = NoiseSpec(kind="transition", rate=0.0, matrix=rate_text.strip())
        m, _ = probe._read_matrix()  # the rate does not depend on the class order
        if m.ndim != 2 or m.shape[0] != m.shape[1]:
            raise ValueError(f"transition matrix {probe.matrix}: not square, shape {m.shape}")
        return NoiseSpec(
            kind="transition", rate=float(1.0 - np.diag(m).mean()), matrix=probe.matrix
        )
    try:
        rate = float(rate_text)
    except ValueError:
        raise ValueError(
            f"noise rate must be a number in [0, 1), got {rate_text.strip()!r}"
        ) from None
    return NoiseSpec(kind=cast(NoiseKind, kind), rate=rate)


def apply_noise(
    spec: NoiseSpec,
    labels: np.ndarray,
    n_classes: int,
    *,
    seed: int,
    features: np.ndarray | None = None,
    classes: Sequence[str] | None = None,
) -> np.ndarray:
    """Inject the noise described by ``spec``.

    Args:
        spec: Kind and rate, e.g. ``parse_noise("pair:0.3")``.
        labels: Integer class indices in ``[0, n_classes)``. Shape ``(N,)``.
        n_classes: Number of classes ``K``.
        seed: Seed for the random generator.
        features: Only for ``pair``: row features that choose each class's
            nearest other class. Shape ``(N, D)``. Without them class ``c``
            flips to ``(c + 1) % K``.
        classes: The class names of the indices, for a ``transition`` matrix that
            names its classes.

    Returns:
        New noisy labels, shape ``(N,)``.
    """
    if spec.kind == "symmetric":
        return symmetric_noise(labels, n_classes, rate=spec.rate, seed=seed)
    if spec.kind == "transition":
        return transition_noise(labels, n_classes, matrix=spec.load_matrix(classes), seed=seed)
    if spec.kind == "openset":
        raise ValueError(
            f"{spec} changes which rows there are, not only their labels: "
            "noisyclean.bench.openset.openset_view applies it"
        )
    return pair_noise(labels, n_classes, rate=spec.rate, seed=seed, features=features)
