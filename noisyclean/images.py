"""Opening and decoding images: the one place a file becomes an 8-bit RGB picture.

Every image the package looks at (features, review thumbnails) goes through
``load_image``, wherever its bytes are (a file, an object in a store, bytes embedded in
a manifest: ``noisyclean.sources`` knows which). It

- honours the EXIF orientation tag, as a photo viewer does;
- decodes a large image at reduced size when the caller says how many pixels it needs
  (JPEG: DCT scaling via ``draft`` before decoding; other formats: ``Image.reduce``
  right after), always keeping at least twice the needed side, so the picture the
  caller resizes from is as good as the full one while memory per image stays
  bounded. An image whose shorter side is under four times the needed side decodes
  exactly as a plain ``Image.open(...).load()`` would;
- refuses an image over ``MAX_PIXELS`` (and whatever Pillow's own decompression-bomb
  check refuses) before decoding it;
- raises ``UnreadableImageError`` with a short reason for anything it can't read.

Nothing here changes Pillow's global settings (``Image.MAX_IMAGE_PIXELS``,
``ImageFile.LOAD_TRUNCATED_IMAGES``): a program that imports the package keeps its own.
A truncated file is refused because Pillow's default refuses it. This module imports
Pillow, numpy and ``noisyclean.sources`` only (no torch; fsspec only when a URL is
read), so it is cheap to use anywhere.
"""

from __future__ import annotations

import io
import os
import threading
import warnings
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, UnidentifiedImageError

from noisyclean.errors import NoisyCleanError
from noisyclean.sources import URL, Blob, ImageSource, SourceError, is_url, read_source

#: The hard limit on an image's pixel count: Pillow's own decompression-bomb limit at its
#: default setting (twice its default ``MAX_IMAGE_PIXELS``, about 179 megapixels: a
#: 100-megapixel camera's photos pass). Larger images are unreadable, never decoded.
MAX_PIXELS = 2 * 89_478_485

#: Decoding at reduced size keeps at least this many times the needed side.
KEEP_FACTOR = 2

#: Modes ``Image.reduce`` averages correctly (palette and 1-bit images are converted first).
_REDUCIBLE = ("L", "LA", "RGB", "RGBA", "CMYK", "YCbCr", "I", "F")

#: EXIF orientation -> the transpose that shows the picture upright (as ImageOps does).
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_EXIF_ORIENTATION_TAG = 0x0112

# Pillow warns (DecompressionBombWarning) on images between its MAX_IMAGE_PIXELS and twice
# that, which MAX_PIXELS accepts. The warning is silenced around ``Image.open`` only, and
# ``warnings.catch_warnings`` is not thread-safe, so opening is serialised (it only parses
# the header; decoding runs in parallel).
_OPEN_LOCK = threading.Lock()


