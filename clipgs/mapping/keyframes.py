"""Keyframes: what the mapper keeps of a frame, and the gate that decides which frames become keyframes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from clipgs.data.frame import Frame
from clipgs.geometry import unproject_depth


@dataclass
class Keyframe:
    """A keyframe's data as tensors ready for the loss: rgb (H, W, 3) in [0, 1], depth (H, W) metres (0 = invalid).

    annotation: what the channel trainer keeps for this view (the semantic trainer: masks, embeddings,
    pseudo-labels); None without one.
    """

    frame: Frame
    rgb: torch.Tensor
    depth: torch.Tensor
    annotation: Any = None

    @classmethod
    def from_frame(cls, frame: Frame, device: torch.device, annotation: Any = None) -> Keyframe:
        return cls(frame, torch.tensor(frame.rgb, device=device).float() / 255.0,
                   torch.tensor(frame.depth, device=device), annotation)


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
