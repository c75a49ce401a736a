"""The offline demo behind ``make demo``: synthetic room -> online mapping -> held-out evaluation and images."""
from __future__ import annotations

import json
from pathlib import Path

from clipgs.data.dataset import open_dataset
from clipgs.data.synthetic import generate_scene
from clipgs.eval.evaluate import evaluate, write_view_images
from clipgs.mapping import save_ply
from clipgs.mapping.config import MapperConfig
from clipgs.mapping.offline import map_dataset

DEMO_SCENE = {"scene": "room", "seed": 0, "n_frames": 120, "width": 160, "height": 120}


def ensure_scene(folder: Path, **settings) -> Path:
    """Generate the synthetic scene into ``folder`` unless an identical one is already there."""
    meta_file = folder / "scene.json"
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        if all(meta.get(k if k != "n_frames" else "frames") == v for k, v in settings.items()):
            return folder
    return generate_scene(folder, **settings)


def run_demo(out: str | Path, config: MapperConfig | None = None, scene_settings: dict | None = None) -> dict:
    """Map the synthetic room's training frames, score the held-out views, write PNGs, map.ply, metrics.json."""
    out = Path(out)
    scene_dir = ensure_scene(out / "scene", **(scene_settings or DEMO_SCENE))
    ds = open_dataset(scene_dir)
    print(ds.summary())
    print("classes:", ", ".join(f"{i}:{c}" for i, c in enumerate(ds.classes or [])))

    mapper, summary = map_dataset(ds, config or MapperConfig())
    gmap = mapper.snapshot()
    map_path = save_ply(gmap, out / "map.ply")
    result = evaluate(gmap, ds)
    metrics = {"mapping": summary, "held_out": {k: v for k, v in result.items() if k != "per_view"}}
    view = ds.test_indices[len(ds.test_indices) // 2]
    images = write_view_images(gmap, ds[view], out / f"view_{view}")
    (out / "metrics.json").write_text(json.dumps({**metrics, "per_view": result["per_view"]}, indent=2) + "\n")

    print(f"\nmapping: {summary['frames']} frames -> {summary['keyframes']} keyframes, {summary['gaussians']} Gaussians"
          f" in {summary['seconds']:.0f} s ({summary['keyframes_per_s']:.2f} keyframes/s, "
          f"{summary['seconds_per_iteration'] * 1e3:.0f} ms/iteration), peak RSS {summary['peak_rss_mb']:.0f} MB")
    print(f"held-out views ({result['views']}, never mapped): PSNR {result['psnr_db']:.2f} dB, "
          f"depth L1 {result['depth_l1_m']:.4f} m, render {result['render_fps']:.1f} FPS "
          f"({result['backend']} backend, {result['resolution']})")
    print(f"wrote {map_path}, {out / 'metrics.json'}, " + ", ".join(str(p) for p in images))
    return metrics
