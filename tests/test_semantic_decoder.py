"""The semantic decoder's fast paths against decoding in full: similarity, pair cosines, the 3D term."""
from __future__ import annotations

import pytest
import torch

from clipgs.semantics.sac import SemanticDecoder


def test_knn_neighbours_and_consistency_on_hand_made_points():
    from clipgs.semantics.sac import knn_consistency, knn_neighbours

    means = torch.tensor([[0.0, 0, 0], [0.01, 0, 0], [0.0, 0.02, 0], [1.0, 0, 0], [1.0, 0.01, 0]])
    neighbours, valid = knn_neighbours(means, torch.tensor([0, 3]), k=2, radius=0.05, chunk=1)
    assert neighbours.tolist() == [[1, 2], [4, 1]] and valid.tolist() == [[True, True], [True, False]]
    feats = torch.nn.functional.normalize(torch.tensor([[1.0, 0], [1.0, 0], [0.0, 1], [0.0, 1], [0.0, 1]]), dim=-1)
    cosine = (feats[torch.tensor([0, 3])][:, None] * feats[neighbours]).sum(-1)
    loss = knn_consistency(cosine, valid)
    assert loss.item() == pytest.approx((0 + 1 + 0) / 3)  # only valid pairs: (0,1) agree, (0,2) orthogonal, (3,4)
    assert knn_consistency(cosine, torch.zeros(2, 2, dtype=torch.bool)).item() == 0.0


