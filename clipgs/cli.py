"""The ``clipgs`` command: offline tools that need no ROS and no GPU."""
from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path


def _synth(args: argparse.Namespace) -> int:
    from clipgs.data.synthetic import generate_scene

    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        raise ValueError(f"--out {args.out} exists and is not an empty folder; choose a new one (nothing was written)")

    out = generate_scene(args.out, scene=args.scene, seed=args.seed, n_frames=args.frames, width=args.width,
                         height=args.height, hfov_deg=args.hfov, noise=args.noise)
    print(f"wrote {args.frames} frames of '{args.scene}' (seed {args.seed}, noise {args.noise}) to {out}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from clipgs.data.dataset import open_dataset

    ds = open_dataset(args.data)
    print(ds.summary())
    if ds.classes:
        print("classes:", ", ".join(f"{i}:{c}" for i, c in enumerate(ds.classes)))
    return 0


def _map(args: argparse.Namespace) -> int:
    import dataclasses

    from clipgs.data.dataset import open_dataset
    from clipgs.data.rosbag_io import BagReplay, is_bag
    from clipgs.mapping import save_ply
    from clipgs.mapping.offline import map_frames
    from clipgs.mapping.ply import check_writable
    from clipgs.parameters import Parameters

    params = Parameters.from_yaml(args.config)
    config, training = params.mapper, params.training
    check_writable(args.out)  # before mapping: a run must not be lost to a bad output path
    stack, notes = None, {}
    unreadable = Counter()
    if is_bag(args.data):
        if args.semantics == "simulated":
            raise ValueError("the simulated teacher needs a synthetic dataset folder, not a bag")
        replay = BagReplay(args.data, Parameters.from_yaml(args.topics).stream)
        print(f"ROS bag '{args.data}': colour {replay.settings.color_topic}, depth {replay.settings.depth_topic}, "
              f"poses from {replay.settings.pose_topic or 'tf (' + replay.settings.map_frame + ')'}")
        frames, total, classes = replay.frames(), None, None
    else:
        ds = open_dataset(args.data)
        print(ds.summary())
        indices = ds.train_indices[:args.max_frames] if args.max_frames else ds.train_indices
        frames, total, classes = ds.readable_frames(indices, unreadable), len(indices), ds.classes
    if args.semantics == "simulated":
        from clipgs.semantics.factory import SemanticStack
        from clipgs.semantics.pipeline import simulated_setup
        from clipgs.semantics.sources import TeacherCorruption

        corruption = TeacherCorruption(wrong_fraction=args.wrong_fraction)
        teacher, text, vocab = simulated_setup(ds, args.text_model, corruption)
        stack = SemanticStack(teacher, text, list(ds.classes), vocab,
                              f"simulated teacher ({corruption.describe()}), text model {args.text_model}")
        notes["teacher"] = dataclasses.asdict(corruption)
    elif args.semantics != "none":
        from clipgs.semantics.factory import build_semantics

        stack = build_semantics(_semantic_settings(args), classes)
    trainer = None
    if stack is not None:
        trainer = stack.trainer(training)
        print(f"semantics: {stack.description}, d={training.sem_dim}, {len(stack.classes) - 1} classes, "
              f"3DCS {'on' if training.dcs_every else 'off'}")
    mapper, summary = map_frames(frames, config, total, refine_iters=args.refine, max_frames=args.max_frames,
                                 trainer=trainer, device=params.node.device, skipped=unreadable)
    if summary["interrupted"]:
        print(f"interrupted: saving the map of the {summary['frames']} frames mapped so far")
    if is_bag(args.data):
        problems = {k: v for k, v in replay.errors.items() if v}
        if problems:
            print("bag messages not used:", ", ".join(f"{k}: {v}" for k, v in problems.items()))
    snap = mapper.snapshot()
    path = save_ply(snap.gaussians, args.out)
    if stack is not None and snap.decoder is not None:
        from clipgs.semantics.model import save_semantics

        notes.update({"dcs_every": training.dcs_every, "source": args.semantics})
        print(f"semantic model written to {save_semantics(stack.model(snap.decoder, notes), args.out)}")
    print(f"mapped {summary['frames']} frames: {summary['keyframes']} keyframes, {summary['gaussians']} Gaussians, "
          f"{summary['seconds']:.1f} s ({summary['frames_per_s']:.2f} frames/s, "
          f"{summary['keyframes_per_s']:.3f} keyframes/s, {summary['seconds_per_iteration'] * 1e3:.0f} ms/iteration), "
          f"peak RSS {summary['peak_rss_mb']:.0f} MB")
    if summary["rejected"]:
        print("rejected frames:", ", ".join(f"{k}: {v}" for k, v in summary["rejected"].items()))
    failures = snap.trainer_counters.get("semantic_failures", {})
    if failures:
        print(f"keyframes mapped without semantics (the 2D source failed): {sum(failures.values())}; "
              + "; ".join(f"{k} ({v}x)" for k, v in list(failures.items())[:3]))
    print(f"map written to {path}")
    return 0


def _int_at_least(low: int, meaning: str):
    def parse(text: str) -> int:
        if int(text) < low:
            raise argparse.ArgumentTypeError(f"must be {meaning} (at least {low}), got {text}")
        return int(text)
    return parse


def _export_bag(args: argparse.Namespace) -> int:
    from clipgs.data.dataset import open_dataset
    from clipgs.data.rosbag_io import export_bag
    from clipgs.parameters import Parameters

    ds = open_dataset(args.data)
    indices = ds.train_indices if args.train_only else None
    settings = Parameters.from_yaml(args.topics).stream
    out = export_bag(ds, args.out, indices=indices, settings=settings, fps=args.fps)
    print(f"wrote {len(indices) if indices else len(ds)} frames to the MCAP bag {out} "
          f"({settings.color_topic}, {settings.depth_topic}, {settings.camera_info_topic}, /tf, /tf_static)")
    return 0


def _semantic_settings(args: argparse.Namespace):
    from clipgs.semantics.factory import SemanticSettings

    return SemanticSettings(
        semantic_source=args.semantics, clip_model=args.text_model, clip_weights=str(args.clip_weights or ""),
        sam_model=args.sam_model, sam_weights=str(args.sam_weights or ""), sam_points_per_side=args.sam_points,
        semantics_dir=str(getattr(args, "semantics_dir", None) or ""))


def _extract(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from clipgs.data.dataset import open_dataset
    from clipgs.semantics.clip_sources import write_precomputed
    from clipgs.semantics.factory import build_semantics

    ds = open_dataset(args.data)
    args.semantics = args.source
    source = build_semantics(_semantic_settings(args), ds.classes).source
    for i in tqdm(ds.train_indices, desc=f"extract {args.source}", unit="frame"):
        write_precomputed(source(ds[i]), args.out, i)
    print(f"wrote masks + embeddings of {len(ds.train_indices)} training frames to {args.out}; map with "
          f"clipgs map {args.data} --semantics precomputed --semantics-dir {args.out} --text-model {args.text_model}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    import json

    from clipgs.data.dataset import open_dataset
    from clipgs.eval.evaluate import evaluate
    from clipgs.mapping import load_ply

    if args.true_poses and not (args.data / "gt_traj_w_c.txt").is_file():
        raise ValueError(f"--true-poses: {args.data} has no gt_traj_w_c.txt (scenes with odometry drift carry one)")
    gmap = load_ply(args.map)
    ds = open_dataset(args.data, **({"trajectory": "gt_traj_w_c.txt"} if args.true_poses else {}))
    result = evaluate(gmap, ds, backend=args.backend)
    if args.semantic:
        result["semantic"] = _semantic_eval(gmap, args.map, ds, args.json)
    print(f"held-out views: {result['views']} at {result['resolution']}, {result['gaussians']} Gaussians")
    print(f"PSNR {result['psnr_db']:.2f} dB | depth L1 {result['depth_l1_m']:.4f} m | "
          f"render {result['render_ms']:.1f} ms ({result['render_fps']:.1f} FPS, {result['backend']} backend)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def _semantic_eval(gmap, map_path: Path, ds, json_path: Path | None) -> dict:
    from clipgs.mapping.ply import MapFileError
    from clipgs.semantics.model import load_semantics
    from clipgs.semantics.pipeline import evaluate_semantics
    from clipgs.semantics.sources import SimulatedTeacher, TeacherCorruption

    model = load_semantics(map_path, gmap)
    if model is None:
        raise MapFileError(f"{map_path}: no semantic model beside it; map with --semantics to get one")
    teacher = None
    if "teacher" in model.notes and ds[0].instances is not None:
        teacher = SimulatedTeacher(model.vocabulary_embeddings, TeacherCorruption(**model.notes["teacher"]))
    panels = (json_path.parent if json_path else map_path.parent) / "semantic_panels"
    sem = evaluate_semantics(gmap, model, ds, teacher, panels_dir=panels)
    line = f"semantic (held-out, {sem['views']} views): map mIoU {100 * sem['map_miou']:.1f}, pixel acc " \
           f"{100 * sem['map_pixel_acc']:.1f}"
    if teacher is not None:
        line += (f" | 2D teacher mIoU {100 * sem['teacher_miou']:.1f}, pixel acc {100 * sem['teacher_pixel_acc']:.1f}"
                 f" ({teacher.corruption.describe()})")
    print(line + f" | semantic render {sem['semantic_render_fps']:.1f} FPS")
    print(f"panels (ground truth | teacher | map): {panels}")
    return sem


def _query(args: argparse.Namespace) -> int:

    from clipgs.data.dataset import open_dataset
    from clipgs.data.images import to_uint8
    from clipgs.mapping import load_ply
    from clipgs.mapping.ply import MapFileError
    from clipgs.semantics.model import load_semantics
    from clipgs.semantics.query import CANONICAL_NEGATIVES, describe_instances, query_map, write_query_images
    from clipgs.semantics.text import TextEncoder

    if not args.label.strip():
        raise ValueError("empty query: give an object name such as 'chair'")
    gmap = load_ply(args.map)
    model = load_semantics(args.map, gmap)
    if model is None:
        raise MapFileError(f"{args.map}: no semantic model beside it; map with --semantics to get one")
    text = TextEncoder.from_identity(model.text_encoder)
    label = args.label.strip()
    negative_names = ([c for c in model.vocabulary[1:] if c != label] if args.negatives == "vocabulary"
                      else list(CANONICAL_NEGATIVES))
    camera = None
    if args.data is not None:
        camera = open_dataset(args.data)[args.view].camera
    answer = query_map(gmap, model.decoder, text.encode([label])[0], text.encode(negative_names), camera)
    if camera is not None:
        rgb = to_uint8(gmap.render(camera, semantic=False).image.detach().clamp(0, 1).numpy())
        write_query_images(answer, args.out, rgb)
        print(f"'{label}': {int(answer.mask.sum())} pixels, score {answer.score:.2f}; wrote {args.out}/mask.png, "
              f"relevancy.png, overlay.png")
    if answer.centroid is None:
        print(f"'{label}': no Gaussians above the relevancy threshold")
    else:
        print(f"3D: {int(answer.selected.sum())} Gaussians (metres, map frame), {describe_instances(answer.instances)}")
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


def _params(args: argparse.Namespace) -> int:
    from clipgs.parameters import params_file_text

    text = params_file_text()
    if args.out is None:
        print(text, end="")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote every parameter with its default and help to {args.out}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from clipgs.demo import run_demo

    run_demo(args.out)
    return 0


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
    p.add_argument("--noise", choices=["none", "realistic"], default="none",
                   help="realistic: structured-light depth noise, dropouts, invalid edges, 4 m range, exposure and "
                        "pixel noise, odometry drift in traj_w_c.txt (true poses in gt_traj_w_c.txt)")
    p.set_defaults(func=_synth)

    p = sub.add_parser("info", help="summarise a dataset folder (Replica, ScanNet, TUM, synthetic)")
    p.add_argument("data", type=Path)
    p.set_defaults(func=_info)

    p = sub.add_parser("map", help="map a dataset's training frames (or a ROS bag) in stream order into a PLY map")
    p.add_argument("data", type=Path, help="dataset folder (synthetic, Replica, ScanNet, TUM) or ROS bag")
    p.add_argument("--topics", type=Path, default=None,
                   help="bag topics/frames YAML (e.g. config/mapping.yaml, the node's params file)")
    p.add_argument("--out", type=Path, required=True, help="output map, e.g. map.ply")
    p.add_argument("--config", type=Path, default=None,
                   help="settings YAML, flat or the ROS params layout (clipgs params writes one with every key)")
    p.add_argument("--max-frames", type=_int_at_least(1, "a count"), help="stop after this many training frames")
    p.add_argument("--refine", type=int, default=0, help="extra iterations over all keyframes at the end")
    p.add_argument("--semantics", choices=[*SOURCE_HELP, "simulated"], default="none",
                   help="2D supervision: " + "; ".join(f"{k}: {v}" for k, v in SOURCE_HELP.items())
                        + "; simulated: a teacher made from a synthetic scene's ground truth")
    p.add_argument("--semantics-dir", type=Path, default=None, help="folder written by clipgs extract")
    _add_model_arguments(p)
    p.add_argument("--wrong-fraction", type=float, default=0.3, help="simulated teacher: masks with a wrong class")
    p.set_defaults(func=_map)

    p = sub.add_parser("extract", help="run a 2D semantic source once and store masks + embeddings per frame")
    p.add_argument("data", type=Path)
    p.add_argument("--source", choices=[s for s in SOURCE_HELP if s not in ("none", "precomputed")],
                   default="clip_fast")
    p.add_argument("--out", type=Path, required=True)
    _add_model_arguments(p)
    p.set_defaults(func=_extract)

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
    p.add_argument("--backend", default="auto", choices=BACKENDS)
    p.add_argument("--semantic", action="store_true", help="also mIoU / pixel accuracy of the map and the teacher")
    p.add_argument("--true-poses", action="store_true",
                   help="render the held-out views from gt_traj_w_c.txt (a scene with odometry drift)")
    p.set_defaults(func=_eval)

    p = sub.add_parser("query", help="text query on a semantic map: mask in a view and the object's 3D box")
    p.add_argument("map", type=Path)
    p.add_argument("label", help="e.g. chair")
    p.add_argument("--data", type=Path, default=None, help="dataset whose view to render the mask in")
    p.add_argument("--view", type=_int_at_least(0, "a frame index"), default=0)
    p.add_argument("--out", type=Path, default=Path("query_out"))
    p.add_argument("--negatives", choices=["canonical", "vocabulary"], default="vocabulary",
                   help="relevancy against 'object, things, stuff, texture' or the map's other class names")
    p.set_defaults(func=_query)

    p = sub.add_parser("render", help="render a map at a dataset view and write PNGs")
    p.add_argument("map", type=Path)
    p.add_argument("data", type=Path)
    p.add_argument("--view", type=_int_at_least(0, "a frame index"), required=True, help="frame index in the dataset")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--backend", default="auto", choices=BACKENDS)
    p.set_defaults(func=_render)

    p = sub.add_parser("params", help="write the ROS 2 params file with every setting, its default and help")
    p.add_argument("--out", type=Path, default=None, help="file to write (default: print)")
    p.set_defaults(func=_params)

    p = sub.add_parser("demo", help="synthetic scene -> Gaussian map -> rendered held-out view")
    p.add_argument("--out", type=Path, default=Path("demo_out"))
    p.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Exit 0 on success, 2 on bad input (one line), 1 on an unexpected failure (one line; ``CLIPGS_DEBUG=1``
    prints the traceback), 130 on Ctrl-C."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, IndexError) as exc:  # bad input: one clear line, no traceback
        print(f"clipgs {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"clipgs {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # unreadable files, OS errors, a broken model file ...: still one line
        if os.environ.get("CLIPGS_DEBUG"):
            raise
        detail = str(exc).splitlines()[0][:300] if str(exc) else ""
        print(f"clipgs {args.command}: error: {type(exc).__name__}: {detail} (CLIPGS_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
