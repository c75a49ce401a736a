"""Render held-out views of a map and score them against the dataset."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from clipgs.data.dataset import SequenceDataset
from clipgs.data.frame import Frame
from clipgs.data.images import colorize_depth, stack_rows, titled_row, to_uint8, write_image
from clipgs.eval.metrics import depth_l1, psnr
from clipgs.mapping.gaussian_map import GaussianMap
from clipgs.render import RenderOutput


@dataclass
class ViewScore:
    index: int
    psnr_db: float
    depth_l1_m: float
    render_ms: float


def render_view(gmap: GaussianMap, frame: Frame, backend: str = "auto") -> tuple[RenderOutput, float]:
    """Render RGB only (no semantic channels) at ``frame``'s camera; returns the output and the time in ms."""
    with torch.no_grad():
        t0 = time.perf_counter()
        out = gmap.render(frame.camera, semantic=False, backend=backend)
        if out.image.is_cuda:
            torch.cuda.synchronize()
        return out, (time.perf_counter() - t0) * 1e3


def evaluate(gmap: GaussianMap, dataset: SequenceDataset, indices: list[int] | None = None, backend: str = "auto",
             progress: bool = True, world_from_dataset: np.ndarray | None = None) -> dict:
    """PSNR (dB), depth L1 (m, expected depth vs valid observed depth) and render FPS over ``indices``.

    Defaults to the dataset's held-out views (never used for mapping). world_from_dataset: (4, 4) rigid, where
    the dataset's frame sits in the map's (e.g. ``trajectory_errors(...)['map_from_true']``); None: the same.
    """
    indices = dataset.test_indices if indices is None else indices
    if not indices:
        raise ValueError("no views to evaluate (the split holds out none)")

    def view(i: int) -> Frame:
        frame = dataset[i]
        if world_from_dataset is None:
            return frame
        return replace(frame, world_from_camera=world_from_dataset @ frame.world_from_camera)

    render_view(gmap, view(indices[0]), backend)  # warm-up: first-call costs are not render speed
    scores = []
    for i in tqdm(indices, desc="eval", unit="view", disable=not progress):
        frame = view(i)
        out, ms = render_view(gmap, frame, backend)
        rgb = out.image.clamp(0, 1).cpu().numpy()
        scores.append(ViewScore(i, psnr(rgb, frame.rgb / 255.0), depth_l1(out.expected_depth().cpu().numpy(),
                                                                            frame.depth), ms))
    mean_ms = float(np.mean([s.render_ms for s in scores]))
    frame = dataset[indices[0]]
    return {
        "views": len(scores),
        "resolution": f"{frame.width}x{frame.height}",
        "gaussians": len(gmap),
        "psnr_db": float(np.mean([s.psnr_db for s in scores])),
        "depth_l1_m": float(np.mean([s.depth_l1_m for s in scores])),
        "render_ms": mean_ms,
        "render_fps": 1000.0 / mean_ms,
        "backend": out.backend,
        "per_view": [asdict(s) for s in scores],
    }


def write_view_images(gmap: GaussianMap, frame: Frame, out_dir: str | Path, backend: str = "auto") -> list[Path]:
    """rgb.png, depth.png (turbo, metres scaled to the observed range) and comparison.png (observed | render,
    colour above depth, titled, at least 320 px a tile)."""
    out_dir = Path(out_dir)
    out, _ = render_view(gmap, frame, backend)
    rgb = to_uint8(out.image.clamp(0, 1).cpu().numpy())
    depth = out.expected_depth().cpu().numpy()
    top = float(frame.depth.max()) if frame.depth.max() > 0 else float(depth.max() or 1.0)
    panel = stack_rows(
        titled_row([frame.rgb, rgb], ["observed", f"map render, PSNR {psnr(rgb / 255.0, frame.rgb / 255.0):.1f} dB"]),
        titled_row([colorize_depth(frame.depth, top), colorize_depth(depth, top)],
                   [f"observed depth, 0-{top:.1f} m (black: none)", "rendered depth"]))
    return [write_image(out_dir / "rgb.png", rgb), write_image(out_dir / "depth.png", colorize_depth(depth, top)),
            write_image(out_dir / "comparison.png", panel)]
