"""Rigid-body and camera geometry helpers (numpy, float64).

Conventions: poses are 4x4 ``world_from_camera`` matrices in the OpenCV optical frame
(x right, y down, z forward). Quaternions are (w, x, y, z).
"""
from __future__ import annotations

import numpy as np

_EYE3 = np.eye(3)
_LAST_ROW = np.array([0.0, 0.0, 0.0, 1.0])


def is_rigid(T: np.ndarray, tol: float = 1e-4) -> bool:
    """True if ``T`` (4, 4) is a finite rigid transform: orthonormal rotation, det +1, last row (0, 0, 0, 1)
    (each within ``tol``, with ``np.allclose``'s relative 1e-5 on the ones). Every frame is checked a few
    times, so this is written for a 4 x 4: ~25 us against ~60 with ``np.allclose``."""
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4) or not np.isfinite(T).all():
        return False
    R = T[:3, :3]
    return bool(
        (np.abs(R @ R.T - _EYE3) <= tol + 1e-5 * _EYE3).all()
        and abs(np.linalg.det(R) - 1.0) < tol
        and (np.abs(T[3] - _LAST_ROW) <= tol + 1e-5 * _LAST_ROW).all()
    )


def invert_rigid(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid transform (4, 4) without a general matrix inverse."""
    R, t = T[:3, :3], T[:3, 3]
    out = np.eye(4, dtype=np.float64)
    out[:3, :3] = R.T
    out[:3, 3] = -R.T @ t
    return out


def quat_to_rotmat(q: np.ndarray) -> np.ndarray:
    """(..., 4) quaternions (w, x, y, z), any norm -> (..., 3, 3) rotation matrices."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.abs(q).max(axis=-1, keepdims=True)  # scale first: the norm of (1e200, 0, 0, 0) overflows
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    R = np.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        axis=-1,
    )
    return R.reshape((*q.shape[:-1], 3, 3))


def rotmat_to_quat(R: np.ndarray) -> np.ndarray:
    """(3, 3) rotation -> unit quaternion (w, x, y, z) with w >= 0 (Shepperd's method, stable everywhere)."""
    R = np.asarray(R, dtype=np.float64)
    tr = np.trace(R)
    if tr > 0:
        s = 2.0 * np.sqrt(tr + 1.0)
        q = [0.25 * s, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s]
    elif R[0, 0] > R[1, 1] and R[0, 0] > R[2, 2]:
        s = 2.0 * np.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2])
        q = [(R[2, 1] - R[1, 2]) / s, 0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s]
    elif R[1, 1] > R[2, 2]:
        s = 2.0 * np.sqrt(1.0 + R[1, 1] - R[0, 0] - R[2, 2])
        q = [(R[0, 2] - R[2, 0]) / s, (R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + R[2, 2] - R[0, 0] - R[1, 1])
        q = [(R[1, 0] - R[0, 1]) / s, (R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s]
    q = np.asarray(q) / np.linalg.norm(q)
    return -q if q[0] < 0 else q


def pose_from_translation_quat(t: np.ndarray, q_wxyz: np.ndarray) -> np.ndarray:
    """4x4 transform from a translation (3,) and a quaternion (w, x, y, z)."""
    T = np.eye(4, dtype=np.float64)
    T[:3, :3] = quat_to_rotmat(q_wxyz)
    T[:3, 3] = t
    return T


def slerp(q0: np.ndarray, q1: np.ndarray, u: float) -> np.ndarray:
    """Spherical interpolation of unit quaternions (w, x, y, z), u in [0, 1]."""
    dot = float(np.dot(q0, q1))
    if dot < 0:
        q1, dot = -q1, -dot
    if dot > 0.9995:
        q = q0 + u * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = np.arccos(dot)
    return (np.sin((1 - u) * theta) * q0 + np.sin(u * theta) * q1) / np.sin(theta)


def interpolate_pose(a: np.ndarray, b: np.ndarray, u: float) -> np.ndarray:
    """(4, 4) rigid pose between ``a`` (u = 0) and ``b`` (u = 1): linear translation, slerp rotation."""
    q = slerp(rotmat_to_quat(a[:3, :3]), rotmat_to_quat(b[:3, :3]), u)
    return pose_from_translation_quat((1 - u) * a[:3, 3] + u * b[:3, 3], q)


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = (0.0, 0.0, 1.0)) -> np.ndarray:
    """``world_from_camera`` (4, 4) of an OpenCV camera at ``eye`` looking at ``target``; ``up`` is world up."""
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-9:
        raise ValueError("look_at: viewing direction is parallel to 'up'")
    x /= np.linalg.norm(x)
    y = np.cross(z, x)  # image y points down when 'up' is up
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = x, y, z, eye
    return T


def intrinsics_from_hfov(width: int, height: int, hfov_deg: float) -> np.ndarray:
    """Pinhole K (3, 3) with square pixels, principal point at the image centre ((W-1)/2, (H-1)/2)."""
    fx = 0.5 * width / np.tan(np.radians(hfov_deg) / 2.0)
    return np.array([[fx, 0.0, (width - 1) / 2.0], [0.0, fx, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def scale_intrinsics(K: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """K for an image resized by (sx, sy), pixel-centre convention (u + 0.5) * s - 0.5."""
    K2 = np.array(K, dtype=np.float64, copy=True)
    K2[0, 0] *= sx
    K2[1, 1] *= sy
    K2[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
    K2[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
    return K2


def unproject_depth(depth: np.ndarray, K: np.ndarray, world_from_camera: np.ndarray | None = None):
    """Back-project valid pixels to 3D.

    depth: (H, W) float metres, 0 = invalid. Returns (points (M, 3) float64, pixel (v, u) indices (M,), (M,)).
    Points are in the world frame if ``world_from_camera`` is given, else in the camera frame.
    Pixel (u, v) with integer coordinates is the pixel centre (the K convention of this package).
    """
    v, u = np.nonzero(np.isfinite(depth) & (depth > 0))
    z = depth[v, u].astype(np.float64)
    x = (u - K[0, 2]) / K[0, 0] * z
    y = (v - K[1, 2]) / K[1, 1] * z
    pts = np.stack([x, y, z], axis=-1)
    if world_from_camera is not None:
        pts = pts @ world_from_camera[:3, :3].T + world_from_camera[:3, 3]
    return pts, v, u
