"""Semantic mapping benchmark on the default synthetic room (or the apartment, or pybullet) with the simulated teacher.

Prints, on held-out views (never trained on):
1. mIoU / pixel accuracy of the 2D teacher and of the map for the ablation ladder (SAC only; + 3D label
   fusion; + 3DCS on keyframes; + 3DCS novel views; + the paper-v2 KNN 3D term), mean and spread over seeds (each seed
   changes the teacher's mistakes and the mapper's sampling);
2. the text-query IoU per class name against ground truth (default configuration, first seed), and 3D
   localisation: each object class's query split into 3D instances, matched to the ground-truth instances
   (centroid within 0.3 m);
3. SAC attribute size d against full-D features (no decoder): mIoU, and semantic render time (render the
   attributes, decode to the embedding space) at 160x120 and 640x480, with D = 512 (ViT-B/16's width)
   timed on the same geometry.

    .venv/bin/python benchmarks/semantics.py [--seeds 0 1 2] [--dims 3 8 16 32] [--wrong-fraction 0.3]
    .venv/bin/python benchmarks/semantics.py --scene apartment --teachers realistic --rows 3 --dims 16
        # the four-room apartment (1500 frames, realistic noise; generated on first use, ~2 min), true poses,
        # scored at 160x120, mapped offline from every 16th training frame (--frame-step)
    .venv/bin/python benchmarks/semantics.py --scene pybullet --teachers realistic --rows 0 3 --dims 16
        # the pybullet room of ../shared/scenes (made outside clipgs), at its true poses
    .venv/bin/python benchmarks/semantics.py --map demo_out/map.ply   # tables 2b and 3 only, no mapping
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from clipgs.data.dataset import open_dataset
from clipgs.data.frame import Camera
from clipgs.demo import DEMO_SCENE, ensure_scene
from clipgs.errors import SettingsError
from clipgs.geometry import scale_intrinsics
from clipgs.mapping import load_ply, save_ply
from clipgs.mapping.config import MapperConfig
from clipgs.mapping.offline import map_dataset
from clipgs.semantics.config import SemanticTrainingConfig
from clipgs.semantics.model import SemanticModel, load_semantics, save_semantics
from clipgs.semantics.pipeline import default_corruption, evaluate_semantics, simulated_setup
from clipgs.semantics.query_metrics import (
    consensus_localisation,
    consensus_objects_3d,
    consensus_scores,
    labels_through_map,
    map_object_classes,
    nearest_instances,
    object_points,
    score_queries,
    teacher_consensus,
)
from clipgs.semantics.sac import SemanticDecoder
from clipgs.semantics.sources import STUFF
from clipgs.semantics.text import TextEncoder
from clipgs.semantics.trainer import SemanticTrainer
from clipgs.settings import split_overrides

LADDER = [
    (f"SAC d={SemanticTrainingConfig().sem_dim}, no 3DCS", {"dcs_every": 0, "dcs_novel_views": 0}),
    ("+ 3D label fusion, no 3DCS", {"dcs_every": 0, "dcs_novel_views": 0, "w_fused": 0.5}),
    ("+ 3DCS on keyframes", {"dcs_novel_views": 0}),
    ("+ 3DCS novel views", {"dcs_novel_views": 1}),
    ("3DCS novel views + 3D label fusion", {"dcs_novel_views": 1, "w_fused": 0.5}),
    ("+ KNN 3D term (paper v2)", {"dcs_novel_views": 1, "w_sem_knn": 0.1}),
    ("3DCS novel views, whole masks vote", {"dcs_novel_views": 1, "dcs_split_masks": False}),
]
DEFAULT_ROW = "+ 3DCS novel views"  # SemanticTrainingConfig's defaults; the query and d tables use it


APARTMENT = {"scene": "apartment", "seed": 0, "n_frames": 1500, "width": 320, "height": 240, "noise": "realistic"}
SCENES = {"room": (DEMO_SCENE, "clipgs_bench_demo_room", 1), "apartment": (APARTMENT, "clipgs_bench_long/"
          "apartment_1500_320x240_realistic", 16),  # settings, folder under the temp dir, default frame step
          "pybullet": (None, Path(__file__).resolve().parents[2] / "shared/scenes/pybullet_room_s100", 1)}
# pybullet: a scene made outside clipgs (no settings: read as it is), beside the checkout


def open_scene(name: str, folder: Path | None, frames: int = 0, size: str = ""):
    """The benchmark's dataset: the room as generated, or the apartment at its true poses scored at most 160
    wide (its semantic maps are 160 wide on a CPU), generated into ``folder`` (default: under the temp dir) with
    ``frames`` and ``size`` (WxH) in place of the scene's own when given; or the pybullet room (made outside
    clipgs: textures, sensor noise) read from ``folder`` (default: ../shared/scenes) at its true poses."""
    settings, default_folder, _ = SCENES[name]
    if settings is None:
        root = folder or default_folder
        if frames or size:
            raise SystemExit(f"--frames / --size: the {name} scene is read as it is, not generated")
        if not (root / "gt_traj_w_c.txt").is_file():
            raise SystemExit(f"{root}: no {name} scene there (its true poses, gt_traj_w_c.txt, are missing); "
                             "give its folder with --scene-dir")
        return open_dataset(root, trajectory="gt_traj_w_c.txt")
    settings = {**settings, **({"n_frames": frames} if frames else {})}
    if size:
        settings["width"], settings["height"] = (int(v) for v in size.split("x"))
    root = ensure_scene(folder or Path(tempfile.gettempdir()) / default_folder, **settings)
    if name == "room":
        return open_dataset(root)
    scale = min(1.0, 160 / settings["width"])
    return open_dataset(root, trajectory="gt_traj_w_c.txt",
                        size=(round(settings["width"] * scale), round(settings["height"] * scale)))


def run(ds, text, vocab, kind: str, wrong: float, seed: int, frame_step: int = 1, mapping: dict | None = None,
        **training):
    """Map every ``frame_step``-th training frame of the scene with a simulated teacher (``kind`` realistic or
    uniform; ``mapping``: MapperConfig overrides, ``training``: SemanticTrainingConfig overrides); returns (map,
    semantic model, evaluation, seconds)."""
    teacher = simulated_setup(ds, text.model_name, default_corruption(kind, seed, wrong))[0]
    trainer = SemanticTrainer(SemanticTrainingConfig(**training), teacher, vocab)
    t0 = time.perf_counter()
    mapper, _ = map_dataset(ds, MapperConfig(seed=seed, **(mapping or {})), progress=False, trainer=trainer,
                            frame_step=frame_step)
    seconds = time.perf_counter() - t0
    snap = mapper.snapshot()
    model = SemanticModel(snap.decoder, text.identity, list(ds.classes), vocab)
    return snap.gaussians, model, evaluate_semantics(snap.gaussians, model, ds, teacher), seconds


@functools.cache
def seed_consensus(ds, text, vocab, kind: str, seed: int, wrong: float) -> dict[int, int]:
    """Object id -> the class one seed's teacher reads it as over every training view (``teacher_consensus``),
    computed once per run (the consensus row and the query tables both need it; on the apartment it runs the
    teacher over 1350 frames)."""
    teacher = simulated_setup(ds, text.model_name, default_corruption(kind, seed, wrong))[0]
    return teacher_consensus(ds, teacher, vocab)


def consensus_row(ds, text, vocab, kind: str, seeds: list[int], wrong: float) -> str:
    """The table row of the teacher's consensus: every object labelled with the class its mask embeddings, summed
    over all training views, read as (``consensus_scores``): what voting the teacher's views per object gives. Not
    a bound: a leaning object's sum sits near a tie between its class and its partner, which a map can break
    either way, and on the room the map scores above it."""
    scores = [consensus_scores(ds, seed_consensus(ds, text, vocab, kind, seed, wrong)) for seed in seeds]
    return (f"| teacher's consensus per object (mask embeddings summed over all views) | {kind} | "
            f"{mean_spread([m for m, _ in scores])} | {mean_spread([a for _, a in scores])} | - | - |")


def print_queries(gmap, model, ds, text, what: str, coherent: bool = False, consensus: dict | None = None,
                  table: bool = True, objects_seen: tuple | None = None) -> dict:
    """The field-standard query table (clipgs.semantics.query_metrics), per class and overall (``table``);
    with the teacher's ``consensus`` (:func:`seed_consensus`), how many objects the map and that consensus read
    as their class (keys consensus_objects, map_objects of the returned summary), and what the consensus scores
    (consensus_*, truth_through_map); ``objects_seen``: ``object_points(ds)`` if already at hand."""
    objects_seen = objects_seen or object_points(ds)  # read once for the 3D scores and the consensus
    scores = score_queries(gmap, model, ds, text, coherent=coherent, objects=objects_seen)
    s = scores.summary()
    if consensus is not None:
        points, owner = objects_seen
        objects = [k for k in points if ds.classes[owner[k]] not in STUFF]
        mapped = map_object_classes(gmap, model.decoder, model.vocabulary_embeddings, points)
        s["consensus_objects"] = sum(consensus.get(k) == owner[k] for k in objects)
        s["consensus_localisation"] = consensus_localisation(ds, consensus)
        s["consensus_precision_3d"], s["consensus_recall_3d"] = consensus_objects_3d(points, owner, consensus,
                                                                                     list(ds.classes))
        s["consensus_miou"] = consensus_scores(ds, consensus)[0]
        instances = nearest_instances(gmap, points)
        s["consensus_through_map"] = labels_through_map(gmap, ds, instances, consensus)
        s["truth_through_map"] = labels_through_map(gmap, ds, instances, owner)
        s["map_objects"] = sum(mapped[k] == owner[k] for k in objects)
        wrong = [f"{ds.classes[owner[k]]} as {ds.classes[consensus.get(k, 0)]} / {ds.classes[mapped[k]]}"
                 for k in objects if consensus.get(k) != owner[k] or mapped[k] != owner[k]]
        s["misread"] = ", ".join(wrong) or "none"
    if not table:
        return s
    print(f"| query ({what}) | 2D IoU | localisation | 3D objects | returned | matched | error m |")
    print("|---|---|---|---|---|---|---|")
    for name in scores.iou:
        n3 = scores.present.get(name)
        errs = scores.errors.get(name, [])
        cells = (f"{n3} | {scores.returned[name]} | {len(errs)} | {np.median(errs):.3f}" if n3 and errs else
                 f"{n3} | {scores.returned[name]} | 0 | -" if n3 else "- | - | - | -")
        print(f"| {name} | {np.mean(scores.iou[name]):.2f} | {np.mean(scores.hits[name]):.2f} | {cells} |")
    print(f"| all | {s['query_miou']:.2f} | {s['localisation_acc']:.2f} | {s['objects_3d']} | precision "
          f"{s['precision_3d']:.2f} | recall {s['recall_3d']:.2f} | median {s['median_error_m']:.3f} |\n", flush=True)
    return s


def print_query_seeds(results: list[tuple], ds, text, vocab, kind: str, seeds: list[int], wrong: float) -> None:
    """Query scores of every seed's map (the first seed's per class), and how many objects the teacher's
    consensus over all views and the map read as their class: no fusion of a teacher's views can return an
    object its consensus misreads, so that count bounds 3D recall; and the localisation accuracy of labelling
    every object with its consensus class (``consensus_localisation``), what such a fusion would find in 2D;
    then the map's mIoU beside that fusion's and the true classes' through the map's own geometry
    (``labels_through_map``)."""
    rows, seen = [], object_points(ds)
    for seed, (gmap, model, _, _) in zip(seeds, results, strict=True):
        rows.append(print_queries(gmap, model, ds, text, f"{DEFAULT_ROW}, {kind} teacher, seed {seed}",
                                  consensus=seed_consensus(ds, text, vocab, kind, seed, wrong),
                                  table=seed == seeds[0], objects_seen=seen))
    print(f"| queries, {kind} teacher | localisation: map / teacher's consensus | query mIoU | 3D precision: map / "
          "consensus | 3D recall: map / consensus | objects read right: teacher consensus / map | misread "
          "(consensus / map) |")
    print("|---|---|---|---|---|---|---|")
    n = rows[0]["objects_3d"]
    for seed, r in zip(seeds, rows, strict=True):
        print(f"| seed {seed} | {r['localisation_acc']:.2f} / {r['consensus_localisation']:.2f} | "
              f"{r['query_miou']:.2f} | {r['precision_3d']:.2f} / {r['consensus_precision_3d']:.2f} | "
              f"{r['recall_3d']:.2f} / {r['consensus_recall_3d']:.2f} | "
              f"{r['consensus_objects']} / {r['map_objects']} of {n} | {r['misread']} |")
    mean = lambda key: np.mean([r[key] for r in rows])  # noqa: E731
    print(f"| mean | {mean('localisation_acc'):.2f} / {mean('consensus_localisation'):.2f} | "
          f"{mean('query_miou'):.2f} | {mean('precision_3d'):.2f} / {mean('consensus_precision_3d'):.2f} | "
          f"{mean('recall_3d'):.2f} / {mean('consensus_recall_3d'):.2f} | "
          f"{mean('consensus_objects') / n:.2f} / {mean('map_objects') / n:.2f} | |\n",
          flush=True)
    print(f"| mIoU, {kind} teacher | map | teacher's consensus per object, through the map's geometry | true classes, "
          "through the map's geometry | teacher's consensus on the ground-truth masks |")
    print("|---|---|---|---|---|")
    for seed, r, (_, _, ev, _) in zip(seeds, rows, results, strict=True):
        print(f"| seed {seed} | {100 * ev['map_miou']:.1f} | {100 * r['consensus_through_map']:.1f} | "
              f"{100 * r['truth_through_map']:.1f} | {100 * r['consensus_miou']:.1f} |")
    print("(each Gaussian carries the class of the ground-truth object nearest to it, composited one-hot and "
          "scored as the map: what fusing the teacher's views per object, or knowing every object, would score "
          "with this map's geometry)\n", flush=True)


@torch.no_grad()
def semantic_render_ms(gmap, channels: int, decoder: SemanticDecoder, camera: Camera, classes: int = 16,
                       full_decode: bool = False, repeats: int = 5) -> float:
    """Median ms to render 3 + ``channels`` channels and turn every pixel into a class label over ``classes``
    text embeddings (what ~/semantic_image and the evaluation do); ``full_decode``: decode every pixel to
    the D-dim embedding first and take dot products (the naive way)."""
    g = torch.Generator().manual_seed(0)
    trial = dataclasses.replace(gmap, semantics=torch.randn(len(gmap), channels, generator=g))
    text = torch.nn.functional.normalize(torch.randn(classes, decoder.embed_dim, generator=g), dim=-1)
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        out = trial.render(camera)
        if full_decode:
            (decoder(out.semantics) @ text.T).argmax(-1)
        else:
            decoder.similarity(out.semantics, text, unnormalised=True).argmax(-1)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times[1:]))


def timing_cameras(ds) -> dict[str, Camera]:
    """A held-out view at the dataset's size, and the first view at 640x480 (intrinsics scaled)."""
    big = Camera(scale_intrinsics(ds[0].K, 640 / ds[0].width, 480 / ds[0].height), 640, 480, ds[0].world_from_camera)
    return {f"{ds[0].width}x{ds[0].height}": ds[ds.test_indices[0]].camera, "640x480": big}


