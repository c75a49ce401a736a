"""Keyframes: what the mapper keeps of a frame, and the gate that decides which frames become keyframes."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from clipgs.data.frame import Camera, Frame
from clipgs.geometry import unproject_depth
from clipgs.mapping.losses import near_depth
from clipgs.mapping.trajectory import TrajectoryPose
from clipgs.render.occlusion import Occluder, default_radius_px

MAX_DEPTH_MM = 65535  # uint16 millimetres: depth beyond 65.535 m is stored as invalid


@dataclass
class Keyframe:
    """What the mapper keeps of a keyframe, compactly, on the mapping device.

    color: (H, W, 3) uint8; depth_mm: (H, W) uint16 millimetres, 0 = invalid (``rgb`` and ``depth`` give the
    float views the loss uses: [0, 1] and metres). annotation: what the channel trainer keeps for this view
    (the semantic trainer: masks, embeddings, pseudo-labels); None without one.
    """

    camera: Camera
    index: int
    color: torch.Tensor
    depth_mm: torch.Tensor
    annotation: Any = None
    timestamp: float = 0.0  # seconds, the frame's
    _near_depth: tuple[int, torch.Tensor] | None = field(default=None, repr=False, compare=False)
    _far_mm: torch.Tensor | None = field(default=None, repr=False, compare=False)  # the occluder's far image, mm

    @classmethod
    def from_frame(cls, frame: Frame, device: torch.device, annotation: Any = None) -> Keyframe:
        mm = np.round(frame.depth.astype(np.float64) * 1000.0)
        mm = np.where(mm <= MAX_DEPTH_MM, mm, 0).astype(np.uint16)
        return cls(frame.camera, frame.index, torch.from_numpy(frame.rgb.copy()).to(device),
                   torch.from_numpy(mm.astype(np.int32)).to(device=device, dtype=torch.uint16), annotation,
                   frame.timestamp)

    @property
    def rgb(self) -> torch.Tensor:
        """(H, W, 3) float32 colour in [0, 1]."""
        return self.color.float() / 255.0

    @property
    def depth(self) -> torch.Tensor:
        """(H, W) float32 metres, 0 = invalid."""
        return self.depth_mm.float() / 1000.0

    def near_depth(self, radius_px: int) -> torch.Tensor:
        """(H, W) bool: pixels within ``radius_px`` of valid depth (:func:`clipgs.mapping.losses.near_depth`),
        computed once per keyframe: every optimisation step on it uses the same mask."""
        if self._near_depth is None or self._near_depth[0] != radius_px:
            self._near_depth = (radius_px, near_depth(self.depth, radius_px))
        return self._near_depth[1]

    def occluder(self, margin_m: float) -> Occluder | None:
        """What this view's observed surface hides (Gaussians more than ``margin_m`` behind it; see
        :class:`clipgs.render.occlusion.Occluder`), for choosing the Gaussians its steps train; None if margin_m
        is 0 (off)."""
        if margin_m <= 0:
            return None
        radius = default_radius_px(self.camera.width)
        if self._far_mm is None:  # computed once per keyframe (3 ms at 160x120, 17 ms at 320x240 here)
            self._far_mm = Occluder.from_depth(self.depth, radius, margin_m).far_mm()
        return Occluder.from_far_mm(self._far_mm, radius, margin_m)

    @property
    def nbytes(self) -> int:
        """Bytes held: images plus the annotation's (when it says); not the colour mask and the occluder's far
        image, caches of 1 and 2 bytes per pixel derived from the depth."""
        extra = getattr(self.annotation, "nbytes", 0)
        return self.color.numel() * self.color.element_size() + self.depth_mm.numel() * 2 + int(extra)


def rotation_angle_deg(R_a: np.ndarray, R_b: np.ndarray) -> float:
    """Angle in degrees of the relative rotation between two rotation matrices."""
    cos = (np.trace(R_a.T @ R_b) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def sample_points(frame: Frame, n: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``n`` random valid-depth points of ``frame`` in the world frame, (M, 3)."""
    pts, _, _ = unproject_depth(frame.depth, frame.K, frame.world_from_camera)
    if len(pts) > n:
        pts = pts[rng.choice(len(pts), n, replace=False)]
    return pts


def overlap(points_world: np.ndarray, frame: Frame, rel_tol: float = 0.1) -> float:
    """Fraction of ``points_world`` that project inside ``frame`` with a consistent depth (within rel_tol)."""
    if len(points_world) == 0:
        return 0.0
    T = frame.world_from_camera
    cam = (points_world - T[:3, 3]) @ T[:3, :3]
    z = cam[:, 2]
    front = z > 1e-3
    u = np.round(cam[front, 0] / z[front] * frame.K[0, 0] + frame.K[0, 2]).astype(np.int64)
    v = np.round(cam[front, 1] / z[front] * frame.K[1, 1] + frame.K[1, 2]).astype(np.int64)
    inside = (u >= 0) & (u < frame.width) & (v >= 0) & (v < frame.height)
    observed = frame.depth[v[inside], u[inside]]
    zi = z[front][inside]
    consistent = (observed > 0) & (np.abs(observed - zi) <= rel_tol * zi)
    return float(consistent.sum() / len(points_world))


