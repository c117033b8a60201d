"""noisyclean.images: the one place images are opened, decoded and converted to RGB."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import EXAMPLE_DIR
from PIL import Image

import noisyclean.images as images
from noisyclean.images import MAX_PIXELS, UnreadableImageError, load_image, to_rgb

FASHION = EXAMPLE_DIR / "images"


def _fashion(n: int = 0) -> Image.Image:
    """A real 28-px Fashion-MNIST image from the committed example."""
    return Image.open(sorted(FASHION.rglob("*.png"))[n]).convert("L")


def _photo(size: tuple[int, int]) -> Image.Image:
    """A smooth RGB picture, as a photo is at large sizes: a real image scaled up, tinted."""
    grey = _fashion().resize(size, Image.Resampling.BICUBIC)
    return Image.merge("RGB", (grey, grey.point(lambda v: v // 2), grey.point(lambda v: 255 - v)))


def _thumbnail(uri: str | None) -> Image.Image:
    assert uri is not None
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB")


def _reason(path: Path) -> str:
    with pytest.raises(UnreadableImageError) as info:
        load_image(path)
    return info.value.reason


# --- 1. RGB conversion exists once --------------------------------------------------------


def test_rgb_conversion_lives_only_in_images() -> None:
    import noisyclean.features as features
    import noisyclean.review as review

    assert not hasattr(review, "_flatten")
    assert not hasattr(features, "to_rgb")
    assert features.load_image is load_image


def test_features_and_thumbnails_convert_through_the_same_to_rgb(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from noisyclean.features import load_image as features_load
    from noisyclean.review import encode_thumbnail

    calls: list[str] = []

    def spy(img: Image.Image) -> Image.Image:
        calls.append(img.mode)
        return to_rgb(img)

    monkeypatch.setattr(images, "to_rgb", spy)
    Image.new("LA", (8, 8), (50, 128)).save(tmp_path / "a.png")
    features_load(tmp_path / "a.png")
    assert encode_thumbnail(tmp_path / "a.png", 8) is not None
    assert calls == ["LA", "LA"]


def test_sixteen_bit_thumbnail_is_stretched_like_the_features(tmp_path: Path) -> None:
    from noisyclean.review import encode_thumbnail

    a = np.full((32, 64), 1000, dtype=np.uint16)
    a[:, 32:] = 60000
    Image.fromarray(a).save(tmp_path / "deep.png")
    want = np.asarray(load_image(tmp_path / "deep.png"))
    assert want[0, 0, 0] == 0 and want[0, -1, 0] == 255
    thumb = np.asarray(_thumbnail(encode_thumbnail(tmp_path / "deep.png", 64))).astype(int)
    assert thumb.shape == (32, 64, 3)
    assert thumb[16, 4].max() < 30 and thumb[16, 60].min() > 225  # dark left, white right


# --- 2. no global side effects ------------------------------------------------------------


@pytest.mark.timeout(120)
def test_importing_the_package_leaves_pillow_settings_alone(tmp_path: Path) -> None:
    Image.new("RGB", (4, 4)).save(tmp_path / "x.png")
    code = (
        "from PIL import Image, ImageFile\n"
        "before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)\n"
        "import noisyclean.features, noisyclean.images, noisyclean.cli\n"
        "from noisyclean.images import load_image\n"
        f"load_image({str(tmp_path / 'x.png')!r}, 2)\n"
        "after = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)\n"
        "assert before == after == (89_478_485, False), (before, after)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_pillow_settings_of_the_program_are_not_changed_by_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    Image.new("RGB", (40, 40)).save(tmp_path / "warns.png")  # 1,600 px: Pillow warns
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning reaches the program
        assert load_image(tmp_path / "warns.png").size == (40, 40)
    assert Image.MAX_IMAGE_PIXELS == 1000
    assert not [f for f in warnings.filters if f[2] is Image.DecompressionBombWarning]


# --- 3. large images decode at reduced size; small ones exactly as before ------------------


def test_large_jpeg_is_decoded_at_reduced_scale(tmp_path: Path) -> None:
    _photo((2000, 1600)).save(tmp_path / "big.jpg", quality=95)
    img = load_image(tmp_path / "big.jpg", 64)
    assert img.mode == "RGB"
    assert img.size == (250, 200)  # DCT scaling 1/8, both sides >= 2 x 64
    full = to_rgb(Image.open(tmp_path / "big.jpg")).resize((64, 64), Image.Resampling.BICUBIC)
    small = img.resize((64, 64), Image.Resampling.BICUBIC)
    diff = np.abs(np.asarray(full, dtype=int) - np.asarray(small, dtype=int))
    assert diff.mean() < 2 and diff.max() < 40


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P", "I;16"])
def test_large_png_is_reduced_right_after_decoding(tmp_path: Path, mode: str) -> None:
    big = _photo((1000, 600))
    src = (
        Image.fromarray(np.asarray(big.convert("L")).astype(np.uint16) * 257)
        if mode == "I;16"
        else big.convert(mode)
    )
    src.save(tmp_path / "big.png")
    img = load_image(tmp_path / "big.png", 64)
    assert img.mode == "RGB" and img.size == (250, 150)  # reduced 4x: both sides >= 128
    full = to_rgb(Image.open(tmp_path / "big.png")).reduce(4)
    diff = np.abs(np.asarray(full, dtype=int) - np.asarray(img, dtype=int))
    assert diff.mean() < 2


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_images_up_to_four_times_the_side_decode_exactly_as_before(
    tmp_path: Path, suffix: str
) -> None:
    for side in (28, 64, 255):
        path = tmp_path / f"s{side}{suffix}"
        _photo((side, side + 1)).save(path)
        with Image.open(path) as plain:
            plain.load()
            want = np.asarray(to_rgb(plain))
        for target in (None, 64, 224):
            np.testing.assert_array_equal(np.asarray(load_image(path, target)), want)


def test_committed_example_decodes_bit_for_bit(tmp_path: Path) -> None:
    for path in sorted(FASHION.rglob("*.png"))[:20]:
        with Image.open(path) as plain:
            plain.load()
            want = np.asarray(plain.convert("RGB"))
        for target in (None, 32, 64, 224):
            np.testing.assert_array_equal(np.asarray(load_image(path, target)), want)


def test_image_over_the_pixel_limit_is_unreadable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert MAX_PIXELS == 178_956_970  # Pillow's decompression-bomb error limit by default
    monkeypatch.setattr(images, "MAX_PIXELS", 5000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # a program that turned Pillow's off
    Image.new("RGB", (100, 60)).save(tmp_path / "big.png")
    assert _reason(tmp_path / "big.png") == "larger than 0.005 megapixels (100x60)"


def test_image_over_pillows_bomb_limit_is_unreadable(tmp_path: Path) -> None:
    # A PNG whose header claims 20,000 x 20,000 pixels: refused before any pixel is decoded.
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 20_000, 20_000, 8, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0"))
    (tmp_path / "bomb.png").write_bytes(data + chunk(b"IEND", b""))
    assert _reason(tmp_path / "bomb.png").startswith("larger than 179 megapixels")


# --- 4. EXIF orientation --------------------------------------------------------------------


def _oriented_jpeg(path: Path, orientation: int) -> Image.Image:
    """A 64 x 32 JPEG tagged with an EXIF orientation; returns the stored pixels."""
    img = _photo((64, 32))
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(path, quality=95, exif=exif.tobytes())
    with Image.open(path) as stored:
        return stored.convert("RGB")


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    stored = _oriented_jpeg(tmp_path / "o6.jpg", 6)
    out = load_image(tmp_path / "o6.jpg", 16)
    assert out.size == (32, 64)
    upright = stored.transpose(Image.Transpose.ROTATE_270)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(upright))


def test_exif_orientation_is_applied_after_reducing(tmp_path: Path) -> None:
    img = _photo((1000, 600))
    exif = Image.Exif()
    exif[0x0112] = 8
    img.save(tmp_path / "o8.png", exif=exif.tobytes())
    out = load_image(tmp_path / "o8.png", 64)
    assert out.size == (150, 250)
    want = img.reduce(4).transpose(Image.Transpose.ROTATE_90)
    assert np.abs(np.asarray(out, dtype=int) - np.asarray(want, dtype=int)).max() <= 1


def test_thumbnail_is_upright_too(tmp_path: Path) -> None:
    from noisyclean.review import encode_thumbnail

    _oriented_jpeg(tmp_path / "o6.jpg", 6)
    assert _thumbnail(encode_thumbnail(tmp_path / "o6.jpg", 64)).size == (32, 64)


# --- 8. unreadable images come with a reason ---------------------------------------------


def test_reasons(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    _photo((40, 40)).save(good)
    data = good.read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.png").write_text("this is not an image\n")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "folder.png").mkdir()
    assert _reason(tmp_path / "truncated.png") == "truncated or corrupt image"
    assert _reason(tmp_path / "text.png") == "not an image Pillow can read"
    assert _reason(tmp_path / "empty.jpg") == "empty file"
    assert _reason(tmp_path / "gone.png") == "no such file"
    assert _reason(tmp_path / "folder.png") == "is a directory"
    err = UnreadableImageError(good, "permission denied")
    assert str(err) == f"{good}: permission denied" and err.reason == "permission denied"
    assert images.error_reason(PermissionError(13, "Permission denied")) == "permission denied"
