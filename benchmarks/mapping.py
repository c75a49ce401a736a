"""Mapping benchmark on the default synthetic scene: quality, throughput and memory as a table.

    .venv/bin/python benchmarks/mapping.py [--config cfg.yaml] [--semantic [--vocabulary-size 200]]
                                           [--backends cpu_scalar cpu] [--stream-fps 5]

Offline mode feeds every training frame synchronously (what ``clipgs map`` does); one column per render
backend, side by side (``cpu_scalar`` is the compiled kernel before vectorised compositing). --semantic
maps with the simulated teacher and the default SAC + 3DCS schedule (as ``make demo``). With
--stream-fps, frames are also submitted to the background worker at that rate, as a camera would, and
the table reports how many were mapped and how many were dropped while the mapper was busy.
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
from clipgs.mapping.offline import keyframe_time_breakdown, map_dataset
from clipgs.mapping.worker import MapperWorker
from clipgs.parameters import Parameters
from clipgs.semantics.config import SemanticTrainingConfig
from clipgs.semantics.pipeline import simulated_setup
from clipgs.semantics.trainer import SemanticTrainer


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


def padded_vocabulary(text, vocab: torch.Tensor, size: int) -> torch.Tensor:
    """``vocab`` (C, D) and text embeddings of ``size - C`` more names no mask reads as (a large label set's cost)."""
    more = [f"household object number {i}" for i in range(max(size - len(vocab), 0))]
    return torch.cat([vocab, text.encode(more)]) if more else vocab


def map_once(ds, config: MapperConfig, semantic: bool, vocabulary_size: int = 0) -> list[tuple[str, str]]:
    trainer = None
    if semantic:
        teacher, text, vocab = simulated_setup(ds)
        vocab = padded_vocabulary(text, vocab, vocabulary_size)
        trainer = SemanticTrainer(SemanticTrainingConfig(), teacher, vocab)
    mapper, s = map_dataset(ds, config, trainer=trainer)
    q = evaluate(mapper.snapshot().gaussians, ds)
    return [
        ("frames (train)", f"{s['frames']}"), ("keyframes", f"{s['keyframes']}"),
        ("Gaussians (cap)", f"{s['gaussians']} ({config.max_gaussians})"), ("iterations", f"{s['iterations']}"),
        ("time per iteration (keyframe steps)", f"{s['seconds_per_iteration'] * 1e3:.0f} ms"),
        ("mapping time per keyframe, by phase", keyframe_time_breakdown(s).removeprefix("per keyframe: ")),
        ("mapping time", f"{s['seconds']:.1f} s"),
        ("of which the end (3DCS round, decoder refit)", f"{s['finish_seconds']:.1f} s"),
        ("frames/s while mapping", f"{s['frames_per_s']:.2f}"),
        ("keyframes/s while mapping", f"{s['keyframes_per_s']:.3f}"),
        ("keyframes/s, the end included", f"{s['keyframes'] / s['seconds']:.3f}"),
        ("peak RSS", f"{s['peak_rss_mb']:.0f} MB"),
        ("held-out PSNR", f"{q['psnr_db']:.2f} dB"), ("held-out depth L1", f"{q['depth_l1_m']:.4f} m"),
        ("render (RGB)", f"{q['render_ms']:.1f} ms, {q['render_fps']:.1f} FPS"),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--scene-dir", type=Path, default=Path(tempfile.gettempdir()) / "clipgs_bench_demo_room")
    parser.add_argument("--semantic", action="store_true", help="simulated teacher, SAC + 3DCS (as make demo)")
    parser.add_argument("--backends", nargs="+", default=None, help="one column each (default: the config's)")
    parser.add_argument("--stream-fps", type=float, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--vocabulary-size", type=int, default=0,
                        help="with --semantic: pad the scene's classes with names no mask reads as, to this many "
                             "(200: a ScanNet200-sized label set)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = Parameters.from_yaml(args.config).mapper
    ds = open_dataset(ensure_scene(args.scene_dir, **DEMO_SCENE))
    print(ds.summary())
    backends = args.backends or [config.backend]
    columns = {b: dict(map_once(ds, config.replace(backend=b), args.semantic, args.vocabulary_size))
               for b in backends}
    rows = list(next(iter(columns.values())))
    if args.stream_fps:
        st = stream(ds, config, args.stream_fps)
        sq = evaluate(st["map"], ds, progress=False)
        extra = {f"stream @ {args.stream_fps:g} FPS: mapped / dropped": f"{st['mapped']} / {st['dropped']} of "
                 f"{st['submitted']} ({st['keyframes']} keyframes, {st['seconds']:.1f} s)",
                 "stream held-out PSNR / depth L1": f"{sq['psnr_db']:.2f} dB / {sq['depth_l1_m']:.4f} m"}
        rows += list(extra)
        columns[backends[-1]].update(extra)
    width = max(len(r) for r in rows)
    classes = f", {args.vocabulary_size} classes" if args.semantic and args.vocabulary_size else ""
    print(f"\n{'semantic (simulated teacher, SAC + 3DCS)' if args.semantic else 'geometry only'}{classes}, "
          f"{args.threads} threads")
    print(f"| {'metric':{width}} | " + " | ".join(backends) + " |\n|" + "---|" * (len(backends) + 1))
    for name in rows:
        print(f"| {name:{width}} | " + " | ".join(columns[b].get(name, "") for b in backends) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
