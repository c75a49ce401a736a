"""A four-room apartment for long runs: living room, kitchen, office and bedroom on a 10 x 8 m plan, joined by
four doorways in a loop, 23 object classes with repeated instances, and a walk through every room that laps
the loop twice (the second lap revisits everything).

Plan (metres, z up, walls 0.1 m thick, ceiling 2.6 m): living room x 0-5, y 0-4; kitchen x 5-10, y 0-4;
office x 5-10, y 4-8; bedroom x 0-5, y 4-8. The seed jitters colours and small furniture positions.
"""
from __future__ import annotations

import numpy as np

from clipgs.data.synthetic.raycast import Box, Cylinder, Primitive, Sphere
from clipgs.data.synthetic.scenes import Scene, SceneObject
from clipgs.data.synthetic.textures import Checker, Noise, Solid, Stripes
from clipgs.geometry import look_at

APARTMENT_CLASSES = ["void", "wall", "floor", "ceiling", "table", "chair", "sofa", "cabinet", "lamp", "plant",
                     "tv", "vase", "bookshelf", "rug", "door", "pillow", "bed", "nightstand", "wardrobe", "desk",
                     "monitor", "refrigerator", "counter", "stove", "picture", "trash bin", "armchair"]
HEIGHT = 2.6
WALL = 0.05  # half thickness
DOOR_W, DOOR_H = 1.0, 2.1
# Doorways: (axis of the wall, the wall's coordinate, the opening's centre along the wall).
DOORS = {"living-kitchen": ("x", 5.0, 2.0), "kitchen-office": ("y", 4.0, 7.5),
         "office-bedroom": ("x", 5.0, 6.0), "bedroom-living": ("y", 4.0, 2.5)}
# One lap, (x, y) waypoints; a doorway is crossed straight (approach, opening, exit).
LAP = [(1.6, 1.5), (3.4, 1.2), (4.4, 2.0), (5.0, 2.0), (5.6, 2.0),                  # living -> kitchen
       (7.0, 1.1), (9.2, 1.3), (9.1, 3.0), (7.5, 3.4), (7.5, 4.0), (7.5, 4.6),      # kitchen -> office
       (8.3, 5.2), (8.2, 7.0), (6.6, 7.0), (5.6, 6.0), (5.0, 6.0), (4.4, 6.0),      # office -> bedroom
       (3.7, 6.8), (2.7, 6.4), (3.3, 5.0), (2.5, 4.6), (2.5, 4.0), (2.5, 3.4)]      # bedroom -> living
LAPS = 2


def _wall(axis: str, at: float, lo: float, hi: float, openings: list[float]) -> list[Box]:
    """A wall along ``axis``'s perpendicular at coordinate ``at`` from ``lo`` to ``hi``, with doorways centred
    at ``openings`` (a lintel above each)."""
    edges = [lo, *[e for c in sorted(openings) for e in (c - DOOR_W / 2, c + DOOR_W / 2)], hi]
    boxes = []
    for a, b in zip(edges[::2], edges[1::2]):
        boxes.append(((a + b) / 2, (b - a) / 2, HEIGHT / 2, HEIGHT / 2))
    for c in openings:
        boxes.append((c, DOOR_W / 2, (HEIGHT + DOOR_H) / 2, (HEIGHT - DOOR_H) / 2))
    if axis == "x":  # the wall lies in the plane x = at
        return [Box((at, m, z), (WALL, h, hz)) for m, h, z, hz in boxes]
    return [Box((m, at, z), (h, WALL, hz)) for m, h, z, hz in boxes]


def _table(x: float, y: float, hx: float, hy: float, top: float) -> list[Primitive]:
    legs = [Box((x + sx * (hx - 0.05), y + sy * (hy - 0.05), top / 2), (0.03, 0.03, top / 2))
            for sx in (-1, 1) for sy in (-1, 1)]
    return [Box((x, y, top), (hx, hy, 0.03)), *legs]


