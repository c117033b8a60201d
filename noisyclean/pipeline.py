"""Each command's work, files in and files out: the layer between the CLI and the algorithms.

- ``score_manifest``: manifest -> features -> Phase 1 confidences (``write_conf`` saves them);
- ``train_run``: conf.parquet -> Phase 2 head -> embeddings and suspects -> run directory;
- ``embed_images``: a run and new images -> embeddings.

The algorithms (``confidence``, ``embedding``, ``suspects``) take arrays; the formats
(``artifacts``, ``manifest``, ``features``) own the files. Evaluation against a
manifest's ``true_label`` lives here too, in ``train_auroc``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from noisyclean.artifacts import (
    Conf,
    ConfMeta,
    RunConfig,
    check_writable_dir,
    read_conf,
    read_model,
    read_run_config,
    write_run,
)
from noisyclean.confidence import score_confidences
from noisyclean.configs import ConfidenceConfig, SuspectConfig, TrainConfig
from noisyclean.embedding import embed, head_from_tensors, model_tensors, train_head
from noisyclean.errors import NoisyCleanError
from noisyclean.features import FeatureConfig, extract_features
from noisyclean.features import Progress as FeatureProgress
from noisyclean.flagging import Flags, confident_flags
from noisyclean.manifest import Manifest, load_manifest, manifest_from_images
from noisyclean.metrics import auroc
from noisyclean.suspects import Suspects, find_suspects

#: Called after each model fit with (fits done, fits to do).
FitProgress = Callable[[int, int], None]
#: Called after each epoch with (epochs done, epochs to do, mean loss of the epoch).
EpochProgress = Callable[[int, int, float], None]


def train_auroc(scores: np.ndarray, manifest: Manifest) -> float | None:
    """AUROC of ``scores`` (higher = more likely mislabelled) against ``label != true_label``
    over the usable train rows whose ``true_label`` is known.

    Test rows are left out: they are clean by construction, and counting them would
    flatter the figure. None when the manifest has no ``true_label``.
    """
    frame = manifest.frame
    if "true_label" not in frame.columns:
        return None
    known = manifest.train_mask & frame["true_label"].notna().to_numpy()
    wrong = (frame["label"] != frame["true_label"]).to_numpy()[known]
    return auroc(np.asarray(scores)[known], wrong)


@dataclass(frozen=True)
class ScoreResult:
    """What ``noisyclean score`` writes and reports.

    Attributes:
        conf: conf.parquet's content (``artifacts.write_conf`` writes it).
        flags: per-class-threshold flags over the usable train rows.
        flag_rows: (F,) positions in ``conf.frame`` of the rows ``flags`` describes.
        auroc: ``train_auroc`` of ``1 - confidence``, when the manifest has ``true_label``.
        small_classes: names of classes with fewer train rows than folds.
        computed: images whose features were computed now (the rest came from the cache).
        reasons: why each ``unreadable`` row could not be used, by row position.
    """

    conf: Conf
    flags: Flags
    flag_rows: np.ndarray
    auroc: float | None
    small_classes: list[str]
    computed: int
    reasons: dict[int, str] = field(default_factory=dict)


def score_manifest(
    manifest: Manifest,
    *,
    features: FeatureConfig,
    config: ConfidenceConfig | None = None,
    feature_progress: FeatureProgress | None = None,
    fit_progress: FitProgress | None = None,
) -> ScoreResult:
    """Phase 1 end to end: features, then out-of-sample confidences for every row.

    Raises:
        NoisyCleanError: the feature cache can't be written, or there are too few
            usable train rows to cross-fit.
    """
    cfg = config or ConfidenceConfig()
    check_writable_dir(features.resolved_cache_dir, what="feature cache folder", create=True)
    feats = extract_features(manifest, features, progress=feature_progress)
    m = manifest.with_status(feats.status)
    ok, train, labels, classes = m.ok_mask, m.train_mask, m.label_index, m.classes
    _check_enough_rows(m, cfg.folds)
    conf = score_confidences(
        feats.values[ok],
        labels[ok],
        train=train[ok],
        n_classes=len(classes),
        config=cfg,
        progress=fit_progress,
    )
    n = len(m)
    full = np.zeros((n, len(classes)), dtype=np.float32)
    full[ok] = conf.blended
    fold = np.full(n, -1, dtype=np.int32)
    fold[ok] = conf.fold
    rows = np.arange(n)
    pred = full.argmax(axis=1)
    df = m.frame
    table = pd.DataFrame(
        {
            "id": df["id"],
            "path": df["path"],
            "label": df["label"],
            "status": df["status"],
            "split": df["split"],
            "confidence": np.where(ok, full[rows, labels], np.nan).astype(np.float32),
            "pred_label": np.where(ok, np.asarray(classes, dtype=object)[pred], None),
            "pred_confidence": np.where(ok, full[rows, pred], np.nan).astype(np.float32),
            "fold": fold,
        }
    )
    if "true_label" in df.columns:
        table["true_label"] = df["true_label"]
    flag_rows = np.flatnonzero(train)
    meta = ConfMeta(
        classes=classes,
        backbone=features.backbone,
        image_size=feats.image_size,
        cache_dir=str(features.resolved_cache_dir),
        manifest=str(m.source),
        manifest_dir=str(m.root),
        folds=cfg.folds,
        seed=cfg.seed,
        blend=cfg.blend,
        k=cfg.k,
        epochs=cfg.epochs,
    )
    return ScoreResult(
        conf=Conf(frame=table, confidences=full, meta=meta),
        flags=confident_flags(full[flag_rows], labels[flag_rows], len(classes)),
        flag_rows=flag_rows,
        auroc=train_auroc(1.0 - table["confidence"].to_numpy(), m),
        small_classes=[classes[c] for c in conf.small_classes],
        computed=feats.computed,
        reasons=feats.reasons,
    )


def _check_enough_rows(manifest: Manifest, folds: int) -> None:
    train = manifest.train_mask
    n_classes = len(np.unique(manifest.label_index[train]))
    if train.sum() < folds or n_classes < 2:
        raise NoisyCleanError(
            f"{manifest.source.name}: {int(train.sum())} usable train row(s) in {n_classes} "
            f"class(es); Phase 1 needs at least --folds ({folds}) usable train rows, in at "
            "least 2 classes"
        )


@dataclass(frozen=True)
class TrainResult:
    """What ``noisyclean train`` wrote and reports.

    Attributes:
        run_dir: the run directory.
        run_id: a fresh id of this run.
        suspects: the suspects table and its summary.
        confidence_auroc: ``train_auroc`` of Phase 1's ``1 - confidence``, when known.
        suspicion_auroc: ``train_auroc`` of Phase 2's ``suspicion``, when known.
        computed: images whose features were computed now.
        losses: the mean loss of each epoch.
    """

    run_dir: Path
    run_id: str
    suspects: Suspects
    confidence_auroc: float | None
    suspicion_auroc: float | None
    computed: int
    losses: list[float] = field(default_factory=list)


def _manifest_from_conf(conf: Conf) -> Manifest:
    """The manifest rows conf.parquet describes, with paths resolved as score resolved them."""
    cols = ["id", "path", "label", "split", "status"]
    df = conf.frame[cols + (["true_label"] if "true_label" in conf.frame.columns else [])]
    return Manifest(
        frame=df.copy(),
        source=Path(conf.meta.manifest),
        root=Path(conf.meta.manifest_dir),
        classes=conf.meta.classes,
    )


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
    find suspects, and write the run directory (each file atomically)."""
    conf = read_conf(conf_path)
    meta = conf.meta
    classes = meta.classes
    fcfg = FeatureConfig(
        backbone=meta.backbone,
        image_size=meta.image_size,
        cache_dir=cache_dir or (Path(meta.cache_dir) if meta.cache_dir else None),
        device=config.device,
    )
    check_writable_dir(fcfg.resolved_cache_dir, what="feature cache folder", create=True)
    # Rows score could not use stay unusable; rows it used are checked again (files move).
    feats = extract_features(_manifest_from_conf(conf), fcfg, progress=feature_progress)
    m = _manifest_from_conf(conf).with_status(feats.status)
    ok, train, labels = m.ok_mask, m.train_mask, m.label_index
    if not train.any():
        raise NoisyCleanError(f"{conf_path}: no usable train rows to train on")
    losses: list[float] = []

    def on_epoch(done: int, total: int, loss: float) -> None:
        losses.append(loss)
        if epoch_progress:
            epoch_progress(done, total, loss)

    head, loss_fn = train_head(
        feats.values[train],
        labels[train],
        conf.confidences[train],
        n_classes=len(classes),
        config=config,
        progress=on_epoch,
    )
    emb = np.zeros((len(m), config.embedding_dim), dtype=np.float32)
    emb[ok] = embed(head, feats.values[ok])
    found = find_suspects(
        emb,
        labels,
        conf.confidences,
        ids=m.frame["id"].to_numpy(dtype=object),
        usable=ok,
        train=train,
        classes=classes,
        config=suspect_config,
    )
    table = found.table
    table.insert(2, "path", m.frame["path"].to_numpy())
    table["status"] = m.frame["status"].to_numpy()

    run = RunConfig(
        run_id=uuid.uuid4().hex[:12],
        classes=classes,
        backbone=meta.backbone,
        image_size=meta.image_size,
        manifest=meta.manifest,
        manifest_dir=meta.manifest_dir,
        conf=str(Path(conf_path).resolve()),
        cache_dir=str(fcfg.resolved_cache_dir),
        feature_dim=int(feats.values.shape[1]),
        embedding_dim=config.embedding_dim,
        train=asdict(config),
        suspects=asdict(found.config),
        epoch_losses=losses,
    )
    write_run(out_dir, run, tensors=model_tensors(head, loss_fn), embeddings=emb, suspects=table)
    rows = np.arange(len(m))
    return TrainResult(
        run_dir=out_dir,
        run_id=run.run_id,
        suspects=found,
        confidence_auroc=train_auroc(1.0 - conf.confidences[rows, labels], m),
        suspicion_auroc=train_auroc(table["suspicion"].to_numpy(), m),
        computed=feats.computed,
        losses=losses,
    )


