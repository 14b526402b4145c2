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

    bgr: swap RGB→BGR (done on the PIL image, before any crop, as the seeds do).
    scale_255: multiply the [0, 1] tensor by 255 after ToTensor.
    mean, std: per channel, in the channel order and scale above.
    """

    bgr: bool
    scale_255: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


IMAGENET_RGB = InputConvention(bgr=False, scale_255=False, mean=IMAGENET_MEAN, std=IMAGENET_STD)
CAFFE_BGR_255 = InputConvention(bgr=True, scale_255=True, mean=(104.0, 117.0, 128.0), std=(1.0, 1.0, 1.0))

# GoogLeNet takes ImageNet-normalised RGB; torchvision's transform_input=True re-maps it inside.
CONVENTIONS: dict[str, InputConvention] = {
    "resnet18": IMAGENET_RGB,
    "resnet50": IMAGENET_RGB,
    "resnext50_32x4d": IMAGENET_RGB,
    "googlenet": IMAGENET_RGB,
    "bninception": CAFFE_BGR_255,
}


def input_convention(backbone: str) -> InputConvention:
    """The input convention of ``backbone``; an unknown name lists the known ones."""
    try:
        return CONVENTIONS[backbone]
    except KeyError:
        raise ValueError(
            f"unknown backbone {backbone!r}; expected one of {sorted(CONVENTIONS)}"
        ) from None
