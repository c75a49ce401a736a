"""The text encoder: prompt ensembles of an open_clip text tower, its context shortcut, batches and cache."""
from __future__ import annotations

import pytest
import torch

from clipgs.semantics.text import TextEncoder, encode_tokens


@pytest.fixture(scope="module")
def text_encoder():
    return TextEncoder("clipgs-tiny")


def test_text_encoder_shapes_unit_norm_determinism(text_encoder):
    e = text_encoder.encode(["chair", "table", "chair"])
    assert e.shape == (3, 64)
    torch.testing.assert_close(e.norm(dim=-1), torch.ones(3))
    assert torch.equal(e[0], e[2]) and not torch.allclose(e[0], e[1])
    again = TextEncoder("clipgs-tiny").encode(["chair"])
    torch.testing.assert_close(again[0], e[0])  # seeded random init: same space every time
    with pytest.raises(ValueError, match="non-empty string"):
        text_encoder.encode(["  "])
    with pytest.raises(FileNotFoundError, match="never downloads weights"):
        TextEncoder("clipgs-tiny", weights="/nonexistent/open_clip_model.bin")
    with pytest.raises(ValueError, match="unknown open_clip model"):
        TextEncoder("not-a-model")


def test_text_tower_on_the_prompts_own_context_equals_the_whole_context_and_batches_do_not_matter():
    """encode_tokens cuts CLIP's 77-token context after the prompts' end tokens (causal attention: nothing later
    reaches the pooled token): the same embeddings as open_clip's encode_text; a tower it does not know runs
    encode_text. And the prompts go through the tower in batches: any batch size, the same embeddings."""
    enc = TextEncoder("clipgs-tiny")
    tokens = enc.tokenizer(["a photo of a chair.", "a lamp.", "there is a red mug in the scene."])
    with torch.no_grad():
        torch.testing.assert_close(encode_tokens(enc.net, tokens), enc.net.encode_text(tokens), rtol=1e-5, atol=1e-5)

    class OtherTower(torch.nn.Module):
        def encode_text(self, tokens):
            return tokens[:, :4].float()

    assert torch.equal(encode_tokens(OtherTower(), tokens), tokens[:, :4].float())
    names = ["chair", "table", "sofa", "red mug", "lamp"]
    whole = enc.encode(names)
    assert enc._cut_context  # the shortcut matched encode_text on the tiny CLIP, so it is taken
    small = TextEncoder("clipgs-tiny")
    small.BATCH = 3  # 40 prompts in 14 batches, one straddling two names' templates
    torch.testing.assert_close(small.encode(names), whole, rtol=1e-5, atol=1e-6)
    assert torch.equal(whole[3], enc.encode(["red mug"])[0])  # cached: a query asks again at no cost
