"""The synthetic scenes: the compiled ray caster against the NumPy reference, the apartment's layout and walk,
parallel generation, textures on cell boundaries."""
from __future__ import annotations

import numpy as np
import pytest

from clipgs.data.dataset import open_dataset
from clipgs.data.synthetic import build_scene, generate_scene
from clipgs.data.synthetic.apartment import APARTMENT_CLASSES
from clipgs.data.synthetic.generate import render_view
from clipgs.data.synthetic.raycast import Box, compiled_available
from clipgs.data.synthetic.textures import Checker, Stripes
from clipgs.geometry import intrinsics_from_hfov

STRUCTURE = {"void", "wall", "floor", "ceiling"}
ROOMS = {"living": (0, 5, 0, 4), "kitchen": (5, 10, 0, 4), "office": (5, 10, 4, 8), "bedroom": (0, 5, 4, 8)}
needs_compiler = pytest.mark.skipif(not compiled_available(), reason="no C++ compiler for the ray caster")


@needs_compiler
@pytest.mark.parametrize("scene, frames", [("room", 12), ("apartment", 1500)])
def test_compiled_caster_renders_what_the_numpy_reference_does(scene, frames):
    sc = build_scene(scene, 0, frames)
    K = intrinsics_from_hfov(64, 48, 90)
    for pose in sc.poses[:: max(1, frames // 4)][:4]:
        fast, ref = render_view(sc, K, 64, 48, pose), render_view(sc, K, 64, 48, pose, compiled=False)
        # same hits; only the rounding of ray directions may differ, so a pixel exactly on an edge could flip
        assert np.mean(fast.labels != ref.labels) < 1e-3 and np.mean(fast.instances != ref.instances) < 1e-3
        same = fast.instances == ref.instances
        np.testing.assert_allclose(fast.depth[same], ref.depth[same], rtol=1e-9, atol=1e-9)
        assert np.mean(np.abs(fast.rgb.astype(int) - ref.rgb) > 1) < 1e-3


def test_apartment_has_four_rooms_twenty_object_classes_and_repeats():
    sc = build_scene("apartment", 0, 1500)
    names = [sc.classes[o.class_id] for o in sc.objects]
    objects = [n for n in names if n not in STRUCTURE]
    assert sc.classes == APARTMENT_CLASSES and len(set(objects)) >= 20
    repeated = {n for n in set(objects) if objects.count(n) >= 2}
    assert {"chair", "lamp", "plant", "pillow", "picture", "door"} <= repeated
    assert names.count("floor") == 4 and len(sc.poses) == 1500


def test_apartment_walk_visits_every_room_twice_and_stays_clear_of_furniture():
    sc = build_scene("apartment", 0, 600)
    xy = np.array([p[:3, 3][:2] for p in sc.poses])
    steps = np.linalg.norm(np.diff(xy, axis=0), axis=1)
    assert steps.max() < 3 * np.median(steps)  # evenly spaced, no jumps
    for half in (xy[:300], xy[300:]):  # two laps: each visits every room
        for name, (x0, x1, y0, y1) in ROOMS.items():
            x, y = half[:, 0], half[:, 1]
            inside = (x > x0 + 0.1) & (x < x1 - 0.1) & (y > y0 + 0.1) & (y < y1 - 0.1)
            assert inside.sum() >= 20, name
    np.testing.assert_allclose(xy[0], xy[300], atol=1e-6)  # the second lap revisits the first
    K = intrinsics_from_hfov(48, 36, 90)
    for pose in sc.poses[::25]:  # never inside or touching an object
        view = render_view(sc, K, 48, 36, pose)
        assert np.count_nonzero(view.depth) == view.depth.size and view.depth.min() > 0.25


def test_parallel_generation_writes_the_same_frames(tmp_path):
    kw = dict(scene="apartment", n_frames=6, width=40, height=30, noise="realistic", progress=False)
    serial = generate_scene(tmp_path / "serial", workers=1, **kw)
    parallel = generate_scene(tmp_path / "parallel", workers=2, **kw)
    for sub in ("rgb/rgb_5.png", "depth/depth_5.png", "semantic_instance/semantic_instance_5.png", "traj_w_c.txt"):
        assert (serial / sub).read_bytes() == (parallel / sub).read_bytes(), sub
    ds = open_dataset(parallel)
    assert len(ds) == 6 and list(ds.classes) == APARTMENT_CLASSES


def test_a_face_on_a_cell_boundary_gets_one_colour():
    rng = np.random.default_rng(0)
    on_plane = np.c_[rng.uniform(0.01, 0.49, 1000), rng.uniform(0.01, 0.49, 1000), rng.normal(0, 1e-13, 1000)]
    checker = Checker((1.0, 0.0, 0.0), (0.0, 0.0, 1.0), period=0.5)
    assert len(np.unique(checker(on_plane), axis=0)) == 1  # a floor at z = 0 is not speckled by rounding
    top = np.c_[on_plane[:, :2], 0.9 + on_plane[:, 2]]  # a top face at 3 periods
    stripes = Stripes(((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)), period=0.3, axis=2)
    assert len(np.unique(stripes(top), axis=0)) == 1


def test_box_hits_match_by_hand():
    box = Box((0.0, 0.0, 0.0), (1.0, 0.5, 0.25), yaw=np.pi / 2)  # rotated: 0.5 along x, 1.0 along y
    o = np.array([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 3.0], [3.0, 3.0, 3.0]])
    d = np.array([[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
    t, n = box.intersect(o, d)
    np.testing.assert_allclose(t[:3], [2.5, 2.0, 2.75])
    assert np.isinf(t[3])
    np.testing.assert_allclose(n[:3], [[1, 0, 0], [0, 1, 0], [0, 0, 1]], atol=1e-12)
