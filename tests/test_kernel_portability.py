"""The compiled CPU kernels as other compilers build them: GCC 11 (Ubuntu 22.04, JetPack 6) has no
__builtin_shufflevector, so rasterize_cpu.cpp spells its lane shuffles with __builtin_shuffle there."""
from __future__ import annotations

import pytest
import torch

from clipgs.native import FLAGS, build_library
from clipgs.render import cpu_kernel, rasterize

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
