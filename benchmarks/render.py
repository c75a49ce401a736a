"""Render benchmark: forward and forward+backward time, peak memory and speed-up per backend, as a table.

Scenes (3 colour + 16 semantic channels, rendered from a held-out view):
- surface: Gaussians seeded from the synthetic room's RGB-D frames (the density of a real map), subsampled to N;
- dense: N random Gaussians filling a volume in front of the camera (many overlaps per pixel: the worst case).
Each configuration runs in a fresh process so its peak memory is its own. The speed-up columns compare
each backend with the reference backend (``--reference``, default ``cpu_scalar``: the compiled kernel
before vectorised compositing) on the same configuration.

    .venv/bin/python benchmarks/render.py [--sizes 20000 50000 200000] [--res 160x120 320x240 640x480]
                                          [--scene surface|dense] [--backends cpu_scalar cpu torch]
                                          [--reference cpu_scalar]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path

SCENE_DIR = Path(tempfile.gettempdir()) / "clipgs_bench_room"


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def build_dense_map(n: int, width: int, height: int, sem_dim: int, device: str):
    """N random Gaussians in a 3 x 3 x 3 m volume 2-5 m in front of the camera."""
    import numpy as np
    import torch

    from clipgs.data.frame import Camera
    from clipgs.geometry import intrinsics_from_hfov
    from clipgs.mapping import GaussianMap

    g = torch.Generator().manual_seed(0)
    means = (torch.rand(n, 3, generator=g) - 0.5) * 3.0 + torch.tensor([0.0, 0.0, 3.5])
    log_scales = torch.empty(n, 3).uniform_(-4.5, -3.0, generator=g)
    gmap = GaussianMap(means, torch.randn(n, 4, generator=g), log_scales, torch.randn(n, generator=g),
                       torch.randn(n, 3, generator=g), torch.randn(n, sem_dim, generator=g))
    return gmap.to(device), Camera(intrinsics_from_hfov(width, height, 60.0), width, height, np.eye(4))


def build_map(n: int, width: int, height: int, sem_dim: int, device: str):
    import numpy as np
    import torch

    from clipgs.data.dataset import open_dataset
    from clipgs.data.synthetic import generate_scene
    from clipgs.mapping import GaussianMap

    if not (SCENE_DIR / "scene.json").is_file():
        generate_scene(SCENE_DIR, n_frames=16, width=640, height=480, progress=False)
    ds = open_dataset(SCENE_DIR, size=(width, height))
    train, test = ds.split
    per_frame = width * height
    frames = train[:: max(1, len(train) // max(1, -(-n // per_frame) + 1))]
    parts, total = [], 0
    for i in frames:
        parts.append(GaussianMap.from_frame(ds[i]).tensors())
        total += len(parts[-1]["means"])
        if total >= n:
            break
    gmap = GaussianMap(**{k: torch.cat([p[k] for p in parts]) for k in parts[0]})
    keep = torch.from_numpy(np.sort(np.random.default_rng(0).choice(len(gmap), min(n, len(gmap)), replace=False)))
    gmap = gmap.select(keep)
    gmap.semantics = torch.randn(len(gmap), sem_dim, generator=torch.Generator().manual_seed(0))
    return gmap.to(device), ds[test[len(test) // 2]].camera


def run_one(cfg: dict, queue) -> None:
    import torch

    torch.set_num_threads(cfg["threads"])
    builder = build_dense_map if cfg["scene"] == "dense" else build_map
    gmap, camera = builder(cfg["n"], cfg["width"], cfg["height"], cfg["sem"], cfg["device"])
    sync = torch.cuda.synchronize if cfg["device"] == "cuda" else (lambda: None)

    def forward():
        with torch.no_grad():
            out = gmap.render(camera, backend=cfg["backend"])
        sync()
        return out

    params = {k: v.clone().requires_grad_(True) for k, v in gmap.tensors().items()}
    from clipgs.mapping import GaussianMap

    def forward_backward():
        out = GaussianMap(**params).render(camera, backend=cfg["backend"])
        (out.image.square().mean() + out.depth.mean()).backward()
        sync()

    forward(), forward()  # warm-up: kernel load, thread team, first allocations
    base = _rss_mb()

    def median_ms(fn) -> float:
        times = []
        for _ in range(cfg["repeats"]):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return sorted(times)[len(times) // 2] * 1e3

    out = forward()
    fwd = median_ms(forward)
    forward_backward()
    fb = median_ms(forward_backward)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    gpu_peak = torch.cuda.max_memory_allocated() / 2**20 if cfg["device"] == "cuda" else None
    queue.put({**cfg, "n": len(gmap), "fwd_ms": fwd, "fb_ms": fb, "peak_mb": peak, "gpu_peak_mb": gpu_peak,
               "backend_used": out.backend, "coverage": float(out.alpha.mean())})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 50_000, 200_000])
    parser.add_argument("--res", nargs="+", default=["160x120", "320x240", "640x480"])
    parser.add_argument("--scene", choices=["surface", "dense"], default="surface")
    parser.add_argument("--sem", type=int, default=16, help="semantic channels rendered with RGB")
    parser.add_argument("--backends", nargs="+", default=None,
                        help="default: cpu_scalar, cpu, plus gsplat with CUDA")
    parser.add_argument("--reference", default="cpu_scalar", help="the backend the speed-up columns divide by")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per configuration (median reported)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = parser.parse_args()

    import torch

    backends = args.backends or ["cpu_scalar", "cpu", *(["gsplat"] if torch.cuda.is_available() else [])]
    rows = []
    ctx = mp.get_context("spawn")
    print(f"torch {torch.__version__}, {args.threads} threads, channels 3+{args.sem}, scene '{args.scene}', "
          f"speed-up vs '{args.reference}'", flush=True)
    header = (f"| {'backend':7} | {'N':>7} | {'resolution':>10} | {'channels':>8} | {'fwd ms':>8} | "
              f"{'fwd+bwd ms':>10} | {'peak MB':>8} | {'fwd x':>6} | {'fwd+bwd x':>9} |")
    print(header + "\n|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|", flush=True)
    for res in args.res:
        w, h = (int(v) for v in res.split("x"))
        for n in args.sizes:
            results = {}
            for backend in sorted(backends, key=lambda b: b != args.reference):  # the reference first
                cfg = {"backend": backend, "n": n, "width": w, "height": h, "sem": args.sem, "threads": args.threads,
                       "repeats": args.repeats, "device": "cuda" if backend == "gsplat" else "cpu",
                       "scene": args.scene}
                queue = ctx.Queue()
                proc = ctx.Process(target=run_one, args=(cfg, queue))
                proc.start()
                proc.join()
                if proc.exitcode != 0:
                    print(f"| {backend:7} | {n:>7} | {res:>10} | {3 + args.sem:>8} | failed (exit {proc.exitcode}) |")
                    continue
                r = results[backend] = queue.get()
                rows.append(r)
                ref = results.get(args.reference)
                fx = f"{ref['fwd_ms'] / r['fwd_ms']:.1f}" if ref else "-"
                bx = f"{ref['fb_ms'] / r['fb_ms']:.1f}" if ref else "-"
                peak = r["gpu_peak_mb"] if r["gpu_peak_mb"] is not None else r["peak_mb"]
                print(f"| {backend:7} | {r['n']:>7} | {res:>10} | {3 + args.sem:>8} | {r['fwd_ms']:>8.1f} | "
                      f"{r['fb_ms']:>10.1f} | {peak:>8.0f} | {fx:>6} | {bx:>9} |", flush=True)
    print("peak MB: resident memory added by the runs (CPU) or peak CUDA allocation (GPU)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
