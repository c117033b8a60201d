"""Smooth Proxy-Anchor variants against MultiSimilarity, paired by setting and seed.

Reads the Phase 1 confidences saved by ``benchmarks/calibration_data.py`` (one file per
noise setting and seed), trains each variant's head on the same features and labels,
and writes the test rows' Recall@1 (by their true labels) to a CSV, one line per
(file, variant). Resumable: lines already in the CSV are skipped.

    nice .venv/bin/python benchmarks/loss_variants.py data/fm20k/manifest.csv \
        --calib data/calib -o data/calib/variants.csv
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch

from noisyclean import knn, losses
from noisyclean.confidence import TopClasses
from noisyclean.configs import TrainConfig
from noisyclean.embedding import embed, train_head
from noisyclean.features import FeatureConfig, extract_features
from noisyclean.manifest import load_manifest
from noisyclean.metrics import recall_at_k

Patch = Callable[[], Callable[[], None]]


def _floor_confused(floor: float) -> Patch:
    """m⁻ of the class the row is most confused with (its best other class) is at least
    ``floor`` where the given label is the row's best class."""

    def patch() -> Callable[[], None]:
        original = losses.SmoothProxyAnchorLoss.memberships

        def memberships(self, labels, confidences):  # type: ignore[no-untyped-def]
            m_pos, m_neg = original(self, labels, confidences)
            given = torch.nn.functional.one_hot(labels, self.n_classes).bool()
            other = confidences.masked_fill(given, -1.0)
            best_other = other.argmax(dim=1)
            trusted = confidences.gather(1, labels[:, None])[:, 0] >= other.max(dim=1).values
            rows = torch.arange(len(labels))
            current = m_neg[rows, best_other]
            m_neg = m_neg.clone()
            m_neg[rows, best_other] = torch.where(trusted, torch.clamp(current, min=floor), current)
            return m_pos, m_neg

        losses.SmoothProxyAnchorLoss.memberships = memberships  # type: ignore[method-assign]

        def undo() -> None:
            losses.SmoothProxyAnchorLoss.memberships = original  # type: ignore[method-assign]

        return undo

    return patch


def _confident_proxies(rate: float) -> Patch:
    """Proxies re-estimated from confident members: before each step, each class's proxy
    moves ``rate`` of the way to the normalised mean embedding of the batch's rows that
    carry it as their label, weighted by m⁺ (rate 1 on the first step: initialised from
    them); the gradient still moves them in between."""

    def patch() -> Callable[[], None]:
        original = losses.SmoothProxyAnchorLoss.forward

        def forward(self, embeddings, labels, confidences):  # type: ignore[no-untyped-def]
            with torch.no_grad():
                m_pos, _ = self.memberships(labels, confidences.to(embeddings.dtype))
                e = torch.nn.functional.normalize(embeddings.detach(), dim=1)
                mass = m_pos.sum(dim=0)
                means = torch.nn.functional.normalize(m_pos.T @ e, dim=1)
                first = not getattr(self, "_seen", False)
                step = 1.0 if first else rate
                p = torch.nn.functional.normalize(self.proxies.data, dim=1)
                moved = torch.nn.functional.normalize((1 - step) * p + step * means, dim=1)
                norm = self.proxies.data.norm(dim=1, keepdim=True)
                self.proxies.data = torch.where(mass[:, None] > 0, moved * norm, self.proxies.data)
                self._seen = True
            return original(self, embeddings, labels, confidences)

        losses.SmoothProxyAnchorLoss.forward = forward  # type: ignore[method-assign]

        def undo() -> None:
            losses.SmoothProxyAnchorLoss.forward = original  # type: ignore[method-assign]

        return undo

    return patch


def _pull_to_best(power: float) -> Patch:
    """A row whose given label is doubted also pulls on its best class (Phase 1's argmax,
    when that is not the given label) with ``m⁺ = (1 − S(C[x, y]))^power · S(C[x, best])``:
    the doubt moves the pull from the given class to the believed one. One-hot
    confidences of the given label leave it Proxy-Anchor (the best class is the label)."""

    def patch() -> Callable[[], None]:
        original = losses.SmoothProxyAnchorLoss.memberships

        def memberships(self, labels, confidences):  # type: ignore[no-untyped-def]
            m_pos, m_neg = original(self, labels, confidences)
            smoothed = losses.smoothing(confidences, tau=self.tau, k=self.k)
            best = confidences.argmax(dim=1)
            rows = torch.arange(len(labels))
            doubt = (1 - smoothed[rows, labels]) ** power
            pull = torch.where(best != labels, doubt * smoothed[rows, best], 0.0)
            m_pos = m_pos.clone()
            m_pos[rows, best] = torch.maximum(m_pos[rows, best], pull)
            return m_pos, m_neg

        losses.SmoothProxyAnchorLoss.memberships = memberships  # type: ignore[method-assign]

        def undo() -> None:
            losses.SmoothProxyAnchorLoss.memberships = original  # type: ignore[method-assign]

        return undo

    return patch


