"""``clipgs`` commands that read datasets and bags: synth, info, map, export-bag, extract, eval."""
from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path


def run_synth(args: argparse.Namespace) -> int:
    from clipgs.data.synthetic import generate_scene
    from clipgs.data.synthetic.scenes import SCENE_DEFAULTS

    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        if not (args.overwrite and (args.out / "scene.json").is_file()):
            why = ("--overwrite replaces only a dataset clipgs synth wrote (it has scene.json)" if args.overwrite
                   else "choose a new one, or --overwrite to replace an earlier clipgs synth dataset")
            raise ValueError(f"--out {args.out} exists and is not an empty folder; {why} (nothing was written)")
        import shutil

        shutil.rmtree(args.out)
        print(f"removed the earlier synthetic dataset in {args.out}")

    defaults = SCENE_DEFAULTS.get(args.scene, SCENE_DEFAULTS["room"])  # an unknown scene fails in generate_scene
    frames, width, height = (given or default for given, default in zip((args.frames, args.width, args.height),
                                                                         defaults))
    start = time.perf_counter()
    out = generate_scene(args.out, scene=args.scene, seed=args.seed, n_frames=frames, width=width, height=height,
                         hfov_deg=args.hfov, noise=args.noise, workers=args.workers)
    seconds = time.perf_counter() - start
    print(f"wrote {frames} frames of '{args.scene}' at {width}x{height} (seed {args.seed}, noise {args.noise}) "
          f"to {out} in {seconds:.1f} s ({frames / seconds:.1f} frames/s)")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from clipgs.data.dataset import open_dataset

    ds = open_dataset(args.data)
    print(ds.summary())
    if ds.classes:
        print("classes:", ", ".join(f"{i}:{c}" for i, c in enumerate(ds.classes)))
    return 0


def run_map(args: argparse.Namespace) -> int:

    from clipgs.data.dataset import open_dataset
    from clipgs.data.rosbag_io import BagReplay, is_bag
    from clipgs.mapping import save_ply
    from clipgs.mapping.offline import keyframe_time_breakdown, map_frames
    from clipgs.mapping.ply import check_writable
    from clipgs.mapping.trajectory import save_trajectory, trajectory_path
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
        config = config.resolved(replay.settings.poses_from_odometry)
    else:
        ds = open_dataset(args.data)
        print(ds.summary())
        indices = ds.train_indices[:args.max_frames] if args.max_frames else ds.train_indices
        frames, total, classes = ds.readable_frames(indices, unreadable, args.strict), len(indices), ds.classes
        config = config.resolved(ds.poses_from_odometry)
    if args.semantics == "simulated":
        from clipgs.semantics.factory import SemanticStack
        from clipgs.semantics.pipeline import default_corruption, simulated_setup, teacher_notes

        corruption = default_corruption(args.teacher, wrong_fraction=args.wrong_fraction)
        teacher, text, vocab = simulated_setup(ds, args.text_model, corruption)
        stack = SemanticStack(teacher, text, list(ds.classes), vocab,
                              f"simulated teacher ({corruption.describe()}), text model {args.text_model}")
        notes["teacher"] = teacher_notes(corruption)
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
    trajectory = save_trajectory(mapper.keyframes.trajectory, trajectory_path(path))
    if stack is not None and snap.decoder is not None:
        from clipgs.semantics.model import save_semantics

        notes.update({"dcs_every": training.dcs_every, "source": args.semantics})
        print(f"semantic model written to {save_semantics(stack.model(snap.decoder, notes), args.out)}")
    else:
        from clipgs.semantics.model import semantics_path

        if semantics_path(args.out).is_file():  # it decoded the map this run replaced
            semantics_path(args.out).unlink()
            print(f"removed the old {semantics_path(args.out).name}: it belonged to the map this run replaced")
    print(f"mapped {summary['frames']} frames: {summary['keyframes']} keyframes, {summary['gaussians']} Gaussians, "
          f"{summary['mapping_seconds']:.1f} s ({summary['frames_per_s']:.2f} frames/s, "
          f"{summary['keyframes_per_s']:.3f} keyframes/s, {summary['seconds_per_iteration'] * 1e3:.0f} ms/iteration) "
          f"+ {summary['finish_seconds']:.1f} s finishing, peak RSS {summary['peak_rss_mb']:.0f} MB")
    print(keyframe_time_breakdown(summary))
    given, mapped = mapper.last_input_camera, mapper.keyframes[-1].camera if len(mapper.keyframes) else None
    if given is not None and mapped is not None and mapped.width != given.width:
        print(f"{given.width}x{given.height} frames mapped at {mapped.width}x{mapped.height} (map_width, or "
              f"max_map_width / cpu_map_width / cpu_semantic_map_width when it is 0); renders and queries answer at "
              "any size")
    print(f"keyframe trajectory written to {trajectory} (clipgs eval --true-poses scores it)")
    if summary["poses_refined"] or summary["frames_tracked"]:
        print(f"poses refined: {summary['poses_refined']} keyframes against the nearest keyframes, "
              f"{summary['frames_tracked']} frames against the previous one ({summary['frames_not_tracked']} could "
              f"not be paired); odometry drift corrected by the end: {summary['drift_correction'][0] * 100:.1f} cm, "
              f"{summary['drift_correction'][1]:.2f} deg")
    if summary["rejected"]:
        print("rejected frames:", ", ".join(f"{k}: {v}" for k, v in summary["rejected"].items()))
    if snap.trainer_counters.get("decoder_refit") is not None:
        print(f"decoder refit (refit_steps): {snap.trainer_counters['decoder_refit']}")
    failures = snap.trainer_counters.get("semantic_failures", {})
    if failures:
        print(f"keyframes mapped without semantics (the 2D source failed): {sum(failures.values())}; "
              + "; ".join(f"{k} ({v}x)" for k, v in list(failures.items())[:3]))
    print(f"map written to {path}")
    return 0