def _chair(x: float, y: float, facing: tuple[float, float]) -> list[Primitive]:
    """A chair whose sitter faces ``facing`` (a unit axis direction); the back is behind the seat."""
    fx, fy = facing
    back = Box((x - fx * 0.2, y - fy * 0.2, 0.75), (0.03 if fx else 0.22, 0.03 if fy else 0.22, 0.3))
    legs = [Box((x + a * 0.19, y + b * 0.19, 0.21), (0.02, 0.02, 0.21)) for a in (-1, 1) for b in (-1, 1)]
    return [Box((x, y, 0.45), (0.22, 0.22, 0.03)), back, *legs]


def _lamp(x: float, y: float, base_z: float, height: float) -> list[Primitive]:
    return [Cylinder((x, y, base_z), 0.13, 0.03), Cylinder((x, y, base_z + 0.03), 0.02, height - 0.3),
            Cylinder((x, y, base_z + height - 0.27), 0.17, 0.27)]


def _plant(x: float, y: float) -> list[Primitive]:
    return [Cylinder((x, y, 0.0), 0.16, 0.32), Sphere((x, y, 0.7), 0.32)]


def build_apartment(seed: int, n_frames: int) -> Scene:
    """The apartment with ``n_frames`` poses over :data:`LAPS` laps."""
    rng = np.random.default_rng(seed)
    cid = {name: i for i, name in enumerate(APARTMENT_CLASSES)}
    objs: list[SceneObject] = []

    def jit(v: float, s: float = 0.06) -> float:
        return float(v + rng.uniform(-s, s))

    def col(r: float, g: float, b: float, s: float = 0.06) -> tuple[float, float, float]:
        return tuple(float(np.clip(c + rng.uniform(-s, s), 0.02, 0.98)) for c in (r, g, b))

    def add(name: str, prims: list[Primitive], tex) -> None:
        objs.append(SceneObject(cid[name], prims, tex))

    def noise(a, b, scale=0.3):
        return Noise(col(*a), col(*b), scale=scale, seed=int(rng.integers(1 << 30)))

    # Shell: four outer walls, the two inner walls with their doorways, a floor and a ceiling per room.
    plaster = noise((0.82, 0.80, 0.74), (0.72, 0.70, 0.63), 0.4)
    add("wall", _wall("y", -WALL, -WALL, 10 + WALL, []), plaster)
    add("wall", _wall("y", 8 + WALL, -WALL, 10 + WALL, []), noise((0.66, 0.74, 0.80), (0.58, 0.65, 0.72), 0.4))
    add("wall", _wall("x", -WALL, 0, 8, []), noise((0.80, 0.72, 0.66), (0.70, 0.62, 0.56), 0.4))
    add("wall", _wall("x", 10 + WALL, 0, 8, []), plaster)
    add("wall", _wall("x", 5.0, 0, 8, [DOORS["living-kitchen"][2], DOORS["office-bedroom"][2]]), plaster)
    add("wall", _wall("y", 4.0, 0, 10, [DOORS["bedroom-living"][2], DOORS["kitchen-office"][2]]),
        noise((0.78, 0.80, 0.70), (0.68, 0.70, 0.60), 0.4))
    floors = [Checker(col(0.55, 0.42, 0.30), col(0.47, 0.35, 0.24), 0.5),       # living: wood
              Checker(col(0.85, 0.85, 0.82), col(0.35, 0.35, 0.38), 0.3),       # kitchen: tiles
              noise((0.45, 0.45, 0.50), (0.35, 0.36, 0.42), 0.1),              # office: carpet
              Stripes((col(0.62, 0.48, 0.34), col(0.56, 0.42, 0.29)), 0.12, 0)]  # bedroom: boards
    for (x0, y0), tex in zip([(0, 0), (5, 0), (5, 4), (0, 4)], floors):
        add("floor", [Box((x0 + 2.5, y0 + 2.0, -0.05), (2.5, 2.0, 0.05))], tex)
        add("ceiling", [Box((x0 + 2.5, y0 + 2.0, HEIGHT + 0.05), (2.5, 2.0, 0.05))], Solid(col(0.93, 0.93, 0.91, 0.02)))
    leaf = [Box((5.5, 2.52, 1.0), (0.45, 0.02, 1.0)), Box((7.0, 4.5, 1.0), (0.02, 0.45, 1.0)),
            Box((4.5, 5.48, 1.0), (0.45, 0.02, 1.0)), Box((2.0, 3.5, 1.0), (0.02, 0.45, 1.0))]
    for box in leaf:  # door leaves, open at right angles to their walls
        add("door", [box], Stripes((col(0.45, 0.28, 0.15), col(0.40, 0.25, 0.13)), period=0.05, axis=2))

    # Living room.
    add("sofa", [Box((0.5, 2.4, 0.22), (0.4, 1.0, 0.22)), Box((0.15, 2.4, 0.6), (0.1, 1.0, 0.4)),
                 Box((0.5, 1.35, 0.35), (0.4, 0.08, 0.35)), Box((0.5, 3.45, 0.35), (0.4, 0.08, 0.35))],
        noise((0.15, 0.50, 0.50), (0.10, 0.38, 0.40), 0.08))
    for py in (jit(1.95), jit(2.85)):
        add("pillow", [Box((0.45, py, 0.56), (0.08, 0.22, 0.16))],
            Checker(col(0.90, 0.80, 0.20), col(0.95, 0.95, 0.85), 0.08))
    tx = jit(1.35, 0.03)
    add("rug", [Box((tx, 2.4, 0.005), (0.7, 1.0, 0.005))],
        Stripes((col(0.70, 0.15, 0.15), col(0.85, 0.78, 0.60)), period=0.25, axis=1))
    add("table", _table(tx, 2.4, 0.3, 0.5, 0.42), Stripes((col(0.50, 0.32, 0.18), col(0.58, 0.38, 0.22)), 0.04, 0))
    add("vase", [Cylinder((tx, jit(2.2), 0.45), 0.06, 0.25)],
        Checker(col(0.15, 0.30, 0.75), col(0.85, 0.88, 0.95), 0.05))
    add("cabinet", [Box((2.5, 0.3, 0.3), (0.8, 0.25, 0.3))],
        Stripes((col(0.88, 0.88, 0.86), col(0.70, 0.70, 0.68)), 0.3, 0))
    add("tv", [Box((2.5, 0.08, 1.25), (0.6, 0.03, 0.35))], Solid(col(0.08, 0.08, 0.10, 0.02)))
    add("lamp", _lamp(0.35, 0.35, 0.0, 1.6), Solid(col(0.95, 0.90, 0.70)))
    add("plant", _plant(4.55, 0.45), noise((0.20, 0.55, 0.15), (0.10, 0.35, 0.08), 0.06))
    add("bookshelf", [Box((4.0, 3.75, 0.9), (0.6, 0.18, 0.9))],
        Stripes((col(0.60, 0.20, 0.20), col(0.20, 0.50, 0.25), col(0.85, 0.75, 0.30), col(0.25, 0.25, 0.55)), 0.07, 0))
    add("picture", [Box((0.03, 2.4, 1.55), (0.02, 0.45, 0.3))],
        Checker(col(0.80, 0.40, 0.20), col(0.20, 0.40, 0.70), 0.15))
    add("armchair", [Box((3.9, 2.6, 0.22), (0.38, 0.38, 0.22)), Box((4.25, 2.6, 0.6), (0.08, 0.38, 0.3))],
        noise((0.55, 0.25, 0.35), (0.45, 0.18, 0.28), 0.06))

    # Kitchen.
    add("counter", [Box((7.75, 0.33, 0.45), (1.25, 0.3, 0.45))],
        Checker(col(0.92, 0.92, 0.90), col(0.80, 0.80, 0.78), 0.6))
    add("stove", [Box((8.2, 0.33, 0.91), (0.35, 0.28, 0.02))],
        Checker(col(0.12, 0.12, 0.12), col(0.30, 0.30, 0.30), 0.14))
    add("cabinet", [Box((7.75, 0.22, 1.85), (1.25, 0.18, 0.35))],
        Stripes((col(0.70, 0.82, 0.88), col(0.60, 0.72, 0.78)), 0.5, 0))
    add("refrigerator", [Box((9.6, 0.38, 0.95), (0.35, 0.33, 0.95))], Solid(col(0.85, 0.86, 0.88, 0.03)))
    add("trash bin", [Cylinder((5.4, 0.35, 0.0), 0.17, 0.45)], Solid(col(0.25, 0.30, 0.30)))
    ty = jit(2.4, 0.04)
    add("table", _table(7.6, ty, 0.6, 0.4, 0.74), noise((0.60, 0.45, 0.30), (0.52, 0.38, 0.24), 0.05))
    chair_tex = Solid(col(0.75, 0.20, 0.15))
    for x, y, facing in ((6.7, ty, (1, 0)), (8.5, ty, (-1, 0)), (7.3, ty - 0.65, (0, 1)), (7.9, ty - 0.65, (0, 1))):
        add("chair", _chair(x, y, facing), chair_tex)
    add("vase", [Cylinder((jit(7.7), ty, 0.77), 0.07, 0.22)], Solid(col(0.85, 0.30, 0.45)))
    add("plant", _plant(9.55, 3.55), noise((0.25, 0.60, 0.20), (0.12, 0.40, 0.10), 0.06))

    # Office.
    add("desk", _table(9.6, 6.0, 0.33, 0.7, 0.74), Stripes((col(0.35, 0.25, 0.18), col(0.40, 0.29, 0.20)), 0.05, 1))
    add("monitor", [Box((9.78, 6.0, 1.05), (0.03, 0.3, 0.2)), Box((9.8, 6.0, 0.8), (0.04, 0.04, 0.05))],
        Solid(col(0.10, 0.10, 0.12, 0.02)))
    add("chair", _chair(8.95, 6.0, (1, 0)), Solid(col(0.20, 0.35, 0.70)))
    add("bookshelf", [Box((7.5, 7.78, 0.9), (0.8, 0.18, 0.9))],
        Stripes((col(0.25, 0.45, 0.60), col(0.80, 0.60, 0.30), col(0.55, 0.20, 0.30)), 0.09, 0))
    add("lamp", _lamp(5.45, 7.55, 0.0, 1.7), Solid(col(0.90, 0.90, 0.85)))
    add("picture", [Box((6.2, 4.08, 1.5), (0.4, 0.02, 0.28))],
        Stripes((col(0.20, 0.60, 0.50), col(0.90, 0.85, 0.60)), 0.1, 0))
    add("plant", _plant(9.55, 4.45), noise((0.30, 0.50, 0.12), (0.15, 0.32, 0.06), 0.06))
    add("cabinet", [Box((5.4, 4.6, 0.5), (0.3, 0.3, 0.5))], Solid(col(0.55, 0.58, 0.60)))
    add("trash bin", [Cylinder((9.6, 7.6, 0.0), 0.15, 0.4)], Solid(col(0.70, 0.25, 0.20)))

    # Bedroom.
    add("bed", [Box((1.05, 6.0, 0.25), (1.0, 0.8, 0.25)), Box((0.1, 6.0, 0.55), (0.05, 0.8, 0.55))],
        noise((0.80, 0.82, 0.90), (0.65, 0.68, 0.80), 0.12))
    for py in (5.6, 6.4):
        add("pillow", [Box((0.4, jit(py, 0.03), 0.58), (0.18, 0.3, 0.08))],
            Checker(col(0.95, 0.70, 0.75), col(0.98, 0.95, 0.95), 0.08))
    for ny in (4.9, 7.1):
        add("nightstand", [Box((0.3, ny, 0.27), (0.22, 0.2, 0.27))],
            Stripes((col(0.55, 0.35, 0.20), col(0.45, 0.28, 0.16)), 0.15, 2))
        add("lamp", _lamp(0.3, ny, 0.54, 0.55), Solid(col(0.95, 0.85, 0.60)))
    add("wardrobe", [Box((3.7, 7.7, 1.0), (0.7, 0.28, 1.0))],
        Stripes((col(0.85, 0.80, 0.70), col(0.75, 0.70, 0.60)), 0.7, 0))
    add("picture", [Box((0.03, 6.0, 1.6), (0.02, 0.5, 0.3))], noise((0.20, 0.30, 0.70), (0.90, 0.60, 0.20), 0.1))
    add("rug", [Box((jit(2.5), 6.0, 0.005), (0.35, 0.8, 0.005))],
        Stripes((col(0.30, 0.50, 0.30), col(0.80, 0.80, 0.70)), 0.2, 0))
    add("plant", _plant(4.55, 4.45), noise((0.20, 0.55, 0.25), (0.08, 0.30, 0.12), 0.06))
    add("armchair", [Box((4.5, 7.3, 0.22), (0.38, 0.38, 0.22)), Box((4.5, 7.65, 0.6), (0.38, 0.08, 0.3))],
        noise((0.35, 0.40, 0.55), (0.25, 0.30, 0.45), 0.06))

    lights = [(np.array([0.3, 0.2, 1.0]) / np.linalg.norm([0.3, 0.2, 1.0]), 0.45),
              (np.array([-0.6, 0.7, 0.4]) / np.linalg.norm([-0.6, 0.7, 0.4]), 0.2)]
    return Scene("apartment", APARTMENT_CLASSES, objs, walk(n_frames, rng), lights, ambient=0.35)


