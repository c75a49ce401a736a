"""OpenMP thread teams when several Python threads run PyTorch (and clipgs' compiled loops).

GNU OpenMP (libgomp, PyTorch's runtime on Linux) gives every thread that starts a parallel region a team of
worker threads of its own and keeps it for that thread's next region. Once the process holds more such
threads than it has CPUs, libgomp stops spinning between regions: every parallel region then starts by waking
sleeping workers, and a mapping step has hundreds of them. So the map thread of :class:`MapperWorker` ran
its steps far slower whenever another thread (the main thread that set the mapper up, the semantic source,
a ROS callback that rendered) still held a team: on 2 cores, small PyTorch ops 1.7x slower (2191 against
1270 us, 8951 context switches against none), a semantic mapping step 85 against 63 ms. Threads that only
occasionally run parallel work hand their team back when done (:func:`release_thread_team`), so the map
thread's team stays the only one that waits for work.
"""
from __future__ import annotations

import ctypes
import functools
import logging
from pathlib import Path

log = logging.getLogger(__name__)
OMP_PAUSE_SOFT = 1  # omp_pause_resource_t: free the runtime's resources, keep its settings


_found: list = []  # omp_pause_resource_all once found (a runtime loaded later is still looked for until then)


def _pause_all():
    """``omp_pause_resource_all`` of the OpenMP runtime already loaded into this process (the one PyTorch and
    clipgs' libraries share), or None: no runtime loaded yet, or one without the call (OpenMP < 5.0)."""
    if _found:
        return _found[0]
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:  # not Linux: nothing to find this way
        return None
    for name in ("libgomp", "libomp", "libiomp5"):
        path = next((line.split()[-1] for line in maps.splitlines() if f"/{name}" in line and ".so" in line), None)
        if path is None:
            continue
        try:
            fn = ctypes.CDLL(path).omp_pause_resource_all  # already loaded: the same library, not a second copy
        except (OSError, AttributeError):
            continue
        fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
        _found.append(fn)
        return fn
    return None


def release_thread_team() -> bool:
    """Hand back the calling thread's OpenMP worker threads (``omp_pause_resource_all(omp_pause_soft)``; the
    next parallel region on this thread starts a new team, ~0.1 ms). Call it on a thread that has finished its
    parallel work and will not run more soon; never inside a parallel region. False where it could not be done
    (no OpenMP runtime loaded, or one without the call)."""
    fn = _pause_all()
    if fn is None:
        return False
    ok = fn(OMP_PAUSE_SOFT) == 0
    if not ok:
        log.debug("omp_pause_resource_all refused (inside a parallel region?)")
    return ok


def hands_back_team(fn):
    """Decorator for calls that run parallel work on whatever thread calls them (a ROS executor thread rendering
    or answering a query): :func:`release_thread_team` when they return or raise."""
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        finally:
            release_thread_team()
    return wrapped
