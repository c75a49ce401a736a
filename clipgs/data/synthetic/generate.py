"""Render a synthetic scene's frames and write them in the Replica (Semantic-NeRF) layout."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from clipgs.data.images import to_uint8, write_image
from clipgs.data.synthetic.raycast import bounding_sphere, rays_near_sphere
from clipgs.data.synthetic.scenes import Scene, build_scene
from clipgs.data.synthetic.sensor import SensorModel
from clipgs.geometry import intrinsics_from_hfov

SUPERSAMPLE = ((-0.25, -0.25), (0.25, -0.25), (-0.25, 0.25), (0.25, 0.25))


@dataclass
class SyntheticView:
    """rgb (H, W, 3) uint8; depth (H, W) float32 metres (z, 0 = no hit); labels/instances (H, W) int32."""

    rgb: np.ndarray
    depth: np.ndarray
    labels: np.ndarray
    instances: np.ndarray


def _cast(scene: Scene, origins: np.ndarray, dirs: np.ndarray):
    """Nearest hit per ray: (t (R,), object index (R,) or -1, normal (R, 3))."""
    t_best = np.full(len(dirs), np.inf)
    obj = np.full(len(dirs), -1)
    normal = np.zeros_like(dirs)
    for k, o in enumerate(scene.objects):
        centre, radius = bounding_sphere(o.primitives)
        rows = np.nonzero(rays_near_sphere(origins, dirs, centre, radius))[0]  # cull: most objects are small
        if rows.size == 0:
            continue
        for prim in o.primitives:
            t, n = prim.intersect(origins[rows], dirs[rows])
            closer = t < t_best[rows]
            sel = rows[closer]
            t_best[sel], obj[sel], normal[sel] = t[closer], k, n[closer]
    return t_best, obj, normal


def _shade(scene: Scene, points: np.ndarray, obj: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """Lambertian, view-independent colour in [0, 1]; misses are black."""
    albedo = np.zeros_like(points)
    for k, o in enumerate(scene.objects):
        sel = obj == k
        if sel.any():
            albedo[sel] = o.texture(points[sel])
    light = np.full(len(points), scene.ambient)
    for direction, weight in scene.lights:
        light += weight * np.clip(np.abs(normal @ direction), 0.0, 1.0)  # two-sided: thin parts stay lit
    return np.clip(albedo * light[:, None], 0.0, 1.0) * (obj >= 0)[:, None]


def render_view(scene: Scene, K: np.ndarray, width: int, height: int, world_from_camera: np.ndarray) -> SyntheticView:
    """Ray-cast one view: colour from 4 sub-pixel rays, depth and labels from the pixel-centre ray."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    R, eye = world_from_camera[:3, :3], world_from_camera[:3, 3]

    def rays(du: float, dv: float) -> np.ndarray:
        d = np.stack([(u + du - K[0, 2]) / K[0, 0], (v + dv - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
        d = d.reshape(-1, 3) @ R.T
        return d / np.linalg.norm(d, axis=1, keepdims=True)

    origins = np.broadcast_to(eye, (width * height, 3)).copy()
    d0 = rays(0.0, 0.0)
    t, obj, _ = _cast(scene, origins, d0)
    hit = np.isfinite(t)
    depth = np.where(hit, np.where(hit, t, 0.0) * (d0 @ R[:, 2]), 0.0)
    colour = np.zeros((width * height, 3))
    for du, dv in SUPERSAMPLE:
        d = rays(du, dv)
        ts, objs, normal = _cast(scene, origins, d)
        pts = origins + d * np.where(np.isfinite(ts), ts, 0.0)[:, None]
        colour += _shade(scene, pts, objs, normal) / len(SUPERSAMPLE)
    class_of = np.array([o.class_id for o in scene.objects] + [0])
    shape = (height, width)
    return SyntheticView(
        rgb=to_uint8(colour.reshape(height, width, 3)),
        depth=depth.reshape(shape).astype(np.float32),
        labels=class_of[obj].reshape(shape).astype(np.int32),
        instances=np.where(hit, obj + 1, 0).reshape(shape).astype(np.int32),
    )


NOISE = ("none", "realistic")


def generate_scene(out: str | Path, scene: str = "room", seed: int = 0, n_frames: int = 120, width: int = 160,
                   height: int = 120, hfov_deg: float = 90.0, depth_scale: float = 1000.0,
                   progress: bool = True, noise: str = "none") -> Path:
    """Write ``n_frames`` views of a synthetic scene to ``out`` in the Replica layout; returns ``out``.

    Also writes classes.txt, intrinsics.txt and scene.json (generator settings). Deterministic per seed.
    noise 'realistic': depth and colour through :class:`~clipgs.data.synthetic.sensor.SensorModel`, and
    ``traj_w_c.txt`` carries odometry drift (the true poses go to ``gt_traj_w_c.txt``); labels stay exact.
    """
    if noise not in NOISE:
        raise ValueError(f"unknown noise {noise!r}; expected one of {NOISE}")
    if not (0 < hfov_deg < 180):
        raise ValueError(f"hfov must be in (0, 180) degrees, got {hfov_deg}")
    out = Path(out)
    sc = build_scene(scene, seed, n_frames)
    sensor, rng = SensorModel(), np.random.default_rng([seed, 7])
    K = intrinsics_from_hfov(width, height, hfov_deg)
    for sub in ("rgb", "depth", "semantic_class", "semantic_instance"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for i, pose in enumerate(tqdm(sc.poses, desc=f"synth {scene}", unit="frame", disable=not progress)):
        view = render_view(sc, K, width, height, pose)
        rgb, depth = view.rgb, view.depth
        if noise == "realistic":
            rgb, depth = sensor.corrupt_rgb(rgb, rng), sensor.corrupt_depth(depth, rng)
        write_image(out / "rgb" / f"rgb_{i}.png", rgb)
        write_image(out / "depth" / f"depth_{i}.png",
                    np.clip(np.round(depth * depth_scale), 0, 65535).astype(np.uint16))
        write_image(out / "semantic_class" / f"semantic_class_{i}.png", view.labels.astype(np.uint8))
        write_image(out / "semantic_instance" / f"semantic_instance_{i}.png", view.instances.astype(np.uint16))
    poses = sensor.drifted(sc.poses, rng) if noise == "realistic" else sc.poses
    np.savetxt(out / "traj_w_c.txt", np.stack([p.reshape(-1) for p in poses]), fmt="%.9f")
    if noise == "realistic":
        np.savetxt(out / "gt_traj_w_c.txt", np.stack([p.reshape(-1) for p in sc.poses]), fmt="%.9f")
    np.savetxt(out / "intrinsics.txt", K, fmt="%.9f")
    (out / "classes.txt").write_text("\n".join(sc.classes) + "\n")
    meta = {"generator": "clipgs synth", "scene": scene, "seed": seed, "frames": n_frames, "width": width,
            "height": height, "hfov_deg": hfov_deg, "depth_scale": depth_scale, "noise": noise,
            "classes": sc.classes}
    (out / "scene.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out
