"""The ``clipgs`` command: offline tools that need no ROS and no GPU. Parser and exit codes."""
from __future__ import annotations

import argparse
import os
import pickle
import sys
import traceback
from pathlib import Path

from clipgs.cli import data_commands as data
from clipgs.cli import look_commands as look
from clipgs.cli import map_commands as maps


def _int_at_least(low: int, meaning: str):
    def parse(text: str) -> int:
        if int(text) < low:
            raise argparse.ArgumentTypeError(f"must be {meaning} (at least {low}), got {text}")
        return int(text)
    return parse


def _add_model_arguments(p: argparse.ArgumentParser) -> None:
    from clipgs.semantics.clip_sources import SAM_MODELS

    p.add_argument("--text-model", default="clipgs-tiny",
                   help="open_clip model, e.g. ViT-B-16 (clipgs-tiny: random-weight test model)")
    p.add_argument("--clip-weights", type=Path, default=None, help="local open_clip checkpoint (never downloaded)")
    p.add_argument("--sam-model", default="vit_b", choices=SAM_MODELS, help="clip_sam: SAM size")
    p.add_argument("--sam-weights", type=Path, default=None, help="clip_sam: local segment-anything checkpoint")
    p.add_argument("--sam-points", type=int, default=32, help="clip_sam: point grid per side")