def _none() -> Callable[[], None]:
    return lambda: None


#: Optimiser steps of the run about to start (set by ``main`` before each patch).
_STEPS = {"total": 1}


def _cosine_lr() -> Callable[[], None]:
    """Every parameter group's learning rate decays from its own to 0 along a half cosine
    over the run's steps (the trainer's AdamW, replaced for the run)."""
    original = torch.optim.AdamW

    class Cosine(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            super().__init__(*args, **kwargs)
            self._base = [g["lr"] for g in self.param_groups]
            self._t = 0

        def step(self, closure=None):  # type: ignore[no-untyped-def]
            out = super().step(closure)
            self._t += 1
            scale = 0.5 * (1 + np.cos(np.pi * min(self._t / _STEPS["total"], 1.0)))
            for g, base in zip(self.param_groups, self._base, strict=True):
                g["lr"] = base * scale
            return out

    torch.optim.AdamW = Cosine  # type: ignore[misc]

    def undo() -> None:
        torch.optim.AdamW = original  # type: ignore[misc]

    return undo


#: name -> (loss, TrainConfig changes, patch)
VARIANTS: dict[str, tuple[str, dict[str, object], Patch]] = {
    "multi-similarity": ("multi-similarity", {}, _none),
    "proxy-anchor": ("proxy-anchor", {}, _none),
    "spa": ("smooth-proxy-anchor", {}, _none),
    "spa-floor0.5": ("smooth-proxy-anchor", {}, _floor_confused(0.5)),
    "spa-floor0.9": ("smooth-proxy-anchor", {}, _floor_confused(0.9)),
    "spa-tau0.3": ("smooth-proxy-anchor", {"tau": 0.3}, _none),
    "spa-delta0.2": ("smooth-proxy-anchor", {"delta": 0.2}, _none),
    "spa-norenorm": ("smooth-proxy-anchor", {"renormalize": False}, _none),
    "spa-epochs30": ("smooth-proxy-anchor", {"epochs": 30}, _none),
    "spa-alpha16": ("smooth-proxy-anchor", {"alpha": 16.0}, _none),
    "spa-lr1e-3": ("smooth-proxy-anchor", {"lr": 1e-3}, _none),
    "spa-proxylr10": ("smooth-proxy-anchor", {"proxy_lr_mult": 10.0}, _none),
    "spa-batch128": ("smooth-proxy-anchor", {"batch_size": 128}, _none),
    "spa-sharp10": ("smooth-proxy-anchor", {"k": 10.0}, _none),
    # References on the true labels (one-hot): what each loss reaches without noise.
    "multi-similarity-clean": ("multi-similarity", {}, _none),
    "proxy-anchor-clean": ("proxy-anchor", {}, _none),
    "spa-soft": ("smooth-proxy-anchor", {"positives": "soft"}, _none),
    "spa-proxyinit": ("smooth-proxy-anchor", {}, _confident_proxies(0.0)),
    "spa-proxyema": ("smooth-proxy-anchor", {}, _confident_proxies(0.05)),
    # A wider embedding, for both losses (compared with each other, not with E = 128).
    "multi-similarity-e512": ("multi-similarity", {"embedding_dim": 512}, _none),
    "spa-e512": ("smooth-proxy-anchor", {"embedding_dim": 512}, _none),
    "spa-e512-proxyinit": ("smooth-proxy-anchor", {"embedding_dim": 512}, _confident_proxies(0.0)),
    # Issue 12, fifth session: scale, margin, length, proxy rate and a cosine schedule.
    "spa-alpha24": ("smooth-proxy-anchor", {"alpha": 24.0}, _none),
    "spa-alpha48": ("smooth-proxy-anchor", {"alpha": 48.0}, _none),
    "spa-delta0.05": ("smooth-proxy-anchor", {"delta": 0.05}, _none),
    "spa-delta0": ("smooth-proxy-anchor", {"delta": 0.0}, _none),
    "spa-epochs10": ("smooth-proxy-anchor", {"epochs": 10}, _none),
    "spa-epochs15": ("smooth-proxy-anchor", {"epochs": 15}, _none),
    "spa-proxylr30": ("smooth-proxy-anchor", {"proxy_lr_mult": 30.0}, _none),
    "spa-proxylr300": ("smooth-proxy-anchor", {"proxy_lr_mult": 300.0}, _none),
    "spa-cosine": ("smooth-proxy-anchor", {}, _cosine_lr),
    "multi-similarity-cosine": ("multi-similarity", {}, _cosine_lr),
    "spa-alpha24-cosine": ("smooth-proxy-anchor", {"alpha": 24.0}, _cosine_lr),
    "spa-alpha24-delta0": ("smooth-proxy-anchor", {"alpha": 24.0, "delta": 0.0}, _none),
    "spa-alpha20": ("smooth-proxy-anchor", {"alpha": 20.0}, _none),
    "spa-alpha28": ("smooth-proxy-anchor", {"alpha": 28.0}, _none),
    "spa-alpha20-cosine": ("smooth-proxy-anchor", {"alpha": 20.0}, _cosine_lr),
    "proxy-anchor-alpha24-cosine": ("proxy-anchor", {"alpha": 24.0}, _cosine_lr),
    "spa-alpha16-cosine": ("smooth-proxy-anchor", {"alpha": 16.0}, _cosine_lr),
    "spa-alpha12-cosine": ("smooth-proxy-anchor", {"alpha": 12.0}, _cosine_lr),
    "proxy-anchor-alpha20-cosine": ("proxy-anchor", {"alpha": 20.0}, _cosine_lr),
    "proxy-anchor-alpha16-cosine": ("proxy-anchor", {"alpha": 16.0}, _cosine_lr),
    "spa-tobest": ("smooth-proxy-anchor", {}, _pull_to_best(1.0)),
    "spa-tobest2": ("smooth-proxy-anchor", {}, _pull_to_best(2.0)),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("manifest", type=Path)
    ap.add_argument("--calib", type=Path, default=Path("data/calib"))
    ap.add_argument("-o", "--out", type=Path, default=Path("data/calib/variants.csv"))
    ap.add_argument("--variant", action="append", default=None)
    ap.add_argument("--files", default="*-seed*", help="glob of the calibration files' stems")
    a = ap.parse_args()
    m = load_manifest(a.manifest)
    feats = extract_features(
        m,
        FeatureConfig(
            backbone="efficientnet-lite0",
            image_size=112,
            cache_dir=Path("data/feature-cache"),
            workers=1,
        ),
    )
    x = np.ascontiguousarray(feats.values, dtype=np.float32)
    done = set()
    if a.out.exists():
        with a.out.open() as fh:
            done = {(r["file"], r["variant"]) for r in csv.DictReader(fh)}
    new = not a.out.exists()
    with a.out.open("a", newline="") as fh:
        writer = csv.writer(fh)
        if new:
            writer.writerow(["file", "variant", "recall@1", "seconds"])
        for path in sorted(a.calib.glob(f"{a.files}.npz")):
            d = np.load(path)
            y, true, train = d["noisy"], d["true"], d["train"]
            k = int(true.max()) + 1
            seed = int(path.stem.rsplit("seed", 1)[1])
            for name in a.variant or VARIANTS:
                if (path.stem, name) in done:
                    continue
                loss, changes, patch = VARIANTS[name]
                given = true if name.endswith("-clean") else y
                dense = d["conf"] if loss == "smooth-proxy-anchor" else np.eye(k)[given]
                top = TopClasses.from_dense(dense.astype(np.float32), given, width=k)
                cfg = replace(TrainConfig(loss=loss, seed=seed, device="cpu"), **changes)
                resolved = cfg.resolved(int(train.sum()))
                _STEPS["total"] = (resolved.epochs or 1) * -(-int(train.sum()) // cfg.batch_size)
                undo = patch()
                t0 = time.perf_counter()
                try:
                    head, _ = train_head(x, top, rows=np.flatnonzero(train), config=cfg)
                finally:
                    undo()
                emb = embed(head, x)
                test = ~train
                _, nb = knn.search(emb[test], emb[test], k=1, exclude_self=True)
                r1 = recall_at_k(nb, true[test], (1,))[1]
                writer.writerow([path.stem, name, f"{r1:.4f}", f"{time.perf_counter() - t0:.1f}"])
                fh.flush()
                print(path.stem, name, f"{r1:.2f}", flush=True)


if __name__ == "__main__":
    main()