def walk(n_frames: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``n_frames`` camera poses, evenly spaced along a smooth closed path through :data:`LAP` driven
    :data:`LAPS` times. The camera looks ahead and pans up to ±40° (less near doorways), tilted ~12° down."""
    pts = np.asarray(LAP, dtype=np.float64)
    dense = _catmull_rom_closed(pts, 40)
    seg = np.linalg.norm(np.diff(np.vstack([dense, dense[:1]]), axis=0), axis=1)
    arc = np.r_[0.0, np.cumsum(seg)]
    lap_len = arc[-1]
    doors = np.array([(at, c) if axis == "x" else (c, at) for axis, at, c in DOORS.values()])
    phase = rng.uniform(0, 2 * np.pi)
    poses = []
    for i in range(n_frames):
        s = (LAPS * lap_len * i / max(n_frames, 1)) % lap_len
        x = np.interp(s, arc, np.r_[dense[:, 0], dense[0, 0]])
        y = np.interp(s, arc, np.r_[dense[:, 1], dense[0, 1]])
        ahead = (s + 0.3) % lap_len
        ax = np.interp(ahead, arc, np.r_[dense[:, 0], dense[0, 0]])
        ay = np.interp(ahead, arc, np.r_[dense[:, 1], dense[0, 1]])
        heading = np.arctan2(ay - y, ax - x)
        near_door = np.min(np.hypot(doors[:, 0] - x, doors[:, 1] - y))
        pan = np.radians(40.0) * np.clip((near_door - 0.5) / 1.0, 0.0, 1.0) * np.sin(2 * np.pi * s / 4.0 + phase)
        yaw, pitch = heading + pan, np.radians(-12.0 + 4.0 * np.sin(2 * np.pi * s / 7.0))
        eye = np.array([x, y, 1.35 + 0.05 * np.sin(2 * np.pi * s / 3.0)])
        look = np.array([np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch), np.sin(pitch)])
        poses.append(look_at(eye, eye + look))
    return poses


def _catmull_rom_closed(pts: np.ndarray, per_segment: int) -> np.ndarray:
    """(N * per_segment, 2) points on the closed uniform Catmull-Rom curve through ``pts``."""
    n = len(pts)
    t = np.linspace(0.0, 1.0, per_segment, endpoint=False)[:, None]
    out = []
    for i in range(n):
        p0, p1, p2, p3 = pts[i - 1], pts[i], pts[(i + 1) % n], pts[(i + 2) % n]
        out.append(0.5 * (2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                          + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3))
    return np.vstack(out)
