"""Procedural albedo textures evaluated at world points (view-independent)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Solid:
    color: tuple[float, float, float]

    def __call__(self, p: np.ndarray) -> np.ndarray:
        return np.broadcast_to(np.asarray(self.color), p.shape).copy()


@dataclass(frozen=True)
class Checker:
    a: tuple[float, float, float]
    b: tuple[float, float, float]
    period: float = 0.2

    def __call__(self, p: np.ndarray) -> np.ndarray:
        parity = np.floor(p / self.period).astype(np.int64).sum(axis=1) % 2
        return np.where(parity[:, None] == 0, np.asarray(self.a), np.asarray(self.b))


@dataclass(frozen=True)
class Stripes:
    """Bands along one world axis (0 = x, 1 = y, 2 = z), cycling through ``colors``."""

    colors: tuple[tuple[float, float, float], ...]
    period: float = 0.1
    axis: int = 2

    def __call__(self, p: np.ndarray) -> np.ndarray:
        band = np.floor(p[:, self.axis] / self.period).astype(np.int64) % len(self.colors)
        return np.asarray(self.colors)[band]


@dataclass(frozen=True)
class Noise:
    """Smooth value noise blending two colours; ``scale`` is the feature size in metres."""

    a: tuple[float, float, float]
    b: tuple[float, float, float]
    scale: float = 0.15
    seed: int = 0

    def __call__(self, p: np.ndarray) -> np.ndarray:
        q = p / self.scale
        i0 = np.floor(q).astype(np.int64)
        f = q - i0
        f = f * f * (3 - 2 * f)
        acc = np.zeros(len(p))
        for corner in range(8):
            off = np.array([(corner >> k) & 1 for k in range(3)])
            w = np.prod(np.where(off == 1, f, 1 - f), axis=1)
            acc += w * _hash01(i0 + off, self.seed)
        return np.asarray(self.a) + (np.asarray(self.b) - np.asarray(self.a)) * acc[:, None]


def _hash01(ijk: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic pseudo-random value in [0, 1) per integer lattice point."""
    h = (ijk[:, 0] * 73856093) ^ (ijk[:, 1] * 19349663) ^ (ijk[:, 2] * 83492791) ^ (seed * 2654435761)
    h = (h ^ (h >> 13)) * 1274126177
    return ((h ^ (h >> 16)) & 0xFFFFFF) / float(0x1000000)
