from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import SMALL_SIZE, SmallSet, feature_config, write_csv
from PIL import Image

from noisyclean.backbones import load_backbone
from noisyclean.features import FeatureCache, Features, extract_features, load_image
from noisyclean.manifest import Manifest, load_manifest


@pytest.fixture
def images(tmp_path: Path, small_set: SmallSet) -> list[str]:
    """Ten real images (one per class) copied into this test's own folder."""
    (tmp_path / "img").mkdir()
    names = []
    seen: set[str] = set()
    for r in small_set.rows:
        if r["true_label"] in seen:
            continue
        seen.add(r["true_label"])
        name = f"img/{len(names):02d}.png"
        shutil.copyfile(small_set.root / r["path"], tmp_path / name)
        names.append(name)
    return names


def _manifest(folder: Path, paths: list[str], name: str = "m.csv") -> Manifest:
    labels = ["a", "b"] * len(paths)
    rows = [{"path": p, "label": labels[i]} for i, p in enumerate(paths)]
    return load_manifest(write_csv(folder / name, rows))


def _direct(path: Path, size: int) -> np.ndarray:
    """The backbone run on one image by hand, outside the batched, cached pipeline."""
    backbone = load_backbone("efficientnet-lite0", image_size=size)
    return backbone(backbone.preprocess()(load_image(path))[None])[0].numpy()


