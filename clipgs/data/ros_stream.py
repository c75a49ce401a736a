"""Turning a ROS-style stream (colour, depth, camera_info, tf or a pose topic) into Frames, without ROS.

The live node and bag replay share these classes (no tf2_ros, no message_filters): colour and depth are
paired by :class:`ApproxTimePairer`, poses come from a :class:`TransformBuffer` fed by /tf, /tf_static or a
pose topic, pairs whose pose has not arrived yet wait in :class:`PoseWait`, and :class:`FrameAssembler`
builds every Frame.
"""
from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from clipgs.data.frame import Frame
from clipgs.data.ros_messages import (
    MessageError,
    depth_from_image,
    intrinsics_from_camera_info,
    rgb_from_image,
    stamp_to_seconds,
)
from clipgs.errors import SettingsError
from clipgs.geometry import interpolate_pose, invert_rigid
from clipgs.settings import Settings, at_least, greater_than, one_of, setting

POSE_TOPIC_TYPES = ("PoseStamped", "Odometry")


@dataclass
class StreamSettings(Settings):
    """Topics and frames; the same keys as the node's ROS parameters (config/mapping.yaml)."""

    color_topic: str = setting("/camera/color/image_raw",
                               "sensor_msgs/Image colour topic (rgb8, bgr8, rgba8, bgra8, mono8)")
    depth_topic: str = setting("/camera/aligned_depth_to_color/image_raw",
                               "sensor_msgs/Image depth topic aligned to colour (16UC1 mm or 32FC1 m)")
    camera_info_topic: str = setting("/camera/color/camera_info",
                                     "sensor_msgs/CameraInfo of the colour camera (K; images assumed rectified)")
    pose_topic: str = setting("", "empty: poses from tf; else a geometry_msgs/PoseStamped or nav_msgs/Odometry "
                                  "topic")
    pose_topic_type: str = setting("PoseStamped", "message type of pose_topic: PoseStamped or Odometry",
                                   one_of(POSE_TOPIC_TYPES))
    map_frame: str = setting("map", "fixed frame of the map and of all outputs")
    camera_frame: str = setting("", "camera optical frame for tf lookups; empty: the colour image's "
                                    "header.frame_id")
    sync_slop_s: float = setting(0.05, "max stamp difference (s) between colour and depth to pair them",
                                 at_least(0.0))
    depth_scale: float = setting(1000.0, "16UC1 depth units per metre", greater_than(0.0))
    tf_tolerance_s: float = setting(0.1, "max extrapolation (s) of pose lookups", at_least(0.0))
    pose_wait_s: float = setting(0.5, "how long (s) an image pair waits for a pose at its stamp (late tf or "
                                      "odometry); no thread sleeps meanwhile", at_least(0.0))

    @property
    def poses_from_odometry(self) -> bool:
        """The poses come from an Odometry topic (they drift: pose refinement turns on, see MapperConfig)."""
        return bool(self.pose_topic) and self.pose_topic_type == "Odometry"

    def validate(self) -> None:
        if not self.map_frame.strip("/"):
            raise SettingsError("setting map_frame must name a frame, got an empty string")


class PoseNotYetError(LookupError):
    """The stamp is newer than the newest transform: the pose may still arrive (late tf / odometry)."""


