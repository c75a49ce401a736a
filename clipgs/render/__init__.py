"""Rendering: one interface (:func:`rasterize`), several numerically agreeing backends."""
from clipgs.render.api import BACKENDS, RenderOutput, rasterize, resolve_backend

__all__ = ["BACKENDS", "RenderOutput", "rasterize", "resolve_backend"]
