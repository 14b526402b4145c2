"""Data layer: raw data → prepared index → datasets, transforms, samplers and loaders.

See docs/DATA.md for the raw layouts and docs/ARCHITECTURE.md for the contract. Names are
imported lazily (PEP 562), so ``python -m dml_core.data`` does not pay for importing torch.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "RetrievalDataset": "datasets", "load_image": "datasets",
    "write_demo_raw": "demo",
    "Record": "index", "read_index": "index",
    "CROPPABLE": "layout", "DATASETS": "layout", "EXPECTED_SIZES": "layout",
    "auto_num_workers": "loaders", "make_eval_loader": "loaders", "make_train_loader": "loaders",
    "dataset_dir": "preparation", "index_path": "preparation", "is_prepared": "preparation",
    "prepare": "preparation",
    "MissingRawDataError": "raw",
    "MPerClassBatchSampler": "samplers", "PMLMPerClassBatchSampler": "samplers",
    "ShuffleBatchSampler": "samplers",
    "ToyData": "stl10", "load_toy_data": "stl10",
    "STYLES": "transforms", "build_transform": "transforms",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
