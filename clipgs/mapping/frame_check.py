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


class PoseJumpGate:
    """Rejects a camera that moved faster than ``max_speed_mps`` since the last accepted frame (a 100 m odometry
    glitch would otherwise build a second copy of the room). After ``relocalise_after`` rejected frames in a
    row whose poses agree with each other, the newest is accepted and becomes the reference: the robot was
    relocalised and its poses are consistent again. ``max_speed_mps`` 0 turns the check off.

    Time steps shorter than ``min_dt_s`` count as ``min_dt_s`` (duplicate or jittery stamps); a step back in
    time (clock reset) restarts the check.
    """

    def __init__(self, max_speed_mps: float, relocalise_after: int = 3, min_dt_s: float = 0.1) -> None:
        self.max_speed, self.relocalise_after, self.min_dt = max_speed_mps, relocalise_after, min_dt_s
        self._last: tuple[np.ndarray, float] | None = None
        self._pending: list[tuple[np.ndarray, float]] = []
        self.relocalisations = 0

    def _consistent(self, a: tuple[np.ndarray, float], b: tuple[np.ndarray, float]) -> bool:
        dt = b[1] - a[1]
        return dt < 0 or float(np.linalg.norm(b[0] - a[0])) <= self.max_speed * max(dt, self.min_dt)

    def accept(self, position: np.ndarray, timestamp: float) -> bool:
        """True if a frame at ``position`` (3,) m, ``timestamp`` s may be mapped; updates the reference if so."""
        here = (np.asarray(position, np.float64).copy(), float(timestamp))
        if self.max_speed <= 0 or self._last is None or self._consistent(self._last, here):
            self._last, self._pending = here, []
            return True
        if self._pending and not self._consistent(self._pending[-1], here):
            self._pending = []
        self._pending.append(here)
        if len(self._pending) >= self.relocalise_after:
            self._last, self._pending = here, []
            self.relocalisations += 1
            return True
        return False
