"""Ray casting against boxes, spheres and vertical cylinders (float64): a compiled caster for whole images
(csrc/raycast.cpp, built on first use) and the vectorised NumPy reference it is tested against, also the
fallback without a C++ compiler.

Every ``intersect`` takes ray origins (R, 3) and unit directions (R, 3) and returns the nearest hit
distance t (R,) (inf = miss, only t > 1e-6 counts) and the outward unit normal (R, 3) there.
"""
from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from clipgs.native import load_or_warn

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


def cast_numpy(objects: Sequence[Sequence[Primitive]], origins: np.ndarray, dirs: np.ndarray):
    """Nearest hit per ray over objects (each a list of primitives), the reference path.

    origins, dirs: (R, 3). Returns t (R,) (inf = miss), object index (R,) int64 (-1 = miss), normal (R, 3).
    Ties go to the earlier object / primitive.
    """
    t_best = np.full(len(dirs), np.inf)
    obj = np.full(len(dirs), -1)
    normal = np.zeros_like(dirs)
    for k, prims in enumerate(objects):
        centre, radius = bounding_sphere(list(prims))
        rows = np.nonzero(rays_near_sphere(origins, dirs, centre, radius))[0]  # cull: most objects are small
        if rows.size == 0:
            continue
        for prim in prims:
            t, n = prim.intersect(origins[rows], dirs[rows])
            closer = t < t_best[rows]
            sel = rows[closer]
            t_best[sel], obj[sel], normal[sel] = t[closer], k, n[closer]
    return t_best, obj, normal


@dataclass(frozen=True)
class PackedPrimitives:
    """A scene's primitives as flat arrays for the compiled caster.

    kinds (P,) int32 (0 box, 1 sphere, 2 cylinder); params (P, 8) float64 (see csrc/raycast.cpp);
    owner (P,) int32 object index, non-decreasing; spheres (P, 4) float64 bounding spheres (x, y, z, r);
    objects: the primitives per object they were packed from (what the NumPy reference casts against).
    """

    kinds: np.ndarray
    params: np.ndarray
    owner: np.ndarray
    spheres: np.ndarray
    objects: tuple[tuple[Primitive, ...], ...]


def pack(objects: Sequence[Sequence[Primitive]]) -> PackedPrimitives:
    kinds, params, owner, spheres = [], [], [], []
    for k, prims in enumerate(objects):
        for prim in prims:
            centre, radius = bounding_sphere([prim])
            spheres.append([*centre, radius])
            if isinstance(prim, Box):
                kinds.append(0)
                params.append([*prim.center, *prim.half, np.cos(prim.yaw), np.sin(prim.yaw)])
            elif isinstance(prim, Sphere):
                kinds.append(1)
                params.append([*prim.center, prim.radius, 0.0, 0.0, 0.0, 0.0])
            else:
                kinds.append(2)
                params.append([*prim.base, prim.radius, prim.height, 0.0, 0.0, 0.0])
            owner.append(k)
    return PackedPrimitives(np.asarray(kinds, np.int32), np.asarray(params, np.float64).reshape(-1, 8),
                            np.asarray(owner, np.int32), np.asarray(spheres, np.float64).reshape(-1, 4),
                            tuple(tuple(prims) for prims in objects))


@lru_cache(maxsize=1)
def _library() -> ctypes.CDLL | None:
    """The compiled caster, or None (one warning) when it cannot be built here."""
    lib = load_or_warn("clipgs_raycast", [Path(__file__).with_name("csrc") / "raycast.cpp"],
                       "compiled ray caster unavailable, synthetic scenes render with NumPy (slow)")
    if lib is None:
        return None
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    lib.clipgs_raycast.argtypes = [i64, i64, i64, p, p, p, p, i64, p, p, p, p, p, p, p, ctypes.c_int]
    lib.clipgs_raycast.restype = None
    return lib


def compiled_available() -> bool:
    return _library() is not None


@dataclass
class PixelHits:
    """Nearest hits of S sub-pixel rays per pixel: z (S, H, W) camera depth in metres (0 = miss);
    obj (S, H, W) int64 object index (-1 = miss); normal, point (S, H, W, 3) world unit normal and hit point."""

    z: np.ndarray
    obj: np.ndarray
    normal: np.ndarray
    point: np.ndarray


def cast_pixels(packed: PackedPrimitives, K: np.ndarray, world_from_camera: np.ndarray, width: int, height: int,
                offsets: Sequence[tuple[float, float]], compiled: bool = True, threads: int = 0) -> PixelHits:
    """Cast one ray through (x + du, y + dv) of every pixel (x, y) for each (du, dv) in ``offsets``.

    K (3, 3) pinhole without skew; world_from_camera (4, 4) OpenCV axes. ``compiled`` False (or no compiler)
    runs :func:`cast_numpy`; both give the same hits up to float rounding of the ray directions.
    """
    S = len(offsets)
    off = np.ascontiguousarray(offsets, np.float64).reshape(S, 2)
    lib = _library() if compiled else None
    if lib is None:
        return _cast_pixels_numpy(packed.objects, K, world_from_camera, width, height, off)
    c2w, Kc = np.ascontiguousarray(world_from_camera, np.float64), np.ascontiguousarray(K, np.float64)
    z, obj = np.empty((S, height, width)), np.empty((S, height, width), np.int32)
    normal, point = np.empty((S, height, width, 3)), np.empty((S, height, width, 3))
    ptr = lambda a: a.ctypes.data  # noqa: E731
    lib.clipgs_raycast(width, height, S, ptr(off), ptr(Kc), ptr(c2w), len(packed.kinds), ptr(packed.kinds),
                       ptr(packed.params), ptr(packed.owner), ptr(packed.spheres), ptr(z), ptr(obj), ptr(normal),
                       ptr(point), threads or os.cpu_count() or 1)
    return PixelHits(z, obj.astype(np.int64), normal, point)


def _cast_pixels_numpy(objects, K, world_from_camera, width, height, offsets) -> PixelHits:
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    R, eye = world_from_camera[:3, :3], world_from_camera[:3, 3]
    cam = np.stack([np.stack([(u + du - K[0, 2]) / K[0, 0], (v + dv - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
                    for du, dv in offsets])  # (S, H, W, 3) camera-frame rays with z = 1
    norm = np.linalg.norm(cam, axis=-1)
    d = (cam @ R.T) / norm[..., None]
    flat = d.reshape(-1, 3)
    t, obj, n = cast_numpy(objects, np.broadcast_to(eye, flat.shape).copy(), flat)
    hit = np.isfinite(t)
    t = np.where(hit, t, 0.0)
    shape = d.shape[:-1]
    point = np.where(hit[:, None], eye + flat * t[:, None], 0.0)
    return PixelHits((t / norm.reshape(-1)).reshape(shape), obj.reshape(shape), n.reshape(d.shape),
                     point.reshape(d.shape))
