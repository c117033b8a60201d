"""Phase 1, the confidence module: out-of-sample per-class confidences C[x, c].

C is a blend of two estimates that never see a row's own label:

- an MLP head on frozen features with K sigmoid outputs, trained with binary
  cross-entropy under stratified cross-fitting: each row's scores come from the
  fold model that did not train on it (a model that scores its own training labels
  memorises the noise, which is why cleanlab uses out-of-fold probabilities);
- a leave-one-out k-NN vote over the same features: each class's share of the
  row's nearest train rows.

Test rows are never trained on; their MLP scores come from a model fitted on all
train rows, and their vote from their nearest train rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from noisyclean import knn
from noisyclean.artifacts import list_column
from noisyclean.errors import NoisyCleanError
from noisyclean.features import FeatureConfig, extract_features
from noisyclean.features import Progress as FeatureProgress
from noisyclean.flagging import Flags, confident_flags
from noisyclean.manifest import Manifest
from noisyclean.metrics import auroc

#: Called after each model fit with (fits done, fits to do).
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ConfidenceConfig:
    """Options of the confidence module.

    Attributes:
        folds: cross-fitting folds (at least 2).
        k: neighbours in the k-NN vote.
        blend: weight of the MLP in C; the k-NN vote gets ``1 - blend``.
        hidden: width of the MLP's hidden layer.
        epochs: passes over each fold's training rows.
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
    epochs: int = 5
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
        if self.epochs < 1 or self.batch_size < 1 or self.hidden < 1:
            raise ValueError("epochs, batch_size and hidden must be positive")


@dataclass(frozen=True)
class Confidences:
    """Per-class confidences of the rows passed in.

    Attributes:
        blended: (N, K) C = blend * mlp + (1 - blend) * knn.
        mlp: (N, K) out-of-fold MLP sigmoid outputs.
        knn: (N, K) leave-one-out neighbour vote shares.
        fold: (N,) the fold each train row was held out in; -1 for test rows.
        small_classes: classes with fewer train rows than folds; some of their rows
            are scored by a model that saw no other row of their class.
    """

    blended: np.ndarray
    mlp: np.ndarray
    knn: np.ndarray
    fold: np.ndarray
    small_classes: list[int]


def stratified_folds(labels: np.ndarray, folds: int, *, seed: int) -> np.ndarray:
    """(N,) fold index of each row: each class is shuffled, then dealt round-robin."""
    rng = np.random.default_rng(seed)
    out = np.empty(len(labels), dtype=np.int64)
    offset = 0
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        rng.shuffle(rows)
        # Rotating the start keeps small classes from all landing in fold 0.
        out[rows] = (np.arange(len(rows)) + offset) % folds
        offset += len(rows)
    return out


def _fit_predict(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_eval: np.ndarray,
    n_classes: int,
    config: ConfidenceConfig,
    seed: int,
) -> np.ndarray:
    """Train the sigmoid MLP on (x_train, y_train); return its (M, K) scores on x_eval."""
    device = torch.device(config.device)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mean, std = x_train.mean(0), x_train.std(0)
    # A dimension (nearly) constant in the fit rows, e.g. a ReLU unit that never fired, must
    # not multiply another row's small value there by 1e6: floor its scale.
    std = np.maximum(std, 0.1 * std.mean() + 1e-6)
    xt = torch.from_numpy((x_train - mean) / std).to(device)
    yt = torch.nn.functional.one_hot(torch.from_numpy(y_train), n_classes).float().to(device)
    model = nn.Sequential(
        nn.Linear(xt.shape[1], config.hidden),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(config.hidden, n_classes),
    ).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    model.train()
    for _ in range(config.epochs):
        order = torch.randperm(len(xt), generator=gen).to(device)
        for start in range(0, len(xt), config.batch_size):
            batch = order[start : start + config.batch_size]
            opt.zero_grad(set_to_none=True)
            loss_fn(model(xt[batch]), yt[batch]).backward()
            opt.step()
    model.eval()
    with torch.inference_mode():
        xe = torch.from_numpy((x_eval - mean) / std).to(device)
        return torch.sigmoid(model(xe)).cpu().numpy().astype(np.float32)


