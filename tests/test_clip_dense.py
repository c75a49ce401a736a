"""clip_dense: one dense CLIP pass per frame, pooled per segment (tiny random model; shapes, norms, pooling)."""
from __future__ import annotations

import numpy as np
import torch

from clipgs.data.dataset import open_dataset
from clipgs.semantics.clip_sources import ClipDenseSource, DenseCLIPEmbedder, pool_patches


def test_dense_features_one_per_patch_unit_and_deterministic(synth_dir):
    frame = open_dataset(synth_dir)[2]
    a, b = DenseCLIPEmbedder("clipgs-tiny"), DenseCLIPEmbedder("clipgs-tiny")
    rows, cols = a.grid(frame.height, frame.width)  # 80x60 at short side 64: 4 x 5 patches of 16 px
    assert (rows, cols) == (4, 5)
    fa, fb = a(frame.rgb), b(frame.rgb)
    assert fa.shape == (4, 5, 64) and torch.allclose(fa.norm(dim=-1), torch.ones(4, 5), atol=1e-5)
    assert torch.equal(fa, fb)
    wide = DenseCLIPEmbedder("clipgs-tiny", short_side=128)(frame.rgb)
    assert wide.shape[:2] == (8, 11)  # more patches when asked for a larger input


def test_pooling_weights_patches_by_mask_area():
    feats = torch.nn.functional.normalize(torch.randn(1, 2, 8), dim=-1)
    ids = np.full((4, 8), -1)
    ids[:, :4] = 0  # all in the left patch
    ids[:, 4:7] = 1  # 12 pixels in the right patch ...
    ids[0, 0] = 1  # ... and 1 in the left one
    out = pool_patches(feats, ids)
    assert out.shape == (2, 8) and torch.allclose(out[0], feats[0, 0], atol=1e-6)
    expected = torch.nn.functional.normalize(feats[0, 0] + 12 * feats[0, 1], dim=0)
    assert torch.allclose(out[1], expected, atol=1e-6)
    assert pool_patches(feats, np.full((4, 8), -1)).shape == (0, 8)


def test_clip_dense_source_gives_a_unit_embedding_per_segment(synth_dir):
    from clipgs.semantics.factory import SemanticSettings, build_semantics

    frame = open_dataset(synth_dir)[4]
    stack = build_semantics(SemanticSettings(semantic_source="clip_dense", clip_model="clipgs-tiny"))
    assert isinstance(stack.source, ClipDenseSource)
    obs = stack.source(frame)
    n = int(obs.mask_ids.max()) + 1
    assert obs.mask_ids.shape == frame.depth.shape and obs.embeddings.shape == (n, 64) and n > 3
    assert torch.allclose(obs.embeddings.norm(dim=-1), torch.ones(n), atol=1e-5)
