"""Evaluation: exact chunked retrieval metrics, data-set protocols, features and pictures.

Public names: :func:`recall_at_k`, :func:`map_at_r`, :func:`r_precision`, :func:`binarize`,
:func:`retrieval_stats`, :data:`PROTOCOLS`, :func:`evaluate`, :class:`Features`,
:func:`extract_features`, :func:`evaluate_model`, :func:`plot_retrievals`, :func:`default_queries`.
"""
from .features import Features, evaluate_model, extract_features
from .protocols import PROTOCOLS, Protocol, evaluate, get_protocol
from .retrieval import (DEFAULT_MEMORY_BUDGET_MB, RetrievalStats, binarize, map_at_r, r_precision,
                        recall_at_k, retrieval_stats)
from .visualize import default_queries, plot_retrievals, top_k

__all__ = [
    "DEFAULT_MEMORY_BUDGET_MB", "Features", "PROTOCOLS", "Protocol", "RetrievalStats", "binarize",
    "default_queries", "evaluate", "evaluate_model", "extract_features", "get_protocol", "map_at_r",
    "plot_retrievals", "r_precision", "recall_at_k", "retrieval_stats", "top_k",
]
