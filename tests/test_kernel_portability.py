"""The compiled CPU kernels as other compilers and CPUs build them: GCC 11 (Ubuntu 22.04, JetPack 6) has no
__builtin_shufflevector, so rasterize_cpu.cpp spells its lane shuffles with __builtin_shuffle there; on aarch64 the
vector code is NEON, which tests/native/kernel_cross_check.cpp checks under qemu-user where a cross compiler is
installed (apt: g++-aarch64-linux-gnu qemu-user)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from clipgs.native import FLAGS, NativeUnavailableError, build_library
from clipgs.render import cpu_kernel, rasterize

CROSS_CHECK = Path(__file__).with_name("native") / "kernel_cross_check.cpp"
AARCH64_SYSROOT = Path("/usr/aarch64-linux-gnu")  # Debian's cross toolchain: what qemu-aarch64 loads from

pytestmark = pytest.mark.skipif(not cpu_kernel.available(), reason="no C++ compiler to build the CPU kernel")


def _render_and_grads(scene, camera, **options):
    """Image, depth, alpha and every leaf's gradient of a vectorised float32 render (fixed random loss weights)."""
    leaves = [t.float().clone().requires_grad_(True) for t in scene]
    out = rasterize(*leaves, camera, backend="cpu", **options)
    g = torch.Generator().manual_seed(1)
    loss = sum((x * torch.randn(x.shape, generator=g)).sum() for x in (out.image, out.depth, out.alpha))
    loss.backward()
    with torch.no_grad():
        fast = rasterize(*scene, camera, backend="cpu")  # the one-call render (no gradient)
    return [out.image, out.depth, out.alpha, fast.image, fast.alpha, *(t.grad for t in leaves)]


def test_gcc11_shuffles_render_and_backpropagate_as_the_default_build(scene_factory, camera_factory, monkeypatch):
    """-DCLIPGS_SHUFFLE_COMPAT takes GCC 11's path on this compiler: the same images, one-call renders and
    gradients bit for bit (19 channels: the transposes, horizontal sums and lane tests all run; an image edge
    cuts tiles)."""
    scene = [t.float() for t in scene_factory(3000, 4, torch.float32, channels=19, spread=2.0)]
    camera = camera_factory(90, 70)
    torch.manual_seed(0)
    pixels = torch.randperm(90 * 70)[:700]
    reference = _render_and_grads(scene, camera, attribute_pixels=pixels, attributes_move_geometry=False)
    compat = build_library("clipgs_cpu_compat", cpu_kernel.SOURCES, (*FLAGS, "-DCLIPGS_SHUFFLE_COMPAT"))
    monkeypatch.setattr(cpu_kernel, "build", lambda verbose=False: compat)
    cpu_kernel.load.cache_clear()
    try:
        assert cpu_kernel.library_path() != compat
        result = _render_and_grads(scene, camera, attribute_pixels=pixels, attributes_move_geometry=False)
    finally:
        monkeypatch.undo()
        cpu_kernel.load.cache_clear()
    assert reference[0].abs().sum() > 0 and reference[-1].abs().sum() > 0
    for a, b in zip(reference, result, strict=True):
        assert torch.equal(a, b)


def _compile(compiler: str, out: Path, arch: str) -> Path:
    """The cross-check program built with ``compiler`` for ``arch`` (-march): the kernels at -O3 as clipgs builds
    them; the driver at -O1 (aarch64 GCC 12 crashes vectorising its error loop at -O3)."""
    kernel_flags = [f"-march={arch}" if f == "-march=native" else f for f in FLAGS if f not in ("-shared", "-fPIC")]
    objects = []
    for src, flags in [(CROSS_CHECK, ["-O1", "-std=c++17"]), *((s, kernel_flags) for s in cpu_kernel.SOURCES)]:
        obj = out.parent / f"{Path(src).stem}.o"
        subprocess.run([compiler, *flags, "-c", str(src), "-o", str(obj)], check=True, capture_output=True,
                       timeout=300)
        objects.append(str(obj))
    subprocess.run([compiler, "-fopenmp", "-pthread", *objects, "-o", str(out)], check=True, capture_output=True,
                   timeout=120)
    return out


def _passes(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "all passed" in proc.stdout, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.skipif(shutil.which("g++") is None, reason="no g++")
def test_cross_check_program_passes_on_this_machine(tmp_path):
    """The standalone check (vectorised kernels against the scalar templates: projection, compositing forward and
    backward, the one-call render, 2^y) built and run here, as a build for another CPU would run under qemu."""
    out = _passes([str(_compile("g++", tmp_path / "check", "native"))])
    assert "visible Gaussians: 2972 of 3000" in out  # the scene the tolerances were set on


@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-g++") is None or shutil.which("qemu-aarch64") is None
                    or not AARCH64_SYSROOT.is_dir(), reason="no aarch64 cross compiler or qemu-user")
def test_aarch64_build_passes_the_cross_check_under_qemu(tmp_path):
    """The NEON build (armv8-a: vector extensions without AVX, lane tests by shuffles) agrees with its scalar
    templates as the x86 build does."""
    program = _compile("aarch64-linux-gnu-g++", tmp_path / "check", "armv8-a")
    _passes(["qemu-aarch64", "-L", str(AARCH64_SYSROOT), str(program)])


def _fake_compiler(tmp_path: Path, refuse: str) -> Path:
    """A ``CXX`` that logs each command line and fails on any argument containing ``refuse``, else runs g++."""
    script = tmp_path / f"cxx-refusing{refuse}"  # a path of its own: the compiler is part of the build's cache key
    script.write_text(f"""#!/bin/sh
echo "$@" >> {tmp_path / "calls.log"}
for a in "$@"; do case "$a" in *{refuse}*) echo "unsupported: $a" >&2; exit 1;; esac; done
exec g++ "$@"
""")
    script.chmod(0o755)
    return script


@pytest.mark.skipif(shutil.which("g++") is None, reason="no g++")
def test_a_compiler_refusing_march_native_still_builds(tmp_path, monkeypatch):
    """A compiler that refuses -march=native (Clang 14 targeting aarch64) builds without it, OpenMP kept; one that
    refuses everything gives one error naming the sources."""
    src = tmp_path / "one.cpp"
    src.write_text('extern "C" int one() { return 1; }\n')
    monkeypatch.setenv("CLIPGS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CXX", str(_fake_compiler(tmp_path, "-march=native")))
    import ctypes

    assert ctypes.CDLL(str(build_library("one", [src]))).one() == 1
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert len(calls) == 2 and "-march=native" in calls[0] and "-march=native" not in calls[1]
    assert "-fopenmp" in calls[1]
    monkeypatch.setenv("CXX", str(_fake_compiler(tmp_path, "-O3")))
    with pytest.raises(NativeUnavailableError, match=r"compiling one\.cpp failed"):
        build_library("one", [src])
