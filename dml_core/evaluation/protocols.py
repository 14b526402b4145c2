"""Evaluation protocols of the data sets and the one-call :func:`evaluate`."""
from __future__ import annotations

from dataclasses import dataclass

from .retrieval import DEFAULT_MEMORY_BUDGET_MB, DEFAULT_TIES, binarize, retrieval_stats


@dataclass(frozen=True)
class Protocol:
    """Ks of Recall@K and the mode: ``self`` (test set against itself, query excluded) or
    ``query_gallery`` (query set against a separate gallery, nothing excluded)."""
    ks: tuple[int, ...]
    mode: str


PROTOCOLS: dict[str, Protocol] = {
    "car": Protocol((1, 2, 4, 8), "self"),
    "cub": Protocol((1, 2, 4, 8), "self"),
    "demo": Protocol((1, 2, 4, 8), "self"),
    "sop": Protocol((1, 10, 100, 1000), "self"),
    "isc": Protocol((1, 10, 20, 30, 40, 50), "query_gallery"),
    "toy": Protocol((1,), "self"),
}


def get_protocol(protocol: str | Protocol) -> Protocol:
    if isinstance(protocol, Protocol):
        return protocol
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {sorted(PROTOCOLS)}")
    return PROTOCOLS[protocol]


def evaluate(features, labels, protocol: str | Protocol, gallery_features=None, gallery_labels=None,
             binary: bool = True, ties: str = DEFAULT_TIES,
             memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB) -> dict[str, float]:
    """All metrics of a data set's protocol, as a flat JSON-ready dict of fractions.

    features (N, D) (the query set for ``isc``), labels (N,). Dense: cosine similarity (features are
    L2-normalised here). Binary (``binary=True``): :func:`binarize` codes ranked by Hamming distance.
    Keys: ``dense/R@K`` for each K of the protocol, ``dense/MAP@R``, ``dense/RP`` (R-precision), and
    the same under ``binary/``. One pass per feature kind computes all of them.
    Ties (default ``ties="expected"``): ties are broken uniformly at random in expectation.
    """
    p = get_protocol(protocol)
    if p.mode == "self" and gallery_features is not None:
        raise ValueError(f"protocol {protocol!r} is self-retrieval; do not pass gallery_features "
                         "(or use a query_gallery protocol such as 'isc')")
    if p.mode == "query_gallery" and (gallery_features is None or gallery_labels is None):
        raise ValueError(f"protocol {protocol!r} retrieves queries from a gallery: pass gallery_features "
                         "and gallery_labels")
    kinds = [("dense", lambda x: x, True)]
    if binary:
        kinds.append(("binary", binarize, False))
    out: dict[str, float] = {}
    for name, fn, norm in kinds:
        st = retrieval_stats(fn(features), labels,
                             None if gallery_features is None else fn(gallery_features), gallery_labels,
                             ties=ties, normalize=norm, memory_budget_mb=memory_budget_mb)
        for k, v in st.recall(p.ks).items():
            out[f"{name}/R@{k}"] = v
        out[f"{name}/MAP@R"] = st.map_at_r()
        out[f"{name}/RP"] = st.r_precision()
    return out
