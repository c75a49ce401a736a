"""Build (once, cached) and load the compiled CPU kernels through ctypes: the rasterizer
(csrc/rasterize_cpu.cpp) and the fused Adam step for the map's parameters (csrc/adam_cpu.cpp).

The shared library is compiled with the system C++ compiler on first use (about a second) into
``$CLIPGS_CACHE`` (default ``~/.cache/clipgs``), keyed by the source, the compiler flags and the CPU, so
an edited source or another machine gets its own build. ``make install`` builds it ahead of time.
Without a compiler, clipgs falls back to the PyTorch backend.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

SOURCES = [Path(__file__).with_name("csrc") / name for name in ("rasterize_cpu.cpp", "adam_cpu.cpp")]
# -march=native: the SIMD compositing uses this CPU's vector width; -fopenmp: the kernels share PyTorch's
# thread team (one libgomp per process); -fno-math-errno lets sqrt/exp loops vectorise.
FLAGS = ["-O3", "-march=native", "-ffp-contract=fast", "-fno-math-errno", "-std=c++17", "-shared", "-fPIC",
         "-pthread", "-fopenmp"]
ABI_VERSION = 4


class KernelUnavailableError(RuntimeError):
    """The compiled CPU backend cannot be built or loaded here; the message says why."""


def _cpu_signature() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
        flags = next((ln for ln in info.splitlines() if ln.startswith("flags")), "")
        model = next((ln for ln in info.splitlines() if ln.startswith("model name")), "")
        return model + flags
    except OSError:
        return platform.processor() or platform.machine()


def library_path() -> Path:
    compiler = os.environ.get("CXX", "g++")
    key = hashlib.sha256(
        b"".join(src.read_bytes() for src in SOURCES)
        + " ".join([compiler, *FLAGS, _cpu_signature(), platform.machine()]).encode()
    ).hexdigest()[:16]
    cache = Path(os.environ.get("CLIPGS_CACHE", Path.home() / ".cache" / "clipgs"))
    return cache / "kernels" / f"clipgs_cpu_{key}.so"


def build(verbose: bool = False) -> Path:
    """Compile the library if it is not cached yet; returns its path."""
    target = library_path()
    if target.is_file():
        return target
    compiler = os.environ.get("CXX", "g++")
    if shutil.which(compiler) is None:
        raise KernelUnavailableError(f"no C++ compiler '{compiler}' found (install g++ or set CXX)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:  # build aside, then an atomic rename
        tmp_lib = Path(tmp) / target.name
        for flags in (FLAGS, [f for f in FLAGS if f != "-fopenmp"]):  # a compiler without OpenMP: std::threads
            cmd = [compiler, *flags, *map(str, SOURCES), "-o", str(tmp_lib)]
            if verbose:
                print(" ".join(cmd))
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode == 0:
                break
        if proc.returncode != 0:
            names = ", ".join(src.name for src in SOURCES)
            raise KernelUnavailableError(f"compiling {names} failed:\n{proc.stderr[-2000:]}")
        os.replace(tmp_lib, target)
    return target


@lru_cache(maxsize=1)
def load() -> ctypes.CDLL:
    """The loaded library (built first if needed). Raises KernelUnavailableError."""
    lib = ctypes.CDLL(str(build()))
    if lib.clipgs_abi_version() != ABI_VERSION:
        raise KernelUnavailableError(f"{library_path()} has ABI {lib.clipgs_abi_version()}, expected {ABI_VERSION}")
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    scene = [p] * 8 + [i64] * 6
    for suffix in ("f32", "f64"):
        getattr(lib, f"clipgs_forward_{suffix}").argtypes = [*scene, p, p, p, p, i32]
        getattr(lib, f"clipgs_backward_{suffix}").argtypes = [*scene, *([p] * 8), i32]
        getattr(lib, f"clipgs_project_{suffix}").argtypes = [i64, *([p] * 6), i64, i64, *([ctypes.c_double] * 3),
                                                             *([p] * 4), i32]
        getattr(lib, f"clipgs_project_{suffix}").restype = None
        getattr(lib, f"clipgs_project_backward_{suffix}").argtypes = [i64, *([p] * 5), i64, i64, ctypes.c_double,
                                                                      *([p] * 7), i32]
        getattr(lib, f"clipgs_project_backward_{suffix}").restype = None
        getattr(lib, f"clipgs_bin_tiles_{suffix}").argtypes = [i64, p, p, p, i64, i64, i64, p, p, p, i32]
        getattr(lib, f"clipgs_bin_tiles_{suffix}").restype = None
        getattr(lib, f"clipgs_forward_{suffix}").restype = None
        getattr(lib, f"clipgs_backward_{suffix}").restype = None
        getattr(lib, f"clipgs_sum_by_gaussian_{suffix}").argtypes = [i64, i64, i64, *([p] * 9)]
        getattr(lib, f"clipgs_sum_by_gaussian_{suffix}").restype = None
    lib.clipgs_forward_simd_f32.argtypes = lib.clipgs_forward_f32.argtypes
    lib.clipgs_backward_simd_f32.argtypes = lib.clipgs_backward_f32.argtypes
    lib.clipgs_forward_simd_f32.restype = lib.clipgs_backward_simd_f32.restype = None
    lib.clipgs_fast_exp_f32.argtypes = [i64, p, p]
    lib.clipgs_fast_exp_f32.restype = None
    for suffix in ("f32", "f64"):
        fn = getattr(lib, f"clipgs_adam_{suffix}")
        fn.argtypes = [i64, i64, p, p, p, p, p, p, *([ctypes.c_double] * 4), i32]
        fn.restype = None
    return lib


@lru_cache(maxsize=1)
def available() -> bool:
    """True if the compiled backend can be used (builds it on first call)."""
    try:
        load()
        return True
    except (KernelUnavailableError, OSError) as exc:
        import warnings

        warnings.warn(f"compiled CPU rasterizer unavailable, using the PyTorch backend: {exc}", stacklevel=2)
        return False

