"""The compiled CPU backend against the PyTorch reference backend: values and every gradient."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from clipgs.data.frame import Camera
from clipgs.render import cpu_kernel, rasterize, resolve_backend
from clipgs.render.api import camera_tensors
from clipgs.render.cpu_backend import bin_tiles_cpu, project_cpu, render_cpu
from clipgs.render.projection import Projected, project_gaussians
from clipgs.render.torch_backend import bin_tiles

pytestmark = pytest.mark.skipif(not cpu_kernel.available(), reason="no C++ compiler to build the CPU kernel")
NAMES = ("means", "quats", "log_scales", "opacity_logits", "features")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Max error relative to the reference's largest magnitude (floor 1e-6: all-zero gradients, e.g. the
    quaternion gradient of an isotropic Gaussian, compare absolutely)."""
    return float((a.detach() - b.detach()).abs().max() / b.detach().abs().max().clamp(min=1e-6))


def both(scene, camera, dtype, seed=0, backends=("cpu", "torch")):
    """Render with two backends, backprop the same random weights; returns outputs and leaf grads."""
    results = []
    for backend in backends:
        leaves = [t.to(dtype).clone().requires_grad_(True) for t in scene]
        out = rasterize(*leaves, camera, backend=backend)
        g = torch.Generator().manual_seed(seed)
        outputs = (out.image, out.depth, out.alpha)
        loss = sum((x * torch.randn(x.shape, generator=g, dtype=dtype)).sum() for x in outputs)
        loss.backward()
        results.append((out, [t.grad if t.grad is not None else torch.zeros_like(t) for t in leaves]))
    return results


def assert_agree(scene, camera, dtype=torch.float32, img_tol=1e-4, grad_tol=1e-3, backend="cpu", reference="torch"):
    (a, ga), (b, gb) = both(scene, camera, dtype, backends=(backend, reference))
    assert a.backend == backend and b.backend == reference
    for x, y in ((a.image, b.image), (a.depth, b.depth), (a.alpha, b.alpha)):
        assert x.shape == y.shape and rel(x, y) <= img_tol
    assert torch.equal(a.radii, b.radii)
    for name, x, y in zip(NAMES, ga, gb):
        assert rel(x, y) <= grad_tol, name
    return a, ga


