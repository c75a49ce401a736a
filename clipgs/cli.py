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

    p = sub.add_parser("demo", help="synthetic scene -> Gaussian map -> rendered held-out view")
    p.add_argument("--out", type=Path, default=Path("demo_out"))
    p.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as exc:  # bad input: one clear line, no traceback
        print(f"clipgs {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
