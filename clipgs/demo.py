"""The offline demo behind ``make demo``: synthetic room -> online mapping -> held-out evaluation and images."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from clipgs.data.dataset import open_dataset
from clipgs.data.synthetic import generate_scene
from clipgs.data.synthetic.generate import GENERATOR_VERSION
from clipgs.eval.evaluate import evaluate, write_view_images
from clipgs.mapping import save_ply
from clipgs.mapping.config import MapperConfig
from clipgs.mapping.offline import keyframe_time_breakdown, map_dataset
from clipgs.semantics.config import SemanticTrainingConfig
from clipgs.semantics.instances import describe_instances
from clipgs.semantics.model import SemanticModel, save_semantics
from clipgs.semantics.pipeline import default_corruption, evaluate_semantics, simulated_setup, teacher_notes
from clipgs.semantics.query import query_map, write_query_images
from clipgs.semantics.trainer import SemanticTrainer

DEMO_SCENE = {"scene": "room", "seed": 0, "n_frames": 120, "width": 160, "height": 120}


def _rounded(v: np.ndarray) -> list[float]:
    """Metres to millimetre precision, printed without float32 noise."""
    return np.asarray(v, dtype=np.float64).round(3).tolist()


def ensure_scene(folder: Path, **settings) -> Path:
    """Generate the synthetic scene into ``folder`` unless an identical one is already there."""
    meta_file = folder / "scene.json"
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        same = all(meta.get(k if k != "n_frames" else "frames") == v for k, v in settings.items())
        if same and meta.get("version") == GENERATOR_VERSION:
            return folder
    return generate_scene(folder, **settings)


def run_demo(out: str | Path, config: MapperConfig | None = None, training: SemanticTrainingConfig | None = None,
             scene_settings: dict | None = None, query: str = "chair", teacher_kind: str = "realistic") -> dict:
    """Map the synthetic room with the simulated CLIP teacher (with and without 3DCS), score the held-out
    views (PSNR, depth, mIoU), answer a text query; writes PNGs, map.ply(+semantics) and metrics.json."""
    out = Path(out)
    scene_dir = ensure_scene(out / "scene", **(scene_settings or DEMO_SCENE))
    ds = open_dataset(scene_dir)
    print(ds.summary())
    print("classes:", ", ".join(f"{i}:{c}" for i, c in enumerate(ds.classes or [])))
    config, training = config or MapperConfig(), training or SemanticTrainingConfig()
    teacher, text, vocab = simulated_setup(ds, corruption=default_corruption(teacher_kind))
    print(f"2D teacher (simulated SAM + CLIP): {teacher.corruption.describe()}")

    semantic_runs = {}
    for name, dcs_every in (("map without 3DCS", 0), ("map with 3DCS", training.dcs_every or 10)):
        print(f"\n{name}:")
        trainer = SemanticTrainer(training.replace(dcs_every=dcs_every), teacher, vocab)
        mapper, summary = map_dataset(ds, config, trainer=trainer)
        snap = mapper.snapshot()
        model = SemanticModel(snap.decoder, text.identity, list(ds.classes), vocab,
                              {"teacher": teacher_notes(teacher.corruption), "dcs_every": dcs_every})
        semantic_runs[name] = (snap.gaussians, model, summary)
    gmap, model, summary = semantic_runs["map with 3DCS"]
    map_path = save_ply(gmap, out / "map.ply")
    save_semantics(model, map_path)
    result = evaluate(gmap, ds)
    sem = {name: evaluate_semantics(g, m, ds, teacher, panels_dir=out / "semantic_panels" if "with" in name else None)
           for name, (g, m, _) in semantic_runs.items()}
    metrics = {"mapping": summary, "held_out": {k: v for k, v in result.items() if k != "per_view"},
               "semantic": {k: {kk: vv for kk, vv in v.items() if kk != "per_view"} for k, v in sem.items()}}
    view = ds.test_indices[len(ds.test_indices) // 2]
    images = write_view_images(gmap, ds[view], out / f"view_{view}")
    answer = query_map(gmap, model.decoder, text.encode([query])[0],
                       text.encode([c for c in ds.classes[1:] if c != query]), ds[view].camera)
    qdir = out / f"query_{query}"
    write_query_images(answer, qdir, answer.rgb, query)
    metrics["query"] = {"label": query, "view": view, "pixels": int(answer.mask.sum()), "score": answer.score,
                        "gaussians": int(answer.selected.sum()),
                        "centroid_m": None if answer.centroid is None else _rounded(answer.centroid),
                        "box_m": None if answer.box_min is None else [_rounded(answer.box_min),
                                                                      _rounded(answer.box_max)],
                        "instances": [{"centroid_m": _rounded(i.centroid), "box_m": [_rounded(i.box_min),
                                       _rounded(i.box_max)], "gaussians": i.gaussians} for i in answer.instances]}
    (out / "metrics.json").write_text(json.dumps({**metrics, "per_view": result["per_view"]}, indent=2) + "\n")

    print(f"\nmapping: {summary['frames']} frames -> {summary['keyframes']} keyframes, {summary['gaussians']} Gaussians"
          f" in {summary['mapping_seconds']:.0f} s ({summary['keyframes_per_s']:.2f} keyframes/s, "
          f"{summary['seconds_per_iteration'] * 1e3:.0f} ms/iteration) + {summary['finish_seconds']:.0f} s finishing, "
          f"peak RSS {summary['peak_rss_mb']:.0f} MB")
    print(keyframe_time_breakdown(summary))
    print(f"held-out views ({result['views']}, never mapped): PSNR {result['psnr_db']:.2f} dB, "
          f"depth L1 {result['depth_l1_m']:.4f} m, render {result['render_fps']:.1f} FPS "
          f"({result['backend']} backend, {result['resolution']})")
    t = sem["map with 3DCS"]
    print("\nsemantics, held-out views (mIoU / pixel accuracy, %):")
    print(f"  2D teacher        {100 * t['teacher_miou']:5.1f} / {100 * t['teacher_pixel_acc']:5.1f}")
    for name, r in sem.items():
        print(f"  {name:17} {100 * r['map_miou']:5.1f} / {100 * r['map_pixel_acc']:5.1f}   (per pixel "
              f"{100 * r['map_pixelwise_miou']:.1f} / {100 * r['map_pixelwise_pixel_acc']:.1f})")
    print(f"  semantic render {t['semantic_render_fps']:.1f} FPS (RGB + {training.sem_dim} attributes + decoder)")
    q = metrics["query"]
    print(f"query '{query}' in view {view}: {q['pixels']} pixels, score {q['score']:.2f}; 3D: {q['gaussians']} "
          f"Gaussians, {describe_instances(answer.instances)}")
    print(f"wrote {map_path} (+ .semantics.pt), {out / 'metrics.json'}, " + ", ".join(str(p) for p in images)
          + f", {qdir}/, {out / 'semantic_panels'}/ (ground truth | teacher | map)")
    return metrics
