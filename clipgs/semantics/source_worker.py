"""The 2D semantic source off the mapping path: its own thread, a queue of one, the newest keyframe wins.

The mapper hands each keyframe's frame over and goes on at once; the worker runs the source (CLIP, SAM)
and fills in the keyframe's annotation when it is done. A keyframe whose turn never came (a newer one
replaced it while the worker was busy) keeps no semantics and is counted as skipped; its geometry is mapped
as usual. Results always land on the keyframe they were computed from.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from clipgs.data.frame import Frame
from clipgs.openmp import release_thread_team
from clipgs.semantics.sources import MaskEmbeddings
from clipgs.semantics.supervision import KeyframeSemantics, compact_ids

log = logging.getLogger(__name__)


def run_source(source: Callable[[Frame], MaskEmbeddings], frame: Frame, failures: Counter) -> MaskEmbeddings | None:
    """``source(frame)`` with its mask ids compacted; None when it raised (counted in ``failures`` by message; the
    first failure is logged in one line, later ones only counted): the keyframe then has no semantics."""
    try:
        masks = source(frame)
    except Exception as exc:
        failures[f"{type(exc).__name__}: {exc}"[:120]] += 1
        if sum(failures.values()) == 1:
            log.warning("semantic source failed on frame %s (%s: %s); mapping geometry only for it",
                        frame.index, type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else "")
        return None
    return dataclasses.replace(masks, mask_ids=compact_ids(masks.mask_ids))


def deliver_masks(annotation: KeyframeSemantics, masks: MaskEmbeddings | None) -> None:
    """Store a worker's result on its keyframe: one reference assignment, so the mapping thread sees None or the
    whole result."""
    annotation.masks = masks


class SourceWorker:
    """run(frame) -> result or None (failed), called on the worker thread; deliver(annotation, result) stores
    it. ``pending``/``skipped`` count keyframes; ``last_lag_s`` is the last submit-to-ready time."""

    def __init__(self, run: Callable[[Frame], Any], deliver: Callable[[Any, Any], None]) -> None:
        self._run, self._deliver = run, deliver
        self._cv = threading.Condition()
        self._job: tuple[Frame, Any, float] | None = None
        self._busy = False
        self._stop = False
        self.skipped = 0
        self.last_lag_s = float("nan")
        self._thread = threading.Thread(target=self._loop, name="clipgs-semantic-source", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        with self._cv:
            return int(self._job is not None) + int(self._busy)

    def submit(self, frame: Frame, annotation: Any) -> None:
        """Queue ``frame`` for the source; a frame still waiting is replaced (and counted as skipped)."""
        with self._cv:
            if self._job is not None:
                self.skipped += 1
            self._job = (frame, annotation, time.monotonic())
            self._cv.notify()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is queued or running (tests, the end of an offline run). False on timeout."""
        with self._cv:
            return self._cv.wait_for(lambda: self._job is None and not self._busy, timeout)

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._job is not None or self._stop)
                if self._stop:
                    return
                (frame, annotation, submitted), self._job = self._job, None
                self._busy = True
            try:
                self._deliver(annotation, self._run(frame))
            finally:
                release_thread_team()  # idle until the next keyframe: no team beside the map thread's
                with self._cv:
                    self._busy = False
                    self.last_lag_s = time.monotonic() - submitted
                    self._cv.notify_all()
