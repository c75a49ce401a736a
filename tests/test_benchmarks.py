"""The benchmark scripts run (tiny settings): a table a script cannot print is a number nobody can check."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(script: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_render_benchmark_prints_a_row_per_backend_with_speedups():
    out = run("render.py", "--sizes", "3000", "--res", "64x48", "--repeats", "1", "--backends", "cpu_scalar", "cpu")
    rows = [line for line in out.splitlines() if line.startswith("| cpu")]
    assert len(rows) == 2 and "failed" not in out
    assert rows[0].split("|")[-2].strip() == "1.0"  # the reference divided by itself


def test_kernel_ab_times_two_builds_and_compares_their_outputs():
    """A/A (the base is this checkout's own kernel sources): one row, the same outputs bit for bit, ratios near 1."""
    out = run("kernel_ab.py", "--base", "clipgs/render/csrc", "--sizes", "3000", "--res", "64x48", "--repeats", "2")
    rows = [line for line in out.splitlines() if line.startswith("| 3000 ")]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].split("|")[1:-1]]  # N, res, fwd base, fwd new, ratio, image, fb base, ...
    assert cells[5] == "same" and cells[9] == "same"
    assert float(cells[2]) > 0 and 0.2 < float(cells[4]) < 5 and 0.2 < float(cells[8]) < 5


def test_profile_step_breaks_a_step_into_its_parts(tmp_path):
    out = run("profile_step.py", "--scenes", "room", "--sizes", "64x48", "--warm-keyframes", "2", "--repeats", "1",
              "--scene-dir", str(tmp_path))
    rows = [line for line in out.splitlines() if line.startswith("| room")]
    assert len(rows) == 2  # geometry and semantic
    cells = [c.strip() for c in rows[1].split("|")[1:-1]]  # scene, size, step, Gaussians, render fwd, ...
    assert float(cells[2]) > 0 and float(cells[4]) > 0


def test_long_run_streams_laps_and_sums_up(tmp_path):
    out = run("long_run.py", "--frames", "16", "--laps", "2", "--size", "64x48", "--rate", "40", "--every", "10",
              "--scene-dir", str(tmp_path), "--set", "window_size=4", "--set", "dcs_split_masks=true")
    assert "window_size=4, dcs_split_masks=true" in out  # mapper and semantic training settings alike
    rows = [line for line in out.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == 3  # frames 10, 20 and the last (28: 14 training frames x 2 laps)
    summary = out.strip().splitlines()[-1]
    assert summary.startswith("long run: 28 frames") and "PSNR" in summary and "ATE" in summary
    assert "RSS growth over the last 18 frames" in summary and "(peak RSS +" in summary  # peak: never lower
    assert (tmp_path / "room_16_64x48_realistic" / "gt_traj_w_c.txt").is_file()


def test_fault_injected_replay_counts_every_fault(tmp_path):
    out = run("faults.py", "--frames", "40", "--out", str(tmp_path))
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    for fault in ("bad_encoding", "wrong_size", "nan_pose", "stale_stamp", "pose_jump_20m"):
        injected, counted = (rows[fault].split("|")[k].strip() for k in (2, 3))
        assert int(injected) > 0 and int(counted.split(" x ")[0]) > 0, rows[fault]
    assert "pose_jump" in rows["pose_jump_20m"] and "timestamp_backwards" in rows["stale_stamp"]
    assert out.strip().splitlines()[-1].startswith("faults: PSNR clean")


def test_semantics_benchmark_on_a_small_apartment(tmp_path):
    """The apartment option: the ablation rows, the query tables with the teacher's consensus beside the map, and
    the table of classes carried through the map's geometry, on a 30-frame walk mapped from 1 in 3 frames."""
    out = run("semantics.py", "--scene", "apartment", "--frames", "30", "--size", "80x60", "--frame-step", "3",
              "--teachers", "realistic", "--rows", "0", "3", "--dims", "16", "--seeds", "0",
              "--scene-dir", str(tmp_path), "--set", "iters_per_keyframe=5")
    assert "mapped from 1 in 3 training frames" in out and "| 2D teacher | realistic |" in out
    assert "defaults = MapperConfig(), SemanticTrainingConfig(), iters_per_keyframe=5" in out
    seed_rows = [line for line in out.splitlines() if line.startswith("| seed 0 |")]
    assert len(seed_rows) == 2  # queries (localisation: map / consensus) and mIoU through the map's geometry
    localisation = seed_rows[0].split("|")[2].split("/")
    assert all(0 <= float(v) <= 1 for v in localisation)
    map_miou, consensus, truth, on_masks = (float(c) for c in seed_rows[1].split("|")[2:6])
    assert 0 <= consensus <= truth <= 100 and 0 <= map_miou <= 100 and 0 <= on_masks <= 100


def test_semantics_benchmark_reads_a_scene_made_elsewhere_as_it_is(tmp_path):
    """--scene pybullet reads a scene from its folder (not generated) at its true poses; a folder without one is a
    one-line error. A small noisy room stands in for the pybullet scene, which lives outside the repository."""
    from clipgs.demo import ensure_scene

    folder = ensure_scene(tmp_path / "elsewhere", scene="room", seed=0, n_frames=24, width=64, height=48,
                          noise="realistic")
    out = run("semantics.py", "--scene", "pybullet", "--scene-dir", str(folder), "--teachers", "realistic",
              "--rows", "3", "--dims", "16", "--seeds", "0")
    assert out.startswith(f"replica '{folder}'") and "| + 3DCS novel views | realistic |" in out
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "semantics.py"), "--scene", "pybullet",
                           "--scene-dir", str(tmp_path)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode != 0 and "no pybullet scene there" in proc.stderr.strip().splitlines()[-1]
