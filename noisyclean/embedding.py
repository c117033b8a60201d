"""Phase 2: an embedding head on cached backbone features, trained with Smooth Proxy-Anchor.

Phase 1's confidences decide how much each sample pulls on its class proxy (see
``noisyclean.losses``). The head is linear: in the design measurements (docs/design.md) a 2-layer
head did worse. Proxies learn 100× faster than the head, as in the official
Proxy-Anchor code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from noisyclean.backbones import resolve_device
from noisyclean.confidence import TopClasses
from noisyclean.configs import TrainConfig
from noisyclean.losses import make_loss

#: Called after each epoch with (epochs done, epochs to do, mean loss of the epoch).
EpochProgress = Callable[[int, int, float], None]


class EmbeddingHead(nn.Module):
    """Linear map of L2-normalised backbone features to an L2-normalised embedding.

    Shape:
        features (B, D) -> embeddings (B, E)
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = nn.functional.normalize(features, dim=1)
        return nn.functional.normalize(self.linear(x), dim=1)


def train_head(
    features: np.ndarray,
    confidences: TopClasses,
    *,
    rows: np.ndarray | None = None,
    config: TrainConfig,
    progress: EpochProgress | None = None,
) -> tuple[EmbeddingHead, nn.Module]:
    """Train the head (and the loss's proxies) on the train rows.

    Args:
        features: (N, D) backbone features (a memory map works: batches are gathered).
        confidences: Phase-1 confidences C of the N rows, with their given labels (read by
            smooth-proxy-anchor only; each batch is made dense, classes outside a row's
            top counting as 0).
        rows: the train rows (default: all N).
        config: options.
        progress: called after each epoch.

    Returns:
        The trained head and the loss module (which holds the proxies, if any).
    """
    train = np.arange(len(features)) if rows is None else np.asarray(rows)
    config = config.resolved(len(train))
    epochs = config.epochs or 1
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    n_classes = confidences.n_classes
    head = EmbeddingHead(features.shape[1], config.embedding_dim).to(device)
    loss_fn = make_loss(
        config.loss,
        n_classes,
        config.embedding_dim,
        alpha=config.alpha,
        delta=config.delta,
        tau=config.tau,
        k=config.k,
        positives=config.positives,
    ).to(device)
    groups: list[dict[str, Any]] = [{"params": head.parameters(), "lr": config.lr}]
    proxies = getattr(loss_fn, "proxies", None)
    if isinstance(proxies, nn.Parameter):
        groups.append({"params": [proxies], "lr": config.lr * config.proxy_lr_mult})
    opt = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    # Every learning rate decays to 0 along a half cosine over the run's steps.
    full, rest = divmod(len(train), config.batch_size)
    steps = epochs * (full + (rest >= 2))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    conf = confidences.relative() if config.renormalize else confidences
    head.train()
    for epoch in range(epochs):
        order = train[torch.randperm(len(train), generator=gen).numpy()]
        total, done = 0.0, 0
        for start in range(0, len(order), config.batch_size):
            batch = order[start : start + config.batch_size]
            if len(batch) < 2:
                continue
            x = torch.from_numpy(np.asarray(features[batch], dtype=np.float32)).to(device)
            y = torch.from_numpy(conf.labels[batch].astype(np.int64)).to(device)
            c = torch.from_numpy(conf.dense(batch)).to(device)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(head(x), y, c)
            loss.backward()
            opt.step()
            schedule.step()
            total, done = total + float(loss.detach()), done + 1
        if progress:
            progress(epoch + 1, epochs, total / max(done, 1))
    head.eval()
    return head, loss_fn


@torch.inference_mode()
def embed(
    head: EmbeddingHead,
    features: np.ndarray,
    *,
    rows: np.ndarray | None = None,
    batch_size: int = 4096,
) -> np.ndarray:
    """(N, D) backbone features (or their ``rows``) -> (R, E) float32 unit-length embeddings."""
    device = next(head.parameters()).device
    take = np.arange(len(features)) if rows is None else np.asarray(rows)
    dim = head.linear.out_features
    out = np.zeros((len(take), dim), dtype=np.float32)
    for i in range(0, len(take), batch_size):
        x = np.asarray(features[take[i : i + batch_size]], dtype=np.float32)
        out[i : i + batch_size] = head(torch.from_numpy(x).to(device)).cpu().numpy()
    return out


def model_tensors(head: EmbeddingHead, loss_fn: nn.Module) -> dict[str, np.ndarray]:
    """The head's weights (``head.*``) and the loss's ``proxies``, if any, as float32 arrays."""
    tensors = {f"head.{k}": v.detach().cpu().numpy() for k, v in head.state_dict().items()}
    proxies = getattr(loss_fn, "proxies", None)
    if isinstance(proxies, torch.Tensor):
        tensors["proxies"] = proxies.detach().cpu().numpy()
    return tensors


def head_from_tensors(tensors: dict[str, np.ndarray], *, device: str = "cpu") -> EmbeddingHead:
    """The head ``model_tensors`` saved, in eval mode on ``device``."""
    weight = tensors["head.linear.weight"]
    head = EmbeddingHead(weight.shape[1], weight.shape[0])
    head.load_state_dict(
        {
            k.removeprefix("head."): torch.from_numpy(v)
            for k, v in tensors.items()
            if k.startswith("head.")
        }
    )
    return head.to(resolve_device(device)).eval()