@pytest.mark.parametrize("embed_dim", [512, 64])
def test_decoder_pair_cosine_equals_decoding_both_sides(embed_dim):
    """The Gram-matrix path (D > hidden) and the direct path: same cosines, same gradients."""
    from clipgs.semantics.sac import SemanticDecoder

    torch.manual_seed(0)
    dec = SemanticDecoder(16, embed_dim, 128).double()
    a, b = torch.randn(50, 16, dtype=torch.float64), torch.randn(50, 8, 16, dtype=torch.float64)
    results = []
    for fn in (dec.pair_cosine, lambda x, y: (dec(x)[:, None] * dec(y)).sum(-1)):
        dec.zero_grad()
        x, y = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
        cos = fn(x, y)
        (cos * torch.linspace(-1, 1, 8, dtype=torch.float64)).sum().backward()
        results.append((cos.detach(), x.grad, y.grad, dec.net[2].weight.grad.clone()))
    for got, expected in zip(*results):
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("embed_dim", [512, 64])
def test_decoder_similarity_equals_decoding_then_dot_product(embed_dim):
    torch.manual_seed(0)
    dec = SemanticDecoder(16, embed_dim, hidden=128 if embed_dim > 128 else 32)
    with torch.no_grad():
        dec.net[2].bias.normal_()  # a bias that matters for the norm
    attributes = torch.randn(7, 9, 16)
    text = torch.nn.functional.normalize(torch.randn(5, embed_dim), dim=-1)
    expected = dec(attributes) @ text.T
    got = dec.similarity(attributes, text)
    assert got.shape == (7, 9, 5)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    dec.CHUNK = 10  # rows go through in chunks: 63 rows = 6 full chunks and a partial one
    torch.testing.assert_close(dec.similarity(attributes, text), expected, atol=1e-5, rtol=1e-4)
    unnormalised = dec.similarity(attributes, text, unnormalised=True)
    assert torch.equal(unnormalised.argmax(-1), expected.argmax(-1))
    assert not torch.allclose(unnormalised, expected)  # really skips the norm
    full = SemanticDecoder(embed_dim, embed_dim, hidden=0)
    x = torch.randn(4, embed_dim)
    torch.testing.assert_close(full.similarity(x, text), full(x) @ text.T)
    wide = SemanticDecoder(16, embed_dim, hidden=2 * embed_dim)  # nothing to fold (D < hidden): decoded in chunks
    wide.CHUNK = 10
    torch.testing.assert_close(wide.similarity(attributes, text), wide(attributes) @ text.T, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("embed_dim", [512, 64])
def test_sac_losses_in_the_hidden_space_equal_decoding_in_full(embed_dim):
    """DecodedPixels (folded when D > hidden) against decoding every row: the three SAC terms and a label
    cross-entropy, their values and the gradients of the attributes and of both decoder layers."""
    from clipgs.semantics.sac import DecodedPixels, sac_losses

    torch.manual_seed(0)
    dec = SemanticDecoder(16, embed_dim, 128).double()
    with torch.no_grad():
        dec.net[2].bias.normal_()  # a bias that matters for the norms
    attributes = torch.randn(300, 16, dtype=torch.float64)
    ids = torch.randint(0, 6, (300,))
    ids[ids == 4] = 5  # a mask id without pixels
    embeddings = torch.nn.functional.normalize(torch.randn(6, embed_dim, dtype=torch.float64), dim=-1)
    embeddings[3] = embeddings[1]  # two masks of one class share an embedding
    vocabulary = torch.nn.functional.normalize(torch.randn(4, embed_dim, dtype=torch.float64), dim=-1)
    results = []
    for make in (lambda x: DecodedPixels(dec, x), lambda x: DecodedPixels.of(dec(x))):
        dec.zero_grad()
        x = attributes.clone().requires_grad_(True)
        decoded = make(x)
        terms = sac_losses(decoded, ids, embeddings, tau=0.1)
        labels = torch.nn.functional.cross_entropy(decoded.cosines(vocabulary) / 0.1, ids % 4)
        (terms["cosine"] + 0.3 * terms["contrast"] + 2.0 * terms["variance"] + 0.5 * labels).backward()
        results.append([*(terms[k].detach() for k in ("cosine", "contrast", "variance")), labels.detach(), x.grad,
                        *(p.grad.clone() for p in dec.parameters())])
    assert (DecodedPixels(dec, attributes).full is None) == (embed_dim > 128)  # the fast path is the one tested
    for got, expected in zip(*results, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-11)
    assert 0.0 < float(results[0][2]) < 2.0  # the spread is a real, non-trivial number


@pytest.mark.parametrize("embed_dim", [512, 64])
@pytest.mark.parametrize("share", [0.2, 0.0])
def test_label_view_decodes_once_with_the_frozen_copy_gradients(embed_dim, share):
    """``DecodedPixels(label_share=s)``: SAC losses on the decoding and a cross-entropy on its label view give the
    values and gradients of decoding the rows a second time through a copy of the decoder that takes no gradient,
    its logits blended s : 1 - s with the live ones (the decoder gets s of the label term, the rows all of it); for
    the folding (D > hidden) and the full decoder, in one decoding."""
    import copy

    import torch.nn.functional as F

    from clipgs.semantics.sac import DecodedPixels, sac_losses

    torch.manual_seed(1)
    dec = SemanticDecoder(16, embed_dim, 128).double()
    attrs = torch.randn(80, 16, dtype=torch.float64)
    ids = torch.randint(0, 5, (80,))
    masks = F.normalize(torch.randn(5, embed_dim, dtype=torch.float64), dim=-1)
    vocab = F.normalize(torch.randn(7, embed_dim, dtype=torch.float64), dim=-1)
    target = torch.randint(0, 7, (80,))

    def reference(rows):
        decoded = DecodedPixels(dec, rows)
        frozen = copy.deepcopy(dec).requires_grad_(False)
        logits = share * decoded.cosines(vocab) + (1 - share) * DecodedPixels(frozen, rows).cosines(vocab)
        return decoded, logits

    def shared(rows):
        decoded = DecodedPixels(dec, rows, label_share=share)
        assert decoded.label is not decoded
        return decoded, decoded.label.cosines(vocab)

    results = []
    for fn in (reference, shared):
        dec.zero_grad()
        rows = attrs.clone().requires_grad_(True)
        decoded, logits = fn(rows)
        loss = sum(sac_losses(decoded, ids, masks).values()) + F.cross_entropy(logits / 0.1, target)
        loss.backward()
        results.append((loss.detach(), rows.grad, *(p.grad.clone() for p in dec.parameters())))
    for got, expected in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-11)
    # The label view alone (a 3DCS novel view's step): the decoder gets share of it, nothing when share is 0.
    dec.zero_grad()
    rows = attrs.clone().requires_grad_(True)
    F.cross_entropy(DecodedPixels(dec, rows, label_share=share).label.cosines(vocab), target).backward()
    assert all((p.grad is None) == (share == 0.0) for p in dec.parameters())
