"""PoseTracker: frame-to-frame ICP follows a turn the keyframe refinement cannot bridge; fixes carry forward."""
from __future__ import annotations

import numpy as np
import torch

from clipgs.data.frame import Frame
from clipgs.mapping.config import AUTO_TRACK_ITERS, MapperConfig
from clipgs.mapping.keyframes import Keyframe, KeyframeStore
from clipgs.mapping.state import MapperStats
from clipgs.mapping.tracker import PoseTracker
from tests.test_icp import K, errors, pose, raycast_box


def turn(steps: int = 24, degrees: float = 100.0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """True poses turning on the spot and stepping forward, and odometry that over-reads every step's turn by
    0.15 deg and drifts 4 mm sideways per frame."""
    true, odometry = [], []
    for k in range(steps):
        true.append(pose([0.3 + 0.01 * k, 0.0, 0.5], degrees=degrees * k / steps))
        odometry.append(pose([0.3 + 0.01 * k + 0.004 * k, 0.0, 0.5], degrees=(degrees / steps + 0.15) * k))
    return true, odometry


def frame_at(true: np.ndarray, odometry: np.ndarray, k: int) -> Frame:
    return Frame(np.zeros((120, 160, 3), np.uint8), raycast_box(true), K, odometry, float(k), index=k)


def test_tracking_every_frame_follows_a_turn_the_first_view_no_longer_sees():
    true, odometry = turn()
    errs = {}
    for iters in (0, 6):
        tracker = PoseTracker(MapperConfig(pose_refine_iters=0, track_iters=iters), MapperStats())
        tracked = [tracker.track(frame_at(t, o, k)) for k, (t, o) in enumerate(zip(true, odometry))]
        errs[iters] = errors(tracked[-1].world_from_camera, true[-1])
        assert tracker.stats.frames_tracked == (len(true) - 1 if iters else 0)
    odometry_error = errors(odometry[-1], true[-1])
    assert odometry_error[1] > 3.0 and np.allclose(errs[0], odometry_error)  # untracked: the odometry as is
    assert errs[6][1] < 0.2 and errs[6][0] < 0.3 * odometry_error[0], (errs, odometry_error)


def test_a_keyframe_fix_carries_to_the_frames_after_it():
    true, _ = turn(steps=6, degrees=10.0)
    stats = MapperStats()
    tracker = PoseTracker(MapperConfig(pose_refine_iters=15, track_iters=0), stats)
    store = KeyframeStore(2**30)
    first = tracker.track(frame_at(true[0], true[0], 0))  # the first view, exact
    store.append(Keyframe.from_frame(first, torch.device("cpu")))
    drift = pose([0.03, -0.01, 0.02], degrees=1.5)
    later = tracker.track(frame_at(true[3], true[3] @ drift, 3))
    assert errors(later.world_from_camera, true[3])[1] > 1.0  # nothing has corrected it yet
    refined = tracker.refine_keyframe(later, store, gaussians=None)
    assert errors(refined.world_from_camera, true[3])[0] < 2e-3 and stats.poses_refined == 1
    after = tracker.track(frame_at(true[4], true[4] @ drift, 4))  # the same drift: already taken out
    assert errors(after.world_from_camera, true[4])[0] < 2e-3 and errors(after.world_from_camera, true[4])[1] < 0.05
    assert stats.drift_correction[1] > 1.0


def test_frame_tracking_is_on_by_default_only_for_odometry():
    auto = MapperConfig()
    assert auto.track_iters == -1 and not PoseTracker(auto, MapperStats()).enabled
    assert auto.resolved(poses_from_odometry=True).track_iters == AUTO_TRACK_ITERS > 0
    assert auto.resolved(poses_from_odometry=False).track_iters == 0
    assert MapperConfig(track_iters=3).resolved(True).track_iters == 3
