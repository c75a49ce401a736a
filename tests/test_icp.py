"""Point-to-plane ICP (clipgs.mapping.icp) on ray-cast box rooms with known poses, and the colour mask."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from clipgs.geometry import invert_rigid, quat_to_rotmat
from clipgs.mapping import icp as icp_module
from clipgs.mapping.icp import compiled_available, icp_align, normal_map, vertex_map, vertex_normal_map
from clipgs.mapping.keyframes import rotation_angle_deg
from clipgs.mapping.losses import mapping_loss, near_depth

K = np.array([[80.0, 0.0, 79.5], [0.0, 80.0, 59.5], [0.0, 0.0, 1.0]])
ROOM = (np.array([-2.0, -1.2, -1.0]), np.array([2.5, 1.0, 4.0]))  # axis-aligned box room (world, y down)


def raycast_box(world_from_camera: np.ndarray, box=ROOM, h: int = 120, w: int = 160,
                cube: tuple | None = ((0.2, 0.3, 2.2), 0.35)) -> np.ndarray:
    """(h, w) depth (metres along the optical axis) of a camera inside the box room, with a cube standing in it."""
    v, u = np.mgrid[0:h, 0:w]
    rays_c = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones((h, w))], -1)
    R, o = world_from_camera[:3, :3], world_from_camera[:3, 3]
    d = rays_c @ R.T
    with np.errstate(divide="ignore", invalid="ignore"):
        t_exit = np.min(np.maximum((box[0] - o) / d, (box[1] - o) / d), axis=-1)  # inside a box: the exit face
        t = t_exit
        if cube is not None:
            c, half = np.array(cube[0]), cube[1]
            lo, hi = (c - half - o) / d, (c + half - o) / d
            t_in = np.max(np.minimum(lo, hi), axis=-1)
            t_out = np.min(np.maximum(lo, hi), axis=-1)
            hit = (t_in <= t_out) & (t_in > 0)
            t = np.where(hit, np.minimum(t_in, t_exit), t_exit)
    return t.astype(np.float32)  # rays_c has z = 1: t is the depth


def pose(translation, axis=(0.0, 1.0, 0.0), degrees=0.0) -> np.ndarray:
    T = np.eye(4)
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    T[:3, :3] = quat_to_rotmat(np.r_[np.cos(np.radians(degrees) / 2), np.sin(np.radians(degrees) / 2) * a])
    T[:3, 3] = translation
    return T


def errors(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    return float(np.linalg.norm(a[:3, 3] - b[:3, 3])), rotation_angle_deg(a[:3, :3], b[:3, :3])


def test_normal_map_of_a_wall_faces_the_camera():
    depth = np.full((20, 30), 2.0)
    n = normal_map(vertex_map(depth, K))
    assert np.allclose(n[1:-1, 1:-1], [0, 0, -1], atol=1e-9)
    assert np.all(n[0] == 0) and np.all(n[:, -1] == 0)  # no neighbours on the border: no normal
    depth[10:, :] = 3.0  # an occlusion edge: no normal across it
    n = normal_map(vertex_map(depth, K))
    assert np.all(n[9:11, 5] == 0) and np.allclose(n[5, 5], [0, 0, -1])


@pytest.mark.skipif(not compiled_available(), reason="no C++ compiler here")
def test_compiled_point_and_normal_maps_match_numpy():
    depth = raycast_box(pose([0.1, 0.0, 0.2], degrees=5.0)).astype(np.float32)
    depth[5:9, 10:30] = 0.0  # a dropout: no normals around it
    depth[20:, 40:] += 0.5  # an occlusion edge
    vertices, normals = vertex_normal_map(depth, K)
    ref_v, ref_n = vertex_normal_map(depth, K, compiled=False)
    assert vertices.dtype == normals.dtype == np.float64 and normals.shape == (*depth.shape, 3)
    assert np.array_equal(vertices, ref_v)
    assert np.array_equal(normals != 0, ref_n != 0) and np.abs(normals - ref_n).max() < 1e-12
    assert 0.5 < (normals != 0).any(-1).mean() < 0.95  # edges, the border and the dropout have none


def test_icp_recovers_a_known_motion_in_a_box_room():
    reference = pose([0.1, 0.0, 0.2], degrees=5.0)
    true = reference @ pose([0.04, -0.02, 0.05], axis=(0.2, 1.0, 0.1), degrees=3.0)  # the frame, truly
    predicted = true @ pose([0.03, 0.02, -0.025], axis=(1.0, 0.3, 0.0), degrees=1.5)  # what odometry says
    ref_depth, frame_depth = raycast_box(reference), raycast_box(true)
    r = icp_align(frame_depth, ref_depth.astype(np.float64), ref_depth > 0, K, iterations=20,
                  model_from_predicted=invert_rigid(reference) @ predicted)
    before, after = errors(predicted, true), errors(predicted @ r.correction, true)
    assert r.ok and r.inliers > 0.8 and before[0] > 0.04 and before[1] > 1.4
    assert after[0] < 1e-3 and after[1] < 0.02, (before, after)
    assert r.rmse_m < 0.2 * r.rmse_before_m


def test_icp_keeps_the_prediction_along_what_the_view_cannot_see():
    """Facing one flat wall, sliding along it changes nothing: the damped step leaves those directions alone."""
    wall = (np.array([-50.0, -50.0, -1.0]), np.array([50.0, 50.0, 3.0]))
    reference = np.eye(4)
    predicted = pose([0.05, 0.0, 0.02])  # 5 cm sideways (invisible) and 2 cm towards the wall (visible)
    depth = raycast_box(reference, wall, cube=None)
    r = icp_align(depth, depth.astype(np.float64), depth > 0, K, iterations=20,
                  model_from_predicted=invert_rigid(reference) @ predicted)
    corrected = predicted @ r.correction
    assert r.ok
    assert abs(corrected[2, 3]) < 1e-3  # the distance to the wall is found
    assert corrected[0, 3] == pytest.approx(0.05, abs=2e-3)  # the sideways offset stays as predicted


def test_icp_refuses_a_view_that_does_not_overlap():
    reference = np.eye(4)
    far = pose([0.0, 0.0, 0.0], degrees=150.0)  # looking the other way
    r = icp_align(raycast_box(far), raycast_box(reference).astype(np.float64), np.ones((120, 160), bool), K,
                  model_from_predicted=invert_rigid(reference) @ far)
    assert not r.ok and np.array_equal(r.correction, np.eye(4))


def test_icp_refine_pose_moves_a_frame_onto_the_reference():
    import dataclasses

    from clipgs.data.frame import Frame
    from clipgs.mapping.pose_refine import icp_refine_pose

    reference, true = pose([0.0, 0.0, 0.0]), pose([0.05, 0.0, 0.1], degrees=4.0)
    drifted = true @ pose([-0.02, 0.01, 0.02], axis=(0.0, 0.0, 1.0), degrees=1.0)
    frame = Frame(np.zeros((120, 160, 3), np.uint8), raycast_box(true), K, drifted, 0.0)
    r = icp_refine_pose(frame, raycast_box(reference).astype(np.float64), reference, iterations=20)
    assert errors(r.pose, true)[0] < 1e-3 and errors(r.pose, true)[1] < 0.02
    assert r.moved_m > 0.02 and r.turned_deg > 0.9 and r.loss_after < r.loss_before
    blind = dataclasses.replace(frame, depth=np.zeros_like(frame.depth))  # nothing to align: the pose stays
    refused = icp_refine_pose(blind, raycast_box(reference), reference, 10)
    assert not refused.ok and np.array_equal(refused.pose, drifted) and r.ok


def test_icp_against_several_views_averages_one_views_pose_error():
    """Three reference views, one of them stored 2 cm / 0.6 deg off its true pose: ICP against that one alone
    inherits its error, against all three at once about a third of it; a view that does not overlap leaves the
    solve; none overlapping: refused."""
    from clipgs.mapping.icp import ModelView, icp_align_views

    true = pose([0.05, 0.0, 0.1], degrees=4.0)
    predicted = true @ pose([-0.02, 0.01, 0.02], axis=(0.0, 0.0, 1.0), degrees=1.0)
    references = [pose([0.0, 0.0, 0.0]), pose([0.1, 0.02, 0.05], degrees=8.0), pose([-0.05, 0.0, 0.15], degrees=-6.0)]
    stored_wrong = references[0] @ pose([0.02, 0.0, 0.0], axis=(0.0, 1.0, 0.0), degrees=0.6)  # its pose error

    def view(true_pose, stored_pose):
        depth = raycast_box(true_pose).astype(np.float64)
        return ModelView(depth, depth > 0, invert_rigid(stored_pose) @ predicted)

    frame_depth = raycast_box(true)
    alone = icp_align_views(frame_depth, [view(references[0], stored_wrong)], K, iterations=30)
    joint = icp_align_views(frame_depth, [view(references[0], stored_wrong)]
                            + [view(r, r) for r in references[1:]], K, iterations=30)
    behind = pose([0.0, 0.0, 0.0], degrees=180.0)
    with_blind = icp_align_views(frame_depth, [view(r, r) for r in references[1:]] + [view(behind, behind)], K,
                                 iterations=30)
    exact = icp_align_views(frame_depth, [view(r, r) for r in references[1:]], K, iterations=30)
    e_alone, e_joint = errors(predicted @ alone.correction, true), errors(predicted @ joint.correction, true)
    assert alone.ok and joint.ok and e_alone[0] > 0.012, e_alone
    assert e_joint[0] < 0.5 * e_alone[0] and e_joint[1] < 0.5 * e_alone[1], (e_alone, e_joint)
    assert with_blind.ok and np.allclose(with_blind.correction, exact.correction, atol=1e-9)  # the blind view left
    assert errors(predicted @ exact.correction, true)[0] < 1e-3
    refused = icp_align_views(frame_depth, [view(behind, behind)], K)
    assert not refused.ok and np.array_equal(refused.correction, np.eye(4))
    assert not icp_align_views(frame_depth, [], K).ok


def textured(world_from_camera: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """(H, W) intensity in [0, 1] of a pattern painted on the world (a function of the hit point's x and y)."""
    v, u = np.mgrid[0:depth.shape[0], 0:depth.shape[1]]
    cam = np.stack([(u - K[0, 2]) / K[0, 0] * depth, (v - K[1, 2]) / K[1, 1] * depth, depth], -1)
    world = cam @ world_from_camera[:3, :3].T + world_from_camera[:3, 3]
    return 0.5 + 0.3 * np.sin(7.0 * world[..., 0]) * np.cos(5.0 * world[..., 1])


def test_coloured_icp_finds_the_motion_along_a_textured_wall():
    """Facing one flat wall, depth cannot see a sideways slide (the damped solve keeps it, see above); the colour
    term can, where the wall is textured. A uniform exposure change (gain) does not move it."""
    from clipgs.mapping.icp import ModelView, icp_align_views

    wall = (np.array([-50.0, -50.0, -1.0]), np.array([50.0, 50.0, 3.0]))
    reference, true = np.eye(4), pose([0.01, 0.0, 0.0])
    predicted = true @ pose([0.04, -0.02, 0.02])  # 4 cm / 2 cm sideways (invisible to depth), 2 cm to the wall
    ref_depth, depth = raycast_box(reference, wall, cube=None), raycast_box(true, wall, cube=None)
    view = ModelView(ref_depth.astype(np.float64), ref_depth > 0, invert_rigid(reference) @ predicted,
                     textured(reference, ref_depth))
    frame_intensity = 0.8 * textured(true, depth)  # the frame is darker: the gain takes that out
    depth_only = icp_align_views(depth, [view], K, iterations=30)
    coloured = icp_align_views(depth, [view], K, iterations=30, frame_intensity=frame_intensity, colour_weight=0.03)
    slide = errors(predicted @ depth_only.correction, true)[0]
    assert depth_only.ok and coloured.ok and slide > 0.04
    assert errors(predicted @ coloured.correction, true)[0] < 2e-3, errors(predicted @ coloured.correction, true)
    untextured = ModelView(view.depth, view.valid, view.model_from_predicted, np.full_like(view.intensity, 0.5))
    flat = icp_align_views(depth, [untextured], K, iterations=30, frame_intensity=np.full_like(depth, 0.4),
                           colour_weight=0.03)
    assert np.allclose(flat.correction, depth_only.correction, atol=1e-9)  # no texture: nothing to add


@pytest.mark.skipif(not icp_module.compiled_available(), reason="no C++ compiler here")
def test_compiled_colour_equations_match_the_numpy_reference():
    reference, true = pose([0.1, 0.0, 0.2], degrees=5.0), pose([0.14, -0.02, 0.25], axis=(0.2, 1.0, 0.1), degrees=8.0)
    ref_depth, depth = raycast_box(reference).astype(np.float64), raycast_box(true)
    image = textured(reference, ref_depth)
    gu, gv = icp_module._image_gradients(image)
    src = vertex_map(depth, K).reshape(-1, 3)
    src_I = textured(true, depth).reshape(-1) * 1.1
    src_I, src = src_I[src[:, 2] > 0], src[src[:, 2] > 0]
    predicted = true @ pose([0.02, 0.01, -0.02], axis=(1.0, 0.3, 0.0), degrees=1.0)
    M, T = invert_rigid(reference) @ predicted, pose([0.003, 0.0, -0.002], degrees=0.2)
    args = (src, src_I, T, M, K, ref_depth, image, gu, gv, 0.05, 0.05)
    A, b, pairs, r2 = icp_module._colour_equations(*args, compiled=True)
    A_ref, b_ref, pairs_ref, r2_ref = icp_module._colour_equations_numpy(*args)
    assert pairs_ref > 0.5 * len(src) and abs(pairs - pairs_ref) <= 2  # a pixel-centre tie may round either way
    assert np.allclose(A, A_ref, rtol=1e-6, atol=1e-9) and np.allclose(b, b_ref, rtol=1e-6, atol=1e-9)
    assert r2 == pytest.approx(r2_ref, rel=1e-6) and np.allclose(A, A.T) and np.abs(b).max() > 0


def test_keyframe_store_orders_keyframes_by_pose_distance():
    from clipgs.data.frame import Frame
    from clipgs.mapping.keyframes import Keyframe, KeyframeStore

    store = KeyframeStore(2**30)
    for k, x in enumerate((0.0, 1.0, 0.5, 1.0)):  # keyframes 1 and 3 at the same pose
        frame = Frame(np.zeros((12, 16, 3), np.uint8), np.ones((12, 16), np.float32), K, pose([x, 0.0, 0.0]), 0.0,
                      index=k)
        store.append(Keyframe.from_frame(frame, torch.device("cpu")))
    assert store.closest(pose([0.9, 0.0, 0.0]), 3) == [3, 1, 2]  # the tie: the newer first
    assert store.closest(pose([0.1, 0.0, 0.0]), 10) == [0, 2, 3, 1]
    assert store.nearest(pose([0.9, 0.0, 0.0])) == 3 and store.nearest(pose([0.1, 0.0, 0.0], degrees=5.0)) == 0


def test_colour_loss_ignores_pixels_far_from_valid_depth():
    depth = torch.zeros(12, 16)
    depth[:, :8] = 2.0  # the right half is beyond the sensor's range
    near = near_depth(depth, 2)
    assert near[:, :10].all() and not near[:, 10:].any()
    rgb = torch.rand(12, 16, 3)
    target = rgb.clone()
    target[:, 12:] = 1.0 - target[:, 12:]  # colours the map could only fit by moving Gaussians there
    masked, _ = mapping_loss(rgb, depth, target, depth, 1.0, 0.2, 0.0, color_mask=near_depth(depth, 2))
    everywhere, _ = mapping_loss(rgb, depth, target, depth, 1.0, 0.2, 0.0, color_mask=None)
    assert masked.item() == pytest.approx(0.0, abs=1e-6) and everywhere.item() > 0.05


def test_pose_refinement_is_on_by_default_only_for_odometry():
    from clipgs.mapping.config import AUTO_POSE_REFINE_ITERS, MapperConfig

    auto = MapperConfig()
    assert auto.pose_refine_iters == -1
    assert auto.resolved(poses_from_odometry=True).pose_refine_iters == AUTO_POSE_REFINE_ITERS > 0
    assert auto.resolved(poses_from_odometry=False).pose_refine_iters == 0
    assert MapperConfig(pose_refine_iters=7).resolved(True).pose_refine_iters == 7  # an explicit value stays
    assert MapperConfig(pose_refine_iters=0).resolved(True).pose_refine_iters == 0


@pytest.mark.skipif(not icp_module.compiled_available(), reason="no C++ compiler here")
def test_compiled_normal_equations_match_the_numpy_reference():
    """csrc/icp.cpp against _normal_equations_numpy on a box room: the same pairs, the same sums to rounding."""
    reference, true = pose([0.1, 0.0, 0.2], degrees=5.0), pose([0.14, -0.02, 0.25], axis=(0.2, 1.0, 0.1), degrees=8.0)
    model_v = vertex_map(raycast_box(reference), K)
    model_n = normal_map(model_v).reshape(-1, 3)
    frame_v = vertex_map(raycast_box(true), K)
    src, src_n = frame_v.reshape(-1, 3), normal_map(frame_v).reshape(-1, 3)
    src, src_n = src[src[:, 2] > 0], src_n[src[:, 2] > 0]
    predicted = true @ pose([0.02, 0.01, -0.02], axis=(1.0, 0.3, 0.0), degrees=1.0)
    M, T = invert_rigid(reference) @ predicted, pose([0.003, 0.0, -0.002], degrees=0.2)
    args = (src, src_n, T, M, K, 160, 120, model_v.reshape(-1, 3), model_n, 0.1, 0.8, 0.01)
    A, b, kept, sum_r2 = icp_module._normal_equations(*args, compiled=True)
    A_ref, b_ref, kept_ref, sum_r2_ref = icp_module._normal_equations_numpy(*args)
    assert kept_ref > 0.5 * len(src) and abs(kept - kept_ref) <= 2  # a pixel-centre tie may round either way
    assert np.allclose(A, A_ref, rtol=1e-6) and np.allclose(b, b_ref, rtol=1e-6, atol=1e-9)
    assert sum_r2 == pytest.approx(sum_r2_ref, rel=1e-6) and np.allclose(A, A.T)
    ref_depth = raycast_box(reference).astype(np.float64)
    runs = [icp_align(raycast_box(true), ref_depth, ref_depth > 0, K, iterations=10, compiled=c,
                      model_from_predicted=M) for c in (True, False)]
    assert np.allclose(runs[0].correction, runs[1].correction, atol=1e-6)
    assert runs[0].inliers == pytest.approx(runs[1].inliers, abs=1e-3) and runs[0].ok and runs[1].ok


def test_occlusion_edges_mark_jumps_and_sensor_gaps_not_dropouts_slopes_or_the_range_limit():
    from clipgs.mapping.icp import occlusion_edges

    depth = np.full((10, 12), 2.0)
    depth[:, 6:] = 3.0  # a jump between columns 5 and 6
    assert occlusion_edges(depth, 0)[:, 5:7].all() and not occlusion_edges(depth, 0)[:, [4, 7]].any()
    grown = occlusion_edges(depth, 2)
    assert grown[:, 3:9].all() and not grown[:, :3].any() and not grown[:, 9:].any()
    depth[:, 5:7] = 0.0  # as a structured-light sensor sees it: nothing on either side of the jump
    assert occlusion_edges(depth, 1)[:, 4:8].all() and not occlusion_edges(depth, 1)[:, [2, 9]].any()
    surface = 2.0 + 0.02 * np.arange(12.0)[None].repeat(10, 0)  # a slanted wall (1 % per pixel) ...
    surface[4, 4] = surface[7, 9] = 0.0  # ... with two dropouts
    assert not occlusion_edges(surface, 2).any()
    surface[:2, :] = 0.0  # beyond the sensor's range in rows 0-1: where it stops seeing, no surface ends
    assert not occlusion_edges(surface, 2).any()


def test_coloured_icp_takes_nothing_from_colour_that_changes_only_across_occlusion_edges():
    """A bright cube before a uniform room: the only colour edges are its silhouettes, where colour mixes both
    surfaces (resampled images) and the two move apart with parallax. Those pairs would pull the pose (on the
    apartment's doorways by 0.5-0.7 degrees); left out, coloured ICP is depth-only ICP here, to the last bit."""
    from clipgs.data.synthetic.sensor import SensorModel
    from clipgs.mapping.icp import ModelView, icp_align_views

    def view(world_from_camera, rng):
        depth = raycast_box(world_from_camera)
        image = np.pad(np.where(depth < raycast_box(world_from_camera, cube=None) - 1e-6, 0.9, 0.35), 1, mode="edge")
        blurred = sum(image[1 + dv:image.shape[0] - 1 + dv, 1 + du:image.shape[1] - 1 + du]
                      for dv in (-1, 0, 1) for du in (-1, 0, 1)) / 9  # resampling mixes neighbours
        return SensorModel(dropout=0.0).corrupt_depth(depth, rng), blurred

    moved = 0.0
    for seed in range(3):
        rng = np.random.default_rng(seed)
        true = pose(rng.normal(0.0, 0.15, 3) * [1.0, 0.3, 1.0], degrees=rng.normal(0.0, 5.0))
        (ref_depth, ref_image), (depth, image) = view(np.eye(4), rng), view(true, rng)
        model = ModelView(ref_depth.astype(np.float64), ref_depth > 0, true, ref_image)
        depth_only = icp_align_views(depth, [model], K, iterations=15)
        coloured = icp_align_views(depth, [model], K, iterations=15, frame_intensity=image, colour_weight=0.03)
        assert depth_only.ok and np.array_equal(coloured.correction, depth_only.correction)
        with pytest.MonkeyPatch.context() as patch:  # the same with the edges' colour paired: it moves the pose
            patch.setattr(icp_module, "occlusion_edges", lambda d, margin, max_jump=0.05: np.zeros(d.shape, bool))
            edges_paired = icp_align_views(depth, [model], K, iterations=15, frame_intensity=image, colour_weight=0.03)
        moved = max(moved, np.abs(edges_paired.correction - depth_only.correction).max())
    assert moved > 1e-4
