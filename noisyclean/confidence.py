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
import torch
from torch import nn

from noisyclean import knn
from noisyclean.configs import ConfidenceConfig

#: Called after each model fit with (fits done, fits to do).
Progress = Callable[[int, int], None]


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
