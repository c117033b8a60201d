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
import pyarrow as pa

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
from noisyclean.backbones import resolve_device
from noisyclean.confidence import TopClasses, score_confidences
from noisyclean.configs import DEFAULT_TOP_CLASSES, ConfidenceConfig, SuspectConfig, TrainConfig
from noisyclean.duplicates import (
    CANDIDATE_SIMILARITY,
    MATCH_THRESHOLD,
    Duplicates,
    exact_candidates,
    find_duplicates,
    pixel_matches,
)
from noisyclean.embedding import embed, head_from_tensors, model_tensors, train_head
from noisyclean.errors import NoisyCleanError
from noisyclean.feature_file import FeatureFile
from noisyclean.features import FeatureConfig, Features, extract_features
from noisyclean.features import Progress as FeatureProgress
from noisyclean.flagging import Flags, sparse_flags
from noisyclean.images import UnreadableImageError, load_image
from noisyclean.knn import Progress as SearchProgress
from noisyclean.manifest import Manifest, load_manifest, manifest_from_images, row_sources
from noisyclean.metrics import auroc
from noisyclean.outliers import OutlierConfig, OutlierScores, outlier_scores
from noisyclean.sources import Blob, read_source
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
    features: FeatureConfig | FeatureFile,
    config: ConfidenceConfig | None = None,
    top_classes: int = DEFAULT_TOP_CLASSES,
    feature_progress: FeatureProgress | None = None,
    fit_progress: FitProgress | None = None,
    search_progress: SearchProgress | None = None,
) -> ScoreResult:
    """Phase 1 end to end: features, then out-of-sample confidences for every row.

    Args:
        manifest: the rows.
        features: how to compute the features (a backbone and its cache), or the user's
            own features file.
        config: the confidence module's options.
        top_classes: classes kept per row in conf.parquet (every class up to this many).
        feature_progress, fit_progress, search_progress: progress callbacks.

    Raises:
        NoisyCleanError: the feature cache can't be written, or there are too few
            usable train rows to cross-fit.
    """
    cfg = config or ConfidenceConfig()
    feats = _features(manifest, features, progress=feature_progress)
    m = manifest.with_status(feats.status)
    ok, train, labels, classes = m.ok_mask, m.train_mask, m.label_index, m.classes
    _check_enough_rows(m, cfg.folds)
    values = feats.values if ok.all() else feats.values[ok]
    conf = score_confidences(
        values,
        labels[ok],
        train=train[ok],
        n_classes=len(classes),
        config=cfg,
        top_classes=top_classes,
        progress=fit_progress,
        search_progress=search_progress,
        in_place=True,
    )
    del values
    n = len(m)
    top = conf.top
    width = top.classes.shape[1]
    top_classes_all = np.zeros((n, width), dtype=np.int32)
    top_scores_all = np.zeros((n, width), dtype=np.float32)
    top_classes_all[ok], top_scores_all[ok] = top.classes, top.scores
    given = np.full(n, np.nan, dtype=np.float32)
    given[ok] = top.given
    fold = np.full(n, -1, dtype=np.int32)
    fold[ok] = conf.fold
    df = m.frame
    pred = pd.Categorical.from_codes(
        np.where(ok, top_classes_all[:, 0], -1), categories=pd.Index(classes)
    )
    table = pd.DataFrame(
        {
            "id": df["id"],
            "path": df["path"],
            "label": df["label"],
            "status": df["status"],
            "split": df["split"],
            "confidence": given,
            "pred_label": pred,
            "pred_confidence": np.where(ok, top_scores_all[:, 0], np.nan).astype(np.float32),
            "fold": fold,
        }
    )
    if "true_label" in df.columns:
        table["true_label"] = df["true_label"]
    flag_rows = np.flatnonzero(train)
    in_ok = np.cumsum(ok) - 1  # position of each usable row among the usable rows
    # Phase 1's voters, as manifest row positions.
    ok_rows = np.flatnonzero(ok)
    neighbours = np.full((n, cfg.k), -1, dtype=np.int64)
    similarities = np.full((n, cfg.k), np.nan, dtype=np.float32)
    if conf.neighbour_rows is not None and conf.neighbour_similarities is not None:
        near = conf.neighbour_rows
        neighbours[ok] = np.where(near >= 0, ok_rows[np.maximum(near, 0)], -1)
        similarities[ok] = conf.neighbour_similarities
    flag_top = top.take(in_ok[flag_rows])
    file = features if isinstance(features, FeatureFile) else None
    meta = ConfMeta(
        classes=classes,
        backbone=file.backbone if file else features.backbone,  # type: ignore[union-attr]
        image_size=feats.image_size,
        cache_dir="" if file else str(features.resolved_cache_dir),  # type: ignore[union-attr]
        manifest=str(m.source),
        manifest_dir=str(m.root),
        folds=cfg.folds,
        seed=cfg.seed,
        blend=cfg.blend,
        k=cfg.k,
        epochs=conf.epochs,
        top_classes=width,
        features_file=str(file.path) if file else "",
        features_stamp=file.stamp if file else "",
        neighbours=asdict(conf.neighbours) if conf.neighbours else {},
    )
    return ScoreResult(
        conf=Conf(
            frame=table,
            top_classes=top_classes_all,
            top_scores=top_scores_all,
            meta=meta,
            neighbours=neighbours,
            similarities=similarities,
        ),
        flags=sparse_flags(
            flag_top.given, flag_top.classes, flag_top.scores, flag_top.labels, len(classes)
        ),
        flag_rows=flag_rows,
        auroc=train_auroc(1.0 - given, m),
        small_classes=[classes[c] for c in conf.small_classes],
        computed=feats.computed,
        reasons=feats.reasons,
    )


