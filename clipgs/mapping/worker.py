"""MapperWorker: runs an IncrementalMapper on a background thread with a queue of one frame."""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter

from clipgs.data.frame import Frame
from clipgs.mapping.mapper import IncrementalMapper
from clipgs.mapping.memory import release_free_memory
from clipgs.mapping.state import MapSnapshot
from clipgs.openmp import release_thread_team

log = logging.getLogger(__name__)


class MapperWorker:
    """Feeds frames to a mapper without ever blocking the caller or queueing without bound.

    Two threads, each taking frames from a one-frame slot: *prepare* checks every frame it gets, brings it to
    the mapping resolution and tracks its pose against the previous one (``IncrementalMapper.prepare``, ~13 ms
    at 160x120 with tracking on), *map* integrates the newest prepared frame (``IncrementalMapper.integrate``;
    a keyframe can take a second). A frame arriving while a slot is full replaces the waiting one, counted in
    ``dropped``: a live robot wants the freshest view, and memory stays flat however fast frames arrive. Pose
    tracking sees far more frames than the mapper, so a fast turn between two keyframes is followed in small steps.
    """

    STAGES = ("prepare", "map")

    def __init__(self, mapper: IncrementalMapper, idle_refit_s: float = 0.0) -> None:
        """idle_refit_s: once no keyframe has been mapped for this long (the robot stopped, the stream paused), the
        map thread runs the trainer's ``finish`` (the semantic decoder refit) once per new map, taking the map's
        lock step by step (renders and queries go on meanwhile; frames wait in the slot as while mapping); 0: off."""
        self.mapper, self.idle_refit_s = mapper, idle_refit_s
        self.idle_refits = 0  # refits run while the stream was quiet
        self._refit_keyframes = 0  # keyframes the map had at the last idle refit
        self._last_keyframe = time.perf_counter()
        self.dropped = 0
        self.processed = 0  # frames the mapper finished with: rejected, skipped or mapped as a keyframe
        self.outcomes: Counter = Counter()
        self.prepared = 0  # frames through the prepare stage (checked, resized, tracked or rejected)
        self.prepare_seconds = 0.0  # their time on the prepare thread
        self.keyframe_seconds = 0.0  # the map thread's time on frames that became keyframes
        self.error: BaseException | None = None
        self._pending: dict[str, Frame | None] = dict.fromkeys(self.STAGES)
        self._busy = dict.fromkeys(self.STAGES, False)
        self._stop = False
        self._cv = threading.Condition()
        # The thread that set the mapper up (usually the main one) ran PyTorch's parallel loops on an OpenMP team
        # of its own; held on to, it would make the map thread's team sleep between regions (clipgs.openmp).
        release_thread_team()
        mapper.trainer.stream_behind = self._frames_waiting  # optional trainer work yields to waiting frames
        self._threads = [threading.Thread(target=self._run, args=(stage,), name=f"clipgs-{stage}", daemon=True)
                         for stage in self.STAGES]
        for thread in self._threads:
            thread.start()

    def submit(self, frame: Frame) -> bool:
        """Hand a frame over; returns False if it displaced a waiting frame (one frame was dropped)."""
        with self._cv:
            if self._stop:
                raise RuntimeError("MapperWorker is stopped")
            return self._put("prepare", frame)

    def snapshot(self) -> MapSnapshot:
        """Map + decoder + counters of one instant (see ``IncrementalMapper.snapshot``); never waits for a
        whole keyframe, only for the optimisation step in progress."""
        return self.mapper.snapshot()

    @property
    def ms_per_frame_prepared(self) -> float:
        """Mean time the prepare thread took per frame (it shares the cores with the mapper: a stream's rate times
        this is a core's share taken from mapping)."""
        return 1e3 * self.prepare_seconds / self.prepared if self.prepared else float("nan")

    @property
    def seconds_per_keyframe(self) -> float:
        """Mean time a keyframe took on the map thread (refine, grow, optimise, prune, 3DCS work): about one frame
        in this many seconds times the stream's rate is mapped."""
        keyframes = self.outcomes["keyframe"]
        return self.keyframe_seconds / keyframes if keyframes else float("nan")

    @property
    def busy(self) -> bool:
        with self._cv:
            return self._working()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no frame is waiting or being mapped; False on timeout."""
        with self._cv:
            return self._cv.wait_for(lambda: not self._working(), timeout)

    def stop(self, timeout: float | None = None) -> None:
        """Finish the frames in hand (waiting ones are dropped), then end the threads."""
        with self._cv:
            self._stop = True
            for stage in self.STAGES:
                if self._pending[stage] is not None:
                    self.dropped += 1
                    self._pending[stage] = None
            self._cv.notify_all()
        for thread in self._threads:
            thread.join(timeout)

    def _frames_waiting(self) -> bool:
        """Whether a frame waits in a slot (read without the lock: one reference per slot, a hint)."""
        return any(f is not None for f in self._pending.values())

    def _working(self) -> bool:
        return any(self._busy.values()) or any(f is not None for f in self._pending.values())

    def _put(self, stage: str, frame: Frame) -> bool:
        """Into a stage's slot (the caller holds the lock); False if a waiting frame was displaced."""
        displaced = self._pending[stage] is not None
        self.dropped += displaced
        self._pending[stage] = frame
        self._cv.notify_all()
        return not displaced

    def _refit_due(self, stage: str) -> bool:
        """Whether the map thread should refit now (the caller holds the lock)."""
        return (stage == "map" and self.idle_refit_s > 0 and not self._stop
                and self.mapper.stats.keyframes > self._refit_keyframes
                and time.perf_counter() - self._last_keyframe >= self.idle_refit_s)

    def _idle_refit(self) -> None:
        """The trainer's ``finish`` on the map thread (the map's only writer: its renders need no lock)."""
        keyframes = self.mapper.stats.keyframes
        try:
            self.mapper.trainer.finish(self.mapper, stop=lambda: self._stop, ended=False)
        except Exception as exc:  # mapping goes on; the next quiet spell tries again only after a new keyframe
            log.exception("idle refit failed")
            self.error = exc
        release_free_memory()
        with self._cv:
            self._refit_keyframes, self.idle_refits, self._busy["map"] = keyframes, self.idle_refits + 1, False
            self._cv.notify_all()

    def _run(self, stage: str) -> None:
        poll = self.idle_refit_s / 4 if stage == "map" and self.idle_refit_s > 0 else None
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._pending[stage] is not None or self._stop or self._refit_due(stage),
                                  poll)
                refit = self._refit_due(stage)
                if not refit:
                    if self._pending[stage] is None:
                        if self._stop:
                            return
                        continue  # polled: no refit due yet
                    frame, self._pending[stage] = self._pending[stage], None
                self._busy[stage] = True
            if refit:
                self._idle_refit()
                continue
            started = time.perf_counter()
            try:
                if stage == "prepare":
                    outcome = self.mapper.prepare(frame)
                else:
                    outcome = self.mapper.integrate(frame)
                    if outcome == "keyframe":
                        release_free_memory()
            except Exception as exc:  # keep mapping: the next frame may be fine
                log.exception("mapper failed on frame %s", getattr(frame, "index", "?"))
                self.error, outcome = exc, f"error:{type(exc).__name__}"
            took = time.perf_counter() - started
            with self._cv:
                if stage == "prepare":
                    self.prepared += 1
                    self.prepare_seconds += took
                elif outcome == "keyframe":
                    self.keyframe_seconds += took
                    self._last_keyframe = time.perf_counter()
                if stage == "prepare" and not isinstance(outcome, str):  # prepared: on to the map stage
                    if self._stop:
                        self.dropped += 1
                    else:
                        self._put("map", outcome)
                else:
                    self.processed += 1
                    self.outcomes[outcome.split(":")[0]] += 1
                self._busy[stage] = False
                self._cv.notify_all()
