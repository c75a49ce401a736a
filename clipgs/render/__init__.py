"""Rendering: one interface (:func:`rasterize`), several numerically agreeing backends."""
from clipgs.render.api import (
    BACKENDS,
    COLOR_CHANNELS,
    RenderOutput,
    maybe_in_view,
    rasterize,
    resolve_backend,
    splat_to_gaussians,
    worth_culling,
)
from clipgs.render.occlusion import Occluder

__all__ = ["BACKENDS", "COLOR_CHANNELS", "Occluder", "RenderOutput", "maybe_in_view", "rasterize", "resolve_backend",
           "splat_to_gaussians", "worth_culling"]
