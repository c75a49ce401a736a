"""The keyframe trajectory a mapping run estimated: kept as keyframes join, written beside the map, scored
against true poses (ATE, raw and rigidly aligned as the TUM RGB-D benchmark does)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipgs.geometry import pose_from_translation_quat, rotmat_to_quat

TRAJECTORY_SUFFIX = ".keyframes.txt"
HEADER = ("# clipgs keyframe trajectory: one line per keyframe as it joined the map (map frame, OpenCV camera axes)\n"
          "# index timestamp tx ty tz qx qy qz qw\n"
          "# (index: the frame's in its dataset or stream; columns 2-9: the TUM RGB-D trajectory format)\n")


@dataclass(frozen=True)
class TrajectoryPose:
    """index: the frame's index in its dataset (a stream's running count); timestamp: seconds;
    world_from_camera: (4, 4) the keyframe's pose in the map frame (refined, when poses come from odometry)."""

    index: int
    timestamp: float
    world_from_camera: np.ndarray


def trajectory_path(map_path: str | Path) -> Path:
    """map.ply -> map.keyframes.txt"""
    path = Path(map_path)
    return path.with_name(path.stem + TRAJECTORY_SUFFIX)


def save_trajectory(poses: Sequence[TrajectoryPose], path: str | Path) -> Path:
    """Write ``poses`` (see HEADER for the columns); returns the path."""
    lines = [HEADER]
    for p in poses:
        w, x, y, z = rotmat_to_quat(p.world_from_camera[:3, :3])
        t = p.world_from_camera[:3, 3]
        lines.append(f"{p.index} {p.timestamp:.6f} {t[0]:.6f} {t[1]:.6f} {t[2]:.6f} {x:.8f} {y:.8f} {z:.8f} {w:.8f}\n")
    path = Path(path)
    path.write_text("".join(lines))
    return path


def load_trajectory(path: str | Path) -> list[TrajectoryPose]:
    """Read a file :func:`save_trajectory` wrote. Raises ValueError naming the first bad line."""
    poses = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split()
        try:
            if len(fields) != 9:
                raise ValueError(f"{len(fields)} columns, expected 9")
            values = [float(v) for v in fields[1:]]
            qx, qy, qz, qw = values[4:]
            pose = pose_from_translation_quat(np.array(values[1:4]), np.array([qw, qx, qy, qz]))
            poses.append(TrajectoryPose(int(fields[0]), values[0], pose))
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: not a keyframe trajectory line ({exc})") from exc
    return poses


def align_rigid(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(4, 4) rigid T minimising sum |T source_i - target_i|^2 over points (n, 3), n >= 3 (Kabsch / Umeyama
    without scale: a metric RGB-D map has no scale to fix). Fewer than 3 points: the translation alone."""
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    T = np.eye(4)
    ms, mt = source.mean(axis=0), target.mean(axis=0)
    if len(source) >= 3:
        U, _, Vt = np.linalg.svd((source - ms).T @ (target - mt))
        D = np.diag([1.0, 1.0, np.sign(np.linalg.det(Vt.T @ U.T))])  # a rotation, never a reflection
        T[:3, :3] = Vt.T @ D @ U.T
    T[:3, 3] = mt - T[:3, :3] @ ms
    return T


def trajectory_errors(estimated: np.ndarray, true: np.ndarray) -> dict:
    """Keyframe poses (n, 4, 4) in the map frame against the true ones (n, 4, 4) of the same frames.

    Returns position RMSE (m) and rotation RMS (degrees) as they stand ('ate_m', 'rotation_deg') and after the
    rigid alignment of the true positions onto the estimated ones ('aligned_ate_m', 'aligned_rotation_deg'), with
    that alignment 'map_from_true' (4, 4): a true pose P sits at map_from_true @ P in the map. The map's frame is
    the first keyframe's pose; drift early on moves the whole map, which the aligned figures leave out."""
    def errors(T: np.ndarray) -> tuple[float, float]:
        moved = T @ true
        position = np.linalg.norm(moved[:, :3, 3] - estimated[:, :3, 3], axis=1)
        cos = (np.einsum("nij,nij->n", moved[:, :3, :3], estimated[:, :3, :3]) - 1) / 2  # trace(A^T B)
        angle = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
        return float(np.sqrt(np.mean(position**2))), float(np.sqrt(np.mean(angle**2)))

    if len(estimated) != len(true) or len(estimated) == 0:
        raise ValueError(f"{len(estimated)} estimated and {len(true)} true poses: need the same number, at least 1")
    T = align_rigid(true[:, :3, 3], estimated[:, :3, 3])
    (ate, rot), (aligned_ate, aligned_rot) = errors(np.eye(4)), errors(T)
    return {"keyframes": len(estimated), "ate_m": ate, "rotation_deg": rot, "aligned_ate_m": aligned_ate,
            "aligned_rotation_deg": aligned_rot, "map_from_true": T}
