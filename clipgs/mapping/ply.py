"""Gaussian maps as PLY files in the standard 3DGS layout (+ ``sem_*`` semantic channels).

Vertex properties, all float32, in this order: x y z, nx ny nz (zeros), f_dc_0..2, opacity (logit),
scale_0..2 (log), rot_0..3 (w x y z), sem_0..sem_{D-1}. Common 3DGS viewers open these files and
ignore the extra ``sem_*`` properties.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch
from plyfile import PlyData, PlyElement

from clipgs.errors import MapFileError
from clipgs.mapping.gaussian_map import GaussianMap

CORE = (
    ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity"]
    + [f"scale_{i}" for i in range(3)]
    + [f"rot_{i}" for i in range(4)]
)
HEADER_COMMENT = "clipgs gaussian map v1"


def check_writable(path: str | Path) -> None:
    """ValueError unless a map can be written at ``path`` (a file in an existing or creatable, writable folder)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"--out {path} is a folder; give a file name, e.g. {path / 'map.ply'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"--out {path}: cannot create {path.parent} ({exc.strerror})") from exc
    if not os.access(path.parent, os.W_OK):
        raise ValueError(f"--out {path}: {path.parent} is not writable")


def save_ply(gmap: GaussianMap, path: str | Path, extra: dict[str, np.ndarray] | None = None) -> Path:
    """Write ``gmap`` as a binary little-endian PLY. Returns the path written.

    extra: more per-Gaussian vertex properties, name -> (N,) array (e.g. ``class_id`` int32, ``confidence``
    float32), written after the map's own; readers that do not know them (3DGS viewers, :func:`load_ply`) skip them.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = {k: v.detach().cpu().to(torch.float32).numpy() for k, v in gmap.tensors().items()}
    n = len(gmap)
    names = CORE + [f"sem_{i}" for i in range(gmap.sem_dim)]
    extra = {k: np.asarray(v) for k, v in (extra or {}).items()}
    clash = [k for k in extra if k in names or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k)]
    wrong = [k for k, v in extra.items() if v.shape != (n,)]
    if clash or wrong:
        raise ValueError(f"save_ply: extra properties {clash or wrong} clash with the map's or are not ({n},) arrays")
    data = np.column_stack(
        [cols["means"], np.zeros((n, 3), np.float32), cols["sh0"], cols["opacity_logits"][:, None],
         cols["log_scales"], cols["quats"], cols["semantics"]]
    ).astype(np.float32)
    vertex = np.empty(n, dtype=[(name, "<f4") for name in names] + [(k, v.dtype.str) for k, v in extra.items()])
    for i, name in enumerate(names):
        vertex[name] = data[:, i]
    for name, values in extra.items():
        vertex[name] = values
    tmp = path.with_name(path.name + ".tmp")
    try:
        PlyData([PlyElement.describe(vertex, "vertex")], text=False, byte_order="<",
                comments=[HEADER_COMMENT, f"sem_dim {gmap.sem_dim}"]).write(str(tmp))
        tmp.replace(path)  # atomic: a crash mid-write never leaves a truncated map under the real name
    finally:
        tmp.unlink(missing_ok=True)  # a failed write (disk full, Ctrl-C) leaves no .tmp behind
    return path


def load_ply(path: str | Path, device: str | torch.device = "cpu") -> GaussianMap:
    """Read a 3DGS-layout PLY (with or without ``sem_*``) into a float32 GaussianMap."""
    path = Path(path)
    if not path.is_file():
        raise MapFileError(f"{path}: no such map file")
    try:
        ply = PlyData.read(str(path))
        vertex = ply["vertex"]
        props = [p.name for p in vertex.properties]
        data = vertex.data
        if len(data) != vertex.count:
            raise ValueError(f"expected {vertex.count} vertices, read {len(data)}")
    except KeyError:
        raise MapFileError(f"{path}: PLY has no 'vertex' element; not a Gaussian map") from None
    except Exception as exc:  # plyfile raises several types for truncated or malformed files
        raise MapFileError(f"{path}: unreadable or truncated PLY ({type(exc).__name__}: {exc})") from exc
    missing = [p for p in CORE if p not in props and p not in ("nx", "ny", "nz")]
    if missing:
        raise MapFileError(
            f"{path}: not a 3DGS Gaussian map; missing vertex properties {missing} "
            "(expected x y z f_dc_0..2 opacity scale_0..2 rot_0..3)"
        )
    sem_names = sorted((p for p in props if re.fullmatch(r"sem_\d+", p)), key=lambda p: int(p[4:]))
    if [int(p[4:]) for p in sem_names] != list(range(len(sem_names))):
        raise MapFileError(f"{path}: semantic properties are not contiguous sem_0..sem_{{D-1}}: {sem_names}")

    def col(*names: str) -> torch.Tensor:
        arr = np.stack([np.asarray(data[n], dtype=np.float32) for n in names], axis=-1) if names else \
            np.zeros((len(data), 0), np.float32)
        return torch.from_numpy(arr).to(device)

    gmap = GaussianMap(
        means=col("x", "y", "z"),
        quats=col(*[f"rot_{i}" for i in range(4)]),
        log_scales=col(*[f"scale_{i}" for i in range(3)]),
        opacity_logits=col("opacity")[:, 0],
        sh0=col("f_dc_0", "f_dc_1", "f_dc_2"),
        semantics=col(*sem_names),
    )
    bad = [k for k, v in gmap.tensors().items() if not torch.isfinite(v).all()]
    if bad:
        raise MapFileError(f"{path}: non-finite values in {bad}")
    if len(gmap) and not (gmap.quats.norm(dim=-1) > 0).all():
        raise MapFileError(f"{path}: zero-length rotation quaternions (rot_0..3 all 0)")
    return gmap
