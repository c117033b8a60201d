"""Metric-learning losses for Phase 2: Smooth Proxy-Anchor and its two baselines.

Smooth Proxy-Anchor follows "Smooth Proxy-Anchor Loss for Noisy Metric Learning"
(arXiv 2006.05142). Its formulas are this project's own reading of the abstract,
written down in docs/design.md. With one-hot confidences it reduces exactly to
Proxy Anchor Loss (Kim et al., "Proxy Anchor Loss for Deep Metric Learning",
CVPR 2020, arXiv 2003.13911), as implemented by pytorch-metric-learning.

Proxy-based losses own their proxies as ``loss.proxies`` so that the trainer can
give them their own learning rate; ``MultiSimilarityLoss`` has none.
"""

from __future__ import annotations

from typing import Literal, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from noisyclean.configs import LOSSES
from noisyclean.errors import NoisyCleanError

Positives = Literal["given", "soft"]


def smoothing(c: Tensor, *, tau: float = 0.5, k: float = 20.0) -> Tensor:
    """Map confidences through a logistic step rescaled so that 0→0 and 1→1.

    ``S(c) = (σ(k(c−τ)) − σ(−kτ)) / (σ(k(1−τ)) − σ(−kτ))``, clamped to [0, 1].

    Args:
        c: Confidences in [0, 1].
        tau: Threshold of the step, in (0, 1).
        k: Sharpness of the step, > 0.

    Returns:
        ``S(c)``, same shape and dtype as ``c``.

    Shape:
        Any shape; the output has the shape of ``c``.
    """
    # The end points go through the same ops as c, so S(0) and S(1) are exact.
    ends = torch.sigmoid(k * (torch.tensor([0.0, 1.0], dtype=c.dtype, device=c.device) - tau))
    s = (torch.sigmoid(k * (c - tau)) - ends[0]) / (ends[1] - ends[0])
    return s.clamp(0.0, 1.0)


def _log1p_weighted_sum(z: Tensor, m: Tensor) -> Tensor:
    """``log(1 + Σ_x m[x, c]·exp(z[x, c]))`` per column ``c``, stable for large ``z``.

    A zero weight contributes exactly nothing, with an exactly zero gradient.
    """
    keep = m > 0
    log_m = torch.log(torch.where(keep, m, torch.ones_like(m)))
    logits = torch.where(keep, log_m + z, torch.full_like(z, float("-inf")))
    one = torch.zeros_like(logits[:1])
    return torch.logsumexp(torch.cat([logits, one], dim=0), dim=0)


def smooth_proxy_anchor(
    similarities: Tensor,
    m_pos: Tensor,
    m_neg: Tensor,
    *,
    alpha: float = 32.0,
    delta: float = 0.1,
) -> Tensor:
    """Smooth Proxy-Anchor loss from cosine similarities and memberships.

    ``L = 1/|P⁺| Σ_{c∈P⁺} log(1 + Σ_x m⁺[x,c]·exp(−α(s(x,c) − δ)))
    + 1/K Σ_c log(1 + Σ_x m⁻[x,c]·exp(α(s(x,c) + δ)))``, where ``P⁺`` is the set
    of classes with any positive membership in the batch. With one-hot
    memberships this is Proxy Anchor Loss (Kim et al., CVPR 2020,
    arXiv 2003.13911).

    Args:
        similarities: Cosines ``s(x, c)`` of embeddings and proxies.
        m_pos: Positive memberships ``m⁺`` in [0, 1].
        m_neg: Negative memberships ``m⁻`` in [0, 1].
        alpha: Scale ``α``.
        delta: Margin ``δ``.

    Returns:
        The scalar loss.

    Shape:
        - similarities, m_pos, m_neg: ``(B, K)``.
        - Output: ``()``.
    """
    pos = _log1p_weighted_sum(-alpha * (similarities - delta), m_pos)
    neg = _log1p_weighted_sum(alpha * (similarities + delta), m_neg)
    n_with_pos = torch.count_nonzero((m_pos > 0).any(dim=0)).clamp(min=1)
    # Classes outside P⁺ add log(1 + 0) = 0 to the sum.
    return pos.sum() / n_with_pos + neg.sum() / similarities.shape[1]


