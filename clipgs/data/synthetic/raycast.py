"""Vectorised ray casting against boxes, spheres and vertical cylinders (numpy, float64).

Every ``intersect`` takes ray origins (R, 3) and unit directions (R, 3) and returns the nearest hit
distance t (R,) (inf = miss, only t > 1e-6 counts) and the outward unit normal (R, 3) there.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EPS = 1e-6


@dataclass(frozen=True)
class Box:
    """Box with half extents ``half`` (3,) centred at ``center``, rotated by ``yaw`` (rad) about world z."""

    center: tuple[float, float, float]
    half: tuple[float, float, float]
    yaw: float = 0.0

    def intersect(self, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        R = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])  # world_from_local
        ol, dl = (o - np.asarray(self.center)) @ R, d @ R
        half = np.asarray(self.half)
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / dl
            t0, t1 = (-half - ol) * inv, (half - ol) * inv
        tmin, tmax = np.minimum(t0, t1), np.maximum(t0, t1)
        tmin = np.where(np.isnan(tmin), -np.inf, tmin)
        tmax = np.where(np.isnan(tmax), np.inf, tmax)
        t_near, axis = tmin.max(axis=1), tmin.argmax(axis=1)
        t_far = tmax.min(axis=1)
        hit = (t_near <= t_far) & (t_near > EPS)
        t = np.where(hit, t_near, np.inf)
        n_local = np.zeros_like(o)
        rows = np.arange(len(o))
        n_local[rows, axis] = -np.sign(dl[rows, axis])
        return t, n_local @ R.T


@dataclass(frozen=True)
class Sphere:
    center: tuple[float, float, float]
    radius: float

    def intersect(self, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        oc = o - np.asarray(self.center)
        b = np.einsum("ij,ij->i", oc, d)
        disc = b * b - (np.einsum("ij,ij->i", oc, oc) - self.radius**2)
        root = np.sqrt(np.maximum(disc, 0.0))
        t = -b - root
        t = np.where(t > EPS, t, -b + root)
        t = np.where((disc >= 0) & (t > EPS), t, np.inf)
        p = o + d * np.where(np.isfinite(t), t, 0.0)[:, None]
        return t, (p - np.asarray(self.center)) / self.radius


@dataclass(frozen=True)
class Cylinder:
    """Vertical capped cylinder: axis along world z from ``base`` (x, y, z) up by ``height``."""

    base: tuple[float, float, float]
    radius: float
    height: float

    def intersect(self, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        bx, by, bz = self.base
        ox, oy = o[:, 0] - bx, o[:, 1] - by
        a = d[:, 0] ** 2 + d[:, 1] ** 2
        b = ox * d[:, 0] + oy * d[:, 1]
        cc = ox * ox + oy * oy - self.radius**2
        disc = b * b - a * cc
        with np.errstate(divide="ignore", invalid="ignore"):
            root = np.sqrt(np.maximum(disc, 0.0))
            ts = [(-b - root) / a, (-b + root) / a]
        best = np.full(len(o), np.inf)
        normal = np.zeros_like(o)
        for t in ts:  # side wall
            z = o[:, 2] + t * d[:, 2]
            ok = (disc >= 0) & (a > 1e-12) & (t > EPS) & (z >= bz) & (z <= bz + self.height) & (t < best)
            p = o + d * np.where(ok, t, 0.0)[:, None]
            n = np.stack([p[:, 0] - bx, p[:, 1] - by, np.zeros(len(o))], axis=1) / self.radius
            best, normal = np.where(ok, t, best), np.where(ok[:, None], n, normal)
        for zc, nz in ((bz, -1.0), (bz + self.height, 1.0)):  # caps
            with np.errstate(divide="ignore", invalid="ignore"):
                t = (zc - o[:, 2]) / d[:, 2]
            p = o + d * np.where(np.isfinite(t), t, 0.0)[:, None]
            inside = (p[:, 0] - bx) ** 2 + (p[:, 1] - by) ** 2 <= self.radius**2
            ok = np.isfinite(t) & (t > EPS) & inside & (t < best)
            best = np.where(ok, t, best)
            normal = np.where(ok[:, None], np.array([0.0, 0.0, nz]), normal)
        return best, normal


Primitive = Box | Sphere | Cylinder


def bounding_sphere(prims: list[Primitive]) -> tuple[np.ndarray, float]:
    """(centre (3,), radius) of a sphere enclosing all primitives (not minimal, just safe)."""
    spheres = []
    for p in prims:
        if isinstance(p, Box):
            spheres.append((np.asarray(p.center, float), float(np.linalg.norm(p.half))))
        elif isinstance(p, Sphere):
            spheres.append((np.asarray(p.center, float), float(p.radius)))
        else:
            c = np.asarray(p.base, float) + np.array([0.0, 0.0, p.height / 2])
            spheres.append((c, float(np.hypot(p.radius, p.height / 2))))
    centre = np.mean([c for c, _ in spheres], axis=0)
    return centre, max(float(np.linalg.norm(c - centre)) + r for c, r in spheres)


def rays_near_sphere(o: np.ndarray, d: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    """(R,) bool: rays that pass within ``radius`` of ``centre`` ahead of their origin (or start inside)."""
    oc = o - centre
    b = np.einsum("ij,ij->i", oc, d)
    c = np.einsum("ij,ij->i", oc, oc) - radius * radius
    return (c <= 0) | ((b < 0) & (b * b >= c))
