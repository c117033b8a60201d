"""Frozen backbone features for every manifest row, cached on disk.

The cache key of one image is the backbone, its preprocessing (image size, mean, std),
and the image's own key from ``noisyclean.sources``: for a local file the resolved path,
the file's byte size and its mtime; for an object in a store its URL (credentials
redacted) and ETag (or size, where the store gives no ETag), from one ``info()`` per
object; for bytes embedded in the manifest a hash of the bytes. An object is downloaded
once, when its features are computed; a cached row is never downloaded. Finished
features are written to the cache at least every ``FLUSH_SECONDS``, at the end of a run
and when a run is interrupted (Ctrl-C) or fails, so a rerun computes only what is
missing, and even a ``kill -9`` loses at most the last few seconds of work. Only usable
features are cached: an image that could not be read is tried again on the next run
(its permissions may have been fixed since). Images are decoded by
``noisyclean.images``. The cache's layout is this module's own business.

Cache layout: one folder per backbone and image size (named by a digest of both; its
``spec.json`` says which), holding append-only shards, one per flush:

- ``shard-<uuid>.features.npy``: shape (n, D), float32, one feature vector per row; read
  through a memory map.
- ``shard-<uuid>.keys.npy``: shape (n, 2), uint64, the row's image key (see
  ``file_keys`` and ``noisyclean.sources.Sources.keys``).

Both are written to a temporary file and renamed into place, the features first and the
keys last: a shard counts only once its keys file is complete and its features file holds
as many rows, so one cut short by a crash is recomputed, not trusted. A lookup loads the
key arrays of all shards (16 bytes a row), joins them with the query keys by a sorted
search, and copies the rows found from each shard's memory map straight into the output
array. The same key in several shards (an image computed twice) is harmless: any one is
taken. ``chunk-*.npz`` files, the layout of earlier versions, are ignored (and left in
place; they may be deleted): those features are computed again.

Testing hooks (environment variables, read when a run starts computing; not for users):

- ``NOISYCLEAN_FLUSH_SECONDS``: flush interval in seconds instead of ``FLUSH_SECONDS``
  (0: after every batch).
- ``NOISYCLEAN_STOP_AFTER_BATCHES=N``: raise KeyboardInterrupt after the N-th batch, as
  a Ctrl-C would.
- ``NOISYCLEAN_KILL_AFTER_BATCHES=N``: SIGKILL the process after the N-th batch (after
  that batch's flush, if one is due).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from noisyclean.backbones import Backbone, default_precision, load_backbone, native_image_size
from noisyclean.configs import DEFAULT_BACKBONE
from noisyclean.images import error_reason, load_image
from noisyclean.manifest import Manifest
from noisyclean.sources import HASH_KEYS, Sources, file_keys

__all__ = [
    "HASH_KEYS",
    "CacheIndex",
    "FeatureCache",
    "FeatureConfig",
    "Features",
    "default_cache_dir",
    "extract_features",
    "file_keys",
    "load_image",
]

#: Called after each batch with (images done, images to do).
Progress = Callable[[int, int], None]
#: Finished features are written to the cache at least this often (seconds)...
FLUSH_SECONDS = 5.0
#: ...and whenever this many are waiting.
CHUNK_ROWS = 2048


def default_cache_dir() -> Path:
    """``$NOISYCLEAN_CACHE``, else ``noisyclean/`` in the user's cache folder."""
    if os.environ.get("NOISYCLEAN_CACHE"):
        return Path(os.environ["NOISYCLEAN_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "noisyclean"


class _Images(Dataset[tuple[torch.Tensor, str]]):
    """Preprocessed images; a failed one is zeros and its reason ("" when it's fine)."""

    def __init__(
        self,
        sources: Sources,
        rows: np.ndarray,
        transform: Callable[[Image.Image], torch.Tensor],
        size: int,
    ):
        self.sources = sources
        self.rows = rows
        self.transform = transform
        self.size = size

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        try:
            # A file is read, an object downloaded (once: cached rows never get here),
            # embedded bytes taken as they are (one row's at a time); all decoded by
            # load_image.
            source = self.sources[int(self.rows[i])]
            if source is None:
                return torch.zeros(3, self.size, self.size), "no image"
            return self.transform(load_image(source, self.size)), ""
        except Exception as err:  # UnreadableImageError, or the odd image preprocessing rejects
            return torch.zeros(3, self.size, self.size), error_reason(err)


@dataclass(frozen=True)
class CacheIndex:
    """The keys of every complete shard of a cache folder, sorted for lookups.

    A position numbers the rows of all shards together, in the order of ``shards``.

    Attributes:
        shards: each shard's features file.
        offsets: shape (S + 1,), int64: shard ``s`` holds positions ``offsets[s]`` to
            ``offsets[s + 1] - 1``.
        dim: the feature length; 0 when the cache is empty.
        sorted_keys: shape (M,), every key as 16 raw bytes (``V16``), sorted.
        order: shape (M,), int64: the position of each of ``sorted_keys``.
    """

    shards: list[Path]
    offsets: np.ndarray
    dim: int
    sorted_keys: np.ndarray
    order: np.ndarray

    def find(self, keys: np.ndarray) -> np.ndarray:
        """Where each key is cached: a binary search of the sorted keys, no per-key Python.

        Args:
            keys: shape (N, 2), uint64.

        Returns:
            Shape (N,), int64: a position holding that key (any one, when several do),
            or -1 when none does.
        """
        where = np.full(len(keys), -1, dtype=np.int64)
        if not len(self.sorted_keys) or not len(keys):
            return where
        query = _as_v16(keys)
        at = np.minimum(np.searchsorted(self.sorted_keys, query), len(self.sorted_keys) - 1)
        hit = self.sorted_keys[at] == query
        where[hit] = self.order[at[hit]]
        return where

    def gather(self, where: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Copy the cached rows into ``out``, one shard's memory map at a time.

        Args:
            where: shape (N,), from ``find``; -1 rows are left alone.
            out: shape (N, dim), float32, written in place.

        Returns:
            Shape (N,), bool: the rows copied; false where ``where`` is -1, and for the
            rows of a shard that can no longer be read (removed since the index was made).
        """
        rows = np.flatnonzero(where >= 0)
        pos = where[rows]
        by_pos = np.argsort(pos, kind="stable")  # each shard's rows in file order
        rows, pos = rows[by_pos], pos[by_pos]
        shard = np.searchsorted(self.offsets, pos, side="right") - 1
        bounds = np.searchsorted(shard, np.arange(len(self.shards) + 1))
        done = np.zeros(len(where), dtype=bool)
        for s in np.flatnonzero(np.diff(bounds)):
            a, b = bounds[s], bounds[s + 1]
            try:
                out[rows[a:b]] = _read_rows(self.shards[s], pos[a:b] - self.offsets[s])
            except (OSError, ValueError):
                continue
            done[rows[a:b]] = True
        return done


def _read_rows(path: Path, rows: np.ndarray) -> np.ndarray:
    """Rows of a shard's features file, read through a memory map that is closed after."""
    return np.asarray(np.load(path, mmap_mode="r")[rows])


def _npy_shape(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a ``.npy`` file; ValueError when the file is shorter than that."""
    features = np.load(path, mmap_mode="r")  # maps the whole array: checks its length
    return features.shape, features.dtype


def _as_v16(keys: np.ndarray) -> np.ndarray:
    """Shape (N, 2) uint64 keys as shape (N,) 16-byte values, which numpy sorts and compares."""
    return np.ascontiguousarray(keys, dtype=np.uint64).view("V16").reshape(-1)


class FeatureCache:
    """Append-only store of file key -> feature vector, for images that were usable.

    One folder per backbone, image size and precision; the backbone's name fixes its
    weights and normalisation, so these together fix the preprocessing and the numbers.
    Features computed under autocast (``precision`` bfloat16 or float16, on a GPU) are
    kept apart from float32 ones. Each ``add`` writes one shard; the module's docstring
    describes the layout.
    """

    def __init__(self, root: Path, backbone: str, image_size: int, precision: str = "float32"):
        self.spec: dict[str, str | int] = {"backbone": backbone, "image_size": image_size}
        if precision != "float32":  # float32 folders keep the name they had before
            self.spec["precision"] = precision
        digest = hashlib.sha1(json.dumps(self.spec, sort_keys=True).encode()).hexdigest()[:16]
        self.dir = Path(root) / digest

    def index(self) -> CacheIndex:
        """The keys of every complete shard, read now (the features stay on disk).

        A shard is skipped when its keys file is absent or cut short, or its features
        file is absent, cut short or holds another number of rows. Shards of another
        feature length than the one most rows have (which a sound cache never holds) are
        skipped too.
        """
        found: list[tuple[Path, np.ndarray, int]] = []  # features file, keys, length
        for keys_file in sorted(self.dir.glob("shard-*.keys.npy")):
            features_file = keys_file.with_name(
                keys_file.name.removesuffix(".keys.npy") + ".features.npy"
            )
            try:
                keys = np.load(keys_file)
                shape, dtype = _npy_shape(features_file)
            except (OSError, ValueError, EOFError):
                continue
            if (
                keys.dtype == np.uint64
                and keys.shape[1:] == (2,)
                and dtype == np.float32
                and len(shape) == 2
                and shape[0] == len(keys)
            ):
                found.append((features_file, keys, shape[1]))
        rows_of: dict[int, int] = {}
        for _, keys, length in found:
            rows_of[length] = rows_of.get(length, 0) + len(keys)
        dim = max(rows_of, key=lambda length: (rows_of[length], length), default=0)
        shards = [f for f, _, length in found if length == dim]
        parts = [keys for _, keys, length in found if length == dim]
        counts = [len(k) for k in parts]
        offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64)
        flat = _as_v16(np.concatenate(parts)) if parts else np.zeros(0, dtype="V16")
        order = np.argsort(flat, kind="stable").astype(np.int64)
        return CacheIndex(
            shards=shards, offsets=offsets, dim=dim, sorted_keys=flat[order], order=order
        )

    def load(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The cached features of ``keys``.

        Args:
            keys: shape (N, 2), uint64, from ``file_keys``.

        Returns:
            values: shape (N, D), float32; rows not in the cache are zeros (D is 0 when
                the cache is empty).
            found: shape (N,), bool: the rows that were in the cache.
        """
        index = self.index()
        values = np.zeros((len(keys), index.dim), dtype=np.float32)
        return values, index.gather(index.find(keys), values)

    def add(self, keys: np.ndarray, features: np.ndarray) -> None:
        """Store one feature vector (a row of ``features``) per key (a row of ``keys``).

        Writes one shard: its features file, then its keys file, each atomically.

        Args:
            keys: shape (n, 2), uint64, from ``file_keys``.
            features: shape (n, D).
        """
        keys = np.ascontiguousarray(keys, dtype=np.uint64)
        features = np.ascontiguousarray(features, dtype=np.float32)
        if keys.ndim != 2 or keys.shape[1] != 2 or features.ndim != 2:
            raise ValueError(f"keys {keys.shape} and features {features.shape}: bad shapes")
        if len(keys) != len(features):
            raise ValueError(f"{len(keys)} keys for {len(features)} feature rows")
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "spec.json"
        if not meta.exists():
            meta.write_text(json.dumps(self.spec, indent=1))
        name = f"shard-{uuid.uuid4().hex}"
        _save_atomically(self.dir / f"{name}.features.npy", features)
        _save_atomically(self.dir / f"{name}.keys.npy", keys)  # last: the shard now counts


def _save_atomically(path: Path, array: np.ndarray) -> None:
    """``np.save`` to a temporary file, flushed to disk, then renamed to ``path``."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        np.save(fh, array, allow_pickle=False)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@dataclass(frozen=True)
class Features:
    """Features of every manifest row.

    Attributes:
        values: shape (N, D), float32; rows that aren't usable are zeros.
        status: shape (N,), ``ok``, ``missing`` or ``unreadable``.
        computed: how many images were computed now (tried now, usable or not) rather
            than read from the cache.
        image_size: the input side the backbone was run at.
        reasons: row position -> why that row is ``unreadable`` (e.g. ``permission
            denied``, ``truncated or corrupt image``); one entry per unreadable row.
    """

    values: np.ndarray
    status: np.ndarray
    computed: int
    image_size: int
    reasons: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FeatureConfig:
    """How features are computed and where they are cached.

    Attributes:
        backbone: a backbone name (see ``noisyclean.backbones``).
        image_size: input side in pixels; None means the backbone's native size.
        cache_dir: the feature cache; None means ``default_cache_dir()``.
        device: ``auto``, ``cpu`` or ``cuda``.
        batch_size: images per forward pass.
        workers: DataLoader worker processes decoding images.
    """

    backbone: str = DEFAULT_BACKBONE
    image_size: int | None = None
    cache_dir: Path | None = None
    device: str = "auto"
    batch_size: int = 64
    workers: int = 2

    @property
    def resolved_cache_dir(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else default_cache_dir()


def extract_features(
    manifest: Manifest,
    config: FeatureConfig,
    *,
    progress: Progress | None = None,
) -> Features:
    """Compute, or read from the cache, one feature vector per manifest row.

    Rows whose status is ``missing`` keep it. Rows whose image can't be read or decoded
    get ``unreadable`` and a reason in ``Features.reasons`` (the manifest's own
    ``unreadable`` rows are looked at again, for their reason). Both get zero features.
    The backbone is only loaded when some image is not in the cache. Finished features
    are cached as they come (see the module's docstring), so an interrupted call loses
    little. Cached rows are copied from the cache's files straight into the result.

    Raises:
        KeyboardInterrupt: after the features finished so far were written to the cache.
    """
    backbone = config.backbone
    size = config.image_size or native_image_size(backbone)
    sources = manifest.sources
    n_rows = len(sources)
    status = manifest.frame["status"].to_numpy(dtype=object).copy()
    reasons: dict[int, str] = {}
    # The manifest's "unreadable" (a path it may not stat) is looked at again here, for
    # its reason, or because it has been fixed since.
    looked = np.flatnonzero(np.isin(status, ["ok", "unreadable"]))
    status[looked] = "ok"
    looked_keys, errors = sources.keys(looked)
    for j, err in errors.items():
        i = int(looked[j])
        if isinstance(err, FileNotFoundError | NotADirectoryError):  # removed since
            status[i] = "missing"
        else:  # e.g. a folder the user may not enter
            status[i] = "unreadable"
            reasons[i] = error_reason(err)
    keyed = np.ones(len(looked), dtype=bool)
    keyed[list(errors)] = False
    rows = looked[keyed]  # the rows with a file key
    keys = np.zeros((n_rows, 2), dtype=np.uint64)
    keys[rows] = looked_keys[keyed]

    precision = default_precision(config.device)
    cache = FeatureCache(config.resolved_cache_dir, backbone, size, precision)
    index = cache.index()
    where = np.full(n_rows, -1, dtype=np.int64)
    where[rows] = index.find(keys[rows])
    values = np.zeros((n_rows, index.dim), dtype=np.float32)
    got = index.gather(where, values)  # rows that hold their features
    todo = rows[~got[rows]]
    if len(todo):
        model = load_backbone(backbone, image_size=size, device=config.device, precision=precision)
        batches = _batches(model, sources, todo, config.batch_size, config.workers)
        flush_seconds = float(os.environ.get("NOISYCLEAN_FLUSH_SECONDS", FLUSH_SECONDS))
        after_batch = _testing_hook()
        pending: list[np.ndarray] = []  # rows computed but not cached yet
        last_flush = time.monotonic()

        def flush() -> None:
            nonlocal last_flush
            if pending:
                done_rows = np.concatenate(pending)
                cache.add(keys[done_rows], values[done_rows])
                pending.clear()
            last_flush = time.monotonic()

        done = 0
        try:
            for n, (feats, why) in enumerate(batches, start=1):
                if not values.shape[1]:  # nothing was in the cache: the length is known now
                    values = np.zeros((n_rows, feats.shape[1]), dtype=np.float32)
                batch = todo[done : done + len(why)]
                usable = np.array([not reason for reason in why], dtype=bool)
                reasons.update((int(i), r) for i, r in zip(batch, why, strict=True) if r)
                values[batch[usable]] = feats[usable]
                got[batch[usable]] = True
                if usable.any():
                    pending.append(batch[usable])
                done += len(why)
                if progress:
                    progress(done, len(todo))
                waiting = sum(len(p) for p in pending)
                if time.monotonic() - last_flush >= flush_seconds or waiting >= CHUNK_ROWS:
                    flush()
                after_batch(n)
        finally:  # Ctrl-C or an error: what is finished is kept
            flush()
    elif progress:
        progress(len(rows), len(rows))

    status[rows[~got[rows]]] = "unreadable"
    return Features(
        values=values,
        status=status.astype(str),
        computed=len(todo),
        image_size=size,
        reasons=dict(sorted(reasons.items())),
    )


def _testing_hook() -> Callable[[int], None]:
    """What runs after each batch: the module docstring's STOP and KILL testing hooks."""
    stop = int(os.environ.get("NOISYCLEAN_STOP_AFTER_BATCHES") or 0)
    kill = int(os.environ.get("NOISYCLEAN_KILL_AFTER_BATCHES") or 0)

    def after_batch(n: int) -> None:
        if kill and n >= kill:
            os.kill(os.getpid(), signal.SIGKILL)
        if stop and n >= stop:
            raise KeyboardInterrupt

    return after_batch


def _batches(
    backbone: Backbone, sources: Sources, rows: np.ndarray, batch_size: int, workers: int
) -> Iterator[tuple[np.ndarray, list[str]]]:
    """Features of the images of ``rows`` in order, one batch at a time: (features,
    reasons), where a reason is "" for a usable image."""
    dataset = _Images(sources, rows, backbone.preprocess(), backbone.spec.image_size)
    device = next(backbone.model.parameters()).device
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    for images, reasons in loader:
        feats = backbone(images.to(device, non_blocking=True)).cpu().numpy()
        yield feats, list(reasons)
