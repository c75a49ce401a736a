"""Mapping benchmark on the default synthetic scene: quality, throughput and memory as a table.

    .venv/bin/python benchmarks/mapping.py [--config cfg.yaml] [--stream-fps 5]

Offline mode feeds every training frame synchronously (what ``clipgs map`` does). With --stream-fps,
frames are also submitted to the background worker at that rate, as a camera would, and the table
reports how many were mapped and how many were dropped while the mapper was busy.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from clipgs.data.dataset import open_dataset
from clipgs.demo import DEMO_SCENE, ensure_scene
from clipgs.eval.evaluate import evaluate
from clipgs.mapping.config import MapperConfig
from clipgs.mapping.mapper import IncrementalMapper
from clipgs.mapping.offline import map_dataset
from clipgs.mapping.worker import MapperWorker
from clipgs.parameters import Parameters


def stream(ds, config: MapperConfig, fps: float) -> dict:
    worker = MapperWorker(IncrementalMapper(config))
    t0 = time.perf_counter()
    for k, i in enumerate(ds.train_indices):
        delay = t0 + k / fps - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        worker.submit(ds[i])
    worker.wait_idle()
    worker.stop()
    return {"submitted": len(ds.train_indices), "mapped": worker.processed, "dropped": worker.dropped,
            "keyframes": worker.mapper.stats.keyframes, "seconds": time.perf_counter() - t0,
            "gaussians": worker.mapper.gaussian_count, "map": worker.snapshot().gaussians}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--scene-dir", type=Path, default=Path(tempfile.gettempdir()) / "clipgs_bench_demo_room")
    parser.add_argument("--stream-fps", type=float, default=None)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = Parameters.from_yaml(args.config).mapper
    ds = open_dataset(ensure_scene(args.scene_dir, **DEMO_SCENE))
    print(ds.summary())
    mapper, s = map_dataset(ds, config)
    q = evaluate(mapper.snapshot().gaussians, ds)
    rows = [
        ("frames (train)", f"{s['frames']}"), ("keyframes", f"{s['keyframes']}"),
        ("Gaussians (cap)", f"{s['gaussians']} ({config.max_gaussians})"), ("iterations", f"{s['iterations']}"),
        ("time per iteration", f"{s['seconds_per_iteration'] * 1e3:.0f} ms"),
        ("mapping time", f"{s['seconds']:.1f} s"), ("frames/s", f"{s['frames_per_s']:.2f}"),
        ("keyframes/s", f"{s['keyframes_per_s']:.3f}"), ("peak RSS", f"{s['peak_rss_mb']:.0f} MB"),
        ("held-out PSNR", f"{q['psnr_db']:.2f} dB"), ("held-out depth L1", f"{q['depth_l1_m']:.4f} m"),
        ("render (RGB)", f"{q['render_ms']:.1f} ms, {q['render_fps']:.1f} FPS ({q['backend']})"),
    ]
    if args.stream_fps:
        st = stream(ds, config, args.stream_fps)
        sq = evaluate(st["map"], ds, progress=False)
        rows += [(f"stream @ {args.stream_fps:g} FPS: mapped / dropped", f"{st['mapped']} / {st['dropped']} "
                  f"of {st['submitted']} ({st['keyframes']} keyframes, {st['seconds']:.1f} s)"),
                 ("stream held-out PSNR / depth L1", f"{sq['psnr_db']:.2f} dB / {sq['depth_l1_m']:.4f} m")]
    width = max(len(r[0]) for r in rows)
    print(f"\n| {'metric':{width}} | value |\n|{'-' * (width + 2)}|-------|")
    for name, value in rows:
        print(f"| {name:{width}} | {value} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
