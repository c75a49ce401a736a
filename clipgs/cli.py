"""The ``clipgs`` command: offline tools that need no ROS and no GPU."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _synth(args: argparse.Namespace) -> int:
    from clipgs.data.synthetic import generate_scene

    out = generate_scene(args.out, scene=args.scene, seed=args.seed, n_frames=args.frames, width=args.width,
                         height=args.height, hfov_deg=args.hfov)
    print(f"wrote {args.frames} frames of '{args.scene}' (seed {args.seed}) to {out}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from clipgs.data.dataset import open_dataset

    ds = open_dataset(args.data)
    print(ds.summary())
    if ds.classes:
        print("classes:", ", ".join(f"{i}:{c}" for i, c in enumerate(ds.classes)))
    return 0


def _mapper_config(path: Path | None):
    from clipgs.mapping.config import MapperConfig

    return MapperConfig.from_yaml(path) if path else MapperConfig()


def _map(args: argparse.Namespace) -> int:
    from clipgs.data.dataset import open_dataset
    from clipgs.data.ros_stream import StreamSettings
    from clipgs.data.rosbag_io import BagReplay, is_bag
    from clipgs.mapping import save_ply
    from clipgs.mapping.offline import map_dataset, map_frames

    config = _mapper_config(args.config)
    if is_bag(args.data):
        replay = BagReplay(args.data, StreamSettings.from_yaml(args.topics) if args.topics else StreamSettings())
        print(f"ROS bag '{args.data}': colour {replay.settings.color_topic}, depth {replay.settings.depth_topic}, "
              f"poses from {replay.settings.pose_topic or 'tf (' + replay.settings.map_frame + ')'}")
        mapper, summary = map_frames(replay.frames(), config, max_frames=args.max_frames, refine_iters=args.refine)
        problems = {k: v for k, v in replay.errors.items() if v}
        if problems:
            print("bag messages not used:", ", ".join(f"{k}: {v}" for k, v in problems.items()))
    else:
        ds = open_dataset(args.data)
        print(ds.summary())
        mapper, summary = map_dataset(ds, config, max_frames=args.max_frames, refine_iters=args.refine)
    path = save_ply(mapper.snapshot(), args.out)
    print(f"mapped {summary['frames']} frames: {summary['keyframes']} keyframes, {summary['gaussians']} Gaussians, "
          f"{summary['seconds']:.1f} s ({summary['frames_per_s']:.2f} frames/s, "
          f"{summary['keyframes_per_s']:.3f} keyframes/s, {summary['seconds_per_iteration'] * 1e3:.0f} ms/iteration), "
          f"peak RSS {summary['peak_rss_mb']:.0f} MB")
    if summary["rejected"]:
        print("rejected frames:", ", ".join(f"{k}: {v}" for k, v in summary["rejected"].items()))
    print(f"map written to {path}")
    return 0


def _export_bag(args: argparse.Namespace) -> int:
    from clipgs.data.dataset import open_dataset
    from clipgs.data.ros_stream import StreamSettings
    from clipgs.data.rosbag_io import export_bag

    ds = open_dataset(args.data)
    indices = ds.train_indices if args.train_only else None
    settings = StreamSettings.from_yaml(args.topics) if args.topics else StreamSettings()
    out = export_bag(ds, args.out, indices=indices, settings=settings, fps=args.fps)
    print(f"wrote {len(indices) if indices else len(ds)} frames to the MCAP bag {out} "
          f"({settings.color_topic}, {settings.depth_topic}, {settings.camera_info_topic}, /tf, /tf_static)")
    return 0


def _eval(args: argparse.Namespace) -> int:
    import json

    from clipgs.data.dataset import open_dataset
    from clipgs.eval.evaluate import evaluate
    from clipgs.mapping import load_ply

    gmap = load_ply(args.map)
    ds = open_dataset(args.data)
    result = evaluate(gmap, ds, backend=args.backend)
    print(f"held-out views: {result['views']} at {result['resolution']}, {result['gaussians']} Gaussians")
    print(f"PSNR {result['psnr_db']:.2f} dB | depth L1 {result['depth_l1_m']:.4f} m | "
          f"render {result['render_ms']:.1f} ms ({result['render_fps']:.1f} FPS, {result['backend']} backend)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def _render(args: argparse.Namespace) -> int:
    from clipgs.data.dataset import open_dataset
    from clipgs.eval.evaluate import write_view_images
    from clipgs.mapping import load_ply

    gmap = load_ply(args.map)
    ds = open_dataset(args.data)
    paths = write_view_images(gmap, ds[args.view], args.out, backend=args.backend)
    print("wrote", ", ".join(str(p) for p in paths))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from clipgs.demo import run_demo

    run_demo(args.out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clipgs", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write a synthetic posed RGB-D scene with ground truth (Replica layout)")
    p.add_argument("--scene", default="room", help="scene name (default: room)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--frames", type=int, default=120)
    p.add_argument("--width", type=int, default=160)
    p.add_argument("--height", type=int, default=120)
    p.add_argument("--hfov", type=float, default=90.0, help="horizontal field of view, degrees")
    p.set_defaults(func=_synth)

    p = sub.add_parser("info", help="summarise a dataset folder (Replica, ScanNet, TUM, synthetic)")
    p.add_argument("data", type=Path)
    p.set_defaults(func=_info)

    p = sub.add_parser("map", help="map a dataset's training frames (or a ROS bag) in stream order into a PLY map")
    p.add_argument("data", type=Path, help="dataset folder (synthetic, Replica, ScanNet, TUM) or ROS bag")
    p.add_argument("--topics", type=Path, default=None,
                   help="bag topics/frames YAML (e.g. config/mapping.yaml, the node's params file)")
    p.add_argument("--out", type=Path, required=True, help="output map, e.g. map.ply")
    p.add_argument("--config", type=Path, default=None, help="mapper settings YAML (flat or ROS params layout)")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many training frames")
    p.add_argument("--refine", type=int, default=0, help="extra iterations over all keyframes at the end")
    p.set_defaults(func=_map)

    p = sub.add_parser("export-bag", help="write a dataset as an MCAP ROS 2 bag (images, camera_info, /tf)")
    p.add_argument("data", type=Path)
    p.add_argument("--out", type=Path, required=True, help="bag folder to create")
    p.add_argument("--topics", type=Path, default=None, help="topic names YAML (default: RealSense-style names)")
    p.add_argument("--fps", type=float, default=5.0)
    p.add_argument("--train-only", action="store_true", help="leave out the held-out views")
    p.set_defaults(func=_export_bag)

    p = sub.add_parser("eval", help="score a map on the held-out views (every 10th frame): PSNR, depth L1, FPS")
    p.add_argument("map", type=Path)
    p.add_argument("data", type=Path)
    p.add_argument("--json", type=Path, default=None, help="also write the results (with per-view scores)")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "gsplat"])
    p.set_defaults(func=_eval)

    p = sub.add_parser("render", help="render a map at a dataset view and write PNGs")
    p.add_argument("map", type=Path)
    p.add_argument("data", type=Path)
    p.add_argument("--view", type=int, required=True, help="frame index in the dataset")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "gsplat"])
    p.set_defaults(func=_render)

    p = sub.add_parser("demo", help="synthetic scene -> Gaussian map -> rendered held-out view")
    p.add_argument("--out", type=Path, default=Path("demo_out"))
    p.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, IndexError) as exc:  # bad input: one clear line, no traceback
        print(f"clipgs {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
