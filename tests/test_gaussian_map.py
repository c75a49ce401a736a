"""GaussianMap: growth from a frame, edits, PLY round trip and bad files."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from clipgs.data.frame import Frame
from clipgs.eval.metrics import depth_l1, psnr
from clipgs.geometry import intrinsics_from_hfov, look_at
from clipgs.mapping import GaussianMap, MapFileError, load_ply, save_ply


def plane_frame(w=64, h=48) -> Frame:
    """A textured slanted plane seen by a camera at (0, -3, 1) looking at the origin."""
    K = intrinsics_from_hfov(w, h, 60.0)
    pose = look_at(np.array([0.0, -3.0, 1.0]), np.zeros(3))
    v, u = np.mgrid[0:h, 0:w]
    depth = (2.5 + 0.01 * u + 0.005 * v).astype(np.float32)
    rgb = np.stack([u * 255 // w, v * 255 // h, 80 + ((u // 8 + v // 8) % 2) * 60], axis=-1).astype(np.uint8)
    depth[:4, :4] = np.nan  # invalid pixels seed nothing
    depth[-3:, -5:] = -1.0
    return Frame(rgb, depth, K, pose, timestamp=1.0)


def random_map(n=50, sem_dim=5, seed=0) -> GaussianMap:
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return GaussianMap(r(n, 3), r(n, 4), r(n, 3) - 2, r(n), r(n, 3), r(n, sem_dim))


def test_seeded_map_renders_its_frame_back():
    frame = plane_frame()
    gmap = GaussianMap.from_frame(frame, sem_dim=4)
    assert len(gmap) == np.count_nonzero(frame.depth) == 64 * 48 - 16 - 15
    out = gmap.render(frame.camera)
    assert out.image.shape == (48, 64, 7)
    rgb = out.rgb.detach().numpy()
    valid = frame.depth > 0
    assert psnr(np.clip(rgb, 0, 1), frame.rgb / 255.0, mask=valid) > 20.0
    depth = out.expected_depth().numpy()
    # The plane's depth changes 1 cm per pixel; the eps2d blur lets nearer neighbours win by ~1 px.
    assert depth_l1(np.where(valid, depth, 0), frame.depth) < 0.02
    assert np.median(np.abs(depth[valid] - frame.depth[valid])) < 0.015


def test_render_culls_out_of_view_rows_first_with_the_same_result():
    frame = plane_frame()
    seen = GaussianMap.from_frame(frame, sem_dim=4)
    away = random_map(len(seen) * 2, sem_dim=4)
    away.means.mul_(0.1).add_(torch.tensor([0.0, -10.0, 1.0]))  # behind the camera
    gmap = GaussianMap(**{k: torch.cat([v, away.tensors()[k]]) for k, v in seen.tensors().items()})
    whole, culled = gmap.render(frame.camera, cull=False), gmap.render(frame.camera)
    assert torch.allclose(whole.image, culled.image, atol=1e-6) and torch.equal(whole.radii, culled.radii)
    assert not culled.visible[len(seen):].any() and culled.visible[:len(seen)].sum() > 0.9 * len(seen)


def test_from_frame_subsampling_and_scale():
    frame = plane_frame()
    strided = GaussianMap.from_frame(frame, pixel_stride=4)
    assert len(strided) == 12 * 16 - 1  # the NaN corner takes out one grid sample
    capped = GaussianMap.from_frame(frame, pixel_stride=2, max_points=100, seed=3)
    assert len(capped) == 100
    again = GaussianMap.from_frame(frame, pixel_stride=2, max_points=100, seed=3)
    assert torch.equal(capped.means, again.means)
    # Isotropic radius = depth / focal * stride.
    z = (strided.means - torch.tensor(frame.world_from_camera[:3, 3], dtype=torch.float32)) @ torch.tensor(
        frame.world_from_camera[:3, 2], dtype=torch.float32)
    torch.testing.assert_close(strided.log_scales[:, 0].exp(), z / float(frame.K[0, 0]) * 4, rtol=1e-4, atol=1e-6)
    assert torch.equal(strided.log_scales[:, 0], strided.log_scales[:, 2])
    mask = np.zeros(frame.depth.shape, bool)
    mask[10:20, 10:20] = True
    assert len(GaussianMap.from_frame(frame, mask=mask)) == 100


def test_select_and_strongest():
    a = random_map(50, seed=1)
    opaque = a.select(a.opacities >= 0.5)
    assert len(opaque) == int((a.opacities >= 0.5).sum()) and (opaque.opacities >= 0.5).all()
    kept = a.strongest(10)
    capped = a.select(kept)
    assert len(capped) == 10 and torch.all(kept[1:] > kept[:-1])
    assert capped.opacity_logits.min() >= torch.sort(a.opacity_logits, descending=True).values[9]
    assert torch.equal(a.strongest(100), torch.arange(50))
    with pytest.raises(ValueError, match="max_count"):
        a.strongest(-1)
    with pytest.raises(ValueError, match="quats must have shape"):
        GaussianMap(a.means, a.quats[:, :3], a.log_scales, a.opacity_logits, a.sh0, a.semantics)


def test_ply_round_trip_is_exact(tmp_path):
    gmap = random_map(200, sem_dim=16)
    path = save_ply(gmap, tmp_path / "sub" / "map.ply")
    back = load_ply(path)
    for k, v in gmap.tensors().items():
        assert torch.equal(back.tensors()[k], v), k
    empty = load_ply(save_ply(GaussianMap.empty(sem_dim=3), tmp_path / "empty.ply"))
    assert len(empty) == 0 and empty.sem_dim == 3


def test_ply_uses_standard_3dgs_property_names(tmp_path):
    from plyfile import PlyData

    path = save_ply(random_map(5, sem_dim=2), tmp_path / "m.ply")
    names = [p.name for p in PlyData.read(str(path))["vertex"].properties]
    assert names[:17] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
                          "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    assert names[17:] == ["sem_0", "sem_1"]


def test_bad_map_files_give_clear_errors(tmp_path):
    from plyfile import PlyData, PlyElement

    good = save_ply(random_map(100), tmp_path / "good.ply").read_bytes()
    (tmp_path / "trunc.ply").write_bytes(good[: len(good) // 2])
    with pytest.raises(MapFileError, match=r"trunc\.ply: unreadable or truncated"):
        load_ply(tmp_path / "trunc.ply")
    (tmp_path / "junk.ply").write_bytes(b"this is not a ply file\n")
    with pytest.raises(MapFileError, match=r"junk\.ply"):
        load_ply(tmp_path / "junk.ply")
    cloud = np.zeros(4, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1")])
    PlyData([PlyElement.describe(cloud, "vertex")]).write(str(tmp_path / "cloud.ply"))
    with pytest.raises(MapFileError, match="not a 3DGS Gaussian map; missing vertex properties"):
        load_ply(tmp_path / "cloud.ply")
    with pytest.raises(MapFileError, match="no such map file"):
        load_ply(tmp_path / "absent.ply")
    nan_map = random_map(3)
    nan_map.means[1, 0] = float("nan")
    with pytest.raises(MapFileError, match="non-finite"):
        load_ply(save_ply(nan_map, tmp_path / "nan.ply"))