class KeyframeGate:
    """Decides whether a frame is a keyframe, comparing it with the last keyframe only (cheap)."""

    def __init__(self, translation_m: float, rotation_deg: float, min_overlap: float, n_points: int = 400,
                 seed: int = 0) -> None:
        self.translation_m, self.rotation_deg, self.min_overlap = translation_m, rotation_deg, min_overlap
        self.n_points = n_points
        self.rng = np.random.default_rng(seed)
        self.last_pose: np.ndarray | None = None
        self.last_points: np.ndarray | None = None

    def is_keyframe(self, frame: Frame) -> bool:
        if self.last_pose is None:
            return True
        T = frame.world_from_camera
        if np.linalg.norm(T[:3, 3] - self.last_pose[:3, 3]) >= self.translation_m:
            return True
        if rotation_angle_deg(self.last_pose[:3, :3], T[:3, :3]) >= self.rotation_deg:
            return True
        return overlap(self.last_points, frame) < self.min_overlap

    def accept(self, frame: Frame) -> None:
        """Record ``frame`` as the newest keyframe."""
        self.last_pose = frame.world_from_camera.copy()
        self.last_points = sample_points(frame, self.n_points, self.rng)


ROTATION_M_PER_RAD = 0.5  # pose distance: 1 rad of viewing direction counts as 0.5 m of travel


class KeyframeStore:
    """The mapper's keyframes, oldest first, within a byte budget (0 = none).

    Past the budget, keyframes are dropped until it fits, the most redundant first: among all but the
    newest ``protect`` (the optimisation window), the one whose pose is closest to another keyframe's
    (distance = metres between centres + ``ROTATION_M_PER_RAD`` x angle between viewing directions). A
    revisited place keeps one view of each direction; the map's coverage of the trajectory stays.
    Indexing, slicing, ``len`` and iteration work as on a list.
    """

    def __init__(self, budget_bytes: int = 0, protect: int = 1) -> None:
        self.budget_bytes, self.protect = budget_bytes, max(1, protect)
        self._items: list[Keyframe] = []
        self._centres: list[np.ndarray] = []
        self._forwards: list[np.ndarray] = []
        self.evicted = 0
        self.trajectory: list[TrajectoryPose] = []  # every keyframe appended, evicted ones too, in order

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index):
        return self._items[index]

    def __iter__(self):
        return iter(self._items)

    @property
    def nbytes(self) -> int:
        return sum(kf.nbytes for kf in self._items)

    def append(self, keyframe: Keyframe) -> list[Keyframe]:
        """Add the newest keyframe; returns those dropped to stay within the budget (oldest-first order kept)."""
        pose = keyframe.camera.world_from_camera
        self.trajectory.append(TrajectoryPose(keyframe.index, keyframe.timestamp, pose.copy()))
        self._items.append(keyframe)
        self._centres.append(pose[:3, 3].copy())
        self._forwards.append(pose[:3, 2].copy())
        dropped = []
        if self.budget_bytes:
            total = self.nbytes
            while total > self.budget_bytes and len(self._items) > self.protect:
                i = self.most_redundant()
                total -= self._items[i].nbytes
                dropped.append(self._items.pop(i))
                del self._centres[i], self._forwards[i]
        self.evicted += len(dropped)
        return dropped

    def nearest(self, world_from_camera: np.ndarray) -> int:
        """Index of the keyframe whose pose is closest to ``world_from_camera`` (the distance above); ties: the
        newest. The store must not be empty."""
        return self.closest(world_from_camera, 1)[0]

    def closest(self, world_from_camera: np.ndarray, count: int) -> list[int]:
        """Indices of the ``count`` keyframes closest in pose to ``world_from_camera`` (the distance above),
        closest first; ties: the newer first."""
        d = np.linalg.norm(np.stack(self._centres) - world_from_camera[:3, 3], axis=-1)
        d += ROTATION_M_PER_RAD * np.arccos(np.clip(np.stack(self._forwards) @ world_from_camera[:3, 2], -1.0, 1.0))
        newest_first = np.argsort(d[::-1], kind="stable")[:count]
        return [len(d) - 1 - int(i) for i in newest_first]

    def most_redundant(self) -> int:
        """Index of the unprotected keyframe closest (in pose) to any other keyframe; ties: the oldest."""
        centres, forwards = np.stack(self._centres), np.stack(self._forwards)
        candidates = len(self._items) - self.protect
        d = np.linalg.norm(centres[:candidates, None] - centres[None], axis=-1)
        d += ROTATION_M_PER_RAD * np.arccos(np.clip(forwards[:candidates] @ forwards.T, -1.0, 1.0))
        d[np.arange(candidates), np.arange(candidates)] = np.inf
        return int(np.argmin(d.min(axis=1)))
