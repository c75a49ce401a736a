"""Segments: wide frames segmented coarser, mask pixels sampled, and coherent labels (decoded classes voted,
relevancy averaged inside segments of the view's own render)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from clipgs.render import RenderOutput
from clipgs.semantics.coherence import rendered_segments, segment_majority, segment_mean, split_masks
from clipgs.semantics.pipeline import labels_from_render
from clipgs.semantics.sac import SemanticDecoder


def test_segment_majority_and_mean_by_hand():
    segments = torch.tensor([[0, 0, 1, 1], [0, 0, 1, -1]])
    labels = torch.tensor([[2, 2, 3, 5], [4, 2, 3, 7]])
    assert segment_majority(labels, segments).tolist() == [[2, 2, 3, 3], [2, 2, 3, 7]]  # -1: keeps its own
    values = torch.tensor([[1.0, 0.0, 0.2, 0.4], [0.0, 1.0, 0.6, 0.9]])
    torch.testing.assert_close(segment_mean(values, segments),
                               torch.tensor([[0.5, 0.5, 0.4, 0.4], [0.5, 0.5, 0.4, 0.9]]))
    none = torch.full((2, 4), -1)
    assert torch.equal(segment_majority(labels, none), labels) and torch.equal(segment_mean(values, none), values)


def test_masks_split_by_render_segments():
    masks = torch.tensor([[0, 0, 1, -1], [0, 0, 1, 1]])  # mask 0 took in two segments (3 and 4)
    segments = torch.tensor([[3, 4, 4, 4], [3, 3, -1, 4]])
    assert split_masks(masks, segments).tolist() == [[0, 1, 2, -1], [0, 0, -1, 2]]
    assert (split_masks(masks, torch.full((2, 4), -1)) == -1).all()


def two_object_render(speckle: bool) -> RenderOutput:
    """A 64 x 96 render: a red object (left) and a blue one (right) at 2 m, empty top rows; attributes are
    one-hot per object, with a 3 x 3 speckle of a third class inside the red one."""
    h, w = 64, 96
    rgb = torch.zeros(h, w, 3)
    rgb[:, :48, 0], rgb[:, 48:, 2] = 0.8, 0.8
    sem = torch.zeros(h, w, 3)
    sem[:, :48, 0], sem[:, 48:, 1] = 1.0, 1.0
    if speckle:
        sem[30:33, 20:23] = torch.tensor([0.0, 0.0, 1.0])
    alpha = torch.ones(h, w)
    alpha[:8] = 0.0
    image = torch.cat([rgb, sem], dim=-1) * alpha[..., None]
    return RenderOutput(image, 2.0 * alpha, alpha, torch.zeros(0, 2), torch.zeros(0, 2), "test")


def test_coherent_labels_remove_speckle_inside_an_object_and_keep_empty_pixels_void():
    decoder = SemanticDecoder(3, 3, hidden=0)  # attributes are the embeddings
    vocabulary = torch.cat([torch.zeros(1, 3), torch.eye(3)])  # void + three classes
    out = two_object_render(speckle=True)
    segments = rendered_segments(out)
    assert (segments[:8] == -1).all() and (segments[8:] >= 0).all()
    shifted = two_object_render(speckle=False)  # the objects' border at an odd column, inside a 2 x 2 block
    shifted.image[8:, 47, :3] = shifted.image[8:, 48, :3]
    blocks = rendered_segments(shifted, max_width=48)[8:]  # 3DCS's dcs_segment_width: a segment per 2 x 2 block
    assert torch.equal(blocks, blocks.reshape(28, 2, 48, 2)[:, :1, :, :1].expand(28, 2, 48, 2).reshape(56, 96))
    full = rendered_segments(shifted)[8:]
    assert not torch.equal(full, full.reshape(28, 2, 48, 2)[:, :1, :, :1].expand(28, 2, 48, 2).reshape(56, 96))
    pixelwise = labels_from_render(out, decoder, vocabulary, coherent=False)
    coherent = labels_from_render(out, decoder, vocabulary)
    assert (pixelwise[30:33, 20:23] == 3).all()  # the speckle decodes to the third class
    # (segments may put a pixel or two of a flat synthetic edge on the other side: the border is not scored)
    assert (coherent[10:, :45] == 1).all() and (coherent[10:, 51:] == 2).all() and (coherent[:8] == 0).all()
    assert np.array_equal(pixelwise[:30, :45], coherent[:30, :45])  # nothing else changed


def test_coherent_labels_keep_a_small_object_the_segments_merged_into_its_background():
    """A lamp the colour + depth segments cannot tell from the wall behind it (same colour, same depth) keeps its
    class when its decoded piece is large enough (80 pixels of 6144, over KEEP_PIECE_FRACTION); a 3 x 3 speckle
    does not."""
    from clipgs.semantics.coherence import KEEP_PIECE_FRACTION

    decoder = SemanticDecoder(3, 3, hidden=0)
    vocabulary = torch.cat([torch.zeros(1, 3), torch.eye(3)])
    out = two_object_render(speckle=True)
    out.image[40:48, 10:20, 3:] = torch.tensor([0.0, 0.0, 1.0])  # an 8 x 10 object of the third class, red as the wall
    assert 9 < KEEP_PIECE_FRACTION * 64 * 96 < 80
    coherent = labels_from_render(out, decoder, vocabulary)
    assert (coherent[40:48, 10:20] == 3).all() and (coherent[30:33, 20:23] == 1).all()
    voted = segment_majority(torch.from_numpy(labels_from_render(out, decoder, vocabulary, coherent=False)),
                             rendered_segments(out, scale_with_size=True))
    assert (voted[40:48, 10:20] == 1).all()  # the segments alone had merged it


def test_wide_frames_are_segmented_coarser_with_the_same_regions():
    from clipgs.data.frame import Frame
    from clipgs.semantics.segmentation import felzenszwalb_masks

    rgb = np.zeros((480, 640, 3), np.uint8)  # four flat blocks, one with a hole in its depth
    rgb[:240, 320:] = (200, 30, 30)
    rgb[240:, :320] = (30, 200, 30)
    rgb[240:, 320:] = (30, 30, 200)
    depth = np.full((480, 640), 2.0, np.float32)
    depth[100:110, 100:117] = 0.0
    frame = Frame(rgb, depth, np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]]), np.eye(4))
    coarse, full = felzenszwalb_masks(frame), felzenszwalb_masks(frame, max_width=0)
    assert coarse.shape == full.shape == (480, 640)
    assert (coarse[depth <= 0] == -1).all() and (coarse[depth > 0] >= 0).all()
    for ids in (coarse, full):  # one segment covers each block, whatever the resolution it was found at
        dominant = []
        for block in (ids[:240, :320], ids[:240, 320:], ids[240:, :320], ids[240:, 320:]):
            labels, counts = np.unique(block[block >= 0], return_counts=True)
            assert counts.max() > 0.95 * block.size
            dominant.append(labels[counts.argmax()])
        assert len(set(dominant)) == 4


def test_mask_pixels_are_sampled_from_masks_only():
    from clipgs.semantics.sac import sample_mask_pixels

    ids = torch.full((100, 100), -1)
    ids[20:60, 10:90] = 3
    idx = sample_mask_pixels(ids, 500, torch.Generator().manual_seed(0))
    assert len(idx) == 500 and (ids.reshape(-1)[idx] == 3).all()
    assert torch.equal(idx, sample_mask_pixels(ids, 500, torch.Generator().manual_seed(0)))
    few = sample_mask_pixels(ids, 10**6, torch.Generator())  # fewer mask pixels than asked: all of them, once
    assert torch.equal(few, torch.nonzero(ids.reshape(-1) >= 0).squeeze(1))


@pytest.mark.parametrize("balance, small_share", [(0.0, 20 / 45020), (0.5, 1 / (1 + (45000 / 20) ** 0.5)), (1.0, 0.5)])
def test_mask_balance_spreads_samples_over_masks(balance, small_share):
    """A 20-pixel vase beside a 45000-pixel wall: each mask's share of the samples is (its pixels)^(1 - balance)
    over the sum of those; only mask pixels, the same draw for the same seed."""
    from clipgs.semantics.sac import sample_mask_pixels

    ids = torch.full((300, 300), -1)
    ids[:150] = 0  # wall
    ids[200:204, 50:55] = 7  # vase
    idx = sample_mask_pixels(ids, 20000, torch.Generator().manual_seed(0), balance)
    got = ids.reshape(-1)[idx]
    assert len(idx) == 20000 and bool((got >= 0).all())
    assert float((got == 7).float().mean()) == pytest.approx(small_share, rel=0.1, abs=0.002)
    again = sample_mask_pixels(ids, 20000, torch.Generator().manual_seed(0), balance)
    assert torch.equal(idx, again)
    if balance > 0:  # every vase pixel drawn, not only a few of them
        assert len(torch.unique(idx[got == 7])) == 20


@pytest.mark.parametrize("balance", [0.0, 0.25])
def test_sampler_cache_draws_as_sample_mask_pixels(balance):
    """A keyframe's sampler is built once and reused: the same draws as sample_mask_pixels from the same generator
    state, for each id image; an image is known by identity, and the oldest leaves once the cache is full."""
    from clipgs.semantics.sac import SamplerCache, sample_mask_pixels

    images = [torch.randint(-1, 6, (40, 50), generator=torch.Generator().manual_seed(k)) for k in range(3)]
    cache, mine, theirs = SamplerCache(size=2), torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    for ids in images + images[::-1] + images:
        assert torch.equal(cache.draw(ids, 300, mine, balance), sample_mask_pixels(ids, 300, theirs, balance))
    first = cache._entries[id(images[2])]
    cache.draw(images[2], 300, mine, balance)
    assert cache._entries[id(images[2])] is first and len(cache._entries) == 2
    copy = images[2].clone()  # equal values, another tensor: its own sampler
    cache.draw(copy, 300, mine, balance)
    assert id(images[1]) not in cache._entries and cache._entries[id(copy)] is not first
