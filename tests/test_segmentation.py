"""The compiled graph segmentation against scikit-image's felzenszwalb, its reference."""
from __future__ import annotations

import numpy as np
import pytest

from clipgs.semantics import segmentation
from clipgs.semantics.segmentation import graph_segment, segment_image

pytestmark = pytest.mark.skipif(not segmentation.compiled_available(), reason="no C++ compiler")


def _frame_image(frame) -> np.ndarray:
    depth = frame.depth / frame.depth.max()
    return np.concatenate([frame.rgb / 255.0, 0.5 * depth[..., None]], axis=-1)


@pytest.mark.parametrize("scale,min_size", [(200.0, 40), (50.0, 5), (800.0, 100)])
def test_same_labels_as_scikit_image_on_scene_frames(synth_dir, scale, min_size):
    from clipgs.data.dataset import open_dataset

    ds = open_dataset(synth_dir)
    for i in (0, 7, 15):
        image = _frame_image(ds[i])
        ours = graph_segment(image, scale, 0.8, min_size)
        ref = graph_segment(image, scale, 0.8, min_size, compiled=False)
        assert ours.dtype == np.int64 and ours.shape == image.shape[:2]
        assert 3 <= ref.max() + 1 < 200 and np.array_equal(ours, ref), i


def test_same_labels_on_noise_and_odd_shapes():
    rng = np.random.default_rng(0)
    for h, w, c in ((1, 1, 3), (1, 17, 1), (13, 1, 2), (31, 47, 4), (64, 48, 3)):
        image = rng.random((h, w, c))
        image[: h // 2] *= 0.2  # two regions of different contrast
        for min_size in (1, 10):
            assert np.array_equal(graph_segment(image, 100.0, 0.5, min_size),
                                  graph_segment(image, 100.0, 0.5, min_size, compiled=False)), (h, w, c, min_size)


def test_segment_ids_and_invalid_depth():
    rgb = np.zeros((40, 64, 3), np.uint8)
    rgb[:, 32:] = 200  # two flat halves
    depth = np.full((40, 64), 2.0, np.float32)
    depth[:5] = 0.0
    ids = segment_image(rgb, depth, min_size=10)
    assert (ids[:5] == -1).all() and (ids[5:] >= 0).all()
    left, right = ids[8:, :28], ids[8:, 36:]
    assert left.min() == left.max() and right.min() == right.max() and left[0, 0] != right[0, 0]
