"""clipgs: CLIP-informed Gaussian splatting for robots (ROS-free core).

Layers, each importing only the ones before it:
``errors``/``settings``/``geometry`` -> ``data`` -> ``render`` -> ``mapping`` -> ``eval`` -> ``semantics``
-> ``parameters``/``session``/``cli``/``demo`` (and the ROS node in ``clipgs_ros``).

The names people call are exported here (imported on first use, so ``import clipgs`` stays cheap)::

    from clipgs import IncrementalMapper, MapperConfig, open_dataset
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Camera": "clipgs.data.frame",
    "Frame": "clipgs.data.frame",
    "open_dataset": "clipgs.data.dataset",
    "rasterize": "clipgs.render.api",
    "RenderOutput": "clipgs.render.api",
    "GaussianMap": "clipgs.mapping.gaussian_map",
    "MapperConfig": "clipgs.mapping.config",
    "IncrementalMapper": "clipgs.mapping.mapper",
    "MapperWorker": "clipgs.mapping.worker",
    "MapSnapshot": "clipgs.mapping.state",
    "load_ply": "clipgs.mapping.ply",
    "save_ply": "clipgs.mapping.ply",
    "SemanticTrainingConfig": "clipgs.semantics.config",
    "SemanticTrainer": "clipgs.semantics.trainer",
    "SemanticSettings": "clipgs.semantics.factory",
    "build_semantics": "clipgs.semantics.factory",
    "TextEncoder": "clipgs.semantics.text",
    "load_semantics": "clipgs.semantics.model",
    "save_semantics": "clipgs.semantics.model",
    "query_map": "clipgs.semantics.query",
    "Parameters": "clipgs.parameters",
    "MappingSession": "clipgs.session",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'clipgs' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