def build_parser() -> argparse.ArgumentParser:
    from clipgs.render.api import BACKENDS
    from clipgs.semantics.factory import SOURCE_HELP

    parser = argparse.ArgumentParser(
        prog="clipgs", description="CLIP-GS semantic Gaussian-splatting maps from posed RGB-D: offline tools that need "
                                   "no ROS and no GPU.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (or CLIPGS_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write a synthetic posed RGB-D scene with ground truth (Replica layout)")
    p.add_argument("--scene", default="room",
                   help="room: one furnished 6 x 5 m room, 120 frames at 160x120 by default; apartment: four rooms "
                        "joined by doorways, 23 object classes, a 1500-frame walk over two laps at 320x240")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--frames", type=_int_at_least(1, "a count"), help="frames (default: the scene's)")
    p.add_argument("--width", type=_int_at_least(8, "pixels"), help="image width (default: the scene's)")
    p.add_argument("--height", type=_int_at_least(8, "pixels"), help="image height (default: the scene's)")
    p.add_argument("--workers", type=int, default=0, help="processes rendering frames (0 = one per core for "
                                                          "long runs)")
    p.add_argument("--hfov", type=float, default=90.0, help="horizontal field of view, degrees")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier clipgs synth dataset in --out")
    p.add_argument("--noise", choices=["none", "realistic"], default="none",
                   help="realistic: structured-light depth noise, dropouts, invalid edges, 4 m range, exposure and "
                        "pixel noise, odometry drift in traj_w_c.txt (true poses in gt_traj_w_c.txt)")
    p.set_defaults(func=data.run_synth)

    p = sub.add_parser("info", help="summarise a dataset folder (Replica, ScanNet, TUM, synthetic)")
    p.add_argument("data", type=Path)
    p.set_defaults(func=data.run_info)

    p = sub.add_parser("map", help="map a dataset's training frames (or a ROS bag) in stream order into a PLY map")
    p.add_argument("data", type=Path, help="dataset folder (synthetic, Replica, ScanNet, TUM) or ROS bag")
    p.add_argument("--topics", type=Path, default=None,
                   help="bag topics/frames YAML (e.g. config/mapping.yaml, the node's params file)")
    p.add_argument("--out", type=Path, required=True, help="output map, e.g. map.ply")
    p.add_argument("--config", type=Path, default=None,
                   help="settings YAML, flat or the ROS params layout (clipgs params writes one with every key)")
    p.add_argument("--max-frames", type=_int_at_least(1, "a count"), help="stop after this many training frames")
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable frame (default: skip it)")
    p.add_argument("--refine", type=int, default=0, help="extra iterations over all keyframes at the end")
    p.add_argument("--semantics", choices=[*SOURCE_HELP, "simulated"], default="none",
                   help="2D supervision: " + "; ".join(f"{k}: {v}" for k, v in SOURCE_HELP.items())
                        + "; simulated: a teacher made from a synthetic scene's ground truth")
    p.add_argument("--semantics-dir", type=Path, default=None, help="folder written by clipgs extract")
    _add_model_arguments(p)
    p.add_argument("--teacher", choices=["realistic", "uniform"], default="realistic",
                   help="simulated teacher: realistic errs like SAM + CLIP (confusions that repeat across views, "
                        "noisy image-like embeddings, merged and split masks); uniform: a random wrong class per "
                        "view for --wrong-fraction of the masks")
    p.add_argument("--wrong-fraction", type=float, default=0.3, help="uniform teacher: masks with a wrong class")
    p.set_defaults(func=data.run_map)

    p = sub.add_parser("extract", help="run a 2D semantic source once and store masks + embeddings per frame")
    p.add_argument("data", type=Path)
    p.add_argument("--source", choices=[s for s in SOURCE_HELP if s not in ("none", "precomputed")],
                   default="clip_fast")
    p.add_argument("--out", type=Path, required=True)
    _add_model_arguments(p)
    p.set_defaults(func=data.run_extract)

    p = sub.add_parser("export-bag", help="write a dataset as an MCAP ROS 2 bag (images, camera_info, /tf)")
    p.add_argument("data", type=Path)
    p.add_argument("--out", type=Path, required=True, help="bag folder to create")
    p.add_argument("--topics", type=Path, default=None, help="topic names YAML (default: RealSense-style names)")
    p.add_argument("--fps", type=float, default=5.0)
    p.add_argument("--train-only", action="store_true", help="leave out the held-out views")
    p.set_defaults(func=data.run_export_bag)

    p = sub.add_parser("eval", help="score a map on the held-out views (every 10th frame): PSNR, depth L1, FPS")
    p.add_argument("map", type=Path)
    p.add_argument("data", type=Path)
    p.add_argument("--json", type=Path, default=None, help="also write the results (with per-view scores)")
    p.add_argument("--backend", default="auto", choices=BACKENDS)
    p.add_argument("--semantic", action="store_true", help="also mIoU / pixel accuracy of the map and the teacher")
    p.add_argument("--true-poses", action="store_true",
                   help="render the held-out views from gt_traj_w_c.txt (a scene with odometry drift)")
    p.set_defaults(func=data.run_eval)

    p = sub.add_parser("query", help="text query on a semantic map: mask in a view and the object's 3D box")
    p.add_argument("map", type=Path)
    p.add_argument("label", help="e.g. chair")
    p.add_argument("--data", type=Path, default=None, help="dataset whose view to render the mask in")
    p.add_argument("--view", type=_int_at_least(0, "a frame index"), default=0)
    p.add_argument("--out", type=Path, default=Path("query_out"))
    p.add_argument("--negatives", choices=["canonical", "vocabulary"], default="vocabulary",
                   help="relevancy against 'object, things, stuff, texture' or the map's other class names")
    p.set_defaults(func=maps.run_query)

    p = sub.add_parser("render", help="render a map at a dataset view and write PNGs")
    p.add_argument("map", type=Path)
    p.add_argument("data", type=Path)
    p.add_argument("--view", type=_int_at_least(0, "a frame index"), required=True, help="frame index in the dataset")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--backend", default="auto", choices=BACKENDS)
    p.set_defaults(func=maps.run_render)

    p = sub.add_parser("view", help="look at a map in the browser: splats, class colours, live text queries")
    p.add_argument("map", type=Path)
    p.add_argument("--data", type=Path, default=None, help="dataset whose cameras to show (click one: its view)")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default: this machine only)")
    p.add_argument("--port", type=_int_at_least(0, "a port number (0: any free port)"), default=8080)
    p.add_argument("--seconds", type=float, default=None, help=argparse.SUPPRESS)  # tests: stop after this long
    p.set_defaults(func=look.run_view)

    p = sub.add_parser("export", help="write PLYs other tools open: class colours, per-Gaussian labels, objects")
    p.add_argument("map", type=Path)
    p.add_argument("--out", type=Path, required=True, help="a .ply file (a folder with --query)")
    p.add_argument("--semantic-colors", action="store_true",
                   help="colour each Gaussian by its class (standard 3DGS PLY, opens in SuperSplat) + legend PNG")
    p.add_argument("--labels", action="store_true", help="add class_id and confidence properties per Gaussian")
    p.add_argument("--query", default=None, help="one PLY per object matching this text, and objects.json")
    p.add_argument("--negatives", choices=["canonical", "vocabulary"], default="vocabulary",
                   help="--query: relevancy against the map's other class names or 'object, things, stuff, texture'")
    p.set_defaults(func=look.run_export)

    p = sub.add_parser("params", help="write the ROS 2 params file with every setting, its default and help")
    p.add_argument("--out", type=Path, default=None, help="file to write (default: print)")
    p.set_defaults(func=maps.run_params)

    p = sub.add_parser("demo", help="synthetic scene -> Gaussian map -> rendered held-out view")
    p.add_argument("--out", type=Path, default=Path("demo_out"))
    p.add_argument("--teacher", choices=["realistic", "uniform"], default="realistic",
                   help="simulated 2D teacher: realistic (errs like SAM + CLIP) or uniform (random per view)")
    p.set_defaults(func=maps.run_demo)
    return parser


# Anticipated failures: bad input, files that cannot be read or written. Anything else is a bug in clipgs.
ANTICIPATED = (ValueError, OSError, IndexError, EOFError, pickle.UnpicklingError)


def main(argv: list[str] | None = None) -> int:
    """Exit 0 on success; 2 on bad input or an unreadable / unwritable file (one line saying what to fix;
    ``--debug`` or ``CLIPGS_DEBUG=1`` adds the traceback); 1 on a bug (says so, with the traceback);
    130 on Ctrl-C."""
    args = build_parser().parse_args(argv)
    debug = args.debug or bool(os.environ.get("CLIPGS_DEBUG"))
    try:
        return args.func(args)
    except ANTICIPATED as exc:
        if debug:
            traceback.print_exc()
        detail = str(exc).strip() or type(exc).__name__
        print(f"clipgs {args.command}: error: {detail}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"clipgs {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        traceback.print_exc()
        print(f"clipgs {args.command}: bug: unexpected {type(exc).__name__} ({str(exc)[:200]}); please report it "
              "with the traceback above and the command you ran", file=sys.stderr)
        return 1
