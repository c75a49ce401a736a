"""The clipgs command and the demo, end to end on small scenes."""
from __future__ import annotations

import json

import numpy as np

from clipgs.cli import main
from clipgs.data.images import read_image
from clipgs.demo import ensure_scene, run_demo
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


def test_demo_maps_and_writes_images_map_and_metrics(tmp_path):
    from clipgs.mapping.config import MapperConfig

    settings = {"scene": "room", "seed": 0, "n_frames": 20, "width": 64, "height": 48}
    metrics = run_demo(tmp_path, config=MapperConfig(iters_per_keyframe=5, w_ssim=0.0), scene_settings=settings)
    view_dir = tmp_path / "view_15"  # the middle held-out view of frames 5, 15
    for path in (view_dir / "rgb.png", view_dir / "depth.png", view_dir / "comparison.png",
                 tmp_path / "metrics.json", tmp_path / "map.ply"):
        assert path.is_file(), path
    assert read_image(view_dir / "rgb.png").shape == (48, 64, 3)
    assert len(load_ply(tmp_path / "map.ply")) == metrics["mapping"]["gaussians"]
    assert metrics["held_out"]["views"] == 2 and metrics["held_out"]["psnr_db"] > 18.0
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["held_out"] == metrics["held_out"] and len(saved["per_view"]) == 2
    assert set(saved["semantic"]) == {"map without 3DCS", "map with 3DCS"}
    for run in saved["semantic"].values():
        assert 0 <= run["map_miou"] <= 1 and 0 <= run["teacher_miou"] <= 1
    assert saved["query"]["label"] == "chair" and (tmp_path / "query_chair" / "mask.png").is_file()
    assert (tmp_path / "map.semantics.pt").is_file() and (tmp_path / "semantic_panels" / "semantic_15.png").is_file()
    assert np.std(read_image(view_dir / "rgb.png")) > 10  # a picture, not a flat image
    stamp = (tmp_path / "scene" / "rgb" / "rgb_0.png").stat().st_mtime_ns
    ensure_scene(tmp_path / "scene", **settings)  # an identical scene is reused, not regenerated
    assert (tmp_path / "scene" / "rgb" / "rgb_0.png").stat().st_mtime_ns == stamp


def test_map_eval_render_commands(tmp_path, synth_dir, capsys):
    cfg = tmp_path / "fast.yaml"
    cfg.write_text("iters_per_keyframe: 3\nw_ssim: 0.0\n")
    assert main(["map", str(synth_dir), "--out", str(tmp_path / "m.ply"), "--config", str(cfg),
                 "--max-frames", "6"]) == 0
    out = capsys.readouterr().out
    assert "mapped 6 frames" in out and "mapped at" not in out  # the camera's own size: nothing to say
    (tmp_path / "half.yaml").write_text("iters_per_keyframe: 1\nmap_width: 40\n")
    assert main(["map", str(synth_dir), "--out", str(tmp_path / "h.ply"), "--config", str(tmp_path / "half.yaml"),
                 "--max-frames", "2"]) == 0
    assert "80x60 frames mapped at 40x30" in capsys.readouterr().out
    assert main(["eval", str(tmp_path / "m.ply"), str(synth_dir), "--json", str(tmp_path / "e.json")]) == 0
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["views"] == 2 and np.isfinite(result["psnr_db"]) and result["render_fps"] > 0
    assert main(["render", str(tmp_path / "m.ply"), str(synth_dir), "--view", "3", "--out", str(tmp_path / "r")]) == 0
    panel = read_image(tmp_path / "r" / "comparison.png")  # 80x60 tiles upscaled to 320 wide, titled, 2 x 2
    assert panel.shape[1] == 2 * 320 + 4 and panel.shape[0] > 2 * 240
    capsys.readouterr()
    (tmp_path / "broken.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 10\n")
    assert main(["eval", str(tmp_path / "broken.ply"), str(synth_dir)]) == 2
    assert "broken.ply" in capsys.readouterr().err
    assert main(["render", str(tmp_path / "m.ply"), str(synth_dir), "--view", "99", "--out", str(tmp_path)]) == 2
