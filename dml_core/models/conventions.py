"""Input conventions of the backbones: the one place that knows how each expects its pixels.

The data layer's transforms ask :func:`input_convention` for the backbone they feed; nothing else
hard-codes a mean, a std or a channel order.
"""
from __future__ import annotations

from dataclasses import dataclass

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class InputConvention:
    """How a backbone expects its input tensor.

    bgr: swap RGB→BGR (done on the PIL image, before any crop, as the original code does).
    scale_255: multiply the [0, 1] tensor by 255 after ToTensor.
    mean, std: per channel, in the channel order and scale above.
    patch_size: vision transformers only: the side of a patch in pixels; the input's height and
        width must be multiples of it (the trunk sees (H/p)·(W/p) patch tokens), else None.
    native_size: the image side the published weights were trained (DINO) or last trained
        (DINOv2: 518) at, for the record; other sizes interpolate the position embeddings.
    """

    bgr: bool
    scale_255: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    patch_size: int | None = None
    native_size: int | None = None


IMAGENET_RGB = InputConvention(bgr=False, scale_255=False, mean=IMAGENET_MEAN, std=IMAGENET_STD)
CAFFE_BGR_255 = InputConvention(bgr=True, scale_255=True, mean=(104.0, 117.0, 128.0), std=(1.0, 1.0, 1.0))

# GoogLeNet takes ImageNet-normalised RGB; torchvision's transform_input=True re-maps it inside.
# DINO and DINOv2 normalise with the ImageNet mean/std as well (their eval transforms: Resize 256
# -> CenterCrop 224, bicubic); this project resizes bilinearly for every backbone alike. The ViT
# track feeds both 224-px crops: 14 x 14 patches of 16 px (DINO's native grid) and 16 x 16 of
# 14 px (DINOv2 trained last at 518 px, 37 x 37 patches: its position embeddings are resampled,
# bicubic, when the weights are loaded; see models/backbones.py).
CONVENTIONS: dict[str, InputConvention] = {
    "resnet18": IMAGENET_RGB,
    "resnet18_s2": IMAGENET_RGB,
    "resnet50": IMAGENET_RGB,
    "resnext50_32x4d": IMAGENET_RGB,
    "googlenet": IMAGENET_RGB,
    "bninception": CAFFE_BGR_255,
    "vit_s16_dino": InputConvention(bgr=False, scale_255=False, mean=IMAGENET_MEAN,
                                    std=IMAGENET_STD, patch_size=16, native_size=224),
    "vit_s14_dinov2": InputConvention(bgr=False, scale_255=False, mean=IMAGENET_MEAN,
                                      std=IMAGENET_STD, patch_size=14, native_size=518),
}


def input_convention(backbone: str) -> InputConvention:
    """The input convention of ``backbone``; an unknown name lists the known ones."""
    try:
        return CONVENTIONS[backbone]
    except KeyError:
        raise ValueError(
            f"unknown backbone {backbone!r}; expected one of {sorted(CONVENTIONS)}"
        ) from None


def check_input_size(backbone: str, height: int, width: int) -> None:
    """Raise ValueError when a (height, width) input does not fit ``backbone``'s patch grid."""
    p = input_convention(backbone).patch_size
    if p and (height % p or width % p):
        raise ValueError(
            f"backbone {backbone!r} cuts images into {p}x{p}-pixel patches: its input must be a "
            f"multiple of {p} px on each side, got {height}x{width}; set crop_size to a multiple "
            f"of {p} (e.g. {max(p, round(height / p) * p)})")
