"""What the mapper reports: its counters, and one consistent snapshot of the map for renders, saves, queries."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from clipgs.mapping.gaussian_map import GaussianMap


@dataclass
class MapperStats:
    """Counters a user (or the ROS node) can log. Times in seconds."""

    frames_received: int = 0
    keyframes: int = 0
    skipped_non_keyframes: int = 0
    rejected: Counter = field(default_factory=Counter)  # reason -> count
    iterations: int = 0
    gaussians: int = 0
    added: int = 0
    pruned: int = 0
    keyframes_held: int = 0  # in the keyframe store now (keyframes counts every keyframe ever made)
    keyframe_bytes: int = 0
    keyframes_evicted: int = 0
    poses_refined: int = 0  # keyframes whose pose was refined (against the nearest keyframe)
    frames_tracked: int = 0  # frames whose pose was refined against the previous frame
    frames_not_tracked: int = 0  # of those, frames ICP could not pair (kept the corrected odometry pose)
    clock_resets: int = 0
    relocalisations: int = 0  # accepted again after a pose jump (consistent poses in a row)
    last_pose_correction: tuple[float, float] = (0.0, 0.0)  # metres, degrees
    drift_correction: tuple[float, float] = (0.0, 0.0)  # metres, degrees: odometry -> map, all refinements
    last_loss: float = float("nan")
    last_parts: dict = field(default_factory=dict)
    optimise_seconds: float = 0.0

    @property
    def seconds_per_iteration(self) -> float:
        return self.optimise_seconds / self.iterations if self.iterations else float("nan")


@dataclass
class MapSnapshot:
    """The map of one instant, detached from the mapper (safe to use while it goes on).

    gaussians: a detached copy of the map. decoder: what turns its extra channels into meaning (the channel
    trainer's snapshot, e.g. the semantic decoder; None without one), trained on exactly this map state.
    stats / trainer_counters: the counters at that instant.
    """

    gaussians: GaussianMap
    decoder: Any = None
    stats: MapperStats = field(default_factory=MapperStats)
    trainer_counters: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.gaussians)