class _ProxyLoss(nn.Module):
    """Proxies, scale and margin shared by the Proxy-Anchor losses."""

    proxies: nn.Parameter

    def __init__(self, n_classes: int, embedding_dim: int, *, alpha: float, delta: float) -> None:
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"n_classes must be at least 2, got {n_classes}")
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be at least 1, got {embedding_dim}")
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        if delta < 0:
            raise ValueError(f"delta must be >= 0, got {delta}")
        self.n_classes = n_classes
        self.embedding_dim = embedding_dim
        self.alpha = alpha
        self.delta = delta
        self.proxies = nn.Parameter(torch.empty(n_classes, embedding_dim))
        # The same initialisation as pytorch-metric-learning's ProxyAnchorLoss.
        nn.init.kaiming_normal_(self.proxies, mode="fan_out")

    def similarities(self, embeddings: Tensor) -> Tensor:
        """Cosines of the embeddings and the proxies.

        Args:
            embeddings: Embeddings, not necessarily normalised.

        Returns:
            ``s(x, c)`` for every sample and class.

        Shape:
            - embeddings: ``(B, D)``.
            - Output: ``(B, K)``.
        """
        if embeddings.ndim != 2 or embeddings.shape[1] != self.embedding_dim:
            raise ValueError(
                f"embeddings must have shape (B, {self.embedding_dim}), "
                f"got {tuple(embeddings.shape)}"
            )
        proxies = self.proxies.to(dtype=embeddings.dtype)
        return F.normalize(embeddings, dim=1) @ F.normalize(proxies, dim=1).T

    def _one_hot(self, labels: Tensor, like: Tensor) -> Tensor:
        if labels.shape != like.shape[:1]:
            raise ValueError(
                f"labels must have shape ({like.shape[0]},), got {tuple(labels.shape)}"
            )
        return F.one_hot(labels, self.n_classes).to(like.dtype)

    def extra_repr(self) -> str:
        return (
            f"n_classes={self.n_classes}, embedding_dim={self.embedding_dim}, "
            f"alpha={self.alpha}, delta={self.delta}"
        )


