"""Phase 2: an embedding head on cached backbone features, trained with Smooth Proxy-Anchor.

Phase 1's confidences decide how much each sample pulls on its class proxy (see
``noisyclean.losses``). The head is linear: in DESIGN.md's measurements a 2-layer
head did worse. Proxies learn 100× faster than the head, as in the official
Proxy-Anchor code.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from noisyclean import __version__
from noisyclean.artifacts import (
    CONF_SCHEMA,
    EMBEDDINGS_SCHEMA,
    SUSPECTS_SCHEMA,
    ArtifactError,
    atomic_path,
    list_column,
    read_parquet,
    write_json,
    write_parquet,
)
from noisyclean.backbones import resolve_device
from noisyclean.errors import NoisyCleanError
from noisyclean.features import FeatureConfig, extract_features
from noisyclean.features import Progress as FeatureProgress
from noisyclean.losses import LOSSES, make_loss
from noisyclean.manifest import Manifest, load_manifest, manifest_from_images
from noisyclean.suspects import SuspectConfig, Suspects, find_suspects

#: Called after each epoch with (epochs done, epochs to do, mean loss of the epoch).
EpochProgress = Callable[[int, int, float], None]


@dataclass(frozen=True)
class TrainConfig:
    """Options of Phase 2.

    Attributes:
        loss: ``smooth-proxy-anchor``, ``proxy-anchor`` or ``multi-similarity``.
        embedding_dim: output dimension of the head.
        epochs: passes over the train rows.
        batch_size: rows per step.
        lr: AdamW learning rate of the head; proxies get ``lr * proxy_lr_mult``.
        proxy_lr_mult: proxies' learning-rate multiplier.
        weight_decay: AdamW weight decay.
        alpha: Proxy-Anchor scale α.
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
    epochs: int = 20
    batch_size: int = 256
    lr: float = 3e-4
    proxy_lr_mult: float = 100.0
    weight_decay: float = 1e-4
    alpha: float = 32.0
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
        if self.embedding_dim < 1 or self.epochs < 1 or self.batch_size < 2:
            raise ValueError("embedding_dim and epochs must be >= 1, batch_size >= 2")


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


@dataclass(frozen=True)
class TrainResult:
    """What ``noisyclean train`` wrote and reports.

    Attributes:
        run_dir: the run directory.
        run_id: a fresh id of this run.
        suspects: the suspects table and its summary.
        confidence_auroc: AUROC of Phase 1's ``1 - confidence`` against injected
            noise (``label != true_label``) on usable train rows, when known.
        suspicion_auroc: the same for Phase 2's ``suspicion``.
        computed: images whose features were computed now.
    """

    run_dir: Path
    run_id: str
    suspects: Suspects
    confidence_auroc: float | None
    suspicion_auroc: float | None
    computed: int
    losses: list[float] = field(default_factory=list)


