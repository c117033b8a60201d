"""Phase 2's head, its run directory and embeddings of new images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SmallSet

from noisyclean.artifacts import read_model, read_run_config
from noisyclean.confidence import TopClasses
from noisyclean.configs import TrainConfig
from noisyclean.embedding import (
    EmbeddingHead,
    embed,
    head_from_tensors,
    train_head,
)
from noisyclean.errors import NoisyCleanError


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, TopClasses]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, 32))
    labels = rng.integers(0, 4, 400)
    x = (centres[labels] + 0.8 * rng.normal(size=(400, 32))).astype(np.float32)
    return x, labels, TopClasses.from_dense(np.eye(4, dtype=np.float32)[labels], labels, width=4)


@pytest.mark.parametrize("loss", ["smooth-proxy-anchor", "proxy-anchor", "multi-similarity"])
def test_training_lowers_the_loss_and_separates_classes(loss: str) -> None:
    x, y, c = _data()
    losses: list[float] = []
    cfg = TrainConfig(loss=loss, embedding_dim=16, epochs=8, batch_size=64, device="cpu")
    head, _ = train_head(x, c, config=cfg, progress=lambda d, t, v: losses.append(v))
    assert len(losses) == 8 and losses[-1] < losses[0]
    e = embed(head, x)
    assert e.shape == (400, 16)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    sims = e @ e.T
    np.fill_diagonal(sims, -np.inf)
    assert (y[sims.argmax(1)] == y).mean() > 0.9


@pytest.mark.parametrize(("rows", "per_epoch"), [(400, 7), (385, 6)])
def test_learning_rates_follow_a_half_cosine_to_zero(
    monkeypatch: pytest.MonkeyPatch, rows: int, per_epoch: int
) -> None:
    """Head and proxies start at their own rates and decay along a half cosine that ends at
    0 after the last step; a final batch of one row (skipped) is not counted."""
    x, _, c = _data()
    seen: list[list[float]] = []
    step = torch.optim.AdamW.step

    def recording(self: torch.optim.AdamW, *args: object, **kwargs: object) -> object:
        seen.append([g["lr"] for g in self.param_groups])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording)
    cfg = TrainConfig(embedding_dim=8, epochs=3, batch_size=64, lr=1e-3, device="cpu")
    train_head(x, c, rows=np.arange(rows), config=cfg)
    total = 3 * per_epoch
    cosine = 0.5 * (1 + np.cos(np.pi * np.arange(total) / total))
    np.testing.assert_allclose(np.array(seen), np.outer(cosine, [1e-3, 1e-1]), rtol=1e-6)


def test_same_seed_same_head() -> None:
    x, _, c = _data()
    cfg = TrainConfig(embedding_dim=8, epochs=2, batch_size=64, device="cpu", seed=3)
    a, _ = train_head(x, c, config=cfg)
    b, _ = train_head(x, c, config=cfg)
    torch.testing.assert_close(a.linear.weight, b.linear.weight)


def test_training_on_rows_equals_training_on_their_copy() -> None:
    x, y, c = _data()
    rows = np.flatnonzero(y != 2)[::2]
    cfg = TrainConfig(embedding_dim=8, epochs=2, batch_size=64, device="cpu", seed=1)
    a, _ = train_head(x, c, rows=rows, config=cfg)
    b, _ = train_head(x[rows], c.take(rows), config=cfg)
    torch.testing.assert_close(a.linear.weight, b.linear.weight, rtol=0, atol=0)
    np.testing.assert_array_equal(embed(a, x, rows=rows), embed(b, x[rows]))


def test_relative_confidences() -> None:
    c = np.array([[0.5, 0.25, 0.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    rel = TopClasses.from_dense(c, np.array([1, 2]), width=3).relative()
    np.testing.assert_allclose(rel.dense(), [[1.0, 0.5, 0.0], [0.0, 0.0, 0.0]])


@pytest.mark.parametrize(
    "bad", [{"loss": "triplet"}, {"embedding_dim": 0}, {"epochs": 0}, {"batch_size": 1}]
)
def test_config_rejects_bad_values(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        TrainConfig(**bad)  # type: ignore[arg-type]


def test_head_output_is_unit_length() -> None:
    head = EmbeddingHead(10, 4)
    out = head(torch.randn(5, 10) * 100)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(5))


def test_read_run_config_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(NoisyCleanError, match="not a run directory"):
        read_run_config(tmp_path)


def test_model_file_is_safetensors_not_pickle(trained_run: tuple[SmallSet, Path, Path]) -> None:
    _, _, run = trained_run
    raw = (run / "model.safetensors").read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])
    assert {"head.linear.weight", "head.linear.bias", "proxies"} <= set(header)
    assert not raw.startswith(b"\x80")  # a pickle starts with its protocol opcode
    config = read_run_config(run)
    tensors = read_model(run, config)
    assert tensors["proxies"].shape == (10, config.embedding_dim)
    assert config.run_id == json.loads((run / "config.json").read_text())["run_id"]
    head = head_from_tensors(tensors)
    assert head.linear.in_features == config.feature_dim
