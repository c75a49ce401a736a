"""The offline demo behind ``make demo``: synthetic room -> Gaussian map -> rendered held-out view."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from clipgs.data.dataset import open_dataset
from clipgs.data.images import colorize_depth, colorize_labels, to_uint8, write_image
from clipgs.data.synthetic import generate_scene
from clipgs.eval.metrics import depth_l1, psnr
from clipgs.mapping import GaussianMap, save_ply

DEMO_SCENE = {"scene": "room", "seed": 0, "n_frames": 120, "width": 160, "height": 120}


def ensure_scene(folder: Path, **settings) -> Path:
    """Generate the synthetic scene into ``folder`` unless an identical one is already there."""
    meta_file = folder / "scene.json"
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        if all(meta.get(k if k != "n_frames" else "frames") == v for k, v in settings.items()):
            return folder
    return generate_scene(folder, **settings)


def seed_map(dataset, indices: list[int], pixel_stride: int, max_gaussians: int) -> GaussianMap:
    """Fuse unoptimised Gaussians seeded from several training frames (no optimisation yet)."""
    gmap = GaussianMap.empty()
    for i in tqdm(indices, desc="seed map", unit="frame"):
        gmap = gmap.append(GaussianMap.from_frame(dataset[i], pixel_stride=pixel_stride, seed=i))
    return gmap.cap(max_gaussians)[0]


def run_demo(out: str | Path, keyframe_every: int = 18, pixel_stride: int = 1, max_gaussians: int = 200_000,
             scene_settings: dict | None = None) -> dict:
    """Run the demo; writes PNGs, map.ply and metrics.json under ``out`` and returns the metrics."""
    out = Path(out)
    scene_dir = ensure_scene(out / "scene", **(scene_settings or DEMO_SCENE))
    ds = open_dataset(scene_dir)
    print(ds.summary())
    print("classes:", ", ".join(f"{i}:{c}" for i, c in enumerate(ds.classes or [])))

    train, test = ds.split
    keyframes = train[::keyframe_every]
    gmap = seed_map(ds, keyframes, pixel_stride, max_gaussians)
    map_path = save_ply(gmap, out / "map.ply")
    print(f"map: {len(gmap)} Gaussians seeded from {len(keyframes)} training frames -> {map_path}")

    view = ds[test[len(test) // 2]]
    with torch.no_grad():
        gmap.render(view.camera, semantic=False)  # warm-up
        t0 = time.perf_counter()
        result = gmap.render(view.camera, semantic=False)
        ms = (time.perf_counter() - t0) * 1e3
    rgb = result.image.clamp(0, 1).numpy()
    depth = result.expected_depth().numpy()
    metrics = {
        "held_out_frame": view.index,
        "gaussians": len(gmap),
        "psnr_db": round(psnr(rgb, view.rgb / 255.0), 2),
        "depth_l1_m": round(depth_l1(depth, view.depth), 4),
        "render_ms": round(ms, 1),
        "backend": result.backend,
        "note": "unoptimised seed map (no mapping iterations)",
    }
    top = max(float(view.depth.max()), 1e-3)
    write_image(out / "render_rgb.png", to_uint8(rgb))
    write_image(out / "render_depth.png", colorize_depth(depth, top))
    panel = np.concatenate([
        np.concatenate([view.rgb, to_uint8(rgb)], axis=1),
        np.concatenate([colorize_depth(view.depth, top), colorize_depth(depth, top)], axis=1),
    ])
    if view.labels is not None:
        panel = np.concatenate([panel, np.concatenate([colorize_labels(view.labels), np.zeros_like(view.rgb)], 1)])
    write_image(out / "comparison.png", panel)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"held-out view {view.index}: PSNR {metrics['psnr_db']} dB, depth L1 {metrics['depth_l1_m']} m, "
          f"render {metrics['render_ms']} ms ({metrics['backend']} backend, {view.width}x{view.height})")
    print(f"images: {out / 'render_rgb.png'}, {out / 'render_depth.png'}, "
          f"{out / 'comparison.png'} (top: ground truth | render)")
    return metrics
