"""Backbone registry: every backbone by name, its feature width, input convention and weight files.

``build_backbone(name, pretrained)`` returns a trunk ``(B, 3, H, W) -> (B, C, h, w)``: the feature
MAP, without the original global pooling and classifier (those are the networks' business). The
vision transformers (built with timm) return their class token as a 1×1 map (``tokens="cls"``,
the default: every head's global pooling is then the identity on it) or their patch tokens on
their grid (``tokens="patch"``, ``(B, C, H/p, W/p)``: CGD's descriptors pool it).

Pretrained weights are read ONLY from :func:`dml_core.core.paths.torch_checkpoint_dir`
(``$TORCH_HOME/hub/checkpoints``); nothing here touches the network. A missing file raises
:class:`MissingWeightsError`, naming the file(s) looked for, the URL and the folder to put it in.

=================  =====  ===========  ==========================================
name               C      map at 224   weights (first found wins)
=================  =====  ===========  ==========================================
resnet50           2048   7×7          resnet50-0676ba61.pth / resnet50-19c8e357.pth
resnext50_32x4d    2048   7×7          resnext50_32x4d-7cdf4587.pth
googlenet          1024   7×7          googlenet-1378be20.pth
resnet18            512   7×7          resnet18-f37072fd.pth / resnet18-5c106cde.pth
resnet18_s2         128   28×28        resnet18's files (their layer3/4.* unused)
bninception        1024   7×7          bn_inception-52deb4733.pth (Cadene pretrainedmodels)
vit_s16_dino        384   1×1 / 14×14  dino_deitsmall16_pretrain.pth (DINO ViT-S/16)
vit_s14_dinov2      384   1×1 / 16×16  dinov2_vits14_pretrain.pth (DINOv2 ViT-S/14)
=================  =====  ===========  ==========================================

The two ViT files are the authors' torch-hub checkpoints (``torch.hub.load`` of
``"facebookresearch/dino:main", "dino_vits16"`` and of ``"facebookresearch/dinov2",
"dinov2_vits14"`` caches them under these names).
DINO's layout is timm's ``vit_small_patch16_224``; DINOv2's differs from timm's
``vit_small_patch14_dinov2`` by its ``mask_token`` (unused at inference, dropped) and its
37×37 position embeddings (trained last at 518 px), resampled (bicubic, antialiased) to the
224-px grid of 16×16 patches. Both conversions are timm's own ``checkpoint_filter_fn``. The
publishers give no checksum for them, so a damaged file's error prints its full SHA-256.

Both resnet50 files hold the same ImageNet V1 weights (torchvision re-saved them under a new hash);
the same goes for resnet18.

``resnet18_s2`` is ResNet-18 up to its second stage (``layer2``; ``layer3`` and ``layer4`` are
not built): the CPU demo's trunk. On the demo's 24-px crops the maps shrink 12 → 6 → 6 → 3 → 2 → 1,
so ResNet-18's last stage would run on a single pixel and its third on a 2×2 map. Two stages keep
a 3×3 map, retrieve about as well before and after fine-tuning, and halve the cost of a
training step, which is what lets ``make report`` fit its time budget on a slow 2-core machine
(docs/DEMO.md has the measurements). It loads resnet18's weight files, whose ``layer3.*``,
``layer4.*`` and ``fc.*`` keys it does not have.

Pretraining sources (``source=`` of :func:`build_backbone`, :func:`pretraining_source`): ImageNet
(``"imagenet"``, the files above) for every real data set; on the embedded demo data the
**stand-in** (``"digits"``): resnet18 pretrained on single digits by
:mod:`dml_core.models.standin`, ``resnet18_digits-v<version>-<sha256 prefix>.pth`` in the same
folder, built on this machine when missing. Both load through the same code; the stand-in's
SHA-256 is checked against its name on every load (torch.hub's file-name convention), a published
file's only when it does not load.

Options of :func:`build_backbone`:

- ``layer3_stride1`` (resnet50 / resnext50_32x4d): CGD's ``resnet.py``: layer3 built with stride 1,
  no dilation, so the stages run at 56 → 28 → 28 → 14 and the final map is 14×14 at 224.
- ``remove_maxpool`` (ResNets): the stem max pool becomes Identity (the toy's resnet18).
- ``bn_momentum``: set the momentum of every BatchNorm2d (PA/LDM's BN-Inception port uses 0.9 in
  PyTorch's convention, i.e. the running stats are ~ the last batch's; pretrainedmodels uses 0.1).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from dml_core.models.conventions import InputConvention, check_input_size, input_convention
from dml_core.core.paths import torch_checkpoint_dir
from dml_core.models.pixel_conv import use_pixel_convs

__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "CorruptWeightsError",
    "MissingWeightsError",
    "PRETRAINING_SOURCES",
    "ViTTrunk",
    "build_backbone",
    "feature_dim",
    "input_convention",
    "list_backbones",
    "find_weights",
    "pretraining_source",
    "weights_fingerprint",
]

TV_URL = "https://download.pytorch.org/models/"
CADENE_URL = "http://data.lip6.fr/cadene/pretrainedmodels/"
DINO_URL = "https://dl.fbaipublicfiles.com/dino/dino_deitsmall16_pretrain/"
DINOV2_URL = "https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/"


@dataclass(frozen=True)
class BackboneSpec:
    """One registry entry.

    feature_dim: C of the returned map.
    weight_files: file names looked for in ``torch_checkpoint_dir()``, preferred first.
    urls: download URL of each file (same order).
    pooled_dropout: dropout the original network applies after its global pool (GoogLeNet 0.2);
        networks that keep it (ProxyHeadNet) read it from here.
    convert: ``convert(state, model) -> state`` from the published file's layout to the trunk's
        keys (the ViTs: timm's filter), or None when the keys already match.
    """

    name: str
    feature_dim: int
    weight_files: tuple[str, ...]
    urls: tuple[str, ...]
    builder: Callable[..., nn.Module] = field(repr=False, compare=False)
    pooled_dropout: float = 0.0
    note: str = ""
    convert: Callable[[dict, nn.Module], dict] | None = field(default=None, repr=False,
                                                             compare=False)

    @property
    def convention(self) -> InputConvention:
        return input_convention(self.name)

    @property
    def is_vit(self) -> bool:
        """A vision transformer (patch tokens; ``tokens=`` of :func:`build_backbone`)."""
        return self.convention.patch_size is not None


class MissingWeightsError(FileNotFoundError):
    """Pretrained weights are not in the local torch cache (and will not be downloaded)."""


# --------------------------------------------------------------------------- trunks
class ResNetTrunk(nn.Module):
    """torchvision ResNet/ResNeXt up to ``layer<stages>``: ``(B,3,H,W) -> (B,C,H/s,W/s)`` with
    s = 32, 16, 8 for ``stages`` = 4, 3, 2 (the later stages are not built).

    Child names are torchvision's (conv1, bn1, relu, maxpool, layer1..layer4), so state-dict keys
    are torchvision's minus ``fc.*`` and the unbuilt stages' ``layer<k>.*``.
    """

    def __init__(self, resnet: nn.Module, stages: int = 4):
        super().__init__()
        if stages not in (2, 3, 4):
            raise ValueError(f"stages must be 2, 3 or 4, got {stages!r}")
        self.stages = stages
        names = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
        for name in names[:4 + stages]:
            setattr(self, name, getattr(resnet, name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x))))))
        for name in ("layer3", "layer4")[:self.stages - 2]:
            x = getattr(self, name)(x)
        return x


class GoogLeNetTrunk(nn.Module):
    """torchvision GoogLeNet up to inception5b: ``(B,3,H,W) -> (B,1024,H/32,W/32)``.

    ``transform_input=True`` (as the pretrained builder sets it, and the original repositories keep it) re-maps the
    ImageNet-normalised input to the [-1, 1] scale the original weights expect. No aux heads; the
    dropout(0.2) that followed the pool is the network's (see ``BackboneSpec.pooled_dropout``).
    """

    _STAGES = ("conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a", "inception3b",
               "maxpool3", "inception4a", "inception4b", "inception4c", "inception4d",
               "inception4e", "maxpool4", "inception5a", "inception5b")

    def __init__(self, googlenet: nn.Module):
        super().__init__()
        self.transform_input = googlenet.transform_input
        for name in self._STAGES:
            setattr(self, name, getattr(googlenet, name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.transform_input:
            # torchvision GoogLeNet._transform_input: ImageNet-normalised -> (x - 0.5) / 0.5
            x = torch.cat([
                x[:, 0:1] * (0.229 / 0.5) + (0.485 - 0.5) / 0.5,
                x[:, 1:2] * (0.224 / 0.5) + (0.456 - 0.5) / 0.5,
                x[:, 2:3] * (0.225 / 0.5) + (0.406 - 0.5) / 0.5,
            ], dim=1)
        for name in self._STAGES:
            x = getattr(self, name)(x)
        return x


def _bninception_class():
    # Importing pretrainedmodels only defines modules and dataset classes; it downloads nothing.
    from pretrainedmodels.models.bninception import BNInception

    class BNInceptionTrunk(BNInception):
        """pretrainedmodels' BN-Inception up to ``inception_5b_output``: (B,3,H,W) -> (B,1024,h,w).

        Expects BGR in [0, 255] minus (104, 117, 128) (see conventions.py). The unused
        ``global_pool`` and ``last_linear`` are deleted (their checkpoint keys are skipped).
        """

        def __init__(self):
            super().__init__(num_classes=1000)
            del self.global_pool, self.last_linear

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.features(x)

    return BNInceptionTrunk


class ViTTrunk(nn.Module):
    """A timm ``VisionTransformer`` without its head, as a feature map (timm's keys under ``vit.``).

    tokens="cls": ``(B,3,H,W) -> (B, C, 1, 1)``, the class token after the final LayerNorm (what
    DINO's and DINOv2's own ``forward`` return, and what the hyperbolic-ViT protocol embeds).
    tokens="patch": ``(B,3,H,W) -> (B, C, H/p, W/p)``, the patch tokens after the final LayerNorm
    on their grid. H and W must be multiples of the patch size p; another size than the one the
    model was built for (224) interpolates the position embeddings (timm's ``dynamic_img_size``).
    """

    TOKENS = ("cls", "patch")

    def __init__(self, vit: nn.Module, name: str, tokens: str = "cls"):
        super().__init__()
        if tokens not in self.TOKENS:
            raise ValueError(f"tokens must be one of {self.TOKENS}, got {tokens!r}")
        self.vit, self.backbone_name, self.tokens = vit, name, tokens
        self.patch_size = input_convention(name).patch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        check_input_size(self.backbone_name, h, w)
        t = self.vit.forward_features(x)  # (B, prefix + N, C), normed
        if self.tokens == "cls":
            return t[:, 0, :, None, None]
        patches = t[:, self.vit.num_prefix_tokens:]
        return patches.transpose(1, 2).reshape(b, -1, h // self.patch_size, w // self.patch_size)

    def extra_repr(self) -> str:
        return f"tokens={self.tokens!r}"


# --------------------------------------------------------------------------- builders
def _tv_resnet(arch: str, stages: int = 4) -> Callable[..., nn.Module]:
    def build() -> nn.Module:
        import torchvision.models as tvm

        return ResNetTrunk(getattr(tvm, arch)(weights=None), stages)

    return build


def _tv_googlenet() -> nn.Module:
    from torchvision.models import GoogLeNet

    # init_weights=True: torchvision's own random init (overwritten when weights are loaded).
    return GoogLeNetTrunk(GoogLeNet(aux_logits=False, transform_input=True, init_weights=True))


def _bninception() -> nn.Module:
    return _bninception_class()()


def _timm_vit(name: str, arch: str) -> Callable[..., nn.Module]:
    def build(tokens: str = "cls") -> nn.Module:
        import timm  # imported here: only the ViTs need it (the GPU check vendors it)

        # img_size 224: the ViT track's crop (DINOv2's own default is its last training size, 518)
        vit = timm.create_model(arch, pretrained=False, num_classes=0, img_size=224,
                                dynamic_img_size=True)
        return ViTTrunk(vit, name, tokens)

    return build


def _timm_vit_state(state: dict, model: nn.Module) -> dict:
    """A published DINO / DINOv2 state dict in the trunk's keys: timm's ``checkpoint_filter_fn``
    (DINOv2: ``mask_token`` dropped; position embeddings resampled to the model's grid), then
    the ``vit.`` prefix of :class:`ViTTrunk`."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    return {f"vit.{k}": v for k, v in checkpoint_filter_fn(dict(state), model.vit).items()}


BACKBONES: dict[str, BackboneSpec] = {
    s.name: s
    for s in [
        BackboneSpec("resnet50", 2048, ("resnet50-0676ba61.pth", "resnet50-19c8e357.pth"),
                     (TV_URL + "resnet50-0676ba61.pth", TV_URL + "resnet50-19c8e357.pth"),
                     _tv_resnet("resnet50"), note="ImageNet V1 (the authors' weights)"),
        BackboneSpec("resnext50_32x4d", 2048, ("resnext50_32x4d-7cdf4587.pth",),
                     (TV_URL + "resnext50_32x4d-7cdf4587.pth",), _tv_resnet("resnext50_32x4d")),
        BackboneSpec("googlenet", 1024, ("googlenet-1378be20.pth",),
                     (TV_URL + "googlenet-1378be20.pth",), _tv_googlenet, pooled_dropout=0.2),
        BackboneSpec("resnet18", 512, ("resnet18-f37072fd.pth", "resnet18-5c106cde.pth"),
                     (TV_URL + "resnet18-f37072fd.pth", TV_URL + "resnet18-5c106cde.pth"),
                     _tv_resnet("resnet18")),
        BackboneSpec("resnet18_s2", 128, ("resnet18-f37072fd.pth", "resnet18-5c106cde.pth"),
                     (TV_URL + "resnet18-f37072fd.pth", TV_URL + "resnet18-5c106cde.pth"),
                     _tv_resnet("resnet18", stages=2),
                     note="ResNet-18 up to layer2 (the CPU demo's trunk); resnet18's weight files"),
        BackboneSpec("bninception", 1024, ("bn_inception-52deb4733.pth",),
                     (CADENE_URL + "bn_inception-52deb4733.pth",), _bninception,
                     note="Cadene pretrainedmodels Caffe port; BGR, 0-255"),
        BackboneSpec("vit_s16_dino", 384, ("dino_deitsmall16_pretrain.pth",),
                     (DINO_URL + "dino_deitsmall16_pretrain.pth",),
                     _timm_vit("vit_s16_dino", "vit_small_patch16_224"),
                     note="DINO ViT-S/16 (Caron et al., ICCV 2021), ImageNet-1k self-supervised",
                     convert=_timm_vit_state),
        BackboneSpec("vit_s14_dinov2", 384, ("dinov2_vits14_pretrain.pth",),
                     (DINOV2_URL + "dinov2_vits14_pretrain.pth",),
                     _timm_vit("vit_s14_dinov2", "vit_small_patch14_dinov2"),
                     note="DINOv2 ViT-S/14 distilled (Oquab et al., TMLR 2024), LVD-142M",
                     convert=_timm_vit_state),
    ]
}


def _spec(name: str) -> BackboneSpec:
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; expected one of {list_backbones()}") from None


#: Where ``pretrained=True`` weights come from: ``"imagenet"`` (the published files of
#: :data:`BACKBONES`) or ``"digits"`` (the demo's stand-in, :mod:`dml_core.models.standin`).
PRETRAINING_SOURCES = ("imagenet", "digits")


def pretraining_source(dataset: str) -> str:
    """The weights ``pretrained=True`` means for a run on ``dataset``: the stand-in trunk
    pretrained on single digits (``"digits"``) on the embedded ``demo`` data, whose world has no
    ImageNet; ImageNet (``"imagenet"``) on every real data set."""
    return "digits" if dataset == "demo" else "imagenet"


def _check_source(source: str) -> None:
    if source not in PRETRAINING_SOURCES:
        raise ValueError(f"unknown pretraining source {source!r}; expected one of "
                         f"{list(PRETRAINING_SOURCES)}")


def list_backbones() -> list[str]:
    """Registered backbone names, sorted."""
    return sorted(BACKBONES)


def feature_dim(name: str) -> int:
    """Channels C of the feature map of backbone ``name``."""
    return _spec(name).feature_dim


# --------------------------------------------------------------------------- weights
def find_weights(name: str, source: str = "imagenet") -> Path:
    """Path of the weight file of backbone ``name`` pretrained on ``source`` in
    ``torch_checkpoint_dir()``: the first of the published files present (ImageNet), or the
    demo's stand-in (``"digits"``).

    Raises :class:`MissingWeightsError` naming every file looked for and where to get it.
    """
    spec = _spec(name)
    _check_source(source)
    folder = torch_checkpoint_dir()
    if source == "digits":
        return _find_standin(name, folder)
    for fname in spec.weight_files:
        if (folder / fname).is_file():
            return folder / fname
    options = "\n".join(f"  {f}  <-  {u}" for f, u in zip(spec.weight_files, spec.urls))
    raise MissingWeightsError(
        f"pretrained weights for backbone {name!r} not found (nothing is downloaded at run time).\n"
        f"Looked for any of these files in {folder}:\n{options}\n"
        f"On a machine with internet, download one of them (e.g. `wget {spec.urls[0]}`) and put it "
        f"in {folder} (= $TORCH_HOME/hub/checkpoints), or use pretrained=False."
    )


def _find_standin(name: str, folder: Path) -> Path:
    """The one stand-in file of backbone ``name`` in ``folder`` (see :func:`find_weights`)."""
    from dml_core.models import standin

    if name not in standin.TRUNKS:
        raise ValueError(f"the demo's stand-in weights exist for {list(standin.TRUNKS)} only, not "
                         f"{name!r}; use pretrained=False")
    found = standin.standin_files(folder)
    if len(found) > 1:
        raise MissingWeightsError(
            f"several stand-in weight files for {name!r} in {folder}: "
            f"{', '.join(p.name for p in found)}; keep one of them (runs record which one they "
            "used in provenance.json) and delete the others")
    if not found:
        raise MissingWeightsError(
            f"the demo's stand-in weights for backbone {name!r} ({standin.FILE_STEM}-<SHA-256 "
            f"prefix>.pth, resnet18 pretrained on single digits) are not in {folder} "
            f"(= $TORCH_HOME/hub/checkpoints). Nothing is downloaded: they are built on this "
            f"machine, in 1-2 min on 2 CPU cores, by the demo's data preparation (`python -m "
            f"dml_core.data demo`) or by the first demo run that needs them.")
    return found[0]


class CorruptWeightsError(RuntimeError):
    """A pretrained-weights file that does not load as a plain state dict; names the file, its
    expected checksum and where to get it again."""


def expected_sha256_prefix(path: str | Path) -> str | None:
    """The SHA-256 prefix in a published file name (``resnet50-0676ba61.pth`` -> ``0676ba61``;
    torchvision's and Cadene's convention), or None."""
    stem = Path(path).name.split(".")[0]
    tail = stem.rsplit("-", 1)[-1] if "-" in stem else ""
    return tail.lower() if len(tail) >= 6 and all(c in "0123456789abcdefABCDEF" for c in tail) else None


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def weights_fingerprint(path: str | Path) -> dict[str, str]:
    """``{"file": name, "sha256": digest}`` of a weights file: what a run records about the
    pretrained weights it started from (``provenance.json``)."""
    return {"file": Path(path).name, "sha256": _sha256(Path(path))}


def _refetch_hint(source: str) -> str:
    if source == "digits":
        return ("Delete it: the demo's data preparation (`python -m dml_core.data demo`) or the "
                "next demo run builds it again")
    return ("Download it again (see find_weights' message for the URL) or delete it and use "
            "pretrained=False")


def verify_checksum(path: Path, source: str = "imagenet") -> None:
    """Raise :class:`CorruptWeightsError` unless the SHA-256 of ``path`` starts with the prefix
    in its name (torch.hub's convention: ``resnet18-f37072fd.pth``)."""
    prefix = expected_sha256_prefix(path)
    if prefix is None:
        raise CorruptWeightsError(f"pretrained weights {path} carry no SHA-256 prefix in their "
                                  f"name, so they cannot be checked. {_refetch_hint(source)}.")
    digest = _sha256(path)
    if not digest.startswith(prefix):
        raise CorruptWeightsError(
            f"pretrained weights {path} are damaged: their SHA-256 should start with {prefix} "
            f"(from the file name), this file's is {digest[:16]}... {_refetch_hint(source)}.")


def _load_state_dict(path: Path, source: str = "imagenet") -> dict[str, torch.Tensor]:
    """The tensors of a published weights file, always with ``weights_only=True`` (never the
    full unpickler: a weights file cannot run code). Python-2 pickles (the Cadene BN-Inception
    file) are read with ``encoding="latin1"``. A file that does not load is a
    :class:`CorruptWeightsError` naming it and its expected checksum."""
    errors = []
    for kwargs in ({}, {"encoding": "latin1"}):
        try:
            with warnings.catch_warnings():  # torch warns, wrongly, that encoding is ignored
                warnings.filterwarnings("ignore", message="pickle_load_args only works")
                state = torch.load(path, map_location="cpu", weights_only=True, **kwargs)
            break
        except Exception as exc:  # noqa: BLE001 - torch.load fails in many ways (EOFError,
            # UnpicklingError, RuntimeError, ...): every candidate's failure is reported below
            errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'empty'}")
    else:
        digest = _sha256(path)
        prefix = expected_sha256_prefix(path)
        expected = (f"its SHA-256 should start with {prefix} (from the file name), this file's is "
                    f"{digest[:16]}...{' (it matches: an incompatible format?)' if digest.startswith(prefix) else ''}"
                    if prefix else f"its SHA-256 is {digest}")
        raise CorruptWeightsError(
            f"pretrained weights {path} do not load as a plain state dict with weights_only=True "
            f"({errors[0]}); {expected}. {_refetch_hint(source)}.")
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CorruptWeightsError(f"pretrained weights {path} hold a {type(state).__name__}, not a "
                                  "state dict; download the published file again")
    return dict(state)


def adapt_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep the keys ``model`` has; squeeze a leading singleton dim where that fixes the shape.

    The Cadene BN-Inception file stores some 1-d tensors as (1, C) (the PA/LDM loaders squeeze
    them); classifier/aux keys (``fc.*``, ``last_linear.*``, ``aux1.*``, ...) are dropped.
    """
    own = model.state_dict()
    out = {}
    for k, v in state.items():
        if k not in own:
            continue
        if v.shape != own[k].shape and v.dim() > 0 and v.shape[0] == 1 \
                and v.squeeze(0).shape == own[k].shape:
            v = v.squeeze(0)
        out[k] = v
    return out


# --------------------------------------------------------------------------- build
def build_backbone(name: str, pretrained: bool, *, source: str = "imagenet",
                   layer3_stride1: bool = False, remove_maxpool: bool = False,
                   bn_momentum: float | None = None, tokens: str | None = None) -> nn.Module:
    """Backbone trunk ``(B,3,H,W) -> (B, feature_dim(name), h, w)``.

    pretrained: True loads pretrained weights from ``torch_checkpoint_dir()`` (else
        :class:`MissingWeightsError`); False keeps the library's random init (explicit choice).
    source: what the weights were pretrained on (:data:`PRETRAINING_SOURCES`; a run's comes from
        :func:`pretraining_source`): ``"imagenet"`` or the demo's stand-in ``"digits"``.
    tokens: ViTs only: ``"cls"`` (default; the class token as a 1×1 map) or ``"patch"`` (the
        patch tokens on their grid), see :class:`ViTTrunk`.
    layer3_stride1: resnet50/resnext50 only; CGD's stage 3 without downsampling (14×14 at 224).
    remove_maxpool: ResNets only; stem max pool -> Identity (the toy's resnet18).
    bn_momentum: if not None, the momentum of every BatchNorm2d.
    """
    spec = _spec(name)
    if not isinstance(pretrained, bool):
        raise TypeError(f"pretrained must be True or False, got {pretrained!r}")
    if tokens is not None and not spec.is_vit:
        raise ValueError(f"tokens= is for the vision transformers, not {name!r}")
    _check_source(source)
    path = find_weights(name, source) if pretrained else None  # fail before building anything
    if path is not None and source == "digits":
        verify_checksum(path, source)  # built here, so its checksum is always known
    model = spec.builder(tokens=tokens or "cls") if spec.is_vit else spec.builder()
    if path is not None:
        state = _load_state_dict(path, source)
        if spec.convert is not None:
            state = spec.convert(state, model)
        own_keys = set(model.state_dict())
        adapted = adapt_state_dict(model, state)
        missing = sorted(k for k in own_keys - set(adapted) if not k.endswith("num_batches_tracked"))
        if missing:
            raise RuntimeError(f"{path.name} does not fit backbone {name!r}: missing {missing[:8]}"
                               f"{' ...' if len(missing) > 8 else ''} ({len(missing)} keys)")
        model.load_state_dict(adapted, strict=False)
    if layer3_stride1:
        if not isinstance(model, ResNetTrunk) or name.startswith("resnet18"):
            raise ValueError(f"layer3_stride1 is for resnet50 / resnext50_32x4d, not {name!r}")
        block = model.layer3[0]
        block.conv2.stride = (1, 1)  # torchvision Bottleneck strides in the 3x3 conv
        block.downsample[0].stride = (1, 1)
        block.stride = 1
    if remove_maxpool:
        if not isinstance(model, ResNetTrunk):
            raise ValueError(f"remove_maxpool is for the ResNets, not {name!r}")
        model.maxpool = nn.Identity()
    if bn_momentum is not None:
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = bn_momentum
    if not spec.is_vit:  # exact; a 3x3 conv on a 1x1 map (the demo's last stage) as a linear map
        use_pixel_convs(model)
    return model