def run_export_bag(args: argparse.Namespace) -> int:
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


def run_extract(args: argparse.Namespace) -> int:
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


def run_eval(args: argparse.Namespace) -> int:
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
    if args.true_poses:
        result.update(_trajectory_eval(gmap, args.map, ds, args.backend))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def _trajectory_eval(gmap, map_path: Path, ds, backend: str) -> dict:
    """The keyframe trajectory beside the map against the dataset's true poses, and the held-out views again
    at the true poses rigidly aligned onto it (what the map scores wherever its frame sits); {} without one."""
    import numpy as np

    from clipgs.eval.evaluate import evaluate
    from clipgs.mapping.trajectory import load_trajectory, trajectory_errors, trajectory_path

    path = trajectory_path(map_path)
    if not path.is_file():
        print(f"no keyframe trajectory beside the map ({path.name}; clipgs map writes one): trajectory not scored")
        return {}
    poses = [p for p in load_trajectory(path) if 0 <= p.index < len(ds)]
    if not poses:
        raise ValueError(f"{path}: no keyframe index within the dataset's {len(ds)} frames (another dataset's map?)")
    err = trajectory_errors(np.stack([p.world_from_camera for p in poses]),
                            np.stack([ds.camera_at(p.index).world_from_camera for p in poses]))
    aligned = evaluate(gmap, ds, backend=backend, world_from_dataset=err["map_from_true"], progress=False)
    print(f"keyframe trajectory ({err['keyframes']} keyframes) against the true poses: ATE "
          f"{100 * err['ate_m']:.2f} cm, rotation {err['rotation_deg']:.2f} deg RMS; rigidly aligned (TUM protocol): "
          f"{100 * err['aligned_ate_m']:.2f} cm, {err['aligned_rotation_deg']:.2f} deg")
    print(f"held-out views at the aligned true poses: PSNR {aligned['psnr_db']:.2f} dB | depth L1 "
          f"{aligned['depth_l1_m']:.4f} m")
    err["map_from_true"] = err["map_from_true"].tolist()
    return {"trajectory": err, "aligned": {k: aligned[k] for k in ("psnr_db", "depth_l1_m", "per_view")}}


def _semantic_eval(gmap, map_path: Path, ds, json_path: Path | None) -> dict:
    from clipgs.mapping.ply import MapFileError
    from clipgs.semantics.model import load_semantics
    from clipgs.semantics.pipeline import evaluate_semantics, teacher_from_notes

    model = load_semantics(map_path, gmap)
    if model is None:
        raise MapFileError(f"{map_path}: no semantic model beside it; map with --semantics to get one")
    teacher = None
    if "teacher" in model.notes and ds[0].instances is not None:
        teacher = teacher_from_notes(model.notes["teacher"], model.vocabulary_embeddings, model.vocabulary)
    panels = (json_path.parent if json_path else map_path.parent) / "semantic_panels"
    sem = evaluate_semantics(gmap, model, ds, teacher, panels_dir=panels)
    line = f"semantic (held-out, {sem['views']} views): map mIoU {100 * sem['map_miou']:.1f}, pixel acc " \
           f"{100 * sem['map_pixel_acc']:.1f} (per pixel, not by segment: {100 * sem['map_pixelwise_miou']:.1f} / " \
           f"{100 * sem['map_pixelwise_pixel_acc']:.1f})"
    if teacher is not None:
        line += (f" | 2D teacher mIoU {100 * sem['teacher_miou']:.1f}, pixel acc {100 * sem['teacher_pixel_acc']:.1f}"
                 f" ({teacher.corruption.describe()})")
    print(line + f" | semantic render {sem['semantic_render_fps']:.1f} FPS")
    if ds[0].instances is not None:
        from clipgs.semantics.query_metrics import score_queries
        from clipgs.semantics.text import TextEncoder

        q = score_queries(gmap, model, ds, TextEncoder.from_identity(model.text_encoder)).summary()
        sem["queries"] = q
        print(f"queries (each class name, other names as negatives): 2D per-query mIoU {100 * q['query_miou']:.1f}, "
              f"localisation {100 * q['localisation_acc']:.1f} % ({q['classes_2d']} classes); 3D precision "
              f"{q['precision_3d']:.2f}, recall {q['recall_3d']:.2f} ({q['objects_3d']} objects, centroid within "
              f"0.3 m), median centroid error {q['median_error_m']:.3f} m")
    print(f"panels (ground truth | teacher | map): {panels}")
    return sem
