"""Long run: a scene streamed through the node's worker at a fixed rate, lap after lap (revisits).

Prints a row every ``--every`` frames: frames sent, mapped, dropped while busy, keyframes held (and MB),
Gaussians, process RSS, wall ms per keyframe over the last rows' frames, semantic lag; then held-out PSNR,
depth L1, semantic mIoU (map and teacher) and the keyframe trajectory error (ATE RMSE), all against the true
poses (``gt_traj_w_c.txt`` when the scene has one); the last line sums it up.

    .venv/bin/python benchmarks/long_run.py [--frames 200 --laps 3] [--size 160x120] [--rate 10]
                                            [--noise realistic] [--semantic] [--map-width 0]
                                            [--keyframe-budget-mb 1024] [--pose-refine-iters 25]
"""
from __future__ import annotations

import argparse
import dataclasses
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from clipgs.data.dataset import open_dataset
from clipgs.demo import ensure_scene
from clipgs.eval.evaluate import evaluate
from clipgs.mapping.config import MapperConfig
from clipgs.mapping.mapper import IncrementalMapper
from clipgs.mapping.worker import MapperWorker


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def ate_rmse(mapper: IncrementalMapper, true_poses: np.ndarray) -> float:
    """RMSE (m) of held keyframe positions against the true positions of the same frames."""
    err = [kf.camera.world_from_camera[:3, 3] - true_poses[kf.index][:3, 3] for kf in mapper.keyframes]
    return float(np.sqrt(np.mean(np.sum(np.square(err), axis=1)))) if err else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200, help="frames per lap of the room")
    parser.add_argument("--laps", type=int, default=3)
    parser.add_argument("--size", default="160x120")
    parser.add_argument("--rate", type=float, default=10.0, help="frames per second sent to the worker")
    parser.add_argument("--noise", choices=["none", "realistic"], default="realistic")
    parser.add_argument("--semantic", action="store_true", help="simulated teacher on its own thread, SAC + 3DCS")
    parser.add_argument("--map-width", type=int, default=0)
    parser.add_argument("--keyframe-budget-mb", type=float, default=MapperConfig().keyframe_budget_mb)
    parser.add_argument("--pose-refine-iters", type=int, default=0, help="refine keyframe poses (odometry drift)")
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--scene-dir", type=Path, default=Path(tempfile.gettempdir()) / "clipgs_bench_long")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    w, h = (int(v) for v in args.size.split("x"))
    settings = {"scene": "room", "seed": 0, "n_frames": args.frames, "width": w, "height": h, "noise": args.noise}
    folder = ensure_scene(args.scene_dir / f"room_{args.frames}_{w}x{h}_{args.noise}", **settings)
    ds = open_dataset(folder)
    truth = folder / "gt_traj_w_c.txt"
    true_poses = np.loadtxt(truth if truth.is_file() else folder / "traj_w_c.txt").reshape(-1, 4, 4)
    config = MapperConfig(map_width=args.map_width, keyframe_budget_mb=args.keyframe_budget_mb,
                          pose_refine_iters=args.pose_refine_iters)
    trainer = teacher = vocab = None
    if args.semantic:
        from clipgs.semantics.config import SemanticTrainingConfig
        from clipgs.semantics.pipeline import simulated_setup
        from clipgs.semantics.trainer import SemanticTrainer

        teacher, text, vocab = simulated_setup(ds)
        trainer = SemanticTrainer(SemanticTrainingConfig(async_source=True), teacher, vocab)
    mapper = IncrementalMapper(config, trainer=trainer)
    worker = MapperWorker(mapper)
    print(f"{ds.summary()}; {args.laps} laps, {args.rate:g} frames/s, noise {args.noise}, semantics "
          f"{'on (own thread)' if args.semantic else 'off'}, map_width {args.map_width or w}, keyframe budget "
          f"{args.keyframe_budget_mb:g} MB, pose refinement {args.pose_refine_iters or 'off'}\n")
    cols = ("frames", "mapped", "dropped", "keyframes held", "held MB", "Gaussians", "RSS MB", "ms/keyframe",
            "semantic lag s")
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    order = [i for _ in range(args.laps) for i in ds.train_indices]
    t0 = time.perf_counter()
    last = (t0, 0)
    rows = []
    for k, i in enumerate(order, start=1):
        delay = t0 + k / args.rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        worker.submit(dataclasses.replace(ds[i], timestamp=k / args.rate))  # one clock across laps
        if k % args.every == 0 or k == len(order):
            s, counters = mapper.counters()
            now = time.perf_counter()
            ms_kf = (now - last[0]) * 1e3 / max(s.keyframes - last[1], 1)
            last = (now, s.keyframes)
            lag = counters.get("semantic_lag_s", float("nan"))
            rows.append((k, worker.processed, worker.dropped, s.keyframes_held, s.keyframe_bytes / 2**20,
                         s.gaussians, rss_mb(), ms_kf, lag))
            print(f"| {k} | {worker.processed} | {worker.dropped} | {s.keyframes_held} | "
                  f"{s.keyframe_bytes / 2**20:.1f} | {s.gaussians} | {rss_mb():.0f} | {ms_kf:.0f} | {lag:.2f} |",
                  flush=True)
    worker.wait_idle()
    worker.stop()
    mapper.trainer.close()
    snap = mapper.snapshot()
    scored = open_dataset(folder, trajectory=truth.name) if truth.is_file() else ds  # held-out views, true poses
    q = evaluate(snap.gaussians, scored, progress=False)
    ate = ate_rmse(mapper, true_poses)
    summary = (f"long run: {len(order)} frames at {args.rate:g}/s, mapped {worker.processed}, dropped "
               f"{worker.dropped}, {mapper.stats.keyframes} keyframes ({mapper.stats.keyframes_held} held, "
               f"{mapper.stats.keyframe_bytes / 2**20:.0f} MB), {len(snap)} Gaussians, RSS {rss_mb():.0f} MB, "
               f"PSNR {q['psnr_db']:.2f} dB, depth L1 {q['depth_l1_m']:.3f} m, ATE {ate * 100:.1f} cm")
    if args.semantic:
        from clipgs.semantics.model import SemanticModel
        from clipgs.semantics.pipeline import evaluate_semantics

        sem = evaluate_semantics(snap.gaussians, SemanticModel(snap.decoder, text.identity, list(ds.classes), vocab),
                                 scored, teacher)
        summary += f", mIoU map {100 * sem['map_miou']:.1f} / teacher {100 * sem['teacher_miou']:.1f}"
    if len(rows) >= 3:
        growth = rows[-1][6] / rows[len(rows) * 2 // 3][6] - 1
        summary += f", RSS growth over the last third {100 * growth:+.0f} %"
    print("\n" + summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
