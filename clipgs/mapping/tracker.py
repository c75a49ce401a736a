"""PoseTracker: odometry poses in, map-frame poses out.

Two refinements, both ICP of a frame's sensor depth against an earlier view's sensor depth
(:func:`clipgs.mapping.pose_refine.icp_refine_pose`):

- ``track``, every frame the mapper is given (the growth-stride pixels, a few steps: ~12 ms a frame at 160 x 120
  with the resizing): against the previous tracked frame, so the pose chain follows the camera in small steps
  that always overlap. A fast turn between two keyframes, which the keyframe refinement alone could not bridge,
  is followed frame by frame. Every second pixel would cost 9 ms and tracks the apartment as well, but cost the
  pybullet room 1.75 dB (22.11 against 23.86), so all of them are paired.
- ``refine_keyframe``, each new keyframe: against the ``pose_refine_views`` held keyframes nearest in pose at
  once, so a revisit snaps back onto the first visit's view and the chain's own slow drift is taken out.

The odometry -> map correction found so far carries to every later frame. ``track`` and ``refine_keyframe`` may
run on different threads (the worker's prepare and map stages): a keyframe's fix that lands while a frame is
being tracked is applied to that frame as well.
"""
from __future__ import annotations

import dataclasses
import threading

import numpy as np

from clipgs.data.frame import Frame
from clipgs.geometry import invert_rigid
from clipgs.mapping.config import MapperConfig
from clipgs.mapping.gaussian_map import GaussianMap
from clipgs.mapping.keyframes import KeyframeStore
from clipgs.mapping.pose_refine import correction_size, icp_against_keyframes, icp_refine_pose, refine_pose, rigid
from clipgs.mapping.state import MapperStats, timed_phase


class PoseTracker:
    """Holds the odometry -> map correction and the last tracked frame; reports into ``stats``."""

    def __init__(self, config: MapperConfig, stats: MapperStats) -> None:
        """config: resolved (pose_refine_*, track_iters, w_depth, backend are read)."""
        self.config, self.stats = config, stats
        self.correction = np.eye(4)  # odometry -> map frame
        self._fixes = np.eye(4)  # product of every keyframe fix so far (world frame)
        self._previous: Frame | None = None  # the last tracked frame, its pose in the map frame
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.config.pose_refine_iters > 0 or self.config.track_iters > 0

    def track(self, frame: Frame) -> Frame:
        """The frame (at mapping resolution, odometry pose) with its pose in the map frame: the correction so far,
        then, with ``track_iters`` > 0, ICP against the previous frame. A frame ICP cannot pair (a jump, no
        overlap) keeps the corrected odometry pose."""
        with self._lock:
            given, correction, fixes, previous = frame.world_from_camera, self.correction, self._fixes, self._previous
        pose = correction @ given
        if self.config.track_iters > 0 and previous is not None and previous.depth.shape == frame.depth.shape:
            r = icp_refine_pose(dataclasses.replace(frame, world_from_camera=pose), previous.depth,
                                previous.world_from_camera, self.config.track_iters)  # growth-stride points
            self.stats.frames_tracked += 1
            if r.ok:
                pose = r.pose
            else:
                self.stats.frames_not_tracked += 1
        with self._lock:
            pose = rigid(self._fixes @ invert_rigid(fixes) @ pose)  # a keyframe fix landed meanwhile
            self.correction = rigid(pose @ invert_rigid(given))
            tracked = dataclasses.replace(frame, world_from_camera=pose)
            self._previous = tracked
            self.stats.drift_correction = correction_size(self.correction)
        return tracked

    @timed_phase("pose_refine")
    def refine_keyframe(self, frame: Frame, keyframes: KeyframeStore, gaussians: GaussianMap) -> Frame:
        """A new keyframe's pose refined (``pose_refine_method``) against the held keyframes or the map; the fix
        carries to the frames tracked after it."""
        c, given, moved, turned = self.config, frame.world_from_camera, 0.0, 0.0
        for method in c.pose_refine_method.split("+"):
            r = (icp_against_keyframes(frame, keyframes, c.pose_refine_iters, c.pose_refine_views,
                                       c.pose_refine_colour) if method == "icp" else
                 refine_pose(gaussians, frame, c.pose_refine_iters, c.pose_refine_lr, c.w_depth,
                             min_coverage=c.pose_refine_min_coverage, min_gain=c.pose_refine_min_gain,
                             backend=c.backend))
            frame = dataclasses.replace(frame, world_from_camera=r.pose)
            moved, turned = moved + r.moved_m, turned + r.turned_deg
        fix = rigid(frame.world_from_camera @ invert_rigid(given))
        with self._lock:
            self._fixes = rigid(fix @ self._fixes)
            self.correction = rigid(fix @ self.correction)
            if self._previous is not None:
                self._previous = dataclasses.replace(self._previous,
                                                     world_from_camera=rigid(fix @ self._previous.world_from_camera))
            self.stats.poses_refined += 1
            self.stats.last_pose_correction = (moved, turned)
            self.stats.drift_correction = correction_size(self.correction)
        return frame
