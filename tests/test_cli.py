"""The clipgs command and the demo, end to end on small scenes."""
from __future__ import annotations

import json

import numpy as np

from clipgs.cli import main
from clipgs.data.images import read_image
from clipgs.demo import run_demo
from clipgs.mapping import load_ply


def test_synth_then_info(tmp_path, capsys):
    out = tmp_path / "room"
    assert main(["synth", "--out", str(out), "--frames", "3", "--width", "32", "--height", "24", "--seed", "4"]) == 0
    assert read_image(out / "rgb" / "rgb_2.png").shape == (24, 32, 3)
    assert json.loads((out / "scene.json").read_text())["seed"] == 4
    assert main(["info", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "3 frames" in printed and "32x24" in printed and "5:chair" in printed


def test_bad_input_is_one_clear_line(tmp_path, capsys):
    assert main(["info", str(tmp_path / "nowhere")]) == 2
    assert "dataset folder not found" in capsys.readouterr().err
    assert main(["synth", "--scene", "castle", "--out", str(tmp_path / "x"), "--frames", "1"]) == 2
    assert "unknown synthetic scene 'castle'" in capsys.readouterr().err


def test_demo_writes_images_map_and_metrics(tmp_path):
    settings = {"scene": "room", "seed": 0, "n_frames": 30, "width": 64, "height": 48}
    metrics = run_demo(tmp_path, keyframe_every=9, scene_settings=settings)
    for name in ("render_rgb.png", "render_depth.png", "comparison.png", "metrics.json", "map.ply"):
        assert (tmp_path / name).is_file(), name
    assert read_image(tmp_path / "render_rgb.png").shape == (48, 64, 3)
    assert len(load_ply(tmp_path / "map.ply")) == metrics["gaussians"] == 3 * 64 * 48
    # Seeded from 3 of 27 training views only: a coarse map, but clearly the same scene.
    assert metrics["psnr_db"] > 14.0 and metrics["depth_l1_m"] < 0.5
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    rgb = read_image(tmp_path / "render_rgb.png")
    assert np.std(rgb) > 10  # a picture, not a flat image
    # A second run reuses the generated scene.
    stamp = (tmp_path / "scene" / "rgb" / "rgb_0.png").stat().st_mtime_ns
    run_demo(tmp_path, keyframe_every=9, scene_settings=settings)
    assert (tmp_path / "scene" / "rgb" / "rgb_0.png").stat().st_mtime_ns == stamp
