"""Models: backbone registry, pooling, the per-method networks, BN helpers, complexity counts."""
from dml_core.models.backbones import (
    BACKBONES,
    BackboneSpec,
    MissingWeightsError,
    build_backbone,
    feature_dim,
    find_weights,
    list_backbones,
)
from dml_core.models.bn import batchnorm_modules, freeze_batchnorm_affine, set_batchnorm_eval
from dml_core.models.complexity import complexity_report, count_macs, count_parameters, thop_macs
from dml_core.models.conventions import CONVENTIONS, InputConvention, input_convention
from dml_core.models.heads import (
    GD_CONFIGS,
    MODELS,
    CGDNet,
    EmbeddingNet,
    NormSoftmaxNet,
    ProxyAnchorNet,
    ProxyHeadNet,
    ToyNet,
    build_model,
    l2_normalize,
    list_models,
)
from dml_core.models.pooling import POOLINGS, GeM, build_pooling

__all__ = [
    "BACKBONES", "BackboneSpec", "MissingWeightsError", "build_backbone", "feature_dim",
    "find_weights", "list_backbones", "batchnorm_modules", "freeze_batchnorm_affine",
    "set_batchnorm_eval", "complexity_report", "count_macs", "count_parameters", "thop_macs",
    "CONVENTIONS", "InputConvention", "input_convention", "GD_CONFIGS", "MODELS", "CGDNet",
    "EmbeddingNet", "NormSoftmaxNet", "ProxyAnchorNet", "ProxyHeadNet", "ToyNet", "build_model",
    "l2_normalize", "list_models", "POOLINGS", "GeM", "build_pooling",
]
