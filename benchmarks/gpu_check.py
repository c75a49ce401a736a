"""GPU check, one command (``make gpu-check``): is the CUDA path right, how fast is it, does a whole run stay on it.

1. Agreement: gsplat (CUDA) and the PyTorch backend on CUDA against the compiled ``cpu`` backend, values and
   the gradients of every input (means, quats, log_scales, opacity_logits, features), on random scenes with
   3 + 16 channels.
2. Render speed at 640x480, 3 + 16 channels: 100k / 500k / 1M Gaussians (forward, forward+backward, FPS).
3. The default room mapped end to end with ``device: cuda``: mapper, semantic trainer with 3DCS, held-out
   PSNR and mIoU, a text query in 3D, save and reload; every map, optimiser and keyframe tensor must be on
   the GPU afterwards (no silent CPU tensors).

The last line is one summary. Without a CUDA GPU it says so and exits 0 at once; exit 1 when a check fails.

    python benchmarks/gpu_check.py [--sizes 100000 500000 1000000] [--frames 60] [--out DIR]
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

GRAD_NAMES = ("means", "quats", "log_scales", "opacity_logits", "features")
# float32 on two devices: besides rounding, a Gaussian exactly at the alpha cut-off (1/255) or a pixel at the
# transmittance cut-off may flip, which moves that pixel by up to 1/255 of a feature and that Gaussian's gradient.
VALUE_TOL, GRAD_TOL = 5e-3, 5e-2


def random_scene(n: int, seed: int, channels: int = 19, spread: float = 1.5) -> list[torch.Tensor]:
    """N random Gaussians around the origin (float32, CPU): means, quats, log_scales, logits, features."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(n, 3, generator=g) - 0.5) * 2 * spread, torch.randn(n, 4, generator=g),
            -4.0 + 2.5 * torch.rand(n, 3, generator=g), torch.randn(n, generator=g) * 2.0,
            torch.rand(n, channels, generator=g)]


def camera(width: int, height: int):
    from clipgs.data.frame import Camera
    from clipgs.geometry import intrinsics_from_hfov, look_at

    return Camera(intrinsics_from_hfov(width, height, 70.0), width, height,
                  look_at(np.array([0.3, -3.0, 0.8]), np.zeros(3)))


def render_with_grads(scene: list[torch.Tensor], cam, backend: str, device: str, seed: int = 0):
    """Render on ``device`` with ``backend``; backprop fixed random weights. Returns (outputs, grads) on the CPU."""
    from clipgs.render import rasterize

    leaves = [t.to(device).clone().requires_grad_(True) for t in scene]
    out = rasterize(*leaves, cam, backend=backend)
    g = torch.Generator().manual_seed(seed)
    outputs = (out.image, out.depth, out.alpha)
    weights = [torch.randn(x.shape, generator=g).to(device) for x in outputs]
    sum((x * w).sum() for x, w in zip(outputs, weights)).backward()
    grads = [t.grad if t.grad is not None else torch.zeros_like(t) for t in leaves]
    return [x.detach().cpu() for x in outputs], [x.detach().cpu() for x in grads]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-6))


def agreement(backends: list[tuple[str, str]], seeds=(0, 1, 2), n: int = 4000, size=(128, 96)) -> list[dict]:
    """Each (backend, device) against the compiled ``cpu`` backend on the CPU: max relative errors."""
    cam, rows = camera(*size), []
    for seed in seeds:
        scene = random_scene(n, seed)
        ref_out, ref_grads = render_with_grads(scene, cam, "cpu", "cpu")
        for backend, device in backends:
            out, grads = render_with_grads(scene, cam, backend, device)
            row = {"backend": backend, "device": device, "seed": seed,
                   "values": max(rel(x, y) for x, y in zip(out, ref_out))}
            row.update({name: rel(x, y) for name, x, y in zip(GRAD_NAMES, grads, ref_grads)})
            row["ok"] = row["values"] <= VALUE_TOL and all(row[k] <= GRAD_TOL for k in GRAD_NAMES)
            rows.append(row)
    return rows


