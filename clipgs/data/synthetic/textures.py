"""Procedural albedo textures evaluated at world points (view-independent)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Cells are [k - SNAP, k + 1 - SNAP) periods: a face lying on a cell boundary (a floor at z = 0, a top at a multiple
# of the period) gets one cell, not one per float rounding of its hit points (speckle).
SNAP = 1e-6


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
        parity = np.floor(p / self.period + SNAP).astype(np.int64).sum(axis=1) % 2
        return np.where(parity[:, None] == 0, np.asarray(self.a), np.asarray(self.b))


@dataclass(frozen=True)
class Stripes:
    """Bands along one world axis (0 = x, 1 = y, 2 = z), cycling through ``colors``."""

    colors: tuple[tuple[float, float, float], ...]
    period: float = 0.1
    axis: int = 2

    def __call__(self, p: np.ndarray) -> np.ndarray:
        band = np.floor(p[:, self.axis] / self.period + SNAP).astype(np.int64) % len(self.colors)
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
        i0 = np.floor(q)
        f = q - i0
        f = f * f * (3 - 2 * f)
        i0 = i0.astype(np.int64)
        # lattice hash terms and smoothstep weights per axis, for the lower (0) and upper (1) corner
        terms = [(i0[:, k] * m, (i0[:, k] + 1) * m) for k, m in enumerate(_PRIMES)]
        weights = [(1 - f[:, k], f[:, k]) for k in range(3)]
        salt = self.seed * 2654435761
        acc = np.zeros(len(p))
        for corner in range(8):
            a, b, c = corner & 1, (corner >> 1) & 1, (corner >> 2) & 1
            h = terms[0][a] ^ terms[1][b] ^ terms[2][c] ^ salt
            acc += weights[0][a] * weights[1][b] * weights[2][c] * _mix01(h)
        return np.asarray(self.a) + (np.asarray(self.b) - np.asarray(self.a)) * acc[:, None]


_PRIMES = (73856093, 19349663, 83492791)


def _mix01(h: np.ndarray) -> np.ndarray:
    """Scrambled lattice hash -> pseudo-random value in [0, 1)."""
    h = (h ^ (h >> 13)) * 1274126177
    return ((h ^ (h >> 16)) & 0xFFFFFF) / float(0x1000000)

