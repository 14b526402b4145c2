"""Image transforms of the seeds, by style, followed by the backbone's input convention.

``build_transform(style, train, backbone, crop_size, resize_size, hflip=True,
rrc_scale=(0.08, 1.0))``; ``r`` = resize_size, ``c`` = crop_size:

==========================  ===========================================  ==========================
style                       train                                        test
==========================  ===========================================  ==========================
``squash_random_crop``      Resize((r, r)) → RandomCrop(c) → HFlip        Resize((r, r)) → CenterCrop(c)
(NormSoftmax 256/224)
``cgd`` (CGD 252/224)       Resize((r, r)) → RandomCrop(c) → HFlip        Resize((c, c)), no crop
``random_resized_crop``     RandomResizedCrop(c) → HFlip                  Resize(r) (shorter side)
(AsymptoticProxy 256/292,                                                 → CenterCrop(c)
PP, Proxy-Anchor/LDM 224/256)
``toy``                     HFlip                                         nothing
==========================  ===========================================  ==========================

Every pipeline starts by converting the input (PIL image or uint8 ``(H, W[, 3])`` array,
greyscale included) to RGB, and ends with ToTensor and the convention of
:func:`dml_core.models.conventions.input_convention`: for BN-Inception the PIL image is swapped
RGB→BGR BEFORE any crop (as the original code does), the tensor is scaled ×255 and normalised with mean
(104, 117, 128), std 1; for the others ImageNet mean/std on RGB in [0, 1]. Output: float32
``(3, c, c)`` (toy: the input size). Random flips use p = 0.5 (``hflip=False`` drops them: the demo's
two-digit numbers change meaning when mirrored); RandomResizedCrop uses torchvision's defaults,
scale (0.08, 1) and ratio (3/4, 4/3), as in all the original code (``rrc_scale`` narrows the area range).
"""
from __future__ import annotations

import numpy as np
from PIL import Image
from torchvision import transforms as T

from dml_core.models.conventions import input_convention

STYLES = ("squash_random_crop", "cgd", "random_resized_crop", "toy")


class ToRGB:
    """PIL image or uint8 array (H, W) / (H, W, 1|3) → RGB PIL image."""

    def __call__(self, img):
        if isinstance(img, np.ndarray):
            if img.ndim == 3 and img.shape[-1] == 1:
                img = img[..., 0]
            img = Image.fromarray(np.ascontiguousarray(img))
        return img if img.mode == "RGB" else img.convert("RGB")

    def __repr__(self) -> str:
        return "ToRGB()"


class SwapRGBtoBGR:
    """Reverse the channel order of an RGB PIL image (BN-Inception input)."""

    def __call__(self, img: Image.Image) -> Image.Image:
        return Image.merge("RGB", img.split()[::-1])

    def __repr__(self) -> str:
        return "SwapRGBtoBGR()"


class Scale:
    """Multiply a tensor by a constant (×255 for BN-Inception)."""

    def __init__(self, factor: float):
        self.factor = factor

    def __call__(self, x):
        return x * self.factor

    def __repr__(self) -> str:
        return f"Scale({self.factor})"


def geometric(style: str, train: bool, crop_size: int, resize_size: int, hflip: bool = True,
              rrc_scale: tuple[float, float] = (0.08, 1.0)) -> list:
    """The resize/crop/flip steps of ``style`` (see the module table)."""
    steps = _geometric(style, train, crop_size, resize_size, tuple(rrc_scale))
    return steps if hflip else [s for s in steps if not isinstance(s, T.RandomHorizontalFlip)]


def _geometric(style: str, train: bool, crop_size: int, resize_size: int,
               rrc_scale: tuple[float, float]) -> list:
    r, c = resize_size, crop_size
    if style == "squash_random_crop":
        if train:
            return [T.Resize((r, r)), T.RandomCrop(c), T.RandomHorizontalFlip()]
        return [T.Resize((r, r)), T.CenterCrop(c)]
    if style == "cgd":
        if train:
            return [T.Resize((r, r)), T.RandomCrop(c), T.RandomHorizontalFlip()]
        return [T.Resize((c, c))]
    if style == "random_resized_crop":
        if train:
            return [T.RandomResizedCrop(c, scale=rrc_scale), T.RandomHorizontalFlip()]
        return [T.Resize(r), T.CenterCrop(c)]
    if style == "toy":
        return [T.RandomHorizontalFlip()] if train else []
    raise ValueError(f"unknown transform style {style!r}; expected one of {list(STYLES)}")


def build_transform(style: str, train: bool, backbone: str, crop_size: int = 224,
                    resize_size: int = 256, hflip: bool = True,
                    rrc_scale: tuple[float, float] = (0.08, 1.0)) -> T.Compose:
    """Compose the ``style`` pipeline for ``backbone`` (train or test); see the module doc."""
    conv = input_convention(backbone)
    steps: list = [ToRGB()]
    if conv.bgr:
        steps.append(SwapRGBtoBGR())
    steps += geometric(style, train, crop_size, resize_size, hflip, rrc_scale)
    steps.append(T.ToTensor())
    if conv.scale_255:
        steps.append(Scale(255.0))
    steps.append(T.Normalize(mean=list(conv.mean), std=list(conv.std)))
    return T.Compose(steps)