def render_speed(sizes: list[int], backend: str, device: str, size=(640, 480), repeats: int = 10) -> list[dict]:
    """Forward and forward+backward milliseconds for N random Gaussians (3 + 16 channels) at ``size``."""
    from clipgs.render import rasterize

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    cam, rows = camera(*size), []
    for n in sizes:
        scene = [t.to(device) for t in random_scene(n, 7, spread=2.0)]
        with torch.no_grad():
            rasterize(*scene, cam, backend=backend)
        sync()
        t0 = time.perf_counter()
        with torch.no_grad():
            for _ in range(repeats):
                rasterize(*scene, cam, backend=backend)
        sync()
        fwd = (time.perf_counter() - t0) / repeats
        leaves = [t.clone().requires_grad_(True) for t in scene]
        out = rasterize(*leaves, cam, backend=backend)  # warm-up: the backward's first call allocates
        (out.image.square().mean() + out.depth.mean()).backward()
        sync()
        t0 = time.perf_counter()
        for _ in range(repeats):
            out = rasterize(*leaves, cam, backend=backend)
            (out.image.square().mean() + out.depth.mean()).backward()
        sync()
        fb = (time.perf_counter() - t0) / repeats
        rows.append({"backend": backend, "n": n, "fwd_ms": fwd * 1e3, "fps": 1 / fwd, "fwd_bwd_ms": fb * 1e3})
    return rows


def tensors_off_device(mapper, device: torch.device) -> list[str]:
    """Names of the mapper's tensors (map, Adam state, keyframes, decoder) not on ``device``."""
    found = []
    state = mapper.map
    named = {**{f"map.{k}": v for k, v in state.gaussians.tensors().items()},
             **{f"adam.exp_avg.{k}": v for k, v in state._exp_avg.items()},
             **{f"adam.exp_avg_sq.{k}": v for k, v in state._exp_avg_sq.items()}, "adam.steps": state._steps}
    for i, kf in enumerate(mapper.keyframes[:3]):
        named.update({f"keyframe{i}.rgb": kf.rgb, f"keyframe{i}.depth": kf.depth})
    decoder = getattr(mapper.trainer, "decoder", None)
    if decoder is not None:
        named.update({f"decoder.{k}": v for k, v in decoder.state_dict().items()})
    for name, t in named.items():
        if t.device.type != device.type:
            found.append(f"{name} on {t.device}")
    return found


