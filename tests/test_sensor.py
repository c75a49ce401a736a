"""The realistic synthetic sensor (clipgs synth --noise realistic): noise statistics, invalid pixels, drift."""
from __future__ import annotations

import json

import numpy as np
import pytest

from clipgs.data.synthetic import generate_scene
from clipgs.data.synthetic.sensor import SensorModel
from clipgs.geometry import is_rigid


@pytest.mark.parametrize("z", [1.0, 3.0])
def test_depth_noise_follows_the_structured_light_model(z):
    sensor = SensorModel()
    reading = sensor.corrupt_depth(np.full((400, 500), z, np.float32), np.random.default_rng(0))
    valid = reading > 0
    expected = np.sqrt(sensor.depth_sigma(z) ** 2 + 0.001**2 / 12)  # plus millimetre quantisation
    assert float(sensor.depth_sigma(1.0)) == pytest.approx(0.0012 + 0.0019 * 0.36)
    assert np.std(reading[valid] - z) == pytest.approx(expected, rel=0.05)
    assert abs(np.mean(reading[valid] - z)) < 3 * expected / np.sqrt(valid.sum())
    assert 1 - valid.mean() == pytest.approx(0.02, abs=0.003)  # random dropouts, no edges on a flat plane
    assert np.allclose(reading[valid] * 1000, np.round(reading[valid] * 1000), atol=1e-3)  # whole millimetres


def test_out_of_range_and_depth_edges_are_invalid():
    sensor = SensorModel(dropout=0.0)
    rng = np.random.default_rng(1)
    assert not sensor.corrupt_depth(np.full((20, 20), 5.0, np.float32), rng).any()  # beyond 4 m
    step = np.full((20, 20), 1.0, np.float32)
    step[:, 10:] = 2.0
    step[0, 0] = 0.0  # no return stays no return
    reading = sensor.corrupt_depth(step, rng)
    assert not reading[:, 9:11].any() and reading[2:, :9].all() and reading[:, 11:].all() and reading[0, 0] == 0


def test_colour_gets_exposure_and_pixel_noise():
    rgb = np.full((50, 50, 3), 128, np.uint8)
    out = SensorModel().corrupt_rgb(rgb, np.random.default_rng(2))
    assert out.dtype == np.uint8 and 1.0 < np.std(out.astype(float)) < 4.0 and abs(out.mean() - 128) < 20


def test_odometry_drift_is_a_seeded_random_walk():
    true = [np.eye(4) for _ in range(200)]
    for i, pose in enumerate(true):
        pose[0, 3] = 0.02 * i
    a = SensorModel().drifted(true, np.random.default_rng(3))
    b = SensorModel().drifted(true, np.random.default_rng(3))
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and np.array_equal(a[0], true[0])
    assert all(is_rigid(p) for p in a)
    err = [np.linalg.norm(p[:3, 3] - t[:3, 3]) for p, t in zip(a, true)]
    assert 0.0 < err[10] < err[199] and 0.01 < err[199] < 0.5  # grows roughly like sqrt(steps) x 5 mm


def test_synth_realistic_writes_noisy_frames_drifted_poses_and_the_truth(tmp_path):
    clean = generate_scene(tmp_path / "clean", n_frames=4, width=32, height=24, progress=False)
    noisy = generate_scene(tmp_path / "noisy", n_frames=4, width=32, height=24, progress=False, noise="realistic")
    assert json.loads((noisy / "scene.json").read_text())["noise"] == "realistic"
    gt, drifted = np.loadtxt(noisy / "gt_traj_w_c.txt"), np.loadtxt(noisy / "traj_w_c.txt")
    assert np.allclose(gt, np.loadtxt(clean / "traj_w_c.txt")) and not np.allclose(gt[1:], drifted[1:])
    assert not (clean / "gt_traj_w_c.txt").exists()
    from clipgs.data.images import read_image

    for sub, name in (("semantic_class", "semantic_class_2.png"), ("rgb", "rgb_2.png")):
        same = np.array_equal(read_image(clean / sub / name), read_image(noisy / sub / name))
        assert same == (sub == "semantic_class")  # labels exact, colour noisy
    with pytest.raises(ValueError, match="unknown noise"):
        generate_scene(tmp_path / "x", n_frames=2, width=8, height=6, progress=False, noise="loud")


def test_a_drifted_scene_can_be_scored_against_its_true_poses(tmp_path, capsys):
    from clipgs.cli import main
    from clipgs.data.dataset import open_dataset
    from clipgs.mapping import GaussianMap, save_ply

    noisy = generate_scene(tmp_path / "noisy", n_frames=12, width=32, height=24, progress=False, noise="realistic")
    truth = open_dataset(noisy, trajectory="gt_traj_w_c.txt")
    assert np.allclose(truth.poses.reshape(len(truth.poses), 16), np.loadtxt(noisy / "gt_traj_w_c.txt"))
    assert not np.allclose(truth.poses, open_dataset(noisy).poses)
    assert open_dataset(noisy).poses_from_odometry and not truth.poses_from_odometry  # pose refinement: auto
    save_ply(GaussianMap.from_frame(truth[0]), tmp_path / "m.ply")
    assert main(["eval", str(tmp_path / "m.ply"), str(noisy), "--true-poses"]) == 0
    clean = generate_scene(tmp_path / "clean", n_frames=2, width=8, height=6, progress=False)
    assert main(["eval", str(tmp_path / "m.ply"), str(clean), "--true-poses"]) == 2
    assert "no gt_traj_w_c.txt" in capsys.readouterr().err
