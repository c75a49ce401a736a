"""Offline mapping of a dataset in stream order (what ``clipgs map`` and the demo run)."""
from __future__ import annotations

import itertools
import resource
import time
from collections import Counter
from collections.abc import Callable, Iterable

import torch
from tqdm import tqdm

from clipgs.data.dataset import SequenceDataset
from clipgs.data.frame import Frame
from clipgs.mapping.channel_trainer import ChannelTrainer
from clipgs.mapping.config import MapperConfig
from clipgs.mapping.mapper import IncrementalMapper
from clipgs.mapping.memory import release_free_memory
from clipgs.mapping.state import describe_phases


def map_dataset(dataset: SequenceDataset, config: MapperConfig, max_frames: int | None = None,
                refine_iters: int = 0, progress: bool = True, trainer: ChannelTrainer | None = None,
                device: str | torch.device = "cpu", frame_step: int = 1) -> tuple[IncrementalMapper, dict]:
    """Feed the training frames (held-out views never) to a mapper, synchronously; returns it and a summary.

    trainer: trains the extra channels (a ``SemanticTrainer``); None: geometry only. device: where the map
    and its optimisation live ('cpu', 'cuda'). frame_step: only every this-many-th training frame (then the
    first ``max_frames`` of those). Unreadable frames are skipped and counted (summary 'rejected').
    """
    if frame_step < 1:
        raise ValueError(f"frame_step must be >= 1, got {frame_step}")
    indices = dataset.train_indices[::frame_step][:max_frames or None]
    unreadable = Counter()
    config = config.resolved(dataset.poses_from_odometry)
    return map_frames(dataset.readable_frames(indices, unreadable), config, len(indices), refine_iters, progress,
                      trainer=trainer, device=device, skipped=unreadable)


def map_frames(frames: Iterable[Frame], config: MapperConfig, total: int | None = None, refine_iters: int = 0,
               progress: bool = True, max_frames: int | None = None, trainer: ChannelTrainer | None = None,
               device: str | torch.device = "cpu", skipped: Counter | None = None) -> tuple[IncrementalMapper, dict]:
    """Feed frames in stream order (a dataset's, a bag's) to a mapper; returns it and a summary.

    skipped: frames the source could not read, by reason (filled while ``frames`` is consumed); reported in
    the summary's 'rejected' with the mapper's own rejections. Ctrl-C stops the feed, not the run: the map
    of the frames so far is returned and ``summary['interrupted']`` is True.
    """
    mapper = IncrementalMapper(config, device, trainer=trainer)
    t0 = time.perf_counter()
    count, interrupted = 0, False
    bar = tqdm(itertools.islice(frames, max_frames), total=total, desc="map", unit="frame", disable=not progress)
    try:
        for frame in bar:
            if mapper.add_frame(frame) == "keyframe":
                release_free_memory()
            count += 1
            s = mapper.stats
            bar.set_postfix(kf=s.keyframes, gauss=s.gaussians, loss=f"{s.last_loss:.4f}", refresh=False)
    except KeyboardInterrupt:
        interrupted = True
    mapper.trainer.close()  # the 2D source's thread, if any: what it delivered so far is what the refit sees
    t_finish, phase_seconds = time.perf_counter(), dict(mapper.stats.seconds)
    with tqdm(desc="finishing (3DCS round, decoder refit)", unit="step", disable=not progress, delay=0.5) as finishing:
        mapper.finish(0 if interrupted else refine_iters, follow_with(finishing))
    release_free_memory()
    end = time.perf_counter()
    seconds, finish_seconds, mapping_seconds = end - t0, end - t_finish, t_finish - t0
    s = mapper.stats
    summary = {
        "frames": count,
        "keyframes": s.keyframes,
        "skipped_non_keyframes": s.skipped_non_keyframes,
        "rejected": dict(s.rejected + (skipped or Counter())),
        "gaussians": s.gaussians,
        "iterations": s.iterations,
        "seconds": seconds,
        "mapping_seconds": mapping_seconds,  # of which: while the frames streamed in
        "finish_seconds": finish_seconds,  # and the end (refine, prune, final 3DCS round, decoder refit)
        # rates while the frames streamed in (what a live stream must keep up with); the end comes once, after
        "frames_per_s": count / max(mapping_seconds, 1e-9),
        "keyframes_per_s": s.keyframes / max(mapping_seconds, 1e-9),
        "seconds_per_iteration": s.seconds_per_iteration,  # keyframe steps only (the trainer's extra: phase 'rounds')
        "phase_seconds": phase_seconds,  # where the time while mapping went (MAPPING_PHASES), the end not included
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "interrupted": interrupted,
        "poses_refined": s.poses_refined,
        "drift_correction": s.drift_correction,
        "frames_tracked": s.frames_tracked,
        "frames_not_tracked": s.frames_not_tracked,
    }
    return mapper, summary


def keyframe_time_breakdown(summary: dict) -> str:
    """One line: ms per keyframe while mapping, by phase (``summary['phase_seconds']``, MAPPING_PHASES), the
    rest (reading and checking frames, keyframe selection, tracking) last; phases under 0.5 ms left out."""
    phases = summary["phase_seconds"]
    rest = summary["mapping_seconds"] - sum(phases.values())
    return "per keyframe: " + describe_phases(phases, summary["keyframes"], rest, "frames read, checked, tracked")


def follow_with(bar: tqdm) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` callback that moves a tqdm bar."""
    def update(done: int, total: int) -> None:
        if bar.total != total:
            bar.reset(total)
        bar.update(done - bar.n)
    return update
