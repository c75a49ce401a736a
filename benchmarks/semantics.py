"""Semantic mapping benchmark on the default synthetic room with the simulated teacher.

Prints: held-out mIoU / pixel accuracy of the 2D teacher, the map without 3DCS and with 3DCS; the SAC
attribute size d against rendering full-D features (mIoU and semantic render speed); and the text-query
IoU per class name (vocabulary negatives) against ground truth on held-out views.

    .venv/bin/python benchmarks/semantics.py [--dims 3 8 16 32 64] [--wrong-fraction 0.3]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from clipgs.data.dataset import open_dataset
from clipgs.demo import DEMO_SCENE, ensure_scene
from clipgs.mapping.config import MapperConfig
from clipgs.mapping.offline import map_dataset
from clipgs.semantics.model import SemanticModel
from clipgs.semantics.pipeline import evaluate_semantics, simulated_setup
from clipgs.semantics.query import query_map
from clipgs.semantics.sources import TeacherCorruption


def run(ds, teacher, text, vocab, sem_dim: int, dcs: bool):
    cfg = MapperConfig(sem_dim=sem_dim, dcs_every=10 if dcs else 0)
    t0 = time.perf_counter()
    mapper, _ = map_dataset(ds, cfg, progress=False, semantic_source=teacher, vocabulary=vocab)
    seconds = time.perf_counter() - t0
    model = SemanticModel(mapper.decoder, text.identity, list(ds.classes), vocab)
    gmap = mapper.snapshot()
    return gmap, model, evaluate_semantics(gmap, model, ds, teacher), seconds


def query_iou(gmap, model, ds, text) -> dict[str, float]:
    """Mean IoU of each class name's query mask with that class's ground truth over held-out views."""
    out: dict[str, list[float]] = {}
    names = model.vocabulary[1:]
    emb = text.encode(names)
    for i in ds.test_indices:
        f = ds[i]
        for k, name in enumerate(names, start=1):
            gt = f.labels == k
            if not gt.any():
                continue
            negatives = torch.cat([emb[: k - 1], emb[k:]])
            mask = query_map(gmap, model.decoder, emb[k - 1], negatives, f.camera).mask
            out.setdefault(name, []).append(float((mask & gt).sum() / max((mask | gt).sum(), 1)))
    return {k: float(np.mean(v)) for k, v in out.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[3, 8, 16, 32, 64])
    parser.add_argument("--wrong-fraction", type=float, default=0.3)
    parser.add_argument("--scene-dir", type=Path, default=Path(tempfile.gettempdir()) / "clipgs_bench_demo_room")
    args = parser.parse_args()
    torch.set_num_threads(2)
    ds = open_dataset(ensure_scene(args.scene_dir, **DEMO_SCENE))
    teacher, text, vocab = simulated_setup(ds, corruption=TeacherCorruption(wrong_fraction=args.wrong_fraction))
    print(ds.summary())
    print(f"teacher: {teacher.corruption.describe()}; text model {text.model_name} (D={vocab.shape[1]})\n")

    gmap, model, with_dcs, sec = run(ds, teacher, text, vocab, 16, dcs=True)
    _, _, without_dcs, sec_no = run(ds, teacher, text, vocab, 16, dcs=False)
    print("| held-out views | mIoU | pixel acc | mapping s |\n|---|---|---|---|")
    print(f"| 2D teacher | {100 * with_dcs['teacher_miou']:.1f} | {100 * with_dcs['teacher_pixel_acc']:.1f} | - |")
    print(f"| map, SAC d=16, no 3DCS | {100 * without_dcs['map_miou']:.1f} | "
          f"{100 * without_dcs['map_pixel_acc']:.1f} | {sec_no:.0f} |")
    print(f"| map, SAC d=16 + 3DCS | {100 * with_dcs['map_miou']:.1f} | {100 * with_dcs['map_pixel_acc']:.1f} | "
          f"{sec:.0f} |\n", flush=True)

    ious = query_iou(gmap, model, ds, text)
    print(f"query IoU (d=16 + 3DCS, vocabulary negatives), mean over {len(ious)} classes: "
          f"{np.mean(list(ious.values())):.3f}")
    print(", ".join(f"{k} {v:.2f}" for k, v in sorted(ious.items())) + "\n", flush=True)

    print("| d | mIoU (+3DCS) | semantic render ms | FPS |\n|---|---|---|---|")
    for d in args.dims:
        res = with_dcs if d == 16 else run(ds, teacher, text, vocab, d, dcs=True)[2]
        label = f"{d} (= D, full features)" if d == vocab.shape[1] else str(d)
        print(f"| {label} | {100 * res['map_miou']:.1f} | {res['semantic_render_ms']:.1f} | "
              f"{res['semantic_render_fps']:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