MANIFEST_SUFFIXES = (".csv", ".parquet", ".pq")


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
        cache_dir: the feature cache [default: the run's].
        device: ``auto``, ``cpu`` or ``cuda``.
        progress: called after each batch of images.

    Returns:
        One row per input image, in order: ``id``, ``path``, ``status``, ``embedding``
        (a float32 array, None for images that are missing or unreadable).
    """
    config = read_run_config(run_dir)
    head = head_from_tensors(read_model(run_dir, config), device=device)
    source = Path(source)
    if source.is_file() and source.suffix.lower() in MANIFEST_SUFFIXES:
        manifest = load_manifest(source)
    else:
        manifest = manifest_from_images(source)
    fcfg = FeatureConfig(
        backbone=config.backbone,
        image_size=config.image_size,
        cache_dir=cache_dir or Path(config.cache_dir),
        device=device,
    )
    check_writable_dir(fcfg.resolved_cache_dir, what="feature cache folder", create=True)
    feats = extract_features(manifest, fcfg, progress=progress)
    ok = feats.status == "ok"
    emb = np.zeros((len(ok), config.embedding_dim), dtype=np.float32)
    emb[ok] = embed(head, feats.values[ok])
    return pd.DataFrame(
        {
            "id": manifest.frame["id"],
            "path": manifest.frame["path"],
            "status": feats.status,
            "embedding": [e if o else None for e, o in zip(emb, ok, strict=True)],
        }
    )