def timing_table(gmap, cams: dict[str, Camera], dims: list[int], miou: dict[int, float], text_dim: int) -> None:
    """Semantic render time of SAC attributes (decoder to 512) against full 512-d features on one geometry."""
    names = list(cams)
    print(f"| attributes | mIoU (D = {text_dim}) | render + labels ms {' / '.join(names)} | "
          f"+ full decode to 512, ms {names[-1]} |")
    print("|---|---|---|---|")
    rows = [(f"SAC d = {d} (+ decoder to 512)", d, SemanticDecoder(d, 512)) for d in dims]
    if text_dim in miou and text_dim != 512:
        rows.append((f"full D = {text_dim}, no decoder", text_dim, SemanticDecoder(text_dim, text_dim, 0)))
    rows.append(("full D = 512 (ViT-B/16 width), no decoder", 512, SemanticDecoder(512, 512, 0)))
    for label, d, decoder in rows:
        ms = " / ".join(f"{semantic_render_ms(gmap, d, decoder, c):.1f}" for c in cams.values())
        naive = semantic_render_ms(gmap, d, decoder, cams[names[-1]], full_decode=True)
        score = f"{100 * miou[d]:.1f}" if d in miou else "-"
        print(f"| {label} | {score} | {ms} | {naive:.1f} |", flush=True)
    print(f"\n({len(gmap)} Gaussians, 16 classes; median of 5, 2 CPU threads. mIoU: the same schedule mapped with "
          f"d attributes, or full {text_dim}-d features without decoder (sem_hidden 0), in the {text_dim}-d test "
          f"text space; the 512-d timing rows run random attributes on the same geometry)")


