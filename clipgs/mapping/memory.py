"""Freed memory back to the system between keyframes (glibc keeps it otherwise)."""
from __future__ import annotations

import ctypes
import functools


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
    creeps up over a long run although nothing is held (apartment: +45 % over the last 550 frames; the room
    mapped offline with 200 classes: 877 MB held after 100 frames against 560 with it). Called after each keyframe
    by MapperWorker and map_frames, about 2 ms."""
    trim = _libc_trim()
    if trim is not None:
        trim(0)
