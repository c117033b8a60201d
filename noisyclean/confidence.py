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

Nothing here holds a dense (N, K) array: each model scores its rows in batches, the
vote is blended in per batch, and only each row's given-label confidence and its
``top_classes`` best classes are kept (``TopClasses``). With K ≤ ``top_classes``
that is every class, exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from noisyclean import knn
from noisyclean.configs import DEFAULT_TOP_CLASSES, ConfidenceConfig

#: Called with (done, total): MLP epochs over all fits.
Progress = Callable[[int, int], None]

#: Scores computed per batch are at most about this many values (rows × classes).
_BATCH_VALUES = 1 << 22


@dataclass(frozen=True)
class TopClasses:
    """Per-class confidences of N rows, kept sparse.

    Attributes:
        labels: (N,) each row's given class index.
        given: (N,) float32, C[x, label] (exact, whether or not the label is in the top).
        classes: (N, T) int32, the T best classes of each row, best first (ties: the
            lower class index first); T = min(top_classes, K).
        scores: (N, T) float32, their confidences.
        n_classes: K.
    """

    labels: np.ndarray
    given: np.ndarray
    classes: np.ndarray
    scores: np.ndarray
    n_classes: int

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, rows: np.ndarray) -> TopClasses:
        """The rows ``rows`` (an index array or a boolean mask)."""
        return TopClasses(
            labels=self.labels[rows],
            given=self.given[rows],
            classes=self.classes[rows],
            scores=self.scores[rows],
            n_classes=self.n_classes,
        )

    def dense(self, rows: np.ndarray | None = None) -> np.ndarray:
        """(B, K) float32 confidences of ``rows`` (default all): the top classes' and the
        given label's, 0 elsewhere. Meant for batches, or for small K."""
        pick = slice(None) if rows is None else rows
        classes, scores = self.classes[pick], self.scores[pick]
        out = np.zeros((len(classes), self.n_classes), dtype=np.float32)
        at = np.arange(len(classes))
        out[at[:, None], classes] = scores
        out[at, self.labels[pick]] = self.given[pick]
        return out

    def relative(self) -> TopClasses:
        """Each row divided by its largest confidence (rows of zeros stay zero): C reads
        "as likely as the best class"."""
        top = np.maximum(self.scores[:, :1], self.given[:, None])

        def div(a: np.ndarray) -> np.ndarray:
            return np.divide(a, top, out=np.zeros_like(a), where=top > 0)

        return TopClasses(
            labels=self.labels,
            given=div(self.given[:, None])[:, 0],
            classes=self.classes,
            scores=div(self.scores),
            n_classes=self.n_classes,
        )

    @classmethod
    def from_dense(cls, scores: np.ndarray, labels: np.ndarray, *, width: int) -> TopClasses:
        """Keep the ``width`` best classes of each row of (N, K) ``scores``."""
        scores = np.asarray(scores, dtype=np.float32)
        n, k = scores.shape
        width = min(width, k)
        labels = np.asarray(labels)
        if width == k:
            order = np.argsort(-scores, axis=1, kind="stable")
        else:
            part = np.sort(np.argpartition(-scores, width - 1, axis=1)[:, :width], axis=1)
            sub = np.take_along_axis(-scores, part, axis=1)
            order = np.take_along_axis(part, np.argsort(sub, axis=1, kind="stable"), axis=1)
        return cls(
            labels=labels,
            given=scores[np.arange(n), labels] if n else np.zeros(0, np.float32),
            classes=order.astype(np.int32),
            scores=np.take_along_axis(scores, order, axis=1),
            n_classes=k,
        )


