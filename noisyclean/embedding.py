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


def relative_confidences(confidences: np.ndarray) -> np.ndarray:
    """(N, K) confidences divided by each row's largest (rows of zeros stay zero)."""
    top = confidences.max(axis=1, keepdims=True)
    return np.divide(confidences, top, out=np.zeros_like(confidences), where=top > 0)


def train_head(
    features: np.ndarray,
    labels: np.ndarray,
    confidences: np.ndarray,
    *,
    n_classes: int,
    config: TrainConfig,
    progress: EpochProgress | None = None,
) -> tuple[EmbeddingHead, nn.Module]:
    """Train the head (and the loss's proxies) on train rows.

    Args:
        features: (N, D) backbone features of the train rows.
        labels: (N,) given class indices.
        confidences: (N, K) Phase-1 confidences C (read by smooth-proxy-anchor only).
        n_classes: K.
        config: options.
        progress: called after each epoch.

    Returns:
        The trained head and the loss module (which holds the proxies, if any).
    """
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
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
    x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)).to(device)
    y = torch.from_numpy(labels.astype(np.int64)).to(device)
    if config.renormalize:
        confidences = relative_confidences(confidences)
    c = torch.from_numpy(np.ascontiguousarray(confidences, dtype=np.float32)).to(device)
    head.train()
    for epoch in range(config.epochs):
        order = torch.randperm(len(x), generator=gen).to(device)
        total, steps = 0.0, 0
        for start in range(0, len(x), config.batch_size):
            batch = order[start : start + config.batch_size]
            if len(batch) < 2:
                continue
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(head(x[batch]), y[batch], c[batch])
            loss.backward()
            opt.step()
            total, steps = total + float(loss.detach()), steps + 1
        if progress:
            progress(epoch + 1, config.epochs, total / max(steps, 1))
    head.eval()
    return head, loss_fn


@torch.inference_mode()
def embed(head: EmbeddingHead, features: np.ndarray, *, batch_size: int = 4096) -> np.ndarray:
    """(N, D) backbone features -> (N, E) float32 unit-length embeddings."""
    device = next(head.parameters()).device
    parts = [
        head(torch.from_numpy(features[i : i + batch_size]).to(device)).cpu().numpy()
        for i in range(0, len(features), batch_size)
    ]
    dim = head.linear.out_features
    return np.concatenate(parts) if parts else np.zeros((0, dim), dtype=np.float32)


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
