"""3D objects of a query: the matching Gaussians split into instances (connected pieces, joined where they are
one object), each with a centroid and a box, metres, map frame."""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree


@dataclass
class QueryInstance:
    """One spatially connected group of matching Gaussians (one object), map frame, metres.

    weight: the sum of relevancy x opacity x footprint area (m²) over its Gaussians: how much matching surface
    it holds (a count of Gaussians would favour wherever the map happens to be dense).
    """

    centroid: np.ndarray  # (3,) weighted by matching surface (see weight)
    box_min: np.ndarray  # (3,) 2nd percentile per axis (robust to strays)
    box_max: np.ndarray  # (3,) 98th percentile
    gaussians: int
    weight: float
    indices: np.ndarray | None = field(default=None, repr=False)  # (gaussians,) its Gaussians: rows of the map


_HALF_NEIGHBOURHOOD = [o for o in itertools.product((-1, 0, 1), repeat=3) if o > (0, 0, 0)]  # 13 of 26


def _components(points: np.ndarray, voxel_m: float) -> np.ndarray:
    """(N,) component id of each point: connected components of occupied voxels (26-neighbourhood)."""
    cells = np.floor(points / voxel_m).astype(np.int64)
    cells -= cells.min(axis=0) - 1  # >= 1, so every neighbour offset stays >= 0
    span = cells.max(axis=0) + 2
    if float(np.prod(span.astype(np.float64))) > 2.0 ** 62:  # a map spanning thousands of km: no flat key
        return _components(points, voxel_m * 4)
    encode = lambda c: (c[:, 0] * span[1] + c[:, 1]) * span[2] + c[:, 2]  # noqa: E731
    keys, cell_of = np.unique(encode(cells), return_inverse=True)  # sorted voxel keys, each point's voxel
    occupied = cells[np.unique(cell_of, return_index=True)[1]]  # one cell per key, in key order
    rows, cols = [], []
    for offset in _HALF_NEIGHBOURHOOD:
        neighbour = encode(occupied + np.array(offset))
        pos = np.searchsorted(keys, neighbour).clip(max=len(keys) - 1)
        hit = keys[pos] == neighbour
        rows.append(np.nonzero(hit)[0])
        cols.append(pos[hit])
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(keys), len(keys)))
    return connected_components(graph, directed=False)[1][cell_of.reshape(-1)]


