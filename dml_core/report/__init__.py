"""The report layer: the authors' numbers as data, benchmark tables from run folders, figures.

- :mod:`.reported`: ``ENTRIES``, :func:`get_reported`, :func:`reported_entries`,
  :func:`reported_frame`, the AsymptoticProxy momentum data of plot.py (``MOMENTUM_SENSITIVITY``).
- :mod:`.runs`: :func:`load_runs` (one row per run folder), :func:`read_run`, :func:`load_metrics`.
- :mod:`.tables`: :func:`benchmark_table`, :func:`benchmark_long`, :func:`benchmark_markdown`,
  :func:`to_markdown`, :func:`to_html`, :func:`expected_keys_from_profile`.
- :mod:`.figures` (imported lazily, it pulls in matplotlib): ``plot_training_curves``,
  ``plot_recall_bars``, ``plot_dense_vs_binary``, ``plot_retrieval_grid``, ``plot_embedding``,
  ``plot_momentum_sensitivity``, ``save_figure``.
"""
from .reported import (ENTRIES, MOMENTUM_SENSITIVITY, MOMENTUM_SERIES, MOMENTUM_SOURCE,
                       MOMENTUM_VALUES, PROTOCOL_KS, ReportedEntry, get_reported, momentum_frame,
                       parse_key, reported_entries, reported_frame, reported_keys)
from .runs import load_metrics, load_runs, read_run
from .tables import (NOT_REPORTED, NOT_RUN, benchmark_long, benchmark_markdown, benchmark_table,
                     expected_keys_from_profile, to_html, to_markdown)

_FIGURES = ("figure_style", "save_figure", "plot_training_curves", "plot_recall_bars",
            "plot_dense_vs_binary", "plot_retrieval_grid", "plot_embedding", "embed_2d",
            "plot_momentum_sensitivity", "science_style_available")


def __getattr__(name):
    if name in _FIGURES:
        from . import figures

        return getattr(figures, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ENTRIES", "MOMENTUM_SENSITIVITY", "MOMENTUM_SERIES", "MOMENTUM_SOURCE",
           "MOMENTUM_VALUES", "PROTOCOL_KS", "ReportedEntry", "get_reported", "momentum_frame",
           "parse_key", "reported_entries", "reported_frame", "reported_keys", "load_metrics",
           "load_runs", "read_run", "NOT_REPORTED", "NOT_RUN", "benchmark_long",
           "benchmark_markdown", "benchmark_table", "expected_keys_from_profile", "to_html",
           "to_markdown", *_FIGURES]