@dataclass(frozen=True)
class Confidences:
    """Per-class confidences of the rows passed in.

    Attributes:
        top: C = blend · MLP + (1 − blend) · vote, each row's given label and best classes.
        fold: (N,) the fold each train row was held out in; -1 for test rows.
        small_classes: classes with fewer train rows than folds; some of their rows
            are scored by a model that saw no other row of their class.
        neighbours: how the k-NN search ran (exact or approximate, its recall).
        epochs: the MLP epochs per fit used.
        neighbour_rows: (N, k) int64, each row's k nearest train rows in the features'
            space (positions among the N rows, nearest first, never the row itself; -1
            pads): the rows that voted.
        neighbour_similarities: (N, k) float32, their cosine similarities (NaN pads).
    """

    top: TopClasses
    fold: np.ndarray
    small_classes: list[int]
    neighbours: knn.SearchInfo | None = None
    epochs: int = 0
    neighbour_rows: np.ndarray | None = None
    neighbour_similarities: np.ndarray | None = None


def stratified_folds(labels: np.ndarray, folds: int, *, seed: int) -> np.ndarray:
    """(N,) fold index of each row: each class is shuffled, then dealt round-robin.

    The deal of each class starts where the previous class's ended, so small classes do
    not all land in fold 0. Vectorised: one shuffle and one stable sort, whatever K.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(len(labels))
    order = shuffled[np.argsort(labels[shuffled], kind="stable")]
    out = np.empty(len(labels), dtype=np.int64)
    out[order] = np.arange(len(labels)) % folds
    return out


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """``x`` (float32) scaled to unit-length rows in place, in chunks; zero rows stay zero."""
    if x.dtype != np.float32 or not x.flags.writeable or not x.flags.c_contiguous:
        return knn.normalize(x)
    for start in range(0, len(x), 65_536):
        chunk = x[start : start + 65_536]
        chunk /= np.maximum(np.linalg.norm(chunk, axis=1, keepdims=True), 1e-12)
    return x


def _standardise(x: np.ndarray, rows: np.ndarray) -> None:
    """Centre and scale ``x`` in place by the mean and std of ``rows``, in chunks.

    A dimension (nearly) constant there, e.g. a ReLU unit that never fired, must not
    multiply another row's small value by 1e6: its scale is floored.
    """
    total = np.zeros(x.shape[1])
    squares = np.zeros(x.shape[1])
    for start in range(0, len(rows), 65_536):
        part = x[rows[start : start + 65_536]].astype(np.float64)
        total += part.sum(0)
        squares += (part * part).sum(0)
    mean = total / max(len(rows), 1)
    std = np.sqrt(np.maximum(squares / max(len(rows), 1) - mean * mean, 0.0))
    std = np.maximum(std, 0.1 * std.mean() + 1e-6)
    for start in range(0, len(x), 65_536):
        chunk = x[start : start + 65_536]
        chunk -= mean.astype(np.float32)
        chunk /= std.astype(np.float32)


def _fit(
    x: torch.Tensor,
    rows: np.ndarray,
    labels: torch.Tensor,
    n_classes: int,
    config: ConfidenceConfig,
    seed: int,
    on_epoch: Callable[[], None],
) -> nn.Module:
    """The sigmoid MLP trained on ``x[rows]`` with one-vs-rest binary cross-entropy."""
    device = torch.device(config.device)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(x.shape[1], config.hidden),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(config.hidden, n_classes),
    ).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    fit_rows = torch.from_numpy(np.asarray(rows, dtype=np.int64))
    model.train()
    for _ in range(config.epochs or 1):
        order = fit_rows[torch.randperm(len(fit_rows), generator=gen)]
        for start in range(0, len(order), config.batch_size):
            batch = order[start : start + config.batch_size]
            xb = x[batch].to(device, non_blocking=True)
            yb = nn.functional.one_hot(labels[batch], n_classes).float().to(device)
            opt.zero_grad(set_to_none=True)
            loss_fn(model(xb), yb).backward()
            opt.step()
        on_epoch()
    return model.eval()


def score_confidences(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    train: np.ndarray,
    n_classes: int,
    config: ConfidenceConfig | None = None,
    top_classes: int = DEFAULT_TOP_CLASSES,
    progress: Progress | None = None,
    search_progress: knn.Progress | None = None,
    in_place: bool = False,
) -> Confidences:
    """Out-of-sample per-class confidences.

    Args:
        features: (N, D) frozen features of usable rows (may be a memory map; read, not
            changed).
        labels: (N,) given class index of each row (read for train rows only).
        train: (N,) bool, the row may be trained on; other rows are test rows.
        n_classes: K.
        config: options; defaults to ``ConfidenceConfig()``.
        top_classes: classes kept per row (all of them when K is at most this).
        progress: called after each MLP epoch.
        search_progress: called as the neighbour index is built and searched.
        in_place: ``features`` (a float32 array the caller no longer needs) may be
            normalised and standardised in place, which saves a copy of it.

    Returns:
        Confidences of all N rows; a train row's come from models that never saw its label.
    """
    cfg = (config or ConfidenceConfig()).resolved(int(np.count_nonzero(train)))
    labels = np.array(labels, dtype=np.int64)  # a writable copy: torch shares it
    x = _unit_rows(features) if in_place else knn.normalize(features)
    n = len(x)
    train_idx = np.flatnonzero(train)
    test_idx = np.flatnonzero(~np.asarray(train, dtype=bool))
    y_train = labels[train_idx]
    counts = np.bincount(y_train, minlength=n_classes)
    small = [int(c) for c in np.flatnonzero((counts > 0) & (counts < cfg.folds))]
    fold = np.full(n, -1, dtype=np.int64)
    fold[train_idx] = stratified_folds(y_train, cfg.folds, seed=cfg.seed)

    # The vote: each row's k nearest train rows (never itself), on unit-length features.
    nb = np.full((n, cfg.k), -1, dtype=np.int64)
    sims = np.full((n, cfg.k), np.nan, dtype=np.float32)
    pool = x if len(train_idx) == n else knn.Rows(x, train_idx)  # no copy of the rows
    sims[train_idx], nb[train_idx], info = knn.search_with_info(
        pool, pool, k=cfg.k, exclude_self=True, seed=cfg.seed, progress=search_progress
    )
    if len(test_idx):
        sims[test_idx], nb[test_idx] = knn.search(
            pool, knn.Rows(x, test_idx), k=cfg.k, seed=cfg.seed
        )
    del pool
    sims[nb < 0] = np.nan

    _standardise(x, train_idx)
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(labels)
    width = min(top_classes, n_classes)
    out = TopClasses(
        labels=labels,
        given=np.zeros(n, dtype=np.float32),
        classes=np.zeros((n, width), dtype=np.int32),
        scores=np.zeros((n, width), dtype=np.float32),
        n_classes=n_classes,
    )
    fits = cfg.folds + int(len(test_idx) > 0)
    epochs_done = 0

    def on_epoch() -> None:
        nonlocal epochs_done
        epochs_done += 1
        if progress:
            progress(epochs_done, fits * (cfg.epochs or 1))

    def score(model: nn.Module, rows: np.ndarray) -> None:
        step = max(256, _BATCH_VALUES // max(n_classes, 1))
        device = torch.device(cfg.device)
        for start in range(0, len(rows), step):
            part = rows[start : start + step]
            with torch.inference_mode():
                xb = xt[torch.from_numpy(part)].to(device)
                mlp = torch.sigmoid(model(xb)).cpu().numpy().astype(np.float32)
            vote = knn.vote(nb[part], y_train, n_classes)
            blended = (cfg.blend * mlp + (1.0 - cfg.blend) * vote).astype(np.float32)
            top = TopClasses.from_dense(blended, labels[part], width=width)
            out.given[part] = top.given
            out.classes[part] = top.classes
            out.scores[part] = top.scores

    for f in range(cfg.folds):
        held = train_idx[fold[train_idx] == f]
        fit = train_idx[fold[train_idx] != f]
        score(_fit(xt, fit, yt, n_classes, cfg, cfg.seed * 1000 + f, on_epoch), held)
    if len(test_idx):
        model = _fit(xt, train_idx, yt, n_classes, cfg, cfg.seed * 1000 + cfg.folds, on_epoch)
        score(model, test_idx)
    return Confidences(
        top=out,
        fold=fold,
        small_classes=small,
        neighbours=info,
        epochs=cfg.epochs or 1,
        neighbour_rows=np.where(nb >= 0, train_idx[np.maximum(nb, 0)], -1),
        neighbour_similarities=sims,
    )
