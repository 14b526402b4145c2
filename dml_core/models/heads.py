"""The per-method networks: images ``(B, 3, H, W)`` -> L2-normalised embeddings ``(B, D)``.

Every network maps images to unit-norm embeddings in train and eval mode alike and exposes the
same sub-module names, so methods can build parameter groups and freeze parts:

- ``.backbone``: the trunk from :func:`build_backbone` (feature map),
- ``.pool``: global pooling (CGD: a ModuleList, one per descriptor),
- ``.embedding``: the projection layer(s) (CGD: a ModuleList, one Linear per descriptor),
- CGD only: ``.aux`` (BN1d + Linear classifier on the first descriptor).

Proxies and margins live in the losses, not here.

=================  ========================================================================
NormSoftmaxNet     GAP -> LayerNorm(no affine, eps 1e-5) -> Linear(C->D, bias) -> L2
CGDNet             stride-1 layer3 (resnet50/resnext50/resnet18); per descriptor g_i: L2(W_i g_i) (no bias), concat, L2;
                   aux = Linear(BN1d(g_1)) (bias)
ProxyHeadNet       GMP [-> dropout (GoogLeNet 0.2)] -> LayerNorm(no affine) -> Linear(no bias) -> L2
ProxyAnchorNet     GAP + GMP -> Linear(C->D; kaiming_normal fan_out, bias 0) -> x/sqrt(|x|^2+1e-12)
ToyNet             resnet18 without stem max pool -> GMP -> Linear(512->2 or 3, bias) -> L2
=================  ========================================================================

Vision transformers (``vit_s16_dino``, ``vit_s14_dinov2``; C = 384): NormSoftmaxNet, ProxyHeadNet
and ProxyAnchorNet read the class token (the trunk's 1×1 map) where they pool a CNN's map, and
keep the rest of their head (LayerNorm, Linear, L2). CGDNet pools the patch tokens on their
grid instead (14×14 at 224 px for /16, 16×16 for /14): S = mean, M = max, G = GeM of the tokens;
no layer3 to change. Why the class token, and what the GeM clamp does to signed tokens:
docs/PROTOCOL.md ("The ViT track").
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dml_core.models.backbones import BACKBONES, build_backbone
from dml_core.models.backbones import feature_dim as backbone_feature_dim
from dml_core.models.conventions import input_convention
from dml_core.models.pooling import GeM, build_pooling

__all__ = [
    "EmbeddingNet", "NormSoftmaxNet", "CGDNet", "ProxyHeadNet", "ProxyAnchorNet", "ToyNet",
    "GD_CONFIGS", "MODELS", "build_model", "list_models", "l2_normalize", "head_pooling",
]

# CGD's 12 global-descriptor configurations (S = SPoC/avg, M = MAC/max, G = GeM p=3).
GD_CONFIGS = ("S", "M", "G", "SM", "MS", "SG", "GS", "MG", "GM", "SMG", "MSG", "GSM")


def l2_normalize(x: torch.Tensor, eps: float = 1e-12, mode: str = "clamp") -> torch.Tensor:
    """Row-wise L2 normalisation of (B, D).

    mode="clamp": x / max(|x|, eps) (F.normalize; the original code's default).
    mode="sqrt": x / sqrt(sum x^2 + eps) (Proxy-Anchor's ``l2_norm``).
    """
    if mode == "clamp":
        return F.normalize(x, p=2.0, dim=1, eps=eps)
    if mode == "sqrt":
        return x / torch.sqrt(x.pow(2).sum(dim=1, keepdim=True) + eps)
    raise ValueError(f"unknown l2 mode {mode!r}; expected 'clamp' or 'sqrt'")


def head_pooling(kind: str, backbone: str) -> nn.Module:
    """A head's global pooling ``kind`` (``avg``, ``max``, ``avgmax``) on a CNN trunk; on a ViT
    trunk (class token as a 1×1 map) the class token itself (:class:`~dml_core.models.pooling.ClassToken`)."""
    return build_pooling("token" if BACKBONES[backbone].is_vit else kind)


def _check_dim(name: str, value: int) -> int:
    if not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


class EmbeddingNet(nn.Module):
    """Shared attributes: ``backbone_name``, ``embedding_dim``, ``input_convention``."""

    backbone_name: str
    embedding_dim: int

    @property
    def input_convention(self):
        return input_convention(self.backbone_name)

    def extra_repr(self) -> str:
        return f"backbone_name={self.backbone_name!r}, embedding_dim={self.embedding_dim}"


class NormSoftmaxNet(EmbeddingNet):
    """NormSoftmax (leftthomas/NormSoftmax): f = GAP(X) (C=2048), u = LayerNorm(f) without affine
    (eps 1e-5), e = L2(W_r u + b_r) with W_r (D, C) and bias (default nn.Linear init). (B,3,H,W) -> (B,D).
    The proxies P (C_cls, D) belong to ``NormSoftmaxLoss``.
    """

    def __init__(self, backbone: str = "resnet50", embedding_dim: int = 2048, pretrained: bool = True,
                 source: str = "imagenet"):
        super().__init__()
        self.backbone_name, self.embedding_dim = backbone, _check_dim("embedding_dim", embedding_dim)
        self.backbone = build_backbone(backbone, pretrained, source=source)
        c = backbone_feature_dim(backbone)
        self.pool = head_pooling("avg", backbone)
        self.norm = nn.LayerNorm(c, eps=1e-5, elementwise_affine=False)
        self.embedding = nn.Linear(c, embedding_dim, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return l2_normalize(self.embedding(self.norm(self.pool(self.backbone(x)))))


class CGDNet(EmbeddingNet):
    """Combination of Global Descriptors (leftthomas/CGD).

    Backbone resnet50 / resnext50_32x4d (C = 2048), resnet18 (C = 512) or resnet18_s2 (C = 128,
    the CPU demo's; its last stage is layer2, so X is layer2's map without its downsampling:
    6×6 on 24-px crops) with a stride-1 layer3 (X: (B, C, 14, 14) at 224), or a ViT (C = 384)
    whose patch tokens on their grid are X (14×14 or 16×16 at 224).
    For each letter i of ``gd_config`` (n letters, k = D/n): g_i = pool_i(X) (S avg, M max,
    G GeM p=3), h_i = L2(W_i g_i) with W_i (k, C) without bias; phi = L2([h_1; ...; h_n]).
    Auxiliary classifier on the FIRST raw descriptor: z = W_a BN1d(g_1) + b_a, W_a (C_cls, C).

    gem_clamp: True = standard GeM with eps 1e-6 (default; avoids the original code's NaN gradient on
    all-zero channels), False = the original code's sign(s)|s|^(1/3).
    """

    _POOL = {"S": "avg", "M": "max", "G": "gem"}
    BACKBONES = ("resnet50", "resnext50_32x4d", "resnet18", "resnet18_s2", "vit_s16_dino",
                 "vit_s14_dinov2")

    def __init__(self, backbone: str = "resnet50", gd_config: str = "SG", embedding_dim: int = 1536,
                 *, num_classes: int, pretrained: bool, gem_clamp: bool = True,
                 source: str = "imagenet"):
        super().__init__()
        if backbone not in self.BACKBONES:
            raise ValueError(f"CGDNet backbone must be one of {list(self.BACKBONES)}, got {backbone!r}")
        if gd_config not in GD_CONFIGS:
            raise ValueError(f"unknown gd_config {gd_config!r}; expected one of {list(GD_CONFIGS)}")
        n = len(gd_config)
        if embedding_dim % n != 0:
            raise ValueError(f"embedding_dim={embedding_dim} must be divisible by the number of "
                             f"descriptors n={n} of gd_config {gd_config!r} (each gets D/n dims)")
        self.backbone_name, self.embedding_dim = backbone, _check_dim("embedding_dim", embedding_dim)
        self.gd_config, self.num_classes = gd_config, _check_dim("num_classes", num_classes)
        if backbone in ("resnet18", "resnet18_s2"):
            # build_backbone's layer3_stride1 covers the Bottleneck ResNets only; a BasicBlock
            # strides in its first 3x3 conv (and the 1x1 downsample), so undo those here: in
            # layer3 of resnet18, in the last stage (layer2) of the demo's two-stage trunk.
            self.backbone = build_backbone(backbone, pretrained, source=source)
            block = (self.backbone.layer3 if backbone == "resnet18" else self.backbone.layer2)[0]
            block.conv1.stride = (1, 1)
            block.downsample[0].stride = (1, 1)
            block.stride = 1
        elif BACKBONES[backbone].is_vit:
            self.backbone = build_backbone(backbone, pretrained, tokens="patch")
        else:
            self.backbone = build_backbone(backbone, pretrained, source=source,
                                           layer3_stride1=True)
        c, k = backbone_feature_dim(backbone), embedding_dim // n
        self.pool = nn.ModuleList(
            GeM(p=3.0, clamp=gem_clamp) if ch == "G" else build_pooling(self._POOL[ch])
            for ch in gd_config
        )
        self.embedding = nn.ModuleList(nn.Linear(c, k, bias=False) for _ in gd_config)
        self.aux = nn.Sequential(nn.BatchNorm1d(c), nn.Linear(c, num_classes, bias=True))

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,3,H,W) -> (phi (B, D) unit norm, aux logits (B, num_classes))."""
        fmap = self.backbone(x)
        gs = [pool(fmap) for pool in self.pool]
        hs = [l2_normalize(fc(g)) for fc, g in zip(self.embedding, gs)]
        return l2_normalize(torch.cat(hs, dim=1)), self.aux(gs[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fmap = self.backbone(x)
        hs = [l2_normalize(fc(pool(fmap))) for pool, fc in zip(self.pool, self.embedding)]
        return l2_normalize(torch.cat(hs, dim=1))


class ProxyHeadNet(EmbeddingNet):
    """AsymptoticProxy / PP head (leftthomas/ProxyAnchor b3786cd / ecce2af).

    g = GMP(X) -> dropout (GoogLeNet keeps torchvision's p=0.2 after the pool, active in train
    mode; 0 for the others) -> LayerNorm without affine (eps 1e-5) -> Linear(C -> D, no bias) -> L2.
    pooled_dropout=None takes the backbone's registry value.
    """

    def __init__(self, backbone: str = "resnet50", embedding_dim: int = 512, pretrained: bool = True,
                 pooling: str = "max", pooled_dropout: float | None = None,
                 source: str = "imagenet"):
        super().__init__()
        self.backbone_name, self.embedding_dim = backbone, _check_dim("embedding_dim", embedding_dim)
        self.backbone = build_backbone(backbone, pretrained, source=source)
        c = backbone_feature_dim(backbone)
        self.pool = head_pooling(pooling, backbone)
        p = BACKBONES[backbone].pooled_dropout if pooled_dropout is None else pooled_dropout
        self.dropout = nn.Dropout(p) if p > 0 else nn.Identity()
        self.norm = nn.LayerNorm(c, eps=1e-5, elementwise_affine=False)
        self.embedding = nn.Linear(c, embedding_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.norm(self.dropout(self.pool(self.backbone(x))))
        return l2_normalize(self.embedding(g))


class ProxyAnchorNet(EmbeddingNet):
    """Proxy-Anchor / Learnable Dynamic Margin (official Proxy-Anchor code, wyfan714/LDM).

    h = GAP(X) + GMP(X) -> Linear(C -> D) (kaiming_normal fan_out weight, zero bias)
    -> h / sqrt(sum h^2 + 1e-12). No LayerNorm, no dropout.
    bn_momentum: "original" = the PA/LDM port's value (0.9 for bninception, unchanged otherwise),
    None = leave the backbone's, or a float for every BatchNorm2d.
    """

    SEED_BN_MOMENTUM = {"bninception": 0.9}

    def __init__(self, backbone: str = "bninception", embedding_dim: int = 512, pretrained: bool = True,
                 bn_momentum: float | str | None = "original", source: str = "imagenet"):
        super().__init__()
        self.backbone_name, self.embedding_dim = backbone, _check_dim("embedding_dim", embedding_dim)
        if bn_momentum == "original":
            bn_momentum = self.SEED_BN_MOMENTUM.get(backbone)
        elif isinstance(bn_momentum, str):
            raise ValueError(f"bn_momentum must be 'original', None or a float, got {bn_momentum!r}")
        self.backbone = build_backbone(backbone, pretrained, source=source, bn_momentum=bn_momentum)
        c = backbone_feature_dim(backbone)
        self.pool = head_pooling("avgmax", backbone)
        self.embedding = nn.Linear(c, embedding_dim)
        nn.init.kaiming_normal_(self.embedding.weight, mode="fan_out")
        nn.init.zeros_(self.embedding.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return l2_normalize(self.embedding(self.pool(self.backbone(x))), mode="sqrt")


class ToyNet(EmbeddingNet):
    """The toy (AsymptoticProxy's toy.py): resnet18 with the stem max pool removed -> GMP (512)
    -> Linear(512 -> feature_dim, bias) -> L2: points on the unit circle (2-D) or sphere (3-D).
    """

    def __init__(self, feature_dim: int = 2, *, pretrained: bool, backbone: str = "resnet18"):
        super().__init__()
        self.backbone_name, self.embedding_dim = backbone, _check_dim("feature_dim", feature_dim)
        self.backbone = build_backbone(backbone, pretrained, remove_maxpool=True)
        self.pool = build_pooling("max")
        self.embedding = nn.Linear(backbone_feature_dim(backbone), feature_dim, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return l2_normalize(self.embedding(self.pool(self.backbone(x))))


MODELS: dict[str, type[EmbeddingNet]] = {
    "normsoftmax": NormSoftmaxNet,
    "cgd": CGDNet,
    "proxy_head": ProxyHeadNet,
    "asymptotic_proxy": ProxyHeadNet,
    "positive_proxy": ProxyHeadNet,
    "proxy_anchor": ProxyAnchorNet,
    "dynamic_margin": ProxyAnchorNet,
    "toy": ToyNet,
}


def list_models() -> list[str]:
    """Registered network names (method names map to their network)."""
    return sorted(MODELS)


def build_model(kind: str, **kwargs) -> EmbeddingNet:
    """Network by name (a method name or ``proxy_head``); kwargs go to its constructor."""
    try:
        cls = MODELS[kind]
    except KeyError:
        raise ValueError(f"unknown model {kind!r}; expected one of {list_models()}") from None
    return cls(**kwargs)
