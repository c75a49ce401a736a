"""Build (once, cached) and load clipgs' small C++ libraries through ctypes.

A library is compiled with the system C++ compiler on first use into ``$CLIPGS_CACHE`` (default
``~/.cache/clipgs``), keyed by its sources, the compiler, the flags and the CPU, so an edited source or
another machine gets its own build. Callers fall back to their NumPy / PyTorch path when this raises
:class:`NativeUnavailableError` (no compiler, or a failed build).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

# -march=native: SIMD for this CPU; -fopenmp: parallel loops on the process's one OpenMP team (PyTorch's);
# -fno-math-errno lets sqrt/exp loops vectorise. A compiler that refuses either is retried without it (OPTIONAL).
FLAGS = ("-O3", "-march=native", "-ffp-contract=fast", "-fno-math-errno", "-std=c++17", "-shared", "-fPIC",
         "-pthread", "-fopenmp")
# Flags a build may go without, in the order they are given up: -march=native (Clang 14 targeting aarch64 refuses
# it; the target's baseline SIMD, NEON there, is still used), then OpenMP (no libomp: serial or std::thread), then
# both.
OPTIONAL = ("-march=native", "-fopenmp")


def _attempts(flags: Sequence[str]) -> list[list[str]]:
    """The flag lists to try, in order: all of ``flags``, then without each optional flag, then without both."""
    present = [f for f in OPTIONAL if f in flags]
    drops = [set()] + [{f} for f in present] + ([set(present)] if len(present) > 1 else [])
    return [[f for f in flags if f not in drop] for drop in drops]


class NativeUnavailableError(RuntimeError):
    """A compiled library cannot be built or loaded here; the message says why."""


def _cpu_signature() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
        flags = next((ln for ln in info.splitlines() if ln.startswith("flags")), "")
        model = next((ln for ln in info.splitlines() if ln.startswith("model name")), "")
        return model + flags
    except OSError:
        return platform.processor() or platform.machine()


def library_path(name: str, sources: Sequence[Path], flags: Sequence[str] = FLAGS) -> Path:
    """Where the library ``name`` built from ``sources`` with ``flags`` is cached on this machine."""
    compiler = os.environ.get("CXX", "g++")
    key = hashlib.sha256(
        b"".join(Path(src).read_bytes() for src in sources)
        + " ".join([compiler, *flags, _cpu_signature(), platform.machine()]).encode()
    ).hexdigest()[:16]
    cache = Path(os.environ.get("CLIPGS_CACHE", Path.home() / ".cache" / "clipgs"))
    return cache / "kernels" / f"{name}_{key}.so"


def build_library(name: str, sources: Sequence[Path], flags: Sequence[str] = FLAGS, verbose: bool = False) -> Path:
    """Compile ``sources`` into a shared library unless it is cached already; returns its path."""
    target = library_path(name, sources, flags)
    if target.is_file():
        return target
    compiler = os.environ.get("CXX", "g++")
    if shutil.which(compiler) is None:
        raise NativeUnavailableError(f"no C++ compiler '{compiler}' found (install g++ or set CXX)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:  # build aside, then an atomic rename
        tmp_lib = Path(tmp) / target.name
        for attempt in _attempts(flags):
            cmd = [compiler, *attempt, *map(str, sources), "-o", str(tmp_lib)]
            if verbose:
                print(" ".join(cmd))
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode == 0:
                break
        if proc.returncode != 0:
            names = ", ".join(Path(src).name for src in sources)
            raise NativeUnavailableError(f"compiling {names} failed:\n{proc.stderr[-2000:]}")
        os.replace(tmp_lib, target)
    return target


def load_or_warn(name: str, sources: Sequence[Path], fallback: str) -> ctypes.CDLL | None:
    """The library ``name`` built from ``sources`` and loaded, or None after one warning saying what runs
    instead (``fallback``) where it cannot be built or loaded here. Callers cache the result and set argtypes."""
    try:
        return ctypes.CDLL(str(build_library(name, sources)))
    except (NativeUnavailableError, OSError) as exc:
        warnings.warn(f"{fallback}: {exc}", stacklevel=4)
        return None