def mean_spread(values: list[float]) -> str:
    values = [100 * v for v in values]
    return f"{np.mean(values):.1f} ± {np.std(values):.1f}" if len(values) > 1 else f"{values[0]:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--dims", type=int, nargs="+", default=[3, 8, 16, 32])
    parser.add_argument("--teachers", nargs="+", choices=["realistic", "uniform"], default=["realistic", "uniform"])
    parser.add_argument("--wrong-fraction", type=float, default=0.3, help="uniform teacher: masks with a wrong class")
    parser.add_argument("--scene", choices=sorted(SCENES), default="room")
    parser.add_argument("--frame-step", type=int, default=0, help="map every this-many-th training frame (0: the "
                        "scene's default, room 1, apartment 16: 85 keyframes)")
    parser.add_argument("--scene-dir", type=Path, help="where the scene is generated (default: under the temp dir); "
                        "pybullet: where it is (default: ../shared/scenes/pybullet_room_s100 beside the checkout)")
    parser.add_argument("--frames", type=int, default=0, help="frames of the generated scene (0: the scene's own)")
    parser.add_argument("--size", default="", help="WxH of the generated scene (default: the scene's own)")
    parser.add_argument("--rows", nargs="+", type=int, help="only these rows of the ablation (0: no 3DCS; "
                        "default: all; the teacher row comes with row 0)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a mapper or semantic training setting for every row (e.g. sem_tau=0.25, "
                        "iters_per_keyframe=10), for ablations")
    parser.add_argument("--map", type=Path, help="no mapping: the query and render-time tables on this saved "
                        "semantic map of --scene (e.g. make demo's demo_out/map.ply, or one --save-maps wrote)")
    parser.add_argument("--save-maps", type=Path, metavar="DIR", help="write each seed's map of the default row "
                        "as DIR/<scene>_<teacher>_seed<N>.ply (+ .semantics.pt), for --map and query studies")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.map is not None:
        gmap, model = load_ply(args.map), load_semantics(args.map)
        ds = open_scene(args.scene, args.scene_dir, args.frames, args.size)
        text = TextEncoder.from_identity(model.text_encoder)
        print_queries(gmap, model, ds, text, str(args.map))
        print_queries(gmap, model, ds, text, f"{args.map}, masks by segment", coherent=True)
        timing_table(gmap, timing_cameras(ds), args.dims, {}, model.decoder.embed_dim)
        return 0
    try:
        mapping, overrides = split_overrides(args.set, (MapperConfig, SemanticTrainingConfig))
    except SettingsError as exc:
        raise SystemExit(str(exc)) from None
    if "seed" in mapping:
        raise SystemExit("--set seed: the mapper's seed follows each run's; give them with --seeds")
    default = SemanticTrainingConfig()
    assert all(getattr(default, k) == v for k, v in dict(LADDER)[DEFAULT_ROW].items()), "update DEFAULT_ROW"
    step = args.frame_step or SCENES[args.scene][2]
    ds = open_scene(args.scene, args.scene_dir, args.frames, args.size)
    _, text, vocab = simulated_setup(ds)
    print(ds.summary() + f"; mapped from 1 in {step} training frames" * (step > 1))
    described = "; ".join(default_corruption(k, wrong_fraction=args.wrong_fraction).describe() for k in args.teachers)
    changed = "".join(f", {k}={v}" for k, v in {**mapping, **overrides}.items())
    print(f"teachers: {described} (seed varies); text model {text.model_name} (D={vocab.shape[1]}); "
          f"seeds {args.seeds}; defaults = MapperConfig(), SemanticTrainingConfig(){changed}\n")

    print(f"| held-out views, mean ± std over {len(args.seeds)} seeds | teacher | mIoU | pixel acc | mIoU per pixel "
          "| mapping s |")
    print("|---|---|---|---|---|---|")
    results = {}
    for kind in args.teachers:
        for k, (name, config) in enumerate(LADDER):
            if args.rows is not None and k not in args.rows:
                continue
            runs = [run(ds, text, vocab, kind, args.wrong_fraction, s, step, mapping, **{**config, **overrides})
                    for s in args.seeds]
            results[kind, name] = runs
            if k == 0:
                teacher = [r[2] for r in runs]
                print(f"| 2D teacher | {kind} | {mean_spread([t['teacher_miou'] for t in teacher])} | "
                      f"{mean_spread([t['teacher_pixel_acc'] for t in teacher])} | - | - |")
                print(consensus_row(ds, text, vocab, kind, args.seeds, args.wrong_fraction))
            print(f"| {name} | {kind} | {mean_spread([r[2]['map_miou'] for r in runs])} | "
                  f"{mean_spread([r[2]['map_pixel_acc'] for r in runs])} | "
                  f"{mean_spread([r[2]['map_pixelwise_miou'] for r in runs])} | {np.mean([r[3] for r in runs]):.0f} |",
                  flush=True)
    print()
    chosen = DEFAULT_ROW
    if any((kind, chosen) not in results for kind in args.teachers):
        return 0  # --rows left the default row out: no query and attribute tables
    for kind in args.teachers:
        if args.save_maps is not None:
            for seed, (gmap, model, _, _) in zip(args.seeds, results[kind, chosen], strict=True):
                path = save_ply(gmap, args.save_maps / f"{args.scene}_{kind}_seed{seed}.ply")
                save_semantics(model, path)
                print(f"saved {path}")
        print_query_seeds(results[kind, chosen], ds, text, vocab, kind, args.seeds, args.wrong_fraction)
    kind = args.teachers[0]
    gmap, model, _, _ = results[kind, chosen][0]

    config = dict(LADDER)[chosen]
    full_d = vocab.shape[1]
    miou = {SemanticTrainingConfig().sem_dim: results[kind, chosen][0][2]["map_miou"]}
    for d in args.dims:
        if d not in miou:
            miou[d] = run(ds, text, vocab, kind, args.wrong_fraction, args.seeds[0], step, sem_dim=d,
                          **config)[2]["map_miou"]
    full = run(ds, text, vocab, kind, args.wrong_fraction, args.seeds[0], step, sem_dim=full_d, sem_hidden=0,
               **config)
    miou[full_d] = full[2]["map_miou"]
    print(f"attribute size ({chosen}, {kind} teacher, seed {args.seeds[0]}):")
    timing_table(gmap, timing_cameras(ds), args.dims, miou, full_d)
    return 0


if __name__ == "__main__":
    sys.exit(main())