@pytest.mark.parametrize("backend", ["cpu", "cpu_scalar"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_scenes_agree_float32(seed, backend, scene_factory, camera_factory):
    scene = scene_factory(2000, seed, channels=19, spread=1.5, scale_range=(-4.0, -1.5))
    out, grads = assert_agree(scene, camera_factory(96, 70), backend=backend)
    assert out.alpha.mean() > 0.3 and all(g.abs().max() > 0 for g in grads)


@pytest.mark.parametrize("channels", [1, 3, 8, 11, 19, 35, 40])
def test_vectorised_kernel_matches_scalar_for_every_channel_count(channels, scene_factory, camera_factory):
    """The SIMD kernel's compiled-in widths (3 + 1, 11 + 1, 19 + 1, 35 + 1 with depth) and its generic loop.
    An image size that is not a multiple of the 16-pixel tile exercises the partial edge tiles."""
    scene = scene_factory(1500, channels, channels=channels, spread=1.5, scale_range=(-4.0, -1.5))
    out, grads = assert_agree(scene, camera_factory(83, 45), backend="cpu", reference="cpu_scalar",
                              img_tol=1e-5, grad_tol=1e-4)
    assert out.alpha.mean() > 0.3 and all(g.abs().max() > 0 for g in grads)


@pytest.mark.parametrize("seed", [0, 1])
def test_row_reach_of_thin_tilted_splats_matches_scalar(seed, scene_factory, camera_factory):
    """The vectorised kernels visit only the row segments a splat's ellipse reaches (its box bounds the ellipse
    on every row at once). Needles at every angle, opacities from the 1/255 threshold to 0.999 and few overlaps,
    so a segment wrongly left out would change pixels by at least 1/255 of a colour: values and gradients must be
    the scalar kernel's, which evaluates every pixel of the box (gradients to 2e-4: 1.2e-4 apart on a build
    without fused multiply-adds, -march=x86-64-v2; a left-out segment moves them by far more)."""
    means, quats, _, _, features = scene_factory(600, 10 + seed, torch.float32, channels=19, spread=1.2)
    g = torch.Generator().manual_seed(seed)
    long_axis = torch.randint(3, (600,), generator=g)
    log_scales = torch.full((600, 3), -5.0)
    log_scales[torch.arange(600), long_axis] = -2.2 + 0.6 * torch.rand(600, generator=g)
    opacity_logits = torch.empty(600).uniform_(-5.4, 7.0, generator=g)
    scene = (means, quats, log_scales, opacity_logits, features)
    out, grads = assert_agree(scene, camera_factory(83, 61), backend="cpu", reference="cpu_scalar",
                              img_tol=1e-5, grad_tol=2e-4)
    assert 0.05 < out.alpha.mean() < 0.9 and all(g.abs().max() > 0 for g in grads)


@pytest.mark.parametrize("channels", [19, 40])
def test_attribute_gradient_on_few_pixels_matches_scalar(channels, scene_factory, camera_factory):
    """A semantic loss on sampled pixels: the attribute channels' gradient is zero in most 8-pixel segments,
    which the vectorised backward skips; the gradients must be those of the scalar kernel, which does not."""
    scene = scene_factory(1500, 7, torch.float32, channels=channels, spread=1.5, scale_range=(-4.0, -1.5))
    camera = camera_factory(83, 45)
    g = torch.Generator().manual_seed(0)
    picked = torch.zeros(45 * 83, dtype=torch.bool)
    picked[torch.randint(45 * 83, (40,), generator=g)] = True
    grads = []
    for backend in ("cpu", "cpu_scalar"):
        leaves = [t.clone().requires_grad_(True) for t in scene]
        out = rasterize(*leaves, camera, backend=backend)
        weights = torch.randn(out.image.shape, generator=torch.Generator().manual_seed(1))
        weights[..., 3:].reshape(-1, channels - 3)[~picked] = 0.0
        ((out.image * weights).sum() + out.depth.sum()).backward()
        grads.append([t.grad for t in leaves])
    for name, x, y in zip(NAMES, *grads):
        assert rel(x, y) <= 1e-4, name
    attributes = grads[0][4][:, 3:]
    assert attributes.abs().max() > 0 and (attributes == 0).all(dim=1).any()  # some Gaussians got none


@pytest.mark.parametrize(("channels", "sparse"), [(3, False), (19, False), (19, True), (40, True)])
def test_features_only_backward_gives_feature_gradients_bit_for_bit(channels, sparse, scene_factory, camera_factory):
    """With the geometry taking no gradient (a step that trains the attributes alone, a splat onto the Gaussians)
    the vectorised backward computes the features' gradients only: exactly those of the full backward."""
    scene = scene_factory(1500, 5, torch.float32, channels=channels, spread=1.5, scale_range=(-4.0, -1.5))
    pixels = torch.randint(45 * 83, (60,), generator=torch.Generator().manual_seed(0)) if sparse else None
    weights = torch.randn(45 * 83, channels, generator=torch.Generator().manual_seed(1))
    grads = []
    for geometry_grad in (True, False):
        geometry = [t.clone().requires_grad_(geometry_grad) for t in scene[:4]]
        features = scene[4].clone().requires_grad_(True)
        out = rasterize(*geometry, features, camera_factory(83, 45), backend="cpu", attribute_pixels=pixels,
                        attributes_move_geometry=False)
        pick = slice(None) if pixels is None else pixels
        ((out.image.reshape(-1, channels)[pick] * weights[pick]).sum() + out.depth.sum()).backward()
        grads.append(features.grad)
        assert all((t.grad is not None) == geometry_grad for t in geometry)
    assert grads[0].abs().max() > 0 and torch.equal(grads[0], grads[1])


def test_attributes_rendered_only_where_asked(scene_factory, camera_factory):
    """attribute_pixels: colour, depth and alpha as ever; the attribute channels exact at the asked pixels, 0 or
    exact elsewhere (skipped per segment); a loss on the asked pixels gets the gradients of the full render."""
    scene = scene_factory(1500, 3, torch.float32, channels=19, spread=1.5, scale_range=(-4.0, -1.5))
    camera = camera_factory(83, 45)
    asked = torch.randint(45 * 83, (30,), generator=torch.Generator().manual_seed(0))
    outs, grads = [], []
    for pixels in (None, asked):
        leaves = [t.clone().requires_grad_(True) for t in scene]
        out = rasterize(*leaves, camera, backend="cpu", attribute_pixels=pixels)
        attrs = out.semantics.reshape(-1, 16)[asked]
        (attrs.sum() + out.rgb.sum() + out.depth.sum()).backward()
        outs.append(out)
        grads.append([t.grad for t in leaves])
    full, sparse = outs
    assert sparse.attribute_pixels is asked and full.attribute_pixels is None
    for x, y in ((full.rgb, sparse.rgb), (full.depth, sparse.depth), (full.alpha, sparse.alpha)):
        assert torch.equal(x, y)
    a, b = full.semantics.reshape(-1, 16), sparse.semantics.reshape(-1, 16)
    assert torch.equal(a[asked], b[asked])
    skipped = (b == 0).all(dim=1) & (a != 0).any(dim=1)
    assert skipped.float().mean() > 0.5 and torch.equal(b[~skipped], a[~skipped])
    for name, x, y in zip(NAMES, *grads):
        assert rel(x, y) <= 1e-5, name


@pytest.mark.parametrize("channels", [3, 8, 19])
def test_render_without_gradients_in_one_call_is_the_autograd_render_bit_for_bit(channels, scene_factory,
                                                                                  camera_factory, monkeypatch):
    """No gradient wanted: one compiled call projects, culls, gathers the features (given as parts), bins and
    composites. The same image, depth, alpha, radii and centres as the autograd path (project the whole map,
    concatenate, composite), bit for bit: with Gaussians behind the camera and off-screen, partial edge tiles,
    colour and attributes as separate parts, a background, and attribute channels asked on a few pixels. (The
    autograd path's pre-cull may differ in the last bit: PyTorch's sigmoid rounds a few opacities differently
    when it runs over the selected rows.)"""
    from clipgs.render import api

    means, quats, log_scales, logits, feats = scene_factory(3000, 11, torch.float32, channels=channels, spread=2.5,
                                                            scale_range=(-4.0, -1.5))
    camera = camera_factory(83, 45)
    calls = []
    monkeypatch.setattr(api, "render_cpu", lambda *a, **k: calls.append(1) or render_cpu(*a, **k))
    background = torch.rand(channels, generator=torch.Generator().manual_seed(1))
    asked = torch.randint(45 * 83, (30,), generator=torch.Generator().manual_seed(2))
    for pixels in (None, asked):
        kwargs = dict(backend="cpu", background=background, attribute_pixels=pixels)
        with torch.no_grad():
            fast = rasterize(means, quats, log_scales, logits, (feats[:, :3], feats[:, 3:]), camera, **kwargs)
        leaves = [t.clone().requires_grad_(True) for t in (means, quats, log_scales, logits, feats)]
        slow = rasterize(*leaves, camera, cull=False, **kwargs)
        for x, y in ((fast.image, slow.image), (fast.depth, slow.depth), (fast.alpha, slow.alpha),
                     (fast.radii, slow.radii)):
            assert x.shape == y.shape and torch.equal(x, y.detach())
        seen = slow.visible
        assert torch.equal(fast.means2d[seen], slow.means2d[seen].detach()) and not fast.means2d[~seen].any()
        assert 0.2 < float(seen.float().mean()) < 0.9 and fast.alpha.mean() > 0.2
    assert len(calls) == 2  # the no-gradient renders took the one-call path, the others did not


def test_fast_exp2_error_bound():
    """The vectorised compositor's 2^y: relative error <= 3e-6 against float64 exp2 over [-126, 0]."""
    x = torch.cat([torch.linspace(-126.0, 0.0, 200_003), -torch.logspace(-8, 0, 1001), torch.zeros(1)]).float()
    y = torch.empty_like(x)
    cpu_kernel.load().clipgs_fast_exp2_f32(x.numel(), x.data_ptr(), y.data_ptr())
    exact = torch.exp2(x.double())
    assert float(((y.double() - exact).abs() / exact).max()) <= 3e-6


def test_float64_agrees_to_rounding(scene_factory, camera_factory):
    scene = scene_factory(500, 9, channels=5)
    assert_agree(scene, camera_factory(50, 37), dtype=torch.float64, img_tol=1e-12, grad_tol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_edge_cases_agree(dtype, camera_factory):
    cam = camera_factory(45, 33)
    means = torch.tensor([
        [0.0, 0.0, 0.0],      # ordinary
        [0.3, -6.0, 0.8],     # behind the camera
        [0.3, -3.0, 0.8],     # at the camera centre
        [6.0, 0.0, 0.0],      # far off-screen
        [1.6, 0.0, 0.3],      # partly off-screen (image border)
        [0.1, 0.5, -0.2],     # degenerate: flat scale
        [-0.2, 0.2, 0.1],     # zero opacity
        [0.05, -0.4, 0.0],    # large, nearly opaque: early termination
    ], dtype=torch.float64)
    n = len(means)
    quats = torch.tensor([[1.0, 0.2, -0.1, 0.3]] * n, dtype=torch.float64)
    log_scales = torch.full((n, 3), -1.5, dtype=torch.float64)
    log_scales[5] = torch.tensor([-1.0, -1.0, -14.0])
    log_scales[7] = -0.5
    logits = torch.full((n,), 1.0, dtype=torch.float64)
    logits[6] = -60.0
    logits[7] = 9.0
    feats = torch.rand(n, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    scene = [t.to(dtype) for t in (means, quats, log_scales, logits, feats)]
    out, _ = assert_agree(scene, cam, dtype=dtype,
                          **({"img_tol": 1e-12, "grad_tol": 1e-10} if dtype == torch.float64 else {}))
    assert not out.visible[1] and not out.visible[2] and not out.visible[3] and not out.visible[6]
    assert out.visible[4] and out.alpha.max() > 0.99


def test_saturated_pixels_stop_early_and_agree(scene_factory, camera_factory):
    """A deep stack of nearly opaque Gaussians (3 + 16 channels): most pixels saturate a few layers in, where
    the vectorised forward stops each 8-pixel segment on its own; values, gradients and the stopping point
    agree with the reference."""
    means, quats, log_scales, logits, feats = scene_factory(3000, 5, dtype=torch.float32, channels=19,
                                                            spread=1.2, scale_range=(-2.5, -1.5))
    logits = torch.full_like(logits, 6.0)  # opacity 0.998: transmittance below 1e-4 after two layers
    out, _ = assert_agree([means, quats, log_scales, logits, feats], camera_factory(83, 61))
    # transmittance below 1e-3 on most pixels: the next layer there takes it below 1e-4, where they stop
    assert float((out.alpha > 0.999).float().mean()) > 0.5
    assert out.visible.sum() > 1000


def test_empty_scene_and_one_pixel(camera_factory):
    z = torch.zeros
    out = rasterize(z(0, 3), z(0, 4), z(0, 3), z(0), z(0, 6), camera_factory(20, 10), backend="cpu")
    assert out.image.shape == (10, 20, 6) and out.alpha.abs().sum() == 0
    cam = Camera(np.array([[10.0, 0, 0.0], [0, 10.0, 0.0], [0, 0, 1]]), 1, 1, np.eye(4))
    scene = [torch.tensor([[0.0, 0.0, 2.0], [0.02, 0.0, 3.0]]), torch.tensor([[1.0, 0, 0, 0]] * 2),
             torch.full((2, 3), -2.0), torch.tensor([0.5, 1.5]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])]
    out, _ = assert_agree(scene, cam)
    assert out.image.shape == (1, 1, 2)


def test_compiled_projection_and_binning_match_pytorch(scene_factory, camera_factory):
    """Values, hand-written gradients (incl. the clamp for Gaussians beyond the view) and tile lists."""
    cam = camera_factory(80, 60)
    scene = [t.double() for t in scene_factory(3000, 4, spread=3.0)]
    viewmat, K = camera_tensors(cam, torch.float64, torch.device("cpu"))
    results = []
    for project in (project_gaussians, project_cpu):
        m, q, s = (t.clone().requires_grad_(True) for t in scene[:3])
        p = project(m, q, s, torch.sigmoid(scene[3]), viewmat, K, 80, 60)
        v = p.visible
        g = torch.Generator().manual_seed(0)
        loss = sum((x[v] * torch.randn(x[v].shape, generator=g, dtype=torch.float64)).sum()
                   for x in (p.means2d, p.conics, p.depths))
        loss.backward()
        results.append((p, m.grad, q.grad, s.grad))
    (a, *ga), (b, *gb) = results
    v = a.visible
    assert torch.equal(v, b.visible) and torch.equal(a.radii, b.radii) and 0.2 < v.float().mean() < 0.9
    for name in ("means2d", "conics", "depths"):
        assert rel(getattr(b, name)[v], getattr(a, name)[v]) < 1e-12, name
    for name, x, y in zip(("means", "quats", "log_scales"), gb, ga):
        assert rel(x, y) < 1e-10, name
    ref, fast = bin_tiles(a, 80, 60), bin_tiles_cpu(a, 80, 60)
    for x, y in zip(ref[:3], fast[:3]):
        assert torch.equal(x, y)


@pytest.mark.parametrize("n", [3, 13, 4099])
def test_vectorised_float32_projection_matches_the_scalar_one(n, scene_factory, camera_factory):
    """float32 projects eight Gaussians per vector; the scalar template is its reference: the same footprints
    (radii, the visible set) and depths bit for bit, centres and conics to float32 rounding (the compilers
    fuse multiply-adds differently; a thin footprint's conic carries the cancellation in its determinant).
    Counts that are not a multiple of eight, Gaussians behind the camera, off-screen and nearly transparent."""
    from clipgs.render.cpu_backend import _ptr

    means, quats, log_scales, logits, _ = scene_factory(n, 5, torch.float32, spread=3.0, scale_range=(-4.5, 0.5))
    logits[::5] = -7.0  # opacity below 1/255
    camera = camera_factory(83, 45)
    viewmat, K = camera_tensors(camera, torch.float32, torch.device("cpu"))
    lib, inputs = cpu_kernel.load(), (means, quats, log_scales, torch.sigmoid(logits), viewmat, K)
    results = []
    for fn in (lib.clipgs_project_f32, lib.clipgs_project_scalar_f32):
        outs = [torch.full((n, 2), 7.0), torch.full((n, 3), 7.0), torch.full((n,), 7.0),
                torch.full((n, 2), 7, dtype=torch.int32)]
        fn(n, *map(_ptr, inputs), 83, 45, 0.01, 1e10, 0.3, *map(_ptr, outs), 2)
        results.append(outs)
    (m2, co, dep, rad), (m2_ref, co_ref, dep_ref, rad_ref) = results
    assert torch.equal(rad, rad_ref) and torch.equal(dep, dep_ref)
    seen = (rad_ref > 0).any(dim=1)
    if n > 100:
        assert 0.2 < float(seen.float().mean()) < 0.8
    assert not m2[~seen].any() and not co[~seen].any()  # culled: zeros, as the scalar projection writes
    if seen.any():
        assert rel(m2[seen], m2_ref[seen]) < 1e-6 and rel(co[seen], co_ref[seen]) < 1e-4


@pytest.mark.parametrize("n", [3, 13, 4099])
def test_vectorised_float32_projection_gradient_matches_the_scalar_one(n, scene_factory, camera_factory):
    """float32's projection gradient runs eight Gaussians per vector; the scalar template is its reference: the
    gradients of means, quaternions and log-scales to float32 rounding (both sit 1e-5 to 3e-4 from the float64
    gradient on such scenes, the conic's determinant cancelling for thin footprints), and zeros for every Gaussian
    without a footprint. Anisotropic Gaussians (the quaternion gradient is not zero), some off-screen where the
    clamp of x/z and y/z bites, some behind the camera; counts that are not a multiple of eight."""
    from clipgs.render.cpu_backend import _ptr

    means, quats, log_scales, logits, _ = scene_factory(n, 5, torch.float32, spread=3.0, scale_range=(-4.5, 0.5))
    camera = camera_factory(83, 45)
    viewmat, K = camera_tensors(camera, torch.float32, torch.device("cpu"))
    lib = cpu_kernel.load()
    m2, co, dep = torch.empty(n, 2), torch.empty(n, 3), torch.empty(n)
    radii = torch.empty(n, 2, dtype=torch.int32)
    opacities = torch.sigmoid(logits)  # held: a temporary's memory is freed before the call reads it
    lib.clipgs_project_f32(n, *map(_ptr, (means, quats, log_scales, opacities, viewmat, K)), 83, 45,
                           0.01, 1e10, 0.3, *map(_ptr, (m2, co, dep, radii)), 2)
    seen = (radii > 0).any(dim=1)
    g = torch.Generator().manual_seed(1)
    grads_in = [torch.randn(n, k, generator=g) for k in (2, 3, 1)]
    results = []
    for fn in (lib.clipgs_project_backward_f32, lib.clipgs_project_backward_scalar_f32):
        outs = [torch.full((n, k), 7.0) for k in (3, 4, 3)]
        fn(n, *map(_ptr, (means, quats, log_scales, viewmat, K)), 83, 45, 0.3, _ptr(radii), *map(_ptr, grads_in),
           *map(_ptr, outs), 2)
        results.append(outs)
    if n > 100:
        assert 0.2 < float(seen.float().mean()) < 0.8
    for name, fast, ref in zip(("means", "quats", "log_scales"), *results):
        assert not fast[~seen].any() and not ref[~seen].any(), name  # no footprint: zero gradient
        if seen.any():
            assert ref[seen].abs().max() > 1e-3, name
            assert rel(fast[seen], ref[seen]) < 1e-4, name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("threads", [1, 2])
def test_binning_matches_reference_with_ties(dtype, threads):
    """The compiled binning (counted per thread, radix-sorted by depth, filled per range of that order) lists the
    same Gaussians in the same order per tile as the PyTorch reference: depth, then index on ties (depths
    drawn from 40 values), culled ones left out, footprints clipped at every border."""
    n, width, height = 20_000, 330, 250  # partial tiles on both axes
    g = torch.Generator().manual_seed(3)
    means2d = (torch.rand(n, 2, generator=g, dtype=torch.float64) * torch.tensor([width + 60.0, height + 60.0]) - 30)
    radii = torch.randint(0, 24, (n, 2), generator=g, dtype=torch.int32)
    radii[torch.rand(n, generator=g) < 0.1] = 0  # culled
    depths = 0.5 + torch.randint(0, 40, (n,), generator=g).to(torch.float64) * 0.25
    proj = Projected(means2d=means2d.to(dtype), conics=torch.zeros(n, 3, dtype=dtype), depths=depths.to(dtype),
                     opacities=torch.full((n,), 0.5, dtype=dtype), radii=radii)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fast = bin_tiles_cpu(proj, width, height)
    finally:
        torch.set_num_threads(previous)
    ref = bin_tiles(proj, width, height)
    assert ref[0].numel() > 50_000
    for x, y in zip(ref[:3], fast[:3]):
        assert torch.equal(x, y)


def test_auto_picks_compiled_backend_on_cpu():
    assert resolve_backend("auto", torch.device("cpu")) == "cpu"


def test_kernel_cache_key_follows_the_source(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPGS_CACHE", str(tmp_path))
    path = cpu_kernel.library_path()
    assert path.parent == tmp_path / "kernels" and path.suffix == ".so"
    assert cpu_kernel.build() == path and path.is_file()


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_per_gaussian_sums_split_over_threads_match_index_add(threads):
    """The backward's per-intersection gradients summed per Gaussian: threads own ranges of Gaussians, and
    every split gives what index_add gives (a map big enough for several ranges)."""
    import ctypes

    g = torch.Generator().manual_seed(0)
    n, m, C = 20000, 70000, 5
    ids = torch.sort(torch.randint(0, n, (m,), generator=g)).values[torch.randperm(m, generator=g)].contiguous()
    parts = [torch.randn(m, k, generator=g) for k in (2, 3, 1, C)]
    outs = [torch.full((n, k), 7.0) for k in (2, 3, 1, C)]  # not zero: the kernel zeroes them first
    ptr = [ctypes.c_void_p(t.data_ptr()) for t in (ids, *parts, *outs)]
    cpu_kernel.load().clipgs_sum_by_gaussian_f32(m, n, C, *ptr, threads)
    for part, out in zip(parts, outs, strict=True):
        torch.testing.assert_close(out, torch.zeros_like(out).index_add_(0, ids, part), rtol=1e-5, atol=1e-5)
