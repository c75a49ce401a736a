"""Occlusion by the observed surface: the far-depth image, the compiled and PyTorch culls, and mapping with it."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from clipgs.data.dataset import open_dataset
from clipgs.data.frame import Camera
from clipgs.geometry import intrinsics_from_hfov
from clipgs.mapping import GaussianMap
from clipgs.mapping.config import MapperConfig
from clipgs.mapping.mapper import IncrementalMapper
from clipgs.render import Occluder, maybe_in_view
from clipgs.render.occlusion import default_radius_px

INF = math.inf


def test_far_image_is_the_windowed_maximum_with_single_dropouts_filled_and_holes_unknown():
    depth = torch.full((7, 9), 2.0)
    depth[1, 6] = 3.0  # a farther pixel
    depth[3, 3] = 0.0  # a single dropout: filled from its neighbours (all 2.0)
    depth[5:7, 0:2] = 0.0  # an invalid corner: unknown, so +inf around it
    far = Occluder.from_depth(depth, radius_px=1, margin_m=0.1).far
    expected = torch.full((7, 9), 2.0)
    expected[0:3, 5:8] = 3.0
    expected[4:7, 0:3] = INF
    assert torch.equal(far, expected)
    assert Occluder.from_depth(depth, 1, 0.1).radius_px == 1 and default_radius_px(160) == 6
    assert default_radius_px(320) == 12 and default_radius_px(40) == 3  # the blur alone reaches 2.8 px
    with pytest.raises(ValueError, match="radius_px"):
        Occluder.from_depth(depth, 0, 0.1)


def _wall_scene(n_behind: int = 400, seed: int = 0):
    """An opaque wall of small Gaussians 2 m in front of the camera and small Gaussians 2 m behind it, seen by a
    64x48 camera whose depth sees the wall, except a doorway (columns 40-63) where it sees 6 m."""
    g = torch.Generator().manual_seed(seed)
    camera = Camera(intrinsics_from_hfov(64, 48, 70.0), 64, 48, np.eye(4))
    K = torch.as_tensor(camera.K, dtype=torch.float32)
    u, v = torch.meshgrid(torch.arange(64) + 0.5, torch.arange(48) + 0.5, indexing="xy")
    rays = torch.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], torch.ones_like(u)], -1).reshape(-1, 3)
    wall = rays * 2.0
    behind = torch.rand(n_behind, 3, generator=g) * torch.tensor([4.0, 3.0, 0.5]) - torch.tensor([2.0, 1.5, -4.0])
    means = torch.cat([wall, behind])
    n = len(means)
    log_scales = torch.cat([torch.full((len(wall), 3), math.log(0.03)), torch.full((n_behind, 3), math.log(0.01))])
    gmap = GaussianMap(means, torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1), log_scales, torch.full((n,), 9.0),
                       torch.rand(n, 3, generator=g), torch.zeros(n, 0))
    depth = torch.full((48, 64), 2.0)
    depth[:, 40:] = 6.0  # the doorway: the sensor sees past the wall there
    return gmap, camera, depth, len(wall)


@pytest.mark.parametrize("backend", ["cpu", "torch"])  # the compiled cull, and the PyTorch one (GPU path)
def test_the_cull_drops_gaussians_the_observed_surface_hides_and_keeps_those_it_may_not(backend):
    gmap, camera, depth, n_wall = _wall_scene()
    occluder = Occluder.from_depth(depth, radius_px=6, margin_m=0.1)
    frustum = maybe_in_view(gmap.means, gmap.log_scales, gmap.opacity_logits, camera, backend=backend)
    kept = maybe_in_view(gmap.means, gmap.log_scales, gmap.opacity_logits, camera, backend=backend,
                         occluder=occluder)
    assert bool(kept[:n_wall].all())  # the surface itself stays
    behind = torch.arange(len(gmap)) >= n_wall
    K = camera.K
    column = (K[0, 0] * gmap.means[:, 0] / gmap.means[:, 2] + K[0, 2] + 0.5).floor()  # OpenCV centres at integers
    door = behind & frustum & (column >= 40 - 6)  # the doorway's far depth is within their window
    hidden = behind & frustum & (column < 40 - 6)
    assert door.sum() > 20 and hidden.sum() > 100
    assert bool(kept[door].all()) and not bool(kept[hidden].any())
    big = occluder.radius_px + 1  # a footprint wider than the tested window is kept
    wide = GaussianMap(gmap.means, gmap.quats, gmap.log_scales + math.log(big * 2), gmap.opacity_logits, gmap.sh0,
                       gmap.semantics)
    assert bool(maybe_in_view(wide.means, wide.log_scales, wide.opacity_logits, camera, backend=backend,
                              occluder=occluder)[hidden].all())
    with pytest.raises(ValueError, match="occluder image"):
        maybe_in_view(gmap.means, gmap.log_scales, gmap.opacity_logits, camera, backend=backend,
                      occluder=Occluder.from_depth(depth[:, :32], 6, 0.1))


def test_compiled_and_pytorch_occlusion_culls_agree_and_the_image_behind_an_opaque_wall_is_unchanged():
    gmap, camera, depth, _ = _wall_scene(n_behind=3000, seed=1)
    occluder = Occluder.from_depth(depth, radius_px=6, margin_m=0.1)
    a = gmap.rows_in_view(camera, "cpu", occluder)
    b = gmap.rows_in_view(camera, "torch", occluder)
    assert len(set(a.tolist()) ^ set(b.tolist())) <= 2  # float rounding at the edge aside
    assert len(a) < len(gmap.rows_in_view(camera, "cpu"))
    with torch.no_grad():
        full = gmap.render(camera, backend="cpu")
        part = gmap.select(a).render(camera, backend="cpu")
    torch.testing.assert_close(part.image, full.image, rtol=0, atol=1e-3)  # the wall is opaque: T < 1e-3 behind it


def test_mapping_with_occlusion_leaves_gaussians_behind_the_observed_surface_alone(synth_dir):
    """The room seen from inside: Gaussians planted 1 m behind its walls, floor and ceiling stay out of every step
    with the occlusion cull (they keep their values); with the frustum alone most of them are trained."""
    ds = open_dataset(synth_dir)
    results = {}
    for margin in (0.0, 0.1):
        config = MapperConfig(iters_per_keyframe=4, occlusion_margin_m=margin, prune_opacity=0.0, seed=0)
        mapper = IncrementalMapper(config)  # nothing pruned: the planted rows keep their indices
        mapper.add_frame(ds[ds.train_indices[0]])
        frame = ds[ds.train_indices[0]]
        shell = np.isin(frame.labels, [ds.classes.index(c) for c in ("wall", "floor", "ceiling")])
        far = GaussianMap.from_frame(frame, pixel_stride=4, mask=shell)
        rays = far.means - torch.as_tensor(frame.world_from_camera[:3, 3], dtype=torch.float32)
        far.means = far.means + 1.0 * rays / rays.norm(dim=1, keepdim=True)  # 1 m behind the room's shell
        far.log_scales = torch.full_like(far.log_scales, math.log(0.005))
        start = len(mapper.map)
        mapper.map.extend(far)
        planted = mapper.map.gaussians.means[start:].detach().clone()
        for i in ds.train_indices[1:8]:
            mapper.add_frame(ds[i])
        moved = (mapper.map.gaussians.means[start:start + len(far)].detach() - planted).abs().amax(dim=1) > 0
        results[margin] = float(moved.float().mean())
    assert results[0.0] > 0.5  # the frustum alone trains them (they sit in view, behind the wall)
    assert results[0.1] < 0.05


def test_a_keyframe_keeps_its_far_image_in_millimetres_never_nearer_than_computed():
    from clipgs.mapping.keyframes import Keyframe

    g = torch.Generator().manual_seed(3)
    depth_mm = (torch.rand(60, 80, generator=g) * 3000 + 500).round()
    depth_mm[:8, :8] = 0  # a region with no depth: unknown
    camera = Camera(intrinsics_from_hfov(80, 60, 60.0), 80, 60, np.eye(4))
    kf = Keyframe(camera, 0, torch.zeros(60, 80, 3, dtype=torch.uint8), depth_mm.to(torch.int32).to(torch.uint16))
    assert kf.occluder(0.0) is None  # margin 0: off
    exact = Occluder.from_depth(kf.depth, default_radius_px(80), 0.1)
    cached = kf.occluder(0.1)
    assert cached.radius_px == exact.radius_px and cached.margin_m == 0.1
    assert torch.equal(cached.far.isinf(), exact.far.isinf()) and bool(cached.far.isinf().any())
    finite = exact.far.isfinite()
    diff = cached.far[finite] - exact.far[finite]
    assert bool((diff >= 0).all()) and float(diff.max()) <= 1e-3 + 1e-6
    assert kf.occluder(0.1).far.data_ptr() != cached.far.data_ptr() and kf._far_mm is not None


def test_a_3dcs_novel_view_hides_what_the_maps_own_rendered_surface_hides():
    from clipgs.semantics.supervision import NovelView

    gmap, camera, _, n_wall = _wall_scene()
    out = gmap.render(camera, semantic=False)
    assert NovelView.surface_far_mm(out, 0.0) is None  # occlusion culling off
    view = NovelView(camera, torch.zeros(48, 64, dtype=torch.int16), NovelView.surface_far_mm(out, 0.1))
    assert view.far_mm.dtype == torch.uint16 and view.occluder(0.0) is None
    occluder = view.occluder(0.1)
    inner = occluder.far[8:-8, 8:-8]  # the wall's rendered surface, 2 m, everywhere but the borders' blur
    assert float(inner.min()) >= 1.99 and float(inner.max()) <= 2.1
    keep = maybe_in_view(gmap.means, gmap.log_scales, gmap.opacity_logits, camera, backend="cpu", occluder=occluder)
    assert bool(keep[:n_wall].all())
    assert int(keep[n_wall:].sum()) < 0.1 * (len(keep) - n_wall)
