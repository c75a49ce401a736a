"""Render a synthetic scene's frames and write them in the Replica (Semantic-NeRF) layout."""
from __future__ import annotations

import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from tqdm import tqdm

from clipgs.data.images import to_uint8, write_image
from clipgs.data.synthetic.raycast import cast_pixels
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


def _shade(scene: Scene, points: np.ndarray, obj: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """Lambertian, view-independent colour in [0, 1]; misses are black."""
    albedo = np.zeros_like(points)
    order = np.argsort(obj, kind="stable")  # rows grouped by object: one slice per object, not one mask each
    bounds = np.searchsorted(obj[order], np.arange(-1, len(scene.objects) + 1))
    for k, o in enumerate(scene.objects):
        rows = order[bounds[k + 1]:bounds[k + 2]]
        if rows.size:
            albedo[rows] = o.texture(points[rows])
    light = np.full(len(points), scene.ambient)
    for direction, weight in scene.lights:
        light += weight * np.clip(np.abs(normal @ direction), 0.0, 1.0)  # two-sided: thin parts stay lit
    return np.clip(albedo * light[:, None], 0.0, 1.0) * (obj >= 0)[:, None]


def render_view(scene: Scene, K: np.ndarray, width: int, height: int, world_from_camera: np.ndarray,
                compiled: bool = True, threads: int = 0) -> SyntheticView:
    """Ray-cast one view: colour from 4 sub-pixel rays, depth and labels from the pixel-centre ray.

    ``compiled`` False forces the NumPy reference caster (same images, ~10x slower); ``threads`` 0 = all cores.
    """
    hits = cast_pixels(scene.packed, K, world_from_camera, width, height, ((0.0, 0.0), *SUPERSAMPLE), compiled,
                       threads)
    obj = hits.obj
    depth = hits.z[0]
    hit = obj[0] >= 0
    colour = _shade(scene, hits.point[1:].reshape(-1, 3), obj[1:].reshape(-1), hits.normal[1:].reshape(-1, 3))
    colour = colour.reshape(len(SUPERSAMPLE), height, width, 3)
    class_of = np.array([o.class_id for o in scene.objects] + [0])
    return SyntheticView(
        rgb=to_uint8(colour.mean(axis=0)),
        depth=depth.astype(np.float32),
        labels=class_of[obj[0]].astype(np.int32),
        instances=np.where(hit, obj[0] + 1, 0).astype(np.int32),
    )


NOISE = ("none", "realistic")
GENERATOR_VERSION = 2  # bumped when the same settings would write different images


@dataclass(frozen=True)
class _FrameWriter:
    """Renders and writes frame i (picklable, so worker processes can run it); the scene is built once per
    process. Frame i's sensor noise comes from its own seeded generator: any worker gives the same frame."""

    out: Path
    scene: str
    seed: int
    n_frames: int
    K: np.ndarray
    width: int
    height: int
    depth_scale: float
    noise: str
    threads: int

    def __call__(self, i: int) -> int:
        sc = _scene_cached(self.scene, self.seed, self.n_frames)
        view = render_view(sc, self.K, self.width, self.height, sc.poses[i], threads=self.threads)
        rgb, depth = view.rgb, view.depth
        if self.noise == "realistic":
            rng, sensor = np.random.default_rng([self.seed, 7, i]), SensorModel()
            rgb, depth = sensor.corrupt_rgb(rgb, rng), sensor.corrupt_depth(depth, rng)
        fast = 1  # PNG compression: datasets are written once and read a few times
        write_image(self.out / "rgb" / f"rgb_{i}.png", rgb, fast)
        write_image(self.out / "depth" / f"depth_{i}.png",
                    np.clip(np.round(depth * self.depth_scale), 0, 65535).astype(np.uint16), fast)
        write_image(self.out / "semantic_class" / f"semantic_class_{i}.png", view.labels.astype(np.uint8), fast)
        write_image(self.out / "semantic_instance" / f"semantic_instance_{i}.png", view.instances.astype(np.uint16),
                    fast)
        return i


@contextmanager
def _single_threaded_children():
    """Worker processes started inside see one BLAS / OpenMP thread each (the workers are the parallelism)."""
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update({name: "1" for name in names})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@lru_cache(maxsize=2)
def _scene_cached(name: str, seed: int, n_frames: int) -> Scene:
    return build_scene(name, seed, n_frames)


def generate_scene(out: str | Path, scene: str = "room", seed: int = 0, n_frames: int = 120, width: int = 160,
                   height: int = 120, hfov_deg: float = 90.0, depth_scale: float = 1000.0,
                   progress: bool = True, noise: str = "none", workers: int = 0) -> Path:
    """Write ``n_frames`` views of a synthetic scene to ``out`` in the Replica layout; returns ``out``.

    Also writes classes.txt, intrinsics.txt and scene.json (generator settings). Deterministic per seed, whatever
    the number of ``workers`` (processes rendering frames; 0 = one per CPU core for long runs, else this one).
    noise 'realistic': depth and colour through :class:`~clipgs.data.synthetic.sensor.SensorModel`, and
    ``traj_w_c.txt`` carries odometry drift (the true poses go to ``gt_traj_w_c.txt``); labels stay exact.
    """
    if noise not in NOISE:
        raise ValueError(f"unknown noise {noise!r}; expected one of {NOISE}")
    if not (0 < hfov_deg < 180):
        raise ValueError(f"hfov must be in (0, 180) degrees, got {hfov_deg}")
    out = Path(out)
    sc = _scene_cached(scene, seed, n_frames)  # the writer below finds it there when it runs in this process
    K = intrinsics_from_hfov(width, height, hfov_deg)
    for sub in ("rgb", "depth", "semantic_class", "semantic_instance"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 1
    if workers <= 0:  # processes pay off once the frames outweigh their start-up (~0.3 s each)
        workers = cores if n_frames * width * height >= 40 * 320 * 240 else 1
    workers = min(workers, n_frames)
    writer = _FrameWriter(out, scene, seed, n_frames, K, width, height, depth_scale, noise,
                          threads=1 if workers > 1 else cores)
    bar = tqdm(total=n_frames, desc=f"synth {scene}", unit="frame", disable=not progress)
    if workers > 1:
        spawn = multiprocessing.get_context("spawn")
        with _single_threaded_children(), ProcessPoolExecutor(workers, mp_context=spawn) as pool:
            for _ in pool.map(writer, range(n_frames), chunksize=8):
                bar.update()
    else:
        for i in range(n_frames):
            writer(i)
            bar.update()
    bar.close()
    poses = SensorModel().drifted(sc.poses, np.random.default_rng([seed, 8])) if noise == "realistic" else sc.poses
    np.savetxt(out / "traj_w_c.txt", np.stack([p.reshape(-1) for p in poses]), fmt="%.9f")
    if noise == "realistic":
        np.savetxt(out / "gt_traj_w_c.txt", np.stack([p.reshape(-1) for p in sc.poses]), fmt="%.9f")
    np.savetxt(out / "intrinsics.txt", K, fmt="%.9f")
    (out / "classes.txt").write_text("\n".join(sc.classes) + "\n")
    meta = {"generator": "clipgs synth", "version": GENERATOR_VERSION, "scene": scene, "seed": seed,
            "frames": n_frames, "width": width, "height": height, "hfov_deg": hfov_deg, "depth_scale": depth_scale,
            "noise": noise, "classes": sc.classes}
    (out / "scene.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out
