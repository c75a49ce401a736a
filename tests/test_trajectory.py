"""The keyframe trajectory: kept as keyframes join (evicted ones too), written beside the map, scored against
true poses raw and rigidly aligned; `clipgs map` writes it and `clipgs eval --true-poses` scores it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from clipgs.mapping.keyframes import Keyframe, KeyframeStore
from clipgs.mapping.trajectory import (
    TrajectoryPose,
    align_rigid,
    load_trajectory,
    save_trajectory,
    trajectory_errors,
    trajectory_path,
)
from tests.test_icp import pose


def walk(n: int = 12) -> np.ndarray:
    """(n, 4, 4) true poses of a camera walking a curve and turning."""
    return np.stack([pose([0.3 * k, 0.1 * np.sin(k), 0.05 * k * k], axis=(0.1, 1.0, 0.2), degrees=7.0 * k)
                     for k in range(n)])


def test_trajectory_file_round_trip_and_bad_lines(tmp_path):
    poses = [TrajectoryPose(3 * k, 0.1 * k + 1e9, P) for k, P in enumerate(walk(5))]
    path = save_trajectory(poses, trajectory_path(tmp_path / "map.ply"))
    assert path.name == "map.keyframes.txt" and path.read_text().startswith("# clipgs keyframe trajectory")
    back = load_trajectory(path)
    assert [p.index for p in back] == [0, 3, 6, 9, 12]
    assert [p.timestamp for p in back] == pytest.approx([p.timestamp for p in poses], abs=1e-6)
    assert all(np.allclose(a.world_from_camera, b.world_from_camera, atol=2e-6) for a, b in zip(back, poses))
    columns = path.read_text().splitlines()[3].split()
    assert len(columns) == 9 and float(columns[8]) >= 0  # index, then TUM: t, x y z, qx qy qz qw
    path.write_text(path.read_text() + "7 1.0 2.0\n")
    with pytest.raises(ValueError, match=r"map.keyframes.txt:9: .*3 columns"):
        load_trajectory(path)


def test_alignment_recovers_a_rigid_offset_and_the_errors_separate_it():
    true = walk()
    offset = pose([0.05, -0.02, 0.03], axis=(0.3, 1.0, 0.0), degrees=2.0)  # the map's frame, off the true one
    rng = np.random.default_rng(0)
    estimated = np.einsum("ij,njk->nik", offset, true)
    estimated[:, :3, 3] += rng.normal(0.0, 0.002, (len(true), 3))  # 2 mm of noise per keyframe
    T = align_rigid(true[:, :3, 3], estimated[:, :3, 3])
    assert np.allclose(T, offset, atol=5e-3) and np.allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3))
    err = trajectory_errors(estimated, true)
    assert err["keyframes"] == len(true) and err["ate_m"] > 0.03 and err["rotation_deg"] > 1.5
    assert err["aligned_ate_m"] < 0.004 and err["aligned_rotation_deg"] < 0.3
    exact = trajectory_errors(true, true)
    assert exact["ate_m"] == pytest.approx(0.0, abs=1e-9) and np.allclose(exact["map_from_true"], np.eye(4))
    mirrored = true.copy()
    mirrored[:, 0, 3] *= -1  # a reflection is not a rigid alignment: it must not be found
    assert np.linalg.det(align_rigid(true[:, :3, 3], mirrored[:, :3, 3])[:3, :3]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same number"):
        trajectory_errors(true[:3], true[:4])


def test_keyframe_store_keeps_every_keyframes_pose_evicted_ones_too():
    from clipgs.data.frame import Frame

    store = KeyframeStore(budget_bytes=3 * 16 * 12 * 5, protect=1)
    for k, P in enumerate(walk(6)):
        frame = Frame(np.zeros((12, 16, 3), np.uint8), np.ones((12, 16), np.float32), np.eye(3), P, 10.0 + k,
                      index=2 * k)
        store.append(Keyframe.from_frame(frame, torch.device("cpu")))
    assert len(store) == 3 and store.evicted == 3
    assert [p.index for p in store.trajectory] == [0, 2, 4, 6, 8, 10]
    assert [p.timestamp for p in store.trajectory] == [10.0 + k for k in range(6)]
    assert np.allclose(store.trajectory[1].world_from_camera, walk(6)[1])


def test_map_writes_the_trajectory_and_eval_scores_it(tmp_path, capsys):
    from clipgs.cli import main
    from clipgs.data.synthetic import generate_scene

    noisy = generate_scene(tmp_path / "noisy", n_frames=16, width=48, height=36, progress=False, noise="realistic")
    config = tmp_path / "fast.yaml"
    config.write_text("iters_per_keyframe: 2\nkf_translation_m: 0.0\n")
    assert main(["map", str(noisy), "--out", str(tmp_path / "m.ply"), "--config", str(config)]) == 0
    poses = load_trajectory(tmp_path / "m.keyframes.txt")
    assert len(poses) >= 5 and poses[0].index == 0 and "keyframe trajectory written" in capsys.readouterr().out
    assert main(["eval", str(tmp_path / "m.ply"), str(noisy), "--true-poses", "--json", str(tmp_path / "e.json")]) == 0
    out = capsys.readouterr().out
    assert f"keyframe trajectory ({len(poses)} keyframes) against the true poses: ATE" in out
    assert "held-out views at the aligned true poses: PSNR" in out
    import json

    result = json.loads((tmp_path / "e.json").read_text())
    gt = np.loadtxt(noisy / "gt_traj_w_c.txt").reshape(-1, 4, 4)
    expected = trajectory_errors(np.stack([p.world_from_camera for p in poses]), gt[[p.index for p in poses]])
    assert result["trajectory"]["ate_m"] == pytest.approx(expected["ate_m"], rel=1e-6)
    assert result["trajectory"]["aligned_ate_m"] <= result["trajectory"]["ate_m"] + 1e-9
    assert result["aligned"]["psnr_db"] > 10
    (tmp_path / "m.keyframes.txt").unlink()  # a map without one: said, not scored
    assert main(["eval", str(tmp_path / "m.ply"), str(noisy), "--true-poses"]) == 0
    assert "no keyframe trajectory beside the map" in capsys.readouterr().out
