from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from noisyclean.losses import (
    LOSSES,
    MultiSimilarityLoss,
    ProxyAnchorLoss,
    SmoothProxyAnchorLoss,
    make_loss,
    smooth_proxy_anchor,
    smoothing,
)


def _batch(
    batch_size: int,
    n_classes: int,
    dim: int,
    *,
    seed: int,
    dtype: torch.dtype = torch.float64,
) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(batch_size, dim, generator=g, dtype=dtype)
    labels = torch.randint(0, n_classes, (batch_size,), generator=g)
    return embeddings, labels


def _grads(
    loss_fn: torch.nn.Module, embeddings: Tensor, *args: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    emb = embeddings.clone().requires_grad_(True)
    proxies = loss_fn.get_parameter("proxies")
    loss = loss_fn(emb, *args)
    emb_grad, proxies_grad = torch.autograd.grad(loss, [emb, proxies])
    return loss.detach(), emb_grad, proxies_grad


def _pml_pair(
    n_classes: int, dim: int, alpha: float, delta: float, dtype: torch.dtype
) -> tuple[SmoothProxyAnchorLoss, ProxyAnchorLoss, torch.nn.Module]:
    pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
    torch.manual_seed(0)
    smooth = SmoothProxyAnchorLoss(n_classes, dim, alpha=alpha, delta=delta).to(dtype)
    plain = ProxyAnchorLoss(n_classes, dim, alpha=alpha, delta=delta).to(dtype)
    plain.proxies.data.copy_(smooth.proxies.data)
    ref = pml_losses.ProxyAnchorLoss(n_classes, dim, margin=delta, alpha=alpha).to(dtype)
    ref.proxies.data.copy_(smooth.proxies.data)
    return smooth, plain, ref


@pytest.mark.parametrize("batch_size", [8, 32])
@pytest.mark.parametrize("n_classes", [3, 10])
@pytest.mark.parametrize("alpha", [16.0, 32.0, 64.0])
@pytest.mark.parametrize("delta", [0.1, 0.2])
def test_one_hot_confidences_reduce_to_pml_proxy_anchor(
    batch_size: int, n_classes: int, alpha: float, delta: float
) -> None:
    dim = 16
    smooth, plain, ref = _pml_pair(n_classes, dim, alpha, delta, torch.float64)
    embeddings, labels = _batch(batch_size, n_classes, dim, seed=batch_size + n_classes)
    one_hot = F.one_hot(labels, n_classes).to(torch.float64)

    want_loss, want_emb, want_proxies = _grads(ref, embeddings, labels)
    for got in (
        _grads(smooth, embeddings, labels, one_hot),
        _grads(plain, embeddings, labels),
    ):
        torch.testing.assert_close(got[0], want_loss, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(got[1], want_emb, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(got[2], want_proxies, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("alpha", [32.0, 64.0])
def test_one_hot_reduction_holds_in_float32(alpha: float) -> None:
    smooth, plain, ref = _pml_pair(10, 16, alpha, 0.1, torch.float32)
    embeddings, labels = _batch(32, 10, 16, seed=1, dtype=torch.float32)
    one_hot = F.one_hot(labels, 10).float()

    want = _grads(ref, embeddings, labels)
    for got in (
        _grads(smooth, embeddings, labels, one_hot),
        _grads(plain, embeddings, labels),
    ):
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


def test_zero_confidence_in_given_label_puts_no_pull_on_its_proxy() -> None:
    # Sample 0 is the only one labelled 3 and C[0, 3] = 0: proxy 3 must not see it.
    torch.manual_seed(0)
    loss_fn = SmoothProxyAnchorLoss(4, 8).double()
    embeddings, _ = _batch(9, 4, 8, seed=2)
    labels = torch.tensor([3, 0, 0, 1, 1, 2, 2, 0, 1])
    g = torch.Generator().manual_seed(3)
    confidences = torch.rand(9, 4, generator=g, dtype=torch.float64)
    confidences[0, 3] = 0.0

    m_pos, m_neg = loss_fn.memberships(labels, confidences)
    assert m_pos[:, 3].eq(0).all()
    assert m_neg[0, 3] == 0

    _, emb_grad, with_sample = _grads(loss_fn, embeddings, labels, confidences)
    _, _, without_sample = _grads(loss_fn, embeddings[1:], labels[1:], confidences[1:])
    torch.testing.assert_close(with_sample[3], without_sample[3], rtol=1e-12, atol=1e-14)
    assert emb_grad.isfinite().all()


@pytest.mark.parametrize("positives", ["given", "soft"])
def test_sample_confident_in_another_class_is_not_pushed_from_it(
    positives: str,
) -> None:
    torch.manual_seed(0)
    loss_fn = SmoothProxyAnchorLoss(4, 8, positives=positives).double()  # type: ignore[arg-type]
    embeddings, _ = _batch(8, 4, 8, seed=4)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 3])
    g = torch.Generator().manual_seed(5)
    confidences = torch.rand(8, 4, generator=g, dtype=torch.float64)
    confidences[0, 2] = 1.0  # labelled 0, believed to be 2

    m_pos, m_neg = loss_fn.memberships(labels, confidences)
    assert m_neg[0, 2] == 0

    # Through the similarities: d L / d s(x, c) is exactly 0 with positives="given".
    s = loss_fn.similarities(embeddings).detach().requires_grad_(True)
    loss = smooth_proxy_anchor(s, m_pos, m_neg, alpha=loss_fn.alpha, delta=loss_fn.delta)
    (s_grad,) = torch.autograd.grad(loss, s)
    if positives == "given":
        assert s_grad[0, 2] == 0
    else:
        assert s_grad[0, 2] < 0  # soft: pulled towards the believed class, never pushed

    # Through the module: proxy 2 gets the same gradient with or without sample 0.
    if positives == "given":
        keep = torch.arange(1, 8)
        with_sample = _grads(loss_fn, embeddings, labels, confidences)[2]
        without = _grads(loss_fn, embeddings[keep], labels[keep], confidences[keep])[2]
        torch.testing.assert_close(with_sample[2], without[2], rtol=1e-12, atol=1e-14)


def test_doubted_sample_pulls_less_than_trusted_one() -> None:
    torch.manual_seed(0)
    loss_fn = SmoothProxyAnchorLoss(3, 8).double()
    embeddings, _ = _batch(2, 3, 8, seed=6)
    labels = torch.tensor([0, 1])
    pulls = []
    for c in (0.2, 0.9):
        confidences = torch.tensor([[c, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
        _, emb_grad, _ = _grads(loss_fn, embeddings, labels, confidences)
        pulls.append(emb_grad[0].norm())
    assert pulls[0] < pulls[1]


def _adversarial_embeddings(proxies: Tensor, labels: Tensor, sign: float) -> Tensor:
    return sign * proxies.detach()[labels].clone()


@pytest.mark.parametrize("positives", ["given", "soft"])
@pytest.mark.parametrize("case", ["random", "cos=1", "cos=-1", "zeros", "all-one-proxy"])
def test_finite_at_alpha_64_in_float32(positives: str, case: str) -> None:
    torch.manual_seed(0)
    loss_fn = SmoothProxyAnchorLoss(5, 16, alpha=64.0, positives=positives)  # type: ignore[arg-type]
    embeddings, labels = _batch(16, 5, 16, seed=7, dtype=torch.float32)
    embeddings = {
        "random": embeddings * 100,
        "cos=1": _adversarial_embeddings(loss_fn.proxies, labels, 1.0),
        "cos=-1": _adversarial_embeddings(loss_fn.proxies, labels, -1.0),
        "zeros": torch.zeros_like(embeddings),
        "all-one-proxy": loss_fn.proxies.detach()[:1].repeat(16, 1),
    }[case]
    g = torch.Generator().manual_seed(8)
    confidences = torch.rand(16, 5, generator=g)
    confidences[::3] = 0.0  # zero memberships must not make NaN gradients
    confidences[1::3] = 1.0
    confidences.requires_grad_(True)

    emb = embeddings.requires_grad_(True)
    loss = loss_fn(emb, labels, confidences)
    grads = torch.autograd.grad(loss, [emb, loss_fn.proxies, confidences])
    assert loss.isfinite()
    for grad in grads:
        assert grad.isfinite().all()


@pytest.mark.parametrize("tau", [0.2, 0.5, 0.8])
@pytest.mark.parametrize("k", [1.0, 20.0, 200.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_smoothing_maps_ends_exactly_and_is_monotonic(
    tau: float, k: float, dtype: torch.dtype
) -> None:
    c = torch.linspace(0, 1, 1001, dtype=dtype)
    s = smoothing(c, tau=tau, k=k)
    assert s[0] == 0
    assert s[-1] == 1
    assert (s.diff() >= 0).all()
    assert (s >= 0).all()
    assert (s <= 1).all()
    at_tau = smoothing(torch.tensor([tau], dtype=dtype), tau=tau, k=k)
    assert 0 < at_tau.item() < 1


def test_smoothing_sharpens_around_tau() -> None:
    c = torch.tensor([0.3, 0.7], dtype=torch.float64)
    soft, sharp = smoothing(c, k=2.0), smoothing(c, k=50.0)
    assert sharp[0] < soft[0]
    assert sharp[1] > soft[1]


@pytest.mark.parametrize(
    "options",
    [
        {"n_classes": 1},
        {"embedding_dim": 0},
        {"alpha": 0.0},
        {"alpha": -1.0},
        {"delta": -0.1},
        {"tau": 0.0},
        {"tau": 1.0},
        {"k": 0.0},
        {"positives": "all"},
    ],
)
def test_bad_hyperparameters_raise(options: dict[str, float | str]) -> None:
    kwargs: dict[str, float | str] = {"n_classes": 4, "embedding_dim": 8, **options}
    with pytest.raises(ValueError, match=next(iter(options))):
        SmoothProxyAnchorLoss(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("options", [{"n_classes": 1}, {"alpha": 0.0}, {"delta": -1.0}])
def test_proxy_anchor_bad_hyperparameters_raise(options: dict[str, float]) -> None:
    kwargs: dict[str, float] = {"n_classes": 4, "embedding_dim": 8, **options}
    with pytest.raises(ValueError, match=next(iter(options))):
        ProxyAnchorLoss(**kwargs)  # type: ignore[arg-type]


def test_bad_shapes_raise() -> None:
    loss_fn = SmoothProxyAnchorLoss(4, 8)
    embeddings, labels = _batch(6, 4, 8, seed=9, dtype=torch.float32)
    with pytest.raises(ValueError, match="embeddings"):
        loss_fn(embeddings[:, :4], labels, torch.rand(6, 4))
    with pytest.raises(ValueError, match="confidences"):
        loss_fn(embeddings, labels, torch.rand(6, 3))
    with pytest.raises(ValueError, match="labels"):
        loss_fn(embeddings, labels[:5], torch.rand(6, 4))


def test_make_loss_builds_each_loss_with_its_own_options() -> None:
    pytest.importorskip("pytorch_metric_learning")
    smooth = make_loss("smooth-proxy-anchor", 5, 8, alpha=16.0, tau=0.4, positives="soft")
    assert isinstance(smooth, SmoothProxyAnchorLoss)
    assert (smooth.alpha, smooth.tau, smooth.positives) == (16.0, 0.4, "soft")
    assert smooth.proxies.shape == (5, 8)
    plain = make_loss("proxy-anchor", 5, 8, alpha=16.0, tau=0.4)
    assert isinstance(plain, ProxyAnchorLoss)
    assert plain.alpha == 16.0
    ms = make_loss("multi-similarity", 5, 8, alpha=16.0, ms_beta=40.0)
    assert isinstance(ms, MultiSimilarityLoss)
    assert not hasattr(ms, "proxies")
    assert (ms.loss.alpha, ms.loss.beta) == (2.0, 40.0)
    assert [type(make_loss(n, 5, 8)).__name__ for n in LOSSES] == [
        "SmoothProxyAnchorLoss",
        "ProxyAnchorLoss",
        "MultiSimilarityLoss",
    ]


def test_make_loss_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="smooth-proxy-anchor, proxy-anchor, multi-similarity"):
        make_loss("triplet", 5, 8)


@pytest.mark.parametrize("batch_size", [8, 32])
def test_multi_similarity_gives_finite_loss_and_gradients(batch_size: int) -> None:
    pytest.importorskip("pytorch_metric_learning")
    loss_fn = MultiSimilarityLoss()
    embeddings, labels = _batch(batch_size, 3, 16, seed=10, dtype=torch.float32)
    emb = embeddings.requires_grad_(True)
    loss = loss_fn(emb, labels, torch.rand(batch_size, 3))
    (grad,) = torch.autograd.grad(loss, emb)
    assert loss.isfinite()
    assert loss > 0
    assert grad.isfinite().all()
    assert grad.abs().sum() > 0
