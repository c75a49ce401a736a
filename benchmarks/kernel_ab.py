"""Interleaved A/B of the compiled CPU kernels: this checkout's build against another revision's, in one process.

A CPU's speed can wander (this project's 2-core VM: up to 2x within an hour), so two benchmark runs minutes apart
do not rank a kernel change; two builds timed turn and turn about in one process do. Per configuration (the render
benchmark's 'surface' map, 3 + 16 channels) it prints each build's median time, the median of the per-pair ratios
(this checkout / base), and whether the outputs (image, depth, alpha; after forward + backward, every gradient) are
the same bit for bit or how far apart (largest difference over the largest value; gradients per field, with their
largest magnitude: the benchmark map's Gaussians are isotropic, so its quaternion gradients are rounding noise).

    .venv/bin/python benchmarks/kernel_ab.py --base HEAD~1 [--sizes 20000 200000] [--res 160x120 640x480]
    .venv/bin/python benchmarks/kernel_ab.py --base path/to/csrc    # a folder with the kernel sources
"""
from __future__ import annotations

import argparse
import ctypes
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def base_sources(base: str, into: Path) -> list[Path]:
    """The kernel sources of ``base`` (a folder holding them, or a git revision of this checkout), copied into
    ``into``; same file names as this checkout's."""
    from clipgs.render.cpu_kernel import SOURCES

    out = []
    for src in SOURCES:
        target = into / src.name
        folder = Path(base)
        if folder.is_dir():
            if not (folder / src.name).is_file():
                raise SystemExit(f"{folder} holds no {src.name}")
            target.write_bytes((folder / src.name).read_bytes())
        else:
            rel = src.resolve().relative_to(ROOT).as_posix()
            proc = subprocess.run(["git", "show", f"{base}:{rel}"], cwd=ROOT, capture_output=True)
            if proc.returncode != 0:
                raise SystemExit(f"git show {base}:{rel} failed: {proc.stderr.decode().strip()}")
            target.write_bytes(proc.stdout)
        out.append(target)
    return out


def load_base(sources: list[Path]) -> ctypes.CDLL:
    """Build (cached by content, like this checkout's) and load the base kernels, with this checkout's argument
    types on the entry points both have. Exits when the two builds' C ABIs differ."""
    from clipgs.native import FLAGS, build_library
    from clipgs.render import cpu_kernel

    current = cpu_kernel.load()
    lib = ctypes.CDLL(str(build_library("clipgs_cpu", sources, FLAGS)))
    if lib.clipgs_abi_version() != cpu_kernel.ABI_VERSION:
        raise SystemExit(f"the base kernels have ABI {lib.clipgs_abi_version()}, this checkout "
                         f"{cpu_kernel.ABI_VERSION}: their entry points differ, no A/B")
    for name, fn in vars(current).items():  # ctypes keeps every function the loader configured as an attribute
        if isinstance(fn, ctypes._CFuncPtr) and hasattr(lib, name):
            getattr(lib, name).argtypes, getattr(lib, name).restype = fn.argtypes, fn.restype
    return lib


def far(a, b) -> str:
    """'same' when bit for bit equal, else the largest difference over b's largest magnitude."""
    import torch

    if torch.equal(a, b):
        return "same"
    return f"{float((a - b).abs().max() / b.abs().max().clamp(min=1e-12)):.1e}"


def compare(n: int, width: int, height: int, libs: dict, repeats: int) -> dict:
    """Times and output differences of the builds ``libs['base']`` and ``libs['new']`` on one configuration."""
    import torch
    from render import build_map

    from clipgs.mapping import GaussianMap
    from clipgs.render import cpu_backend

    gmap, camera = build_map(n, width, height, 16, "cpu")
    params = {k: v.clone().requires_grad_(True) for k, v in gmap.tensors().items()}

    def forward():
        with torch.no_grad():
            out = gmap.render(camera, backend="cpu")
        return torch.cat([out.image, out.depth[..., None], out.alpha[..., None]], dim=-1)

    def forward_backward():
        for p in params.values():
            p.grad = None
        out = GaussianMap(**params).render(camera, backend="cpu")
        (out.image.square().mean() + out.depth.mean()).backward()
        return [p.grad.clone() for p in params.values()]

    outputs, times = {}, {(name, what): [] for name in libs for what in ("fwd", "fb")}
    for name, lib in libs.items():
        cpu_backend.load = lambda lib=lib: lib
        outputs[name] = (forward(), forward_backward())  # also the warm-up
    for _ in range(repeats):
        for what, fn in (("fwd", forward), ("fb", forward_backward)):
            for name, lib in libs.items():
                cpu_backend.load = lambda lib=lib: lib
                t0 = time.perf_counter()
                fn()
                times[name, what].append(time.perf_counter() - t0)
    (img_b, grads_b), (img_n, grads_n) = outputs["base"], outputs["new"]
    row = {"image": far(img_n, img_b)}
    diffs = [(name, far(x, y), float(y.abs().max())) for name, x, y in zip(params, grads_n, grads_b)]
    row["gradients"] = ", ".join(f"{name} {d} (largest {top:.0e})" for name, d, top in diffs if d != "same") or "same"
    for what in ("fwd", "fb"):
        base, new = times["base", what], times["new", what]
        row[what] = (statistics.median(base) * 1e3, statistics.median(new) * 1e3,
                     statistics.median(b / a for a, b in zip(base, new)))
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="a git revision of this checkout, or a folder with the "
                                                      "kernel sources (rasterize_cpu.cpp, adam_cpu.cpp)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--res", nargs="+", default=["160x120", "640x480"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15, help="timed pairs per configuration (medians reported)")
    args = parser.parse_args()

    import torch

    from clipgs.render import cpu_kernel

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        base = load_base(base_sources(args.base, Path(tmp)))
    libs = {"base": base, "new": cpu_kernel.load()}
    print(f"kernels: base {args.base} against this checkout; {args.threads} threads, 3 + 16 channels, "
          f"{args.repeats} interleaved pairs (medians; ratio: median of new / base per pair)", flush=True)
    header = ("| N | resolution | fwd ms base | fwd ms new | new / base | image | fwd+bwd ms base | fwd+bwd ms new "
              "| new / base | gradients |")
    print(header + "\n|" + "---|" * (header.count("|") - 1), flush=True)
    for res in args.res:
        width, height = (int(v) for v in res.split("x"))
        for n in args.sizes:
            r = compare(n, width, height, libs, args.repeats)
            (fb0, fn0, fx), (bb0, bn0, bx) = r["fwd"], r["fb"]
            print(f"| {n} | {res} | {fb0:.2f} | {fn0:.2f} | {fx:.3f} | {r['image']} | {bb0:.1f} | {bn0:.1f} | "
                  f"{bx:.3f} | {r['gradients']} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