class UnreadableImageError(Exception):
    """An image that can't be opened or decoded.

    Attributes:
        path: the file (for an object in a store, its redacted URL; for embedded
            bytes, the row's name).
        reason: a few words on why, e.g. ``permission denied``.
    """

    def __init__(self, path: Path | str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def error_reason(err: BaseException) -> str:
    """A few words on why a file could not be read or decoded."""
    if isinstance(err, UnreadableImageError | SourceError):
        return err.reason
    if isinstance(err, FileNotFoundError) and is_url(err.filename):
        return "no such object"
    if isinstance(err, PermissionError):
        return "permission denied"
    if isinstance(err, FileNotFoundError):
        return "no such file"
    if isinstance(err, IsADirectoryError):
        return "is a directory"
    if isinstance(err, Image.DecompressionBombError):
        limit = 2 * (Image.MAX_IMAGE_PIXELS or MAX_PIXELS // 2)
        return f"larger than {limit / 1e6:.3g} megapixels (Pillow's decompression-bomb limit)"
    if isinstance(err, UnidentifiedImageError):
        return "not an image Pillow can read"
    if isinstance(err, OSError) and err.errno is not None:
        return f"read error: {err.strerror or os.strerror(err.errno)}"
    if isinstance(err, MemoryError):
        return "out of memory while decoding"
    return "truncated or corrupt image"


def to_rgb(img: Image.Image) -> Image.Image:
    """Greyscale, palette, RGBA, CMYK and 16-bit images become 8-bit RGB.

    Transparency is composited on white; 16-bit and float images are stretched from
    their own minimum and maximum to 0–255.
    """
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


def _reduction(size: tuple[int, int], side: int | None) -> int:
    """The integer factor an image of ``size`` can shrink by, keeping both sides at least
    ``KEEP_FACTOR * side``; 1 when it can't halve."""
    if not side:
        return 1
    factor = min(size) // (KEEP_FACTOR * side)
    return factor if factor >= 2 else 1


def _reduce(img: Image.Image, factor: int) -> Image.Image:
    if img.mode.startswith("I;16"):
        img = img.convert("I")
    if img.mode not in _REDUCIBLE:
        img = to_rgb(img)
    return img.reduce(factor)


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(_EXIF_ORIENTATION_TAG, 1))
    except Exception:  # a damaged EXIF block does not make the picture unreadable
        return 1


def load_image(source: ImageSource | str, side: int | None = None) -> Image.Image:
    """Decode an image fully (so truncation is caught here), upright and in 8-bit RGB.

    Args:
        source: where the bytes are (see ``noisyclean.sources``): a local file (a
            ``Path`` or a path string), a ``URL`` (or a URL string), read through fsspec
            with retries, or a ``Blob`` of bytes embedded in a manifest. All three are
            decoded the same way.
        side: the side, in pixels, the caller will resize the image to; an image whose
            shorter side is at least ``2 * KEEP_FACTOR * side`` is decoded at reduced
            size, keeping at least ``KEEP_FACTOR * side`` pixels on both sides. None
            decodes at full size.

    Raises:
        UnreadableImageError: the file or object can't be read (after retries, for an
            object), isn't an image Pillow can decode, is truncated or corrupt, or has
            more than ``MAX_PIXELS`` pixels. Its ``path`` is a URL's redacted text.
    """
    if isinstance(source, str) and not isinstance(source, URL) and is_url(source):
        source = URL(source)
    if isinstance(source, URL | Blob):
        name = str(source)
        try:
            data = read_source(source)
        except NoisyCleanError as err:  # a back end that isn't installed
            raise UnreadableImageError(name, str(err)) from None
        except OSError as err:
            raise UnreadableImageError(name, error_reason(err)) from None
        if not data:
            raise UnreadableImageError(name, "empty file")
        try:
            return _decode(io.BytesIO(data), name, side)
        except UnreadableImageError:
            raise
        except Exception as err:
            raise UnreadableImageError(name, error_reason(err)) from err
    path = Path(source)
    try:
        with open(path, "rb") as fh:
            if os.fstat(fh.fileno()).st_size == 0:
                raise UnreadableImageError(path, "empty file")
            return _decode(fh, path, side)
    except UnreadableImageError:
        raise
    except Exception as err:
        raise UnreadableImageError(path, error_reason(err)) from err


def _decode(fh: IO[bytes], name: Path | str, side: int | None) -> Image.Image:
    """``load_image``'s decoding, from an open binary file (a local one or bytes)."""
    with _OPEN_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        opened = Image.open(fh)
    with opened as img:
        w, h = img.size
        if w * h > MAX_PIXELS:
            raise UnreadableImageError(
                name, f"larger than {MAX_PIXELS / 1e6:.3g} megapixels ({w}x{h})"
            )
        if side and _reduction(img.size, side) > 1:
            # JPEG only (a no-op elsewhere): decode at 1/2, 1/4 or 1/8 scale.
            img.draft(None, (KEEP_FACTOR * side, KEEP_FACTOR * side))
        img.load()
        orientation = _orientation(img)
        out: Image.Image = img
        factor = _reduction(img.size, side)
        if factor > 1:
            out = _reduce(img, factor)
        if orientation in _ORIENTATION:
            out = out.transpose(_ORIENTATION[orientation])
        return to_rgb(out)
