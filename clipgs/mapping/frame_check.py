"""Cheap checks that decide whether a frame may enter the mapper, with a reason when it may not."""
from __future__ import annotations

import numpy as np

from clipgs.data.frame import Frame
from clipgs.geometry import is_rigid


def rejection_reason(frame: Frame, expected_size: tuple[int, int] | None, last_timestamp: float | None,
                     min_valid_depth_fraction: float, clock_reset_s: float = float("inf")) -> str | None:
    """None if the frame is usable, else a short reason (also the key under which it is counted).

    expected_size: (width, height) of earlier frames, or None for the first frame. A timestamp more than
    ``clock_reset_s`` behind the last one is a clock reset (bag loop, sim time restarted, recovery from a
    stamp far ahead) and passes; a smaller step back is a stale or reordered frame and does not.
    """
    if expected_size is not None and (frame.rgb.shape[1], frame.rgb.shape[0]) != tuple(expected_size):
        return "wrong_size"
    if frame.depth.shape != frame.rgb.shape[:2]:
        return "wrong_size"
    if not np.all(np.isfinite(frame.world_from_camera)):
        return "non_finite_pose"
    if not is_rigid(frame.world_from_camera, tol=1e-3):
        return "non_rigid_pose"
    if not np.isfinite(frame.timestamp):
        return "bad_timestamp"
    if last_timestamp is not None and 0 < last_timestamp - frame.timestamp <= clock_reset_s:
        return "timestamp_backwards"
    depth = frame.depth
    valid = np.isfinite(depth) & (depth > 0)
    if not valid.any():
        return "no_valid_depth"
    if valid.mean() < min_valid_depth_fraction:
        return "too_little_depth"
    return None
