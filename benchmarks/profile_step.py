"""Where one mapping iteration spends its time, on the default room and on a scene made outside clipgs.

For each scene and resolution, the mapper first maps ``--warm-keyframes`` keyframes (so the map has a
realistic size), then one iteration on a window keyframe is taken apart, median over ``--repeats``:
the view's working set (``view_steps``: the Gaussians the camera sees), render forward, each loss term (L1,
SSIM, depth, semantic), backward (the rasterizer's share measured on its own), optimiser steps, and the rest
of the real step (Python overhead: what ``IncrementalMapper``'s step costs beyond the sum of the parts).
Geometry-only and semantic (simulated teacher, d = 16) steps.

    .venv/bin/python benchmarks/profile_step.py [--scenes room pybullet apartment] [--sizes 160x120 320x240]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from clipgs.data.dataset import open_dataset
from clipgs.demo import DEMO_SCENE, ensure_scene
from clipgs.mapping import IncrementalMapper, MapperConfig
from clipgs.mapping.losses import depth_l1, ssim
from clipgs.semantics.config import SemanticTrainingConfig
from clipgs.semantics.pipeline import simulated_setup
from clipgs.semantics.trainer import SemanticTrainer

ROOT = Path(__file__).resolve().parents[1]
PYBULLET = ROOT.parent / "shared" / "scenes" / "pybullet_room_s100"
PARTS = ("view", "render fwd", "L1", "SSIM", "depth", "semantic", "backward", "(raster bwd)", "optimiser", "overhead")


def timed(fn, times: dict, key: str):
    t0 = time.perf_counter()
    out = fn()
    times[key] = times.get(key, 0.0) + (time.perf_counter() - t0) * 1e3
    return out


def profile_step(mapper: IncrementalMapper, kf) -> dict[str, float]:
    """One iteration on ``kf``, taken apart (ms per part); same arithmetic as the mapper's step."""
    c, trainer, state = mapper.config, mapper.trainer, mapper.map
    channels = trainer.renders_channels(kf)
    t: dict[str, float] = {}
    state.zero_grad()
    trainer.zero_grad()
    view = c.view_steps and not trainer.needs_whole_map
    work, rows = timed(lambda: state.working_set(kf.camera if view else None, c.backend), t, "view")
    pixels = trainer.channel_pixels(kf)  # the semantic loss's sampled pixels: the render composites attributes there
    out = timed(lambda: work.render(kf.camera, semantic=channels, backend=c.backend, attribute_pixels=pixels), t,
                "render fwd")
    l1 = timed(lambda: (out.rgb - kf.rgb).abs().mean(), t, "L1")
    s = timed(lambda: ssim(out.rgb, kf.rgb), t, "SSIM")
    d = timed(lambda: depth_l1(out.depth, kf.depth), t, "depth")
    loss = c.w_color * (1 - c.w_ssim) * l1 + c.w_color * c.w_ssim * (1 - s) + c.w_depth * d
    if channels:
        loss = loss + timed(lambda: trainer.keyframe_loss(out, kf, work, {}), t, "semantic")
    timed(loss.backward, t, "backward")
    timed(lambda: (state.step(None, rows, work, out.visible if view else None), trainer.step() if channels else None),
          t, "optimiser")
    # The rasterizer's backward alone: the same render, a gradient of the same shape.
    work, _ = state.working_set(kf.camera if view else None, c.backend)
    again = work.render(kf.camera, semantic=channels, backend=c.backend)
    grads = [torch.ones_like(again.image) * 1e-3, torch.ones_like(again.depth) * 1e-3]
    timed(lambda: torch.autograd.backward([again.image, again.depth], grads), t, "(raster bwd)")
    state.zero_grad()
    return t


def real_step_ms(mapper: IncrementalMapper, kf) -> float:
    t0 = time.perf_counter()
    mapper._keyframe_step(kf)
    return (time.perf_counter() - t0) * 1e3


def run(ds, semantic: bool, warm: int, repeats: int, text_model: str = "clipgs-tiny") -> dict[str, float]:
    trainer = None
    if semantic:
        teacher, _, vocab = simulated_setup(ds, text_model)
        trainer = SemanticTrainer(SemanticTrainingConfig(dcs_every=0, dcs_novel_views=0), teacher, vocab)
    mapper = IncrementalMapper(MapperConfig(), trainer=trainer)
    for i in ds.train_indices:
        mapper.add_frame(ds[i])
        if mapper.stats.keyframes >= warm:
            break
    window = mapper._window()
    rows, real = [], []
    for r in range(repeats):
        kf = window[r % len(window)]
        real.append(real_step_ms(mapper, kf))
        rows.append(profile_step(mapper, kf))
    for row, total in zip(rows, real, strict=True):  # overhead: the real step beyond its parts, per repeat
        row["overhead"] = total - sum(v for k, v in row.items() if k != "(raster bwd)")
    med = {k: statistics.median(row.get(k, 0.0) for row in rows) for k in PARTS}
    med["step"] = statistics.median(real)
    med["gaussians"] = len(mapper.map)
    return med


def scenes(names: list[str], sizes: list[tuple[int, int]], scene_dir: Path):
    for name in names:
        for w, h in sizes:
            if name == "room":
                settings = {**DEMO_SCENE, "width": w, "height": h}
                yield name, (w, h), open_dataset(ensure_scene(scene_dir / f"room_{w}x{h}", **settings))
            elif name == "apartment":  # the long run's scene, first lap's start: realistic noise and drift
                settings = {"scene": "apartment", "seed": 0, "n_frames": 1500, "width": w, "height": h,
                            "noise": "realistic"}
                yield name, (w, h), open_dataset(ensure_scene(scene_dir / f"apartment_{w}x{h}", **settings))
            elif name == "pybullet":
                if not PYBULLET.is_dir():
                    print(f"skipping pybullet: {PYBULLET} not found", file=sys.stderr)
                    continue
                yield name, (w, h), open_dataset(PYBULLET, size=(w, h))
            else:
                raise SystemExit(f"unknown scene {name!r}: room, apartment or pybullet")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", nargs="+", default=["room", "pybullet"])
    parser.add_argument("--sizes", nargs="+", default=["160x120", "320x240"])
    parser.add_argument("--warm-keyframes", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--scene-dir", type=Path, default=Path(tempfile.gettempdir()) / "clipgs_bench_profile")
    parser.add_argument("--text-model", default="clipgs-tiny",
                        help="text tower whose embedding width the semantic step trains towards (random weights "
                             "are fine for timing): clipgs-tiny (64) or ViT-B-16 (512, a real teacher's width)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes]
    print(f"ms per mapping iteration, median of {args.repeats}, after {args.warm_keyframes} keyframes, "
          f"{args.threads} threads; '(raster bwd)' is part of 'backward'; overhead = real step - parts (timing "
          f"noise can make it slightly negative); semantic steps towards {args.text_model} embeddings\n")
    print("| scene | size | step | Gaussians | " + " | ".join(PARTS) + " |")
    print("|---" * (len(PARTS) + 4) + "|")
    for name, (w, h), ds in scenes(args.scenes, sizes, args.scene_dir):
        for semantic in (False, True):
            m = run(ds, semantic, args.warm_keyframes, args.repeats, args.text_model)
            label = f"{name} ({'semantic' if semantic else 'geometry'})"
            print(f"| {label} | {w}x{h} | {m['step']:.0f} | {m['gaussians'] // 1000}k | "
                  + " | ".join(f"{m[k]:.1f}" for k in PARTS) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
