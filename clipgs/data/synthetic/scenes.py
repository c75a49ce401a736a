"""Scene descriptions: objects (class, primitives, texture), lights, camera path."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from clipgs.data.synthetic.raycast import Box, Cylinder, PackedPrimitives, Primitive, Sphere, pack
from clipgs.data.synthetic.textures import Checker, Noise, Solid, Stripes
from clipgs.geometry import look_at


@dataclass
class SceneObject:
    class_id: int
    primitives: list[Primitive]
    texture: Callable[[np.ndarray], np.ndarray]


@dataclass
class Scene:
    """Objects (instance id = position in ``objects`` + 1), class names, and a camera path."""

    name: str
    classes: list[str]
    objects: list[SceneObject]
    poses: list[np.ndarray]  # world_from_camera, OpenCV optical frame
    lights: list[tuple[np.ndarray, float]] = field(default_factory=list)  # (unit direction to light, weight)
    ambient: float = 0.35

    @cached_property
    def packed(self) -> PackedPrimitives:
        """The primitives as flat arrays for the compiled caster (built once per scene)."""
        return pack([o.primitives for o in self.objects])


ROOM_CLASSES = ["void", "wall", "floor", "ceiling", "table", "chair", "sofa", "cabinet", "lamp", "plant",
                "tv", "vase", "bookshelf", "rug", "door", "pillow"]


def _room(seed: int, n_frames: int) -> Scene:
    """A 6 x 5 x 2.8 m living room with 12 object classes; the seed jitters positions and colours."""
    rng = np.random.default_rng(seed)
    cid = {name: i for i, name in enumerate(ROOM_CLASSES)}

    def jit(v: float, s: float = 0.08) -> float:
        return float(v + rng.uniform(-s, s))

    def col(r: float, g: float, b: float, s: float = 0.06) -> tuple[float, float, float]:
        return tuple(float(np.clip(c + rng.uniform(-s, s), 0.02, 0.98)) for c in (r, g, b))

    objs: list[SceneObject] = []
    add = lambda name, prims, tex: objs.append(SceneObject(cid[name], prims, tex))  # noqa: E731

    # Shell: walls are separate instances of one class.
    wall_tex = Noise(col(0.80, 0.78, 0.72), col(0.70, 0.68, 0.60), scale=0.4, seed=seed + 1)
    add("wall", [Box((-3.05, 0, 1.4), (0.05, 2.6, 1.45))], wall_tex)
    add("wall", [Box((3.05, 0, 1.4), (0.05, 2.6, 1.45))], wall_tex)
    add("wall", [Box((0, -2.55, 1.4), (3.1, 0.05, 1.45))], Noise(col(0.62, 0.72, 0.80), col(0.55, 0.63, 0.72),
                                                                  scale=0.4, seed=seed + 2))
    add("wall", [Box((0, 2.55, 1.4), (3.1, 0.05, 1.45))], wall_tex)
    add("floor", [Box((0, 0, -0.05), (3.1, 2.6, 0.05))], Checker(col(0.55, 0.42, 0.30), col(0.47, 0.35, 0.24), 0.5))
    add("ceiling", [Box((0, 0, 2.85), (3.1, 2.6, 0.05))], Solid(col(0.92, 0.92, 0.90, 0.02)))

    tx, ty = jit(0.2), jit(0.1)
    add("rug", [Box((tx, ty, 0.005), (1.3, 0.9, 0.005))],
        Stripes((col(0.70, 0.15, 0.15), col(0.85, 0.78, 0.60)), period=0.25, axis=0))
    legs = [Box((tx + sx * 0.55, ty + sy * 0.35, 0.355), (0.03, 0.03, 0.355)) for sx in (-1, 1) for sy in (-1, 1)]
    add("table", [Box((tx, ty, 0.74), (0.6, 0.4, 0.03)), *legs],
        Stripes((col(0.50, 0.32, 0.18), col(0.58, 0.38, 0.22)), period=0.04, axis=1))
    add("vase", [Cylinder((tx - 0.2, ty + 0.1, 0.77), 0.07, 0.28)],
        Checker(col(0.15, 0.30, 0.75), col(0.85, 0.88, 0.95), 0.05))
    for side, color in ((-1, col(0.75, 0.20, 0.15)), (1, col(0.20, 0.35, 0.70))):
        cx = tx + side * 0.95
        seat = Box((cx, ty, 0.45), (0.22, 0.22, 0.03))
        back = Box((cx + side * 0.2, ty, 0.75), (0.03, 0.22, 0.3))
        chair_legs = [Box((cx + a * 0.19, ty + b * 0.19, 0.21), (0.02, 0.02, 0.21)) for a in (-1, 1) for b in (-1, 1)]
        add("chair", [seat, back, *chair_legs], Solid(color))
    sx = jit(-0.3)
    add("sofa", [Box((sx, 2.05, 0.22), (1.0, 0.4, 0.22)), Box((sx, 2.38, 0.6), (1.0, 0.1, 0.4)),
                 Box((sx - 1.05, 2.05, 0.35), (0.08, 0.4, 0.35)), Box((sx + 1.05, 2.05, 0.35), (0.08, 0.4, 0.35))],
        Noise(col(0.15, 0.50, 0.50), col(0.10, 0.38, 0.40), scale=0.08, seed=seed + 3))
    add("pillow", [Box((sx - 0.5, 2.15, 0.56), (0.22, 0.08, 0.16), yaw=0.15)],
        Checker(col(0.90, 0.80, 0.20), col(0.95, 0.95, 0.85), 0.08))
    cy = jit(-1.2)
    add("cabinet", [Box((-2.72, cy, 0.45), (0.25, 0.6, 0.45))],
        Stripes((col(0.88, 0.88, 0.86), col(0.70, 0.70, 0.68)), period=0.3, axis=2))
    add("tv", [Box((-2.9, cy, 1.25), (0.04, 0.55, 0.32))], Solid(col(0.08, 0.08, 0.10, 0.02)))
    bx = jit(1.2)
    add("bookshelf", [Box((bx, -2.3, 0.9), (0.6, 0.18, 0.9))],
        Stripes((col(0.60, 0.20, 0.20), col(0.20, 0.50, 0.25), col(0.85, 0.75, 0.30), col(0.25, 0.25, 0.55)),
                period=0.07, axis=0))
    lx, ly = jit(2.4), jit(1.9)
    lamp_tex = Solid(col(0.95, 0.90, 0.70))
    add("lamp", [Cylinder((lx, ly, 0.0), 0.15, 0.03), Cylinder((lx, ly, 0.03), 0.025, 1.37),
                 Cylinder((lx, ly, 1.4), 0.2, 0.3)], lamp_tex)
    px, py = jit(2.4), jit(-1.8)
    add("plant", [Cylinder((px, py, 0.0), 0.18, 0.35), Sphere((px, py, 0.75), 0.35)],
        Noise(col(0.20, 0.55, 0.15), col(0.10, 0.35, 0.08), scale=0.06, seed=seed + 4))
    add("door", [Box((2.985, jit(-0.3), 1.0), (0.03, 0.45, 1.0))],
        Stripes((col(0.45, 0.28, 0.15), col(0.40, 0.25, 0.13)), period=0.05, axis=1))

    poses = []
    centre = np.array([tx, ty, 0.6])
    phase = rng.uniform(0, 2 * np.pi)
    for i in range(n_frames):
        th = phase + 2 * np.pi * i / n_frames
        eye = np.array([tx + 1.85 * np.cos(th), ty + 1.35 * np.sin(th), 1.45 + 0.1 * np.sin(3 * th)])
        target = centre + np.array([0.5 * np.cos(3 * th), 0.5 * np.sin(3 * th), 0.0])
        poses.append(look_at(eye, target))
    lights = [(np.array([0.3, 0.2, 1.0]) / np.linalg.norm([0.3, 0.2, 1.0]), 0.45),
              (np.array([-0.6, 0.7, 0.4]) / np.linalg.norm([-0.6, 0.7, 0.4]), 0.2)]
    return Scene("room", ROOM_CLASSES, objs, poses, lights, ambient=0.35)


def _apartment(seed: int, n_frames: int) -> Scene:
    from clipgs.data.synthetic.apartment import build_apartment  # imports this module's Scene

    return build_apartment(seed, n_frames)


SCENES: dict[str, Callable[[int, int], Scene]] = {"room": _room, "apartment": _apartment}
SCENE_DEFAULTS = {"room": (120, 160, 120), "apartment": (1500, 320, 240)}  # frames, width, height


def build_scene(name: str, seed: int = 0, n_frames: int = 120) -> Scene:
    if name not in SCENES:
        raise ValueError(f"unknown synthetic scene {name!r}; available: {sorted(SCENES)}")
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    return SCENES[name](seed, n_frames)
