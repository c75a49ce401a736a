"""What the mapper reports: its counters, and one consistent snapshot of the map for renders, saves, queries."""
from __future__ import annotations

import functools
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from clipgs.mapping.gaussian_map import GaussianMap

# Where a mapper's time goes (MapperStats.seconds): phase -> its name in the per-keyframe lines.
MAPPING_PHASES = {
    "steps": "steps",  # keyframe optimisation steps (the iterations)
    "rounds": "trainer rounds",  # the channel trainer's work around a round of steps (3DCS novel-view steps, anchors)
    "keyframe_work": "3DCS / votes",  # the channel trainer's work after each keyframe (3DCS relabelling, label votes)
    "growth": "growth",  # adding a keyframe: its growth render, new Gaussians, the 2D source's call (unless async)
    "pose_refine": "pose refinement",  # refining new keyframes' poses against held keyframes
    "prune": "pruning",
}


def describe_phases(seconds: dict[str, float], keyframes: int, other: float | None = None,
                    other_name: str = "other") -> str:
    """'steps 524 ms, 3DCS / votes 121 ms, ...': ms per keyframe by phase (``MapperStats.seconds``), ``other``
    (seconds no phase holds, named ``other_name``) last; under 0.5 ms a keyframe left out."""
    n, parts = max(keyframes, 1), [(MAPPING_PHASES.get(k, k), v) for k, v in seconds.items()]
    if other is not None:
        parts.append((other_name, other))
    return ", ".join(f"{name} {1e3 * v / n:.0f} ms" for name, v in parts if 1e3 * v / n >= 0.5)


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
    # Where the mapping time went: phase -> seconds (MAPPING_PHASES; all present from the start, so a copy taken on
    # another thread never meets a dict that grows). Each phase runs on the mapping thread.
    seconds: Counter = field(default_factory=lambda: Counter(dict.fromkeys(MAPPING_PHASES, 0.0)))

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        """Adds the time spent inside to ``seconds[phase]``."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - t0

    @property
    def seconds_per_iteration(self) -> float:
        """Mean time of one keyframe optimisation step (the trainer's extra steps are in ``seconds['rounds']``)."""
        return self.seconds["steps"] / self.iterations if self.iterations else float("nan")


def timed_phase(phase: str):
    """Decorator: a method of an object with ``stats`` (:class:`MapperStats`) adds its time to ``phase``."""
    def wrap(method):
        @functools.wraps(method)
        def run(self, *args, **kwargs):
            with self.stats.timed(phase):
                return method(self, *args, **kwargs)
        return run
    return wrap


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
