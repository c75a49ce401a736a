"""Build (once, cached) and load the compiled CPU kernels through ctypes: the rasterizer
(csrc/rasterize_cpu.cpp) and the fused Adam step for the map's parameters (csrc/adam_cpu.cpp).

Compiled on first use (about a second) and cached by :mod:`clipgs.native`; ``make install`` builds it ahead
of time. Without a compiler, clipgs falls back to the PyTorch backend.
"""
from __future__ import annotations

import ctypes
from functools import lru_cache
from pathlib import Path

from clipgs.native import FLAGS, NativeUnavailableError, build_library
from clipgs.native import library_path as _library_path

SOURCES = [Path(__file__).with_name("csrc") / name for name in ("rasterize_cpu.cpp", "adam_cpu.cpp")]
ABI_VERSION = 15
KernelUnavailableError = NativeUnavailableError  # the compiled CPU backend cannot be built or loaded here


def library_path() -> Path:
    """Where this machine's build of the CPU kernels is cached."""
    return _library_path("clipgs_cpu", SOURCES, FLAGS)


def build(verbose: bool = False) -> Path:
    """Compile the library if it is not cached yet; returns its path."""
    return build_library("clipgs_cpu", SOURCES, FLAGS, verbose)


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
        getattr(lib, f"clipgs_backward_{suffix}").argtypes = [*scene, *([p] * 8), i32, i32]  # + move geometry
        getattr(lib, f"clipgs_project_{suffix}").argtypes = [i64, *([p] * 6), i64, i64, *([ctypes.c_double] * 3),
                                                             *([p] * 4), i32]
        getattr(lib, f"clipgs_project_{suffix}").restype = None
        getattr(lib, f"clipgs_project_backward_{suffix}").argtypes = [i64, *([p] * 5), i64, i64, ctypes.c_double,
                                                                      *([p] * 7), i32]
        getattr(lib, f"clipgs_project_backward_{suffix}").restype = None
        getattr(lib, f"clipgs_cull_{suffix}").argtypes = [i64, *([p] * 5), i64, i64, *([ctypes.c_double] * 3), p,
                                                          i64, ctypes.c_double, p, i32]  # + the occluder
        getattr(lib, f"clipgs_cull_{suffix}").restype = None
        getattr(lib, f"clipgs_bin_tiles_{suffix}").argtypes = [i64, p, p, p, i64, i64, i64, p, p, p, i32]
        getattr(lib, f"clipgs_bin_tiles_{suffix}").restype = None
        getattr(lib, f"clipgs_forward_{suffix}").restype = None
        getattr(lib, f"clipgs_backward_{suffix}").restype = None
        getattr(lib, f"clipgs_sum_by_gaussian_{suffix}").argtypes = [i64, i64, i64, *([p] * 9), i32]
        getattr(lib, f"clipgs_sum_by_gaussian_{suffix}").restype = None
    lib.clipgs_forward_simd_f32.argtypes = [*scene, p, p, p, p, p, i32]  # + the pixels wanting channels >= 4
    lib.clipgs_backward_simd_f32.argtypes = lib.clipgs_backward_f32.argtypes
    lib.clipgs_forward_simd_f32.restype = lib.clipgs_backward_simd_f32.restype = None
    lib.clipgs_render_simd_f32.argtypes = [i64, *([p] * 6), i64, i64, *([ctypes.c_double] * 3), i64, *([p] * 7),
                                           i32]  # the whole no-gradient render: parts, channels, need, outputs
    lib.clipgs_render_simd_f32.restype = None
    lib.clipgs_project_scalar_f32.argtypes = lib.clipgs_project_f32.argtypes  # for tests: the scalar reference
    lib.clipgs_project_scalar_f32.restype = None
    lib.clipgs_project_backward_scalar_f32.argtypes = lib.clipgs_project_backward_f32.argtypes  # for tests
    lib.clipgs_project_backward_scalar_f32.restype = None
    lib.clipgs_fast_exp2_f32.argtypes = [i64, p, p]
    lib.clipgs_fast_exp2_f32.restype = None
    for suffix in ("f32", "f64"):  # n, map rows, mask, steps, fields, their pointer arrays, widths, lrs, Adam's
        fn = getattr(lib, f"clipgs_adam_fields_{suffix}")
        fn.argtypes = [i64, p, p, p, i64, *([p] * 6), *([ctypes.c_double] * 3), i32]
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