class TransformBuffer:
    """A small tf2-like buffer: parent->child transforms over time, looked up through the frame tree.

    Dynamic transforms are interpolated (linear translation, slerp rotation) between the samples that
    bracket the stamp; extrapolation beyond ``tolerance`` seconds is an error. History older than
    ``max_age`` seconds behind the newest sample is dropped, so memory stays flat on long streams.
    """

    def __init__(self, tolerance: float = 0.1, max_age: float | None = 60.0) -> None:
        self.tolerance, self.max_age = tolerance, max_age
        self.parent: dict[str, str] = {}
        self.static: dict[str, np.ndarray] = {}  # child -> parent_from_child
        self.series: dict[str, tuple[list[float], list[np.ndarray]]] = {}  # child -> (stamps, transforms)

    def add(self, parent: str, child: str, stamp: float, parent_from_child: np.ndarray, static: bool = False) -> None:
        parent, child = parent.lstrip("/"), child.lstrip("/")
        if parent == child:
            raise ValueError(f"transform from '{child}' to itself")
        self.parent[child] = parent
        if static:
            self.static[child] = np.asarray(parent_from_child, dtype=np.float64)
            return
        stamps, values = self.series.setdefault(child, ([], []))
        i = bisect.bisect_right(stamps, stamp)
        stamps.insert(i, stamp)
        values.insert(i, np.asarray(parent_from_child, dtype=np.float64))
        if self.max_age is not None:
            cut = bisect.bisect_left(stamps, stamps[-1] - self.max_age)
            del stamps[:cut], values[:cut]

    def _edge(self, child: str, stamp: float, wait: bool) -> np.ndarray:
        if child in self.static:
            return self.static[child]
        stamps, values = self.series[child]
        i = bisect.bisect_left(stamps, stamp)
        if i < len(stamps) and stamps[i] == stamp:
            return values[i]
        if wait and i == len(stamps):
            raise PoseNotYetError(f"no transform {self.parent[child]} -> {child} at t={stamp:.3f} yet (newest "
                             f"{stamps[-1]:.3f})")
        if i == 0 or i == len(stamps):
            j = 0 if i == 0 else len(stamps) - 1
            if abs(stamps[j] - stamp) > self.tolerance:
                raise LookupError(f"no transform {self.parent[child]} -> {child} near t={stamp:.3f} "
                                  f"(have {stamps[0]:.3f} .. {stamps[-1]:.3f})")
            return values[j]
        t0, t1 = stamps[i - 1], stamps[i]
        u = (stamp - t0) / (t1 - t0)
        return interpolate_pose(values[i - 1], values[i], u)

    def _root_path(self, frame: str) -> list[str]:
        path = [frame]
        while path[-1] in self.parent:
            path.append(self.parent[path[-1]])
            if len(path) > 64:
                raise LookupError(f"transform tree has a loop at '{frame}'")
        return path

    def lookup(self, target: str, source: str, stamp: float, wait: bool = False) -> np.ndarray:
        """target_from_source (4, 4) at ``stamp`` seconds. ``wait``: raise :class:`PoseNotYetError` rather than
        extrapolate when the stamp is newer than a chain's newest transform (a later sample may bracket it)."""
        target, source = target.lstrip("/"), source.lstrip("/")
        up_s, up_t = self._root_path(source), self._root_path(target)
        common = next((f for f in up_s if f in set(up_t)), None)
        if common is None:
            error = PoseNotYetError if wait else LookupError  # waiting: the tree may still be growing
            raise error(f"frames '{target}' and '{source}' are not connected (known: {sorted(self.parent)})")
        T_common_source = np.eye(4)
        for child in up_s[: up_s.index(common)]:
            T_common_source = self._edge(child, stamp, wait) @ T_common_source
        T_common_target = np.eye(4)
        for child in up_t[: up_t.index(common)]:
            T_common_target = self._edge(child, stamp, wait) @ T_common_target
        return invert_rigid(T_common_target) @ T_common_source


class ApproxTimePairer:
    """Pairs colour and depth messages whose stamps differ by at most ``slop`` seconds (bounded queues)."""

    def __init__(self, slop: float = 0.05, queue_size: int = 10) -> None:
        self.slop, self.queue_size = slop, queue_size
        self.queues: dict[str, list[tuple[float, Any]]] = {"color": [], "depth": []}
        self.dropped = 0

    def push(self, kind: str, stamp: float, msg: Any) -> tuple[float, Any, Any] | None:
        """Add a message; returns (stamp of the colour image, colour msg, depth msg) when a pair completes."""
        other = "depth" if kind == "color" else "color"
        candidates = self.queues[other]
        best = min(candidates, key=lambda item: abs(item[0] - stamp), default=None)
        if best is not None and abs(best[0] - stamp) <= self.slop:
            # The pair leaves the queue; anything older than it can no longer pair with anything newer.
            for k, limit in ((kind, stamp), (other, best[0])):
                kept = [item for item in self.queues[k] if item[0] > limit]
                self.dropped += len(self.queues[k]) - len(kept) - (k == other)
                self.queues[k] = kept
            color, depth = ((stamp, msg), best) if kind == "color" else (best, (stamp, msg))
            return color[0], color[1], depth[1]
        queue = self.queues[kind]
        queue.append((stamp, msg))
        if len(queue) > self.queue_size:
            queue.pop(0)
            self.dropped += 1
        return None