def _bad_files(folder: Path, good: Path) -> dict[str, str]:
    data = good.read_bytes()
    (folder / "bad").mkdir()
    (folder / "bad/corrupt.png").write_bytes(data[:16] + bytes(range(256)) * 4)
    (folder / "bad/truncated.png").write_bytes(data[: len(data) // 2])
    (folder / "bad/text.png").write_text("this is not an image\n")
    (folder / "bad/empty.jpg").write_bytes(b"")
    return {
        "corrupt": "bad/corrupt.png",
        "truncated": "bad/truncated.png",
        "text": "bad/text.png",
        "empty": "bad/empty.jpg",
    }


@pytest.mark.parametrize("workers", [0, 2])
def test_unusable_rows_are_kept_in_order_with_zero_features(
    tmp_path: Path, images: list[str], workers: int
) -> None:
    bad = _bad_files(tmp_path, tmp_path / images[0])
    paths = [
        images[0],
        bad["corrupt"],
        images[1],
        "img/gone.png",
        bad["truncated"],
        images[2],
        bad["text"],
        bad["empty"],
        images[3],
    ]
    m = _manifest(tmp_path, paths)
    assert m.frame["status"].tolist().count("missing") == 1
    feats = extract_features(m, feature_config(tmp_path / "cache", workers=workers, batch_size=4))
    want = [
        "ok",
        "unreadable",
        "ok",
        "missing",
        "unreadable",
        "ok",
        "unreadable",
        "unreadable",
        "ok",
    ]
    assert feats.status.tolist() == want
    assert feats.values.shape == (9, 1280) and feats.values.dtype == np.float32
    assert feats.computed == 8  # the missing row is never opened
    assert feats.reasons == {
        1: "not an image Pillow can read",  # its header is garbage
        4: "truncated or corrupt image",
        6: "not an image Pillow can read",
        7: "empty file",
    }
    ok = feats.status == "ok"
    assert (feats.values[~ok] == 0).all()
    assert (np.abs(feats.values[ok]).sum(axis=1) > 0).all()
    for i in np.flatnonzero(ok):
        np.testing.assert_allclose(
            feats.values[i], _direct(tmp_path / paths[i], SMALL_SIZE), rtol=1e-4, atol=1e-4
        )
    # The manifest itself is not changed; its status column still says what it saw.
    assert m.frame["status"].tolist().count("unreadable") == 0


def test_a_failed_read_is_not_cached_and_a_repaired_file_is_read(
    tmp_path: Path, images: list[str]
) -> None:
    good = (tmp_path / images[1]).read_bytes()
    damaged = tmp_path / "img/damaged.png"
    cut = good.index(b"IDAT") + 6  # the pixel data zeroed: a corrupt stream, same size
    damaged.write_bytes(good[:cut] + bytes(len(good) - cut))
    st = damaged.stat()
    m = _manifest(tmp_path, [images[0], "img/damaged.png"])
    cfg = feature_config(tmp_path / "cache")
    first = extract_features(m, cfg)
    assert first.status.tolist() == ["ok", "unreadable"] and first.computed == 2
    assert first.reasons == {1: "truncated or corrupt image"}
    again = extract_features(m, cfg)
    assert again.status.tolist() == ["ok", "unreadable"] and again.computed == 1  # retried
    # Repaired in place: same size and mtime, so the same cache key.
    damaged.write_bytes(good)
    os.utime(damaged, ns=(st.st_atime_ns, st.st_mtime_ns))
    fixed = extract_features(m, cfg)
    assert fixed.status.tolist() == ["ok", "ok"] and fixed.computed == 1
    assert fixed.reasons == {}
    np.testing.assert_allclose(
        fixed.values[1], _direct(tmp_path / images[1], SMALL_SIZE), rtol=1e-4, atol=1e-4
    )


def test_odd_image_modes_are_usable(tmp_path: Path, images: list[str]) -> None:
    src = Image.open(tmp_path / images[0])
    grey = np.asarray(src.convert("L"))
    src.convert("L").save(tmp_path / "grey.png")
    src.convert("RGBA").save(tmp_path / "rgba.png")
    src.convert("CMYK").save(tmp_path / "cmyk.jpg")
    src.convert("P").save(tmp_path / "pal.png", transparency=0)
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "deep.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "deep.tif")
    paths = ["grey.png", "rgba.png", "cmyk.jpg", "pal.png", "deep.png", "deep.tif"]
    feats = extract_features(_manifest(tmp_path, paths), feature_config(tmp_path / "cache"))
    assert feats.status.tolist() == ["ok"] * len(paths)
    # 16-bit greyscale scaled back to 8 bits is the same picture as the 8-bit greyscale.
    np.testing.assert_allclose(feats.values[4], feats.values[0], rtol=0.05, atol=0.05)


def test_second_call_reads_everything_from_the_cache(tmp_path: Path, images: list[str]) -> None:
    m = _manifest(tmp_path, images)
    cfg = feature_config(tmp_path / "cache")
    calls: list[tuple[int, int]] = []
    first = extract_features(m, cfg, progress=lambda d, t: calls.append((d, t)))
    assert first.computed == len(images)
    assert calls[-1] == (len(images), len(images))
    second = extract_features(m, cfg)
    assert second.computed == 0
    np.testing.assert_array_equal(second.values, first.values)
    assert second.image_size == first.image_size == SMALL_SIZE


def test_cache_hit_does_not_load_the_backbone(
    tmp_path: Path, images: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    m = _manifest(tmp_path, images[:3])
    cfg = feature_config(tmp_path / "cache")
    extract_features(m, cfg)

    def refuse(*args: object, **kw: object) -> None:
        raise AssertionError("backbone loaded on a full cache hit")

    monkeypatch.setattr("noisyclean.features.load_backbone", refuse)
    assert extract_features(m, cfg).computed == 0


def test_resume_computes_only_what_is_missing(tmp_path: Path, images: list[str]) -> None:
    cfg = feature_config(tmp_path / "cache")
    half = extract_features(_manifest(tmp_path, images[:4], name="half.csv"), cfg)
    assert half.computed == 4
    whole = extract_features(_manifest(tmp_path, images), cfg)
    assert whole.computed == len(images) - 4
    np.testing.assert_array_equal(whole.values[:4], half.values)
    fresh = extract_features(_manifest(tmp_path, images), feature_config(tmp_path / "fresh"))
    np.testing.assert_allclose(whole.values, fresh.values, rtol=1e-5, atol=1e-5)


def test_same_file_through_another_manifest_is_a_cache_hit(
    tmp_path: Path, images: list[str]
) -> None:
    cfg = feature_config(tmp_path / "cache")
    extract_features(_manifest(tmp_path, images[:3]), cfg)
    (tmp_path / "sub").mkdir()
    absolute = _manifest(tmp_path / "sub", [str(tmp_path / p) for p in images[:3]])
    assert extract_features(absolute, cfg).computed == 0


def test_touching_a_file_recomputes_it(tmp_path: Path, images: list[str]) -> None:
    m = _manifest(tmp_path, images[:4])
    cfg = feature_config(tmp_path / "cache")
    before = extract_features(m, cfg)
    st = (tmp_path / images[2]).stat()
    os.utime(tmp_path / images[2], ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    after = extract_features(m, cfg)
    assert after.computed == 1
    np.testing.assert_allclose(after.values, before.values, rtol=1e-5, atol=1e-5)


def test_replacing_a_file_recomputes_it(tmp_path: Path, images: list[str]) -> None:
    m = _manifest(tmp_path, images[:2])
    cfg = feature_config(tmp_path / "cache")
    before = extract_features(m, cfg)
    target = tmp_path / images[1]
    st = target.stat()
    Image.open(tmp_path / images[0]).save(target)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    after = extract_features(m, cfg)
    assert after.computed == 1
    np.testing.assert_allclose(after.values[1], before.values[0], rtol=1e-4, atol=1e-4)
    assert not np.allclose(after.values[1], before.values[1], atol=1e-3)


def test_image_size_gets_its_own_cache(tmp_path: Path, images: list[str]) -> None:
    m = _manifest(tmp_path, images[:3])
    at32 = extract_features(m, feature_config(tmp_path / "cache", image_size=32))
    at48 = extract_features(m, feature_config(tmp_path / "cache", image_size=48))
    assert at32.computed == at48.computed == 3
    assert at48.image_size == 48
    assert not np.allclose(at32.values, at48.values, atol=1e-3)
    assert extract_features(m, feature_config(tmp_path / "cache", image_size=32)).computed == 0
    assert extract_features(m, feature_config(tmp_path / "cache", image_size=48)).computed == 0
    assert len([d for d in (tmp_path / "cache").iterdir() if d.is_dir()]) == 2


@pytest.mark.parametrize("damage", ["keys cut short", "features cut short", "keys gone"])
def test_a_damaged_cache_shard_is_recomputed_not_trusted(
    tmp_path: Path, images: list[str], damage: str
) -> None:
    m = _manifest(tmp_path, images[:3])
    cfg = feature_config(tmp_path / "cache")
    before = extract_features(m, cfg)
    folder = FeatureCache(tmp_path / "cache", "efficientnet-lite0", SMALL_SIZE).dir
    (keys,) = folder.glob("shard-*.keys.npy")
    (features,) = folder.glob("shard-*.features.npy")
    if damage == "keys cut short":
        keys.write_bytes(keys.read_bytes()[:-8])
    elif damage == "features cut short":
        features.write_bytes(features.read_bytes()[:-4])
    else:  # a crash between writing the features and the keys
        keys.unlink()
    after = extract_features(m, cfg)
    assert after.computed == 3
    np.testing.assert_array_equal(after.values, before.values)
    assert extract_features(m, cfg).computed == 0  # the recomputed shard is sound


def test_file_removed_after_the_manifest_was_read_is_missing(
    tmp_path: Path, images: list[str]
) -> None:
    m = _manifest(tmp_path, images[:3])
    (tmp_path / images[1]).unlink()
    feats = extract_features(m, feature_config(tmp_path / "cache"))
    assert feats.status.tolist() == ["ok", "missing", "ok"]
    assert (feats.values[1] == 0).all()


def test_no_image_size_means_the_native_size(tmp_path: Path, images: list[str]) -> None:
    m = _manifest(tmp_path, images[:2])
    feats = extract_features(m, feature_config(tmp_path / "cache", image_size=None))
    assert feats.image_size == 224
    np.testing.assert_allclose(
        feats.values[0], _direct(tmp_path / images[0], 224), rtol=1e-4, atol=1e-4
    )


def test_session_features_are_real_and_distinct(small_features: tuple[Manifest, Features]) -> None:
    manifest, feats = small_features
    assert feats.values.shape == (len(manifest), 1280)
    assert (feats.status == "ok").all()
    norms = np.linalg.norm(feats.values, axis=1)
    assert (norms > 0).all()
    assert len(np.unique(feats.values.round(4), axis=0)) == len(manifest)
    # Post-ReLU6 pooled activations of a real network: non-negative.
    assert feats.values.min() >= 0


def test_files_left_by_an_interrupted_write_are_ignored(tmp_path: Path, images: list[str]) -> None:
    m = _manifest(tmp_path, images[:2])
    cfg = feature_config(tmp_path / "cache")
    before = extract_features(m, cfg)
    folder = FeatureCache(tmp_path / "cache", "efficientnet-lite0", SMALL_SIZE).dir
    (keys,) = folder.glob("shard-*.keys.npy")
    (features,) = folder.glob("shard-*.features.npy")
    (folder / "shard-0000.features.npy.tmp").write_bytes(features.read_bytes()[:-300])
    (folder / "shard-0000.keys.npy.tmp").write_bytes(b"")
    (folder / "shard-0001.features.npy").write_bytes(features.read_bytes())  # no keys file
    (folder / "shard-0002.keys.npy.tmp").write_bytes(keys.read_bytes()[:-3])
    (folder / "chunk-0123.npz").write_bytes(b"PK")  # the layout of earlier versions
    after = extract_features(m, cfg)
    assert after.computed == 0
    np.testing.assert_array_equal(after.values, before.values)


# --- large images, EXIF orientation, the pixel limit ---------------------------------------


def test_large_image_features_match_a_full_decode(tmp_path: Path, images: list[str]) -> None:
    src = Image.open(tmp_path / images[0]).convert("RGB")
    src.resize((1024, 1024), Image.Resampling.BICUBIC).save(tmp_path / "big.png")
    src.resize((1024, 768), Image.Resampling.BICUBIC).save(tmp_path / "big.jpg", quality=95)
    feats = extract_features(
        _manifest(tmp_path, ["big.png", "big.jpg"]), feature_config(tmp_path / "cache")
    )
    assert feats.status.tolist() == ["ok", "ok"]
    for i, name in enumerate(["big.png", "big.jpg"]):
        full = _direct(tmp_path / name, SMALL_SIZE)
        cos = feats.values[i] @ full / np.linalg.norm(feats.values[i]) / np.linalg.norm(full)
        assert cos > 0.995, (name, cos)
    # Decoded at reduced size, both sides kept >= 2 x 64: the PNG reduced 8x after decoding,
    # the JPEG decoded at 1/4 scale (1/8 would leave 96 < 128 rows).
    assert load_image(tmp_path / "big.png", SMALL_SIZE).size == (128, 128)
    assert load_image(tmp_path / "big.jpg", SMALL_SIZE).size == (256, 192)


def test_image_over_the_pixel_limit_is_unreadable_with_its_reason(
    tmp_path: Path, images: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("noisyclean.images.MAX_PIXELS", 5000)
    Image.new("RGB", (100, 60), (9, 99, 199)).save(tmp_path / "huge.png")
    feats = extract_features(
        _manifest(tmp_path, [images[0], "huge.png"]), feature_config(tmp_path / "cache")
    )
    assert feats.status.tolist() == ["ok", "unreadable"]
    assert feats.reasons == {1: "larger than 0.005 megapixels (100x60)"}


def test_exif_orientation_is_applied_to_features(tmp_path: Path, images: list[str]) -> None:
    src = Image.open(tmp_path / images[0]).convert("RGB").resize((64, 32))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to show
    src.save(tmp_path / "o6.jpg", quality=95, exif=exif.tobytes())
    src.save(tmp_path / "plain.jpg", quality=95)
    feats = extract_features(
        _manifest(tmp_path, ["o6.jpg", "plain.jpg"]), feature_config(tmp_path / "cache")
    )
    backbone = load_backbone("efficientnet-lite0", image_size=SMALL_SIZE)
    with Image.open(tmp_path / "o6.jpg") as stored:
        upright = stored.convert("RGB").transpose(Image.Transpose.ROTATE_270)
    want = backbone(backbone.preprocess()(upright)[None])[0].numpy()
    np.testing.assert_allclose(feats.values[0], want, rtol=1e-4, atol=1e-4)
    assert not np.allclose(feats.values[0], feats.values[1], atol=1e-2)


# --- permissions: as a user who may not read the file --------------------------------------

_RUN = """
import json, sys
from pathlib import Path
from noisyclean.features import FeatureConfig, extract_features
from noisyclean.manifest import load_manifest

manifest, cache, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
cfg = FeatureConfig(
    backbone="efficientnet-lite0", image_size=64, cache_dir=Path(cache), device="cpu",
    batch_size=batch, workers=0,
)
f = extract_features(load_manifest(manifest), cfg)
print(json.dumps({"status": f.status.tolist(), "computed": f.computed,
                  "reasons": {str(k): v for k, v in f.reasons.items()}}))
"""


def _unprivileged() -> list[str]:
    """A command prefix that runs a program without root's power to ignore permissions."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root and setpriv is absent: permissions can't be tested")
    # Root keeps its uid (owner of the test's files) but loses every capability,
    # CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH included.
    return [setpriv, "--inh-caps=-all", "--bounding-set=-all", "--"]


@pytest.mark.timeout(120)
def test_permission_denied_is_unreadable_and_retried_once_fixed(
    tmp_path: Path, images: list[str]
) -> None:
    (tmp_path / "locked").mkdir()
    shutil.copyfile(tmp_path / images[2], tmp_path / "locked/in-locked-folder.png")
    paths = [images[0], images[1], "locked/in-locked-folder.png", images[3]]
    manifest = write_csv(
        tmp_path / "m.csv", [{"path": p, "label": "ab"[i % 2]} for i, p in enumerate(paths)]
    )
    cache = tmp_path / "cache"
    (tmp_path / images[1]).chmod(0)
    (tmp_path / "locked").chmod(stat.S_IRUSR | stat.S_IWUSR)  # no x: can't be entered
    try:
        done = subprocess.run(
            [*_unprivileged(), sys.executable, "-c", _RUN, str(manifest), str(cache), "2"],
            capture_output=True,
            text=True,
            timeout=110,
        )
    finally:
        (tmp_path / images[1]).chmod(0o644)
        (tmp_path / "locked").chmod(0o755)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["status"] == ["ok", "unreadable", "unreadable", "ok"]
    assert out["reasons"] == {"1": "permission denied", "2": "permission denied"}
    # Fixed: the rerun reads the two, and only them (failures were not cached).
    fixed = extract_features(load_manifest(manifest), feature_config(cache, batch_size=2))
    assert fixed.status.tolist() == ["ok"] * 4 and fixed.reasons == {}
    assert fixed.computed == 2
    np.testing.assert_allclose(
        fixed.values[1], _direct(tmp_path / images[1], SMALL_SIZE), rtol=1e-4, atol=1e-4
    )


# --- Ctrl-C and kill -9 keep finished work -------------------------------------------------


@pytest.fixture
def twelve(tmp_path: Path, small_set: SmallSet) -> Manifest:
    """Twelve real images in this test's own folder: three batches of four."""
    (tmp_path / "img").mkdir()
    names = []
    for n, r in enumerate(small_set.rows[:12]):
        names.append(f"img/{n:02d}.png")
        shutil.copyfile(small_set.root / r["path"], tmp_path / names[-1])
    return _manifest(tmp_path, names)


def _uninterrupted(tmp_path: Path, manifest: Manifest) -> np.ndarray:
    feats = extract_features(manifest, feature_config(tmp_path / "reference", batch_size=4))
    assert feats.computed == len(manifest)
    return feats.values


@pytest.mark.timeout(120)
@pytest.mark.parametrize("workers", [0, 2])
def test_ctrl_c_keeps_finished_features(
    tmp_path: Path, twelve: Manifest, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    cfg = feature_config(tmp_path / "cache", batch_size=4, workers=workers)
    monkeypatch.setenv("NOISYCLEAN_STOP_AFTER_BATCHES", "1")  # Ctrl-C after the first batch
    with pytest.raises(KeyboardInterrupt):
        extract_features(twelve, cfg)
    monkeypatch.delenv("NOISYCLEAN_STOP_AFTER_BATCHES")
    rerun = extract_features(twelve, cfg)
    assert rerun.computed == 8  # only what the interrupted run had not finished
    assert (rerun.status == "ok").all()
    assert np.abs(rerun.values - _uninterrupted(tmp_path, twelve)).max() <= 1e-6


@pytest.mark.timeout(120)
def test_kill_9_loses_only_work_since_the_last_flush(tmp_path: Path, twelve: Manifest) -> None:
    cache = tmp_path / "cache"
    env = {
        **os.environ,
        "NOISYCLEAN_FLUSH_SECONDS": "0",  # flush after every batch
        "NOISYCLEAN_KILL_AFTER_BATCHES": "2",
    }
    manifest = tmp_path / "m.csv"
    done = subprocess.run(
        [sys.executable, "-c", _RUN, str(manifest), str(cache), "4"],
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    rerun = extract_features(twelve, feature_config(cache, batch_size=4))
    assert rerun.computed == 4  # the two flushed batches were kept
    assert (rerun.status == "ok").all()
    assert np.abs(rerun.values - _uninterrupted(tmp_path, twelve)).max() <= 1e-6
