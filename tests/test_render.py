"""Renderer: the PyTorch backend against an independent brute-force oracle, gsplat's projection, gradcheck."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci

from clipgs.data.frame import Camera
from clipgs.render import rasterize, resolve_backend
from clipgs.render.api import camera_tensors
from clipgs.render.projection import project_gaussians
from clipgs.render.torch_backend import composite
from tests.reference_rasterizer import reference_rasterize


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))


def _leaves(scene):
    return [t.clone().requires_grad_(True) for t in scene]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_torch_backend_matches_bruteforce_values_and_gradients(seed, scene_factory, camera_factory):
    cam = camera_factory(20, 14)
    scene = scene_factory(36, seed, channels=4)
    # Edge cases mixed in: one Gaussian behind the camera, one far off-screen, one degenerate (flat) scale.
    scene[0][0] = torch.tensor([0.3, -5.0, 0.8], dtype=torch.float64)
    scene[0][1] = torch.tensor([9.0, 0.0, 0.0], dtype=torch.float64)
    scene[2][2] = torch.tensor([-1.5, -1.5, -12.0], dtype=torch.float64)
    ours = _leaves(scene)
    ref = _leaves(scene)
    out = rasterize(*ours, cam, backend="torch")
    viewmat, K = camera_tensors(cam, torch.float64, torch.device("cpu"))
    r_img, r_depth, r_alpha = reference_rasterize(*ref, viewmat, K, cam.width, cam.height)
    assert out.alpha.max() > 0.5, "scene should cover the image"
    for a, b in ((out.image, r_img), (out.depth, r_depth), (out.alpha, r_alpha)):
        assert rel_err(a, b) <= 1e-5
    g = torch.Generator().manual_seed(100 + seed)
    w_img = torch.randn(r_img.shape, generator=g, dtype=torch.float64)
    w_depth = torch.randn(r_depth.shape, generator=g, dtype=torch.float64)
    w_alpha = torch.randn(r_alpha.shape, generator=g, dtype=torch.float64)
    ((out.image * w_img).sum() + (out.depth * w_depth).sum() + (out.alpha * w_alpha).sum()).backward()
    ((r_img * w_img).sum() + (r_depth * w_depth).sum() + (r_alpha * w_alpha).sum()).backward()
    for name, a, b in zip(("means", "quats", "log_scales", "opacity_logits", "features"), ours, ref):
        assert b.grad.abs().max() > 0, name
        assert rel_err(a.grad, b.grad) <= 1e-5, name


def test_projection_matches_gsplat_reference(scene_factory, camera_factory):
    cam = camera_factory(64, 48)
    means, quats, log_scales, _logits, _ = scene_factory(400, 7, spread=2.5)
    viewmat, K = camera_tensors(cam, torch.float64, torch.device("cpu"))
    opac = torch.ones(400, dtype=torch.float64)  # opacity 1: extent is the 3.33-sigma cap, as in the oracle
    ours = project_gaussians(means, quats, log_scales, opac, viewmat, K, 64, 48)
    covars, _ = _quat_scale_to_covar_preci(quats / quats.norm(dim=-1, keepdim=True), log_scales.exp(),
                                           compute_preci=False)
    radii, means2d, depths, conics, _ = _fully_fused_projection(means, covars, viewmat[None], K[None], 64, 48)
    radii, means2d, depths, conics = radii[0], means2d[0], depths[0], conics[0]
    live = depths > 0.01
    assert live.sum() > 300
    torch.testing.assert_close(ours.depths, depths, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours.means2d[live], means2d[live], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ours.conics[live], conics[live], rtol=1e-10, atol=1e-10)
    # Same culling; radii equal up to the one-pixel ceil of sqrt(2 ln 255) = 3.329 vs 3.33 sigmas.
    assert torch.equal(ours.visible, (radii > 0).all(-1))
    diff = radii[ours.visible].int() - ours.radii[ours.visible]
    assert diff.min() >= 0 and diff.max() <= 1


def test_gradcheck_tiny_scene(scene_factory, camera_factory):
    cam = camera_factory(6, 5, hfov=60.0)
    scene = _leaves(scene_factory(5, 3, channels=2, spread=0.4, scale_range=(-1.6, -1.0)))

    def fn(*args):
        out = rasterize(*args, cam, backend="torch")
        return out.image, out.depth, out.alpha

    assert torch.autograd.gradcheck(fn, scene, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_chunking_does_not_change_the_image(scene_factory, camera_factory):
    cam = camera_factory(70, 45)
    means, quats, log_scales, logits, feats = scene_factory(3000, 11, channels=5, dtype=torch.float32)
    viewmat, K = camera_tensors(cam, torch.float32, torch.device("cpu"))
    proj = project_gaussians(means, quats, log_scales, torch.sigmoid(logits), viewmat, K, 70, 45)
    big = composite(proj, feats, 70, 45, chunk_elements=1 << 26)
    small = composite(proj, feats, 70, 45, chunk_elements=1 << 12)
    assert big[2].max() > 0.9
    for a, b in zip(big, small):  # padding differs per chunk, so only float32 summation order may change
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_gradients_identical_with_and_without_checkpointing(scene_factory, camera_factory):
    cam = camera_factory(40, 30)
    scene = scene_factory(500, 5, channels=3)
    grads = []
    for above in (1 << 40, 0):  # stored graph vs every chunk recomputed in backward
        leaves = _leaves(scene)
        viewmat, K = camera_tensors(cam, torch.float64, torch.device("cpu"))
        proj = project_gaussians(leaves[0], leaves[1], leaves[2], torch.sigmoid(leaves[3]), viewmat, K, 40, 30)
        img, depth, alpha = composite(proj, leaves[4], 40, 30, chunk_elements=1 << 12, checkpoint_above=above)
        (img.sum() + depth.sum() + alpha.sum()).backward()
        grads.append([t.grad for t in leaves])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_empty_scene_and_all_behind_camera(camera_factory):
    cam = camera_factory(17, 9)
    z = torch.zeros
    out = rasterize(z(0, 3), z(0, 4), z(0, 3), z(0), z(0, 7), cam)
    assert out.image.shape == (9, 17, 7) and out.depth.shape == (9, 17) and out.alpha.shape == (9, 17)
    assert out.image.abs().sum() == 0 and out.alpha.sum() == 0 and out.radii.shape == (0, 2)
    behind = torch.tensor([[0.3, -6.0, 0.8], [0.3, -3.0, 0.8]])  # behind, and exactly at the camera centre
    q = torch.tensor([[1.0, 0, 0, 0]] * 2)
    out = rasterize(behind, q, torch.full((2, 3), -1.0), torch.full((2,), 5.0), torch.ones(2, 3), cam)
    assert out.alpha.sum() == 0 and not out.visible.any()


def test_one_pixel_image_and_zero_opacity(scene_factory):
    cam = Camera(np.array([[10.0, 0, 0.0], [0, 10.0, 0.0], [0, 0, 1]]), 1, 1, np.eye(4))
    means = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 1.0]])
    q = torch.tensor([[1.0, 0, 0, 0]] * 2)
    logits = torch.tensor([2.0, -40.0])  # the nearer Gaussian is transparent: must not contribute
    out = rasterize(means, q, torch.full((2, 3), -2.0), logits, torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]), cam)
    expected_alpha = torch.sigmoid(torch.tensor(2.0))  # pixel centre sits exactly on the Gaussian
    torch.testing.assert_close(out.alpha[0, 0], expected_alpha)
    torch.testing.assert_close(out.image[0, 0], torch.tensor([1.0, 0, 0]) * expected_alpha)
    torch.testing.assert_close(out.expected_depth()[0, 0], torch.tensor(2.0))
    assert out.visible.tolist() == [True, False]


def test_background_fills_transparent_pixels(scene_factory, camera_factory):
    cam = camera_factory(12, 8)
    scene = scene_factory(20, 4, channels=3)
    plain = rasterize(*scene, cam)
    bg = torch.tensor([0.2, 0.5, 1.0], dtype=torch.float64)
    with_bg = rasterize(*scene, cam, background=bg)
    torch.testing.assert_close(with_bg.image, plain.image + (1 - plain.alpha)[..., None] * bg)


def test_backend_selection_and_input_errors(scene_factory, camera_factory):
    assert resolve_backend("torch", torch.device("cpu")) == "torch"
    with pytest.raises(ValueError, match="unknown render backend"):
        resolve_backend("vulkan", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
            resolve_backend("gsplat", torch.device("cpu"))
    means, quats, log_scales, logits, feats = scene_factory(4, 0)
    with pytest.raises(ValueError, match="quats must have shape"):
        rasterize(means, quats[:, :3], log_scales, logits, feats, camera_factory(8, 8))
    with pytest.raises(ValueError, match="features must have shape"):
        rasterize(means, quats, log_scales, logits, feats[:3], camera_factory(8, 8))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="gsplat backend needs a CUDA GPU")
def test_gsplat_backend_agrees_with_torch_backend(scene_factory, camera_factory):
    cam = camera_factory(96, 64)
    scene = [t.float() for t in scene_factory(5000, 9, channels=19, spread=2.0)]
    cpu = rasterize(*scene, cam, backend="torch")
    gpu = rasterize(*[t.cuda() for t in scene], cam, backend="gsplat")
    assert rel_err(gpu.image.cpu(), cpu.image) < 1e-4 and rel_err(gpu.alpha.cpu(), cpu.alpha) < 1e-4
    assert rel_err(gpu.depth.cpu(), cpu.depth) < 1e-4


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_culling_first_renders_the_same_image_and_gradients(backend, scene_factory, camera_factory):
    """A wide scene of which the camera sees a small part: rendering only the rows maybe_in_view keeps gives the
    whole map's image, radii and gradients (culled rows get none), and is the path taken."""
    from clipgs.render import worth_culling

    if backend == "cpu" and resolve_backend("auto", torch.device("cpu")) != "cpu":
        pytest.skip("no C++ compiler for the compiled kernel")
    scene = [t.float() for t in scene_factory(3000, 4, spread=8.0, channels=5)]
    cam = camera_factory(40, 30)
    rows = worth_culling(scene[0], scene[2], scene[3], cam, backend=backend)
    assert rows is not None and 0 < len(rows) < 0.3 * 3000  # most of the scene is out of view

    def run(cull: bool):
        leaves = [t.clone().requires_grad_(True) for t in scene]
        out = rasterize(*leaves, cam, backend=backend, cull=cull, background=torch.full((5,), 0.2))
        (out.image.square().sum() + out.depth.sum() + out.alpha.sum()).backward()
        return out, [t.grad for t in leaves]

    (whole, g_whole), (culled, g_culled) = run(False), run(True)
    assert whole.visible.sum() > 50
    for a, b in ((whole.image, culled.image), (whole.depth, culled.depth), (whole.alpha, culled.alpha)):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    assert torch.equal(whole.radii, culled.radii)
    seen = whole.visible
    assert torch.allclose(whole.means2d[seen], culled.means2d[seen])
    for a, b in zip(g_whole, g_culled):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
    out_of_view = torch.ones(3000, dtype=torch.bool)
    out_of_view[rows] = False
    assert all(float(g[out_of_view].abs().max()) == 0.0 for g in g_culled)
