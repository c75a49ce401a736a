"""MapperWorker: runs an IncrementalMapper on a background thread with a queue of one frame."""
from __future__ import annotations

import ctypes
import functools
import logging
import threading
from collections import Counter

from clipgs.data.frame import Frame
from clipgs.mapping.mapper import IncrementalMapper
from clipgs.mapping.state import MapSnapshot

log = logging.getLogger(__name__)


@functools.cache
def _libc_trim():
    """glibc's malloc_trim, or None elsewhere (musl, macOS, Windows)."""
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def release_free_memory() -> None:
    """Hand freed heap pages back to the system. A keyframe's renders allocate large temporaries whose sizes
    change as the map grows, and glibc keeps such freed blocks in its arenas: without this the process's RSS
    creeps up over a long run although nothing is held (apartment: +45 % over the last 550 frames)."""
    trim = _libc_trim()
    if trim is not None:
        trim(0)


class MapperWorker:
    """Feeds frames to a mapper without ever blocking the caller or queueing without bound.

    ``submit`` puts the frame in a one-frame slot; if a frame is already waiting (the mapper is busy),
    the waiting one is replaced by the newer one and counted in ``dropped``: a live robot wants the
    freshest view, and memory stays flat however fast frames arrive.
    """

    def __init__(self, mapper: IncrementalMapper) -> None:
        self.mapper = mapper
        self.dropped = 0
        self.processed = 0
        self.outcomes: Counter = Counter()
        self.error: BaseException | None = None
        self._pending: Frame | None = None
        self._busy = False
        self._stop = False
        self._cv = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="clipgs-mapper", daemon=True)
        self._thread.start()

    def submit(self, frame: Frame) -> bool:
        """Hand a frame over; returns False if it displaced a waiting frame (one frame was dropped)."""
        with self._cv:
            if self._stop:
                raise RuntimeError("MapperWorker is stopped")
            displaced = self._pending is not None
            if displaced:
                self.dropped += 1
            self._pending = frame
            self._cv.notify_all()
            return not displaced

    def snapshot(self) -> MapSnapshot:
        """Map + decoder + counters of one instant (see ``IncrementalMapper.snapshot``); never waits for a
        whole keyframe, only for the optimisation step in progress."""
        return self.mapper.snapshot()

    @property
    def busy(self) -> bool:
        with self._cv:
            return self._busy or self._pending is not None

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no frame is waiting or being mapped; False on timeout."""
        with self._cv:
            return self._cv.wait_for(lambda: not self._busy and self._pending is None, timeout)

    def stop(self, timeout: float | None = None) -> None:
        """Finish the frame in hand (a waiting one is dropped), then end the thread."""
        with self._cv:
            self._stop = True
            if self._pending is not None:
                self.dropped += 1
                self._pending = None
            self._cv.notify_all()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._pending is not None or self._stop)
                if self._pending is None:  # stopping
                    return
                frame, self._pending, self._busy = self._pending, None, True
            try:
                outcome = self.mapper.add_frame(frame)
                if outcome == "keyframe":
                    release_free_memory()
            except Exception as exc:  # keep mapping: the next frame may be fine
                log.exception("mapper failed on frame %s", getattr(frame, "index", "?"))
                self.error, outcome = exc, f"error:{type(exc).__name__}"
            with self._cv:
                self.processed += 1
                self.outcomes[outcome.split(":")[0]] += 1
                self._busy = False
                self._cv.notify_all()
