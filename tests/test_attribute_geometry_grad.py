"""``attributes_move_geometry=False``: a loss on the channels after RGB trains those channels only.

Every backend against the PyTorch reference computed by hand: the geometry's gradients of the loss on colour,
depth and alpha alone, the features' gradients of the whole loss.
"""
from __future__ import annotations

import pytest
import torch

from clipgs.render import cpu_kernel, rasterize

NAMES = ("means", "quats", "log_scales", "opacity_logits", "features")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-6))


def weights(out, seed: int, dtype: torch.dtype):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(x.shape, generator=g, dtype=dtype) for x in (out.rgb, out.semantics, out.depth, out.alpha)]


def grads(scene, camera, dtype, backend, move: bool, parts=("rgb", "semantics", "depth", "alpha"), pixels=None):
    leaves = [t.to(dtype).clone().requires_grad_(True) for t in scene]
    out = rasterize(*leaves, camera, backend=backend, attributes_move_geometry=move, attribute_pixels=pixels)
    w = dict(zip(("rgb", "semantics", "depth", "alpha"), weights(out, 0, dtype)))
    if pixels is not None:  # the attribute channels only count where they were asked for
        keep = torch.zeros(camera.height * camera.width, 1, dtype=dtype)
        keep[pixels] = 1
        w["semantics"] = w["semantics"] * keep.reshape(camera.height, camera.width, 1)
    sum((getattr(out, k) * w[k]).sum() for k in parts).backward()
    return out, [t.grad if t.grad is not None else torch.zeros_like(t) for t in leaves]


def expected(scene, camera, dtype, pixels=None):
    """Geometry from the colour / depth / alpha terms, features from everything (torch reference)."""
    _, geometry = grads(scene, camera, dtype, "torch", True, ("rgb", "depth", "alpha"), pixels)
    _, full = grads(scene, camera, dtype, "torch", True, pixels=pixels)
    return geometry[:4] + full[4:]


BACKENDS = ["torch"] + (["cpu", "cpu_scalar"] if cpu_kernel.available() else [])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("channels", [19, 40])  # a compiled-in width and the generic loop
def test_attributes_leave_the_geometry_alone(backend, channels, scene_factory, camera_factory):
    scene = scene_factory(1500, 3, channels=channels, spread=1.5, scale_range=(-4.0, -1.5))
    camera = camera_factory(96, 70)
    out, got = grads(scene, camera, torch.float32, backend, move=False)
    moved, with_move = grads(scene, camera, torch.float32, backend, move=True)
    for x, y in ((out.image, moved.image), (out.depth, moved.depth), (out.alpha, moved.alpha)):
        assert rel(x.detach(), y.detach()) <= 1e-5  # the same render (torch: in two passes)
    for name, x, y in zip(NAMES, got, expected(scene, camera, torch.float32)):
        assert rel(x, y) <= 1e-3, name
    assert rel(got[0], with_move[0]) > 1e-2  # the flag changes the means' gradient on this scene


@pytest.mark.skipif(not cpu_kernel.available(), reason="no C++ compiler to build the CPU kernel")
def test_attributes_leave_the_geometry_alone_float64_and_sampled_pixels(scene_factory, camera_factory):
    scene = scene_factory(800, 5, channels=19, spread=1.5, scale_range=(-4.0, -1.5))
    camera = camera_factory(64, 48)
    _, got = grads(scene, camera, torch.float64, "cpu", move=False)
    for name, x, y in zip(NAMES, got, expected(scene, camera, torch.float64)):
        assert rel(x, y) <= 1e-9, name
    pixels = torch.randperm(64 * 48, generator=torch.Generator().manual_seed(1))[:200]
    _, got = grads(scene, camera, torch.float32, "cpu", move=False, pixels=pixels)
    for name, x, y in zip(NAMES, got, expected(scene, camera, torch.float32, pixels)):
        assert rel(x, y) <= 1e-3, name


def test_semantic_trainer_steps_render_with_its_setting(monkeypatch, synth_dir):
    """The mapper renders its steps with the trainer's ``sem_moves_geometry`` (default false)."""
    from clipgs.data.dataset import open_dataset
    from clipgs.mapping.config import MapperConfig
    from clipgs.mapping.gaussian_map import GaussianMap
    from clipgs.mapping.mapper import IncrementalMapper
    from clipgs.semantics.config import SemanticTrainingConfig
    from clipgs.semantics.pipeline import simulated_setup
    from clipgs.semantics.trainer import SemanticTrainer

    seen = []
    render = GaussianMap.render

    def spy(self, *args, **kwargs):
        if torch.is_grad_enabled() and kwargs.get("semantic"):
            seen.append(kwargs.get("attributes_move_geometry"))
        return render(self, *args, **kwargs)

    monkeypatch.setattr(GaussianMap, "render", spy)
    ds = open_dataset(synth_dir)
    teacher, _, vocab = simulated_setup(ds)
    for move in (False, True):
        seen.clear()
        trainer = SemanticTrainer(SemanticTrainingConfig(sem_moves_geometry=move, dcs_every=0), teacher, vocab)
        IncrementalMapper(MapperConfig(iters_per_keyframe=2), trainer=trainer).add_frame(ds[0])
        assert seen and set(seen) == {move}