def _features(
    manifest: Manifest,
    source: FeatureConfig | FeatureFile,
    *,
    progress: FeatureProgress | None = None,
) -> Features:
    """Features of every manifest row: from the user's features file, or from the
    backbone through the cache (whose folder must be writable: checked first)."""
    if isinstance(source, FeatureFile):
        return source.load(manifest, progress=progress)
    check_writable_dir(source.resolved_cache_dir, what="feature cache folder", create=True)
    return extract_features(manifest, source, progress=progress)


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
        suspects: the suspects' arrays and flags.
        frame: the rows (id, path, label, split, status), in manifest order.
        confidence_auroc: ``train_auroc`` of Phase 1's ``1 - confidence``, when known.
        suspicion_auroc: ``train_auroc`` of Phase 2's ``suspicion``, when known.
        computed: images whose features were computed now.
        duplicates: the near-duplicate groups (written to duplicates.parquet).
        outliers: every row's outlier score and flag.
        is_suspect: (N,) bool, the rows flagged in suspects.parquet: Phase 2's flags
            and every row of a ``conflict`` group.
        losses: the mean loss of each epoch.
    """

    run_dir: Path
    run_id: str
    suspects: Suspects
    frame: pd.DataFrame
    confidence_auroc: float | None
    suspicion_auroc: float | None
    computed: int
    duplicates: Duplicates
    outliers: OutlierScores
    is_suspect: np.ndarray
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
    duplicate_threshold: float = MATCH_THRESHOLD,
    outlier_config: OutlierConfig | None = None,
    cache_dir: Path | None = None,
    feature_progress: FeatureProgress | None = None,
    epoch_progress: EpochProgress | None = None,
    search_progress: SearchProgress | None = None,
    duplicate_progress: SearchProgress | None = None,
    write_progress: FitProgress | None = None,
) -> TrainResult:
    """Phase 2 end to end: read conf.parquet, train the head, embed every usable row,
    find suspects, near-duplicate groups and outliers, and write the run directory
    (each file atomically).

    The features are found as ``score`` found them: the same backbone and cache, or
    the same features file (refused if it changed since). Duplicates and outliers are
    measured in that backbone space, from Phase 1's neighbour search (no second search);
    the images of rows in a candidate pair are read once more for the pixel check
    (``duplicate_progress`` stages ``images`` and ``pairs``), ``duplicate_threshold``
    being its match threshold.
    """
    conf = read_conf(conf_path)
    meta = conf.meta
    classes = meta.classes
    if meta.features_file:
        source: FeatureConfig | FeatureFile = FeatureFile.recorded(
            meta.features_file, meta.features_stamp
        )
    else:
        source = FeatureConfig(
            backbone=meta.backbone,
            image_size=meta.image_size,
            cache_dir=cache_dir or (Path(meta.cache_dir) if meta.cache_dir else None),
            device=config.device,
        )
    # Rows score could not use stay unusable; rows it used are checked again (files move).
    rows = _manifest_from_conf(conf)
    feats = _features(rows, source, progress=feature_progress)
    m = rows.with_status(feats.status)
    ok, train, labels = m.ok_mask, m.train_mask, m.label_index
    if not train.any():
        raise NoisyCleanError(f"{conf_path}: no usable train rows to train on")
    config = config.resolved(int(train.sum()))
    top = TopClasses(
        labels=labels,
        given=np.nan_to_num(conf.frame["confidence"].to_numpy(np.float32, na_value=0.0)),
        classes=conf.top_classes,
        scores=conf.top_scores,
        n_classes=len(classes),
    )
    losses: list[float] = []

    def on_epoch(done: int, total: int, loss: float) -> None:
        losses.append(loss)
        if epoch_progress:
            epoch_progress(done, total, loss)

    head, loss_fn = train_head(
        feats.values, top, rows=np.flatnonzero(train), config=config, progress=on_epoch
    )
    emb = np.zeros((len(m), config.embedding_dim), dtype=np.float32)
    emb[ok] = embed(head, feats.values, rows=np.flatnonzero(ok))
    found = find_suspects(
        emb,
        top,
        usable=ok,
        train=train,
        classes=classes,
        config=suspect_config,
        progress=search_progress,
    )
    frame = m.frame
    is_test = (frame["split"] == "test").to_numpy() & ok
    candidates = exact_candidates(
        conf.neighbours, conf.similarities, ok, minimum=CANDIDATE_SIMILARITY
    )
    keys, read, thumbs = _read_candidates(m, candidates, progress=duplicate_progress)
    matches = pixel_matches(
        conf.neighbours,
        conf.similarities,
        ok,
        read,
        thumbs,
        device=str(resolve_device(config.device)),
        progress=(lambda d, t: duplicate_progress("pairs", d, t)) if duplicate_progress else None,
    )
    dups = find_duplicates(
        conf.neighbours,
        conf.similarities,
        labels,
        is_test,
        ok,
        matches=matches,
        match_threshold=duplicate_threshold,
        content_keys=keys,
        features=feats.values,
    )
    outliers = outlier_scores(
        feats.values,
        labels,
        train=train,
        n_classes=len(classes),
        confidences=top,
        similarities=conf.similarities,
        neighbours=conf.neighbours,
        usable=ok,
        config=outlier_config,
    )
    is_suspect = found.is_suspect | dups.in_conflict
    ids = pa.array(frame["id"], type=pa.string())
    table = found.table(ids, labels)
    table = table.add_column(2, "path", pa.array(frame["path"], type=pa.string()))
    table = table.append_column("status", pa.array(frame["status"], type=pa.string()))
    table = table.set_column(
        table.column_names.index("is_suspect"), "is_suspect", pa.array(is_suspect)
    )
    table = _add_cleanup_columns(table, outliers, dups, is_suspect, ok)
    run = RunConfig(
        run_id=uuid.uuid4().hex[:12],
        classes=classes,
        backbone=meta.backbone,
        image_size=meta.image_size,
        manifest=meta.manifest,
        manifest_dir=meta.manifest_dir,
        conf=str(Path(conf_path).resolve()),
        cache_dir="" if isinstance(source, FeatureFile) else str(source.resolved_cache_dir),
        feature_dim=int(feats.values.shape[1]),
        embedding_dim=config.embedding_dim,
        train=asdict(config),
        suspects=asdict(found.config),
        epoch_losses=losses,
        features_file=meta.features_file,
        neighbours=asdict(found.search) if found.search else {},
        duplicates={
            "threshold": duplicate_threshold,
            "candidates": CANDIDATE_SIMILARITY,
            "cosine_threshold": dups.threshold,
            "checked_pairs": int(np.isfinite(matches).sum()),
            "unread_images": len(candidates) - len(read),
            "groups": dups.n_groups,
            "rows": len(dups.members),
            **{kind: int(getattr(dups, kind).sum()) for kind in ("conflict", "leak", "exact")},
        },
        outliers={**asdict(outliers.config), "flagged": int(outliers.is_outlier.sum())},
        noise=found.flags.summary(),
    )
    if write_progress:
        write_progress(0, 1)
    write_run(
        out_dir,
        run,
        tensors=model_tensors(head, loss_fn),
        embeddings=emb,
        suspects=table,
        duplicates=dups.table(ids, classes),
    )
    if write_progress:
        write_progress(1, 1)
    return TrainResult(
        run_dir=out_dir,
        run_id=run.run_id,
        suspects=found,
        frame=frame,
        confidence_auroc=train_auroc(1.0 - top.given, m),
        suspicion_auroc=train_auroc(found.suspicion, m),
        computed=feats.computed,
        duplicates=dups,
        outliers=outliers,
        is_suspect=is_suspect,
        losses=losses,
    )


def _add_cleanup_columns(
    table: pa.Table,
    outliers: OutlierScores,
    dups: Duplicates,
    is_suspect: np.ndarray,
    usable: np.ndarray,
) -> pa.Table:
    """suspects.parquet's outlier and duplicate columns: ``outlier``, ``is_outlier``,
    ``suggestion`` (``drop`` for an outlier, else ``relabel`` for a suspect), and
    ``duplicate_group``/``conflict`` (built from arrays: no Python object per row)."""
    score = outliers.score
    suggestion = np.where(outliers.is_outlier, 0, np.where(is_suspect, 1, -1)).astype(np.int32)
    names = pa.array(["drop", "relabel"], type=pa.string())
    columns = {
        "outlier": pa.array(score, type=pa.float32(), mask=~(usable & np.isfinite(score))),
        "is_outlier": pa.array(outliers.is_outlier),
        "suggestion": pa.DictionaryArray.from_arrays(
            pa.array(np.maximum(suggestion, 0), mask=suggestion < 0), names
        ).cast(pa.string()),
        "duplicate_group": pa.array(dups.group, type=pa.int64(), mask=dups.group < 0),
        "conflict": pa.array(dups.in_conflict),
    }
    for name, column in columns.items():
        table = table.append_column(name, column)
    return table


def _read_candidates(
    manifest: Manifest, candidates: np.ndarray, *, progress: SearchProgress | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read the images of the ``candidates`` (rows in a listed pair close enough to be
    checked) once: a hash of each file's bytes and a pixel-check thumbnail. Reading only
    them keeps a run from reading every image a second time.

    Returns:
        keys: (N, 2) uint64 content keys for ``find_duplicates``: the hash for a
            candidate, a key of its own for every other row (and an unreadable one);
        read: (R,) sorted rows whose thumbnail was made;
        thumbnails: (R, SIDE, SIDE) uint8.
    """
    import hashlib
    from concurrent.futures import ThreadPoolExecutor

    from noisyclean.pixel_match import SIDE, thumbnail

    n = len(manifest)
    keys = np.zeros((n, 2), dtype=np.uint64)
    keys[:, 0] = np.arange(n, dtype=np.uint64)
    keys[:, 1] = np.uint64(2**64 - 1)  # no hash of 16 bytes is this pair, in practice
    thumbs = np.zeros((len(candidates), SIDE, SIDE), dtype=np.uint8)
    made = np.zeros(len(candidates), dtype=bool)
    if len(candidates):
        frame = manifest.frame
        sources = row_sources(
            str(manifest.source),
            str(manifest.root),
            frame["id"].astype(str).to_numpy()[candidates].tolist(),
            frame["path"].astype(str).to_numpy()[candidates].tolist(),
        )

        def read(j: int) -> None:
            source = sources[j]
            if source is None:
                return
            try:
                data = source.read_bytes() if isinstance(source, Path) else read_source(source)
            except (OSError, NoisyCleanError):
                return  # gone since its features were read: no claim about it
            digest = hashlib.blake2b(data, digest_size=16).digest()
            keys[candidates[j]] = np.frombuffer(digest, dtype=np.uint64)
            try:
                image = load_image(Blob(data, str(source)), side=SIDE)
            except UnreadableImageError:
                return
            thumbs[j] = thumbnail(image)
            made[j] = True

        if progress:
            progress("images", 0, len(candidates))  # the bar (and its rate) from the start
        with ThreadPoolExecutor(max_workers=_READERS) as pool:
            for start in range(0, len(candidates), _READ_CHUNK):  # bounded work in flight
                stop = min(start + _READ_CHUNK, len(candidates))
                for _ in pool.map(read, range(start, stop)):
                    pass
                if progress:
                    progress("images", stop, len(candidates))
    return keys, np.asarray(candidates, dtype=np.int64)[made], thumbs[made]


