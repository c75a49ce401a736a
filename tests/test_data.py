"""Frames, dataset readers (Replica, ScanNet, TUM), the split, and the synthetic scene generator."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from clipgs.data import Frame, FrameError
from clipgs.data.dataset import open_dataset, split_indices
from clipgs.data.images import read_image, write_image
from clipgs.data.replica import ReplicaDataset
from clipgs.data.scannet import ScanNetDataset
from clipgs.data.synthetic import generate_scene
from clipgs.data.tum import TumDataset, associate
from clipgs.geometry import intrinsics_from_hfov, invert_rigid
from clipgs.mapping import GaussianMap


def test_frame_validation():
    K = intrinsics_from_hfov(8, 6, 90)
    rgb = np.zeros((6, 8, 3), np.uint8)
    depth = np.ones((6, 8), np.float32)
    depth[0, 0], depth[0, 1], depth[0, 2] = np.nan, np.inf, -2.0
    f = Frame(rgb, depth, K, np.eye(4))
    assert f.depth[0, :3].tolist() == [0, 0, 0] and np.count_nonzero(f.depth) / f.depth.size == pytest.approx(45 / 48)
    with pytest.raises(FrameError, match="rgb must be"):
        Frame(rgb.astype(np.float32), depth, K, np.eye(4))
    with pytest.raises(FrameError, match="depth shape"):
        Frame(rgb, depth[:5], K, np.eye(4))
    bad_pose = np.eye(4)
    bad_pose[0, 0] = 2.0
    with pytest.raises(FrameError, match="rigid"):
        Frame(rgb, depth, K, bad_pose)
    with pytest.raises(FrameError, match="rigid"):
        Frame(rgb, depth, K, np.full((4, 4), np.nan))
    with pytest.raises(FrameError, match="intrinsics"):
        Frame(rgb, depth, np.zeros((3, 3)), np.eye(4))


def test_split_holds_out_every_tenth_frame():
    train, test = split_indices(30)
    assert test == [5, 15, 25] and len(train) == 27 and not set(train) & set(test)
    assert split_indices(5, test_every=0) == ([0, 1, 2, 3, 4], [])
    with pytest.raises(ValueError):
        split_indices(10, 10, 10)


def test_synthetic_scene_layout_and_ground_truth(synth_dir):
    ds = open_dataset(synth_dir)
    assert isinstance(ds, ReplicaDataset) and len(ds) == 24
    assert ds.classes[0] == "void" and len(ds.classes) >= 12
    seen = set()
    for f in ds:
        assert f.rgb.shape == (60, 80, 3) and f.labels is not None
        assert np.count_nonzero(f.depth) == f.depth.size  # a closed room: every ray hits something
        assert f.depth.min() > 0.2 and f.depth.max() < 8.0
        seen |= set(np.unique(f.labels).tolist())
    object_classes = seen - {ds.classes.index(c) for c in ("void", "wall", "floor", "ceiling")}
    assert len(object_classes) >= 8, [ds.classes[c] for c in object_classes]
    meta = json.loads((synth_dir / "scene.json").read_text())
    assert meta["seed"] == 0 and meta["frames"] == 24
    assert read_image(synth_dir / "semantic_instance" / "semantic_instance_3.png").max() > 10


def test_synthetic_generation_is_deterministic(tmp_path, synth_dir):
    again = generate_scene(tmp_path / "again", n_frames=24, width=80, height=60, progress=False)
    other = generate_scene(tmp_path / "other", seed=1, n_frames=24, width=80, height=60, progress=False)
    for sub in ("rgb/rgb_7.png", "depth/depth_7.png", "semantic_class/semantic_class_7.png", "traj_w_c.txt"):
        assert (again / sub).read_bytes() == (synth_dir / sub).read_bytes(), sub
    assert (other / "rgb/rgb_7.png").read_bytes() != (synth_dir / "rgb/rgb_7.png").read_bytes()
    with pytest.raises(ValueError, match="unknown synthetic scene"):
        generate_scene(tmp_path / "x", scene="castle", n_frames=2, progress=False)


def test_synthetic_views_are_geometrically_consistent(synth_dir):
    """Depth of view A, reprojected with the poses and K, lands on view B's depth: conventions agree."""
    ds = open_dataset(synth_dir)
    a, b = ds[2], ds[3]
    from clipgs.geometry import unproject_depth

    pts, _, _ = unproject_depth(a.depth, a.K, a.world_from_camera)
    cam = (pts - b.world_from_camera[:3, 3]) @ b.world_from_camera[:3, :3]
    uv = cam[:, :2] / cam[:, 2:] * [b.K[0, 0], b.K[1, 1]] + [b.K[0, 2], b.K[1, 2]]
    u, v = np.round(uv[:, 0]).astype(int), np.round(uv[:, 1]).astype(int)
    inside = (cam[:, 2] > 0) & (u >= 0) & (u < b.width) & (v >= 0) & (v < b.height)
    assert inside.mean() > 0.5
    err = np.abs(b.depth[v[inside], u[inside]] - cam[inside, 2])
    assert np.mean(err < 0.05) > 0.85  # the rest: occlusion changes and silhouette pixels


