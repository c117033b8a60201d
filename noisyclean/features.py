"""Frozen backbone features for every manifest row, cached on disk.

The cache key of one image is the backbone, its preprocessing (image size, mean, std),
the resolved path, the file's byte size and its mtime. Finished features are written to
the cache at least every ``FLUSH_SECONDS``, at the end of a run and when a run is
interrupted (Ctrl-C) or fails, so a rerun computes only what is missing, and even a
``kill -9`` loses at most the last few seconds of work. Only usable features are cached:
an image that could not be read is tried again on the next run (its permissions may have
been fixed since). Images are decoded by ``noisyclean.images``. The cache's layout is this
module's own business.

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
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from noisyclean.backbones import Backbone, load_backbone, native_image_size
from noisyclean.configs import DEFAULT_BACKBONE
from noisyclean.images import error_reason, load_image
from noisyclean.manifest import Manifest

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
        self, paths: Sequence[Path], transform: Callable[[Image.Image], torch.Tensor], size: int
    ):
        self.paths = paths
        self.transform = transform
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        try:
            return self.transform(load_image(self.paths[i], self.size)), ""
        except Exception as err:  # UnreadableImageError, or the odd image preprocessing rejects
            return torch.zeros(3, self.size, self.size), error_reason(err)


def file_key(path: Path) -> str:
    """The cache key's file part: path, byte size and mtime.

    Raises:
        OSError: from ``stat``; FileNotFoundError when the file is gone, PermissionError
            when a folder on its path may not be entered.
    """
    st = path.stat()
    return hashlib.sha1(f"{path}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()


class FeatureCache:
    """Append-only store of file key -> feature vector, for images that were usable.

    One folder per backbone and image size; the backbone's name fixes its weights and
    normalisation, so the two together fix the preprocessing. Each ``add`` writes one
    chunk file atomically (temporary file, then rename). Caches written before failures
    stopped being cached hold rows with ``ok`` false; they are ignored, so those images
    are tried again.
    """

    def __init__(self, root: Path, backbone: str, image_size: int):
        self.spec = {"backbone": backbone, "image_size": image_size}
        digest = hashlib.sha1(json.dumps(self.spec, sort_keys=True).encode()).hexdigest()[:16]
        self.dir = Path(root) / digest

    def load(self, keys: set[str]) -> dict[str, np.ndarray]:
        """The cached features of those of ``keys`` that are in the cache."""
        found: dict[str, np.ndarray] = {}
        if not self.dir.exists():
            return found
        for chunk in sorted(self.dir.glob("chunk-*.npz")):
            try:
                with np.load(chunk) as z:
                    ck, feats, ok = z["keys"], z["features"], z["ok"]
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
                continue  # a chunk cut short by a crash is recomputed, not trusted
            for j, k in enumerate(ck.tolist()):
                if ok[j] and k in keys:
                    found[k] = feats[j]
        return found

    def add(self, keys: Sequence[str], features: np.ndarray) -> None:
        """Store one feature vector (a row of ``features``) per key, as one chunk file."""
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "spec.json"
        if not meta.exists():
            meta.write_text(json.dumps(self.spec, indent=1))
        final = self.dir / f"chunk-{uuid.uuid4().hex}.npz"
        tmp = final.with_suffix(".tmp.npz")
        ok = np.ones(len(keys), dtype=bool)  # kept for caches read by older versions
        np.savez(tmp, keys=np.asarray(keys), features=features.astype(np.float32), ok=ok)
        os.replace(tmp, final)


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
    little.

    Raises:
        KeyboardInterrupt: after the features finished so far were written to the cache.
    """
    backbone = config.backbone
    size = config.image_size or native_image_size(backbone)
    paths = manifest.resolved_paths
    status = manifest.frame["status"].to_numpy(dtype=object).copy()
    reasons: dict[int, str] = {}
    keys: dict[int, str] = {}
    for i in range(len(paths)):
        # The manifest's "unreadable" (a path it may not stat) is looked at again here,
        # for its reason, or because it has been fixed since.
        if status[i] in ("ok", "unreadable"):
            status[i] = "ok"
            try:
                keys[i] = file_key(paths[i])
            except (FileNotFoundError, NotADirectoryError):  # removed since the manifest was read
                status[i] = "missing"
            except OSError as err:  # e.g. a folder the user may not enter
                status[i] = "unreadable"
                reasons[i] = error_reason(err)

    cache = FeatureCache(config.resolved_cache_dir, backbone, size)
    found = cache.load(set(keys.values()))
    todo = [i for i in keys if keys[i] not in found]
    dim = next((v.shape[0] for v in found.values()), 0)
    if todo:
        model = load_backbone(backbone, image_size=size, device=config.device)
        batches = _batches(model, [paths[i] for i in todo], config.batch_size, config.workers)
        flush_seconds = float(os.environ.get("NOISYCLEAN_FLUSH_SECONDS", FLUSH_SECONDS))
        after_batch = _testing_hook()
        pending: dict[str, np.ndarray] = {}
        last_flush = time.monotonic()

        def flush() -> None:
            nonlocal last_flush
            if pending:
                cache.add(list(pending), np.stack(list(pending.values())))
                pending.clear()
            last_flush = time.monotonic()

        done = 0
        try:
            for n, (feats, why) in enumerate(batches, start=1):
                dim = feats.shape[1]
                rows = todo[done : done + len(why)]
                for i, f, reason in zip(rows, feats, why, strict=True):
                    if reason:
                        reasons[i] = reason
                    else:
                        found[keys[i]] = pending[keys[i]] = f
                done += len(why)
                if progress:
                    progress(done, len(todo))
                if time.monotonic() - last_flush >= flush_seconds or len(pending) >= CHUNK_ROWS:
                    flush()
                after_batch(n)
        finally:  # Ctrl-C or an error: what is finished is kept
            flush()
    elif progress:
        progress(len(keys), len(keys))

    values = np.zeros((len(paths), dim), dtype=np.float32)
    for i, key in keys.items():
        if key in found:
            values[i] = found[key]
        else:
            status[i] = "unreadable"
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
    backbone: Backbone, paths: Sequence[Path], batch_size: int, workers: int
) -> Iterator[tuple[np.ndarray, list[str]]]:
    """Features of ``paths`` in order, one batch at a time: (features, reasons), where a
    reason is "" for a usable image."""
    dataset = _Images(paths, backbone.preprocess(), backbone.spec.image_size)
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