def _centroid(points: np.ndarray, w: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(3,) the ``w``-weighted mean of ``points[rows]`` (w > 0)."""
    return (points[rows] * w[rows, None]).sum(0) / w[rows].sum()


def _split(labels: np.ndarray) -> list[np.ndarray]:
    """Row indices of each label's points (labels 0..K-1), one pass, empty labels left out."""
    order = np.argsort(labels, kind="stable")
    return [g for g in np.split(order, np.cumsum(np.bincount(labels))[:-1]) if len(g)]


def _regroup(pieces: list[np.ndarray], group: np.ndarray) -> list[np.ndarray]:
    """The pieces (row indices) joined by ``group`` (one label per piece): one array of rows per label, labels
    ascending, each label's pieces in their order. One sort, not a pass over the pieces per label (a million
    stray pieces took minutes)."""
    order = np.argsort(group, kind="stable")
    rows = np.concatenate([pieces[k] for k in order])
    sizes = np.bincount(group, weights=[len(g) for g in pieces]).astype(np.int64)
    return [g for g in np.split(rows, np.cumsum(sizes)[:-1]) if len(g)]


def _piece_sums(points: np.ndarray, w: np.ndarray, pieces: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(P,) each piece's weight and (P, 3) its ``w``-weighted centroid, in one pass over all rows."""
    owner = np.repeat(np.arange(len(pieces)), [len(g) for g in pieces])
    rows = np.concatenate(pieces)
    mass = np.bincount(owner, weights=w[rows], minlength=len(pieces))
    sums = [np.bincount(owner, weights=w[rows] * points[rows, j], minlength=len(pieces)) for j in range(3)]
    return mass, np.stack(sums, axis=1) / mass[:, None]


def group_instances(points: np.ndarray, weights: np.ndarray, voxel_m: float = 0.05,
                    min_gaussians: int = 20, min_fraction: float = 0.1, absorb: float = 0.5,
                    plane_gap_m: float = 0.3) -> list[QueryInstance]:
    """Split matching Gaussians into objects: connected components of occupied voxels (26-neighbourhood).

    points: (N, 3) m; weights: (N,) >= 0 (how much matching surface each point stands for). Pieces of one
    object that a gap of about a voxel keeps apart (a cabinet front matching in stripes) are joined: within
    each component at twice ``voxel_m``, the pieces lighter than ``absorb`` x its heaviest join the nearest
    heavier one (two like objects side by side stay two; 0: no joining). Patches of one wall, floor or ceiling
    (see :func:`_join_planes`) less than ``plane_gap_m`` apart are joined too (0: not). Groups smaller than
    ``min_gaussians`` or lighter than ``min_fraction`` of the strongest group are fragments (a few mislabelled
    Gaussians) and dropped; the strongest group always stays. A solid group (thicker than ``PLANE_THICKNESS_M``
    across its plane) is measured against the strongest solid group instead, which stays too: a floor the query
    misreads holds square metres of matching surface, and against it every real lamp or chair of the class was a
    fragment. Returns instances sorted by weight, strongest first; each instance's ``indices`` are rows of
    ``points``; centroids are weighted by ``weights``.
    """
    if len(points) == 0:
        return []
    if voxel_m <= 0:
        raise ValueError(f"voxel_m must be > 0, got {voxel_m}")
    if not 0 <= absorb <= 1:
        raise ValueError(f"absorb must be within [0, 1], got {absorb}")
    w = np.maximum(weights, 1e-12)
    pieces = _split(_components(points, voxel_m))
    if absorb > 0 and len(pieces) > 1:
        pieces = _join_pieces(points, w, pieces, _components(points, 2 * voxel_m), absorb)
    if plane_gap_m > 0 and len(pieces) > 1:
        pieces = _join_planes(points, w, pieces, plane_gap_m)
    mass = [float(weights[g].sum()) for g in pieces]
    strongest = max(range(len(pieces)), key=lambda k: (len(pieces[k]) >= min_gaussians, mass[k]))
    solid = [len(g) >= min_gaussians and not _flat(points, w, g) for g in pieces]
    strongest_solid = max((k for k in range(len(pieces)) if solid[k]), key=lambda k: mass[k], default=strongest)
    out = []
    for k, g in enumerate(pieces):
        reference = mass[strongest_solid if solid[k] else strongest]
        if k not in (strongest, strongest_solid) and (len(g) < min_gaussians or mass[k] < min_fraction * reference):
            continue
        out.append(QueryInstance(_centroid(points, w, g), np.percentile(points[g], 2, axis=0),
                                 np.percentile(points[g], 98, axis=0), len(g), mass[k], g))
    return sorted(out, key=lambda inst: -inst.weight)


def _join_pieces(points: np.ndarray, w: np.ndarray, pieces: list[np.ndarray], coarse: np.ndarray,
                 absorb: float) -> list[np.ndarray]:
    """Pieces (row indices) sharing a ``coarse`` component: the light ones (< ``absorb`` x the heaviest there)
    join the nearest (by weighted centroid) of the heavy ones."""
    mass, centre = _piece_sums(points, w, pieces)
    region = coarse[[g[0] for g in pieces]]  # a piece lies inside one coarse component
    heaviest = np.zeros(int(region.max()) + 1)
    np.maximum.at(heaviest, region, mass)
    light = mass < absorb * heaviest[region]
    if not light.any():
        return pieces
    target = np.arange(len(pieces))
    heavy_in = np.bincount(region[~light], minlength=len(heaviest))
    single = np.zeros(len(heaviest), np.int64)  # the heavy piece of regions that have one
    single[region[~light]] = np.nonzero(~light)[0]
    alone = light & (heavy_in[region] == 1)
    target[alone] = single[region[alone]]
    rest = light & ~alone
    if rest.any():  # several heavy pieces in the region: the nearest, found in one tree (region as a far 4th axis)
        heavy = np.nonzero(~light & (heavy_in[region] > 1))[0]
        apart = 4.0 * (float(np.ptp(centre, axis=0).max()) + 1.0)  # farther than any two centroids
        tree = cKDTree(np.c_[centre[heavy], region[heavy] * apart])
        target[rest] = heavy[tree.query(np.c_[centre[rest], region[rest] * apart])[1]]
    return _regroup(pieces, target)


# A piece is a patch of a structural plane (wall, floor, ceiling) when its points lie within this much of their
# best-fit plane (standard deviation; a surface's splats jitter by a centimetre or two) and spread at least this
# far along its narrower in-plane axis (standard deviation: a patch about 0.9 m wide or more; a picture or a rug
# is flat too, but narrower).
PLANE_THICKNESS_M = 0.03
PLANE_MIN_SPREAD_M = 0.25
PLANE_MAX_ANGLE_DEG = 10.0
PLANE_MAX_OFFSET_M = 0.05
PLANE_GAP_SAMPLES = 20_000


def _plane_fit(points: np.ndarray, w: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``w``-weighted plane through ``points[rows]``: centre (3,), unit normal (3,), and the standard
    deviations (3,) along its principal axes, widest first (the last one across the plane)."""
    centre = _centroid(points, w, rows)
    d = points[rows] - centre
    wr = w[rows] / w[rows].sum()
    values, vectors = np.linalg.eigh((d * wr[:, None]).T @ d)  # ascending
    return centre, vectors[:, 0], np.sqrt(np.maximum(values[::-1], 0.0))


def _flat(points: np.ndarray, w: np.ndarray, rows: np.ndarray) -> bool:
    """Whether ``points[rows]`` lie within ``PLANE_THICKNESS_M`` (standard deviation) of their plane: a patch of a
    surface (a wall, a picture, a rug), not a solid object. Fewer than 3 points count as flat."""
    return len(rows) < 3 or bool(_plane_fit(points, w, rows)[2][2] <= PLANE_THICKNESS_M)


def _join_planes(points: np.ndarray, w: np.ndarray, pieces: list[np.ndarray], gap_m: float) -> list[np.ndarray]:
    """Join patches of one structural plane: pieces that are each flat and wide (``PLANE_THICKNESS_M``,
    ``PLANE_MIN_SPREAD_M``), lie in the same plane (normals within ``PLANE_MAX_ANGLE_DEG``, each centre within
    ``PLANE_MAX_OFFSET_M`` of the other's plane) and come within ``gap_m`` of each other. A ceiling the query
    matches in patches (where other Gaussians of it read as something else) is one surface, not six objects."""
    fits = [_plane_fit(points, w, g) if len(g) >= 3 else None for g in pieces]
    flat = [k for k, f in enumerate(fits)
            if f is not None and f[2][2] <= PLANE_THICKNESS_M and f[2][1] >= PLANE_MIN_SPREAD_M]
    if len(flat) < 2:
        return pieces
    cos_max = np.cos(np.radians(PLANE_MAX_ANGLE_DEG))
    # Gaps measured on at most PLANE_GAP_SAMPLES points a piece (every k-th: map order mixes places, so a wall's
    # sample stays spread over it, a few cm apart): three patches of 1.5M points join in +0.1 s, not +0.5 s.
    sample = {k: points[pieces[k][:: max(1, len(pieces[k]) // PLANE_GAP_SAMPLES)]] for k in flat}
    trees = {k: cKDTree(sample[k]) for k in flat}
    edges = []
    for a, b in itertools.combinations(flat, 2):
        (ca, na, _), (cb, nb, _) = fits[a], fits[b]
        coplanar = abs(na @ nb) >= cos_max and max(abs((cb - ca) @ na), abs((ca - cb) @ nb)) <= PLANE_MAX_OFFSET_M
        if coplanar and np.isfinite(trees[a].query(sample[b], distance_upper_bound=gap_m)[0]).any():
            edges.append((a, b))
    if not edges:
        return pieces
    rows, cols = np.array(edges).T
    graph = coo_matrix((np.ones(len(edges)), (rows, cols)), shape=(len(pieces), len(pieces)))
    joined = connected_components(graph, directed=False)[1]
    return _regroup(pieces, joined)


def describe_instances(instances: list[QueryInstance], limit: int = 5) -> str:
    """One line for people: how many objects matched and where each is (strongest first, metres)."""
    if not instances:
        return "no Gaussians above the relevancy threshold"
    fmt = lambda v: "(" + ", ".join(f"{x:.2f}" for x in v) + ")"  # noqa: E731
    parts = [f"#{k} centroid {fmt(i.centroid)} box {fmt(i.box_min)}..{fmt(i.box_max)} ({i.gaussians} Gaussians)"
             for k, i in enumerate(instances[:limit], start=1)]
    more = f"; {len(instances) - limit} more" if len(instances) > limit else ""
    return f"{len(instances)} object{'s' if len(instances) != 1 else ''}: " + "; ".join(parts) + more
