"""Frozen backbone features for every manifest row, cached on disk.

The cache key of one image is the backbone, its preprocessing (image size, mean, std),
the resolved path, the file's byte size and its mtime. Features are appended to the
cache in chunks as they are computed, so a rerun, or a run after Ctrl-C, computes
only what is missing. The cache's layout is this module's own business.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile
from torch.utils.data import DataLoader, Dataset

from noisyclean.backbones import DEFAULT_BACKBONE, Backbone, load_backbone, native_image_size
from noisyclean.manifest import Manifest

# A truncated file is "unreadable", never silently padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False
Image.MAX_IMAGE_PIXELS = 200_000_000

#: Called after each batch with (images done, images to do).
Progress = Callable[[int, int], None]
CHUNK_ROWS = 2048


def default_cache_dir() -> Path:
    """``$NOISYCLEAN_CACHE``, else ``noisyclean/`` in the user's cache folder."""
    if os.environ.get("NOISYCLEAN_CACHE"):
        return Path(os.environ["NOISYCLEAN_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "noisyclean"


def to_rgb(img: Image.Image) -> Image.Image:
    """Greyscale, palette, RGBA, CMYK and 16-bit images become 8-bit RGB."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
        img = Image.fromarray(a.astype(np.uint8), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, img.convert("RGBA")).convert("RGB")
    return img.convert("RGB")


def load_image(path: Path) -> Image.Image:
    """Decode an image fully (so truncation is caught here) and convert it to RGB."""
    with Image.open(path) as img:
        img.load()
        return to_rgb(img)


class _Images(Dataset[tuple[torch.Tensor, bool]]):
    def __init__(
        self, paths: Sequence[Path], transform: Callable[[Image.Image], torch.Tensor], size: int
    ):
        self.paths = paths
        self.transform = transform
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, bool]:
        try:
            return self.transform(load_image(self.paths[i])), True
        except Exception:
            return torch.zeros(3, self.size, self.size), False


def file_key(path: Path) -> str:
    st = path.stat()
    return hashlib.sha1(f"{path}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()


class FeatureCache:
    """Append-only store of (file key -> feature vector, or None for 'unreadable').

    One folder per backbone and image size; the backbone's name fixes its weights and
    normalisation, so the two together fix the preprocessing.
    """

    def __init__(self, root: Path, backbone: str, image_size: int):
        self.spec = {"backbone": backbone, "image_size": image_size}
        digest = hashlib.sha1(json.dumps(self.spec, sort_keys=True).encode()).hexdigest()[:16]
        self.dir = Path(root) / digest

    def load(self, keys: set[str]) -> dict[str, np.ndarray | None]:
        found: dict[str, np.ndarray | None] = {}
        if not self.dir.exists():
            return found
        for chunk in sorted(self.dir.glob("chunk-*.npz")):
            try:
                with np.load(chunk) as z:
                    ck, feats, ok = z["keys"], z["features"], z["ok"]
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
                continue  # a chunk cut short by a crash is recomputed, not trusted
            for j, k in enumerate(ck.tolist()):
                if k in keys:
                    found[k] = feats[j] if ok[j] else None
        return found

    def add(self, keys: Sequence[str], features: np.ndarray, ok: np.ndarray) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "spec.json"
        if not meta.exists():
            meta.write_text(json.dumps(self.spec, indent=1))
        final = self.dir / f"chunk-{uuid.uuid4().hex}.npz"
        tmp = final.with_suffix(".tmp.npz")
        np.savez(tmp, keys=np.asarray(keys), features=features.astype(np.float32), ok=ok)
        os.replace(tmp, final)


@dataclass(frozen=True)
class Features:
    """Features of every manifest row.

    Attributes:
        values: shape (N, D), float32; rows that aren't usable are zeros.
        status: shape (N,), ``ok``, ``missing`` or ``unreadable``.
        computed: how many images were computed now rather than read from the cache.
        image_size: the input side the backbone was run at.
    """

    values: np.ndarray
    status: np.ndarray
    computed: int
    image_size: int


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

    Rows whose status is ``missing`` keep it; rows whose image can't be decoded get
    ``unreadable``. Both get zero features. The backbone is only loaded when some
    image is not in the cache.
    """
    backbone = config.backbone
    size = config.image_size or native_image_size(backbone)
    paths = manifest.resolved_paths
    status = manifest.frame["status"].to_numpy(dtype=object).copy()
    keys: dict[int, str] = {}
    for i in range(len(paths)):
        if status[i] == "ok":
            try:
                keys[i] = file_key(paths[i])
            except OSError:  # removed since the manifest was read
                status[i] = "missing"
    todo_rows = list(keys)

    cache = FeatureCache(config.resolved_cache_dir, backbone, size)
    cached = cache.load(set(keys.values()))
    missing = [i for i in todo_rows if keys[i] not in cached]
    if missing:
        model = load_backbone(backbone, image_size=size, device=config.device)
        new = _compute(
            model, [paths[i] for i in missing], config.batch_size, config.workers, progress
        )
        for start in range(0, len(missing), CHUNK_ROWS):
            rows = missing[start : start + CHUNK_ROWS]
            feats, ok = new(len(rows))
            cache.add([keys[i] for i in rows], feats, ok)
            cached.update(
                {keys[i]: (f if o else None) for i, f, o in zip(rows, feats, ok, strict=True)}
            )
    elif progress:
        progress(len(todo_rows), len(todo_rows))

    dim = next((v.shape[0] for v in cached.values() if v is not None), 0)
    values = np.zeros((len(paths), dim), dtype=np.float32)
    for i in todo_rows:
        v = cached[keys[i]]
        if v is None:
            status[i] = "unreadable"
        else:
            values[i] = v
    return Features(
        values=values, status=status.astype(str), computed=len(missing), image_size=size
    )


def _compute(
    backbone: Backbone,
    paths: Sequence[Path],
    batch_size: int,
    workers: int,
    progress: Progress | None,
) -> Callable[[int], tuple[np.ndarray, np.ndarray]]:
    """A pull-based stream: each call returns the next n rows' (features, ok)."""
    dataset = _Images(paths, backbone.preprocess(), backbone.spec.image_size)
    device = next(backbone.model.parameters()).device
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    batches = iter(loader)
    buf_f: list[np.ndarray] = []
    buf_ok: list[np.ndarray] = []
    done = 0

    def take(n: int) -> tuple[np.ndarray, np.ndarray]:
        nonlocal done
        while sum(len(b) for b in buf_ok) < n:
            images, ok = next(batches)
            feats = backbone(images.to(device, non_blocking=True)).cpu().numpy()
            buf_f.append(feats)
            buf_ok.append(ok.numpy().astype(bool))
            done += len(ok)
            if progress:
                progress(done, len(paths))
        f, o = np.concatenate(buf_f), np.concatenate(buf_ok)
        buf_f[:], buf_ok[:] = [f[n:]], [o[n:]]
        return f[:n], o[:n]

    return take