def score_confidences(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    train: np.ndarray,
    n_classes: int,
    config: ConfidenceConfig | None = None,
    progress: Progress | None = None,
) -> Confidences:
    """Out-of-sample per-class confidences.

    Args:
        features: (N, D) frozen features of usable rows.
        labels: (N,) given class index of each row (read for train rows only).
        train: (N,) bool, the row may be trained on; other rows are test rows.
        n_classes: K.
        config: options; defaults to ``ConfidenceConfig()``.
        progress: called after each model fit.

    Returns:
        Confidences of all N rows; a train row's come from models that never saw its label.
    """
    cfg = config or ConfidenceConfig()
    x = knn.normalize(features)
    train_idx = np.flatnonzero(train)
    test_idx = np.flatnonzero(~train)
    y_train = labels[train_idx]
    counts = np.bincount(y_train, minlength=n_classes)
    small = [int(c) for c in np.flatnonzero((counts > 0) & (counts < cfg.folds))]

    fold = np.full(len(x), -1, dtype=np.int64)
    fold[train_idx] = stratified_folds(y_train, cfg.folds, seed=cfg.seed)
    mlp = np.zeros((len(x), n_classes), dtype=np.float32)
    fits = cfg.folds + int(len(test_idx) > 0)
    for f in range(cfg.folds):
        held = train_idx[fold[train_idx] == f]
        fit = train_idx[fold[train_idx] != f]
        mlp[held] = _fit_predict(x[fit], labels[fit], x[held], n_classes, cfg, cfg.seed * 1000 + f)
        if progress:
            progress(f + 1, fits)
    if len(test_idx):
        mlp[test_idx] = _fit_predict(
            x[train_idx], y_train, x[test_idx], n_classes, cfg, cfg.seed * 1000 + cfg.folds
        )
        if progress:
            progress(fits, fits)

    vote = np.zeros((len(x), n_classes), dtype=np.float32)
    _, nb = knn.search(x[train_idx], x[train_idx], k=cfg.k, exclude_self=True)
    vote[train_idx] = knn.vote(nb, y_train, n_classes)
    if len(test_idx):
        _, nb = knn.search(x[train_idx], x[test_idx], k=cfg.k)
        vote[test_idx] = knn.vote(nb, y_train, n_classes)

    blended = (cfg.blend * mlp + (1.0 - cfg.blend) * vote).astype(np.float32)
    return Confidences(blended=blended, mlp=mlp, knn=vote, fold=fold, small_classes=small)


@dataclass(frozen=True)
class ScoreResult:
    """What ``noisyclean score`` writes and reports.

    Attributes:
        table: one row per manifest row, in manifest order, with conf.parquet's columns.
        metadata: conf.parquet's key-value metadata.
        classes: K class names; column order of ``confidences``.
        flags: per-class-threshold flags over the usable train rows.
        flag_rows: (F,) positions in ``table`` of the rows ``flags`` describes.
        auroc: AUROC of ``1 - confidence`` against ``label != true_label`` over usable
            rows, when the manifest has ``true_label``; else None.
        small_classes: names of classes with fewer train rows than folds.
        computed: images whose features were computed now (the rest came from the cache).
    """

    table: pd.DataFrame
    metadata: dict[str, object]
    classes: list[str]
    flags: Flags
    flag_rows: np.ndarray
    auroc: float | None
    small_classes: list[str]
    computed: int


def score_manifest(
    manifest: Manifest,
    *,
    features: FeatureConfig,
    config: ConfidenceConfig | None = None,
    feature_progress: FeatureProgress | None = None,
    fit_progress: Progress | None = None,
) -> ScoreResult:
    """Phase 1 end to end: features, then out-of-sample confidences for every row."""
    cfg = config or ConfidenceConfig()
    feats = extract_features(manifest, features, progress=feature_progress)
    df = manifest.frame
    status = feats.status
    ok = status == "ok"
    train = ok & (df["split"] != "test").to_numpy()
    if not train.any():
        raise NoisyCleanError("no usable train rows: every train image is missing or unreadable")
    classes = manifest.classes
    labels = manifest.label_index
    conf = score_confidences(
        feats.values[ok],
        labels[ok],
        train=train[ok],
        n_classes=len(classes),
        config=cfg,
        progress=fit_progress,
    )
    n = len(df)
    full = np.full((n, len(classes)), np.nan, dtype=np.float32)
    full[ok] = conf.blended
    fold = np.full(n, -1, dtype=np.int32)
    fold[ok] = conf.fold
    pred = np.nanargmax(np.where(ok[:, None], full, 0.0), axis=1)
    table = pd.DataFrame(
        {
            "id": df["id"],
            "path": df["path"],
            "label": df["label"],
            "status": status,
            "split": df["split"],
            "confidence": np.where(ok, full[np.arange(n), labels], np.nan).astype(np.float32),
            "pred_label": np.where(ok, np.asarray(classes, dtype=object)[pred], None),
            "pred_confidence": np.where(ok, full[np.arange(n), pred], np.nan).astype(np.float32),
            "confidences": list_column(full, ok),
            "fold": fold,
        }
    )
    if "true_label" in df.columns:
        table["true_label"] = df["true_label"]

    flag_rows = np.flatnonzero(train)
    flags = confident_flags(full[flag_rows], labels[flag_rows], len(classes))
    auc = None
    if "true_label" in df.columns:
        known = ok & df["true_label"].notna().to_numpy()
        wrong = (df["label"] != df["true_label"]).to_numpy()[known]
        auc = auroc(1.0 - table["confidence"].to_numpy()[known], wrong)
    metadata: dict[str, object] = {
        "classes": classes,
        "backbone": features.backbone,
        "image_size": feats.image_size,
        "cache_dir": str(features.resolved_cache_dir),
        "manifest": str(manifest.source),
        "manifest_dir": str(manifest.root),
        "folds": cfg.folds,
        "seed": cfg.seed,
        "blend": cfg.blend,
        "k": cfg.k,
    }
    return ScoreResult(
        table=table,
        metadata=metadata,
        classes=classes,
        flags=flags,
        flag_rows=flag_rows,
        auroc=auc,
        small_classes=[classes[c] for c in conf.small_classes],
        computed=feats.computed,
    )
