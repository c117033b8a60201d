from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SmallSet, feature_config
from PIL import Image

from noisyclean.backbones import (
    BackboneError,
    _efficientnet_lite0,
    default_precision,
    load_backbone,
    native_image_size,
    resolve_device,
)
from noisyclean.errors import NoisyCleanError
from noisyclean.features import extract_features, load_image
from noisyclean.manifest import load_manifest

# ImageNet classes 281 tabby, 282 tiger cat, 285 Egyptian cat.
CAT_CLASSES = {281, 282, 285}


@pytest.fixture(scope="module")
def lite0() -> torch.nn.Module:
    model, native = _efficientnet_lite0()
    assert native == 224
    return model.eval()


def test_efficientnet_lite0_classifies_chelsea_as_a_cat(lite0: torch.nn.Module) -> None:
    data = pytest.importorskip("skimage.data")
    photo = Image.fromarray(data.chelsea())
    x = load_backbone("efficientnet-lite0", image_size=224).preprocess()(photo)[None]
    with torch.inference_mode():
        probs = lite0(x).softmax(-1)[0]
    top = int(probs.argmax())
    assert top in CAT_CLASSES, f"top-1 is ImageNet class {top}"
    assert float(probs[sorted(CAT_CLASSES)].sum()) > 0.5


def test_efficientnet_lite0_preprocessing_is_mean_std_half() -> None:
    backbone = load_backbone("efficientnet-lite0", image_size=40)
    assert backbone.spec.mean == backbone.spec.std == (0.5, 0.5, 0.5)
    assert backbone.spec.image_size == 40
    white = Image.new("RGB", (7, 9), (255, 255, 255))
    black = Image.new("RGB", (7, 9), (0, 0, 0))
    prep = backbone.preprocess()
    assert prep(white).shape == (3, 40, 40)
    torch.testing.assert_close(prep(white), torch.ones(3, 40, 40))
    torch.testing.assert_close(prep(black), -torch.ones(3, 40, 40))


def test_efficientnet_lite0_features_are_its_pooled_penultimate_layer(
    lite0: torch.nn.Module, small_set: SmallSet
) -> None:
    backbone = load_backbone("efficientnet-lite0", image_size=64)
    assert not any(p.requires_grad for p in backbone.model.parameters())
    assert not backbone.model.training
    image = load_image(small_set.root / small_set.rows[0]["path"])
    x = backbone.preprocess()(image)[None]
    feats = backbone(x)
    assert feats.shape == (1, 1280) and feats.dtype == torch.float32
    with torch.inference_mode():
        want = lite0.forward_head(lite0.forward_features(x), pre_logits=True)
    torch.testing.assert_close(feats, want)


def test_native_image_size_needs_no_weights() -> None:
    assert native_image_size("efficientnet-lite0") == 224
    assert native_image_size("open_clip:ViT-B-32/laion2b_s34b_b79k") == 224
    assert native_image_size("timm:resnet18") == 224


@pytest.mark.parametrize(
    "name",
    [
        "resnet50",
        "efficientnet_lite0",
        "open_clip",
        "timm:",
        "timm:no_such_net",
        "open_clip:Nope/x",
    ],
)
def test_unknown_backbone_names_raise(name: str) -> None:
    with pytest.raises(BackboneError) as info:
        load_backbone(name)
    assert name in str(info.value)
    with pytest.raises(BackboneError):
        native_image_size(name)


def test_open_clip_without_a_tag_raises() -> None:
    with pytest.raises(BackboneError, match="open_clip:<arch>/<pretrained tag>"):
        load_backbone("open_clip:ViT-B-32")


@pytest.mark.parametrize(
    "name",
    [
        "open_clip:ViT-B-32/laion2b_s34b_b79k",
        "open_clip:ViT-B-32/openai",
        "timm:resnet18",
        "timm:resnet18.a1_in1k",  # timm's own name for one set of weights
    ],
)
def test_weights_that_cannot_be_fetched_name_the_offline_backbone(name: str) -> None:
    start = time.perf_counter()
    with pytest.raises(BackboneError) as info:
        load_backbone(name)
    elapsed = time.perf_counter() - start
    message = str(info.value)
    assert name in message and "efficientnet-lite0" in message
    assert "\n" not in message
    assert elapsed < 10, f"{name}: took {elapsed:.1f} s to fail offline"


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(NoisyCleanError, match="--device must be one of"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_an_error() -> None:
    with pytest.raises(NoisyCleanError, match="no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(NoisyCleanError, match="no CUDA GPU"):
        load_backbone("efficientnet-lite0", device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_features_on_cuda_match_cpu(small_set: SmallSet, tmp_path: Path) -> None:
    manifest = load_manifest(small_set.manifest)
    cpu = extract_features(manifest, feature_config(tmp_path / "cpu"))
    gpu = extract_features(manifest, feature_config(tmp_path / "gpu", device="cuda", workers=2))
    assert gpu.computed == len(manifest)
    assert (gpu.status == "ok").all()
    # Autocast (bfloat16) on the GPU: the same features up to rounding, row by row.
    assert _row_cosines(gpu.values, cpu.values).min() >= 0.999


def _row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.einsum("nd,nd->n", a, b)


def test_precision_defaults_to_float32_off_the_gpu() -> None:
    assert default_precision("cpu") == "float32"
    assert load_backbone("efficientnet-lite0", image_size=64).spec.precision == "float32"
    with pytest.raises(BackboneError, match="precision must be one of"):
        load_backbone("efficientnet-lite0", image_size=64, precision="int4")


def test_autocast_path_gives_the_same_features_up_to_rounding() -> None:
    # The GPU's autocast path, run on the CPU (which autocasts to bfloat16 too), so that
    # it is exercised without a GPU: channels-last inputs, bfloat16 matmuls, float32 out.
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    full = load_backbone("efficientnet-lite0", image_size=64)
    half = load_backbone("efficientnet-lite0", image_size=64, precision="bfloat16")
    assert half.spec.precision == "bfloat16"
    a, b = full(x), half(x)
    assert b.dtype == torch.float32 and b.shape == a.shape
    assert not torch.equal(a, b)  # really computed at the lower precision
    assert _row_cosines(a.numpy(), b.numpy()).min() >= 0.99