def test_map_seeded_from_one_view_predicts_the_next_views_depth(synth_dir):
    ds = open_dataset(synth_dir)
    gmap = GaussianMap.from_frame(ds[4])

    def median_rel_depth_error(frame):
        out = gmap.render(frame.camera)
        covered = (out.alpha > 0.95).numpy()
        rel = (np.abs(out.expected_depth().numpy() - frame.depth) / frame.depth)[covered]
        return covered.mean(), float(np.median(rel))

    _, same = median_rel_depth_error(ds[4])
    coverage, nxt = median_rel_depth_error(ds[5])  # 15 degrees further round the room
    assert coverage > 0.3
    # An unoptimised seed is biased by about one pixel's depth change on grazing surfaces, in its own view
    # as in the next; a pose or intrinsics convention error would add tens of percent in the next view.
    assert same < 0.05 and nxt < same + 0.02


def test_replica_reader_resize_and_missing_files(synth_dir, tmp_path):
    ds = ReplicaDataset(synth_dir, size=(40, 30))
    f = ds[1]
    assert f.rgb.shape == (30, 40, 3) and f.depth.shape == (30, 40) and f.labels.shape == (30, 40)
    np.testing.assert_allclose(ds.K[0, 0], ReplicaDataset(synth_dir).K[0, 0] / 2)
    assert ds[-1].index == 23
    with pytest.raises(IndexError):
        ds[24]
    with pytest.raises(FileNotFoundError, match=r"traj_w_c\.txt"):
        ReplicaDataset(tmp_path)
    with pytest.raises(ValueError, match="unknown dataset layout"):
        open_dataset(tmp_path)


def _write_scannet(root, n=4, w=64, h=48):
    rng = np.random.default_rng(0)
    for sub in ("color", "depth", "pose", "intrinsic", "label-filt"):
        (root / sub).mkdir(parents=True)
    K = np.eye(4)
    K[:3, :3] = intrinsics_from_hfov(2 * w, 2 * h, 60)
    np.savetxt(root / "intrinsic" / "intrinsic_color.txt", K)
    for i in range(n):
        from PIL import Image

        Image.fromarray(rng.integers(0, 255, (2 * h, 2 * w, 3), dtype=np.uint8)).save(root / "color" / f"{i}.jpg")
        write_image(root / "depth" / f"{i}.png", np.full((h, w), 1500 + i, np.uint16))
        write_image(root / "label-filt" / f"{i}.png", np.full((h, w), 3 + i, np.uint8))
        pose = np.eye(4)
        pose[0, 3] = i * 0.1
        if i == 2:
            pose[:] = -np.inf  # ScanNet's marker for lost tracking
        np.savetxt(root / "pose" / f"{i}.txt", pose)


def test_scannet_reader(tmp_path):
    _write_scannet(tmp_path / "scene")
    ds = open_dataset(tmp_path / "scene")
    assert isinstance(ds, ScanNetDataset) and len(ds) == 3 and ds.skipped == 1
    f = ds[2]  # the 4th file: the -inf pose was skipped
    assert f.rgb.shape == (48, 64, 3) and f.depth[0, 0] == pytest.approx(1.503)
    assert f.world_from_camera[0, 3] == pytest.approx(0.3) and f.labels[0, 0] == 6
    np.testing.assert_allclose(ds.K[0, 0], intrinsics_from_hfov(64, 48, 60)[0, 0])
    mapped = ScanNetDataset(tmp_path / "scene", label_map={3: 1, 4: 2})
    assert mapped[0].labels[0, 0] == 1 and mapped[2].labels[0, 0] == 0


def test_tum_reader_associates_by_timestamp(tmp_path):
    root = tmp_path / "rgbd_dataset_freiburg1_xyz"
    (root / "rgb").mkdir(parents=True)
    (root / "depth").mkdir()
    rgb_lines, depth_lines, gt_lines = ["# rgb"], ["# depth"], ["# gt"]
    for i in range(5):
        t = 100.0 + i * 0.1
        write_image(root / "rgb" / f"{t:.6f}.png", np.full((48, 64, 3), i * 10, np.uint8))
        write_image(root / "depth" / f"{t + 0.005:.6f}.png", np.full((48, 64), 5000 * (i + 1), np.uint16))
        rgb_lines.append(f"{t:.6f} rgb/{t:.6f}.png")
        depth_lines.append(f"{t + 0.005:.6f} depth/{t + 0.005:.6f}.png")
        if i != 3:  # frame 3 has no pose within 20 ms: dropped
            gt_lines.append(f"{t + 0.003:.4f} {i} 0 0 0 0 0.7071068 0.7071068")
    (root / "rgb.txt").write_text("\n".join(rgb_lines))
    (root / "depth.txt").write_text("\n".join(depth_lines))
    (root / "groundtruth.txt").write_text("\n".join(gt_lines))
    ds = open_dataset(root)
    assert isinstance(ds, TumDataset) and len(ds) == 4
    f = ds[3]  # the 5th image
    assert f.depth[0, 0] == pytest.approx(5.0) and f.timestamp == pytest.approx(100.4)
    assert f.world_from_camera[0, 3] == pytest.approx(4.0)
    np.testing.assert_allclose(f.world_from_camera[:3, :3], [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-6)
    assert ds.K[0, 0] == pytest.approx(517.3)  # freiburg1 calibration picked from the folder name
    assert associate([1.0, 2.0], [1.5], 0.2) == []


def test_pose_inverse_round_trip():
    ds_pose = np.array([[0, -1, 0, 1.0], [1, 0, 0, 2.0], [0, 0, 1, 3.0], [0, 0, 0, 1]])
    np.testing.assert_allclose(invert_rigid(ds_pose) @ ds_pose, np.eye(4), atol=1e-12)
    assert torch.is_tensor(torch.as_tensor(ds_pose))