class SmoothProxyAnchorLoss(_ProxyLoss):
    """Proxy-Anchor weighted by per-class confidences, for noisy labels.

    "Smooth Proxy-Anchor Loss for Noisy Metric Learning" (arXiv 2006.05142),
    with the memberships and loss of docs/design.md. A sample whose given label is
    doubted pulls weakly on its proxy, and it is not pushed away from a class
    that the confidences believe in. With one-hot confidences of the given
    labels it equals Proxy Anchor Loss (Kim et al., CVPR 2020, arXiv 2003.13911).

    Args:
        n_classes: Number of classes ``K``, at least 2.
        embedding_dim: Embedding size ``D``, at least 1.
        alpha: Scale ``α``, > 0.
        delta: Margin ``δ``, >= 0.
        tau: Threshold of the smoothing function, in (0, 1).
        k: Sharpness of the smoothing function, > 0.
        positives: ``"given"``: only the given label is a positive;
            ``"soft"``: every class is a positive with membership ``S(C[x, c])``.

    Shape:
        - embeddings: ``(B, D)``.
        - labels: ``(B,)``, integers in ``[0, K)``.
        - confidences: ``(B, K)``, in [0, 1].
        - Output: ``()``.

    Examples:
        >>> loss_fn = SmoothProxyAnchorLoss(n_classes=10, embedding_dim=64)
        >>> loss = loss_fn(embeddings, labels, confidences)
    """

    def __init__(
        self,
        n_classes: int,
        embedding_dim: int,
        *,
        alpha: float = 32.0,
        delta: float = 0.1,
        tau: float = 0.5,
        k: float = 20.0,
        positives: Positives = "given",
    ) -> None:
        super().__init__(n_classes, embedding_dim, alpha=alpha, delta=delta)
        if not 0 < tau < 1:
            raise ValueError(f"tau must be in (0, 1), got {tau}")
        if k <= 0:
            raise ValueError(f"k must be > 0, got {k}")
        if positives not in ("given", "soft"):
            raise ValueError(f"positives must be 'given' or 'soft', got {positives!r}")
        self.tau = tau
        self.k = k
        self.positives = positives

    def memberships(self, labels: Tensor, confidences: Tensor) -> tuple[Tensor, Tensor]:
        """Positive and negative memberships of every sample in every class.

        ``m⁺[x, c] = S(C[x, c])`` for the given label (or every class with
        ``positives="soft"``), else 0; ``m⁻[x, c] = 1 − S(C[x, c])`` for
        ``c`` ≠ the given label, else 0.

        Args:
            labels: Given labels.
            confidences: Confidences ``C`` in [0, 1].

        Returns:
            ``(m_pos, m_neg)``.

        Shape:
            - labels: ``(B,)``.
            - confidences: ``(B, K)``.
            - Output: two ``(B, K)`` tensors.
        """
        if confidences.ndim != 2 or confidences.shape[1] != self.n_classes:
            raise ValueError(
                f"confidences must have shape (B, {self.n_classes}), got {tuple(confidences.shape)}"
            )
        given = self._one_hot(labels, confidences)
        smoothed = smoothing(confidences, tau=self.tau, k=self.k)
        m_pos = smoothed if self.positives == "soft" else given * smoothed
        m_neg = (1 - given) * (1 - smoothed)
        return m_pos, m_neg

    def forward(self, embeddings: Tensor, labels: Tensor, confidences: Tensor) -> Tensor:
        """Smooth Proxy-Anchor loss of a batch.

        Args:
            embeddings: Embeddings, normalised inside.
            labels: Given labels.
            confidences: Phase-1 confidences ``C`` in [0, 1].

        Returns:
            The scalar loss.

        Shape:
            - embeddings: ``(B, D)``.
            - labels: ``(B,)``.
            - confidences: ``(B, K)``.
            - Output: ``()``.
        """
        s = self.similarities(embeddings)
        if confidences.shape != s.shape:
            raise ValueError(
                f"confidences must have shape {tuple(s.shape)}, got {tuple(confidences.shape)}"
            )
        m_pos, m_neg = self.memberships(labels, confidences.to(s.dtype))
        return smooth_proxy_anchor(s, m_pos, m_neg, alpha=self.alpha, delta=self.delta)

    def extra_repr(self) -> str:
        smoothing = f"tau={self.tau}, k={self.k}, positives={self.positives!r}"
        return f"{super().extra_repr()}, {smoothing}"