#: Threads reading the candidates' images again (I/O-bound on remote stores), and the
#: images handed to them at a time.
_READERS = 8
_READ_CHUNK = 1024


MANIFEST_SUFFIXES = (".csv", ".parquet", ".pq")


def embed_images(
    run_dir: Path,
    source: Path,
    *,
    features: Path | None = None,
    cache_dir: Path | None = None,
    device: str = "auto",
    progress: FeatureProgress | None = None,
) -> pd.DataFrame:
    """Embeddings of new images with a trained run.

    Args:
        run_dir: a directory written by ``train_run``.
        source: a manifest (.csv/.parquet), a folder of images, or one image file.
        features: the new rows' features file (``id``, ``embedding``), for a run trained
            on a features file (such a run has no backbone to compute them with).
        cache_dir: the feature cache [default: the run's].
        device: ``auto``, ``cpu`` or ``cuda``.
        progress: called after each batch of images.

    Returns:
        One row per input row, in order: ``id``, ``path``, ``status``, ``embedding``
        (a float32 array, None for rows that are missing or unreadable).
    """
    config = read_run_config(run_dir)
    head = head_from_tensors(read_model(run_dir, config), device=device)
    source = Path(source)
    is_manifest = source.is_file() and source.suffix.lower() in MANIFEST_SUFFIXES
    if config.features_file and features is None:
        raise NoisyCleanError(
            f"{run_dir}: this run was trained on a features file ({config.features_file}) "
            "and has no backbone to embed images with; give --features FILE for the new rows"
        )
    if features is not None:
        if not is_manifest:
            raise NoisyCleanError(f"{source}: with --features, give a manifest (its ids join)")
        manifest = load_manifest(source, check_files=False)
        feats = FeatureFile.open(features).load(manifest, progress=progress)
    else:
        manifest = load_manifest(source) if is_manifest else manifest_from_images(source)
        fcfg = FeatureConfig(
            backbone=config.backbone,
            image_size=config.image_size,
            cache_dir=cache_dir or Path(config.cache_dir),
            device=device,
        )
        feats = _features(manifest, fcfg, progress=progress)
    if feats.values.shape[1] != config.feature_dim:
        raise NoisyCleanError(
            f"{features or source}: features of width {feats.values.shape[1]}, but the run "
            f"was trained on width {config.feature_dim}"
        )
    ok = feats.status == "ok"
    emb = np.zeros((len(ok), config.embedding_dim), dtype=np.float32)
    emb[ok] = embed(head, feats.values, rows=np.flatnonzero(ok))
    return pd.DataFrame(
        {
            "id": manifest.frame["id"],
            "path": manifest.frame["path"],
            "status": feats.status,
            "embedding": [e if o else None for e, o in zip(emb, ok, strict=True)],
        }
    )