def map_room(device: str, frames: int, out: Path, query: str = "chair", size=(160, 120), dcs_start: int = 10,
             dcs_every: int = 5) -> dict:
    """The default room (``frames`` frames) mapped with semantics and 3DCS on ``device``, scored, queried,
    saved and reloaded. Raises AssertionError on a failed check."""
    from clipgs.data.dataset import open_dataset
    from clipgs.demo import DEMO_SCENE, ensure_scene
    from clipgs.eval.evaluate import evaluate
    from clipgs.mapping import load_ply, save_ply
    from clipgs.mapping.config import MapperConfig
    from clipgs.mapping.offline import map_dataset
    from clipgs.semantics.config import SemanticTrainingConfig
    from clipgs.semantics.model import SemanticModel, load_semantics, save_semantics
    from clipgs.semantics.pipeline import evaluate_semantics, simulated_setup
    from clipgs.semantics.query import query_map
    from clipgs.semantics.trainer import SemanticTrainer

    settings = {**DEMO_SCENE, "n_frames": frames, "width": size[0], "height": size[1]}
    ds = open_dataset(ensure_scene(out / f"room_{frames}_{size[0]}x{size[1]}", **settings))
    teacher, text, vocab = simulated_setup(ds)
    trainer = SemanticTrainer(SemanticTrainingConfig(dcs_start=dcs_start, dcs_every=dcs_every), teacher, vocab)
    t0 = time.perf_counter()
    mapper, summary = map_dataset(ds, MapperConfig(), trainer=trainer, progress=False, device=device)
    seconds = time.perf_counter() - t0
    off = tensors_off_device(mapper, torch.device(device))
    assert not off, "tensors left off the mapping device: " + ", ".join(off[:5])
    assert trainer.pseudo_label_rounds > 0, "3DCS never ran"
    snap = mapper.snapshot()
    model = SemanticModel(snap.decoder, text.identity, list(ds.classes), vocab)
    geometry = evaluate(snap.gaussians, ds, progress=False)
    semantic = evaluate_semantics(snap.gaussians, model, ds, teacher)
    view = ds[ds.test_indices[len(ds.test_indices) // 2]]
    answer = query_map(snap.gaussians, model.decoder, text.encode([query])[0].to(device),
                       text.encode([c for c in ds.classes[1:] if c != query]).to(device), view.camera)
    path = save_ply(snap.gaussians, out / "gpu_check_map.ply")
    save_semantics(model, path)
    reloaded, semantics = load_ply(path, device=device), load_semantics(path)
    assert semantics is not None and len(reloaded) == len(snap.gaussians), "save/load lost Gaussians or semantics"
    with torch.no_grad():
        a, b = snap.gaussians.render(view.camera), reloaded.render(view.camera)
    assert rel(b.image.cpu(), a.image.cpu()) < 1e-5, "reloaded map renders differently"
    return {"frames": summary["frames"], "keyframes": summary["keyframes"], "gaussians": summary["gaussians"],
            "seconds": seconds, "ms_per_iteration": summary["seconds_per_iteration"] * 1e3,
            "psnr_db": geometry["psnr_db"], "backend": geometry["backend"], "map_miou": semantic["map_miou"],
            "teacher_miou": semantic["teacher_miou"], "query_objects": len(answer.instances)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 500_000, 1_000_000])
    parser.add_argument("--frames", type=int, default=60, help="frames of the room mapped end to end")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "clipgs_gpu_check")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(f"gpu-check: no CUDA GPU visible to this PyTorch ({torch.__version__}, CUDA build "
              f"{torch.version.cuda or 'none'}); nothing to check here.")
        return 0
    missing = [name for name in ("plyfile", "yaml", "tqdm", "open_clip", "scipy", "skimage", "PIL")
               if importlib.util.find_spec(name) is None]
    if missing:
        print(f"gpu-check: {sys.executable} lacks {', '.join(missing)}: install clipgs into it "
              "(pip install -c constraints.txt -e '.[test]', or carry the wheels) and run again")
        return 1
    from clipgs.render.gsplat_backend import gsplat_available

    t_start = time.perf_counter()
    print(f"{torch.cuda.get_device_name()} | torch {torch.__version__} | gsplat "
          f"{'available' if gsplat_available() else 'NOT importable: its checks are skipped'}\n")
    gpu_backends = [("torch", "cuda")] + ([("gsplat", "cuda")] if gsplat_available() else [])
    failures = []

    rows = agreement(gpu_backends)
    print("agreement with the compiled cpu backend (max relative error; values <= "
          f"{VALUE_TOL:g}, gradients <= {GRAD_TOL:g}):")
    print("| backend | seed | values | " + " | ".join(GRAD_NAMES) + " | ok |\n" + "|---" * (len(GRAD_NAMES) + 4) + "|")
    for r in rows:
        print(f"| {r['backend']} | {r['seed']} | {r['values']:.1e} | "
              + " | ".join(f"{r[k]:.1e}" for k in GRAD_NAMES) + f" | {'yes' if r['ok'] else 'NO'} |")
        if not r["ok"]:
            failures.append(f"{r['backend']} disagrees (seed {r['seed']})")

    speed_backend = "gsplat" if gsplat_available() else "torch"
    sizes = args.sizes if speed_backend == "gsplat" else [n for n in args.sizes if n <= 100_000]
    speed = render_speed(sizes, speed_backend, "cuda")
    print("\nrender at 640x480, 3 + 16 channels, random Gaussians:")
    print("| backend | N | fwd ms | FPS | fwd+bwd ms |\n|---|---|---|---|---|")
    for r in speed:
        print(f"| {r['backend']} | {r['n']} | {r['fwd_ms']:.2f} | {r['fps']:.0f} | {r['fwd_bwd_ms']:.2f} |")

    try:
        room = map_room("cuda", args.frames, args.out)
        print(f"\nroom on cuda: {room['frames']} frames -> {room['keyframes']} keyframes, {room['gaussians']} "
              f"Gaussians in {room['seconds']:.1f} s ({room['ms_per_iteration']:.1f} ms/iteration, "
              f"{room['backend']}); held-out PSNR {room['psnr_db']:.2f} dB; mIoU map {100 * room['map_miou']:.1f} "
              f"vs teacher {100 * room['teacher_miou']:.1f}; query 'chair': {room['query_objects']} objects; "
              "save/load ok")
        room_text = (f"room on cuda PSNR {room['psnr_db']:.1f} dB, mIoU {100 * room['map_miou']:.1f} "
                     f"(teacher {100 * room['teacher_miou']:.1f}), {room['ms_per_iteration']:.0f} ms/it")
    except (AssertionError, RuntimeError) as exc:
        failures.append(f"room on cuda: {exc}")
        room_text = f"room on cuda FAILED ({exc})"

    best = max((r for r in speed if r["n"] == 500_000), key=lambda r: r["fps"], default=None)
    speed_text = (f"{best['backend']} 500k@640x480 {best['fps']:.0f} FPS" if best else
                  f"{speed_backend} {speed[-1]['n'] // 1000}k@640x480 {speed[-1]['fps']:.0f} FPS")
    worst = max((max(r["values"], *(r[k] for k in GRAD_NAMES)) for r in rows), default=float("nan"))
    verdict = "FAIL: " + "; ".join(failures) if failures else "PASS"
    print(f"\ngpu-check {verdict} | agreement max rel err {worst:.1e} | {speed_text} | {room_text} | "
          f"{time.perf_counter() - t_start:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