@dataclass
class WaitingPair:
    """A colour/depth pair waiting for its pose; ``arrived``: monotonic seconds when it was paired."""

    stamp: float
    color: Any
    depth: Any
    arrived: float
    waited: bool = False  # its pose was not there when it was first looked up


class PoseWait:
    """Image pairs waiting (bounded count, bounded time) until a pose at their stamp can be interpolated.

    Pairs leave in stamp order: ``resolve`` hands out every pair whose pose is known, and gives up on a
    pair after ``wait_s`` (then the pose is looked up once more, allowing the buffer's small extrapolation,
    before the pair counts as no pose). Nothing blocks: call ``resolve`` when poses or time arrive.
    """

    def __init__(self, wait_s: float, capacity: int = 16) -> None:
        self.wait_s, self.capacity = wait_s, capacity
        self.pairs: list[WaitingPair] = []
        self.lost: Counter = Counter()  # reason -> pairs given up on

    def add(self, pair: WaitingPair) -> None:
        self.pairs.append(pair)
        self.pairs.sort(key=lambda p: p.stamp)
        while len(self.pairs) > self.capacity:
            self.pairs.pop(0)
            self.lost["queue_full"] += 1

    def resolve(self, lookup: Callable[[WaitingPair, bool], np.ndarray], now: float) -> list[tuple[WaitingPair,
                                                                                                 np.ndarray]]:
        """(pair, pose) for each pair ready now, oldest first. ``lookup(pair, wait)`` returns the pose or raises
        :class:`PoseNotYetError` (wait on) or LookupError (no such pose)."""
        ready = []
        while self.pairs:
            pair = self.pairs[0]
            expired = now - pair.arrived >= self.wait_s
            try:
                pose = lookup(pair, not expired)
            except PoseNotYetError:
                pair.waited = True
                break  # the oldest waits; newer pairs wait behind it (frames stay in stamp order)
            except LookupError:
                self.pairs.pop(0)
                self.lost["pose_wait_expired" if expired else "no_transform"] += 1
                continue
            ready.append((self.pairs.pop(0), pose))
        return ready


class FrameAssembler:
    """Colour + depth messages + the latest camera_info + a pose -> Frame (clear errors otherwise)."""

    def __init__(self, depth_scale: float = 1000.0) -> None:
        if not (np.isfinite(depth_scale) and depth_scale > 0):
            raise ValueError(f"depth_scale must be a positive number of units per metre, got {depth_scale}")
        self.depth_scale = depth_scale
        self.K: np.ndarray | None = None
        self.info_size: tuple[int, int] | None = None
        self.count = 0

    def set_camera_info(self, msg: Any) -> None:
        self.K, w, h = intrinsics_from_camera_info(msg)
        self.info_size = (w, h)

    def assemble(self, color_msg: Any, depth_msg: Any, world_from_camera: np.ndarray) -> Frame:
        if self.K is None:
            raise MessageError("no camera_info received yet: intrinsics unknown (check the camera_info topic)")
        rgb = rgb_from_image(color_msg)
        depth = depth_from_image(depth_msg, self.depth_scale)
        if depth.shape != rgb.shape[:2]:
            raise MessageError(f"depth {depth.shape[1]}x{depth.shape[0]} differs from colour "
                               f"{rgb.shape[1]}x{rgb.shape[0]}: subscribe to depth aligned to the colour camera")
        if (rgb.shape[1], rgb.shape[0]) != self.info_size:
            raise MessageError(f"camera_info is for {self.info_size[0]}x{self.info_size[1]} but the colour image is "
                               f"{rgb.shape[1]}x{rgb.shape[0]}")
        frame = Frame(rgb, depth, self.K, world_from_camera, timestamp=stamp_to_seconds(color_msg.header.stamp),
                      index=self.count)
        self.count += 1
        return frame


def body_from_optical() -> np.ndarray:
    """(4, 4) camera body frame (x forward, z up) from optical frame (z forward, x right, y down), REP 103."""
    T = np.eye(4)
    T[:3, :3] = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    return T

