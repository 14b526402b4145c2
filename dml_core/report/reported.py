"""The numbers the authors reported, as plain data.

Every entry is keyed like the recipes' ``reported`` key (``normsoftmax/car/resnet50/uncropped``,
``cgd/cub/resnext50_32x4d/cropped``, ``asymptotic_proxy/sop/bninception``,
``positive_proxy/car/googlenet``, ``dynamic_margin/isc/bninception``, ``proxy_anchor/cub/resnet50``)
and holds Recall@K in **percent** per feature type (``dense`` / ``binary``), the source (README and
commit), the hardware the authors stated and the caveats that the tables print beside the number.

``status`` says how far a number can be trusted as a target:

- ``reported``: a real number from the authors' README (still subject to the caveats).
- ``carry_over``: printed in a README but copied from another method (the PP README at leftthomas/ProxyAnchor ecce2af = AsymptoticProxy
  dense numbers). Shown, never a target.
- ``placeholder``: a template table (the AsymptoticProxy README at leftthomas/ProxyAnchor b3786cd). Kept for the record, never a target,
  and left out of the benchmark tables unless asked for.
- ``reference``: a number from a related official repository (e.g. azgo14's NormSoftmax) for context.

Sources: the READMEs of the reproduced repositories at the commits named in each entry's
``source`` (leftthomas/NormSoftmax, leftthomas/CGD, leftthomas/ProxyAnchor, wyfan714/LDM, and
the official Proxy-Anchor and NormSoftmax repositories); docs/methods/ describes each method.

No ViT entry: none of these methods' authors published a ViT result, and third-party ViT numbers
of these losses (trained in other settings) were left out because this study could not check
them against their sources (the ViT track, docs/PROTOCOL.md, is compared with nothing published).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

from dml_core.methods.registry import SPECS, published

# The Ks of each data set's protocol (the authors' README columns). Mirrors dml_core.evaluation.
PROTOCOL_KS: dict[str, tuple[int, ...]] = {
    "car": (1, 2, 4, 8),
    "cub": (1, 2, 4, 8),
    "demo": (1, 2, 4, 8),
    "sop": (1, 10, 100, 1000),
    "isc": (1, 10, 20, 30, 40, 50),
    "toy": (1,),
}

DATASET_NAMES = {"car": "CARS196", "cub": "CUB200-2011", "sop": "SOP", "isc": "In-shop",
                 "demo": "demo (numbers)", "stl10": "STL-10", "toy": "STL-10 toy"}
#: How the report names each method (its declaration's label, :mod:`dml_core.methods.registry`).
METHOD_NAMES = {name: SPECS[name].label for name in published()}
BACKBONE_NAMES = {"resnet50": "ResNet50", "bninception": "BN-Inception", "googlenet": "GoogLeNet",
                  "resnext50_32x4d": "ResNeXt50", "resnet18": "ResNet18",
                  "resnet18_s2": "ResNet18 (layer1-2)",
                  "vit_s16_dino": "DINO ViT-S/16", "vit_s14_dinov2": "DINOv2 ViT-S/14"}

STATUSES = ("reported", "carry_over", "placeholder", "reference")


@dataclass(frozen=True)
class ReportedEntry:
    key: str
    method: str
    dataset: str
    backbone: str
    crop: bool | None
    recalls: Mapping[str, Mapping[int, float]]  # feature -> K -> percent
    source: str
    hardware: str
    status: str = "reported"
    caveats: tuple[str, ...] = ()
    variant: str = ""                       # "" for the primary entry of a key
    embedding_dim: int | None = None
    params: str | None = None               # as printed, e.g. "27.91M"
    flops: str | None = None                # as printed, e.g. "4.12G" (thop MACs)
    # reported column K -> the protocol Ks it may stand for (In-shop header of the LDM README)
    ambiguous_k: Mapping[int, tuple[int, ...]] = field(default_factory=dict)
    carry_over_of: str | None = None        # key of the entry the numbers were copied from

    @property
    def is_target(self) -> bool:
        """True when the number is a real result of this method (status ``reported``)."""
        return self.status == "reported"

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(self.recalls)

    def value(self, feature: str, k: int) -> float | None:
        """Reported R@k in percent, following ``ambiguous_k`` (the value may stand for k)."""
        rec = self.recalls.get(feature, {})
        if k in rec:
            return rec[k]
        for col, candidates in self.ambiguous_k.items():
            if k in candidates and col in rec:
                return rec[col]
        return None


def _r(ks: Iterable[int], dense: Iterable[float] | None = None,
       binary: Iterable[float] | None = None) -> dict[str, dict[int, float]]:
    ks = tuple(ks)
    out: dict[str, dict[int, float]] = {}
    for name, vals in (("dense", dense), ("binary", binary)):
        if vals is not None:
            vals = tuple(vals)
            assert len(vals) == len(ks), (ks, vals)
            out[name] = dict(zip(ks, vals))
    return out


K8, KSOP, KISC = PROTOCOL_KS["car"], PROTOCOL_KS["sop"], PROTOCOL_KS["isc"]
_ENTRIES: list[ReportedEntry] = []


def _add(**kw) -> None:
    _ENTRIES.append(ReportedEntry(**kw))


# ---------------------------------------------------------------------------------------------
# Common caveats
TEST_SELECTION = "best epoch selected on the test set (optimistic); compare with the last epoch"
ZERO_SELF_MASK = ("self-match masked with 0 instead of -inf in the authors' recall; can inflate "
                  "binary and large-K recalls")

# ---------------------------------------------------------------------------------------------
# NormSoftmax (leftthomas/NormSoftmax README)
_NS_SRC = "leftthomas/NormSoftmax README (HEAD 0648433)"
_NS_HW = "1x NVIDIA Tesla V100 (32G) (stated)"
_NS_CAV = (TEST_SELECTION, ZERO_SELF_MASK,
           "README claims 'same hyper-parameters as the paper' but differs from the official code "
           "(bias in refactor layer, num_sample 25, lr 0.01 for CUB); which flags produced the "
           "numbers is unknown",
           "params/FLOPs by thop, which does not count ProxyLinear FLOPs")
_ns = {
    ("car", False): ((86.1, 91.9, 95.4, 97.4), (85.2, 91.6, 95.2, 97.3)),
    ("car", True): ((91.4, 95.0, 97.1, 98.3), (90.6, 94.6, 96.9, 98.2)),
    ("cub", False): ((64.1, 75.4, 83.6, 90.6), (62.7, 74.4, 82.8, 90.0)),
    ("cub", True): ((68.4, 79.9, 87.6, 92.9), (66.8, 78.7, 87.2, 92.7)),
}
for (ds, crop), (d, b) in _ns.items():
    _add(key=f"normsoftmax/{ds}/resnet50/{'cropped' if crop else 'uncropped'}", method="normsoftmax",
         dataset=ds, backbone="resnet50", crop=crop, recalls=_r(K8, d, b), source=_NS_SRC,
         hardware=_NS_HW, caveats=_NS_CAV, embedding_dim=2048, params="27.91M", flops="4.12G")
_add(key="normsoftmax/sop/resnet50", method="normsoftmax", dataset="sop", backbone="resnet50",
     crop=None, recalls=_r(KSOP, (78.7, 91.1, 96.5, 98.9), (77.8, 90.7, 96.3, 98.8)), source=_NS_SRC,
     hardware=_NS_HW, caveats=_NS_CAV, embedding_dim=2048, params="50.88M", flops="4.12G")
_add(key="normsoftmax/isc/resnet50", method="normsoftmax", dataset="isc", backbone="resnet50",
     crop=None, recalls=_r(KISC, (88.4, 97.5, 98.3, 98.7, 98.9, 99.0),
                           (87.6, 97.4, 98.3, 98.6, 98.7, 98.9)),
     source=_NS_SRC, hardware=_NS_HW, caveats=_NS_CAV, embedding_dim=2048, params="35.89M",
     flops="4.12G")
# Official NormSoftmax README (azgo14/classification_metric_learning), R@1 only, for context.
for ds, (d, b) in {"cub": (65.36, 63.67), "car": (89.50, 89.29), "sop": (79.55, 78.03),
                   "isc": (89.35, 88.76)}.items():
    _add(key=f"normsoftmax/{ds}/resnet50" + ("/uncropped" if ds in ("car", "cub") else ""),
         method="normsoftmax", dataset=ds, backbone="resnet50",
         crop=False if ds in ("car", "cub") else None, recalls=_r((1,), (d,), (b,)),
         source="official NormSoftmax README (azgo14/classification_metric_learning)", hardware="not stated", status="reference",
         variant="official (azgo14)", embedding_dim=2048,
         caveats=("official implementation, not the leftthomas re-implementation; context only",))

# ---------------------------------------------------------------------------------------------
# CGD (leftthomas/CGD README)
_CGD_SRC = "leftthomas/CGD README (HEAD c9cd98f)"
_CGD_CAV = (TEST_SELECTION, "no random seeds in the authors' code (runs not reproducible)",
            "FLOPs by thop (MACs); layer3 stride removed, ~10.6G instead of 4.1G")
_cgd = {
    ("car", "resnet50", False): (86.4, 92.1, 95.6, 97.5),
    ("car", "resnet50", True): (92.4, 96.1, 97.8, 98.7),
    ("car", "resnext50_32x4d", False): (86.4, 92.0, 95.4, 97.6),
    ("car", "resnext50_32x4d", True): (91.7, 95.4, 97.3, 98.6),
    ("cub", "resnet50", False): (66.0, 76.4, 84.8, 90.7),
    ("cub", "resnet50", True): (73.9, 83.1, 89.6, 94.0),
    ("cub", "resnext50_32x4d", False): (66.1, 76.3, 84.0, 90.1),
    ("cub", "resnext50_32x4d", True): (73.7, 82.6, 89.0, 93.3),
}
_cgd_pf = {("resnet50", "small"): ("26.86M", "10.64G"), ("resnet50", "sop"): ("49.85M", "10.69G"),
           ("resnet50", "isc"): ("34.85M", "10.66G"),
           ("resnext50_32x4d", "small"): ("26.33M", "10.84G"),
           ("resnext50_32x4d", "sop"): ("49.32M", "10.89G"),
           ("resnext50_32x4d", "isc"): ("34.32M", "10.86G")}
_gd = {"car": "SG", "cub": "MG", "sop": "SG", "isc": "GS"}
for (ds, bb, crop), d in _cgd.items():
    p, f = _cgd_pf[(bb, "small")]
    _add(key=f"cgd/{ds}/{bb}/{'cropped' if crop else 'uncropped'}", method="cgd", dataset=ds,
         backbone=bb, crop=crop, recalls=_r(K8, d), source=_CGD_SRC,
         hardware="1x NVIDIA Tesla V100 (32G) (stated)",
         caveats=_CGD_CAV + (f"gd_config {_gd[ds]}",), embedding_dim=1536, params=p, flops=f)
for ds, bb, d in (("sop", "resnet50", (79.3, 90.6, 95.8, 98.6)),
                  ("sop", "resnext50_32x4d", (71.0, 85.3, 93.5, 97.9)),
                  ("isc", "resnet50", (83.6, 95.7, 97.1, 97.7, 98.1, 98.4)),
                  ("isc", "resnext50_32x4d", (85.0, 96.1, 97.3, 97.9, 98.2, 98.4))):
    p, f = _cgd_pf[(bb, ds)]
    cav = _CGD_CAV + (f"gd_config {_gd[ds]}",)
    if ds == "sop" and bb == "resnext50_32x4d":
        cav += ("8 points below ResNet50 on SOP: suspicious (diverged run or NaN from unclamped "
                "GeM?)",)
    _add(key=f"cgd/{ds}/{bb}", method="cgd", dataset=ds, backbone=bb, crop=None,
         recalls=_r(KSOP if ds == "sop" else KISC, d), source=_CGD_SRC,
         hardware="1x NVIDIA Tesla V100 (32G) (stated)", caveats=cav, embedding_dim=1536,
         params=p, flops=f)

# ---------------------------------------------------------------------------------------------
# AsymptoticProxy: REAL numbers (README at c30c146, kept through 4137a7d; asymptotic_proxy_pp §A.9)
_AP_SRC = ("leftthomas/ProxyAnchor README at c30c146 (kept through 4137a7d; code identical to "
           "the AsymptoticProxy README's commit b3786cd)")
_AP_HW = "1x NVIDIA Tesla V100 (32G) (stated)"
_AP_CAV = (TEST_SELECTION, ZERO_SELF_MASK,
           "real numbers from the later README (c30c146/4137a7d); the b3786cd table is a "
           "placeholder and is not used as a target",
           "d=512; momentum 0.5 for CARS/CUB, 0.95 for SOP/In-shop; uncropped images")
_ap = {
    ("car", "resnet50"): ((87.0, 92.5, 95.6, 97.4), (79.5, 87.7, 92.5, 95.7)),
    ("car", "bninception"): ((84.0, 90.5, 94.3, 96.6), (77.0, 85.5, 91.0, 94.8)),
    ("car", "googlenet"): ((78.8, 86.2, 91.5, 95.1), (70.8, 81.2, 88.0, 93.1)),
    ("cub", "resnet50"): ((70.0, 79.6, 86.9, 92.2), (61.6, 74.0, 82.9, 89.6)),
    ("cub", "bninception"): ((66.7, 77.3, 85.7, 91.0), (58.4, 70.2, 81.5, 88.8)),
    ("cub", "googlenet"): ((62.5, 73.6, 82.8, 89.8), (55.8, 68.6, 79.4, 87.3)),
    ("sop", "resnet50"): ((80.3, 91.2, 96.3, 98.8), (76.9, 89.7, 95.6, 98.5)),
    ("sop", "bninception"): ((78.5, 90.3, 95.8, 98.7), (74.9, 88.3, 95.0, 98.4)),
    ("sop", "googlenet"): ((72.6, 86.4, 94.1, 98.1), (68.8, 84.3, 93.2, 97.8)),
    ("isc", "resnet50"): ((90.2, 98.1, 98.6, 99.0, 99.1, 99.3), (87.3, 97.4, 98.3, 98.7, 98.9, 99.1)),
    ("isc", "bninception"): ((87.7, 97.5, 98.3, 98.6, 98.8, 98.9),
                             (84.6, 96.6, 97.9, 98.3, 98.6, 98.8)),
    ("isc", "googlenet"): ((78.6, 94.2, 96.3, 97.1, 97.7, 97.9), (74.4, 93.0, 95.5, 96.6, 97.1, 97.4)),
}
for (ds, bb), (d, b) in _ap.items():
    _add(key=f"asymptotic_proxy/{ds}/{bb}", method="asymptotic_proxy", dataset=ds, backbone=bb,
         crop=False if ds in ("car", "cub") else None, recalls=_r(PROTOCOL_KS[ds], d, b),
         source=_AP_SRC, hardware=_AP_HW, caveats=_AP_CAV, embedding_dim=512)

# AsymptoticProxy table of the README at b3786cd: a PLACEHOLDER, kept only for the record.
_PH_SRC = "leftthomas/ProxyAnchor README at b3786cd (AsymptoticProxy)"
_PH_CAV = ("PLACEHOLDER: the whole b3786cd table is a template (copied from the repo's first commit "
           "c583425; GoogleNet = BNInception; SOP = CUB; In-shop = CUB columns, non-monotone); "
           "never a target",)
_ph_r50 = ((64.1, 75.4, 83.6, 90.6), (68.4, 79.9, 87.6, 92.9))
_ph_bn = ((62.7, 74.4, 82.8, 90.0), (66.8, 78.7, 87.2, 92.7))
_ph_car_r50 = ((86.1, 91.9, 95.4, 97.4), (91.4, 95.0, 97.1, 98.3))
_ph_car_bn = ((85.2, 91.6, 95.2, 97.3), (90.6, 94.6, 96.9, 98.2))
for ds, bb, (d, b) in (
        ("car", "resnet50", _ph_car_r50), ("car", "bninception", _ph_car_bn),
        ("car", "googlenet", _ph_car_bn), ("cub", "resnet50", _ph_r50),
        ("cub", "bninception", _ph_bn), ("cub", "googlenet", _ph_bn),
        ("sop", "resnet50", _ph_r50), ("sop", "bninception", _ph_bn), ("sop", "googlenet", _ph_bn)):
    _add(key=f"asymptotic_proxy/{ds}/{bb}", method="asymptotic_proxy", dataset=ds, backbone=bb,
         crop=False if ds in ("car", "cub") else None, recalls=_r(PROTOCOL_KS[ds], d, b),
         source=_PH_SRC, hardware=_AP_HW, status="placeholder", variant="b3786cd placeholder",
         caveats=_PH_CAV, embedding_dim=512)
for bb, (d, b) in (("resnet50", _ph_r50), ("bninception", _ph_bn), ("googlenet", _ph_bn)):
    _add(key=f"asymptotic_proxy/isc/{bb}", method="asymptotic_proxy", dataset="isc", backbone=bb,
         crop=None, recalls=_r(KISC, d + (83.6, 90.6), b + (87.6, 92.9)), source=_PH_SRC,
         hardware=_AP_HW, status="placeholder", variant="b3786cd placeholder", caveats=_PH_CAV,
         embedding_dim=512)

# ---------------------------------------------------------------------------------------------
# PP (leftthomas/ProxyAnchor ecce2af): byte-identical to the AsymptoticProxy dense numbers -> carry-over.
_PP_CAV = ("CARRY-OVER: byte-identical (numbers and links) to the AsymptoticProxy dense results "
           "(c30c146/4137a7d, V100, moving proxies); pasted into the PP README at ebad4cb, not "
           "produced by the PP code; not a target",
           "the code at ecce2af has no positive-proxy component (plain Proxy-Anchor / "
           "normalized softmax)")
for ds in ("car", "cub"):
    for bb in ("resnet50", "bninception", "googlenet"):
        _add(key=f"positive_proxy/{ds}/{bb}", method="positive_proxy", dataset=ds, backbone=bb,
             crop=False, recalls=_r(K8, _ap[(ds, bb)][0]),
             source="leftthomas/ProxyAnchor README at ecce2af (PP)",
             hardware="1x NVIDIA GeForce GTX 1070 (8G) (stated)", status="carry_over",
             caveats=_PP_CAV, embedding_dim=512, carry_over_of=f"asymptotic_proxy/{ds}/{bb}")

# ---------------------------------------------------------------------------------------------
# Learnable dynamic margin (wyfan714/LDM README)
_DM_SRC = "wyfan714/LDM README (HEAD 684f657)"
_DM_HW = ("not stated in the README; authors' 2021 logs (51f3355): RTX 2080 Ti (11 GB), batch 90")
_DM_CAV = (TEST_SELECTION,
           "README written by a third party in 2023 (partly copied from Proxy-Anchor); unknown "
           "whether the numbers come from the README commands (batch 180/120) or the authors' "
           "batch-90 runs")
_dm = {
    ("cub", "bninception"): (69.0, 79.4, 87.3, 92.1), ("cub", "resnet50"): (70.2, 80.0, 87.3, 92.4),
    ("car", "bninception"): (87.0, 92.2, 95.4, 97.3), ("car", "resnet50"): (89.4, 93.7, 96.2, 97.8),
    ("sop", "bninception"): (78.7, 90.8, 96.0, 98.6), ("sop", "resnet50"): (80.5, 91.8, 96.5, 98.8),
}
for (ds, bb), d in _dm.items():
    _add(key=f"dynamic_margin/{ds}/{bb}", method="dynamic_margin", dataset=ds, backbone=bb,
         crop=False if ds in ("car", "cub") else None, recalls=_r(PROTOCOL_KS[ds], d),
         source=_DM_SRC, hardware=_DM_HW, caveats=_DM_CAV, embedding_dim=512)
_ISC_HDR = ("In-shop header printed as 'R@1 R@2 R@4 R@8' is wrong: values are most likely "
            "R@1/10/20/40 (R@1/10/20/30 possible); column 4 is compared with both R@30 and R@40")
for bb, d in (("bninception", (92.0, 98.1, 98.8, 99.2)), ("resnet50", (92.8, 98.3, 98.8, 99.2))):
    cav = _DM_CAV + (_ISC_HDR,)
    if bb == "bninception":
        cav += ("README command uses --loss Proxy_Anchor (leftover); the recipe runs AMLoss",)
    _add(key=f"dynamic_margin/isc/{bb}", method="dynamic_margin", dataset="isc", backbone=bb,
         crop=None, recalls=_r((1, 10, 20, 40), d), source=_DM_SRC, hardware=_DM_HW, caveats=cav,
         embedding_dim=512, ambiguous_k={40: (30, 40)})

# Proxy-Anchor baseline (official PA README)
_PA_SRC = "official Proxy-Anchor README (tjddus9597/Proxy-Anchor-CVPR2020 51db570)"
_PA_CAV = (TEST_SELECTION, "README numbers are stronger than the paper's (68.4/86.1/79.1/91.5 "
           "for BN-Inception)")
for (ds, bb), d in {
        ("cub", "bninception"): (69.1, 78.9, 86.1, 91.2), ("cub", "resnet50"): (69.9, 79.6, 86.6, 91.4),
        ("car", "bninception"): (86.4, 91.9, 95.0, 97.0), ("car", "resnet50"): (87.7, 92.7, 95.5, 97.3),
        ("sop", "bninception"): (79.2, 90.7, 96.2, 98.6)}.items():
    _add(key=f"proxy_anchor/{ds}/{bb}", method="proxy_anchor", dataset=ds, backbone=bb,
         crop=False if ds in ("car", "cub") else None, recalls=_r(PROTOCOL_KS[ds], d),
         source=_PA_SRC, hardware="not stated in the README", caveats=_PA_CAV, embedding_dim=512)
_add(key="proxy_anchor/isc/bninception", method="proxy_anchor", dataset="isc",
     backbone="bninception", crop=None, recalls=_r((1, 10, 20, 30, 40), (91.9, 98.1, 98.7, 99.0, 99.1)),
     source=_PA_SRC, hardware="not stated in the README", caveats=_PA_CAV, embedding_dim=512)

ENTRIES: tuple[ReportedEntry, ...] = tuple(_ENTRIES)
del _ENTRIES

# ---------------------------------------------------------------------------------------------
# AsymptoticProxy momentum sensitivity, hard-coded in plot.py of leftthomas/ProxyAnchor b3786cd
MOMENTUM_SOURCE = "reported (hard-coded in plot.py, leftthomas/ProxyAnchor b3786cd)"
MOMENTUM_VALUES: tuple[float, ...] = (0.05, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95)
# series label -> (backbone, embedding_dim)
MOMENTUM_SERIES: dict[str, tuple[str, int]] = {
    "GoogLeNet(512)": ("googlenet", 512), "BN-Inception(512)": ("bninception", 512),
    "ResNet-50(512)": ("resnet50", 512), "GoogLeNet(1024)": ("googlenet", 1024),
    "BN-Inception(1024)": ("bninception", 1024), "ResNet-50(1024)": ("resnet50", 1024),
}
_MOM_ROWS = {
    "cub": ("63.3 63.3 62.8 62.5 63.0 61.7 62.4", "66.7 65.7 67.2 66.7 67.0 66.7 64.9",
            "68.3 69.2 70.0 70.0 68.4 68.7 68.0", "63.7 63.8 64.7 64.4 64.0 63.1 62.2",
            "67.0 68.0 68.0 68.3 67.4 66.8 66.4", "68.8 70.1 71.5 70.2 68.5 70.8 70.3"),
    "car": ("80.6 80.4 80.0 78.8 79.0 76.2 76.3", "6.8 49.3 83.6 84.0 83.8 79.9 79.3",
            "74.9 86.9 85.8 87.0 86.9 86.8 86.4", "81.9 82.2 81.2 81.0 80.5 78.5 78.1",
            "85.4 3.7 85.4 85.0 85.3 81.4 80.5", "4.0 47.1 87.7 89.1 89.3 88.8 88.5"),
    "sop": ("69.0 70.6 72.1 72.7 72.8 72.7 72.6", "76.0 76.8 77.6 78.1 78.4 78.6 78.5",
            "77.7 78.5 78.7 79.5 80.0 80.4 80.3", "69.7 71.1 72.5 72.9 73.0 73.0 73.0",
            "76.9 77.3 78.0 78.5 78.7 79.0 78.9", "77.5 78.2 79.0 79.7 80.3 80.6 80.7"),
    "isc": ("72.8 75.1 78.1 79.1 79.0 78.9 78.6", "83.0 84.4 86.1 87.2 87.6 87.8 87.7",
            "85.8 86.9 88.7 89.7 90.0 90.2 90.2", "73.8 76.6 78.7 79.7 80.2 79.5 79.4",
            "84.0 85.3 86.7 87.6 87.8 88.1 88.3", "2.9 86.9 88.5 89.9 90.5 90.7 90.8"),
}
# dataset -> series label -> R@1 (%) at MOMENTUM_VALUES. Values < 50 % are training collapses.
MOMENTUM_SENSITIVITY: dict[str, dict[str, tuple[float, ...]]] = {
    ds: {label: tuple(float(v) for v in row.split()) for label, row in zip(MOMENTUM_SERIES, rows)}
    for ds, rows in _MOM_ROWS.items()
}


# ---------------------------------------------------------------------------------------------
def reported_entries(*, statuses: Iterable[str] | None = ("reported", "carry_over"),
                     method: str | None = None, dataset: str | None = None) -> list[ReportedEntry]:
    """Entries filtered by status (None = all), method and data set, in definition order."""
    statuses = set(STATUSES if statuses is None else statuses)
    return [e for e in ENTRIES if e.status in statuses and (method is None or e.method == method)
            and (dataset is None or e.dataset == dataset)]


def get_reported(key: str | None, variant: str = "") -> ReportedEntry | None:
    """The entry for a recipe's ``reported`` key (the primary one unless ``variant`` is given).

    Placeholder and reference entries are only returned when their ``variant`` is named, so a
    placeholder can never be picked up as a target by accident. ``None`` for an unknown key.
    """
    if key is None:
        return None
    for e in ENTRIES:
        if e.key == key and e.variant == variant:
            return e
    return None


def reported_keys() -> list[str]:
    """All primary keys (the rows of the ``full`` profile), in definition order."""
    return [e.key for e in ENTRIES if e.variant == ""]


def parse_key(key: str) -> dict:
    """``method/dataset/backbone[/cropped|uncropped]`` -> dict(method, dataset, backbone, crop)."""
    parts = key.split("/")
    crop = None
    if len(parts) >= 4:
        crop = {"cropped": True, "uncropped": False}.get(parts[3])
    return {"method": parts[0], "dataset": parts[1] if len(parts) > 1 else None,
            "backbone": parts[2] if len(parts) > 2 else None, "crop": crop}


def reported_frame(statuses: Iterable[str] | None = None):
    """All entries as a long pandas DataFrame: one row per (entry, feature, K), value in %."""
    import pandas as pd

    rows = []
    for e in reported_entries(statuses=statuses):
        for feat, rec in e.recalls.items():
            for k, v in rec.items():
                rows.append({"key": e.key, "variant": e.variant, "method": e.method,
                             "dataset": e.dataset, "backbone": e.backbone, "crop": e.crop,
                             "feature": feat, "k": k,
                             "k_candidates": e.ambiguous_k.get(k, (k,)), "value_pct": v,
                             "status": e.status, "source": e.source, "hardware": e.hardware,
                             "params": e.params, "flops": e.flops,
                             "caveats": "; ".join(e.caveats)})
    return pd.DataFrame(rows)


def reported_compact(statuses: Iterable[str] | None = ("reported", "carry_over")):
    """One row per entry: Method, Data set, Backbone, Crop, Variant, Status, then per feature
    the Recall@K values as ``"86.1 / 91.9 / 95.4 / 97.4"`` with their Ks in the column name's
    neighbour ``Ks``, the authors' hardware, params, source and caveats (for the book)."""
    import pandas as pd

    rows = []
    for e in reported_entries(statuses=statuses):
        ks = sorted({k for rec in e.recalls.values() for k in rec})
        crop = "cropped" if e.crop is True else "uncropped" if e.crop is False else "—"
        row = {"Method": METHOD_NAMES.get(e.method, e.method),
               "Data set": DATASET_NAMES.get(e.dataset, e.dataset),
               "Backbone": BACKBONE_NAMES.get(e.backbone, e.backbone), "Crop": crop,
               "Variant": e.variant or "—", "Status": e.status.replace("_", "-"),
               "Ks": "/".join(f"R@{k}" for k in ks)}
        for feat in ("dense", "binary"):
            rec = e.recalls.get(feat, {})
            row[feat] = " / ".join(f"{rec[k]:.1f}" if k in rec else "—" for k in ks) if rec \
                else "—"
        row.update({"Params": e.params or "—", "Hardware": e.hardware, "Source": e.source,
                    "Caveats": "; ".join(e.caveats)})
        rows.append(row)
    return pd.DataFrame(rows)


def momentum_frame():
    """The plot.py momentum table as a long DataFrame (dataset, series, backbone, dim, momentum, R@1 %)."""
    import pandas as pd

    rows = []
    for ds, series in MOMENTUM_SENSITIVITY.items():
        for label, vals in series.items():
            bb, dim = MOMENTUM_SERIES[label]
            for m, v in zip(MOMENTUM_VALUES, vals):
                rows.append({"dataset": ds, "series": label, "backbone": bb, "embedding_dim": dim,
                             "momentum": m, "r1_pct": v, "collapsed": v < 50.0,
                             "source": MOMENTUM_SOURCE})
    return pd.DataFrame(rows)
