"""2D semantic sources: seconds per keyframe with the real architectures (random weights: none reach us).

clip_fast (graph segments, CLIP image tower once per masked crop) against clip_dense (the same segments, one
dense pass of the tower over the frame, MaskCLIP), at 320x240 and 640x480, on the default room's frames.
Prints the segments found, the median of ``--repeats`` calls after one warm-up, and the speed-up.

    .venv/bin/python benchmarks/sources.py [--model ViT-B-16] [--sizes 320x240 640x480] [--device cpu]
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from clipgs.data.dataset import open_dataset
from clipgs.data.images import resize
from clipgs.demo import DEMO_SCENE, ensure_scene
from clipgs.geometry import scale_intrinsics
from clipgs.semantics.clip_sources import ClipDenseSource, ClipFastSource, DenseCLIPEmbedder, MaskCLIPEmbedder


def frame_at(frame, width: int, height: int):
    """The frame resized (colour bilinear, depth nearest), intrinsics scaled."""
    return dataclasses.replace(frame, rgb=resize(frame.rgb, width, height, nearest=False),
                               depth=resize(frame.depth, width, height, nearest=True),
                               K=scale_intrinsics(frame.K, width / frame.width, height / frame.height),
                               labels=None, instances=None)


def seconds_per_call(source, frames, repeats: int) -> tuple[float, int]:
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    source(frames[0])  # warm-up: allocations, kernel selection
    times, masks = [], []
    for k in range(repeats):
        f = frames[k % len(frames)]
        sync()
        t0 = time.perf_counter()
        obs = source(f)
        sync()
        times.append(time.perf_counter() - t0)
        masks.append(len(obs.embeddings))
    return float(np.median(times)), int(np.median(masks))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--sizes", nargs="+", default=["320x240", "640x480"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--scene-dir", type=Path, default=Path(tempfile.gettempdir()) / "clipgs_bench_demo_room")
    args = parser.parse_args()
    ds = open_dataset(ensure_scene(args.scene_dir, **DEMO_SCENE))
    crops = ClipFastSource(MaskCLIPEmbedder(args.model, device=args.device))
    dense = ClipDenseSource(DenseCLIPEmbedder(args.model, device=args.device))
    cuda = args.device.startswith("cuda")
    device = torch.cuda.get_device_name() if cuda else f"{torch.get_num_threads()} CPU threads"
    print(f"{args.model} (random weights), {device}; median of {args.repeats} keyframes after a warm-up\n")
    print("| size | source | segments | s per keyframe | speed-up |\n|---|---|---|---|---|")
    for size in args.sizes:
        w, h = (int(v) for v in size.split("x"))
        frames = [frame_at(ds[i], w, h) for i in ds.train_indices[:args.repeats]]
        base, n = seconds_per_call(crops, frames, args.repeats)
        print(f"| {size} | clip_fast (a crop per segment) | {n} | {base:.3f} | 1.0 |", flush=True)
        fast, n = seconds_per_call(dense, frames, args.repeats)
        rows, cols = dense.embedder.grid(h, w)
        print(f"| {size} | clip_dense (one pass, {rows}x{cols} patches) | {n} | {fast:.3f} | {base / fast:.1f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