class ProxyAnchorLoss(_ProxyLoss):
    """Plain Proxy Anchor Loss, the baseline on the given labels.

    Kim et al., "Proxy Anchor Loss for Deep Metric Learning", CVPR 2020
    (arXiv 2003.13911). It is Smooth Proxy-Anchor with one-hot confidences and
    matches pytorch-metric-learning's ``ProxyAnchorLoss``.

    Args:
        n_classes: Number of classes ``K``, at least 2.
        embedding_dim: Embedding size ``D``, at least 1.
        alpha: Scale ``α``, > 0.
        delta: Margin ``δ``, >= 0.

    Shape:
        - embeddings: ``(B, D)``.
        - labels: ``(B,)``, integers in ``[0, K)``.
        - confidences: ignored.
        - Output: ``()``.
    """

    def __init__(
        self,
        n_classes: int,
        embedding_dim: int,
        *,
        alpha: float = 32.0,
        delta: float = 0.1,
    ) -> None:
        super().__init__(n_classes, embedding_dim, alpha=alpha, delta=delta)

    def memberships(self, labels: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        """One-hot positive and negative memberships of the given labels.

        Args:
            labels: Given labels.
            like: A tensor whose dtype and batch size the memberships take.

        Returns:
            ``(m_pos, m_neg)``.

        Shape:
            - labels: ``(B,)``.
            - Output: two ``(B, K)`` tensors.
        """
        given = self._one_hot(labels, like)
        return given, 1 - given

    def forward(
        self, embeddings: Tensor, labels: Tensor, confidences: Tensor | None = None
    ) -> Tensor:
        """Proxy Anchor loss of a batch; ``confidences`` is accepted and ignored.

        Shape:
            - embeddings: ``(B, D)``.
            - labels: ``(B,)``.
            - Output: ``()``.
        """
        s = self.similarities(embeddings)
        m_pos, m_neg = self.memberships(labels, s)
        return smooth_proxy_anchor(s, m_pos, m_neg, alpha=self.alpha, delta=self.delta)


class MultiSimilarityLoss(nn.Module):
    """Multi-Similarity loss with its miner, the pair-based baseline.

    Wang et al., "Multi-Similarity Loss with General Pair Weighting for Deep
    Metric Learning", CVPR 2019 (arXiv 1904.06627), through pytorch-metric-learning's
    ``MultiSimilarityLoss`` and ``MultiSimilarityMiner``. It has no proxies, so
    there is no ``proxies`` attribute.

    Args:
        alpha: Weight of positive pairs, > 0.
        beta: Weight of negative pairs, > 0.
        base: Shift of the similarity in both exponents.
        epsilon: Margin of the miner, >= 0.

    Raises:
        NoisyCleanError: pytorch-metric-learning is not installed.

    Shape:
        - embeddings: ``(B, D)``.
        - labels: ``(B,)``.
        - confidences: ignored.
        - Output: ``()``.
    """

    def __init__(
        self,
        *,
        alpha: float = 2.0,
        beta: float = 50.0,
        base: float = 0.5,
        epsilon: float = 0.1,
    ) -> None:
        super().__init__()
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        if beta <= 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        if epsilon < 0:
            raise ValueError(f"epsilon must be >= 0, got {epsilon}")
        try:
            from pytorch_metric_learning import (  # type: ignore[import-untyped]
                losses,
                miners,
            )
        except ImportError as e:
            raise NoisyCleanError(
                "--loss multi-similarity needs pytorch-metric-learning: "
                "pip install 'noisyclean[bench]'"
            ) from e
        self.loss = losses.MultiSimilarityLoss(alpha=alpha, beta=beta, base=base)
        self.miner = miners.MultiSimilarityMiner(epsilon=epsilon)

    def forward(
        self, embeddings: Tensor, labels: Tensor, confidences: Tensor | None = None
    ) -> Tensor:
        """Multi-Similarity loss over the mined pairs of a batch.

        Shape:
            - embeddings: ``(B, D)``.
            - labels: ``(B,)``.
            - Output: ``()``.
        """
        pairs = self.miner(embeddings, labels)
        return cast(Tensor, self.loss(embeddings, labels, pairs))


def make_loss(
    name: str,
    n_classes: int,
    embedding_dim: int,
    *,
    alpha: float = 32.0,
    delta: float = 0.1,
    tau: float = 0.5,
    k: float = 20.0,
    positives: str = "given",
    ms_alpha: float = 2.0,
    ms_beta: float = 50.0,
    ms_base: float = 0.5,
    ms_epsilon: float = 0.1,
) -> nn.Module:
    """Build a loss by its ``--loss`` name, passing it only the options it uses.

    Args:
        name: One of ``LOSSES``.
        n_classes: Number of classes ``K``.
        embedding_dim: Embedding size ``D``.
        alpha: Proxy-Anchor scale ``α``.
        delta: Proxy-Anchor margin ``δ``.
        tau: Smoothing threshold (smooth-proxy-anchor only).
        k: Smoothing sharpness (smooth-proxy-anchor only).
        positives: ``"given"`` or ``"soft"`` (smooth-proxy-anchor only).
        ms_alpha: Multi-Similarity positive weight.
        ms_beta: Multi-Similarity negative weight.
        ms_base: Multi-Similarity base.
        ms_epsilon: Multi-Similarity miner margin.

    Returns:
        The loss module; called as ``loss(embeddings, labels, confidences)``.

    Raises:
        ValueError: unknown name or bad hyperparameter.
        NoisyCleanError: multi-similarity without pytorch-metric-learning.
    """
    if name == "smooth-proxy-anchor":
        return SmoothProxyAnchorLoss(
            n_classes,
            embedding_dim,
            alpha=alpha,
            delta=delta,
            tau=tau,
            k=k,
            positives=cast(Positives, positives),
        )
    if name == "proxy-anchor":
        return ProxyAnchorLoss(n_classes, embedding_dim, alpha=alpha, delta=delta)
    if name == "multi-similarity":
        return MultiSimilarityLoss(alpha=ms_alpha, beta=ms_beta, base=ms_base, epsilon=ms_epsilon)
    raise ValueError(f"unknown loss {name!r}; expected one of {', '.join(LOSSES)}")
