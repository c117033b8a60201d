"""The pixel check: copies made by cropping, resizing, re-encoding and mirroring match
their original; different pictures of one kind do not."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter, ImageOps

from noisyclean.pixel_match import SIDE, _one_way, _windows, match, thumbnail


def _picture(seed: int, size: int = 112) -> Image.Image:
    """A smooth random greyscale picture with a bright blob (a stand-in for a garment)."""
    rng = np.random.default_rng(seed)
    noise = Image.fromarray(rng.integers(0, 256, size=(size, size), dtype=np.uint8), "L")
    texture = np.asarray(noise.filter(ImageFilter.GaussianBlur(3)), dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size] / size
    blob = np.exp(-(((xx - 0.5) ** 2 + (yy - 0.5) ** 2) / 0.08))
    pixels = np.clip((texture - texture.mean()) * 4 + 200 * blob, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "L")


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("L")


def _copies(image: Image.Image) -> list[Image.Image]:
    w, h = image.size
    return [
        image.resize((w // 2, h // 2), Image.Resampling.BILINEAR),
        _jpeg(image, 60),
        image.crop((8, 2, w - 5, h - 8)),  # about 7% off two sides
        _jpeg(image.crop((0, 6, w - 8, h)).resize((150, 141)), 70),
    ]


def test_thumbnails_are_small_greyscale() -> None:
    t = thumbnail(_picture(0).convert("RGB"))
    assert t.shape == (SIDE, SIDE) and t.dtype == np.uint8


def test_copies_match_their_original_and_other_pictures_do_not() -> None:
    original = thumbnail(_picture(0))
    copies = np.stack([thumbnail(c) for c in _copies(_picture(0))])
    others = np.stack([thumbnail(_picture(s)) for s in range(1, 5)])
    same = match(np.repeat(original[None], len(copies), 0), copies)
    assert (same >= 0.95).all(), same
    # Either way round: the crop may be the first image.
    assert match(copies, np.repeat(original[None], len(copies), 0)) == pytest.approx(same)
    different = match(np.repeat(original[None], len(others), 0), others)
    assert (different < 0.5).all(), different


def test_mirror_images_match_mirrored_back_and_only_them() -> None:
    picture = _picture(0)
    original = thumbnail(picture)
    mirrored = [ImageOps.mirror(c) for c in [picture, *_copies(picture)]]
    copies = np.stack([thumbnail(c) for c in mirrored])
    originals = np.repeat(original[None], len(copies), 0)
    # The picture is no mirror image of itself: compared as it is, the copies fail.
    x, y = (torch.from_numpy(t.astype(np.float32) / 255) for t in (originals, copies))
    win = _windows()
    assert (torch.maximum(_one_way(x, y, win), _one_way(y, x, win)) < 0.5).all()
    same = match(originals, copies)
    assert (same >= 0.95).all(), same
    # Either way round (the window search may settle a hair apart when mirrored).
    assert match(copies, originals) == pytest.approx(same, abs=0.01)
    others = np.stack([thumbnail(ImageOps.mirror(_picture(s))) for s in range(1, 5)])
    different = match(np.repeat(original[None], len(others), 0), others)
    assert (different < 0.5).all(), different


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="48"):
        match(np.zeros((2, 32, 32)), np.zeros((2, 32, 32)))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_cuda_device_gives_the_cpu_figures() -> None:
    original = thumbnail(_picture(0))
    copies = np.stack([thumbnail(c) for c in _copies(_picture(0))] + [thumbnail(_picture(1))])
    pairs = np.repeat(original[None], len(copies), 0)
    assert match(pairs, copies, device="cuda") == pytest.approx(match(pairs, copies), abs=1e-4)