def read_conf(path: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """conf.parquet and its metadata, checked for what ``train`` needs."""
    frame, meta = read_parquet(path, required=CONF_SCHEMA)
    for key in ("classes", "backbone", "image_size", "manifest", "manifest_dir"):
        if key not in meta:
            raise ArtifactError(f"{path}: metadata key '{key}' missing; was it written by score?")
    return frame, meta


def _manifest_from_conf(frame: pd.DataFrame, meta: dict[str, Any]) -> Manifest:
    """The manifest rows conf.parquet describes, with paths resolved as score resolved them."""
    cols = ["id", "path", "label", "split", "status"]
    df = frame[cols + (["true_label"] if "true_label" in frame.columns else [])].copy()
    # Rows score could not use stay unusable; rows it used are checked again (files move).
    root = Path(meta["manifest_dir"])
    return Manifest(frame=df, source=Path(meta["manifest"]), root=root, classes=meta["classes"])


def train_run(
    conf_path: Path,
    out_dir: Path,
    *,
    config: TrainConfig,
    suspect_config: SuspectConfig | None = None,
    cache_dir: Path | None = None,
    feature_progress: FeatureProgress | None = None,
    epoch_progress: EpochProgress | None = None,
) -> TrainResult:
    """Phase 2 end to end: read conf.parquet, train the head, embed every usable row,
    find suspects, and write the run directory atomically file by file."""
    frame, meta = read_conf(conf_path)
    classes: list[str] = meta["classes"]
    manifest = _manifest_from_conf(frame, meta)
    fcfg = FeatureConfig(
        backbone=meta["backbone"],
        image_size=int(meta["image_size"]),
        cache_dir=cache_dir or (Path(meta["cache_dir"]) if meta.get("cache_dir") else None),
        device=config.device,
    )
    feats = extract_features(manifest, fcfg, progress=feature_progress)
    status = np.where(frame["status"] == "ok", feats.status, frame["status"])
    ok = status == "ok"
    train = ok & (frame["split"] != "test").to_numpy()
    if not train.any():
        raise NoisyCleanError(f"{conf_path}: no usable train rows to train on")
    labels = pd.Categorical(frame["label"], categories=classes).codes.astype(np.int64)
    if (labels[ok] < 0).any():
        raise ArtifactError(f"{conf_path}: a label is not among the metadata's classes")
    conf = np.stack(
        [
            np.asarray(v, dtype=np.float32) if o else np.zeros(len(classes), np.float32)
            for v, o in zip(frame["confidences"], ok, strict=True)
        ]
    )
    losses: list[float] = []

    def on_epoch(done: int, total: int, loss: float) -> None:
        losses.append(loss)
        if epoch_progress:
            epoch_progress(done, total, loss)

    head, loss_fn = train_head(
        feats.values[train],
        labels[train],
        conf[train],
        n_classes=len(classes),
        config=config,
        progress=on_epoch,
    )
    emb = np.zeros((len(frame), config.embedding_dim), dtype=np.float32)
    emb[ok] = embed(head, feats.values[ok])

    found = find_suspects(
        emb,
        labels,
        conf,
        ids=frame["id"].to_numpy(dtype=object),
        usable=ok,
        train=train,
        classes=classes,
        config=suspect_config,
    )
    table = found.table
    table.insert(2, "path", frame["path"].to_numpy())
    table["status"] = status

    run_id = uuid.uuid4().hex[:12]
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {f"head.{k}": v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    proxies = getattr(loss_fn, "proxies", None)
    if isinstance(proxies, torch.Tensor):
        tensors["proxies"] = proxies.detach().cpu().contiguous()
    with atomic_path(out_dir / "model.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"run_id": run_id})
    run_meta = {
        "run_id": run_id,
        "classes": classes,
        "backbone": meta["backbone"],
        "image_size": int(meta["image_size"]),
        "manifest": meta["manifest"],
        "manifest_dir": meta["manifest_dir"],
    }
    write_json(
        out_dir / "config.json",
        {
            **run_meta,
            "noisyclean_version": __version__,
            "conf": str(Path(conf_path).resolve()),
            "cache_dir": str(fcfg.resolved_cache_dir),
            "feature_dim": int(feats.values.shape[1]),
            "train": asdict(config),
            "suspects": asdict(found.config),
            "epoch_losses": losses,
        },
    )
    emb_table = pd.DataFrame(
        {
            "id": frame["id"],
            "status": status,
            "embedding": list_column(emb, ok),
        }
    )
    write_parquet(
        out_dir / "embeddings.parquet", emb_table, schema=EMBEDDINGS_SCHEMA, metadata=run_meta
    )
    write_parquet(out_dir / "suspects.parquet", table, schema=SUSPECTS_SCHEMA, metadata=run_meta)

    conf_auc = sus_auc = None
    if "true_label" in frame.columns:
        from noisyclean.metrics import auroc

        known = train & frame["true_label"].notna().to_numpy()
        wrong = (frame["label"] != frame["true_label"]).to_numpy()[known]
        conf_auc = auroc(1.0 - conf[known, labels[known]], wrong)
        sus_auc = auroc(table["suspicion"].to_numpy()[known], wrong)
    return TrainResult(
        run_dir=out_dir,
        run_id=run_id,
        suspects=found,
        confidence_auroc=conf_auc,
        suspicion_auroc=sus_auc,
        computed=feats.computed,
        losses=losses,
    )


@dataclass(frozen=True)
class Run:
    """A trained run loaded back from its directory (no pickle: safetensors + JSON)."""

    head: EmbeddingHead
    proxies: torch.Tensor | None
    config: dict[str, Any]


def load_run(run_dir: Path, *, device: str = "cpu") -> Run:
    run_dir = Path(run_dir)
    cfg_path, model_path = run_dir / "config.json", run_dir / "model.safetensors"
    for p in (cfg_path, model_path):
        if not p.is_file():
            raise ArtifactError(f"{run_dir}: not a run directory ({p.name} missing)")
    config = json.loads(cfg_path.read_text())
    tensors = load_file(str(model_path), device=str(resolve_device(device)))
    head = EmbeddingHead(int(config["feature_dim"]), int(config["train"]["embedding_dim"]))
    head.load_state_dict(
        {k.removeprefix("head."): v for k, v in tensors.items() if k.startswith("head.")}
    )
    head.to(resolve_device(device)).eval()
    return Run(head=head, proxies=tensors.get("proxies"), config=config)


def embed_images(
    run_dir: Path,
    source: Path,
    *,
    cache_dir: Path | None = None,
    device: str = "auto",
    progress: FeatureProgress | None = None,
) -> pd.DataFrame:
    """Embeddings of new images with a trained run.

    Args:
        run_dir: a directory written by ``train_run``.
        source: a manifest (.csv/.parquet), a folder of images, or one image file.

    Returns:
        One row per input image, in order: ``id``, ``path``, ``status``, ``embedding``
        (None for images that are missing or unreadable).
    """
    run = load_run(run_dir, device=device)
    source = Path(source)
    if source.is_file() and source.suffix.lower() in (".csv", ".parquet", ".pq"):
        manifest = load_manifest(source)
    else:
        manifest = manifest_from_images(source)
    fcfg = FeatureConfig(
        backbone=run.config["backbone"],
        image_size=int(run.config["image_size"]),
        cache_dir=cache_dir or Path(run.config["cache_dir"]),
        device=device,
    )
    feats = extract_features(manifest, fcfg, progress=progress)
    ok = feats.status == "ok"
    emb = np.zeros((len(ok), run.head.linear.out_features), dtype=np.float32)
    emb[ok] = embed(run.head, feats.values[ok])
    return pd.DataFrame(
        {
            "id": manifest.frame["id"],
            "path": manifest.frame["path"],
            "status": feats.status,
            "embedding": list_column(emb, ok),
        }
    )
