"""Long run: a scene streamed through the node's worker at a fixed rate, lap after lap (revisits).

Prints a row every ``--every`` frames: frames sent, mapped, dropped while busy, keyframes held (and MB),
Gaussians, process RSS, wall ms per keyframe over the last rows' frames, semantic lag; then held-out PSNR,
depth L1, semantic mIoU (map and teacher) and the keyframe trajectory error (ATE RMSE), all against the true
poses (``gt_traj_w_c.txt`` when the scene has one); the last line sums it up.

    .venv/bin/python benchmarks/long_run.py [--scene room|apartment] [--frames 200 --laps 3] [--size 160x120]
                                            [--rate 10]
                                            [--noise realistic] [--semantic] [--map-width 0]
                                            [--keyframe-budget-mb 1024] [--pose-refine-iters 15]
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
from clipgs.errors import SettingsError
from clipgs.eval.evaluate import evaluate
from clipgs.mapping.config import MapperConfig
from clipgs.mapping.mapper import IncrementalMapper
from clipgs.mapping.trajectory import trajectory_errors
from clipgs.mapping.worker import MapperWorker
from clipgs.semantics.config import SemanticTrainingConfig
from clipgs.settings import split_overrides

LONG_RUN_DEFAULTS = {"room": (200, 3, "160x120"), "apartment": (1500, 1, "320x240")}  # frames, laps, size


def peak_rss_mb() -> float:
    """The process's resident high-water mark so far (MB): unlike one RSS sample, not moved by when the
    allocator last returned memory (a sample taken just after a trim reads up to a fifth lower)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def trend(rows: list[tuple], total: int) -> str:
    """The issue's stability figures from the per-row table: RSS growth over the last 500 frames (or third) and
    ms per keyframe over the last 200 frames against frames 100-300."""
    at = {row[0]: row for row in rows}
    span = 500 if total >= 1000 else total // 3
    start = max((k for k in at if k <= total - span), default=None)
    out = ""
    if start is not None and start != rows[-1][0]:
        out += (f", RSS growth over the last {total - start} frames {100 * (rows[-1][6] / at[start][6] - 1):+.0f} % "
                f"(peak RSS {100 * (rows[-1][9] / at[start][9] - 1):+.0f} %)")
    early = [row for row in rows if 100 < row[0] <= 300]
    late = [row for row in rows if row[0] > total - 200]
    if early and late and total >= 600:
        ratio = np.mean([row[7] for row in late]) / np.mean([row[7] for row in early])
        out += f", ms/keyframe last 200 frames / frames 100-300 {ratio:.2f}x"
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", choices=sorted(LONG_RUN_DEFAULTS), default="room",
                        help="room: lapped --laps times; apartment: four rooms, its 1500-frame walk laps twice")
    parser.add_argument("--frames", type=int, help="frames of the scene (room: 200 per lap; apartment: 1500)")
    parser.add_argument("--laps", type=int, help="times the frames are streamed (room: 3; apartment: 1)")
    parser.add_argument("--size", help="WxH (room: 160x120; apartment: 320x240)")
    parser.add_argument("--rate", type=float, default=10.0, help="frames per second sent to the worker")
    parser.add_argument("--noise", choices=["none", "realistic"], default="realistic")
    parser.add_argument("--semantic", action="store_true", help="simulated teacher on its own thread, SAC + 3DCS")
    parser.add_argument("--teacher", choices=["uniform", "realistic"], default="uniform",
                        help="the simulated 2D teacher: uniform (a random wrong class for 30 %% of masks, per view; "
                             "what the issue's 'teacher + 15' is measured against) or realistic (confusions that "
                             "repeat across views, see clipgs.semantics.realistic_teacher)")
    parser.add_argument("--map-width", type=int, default=0)
    parser.add_argument("--keyframe-budget-mb", type=float, default=MapperConfig().keyframe_budget_mb)
    parser.add_argument("--pose-refine-iters", type=int, default=-1,
                        help="refine keyframe poses (odometry drift; 0: off; -1: on unless --true-poses)")
    parser.add_argument("--true-poses", action="store_true", help="stream the true poses, not the drifting odometry")
    parser.add_argument("--max-frames", type=int, default=0, help="stream only this many frames (0: all)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="any other mapper or semantic training setting, e.g. --set dcs_every=0 (repeatable)")
    parser.add_argument("--device", default="cpu", help="torch device of the map and its optimisation (cpu, cuda)")
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--scene-dir", type=Path, default=Path(tempfile.gettempdir()) / "clipgs_bench_long")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    frames, laps, size = LONG_RUN_DEFAULTS[args.scene]
    args.frames, args.laps, args.size = args.frames or frames, args.laps or laps, args.size or size
    w, h = (int(v) for v in args.size.split("x"))
    settings = {"scene": args.scene, "seed": 0, "n_frames": args.frames, "width": w, "height": h, "noise": args.noise}
    folder = ensure_scene(args.scene_dir / f"{args.scene}_{args.frames}_{w}x{h}_{args.noise}", **settings)
    truth = folder / "gt_traj_w_c.txt"
    ds = open_dataset(folder, trajectory=truth.name) if args.true_poses and truth.is_file() else open_dataset(folder)
    true_poses = np.loadtxt(truth if truth.is_file() else folder / "traj_w_c.txt").reshape(-1, 4, 4)
    try:
        extra, training = split_overrides(args.set, (MapperConfig, SemanticTrainingConfig))
    except SettingsError as exc:
        raise SystemExit(str(exc)) from None
    config = MapperConfig(map_width=args.map_width, keyframe_budget_mb=args.keyframe_budget_mb,
                          pose_refine_iters=args.pose_refine_iters, **extra).resolved(ds.poses_from_odometry)
    trainer = teacher = vocab = None
    if args.semantic:
        from clipgs.semantics.pipeline import default_corruption, simulated_setup
        from clipgs.semantics.trainer import SemanticTrainer

        teacher, text, vocab = simulated_setup(ds, corruption=default_corruption(args.teacher))
        trainer = SemanticTrainer(SemanticTrainingConfig(**{"async_source": True, "dcs_spread": True, **training}),
                                  teacher, vocab)
    mapper = IncrementalMapper(config, device=args.device, trainer=trainer)
    worker = MapperWorker(mapper)
    semantics = f"on (own thread, {args.teacher} teacher)" if args.semantic else "off"
    map_width = config.map_width or config.auto_map_width(w, mapper.device.type, mapper.trainer.channels > 0) or w
    print(f"{ds.summary()}; {args.laps} laps, {args.rate:g} frames/s, noise {args.noise}, semantics {semantics}, "
          f"map_width {map_width}, keyframe budget {args.keyframe_budget_mb:g} MB, pose refinement "
          f"{config.pose_refine_iters or 'off'}, poses {'true' if args.true_poses else 'as given'}, device "
          f"{args.device}{''.join(', ' + kv for kv in args.set)}\n")
    cols = ("frames", "mapped", "dropped", "keyframes held", "held MB", "Gaussians", "RSS MB", "ms/keyframe",
            "semantic lag s")
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    order = [i for _ in range(args.laps) for i in ds.train_indices][: args.max_frames or None]
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
                         s.gaussians, rss_mb(), ms_kf, lag, peak_rss_mb()))
            print(f"| {k} | {worker.processed} | {worker.dropped} | {s.keyframes_held} | "
                  f"{s.keyframe_bytes / 2**20:.1f} | {s.gaussians} | {rss_mb():.0f} | {ms_kf:.0f} | {lag:.2f} |",
                  flush=True)
    worker.wait_idle()
    worker.stop()
    mapper.trainer.close()
    scored = open_dataset(folder, trajectory=truth.name) if truth.is_file() else ds  # held-out views, true poses
    online = mapper.snapshot()  # the map as the stream left it; then what clipgs map and the node's shutdown do
    t_finish = time.perf_counter()
    mapper.finish()
    t_finish = time.perf_counter() - t_finish
    snap = mapper.snapshot()
    q = evaluate(snap.gaussians, scored, progress=False)
    trajectory = mapper.keyframes.trajectory  # every keyframe's pose as it joined, evicted ones too
    err = trajectory_errors(np.stack([p.world_from_camera for p in trajectory]),
                            true_poses[[p.index for p in trajectory]])
    summary = (f"long run: {len(order)} frames at {args.rate:g}/s, mapped {worker.processed}, dropped "
               f"{worker.dropped}, {mapper.stats.keyframes} keyframes ({mapper.stats.keyframes_held} held, "
               f"{mapper.stats.keyframe_bytes / 2**20:.0f} MB), {len(snap)} Gaussians, prepare "
               f"{worker.ms_per_frame_prepared:.0f} ms a frame, {worker.seconds_per_keyframe:.2f} s a keyframe, "
               f"RSS {rss_mb():.0f} MB, "
               f"PSNR {q['psnr_db']:.2f} dB, depth L1 {q['depth_l1_m']:.3f} m, ATE {err['ate_m'] * 100:.1f} cm "
               f"(rigidly aligned {err['aligned_ate_m'] * 100:.1f} cm)")
    if mapper.stats.frames_tracked:
        summary += f" ({mapper.stats.frames_tracked} frames tracked, {mapper.stats.frames_not_tracked} not paired)"
    if args.semantic:
        from clipgs.semantics.model import SemanticModel
        from clipgs.semantics.pipeline import evaluate_semantics

        def semantic_scores(state):
            model = SemanticModel(state.decoder, text.identity, list(ds.classes), vocab)
            return evaluate_semantics(state.gaussians, model, scored, teacher)

        sem, before = semantic_scores(snap), semantic_scores(online)
        summary += (f", mIoU map {100 * sem['map_miou']:.1f} (per pixel {100 * sem['map_pixelwise_miou']:.1f}) / "
                    f"teacher {100 * sem['teacher_miou']:.1f}, online {100 * before['map_miou']:.1f} "
                    f"({100 * before['map_pixelwise_miou']:.1f}) before the {t_finish:.1f} s end (final 3DCS "
                    f"round, decoder refit), "
                    f"3DCS rounds {mapper.trainer.pseudo_label_rounds} (due while frames waited "
                    f"{mapper.trainer.dcs_rounds_waited})")
        from clipgs.semantics.query import query_map

        view = scored[scored.test_indices[len(scored.test_indices) // 2]]  # at the camera's own resolution
        t_query = time.perf_counter()
        answer = query_map(snap.gaussians, snap.decoder, text.encode(["chair"])[0],
                           text.encode([c for c in ds.classes[1:] if c != "chair"]), view.camera)
        summary += (f", query 'chair' at {answer.mask.shape[1]}x{answer.mask.shape[0]}: {len(answer.instances)} "
                    f"objects in {(time.perf_counter() - t_query) * 1e3:.0f} ms")
    summary += trend(rows, len(order))
    print("\n" + summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
