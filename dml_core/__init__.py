"""dml_core: datasets, models, losses, training and evaluation for a reproducible study of
proxy-based deep metric learning (NormSoftmax, AsymptoticProxy, PP, CGD, Learnable Dynamic Margin).

Sub-packages mirror the pipeline: ``data`` → ``models`` + ``losses`` → ``methods`` (one recipe
per published method) → ``training`` → ``evaluation`` → ``report``. See ``docs/ARCHITECTURE.md``.
"""
__version__ = "0.1.0"
