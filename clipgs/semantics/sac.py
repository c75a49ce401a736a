"""SAC (Semantic Attribute Compactness): low-dimensional attributes per Gaussian, lifted to CLIP space.

Each Gaussian carries a d-dimensional attribute rendered in the same pass as RGB; a small shared MLP
decodes a rendered pixel's attribute into the teacher's D-dimensional embedding space (unit norm).
Losses, all on pixels that belong to a teacher mask:
- cosine: 1 - cos(decoded, the mask's embedding);
- contrastive: softmax over the embeddings present in the frame (temperature ``tau``), cross-entropy to
  the pixel's own mask embedding, so decoded features separate objects, not only align;
- one object, one semantic: the spread of decoded features inside each mask around its mean.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clipgs.semantics.config import SemanticTrainingConfig


class SemanticDecoder(nn.Module):
    """(..., d) rendered attributes -> (..., D) unit embeddings.

    hidden = 0 is the no-SAC baseline: no decoder, every Gaussian carries the full D-dim embedding (d = D).
    """

    def __init__(self, sem_dim: int, embed_dim: int, hidden: int = 128) -> None:
        super().__init__()
        if hidden == 0 and sem_dim != embed_dim:
            raise ValueError(f"without a decoder (sem_hidden 0) sem_dim must equal the embedding size {embed_dim}, "
                             f"got {sem_dim}")
        self.sem_dim, self.embed_dim, self.hidden = sem_dim, embed_dim, hidden
        self.net = nn.Sequential(nn.Linear(sem_dim, hidden), nn.ReLU(), nn.Linear(hidden, embed_dim)) if hidden \
            else nn.Identity()

    def forward(self, attributes: Tensor) -> Tensor:
        return F.normalize(self.net(attributes), dim=-1)

    @property
    def folds(self) -> bool:
        """Whether products with D-dim embeddings are cheaper in the hidden space (D > hidden: 512 vs 128 for a
        ViT-B/16 teacher): the last layer folded into the embeddings, norms through its Gram matrix."""
        return self.hidden > 0 and self.embed_dim > self.hidden

    def hidden_features(self, attributes: Tensor) -> Tensor:
        """(..., d) -> (..., hidden): the activations the last layer maps to W h + b."""
        return torch.relu(self.net[0](attributes))

    def fold(self, embeddings: Tensor, grad_share: float | None = None) -> tuple[Tensor, Tensor]:
        """(K, D) embeddings t -> ((K, hidden), (K,)) with (W h + b) . t = folded h + offset. ``grad_share``: the
        share of their gradient that reaches the last layer (None: all of it; 0: none)."""
        w, b = self.net[2].weight, self.net[2].bias
        if grad_share == 0:
            w, b = w.detach(), b.detach()
        elif grad_share is not None:
            w, b = _ScaleGrad.apply(w, grad_share), _ScaleGrad.apply(b, grad_share)
        return embeddings @ w, embeddings @ b

    def gram(self) -> tuple[Tensor, Tensor, Tensor]:
        """(W^T W (hidden, hidden), W^T b (hidden,), b . b): |W h + b|^2 = h^T WW h + 2 h . Wb + bb."""
        last = self.net[2]
        return last.weight.T @ last.weight, last.weight.T @ last.bias, last.bias @ last.bias

    def similarity(self, attributes: Tensor, text: Tensor, unnormalised: bool = False) -> Tensor:
        """Cosine of each decoded attribute with each text embedding: (..., d), (K, D) -> (..., K).

        Equals ``self(attributes) @ text.T`` without building the (..., D) features: the last layer is folded
        into the text side (K x hidden) and the norm comes from a hidden x hidden Gram matrix, so the cost per
        pixel follows the decoder width and K, not D (512 for ViT-B/16). ``unnormalised``: skip the per-pixel
        norm (a positive factor per pixel): same argmax, cheaper, for labels only.
        """
        rows = attributes.reshape(-1, attributes.shape[-1])
        text = text.to(attributes)
        if self.folds:
            folded, offset = self.fold(text)
            gram = None if unnormalised else self.gram()

            def chunk_similarity(part: Tensor) -> Tensor:
                return self._rows_similarity(part, folded, offset, gram)
        else:
            def chunk_similarity(part: Tensor) -> Tensor:
                return self(part) @ text.T
        # Row chunks keep the (rows, hidden) activations in cache: 4x faster than one pass over a 640x480 image.
        out = [chunk_similarity(rows[i:i + self.CHUNK]) for i in range(0, max(len(rows), 1), self.CHUNK)]
        return torch.cat(out).reshape(*attributes.shape[:-1], len(text))

    CHUNK = 4096

    def pair_cosine(self, anchors: Tensor, neighbours: Tensor) -> Tensor:
        """Cosine of decoded anchors (S, d) with their decoded neighbours (S, k, d) -> (S, k); differentiable.

        Equals ``(self(anchors)[:, None] * self(neighbours)).sum(-1)``. When D > hidden the dot products and
        norms are taken in the hidden space through the Gram matrix of the last layer (hidden² instead of
        hidden·D per pair: 4x less for ViT-B/16's 512).
        """
        if not self.folds:
            return (self(anchors)[:, None, :] * self(neighbours)).sum(-1)
        ha, hb = self.hidden_features(anchors), self.hidden_features(neighbours)  # (S, H), (S, k, H)
        gram, wb, bb = self.gram()
        ga = ha @ gram  # (S, H)
        ua, ub = ha @ wb, hb @ wb  # (S,), (S, k)
        dot = (ga[:, None, :] * hb).sum(-1) + ua[:, None] + ub + bb  # (W ha + b) . (W hb + b)
        norm_a = ((ga * ha).sum(-1) + 2 * ua + bb).clamp_min(1e-24).sqrt()
        norm_b = (((hb @ gram) * hb).sum(-1) + 2 * ub + bb).clamp_min(1e-24).sqrt()
        return dot / (norm_a[:, None] * norm_b)

    def _rows_similarity(self, rows: Tensor, folded: Tensor, offset: Tensor,
                         gram: tuple[Tensor, Tensor, Tensor] | None) -> Tensor:
        h = self.hidden_features(rows)  # (P, hidden)
        scores = h @ folded.T + offset
        if gram is None:
            return scores
        ww, wb, bb = gram
        squared = ((h @ ww) * h).sum(-1) + 2 * (h @ wb) + bb  # |W h + b|^2
        return scores / squared.clamp_min(0).sqrt().clamp_min(1e-12)[:, None]


def sample_mask_pixels(mask_ids: Tensor, max_pixels: int, generator: torch.Generator, balance: float = 0.0) -> Tensor:
    """Flat indices of up to ``max_pixels`` random pixels that belong to a mask (id >= 0).

    Drawn with replacement when there are more: a permutation of every mask pixel cost 6 ms per step at
    640x480, about what the rest of the semantic loss costs. ``balance`` in [0, 1]: a pixel of a mask of n
    pixels is drawn with probability proportional to n^-balance (0: uniformly over mask pixels; 1: every mask
    gets the same share, a 20-pixel vase as many samples as the wall behind it). Drawing from one id image many
    times: :class:`MaskPixelSampler` (the same draws).
    """
    return MaskPixelSampler(mask_ids, balance).draw(max_pixels, generator)


class MaskPixelSampler:
    """:func:`sample_mask_pixels` for one (H, W) id image: its mask pixels and their weights found once, so each draw
    costs only the draw (half of it at 160x120)."""

    def __init__(self, mask_ids: Tensor, balance: float = 0.0) -> None:
        flat = mask_ids.reshape(-1)
        self.mask_ids, self.balance = mask_ids, balance  # the image kept: its id stays its own (SamplerCache)
        self.idx = torch.nonzero(flat >= 0).squeeze(1)  # (n,) the mask pixels
        self.weights = None  # (n,) float64 draw weights, with balance
        if balance > 0 and len(self.idx):
            ids = flat[self.idx].long()
            self.weights = torch.bincount(ids).to(torch.float64).pow(-balance)[ids]

    def draw(self, max_pixels: int, generator: torch.Generator) -> Tensor:
        """(min(n, max_pixels),) flat pixel indices: every mask pixel once when they are no more, else drawn."""
        idx = self.idx
        if len(idx) <= max_pixels:
            return idx
        if self.weights is None:
            return idx[torch.randint(len(idx), (max_pixels,), generator=generator, device=generator.device)]
        return idx[torch.multinomial(self.weights, max_pixels, replacement=True, generator=generator)]


class SamplerCache:
    """The :class:`MaskPixelSampler` of the last ``size`` id images drawn from (a window's keyframes, 3DCS views),
    each kept while its image is; an image is known by identity (id images are never edited in place)."""

    def __init__(self, size: int = 10) -> None:
        self.size, self._entries = size, OrderedDict()

    def draw(self, mask_ids: Tensor, max_pixels: int, generator: torch.Generator, balance: float) -> Tensor:
        """As ``sample_mask_pixels(mask_ids, max_pixels, generator, balance)``. A cached sampler holds its image, so
        no other tensor can take that image's id while the entry lives."""
        sampler = self._entries.get(id(mask_ids))
        if sampler is None or sampler.balance != balance:
            sampler = self._entries[id(mask_ids)] = MaskPixelSampler(mask_ids, balance)
        self._entries.move_to_end(id(mask_ids))
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return sampler.draw(max_pixels, generator)


class _LabelShare(torch.autograd.Function):
    """The decoder's work on P rows (P, d) done once and handed out twice: for the SAC losses and for the label
    terms, whose gradient reaches the decoder's weights scaled by ``share`` (``dcs_decoder_share``) and the rows
    in full. What a copy of the decoder that takes no gradient gave (its logits blended with the live ones),
    without decoding the rows a second time. Outputs, twice: without ``gram``, the unit rows u (P, D); with the
    decoder's ``gram()`` (a folding decoder), h (P, hidden) and |W2 h + b2| (P,) (what :class:`DecodedPixels`
    keeps). The backward is written out: rows get g + g_label, weights g + share * g_label."""

    @staticmethod
    def forward(ctx, share: float, gram: tuple[Tensor, Tensor, Tensor] | None, rows: Tensor, w1: Tensor, b1: Tensor,
                w2: Tensor, b2: Tensor) -> tuple[Tensor, ...]:
        ctx.set_materialize_grads(False)
        folded = gram is not None
        h = torch.relu(F.linear(rows, w1, b1))
        if folded:  # as hidden_features and the norm in DecodedPixels, with the decoder's gram()
            ww, wb, bb = (t.detach() for t in gram)
            hw = h @ ww
            squared = (hw * h).sum(-1) + 2 * (h @ wb) + bb
            norm = squared.clamp_min(1e-24).sqrt()
            ctx.save_for_backward(rows, w1, w2, b2, h, hw, wb, norm, squared > 1e-24)
            outs = (h, norm)
        else:  # as SemanticDecoder.forward (F.normalize)
            f = F.linear(h, w2, b2)
            length = f.norm(2, -1, keepdim=True)
            unit = f / length.clamp_min(1e-12).expand_as(f)
            ctx.save_for_backward(rows, w1, w2, h, unit, length)
            outs = (unit,)
        ctx.share, ctx.folded = share, folded
        return (*outs, *(o.view_as(o) for o in outs))

    @staticmethod
    def backward(ctx, *grads: Tensor | None):
        n = len(grads) // 2
        main, label = grads[:n], grads[n:]
        for_rows = [_plus(g, lg, 1.0) for g, lg in zip(main, label, strict=True)]
        for_weights = [_plus(g, lg, ctx.share) for g, lg in zip(main, label, strict=True)]
        if ctx.folded:
            rows, w1, w2, b2, h, hw, wb, norm, live = ctx.saved_tensors
            g_h = [_folded_hidden_grad(g[0], g[1], h, hw, wb, norm, live) for g in (for_rows, for_weights)]
            gamma = None if for_weights[1] is None else torch.where(live, for_weights[1] / (2 * norm), 0.0)
            g_w2 = g_b2 = None
            if gamma is not None:  # through |W2 h + b2|^2 = h.WW h + 2 h.Wb + bb with WW = W2^T W2, Wb = W2^T b2
                g_ww, g_wb, g_bb = h.T @ (gamma[:, None] * h), 2 * (gamma @ h), gamma.sum()
                g_w2 = 2 * (w2 @ g_ww) + b2[:, None] * g_wb[None, :]
                g_b2 = w2 @ g_wb + 2 * g_bb * b2
        else:
            rows, w1, w2, h, unit, length = ctx.saved_tensors
            g_f = [_unit_backward(g[0], unit, length) for g in (for_rows, for_weights)]
            g_h = [None if g is None else g @ w2 for g in g_f]
            g_w2, g_b2 = (None, None) if g_f[1] is None else (g_f[1].T @ h, g_f[1].sum(0))
        g_a = [None if g is None else torch.ops.aten.threshold_backward(g, h, 0.0) for g in g_h]  # ReLU's backward
        g_rows = None if g_a[0] is None or not ctx.needs_input_grad[2] else g_a[0] @ w1
        g_w1, g_b1 = (None, None) if g_a[1] is None else (g_a[1].T @ rows, g_a[1].sum(0))
        return None, None, g_rows, g_w1, g_b1, g_w2, g_b2


def _plus(g: Tensor | None, g_label: Tensor | None, share: float) -> Tensor | None:
    """g + share * g_label, either None when absent (share 0: g alone)."""
    if g_label is None or share == 0.0:
        return g
    g_label = g_label if share == 1.0 else share * g_label
    return g_label if g is None else g + g_label


def _unit_backward(g: Tensor | None, unit: Tensor, length: Tensor) -> Tensor | None:
    """The gradient at f of u = f / max(|f|, 1e-12), given the gradient g at u."""
    if g is None:
        return None
    radial = torch.where(length > 1e-12, (unit * g).sum(-1, keepdim=True), 0.0)
    return (g - unit * radial) / length.clamp_min(1e-12)


def _folded_hidden_grad(g_h: Tensor | None, g_norm: Tensor | None, h: Tensor, hw: Tensor, wb: Tensor, norm: Tensor,
                        live: Tensor) -> Tensor | None:
    """The gradient at h of (h, sqrt(max(h.WW h + 2 h.Wb + bb, 1e-24))), given those at h and at the norm."""
    if g_norm is None:
        return g_h
    through = torch.where(live, g_norm / norm, 0.0)[:, None] * (hw + wb)
    return through if g_h is None else g_h + through


class _ScaleGrad(torch.autograd.Function):
    """x itself, its gradient scaled by ``share``."""

    @staticmethod
    def forward(ctx, x: Tensor, share: float) -> Tensor:
        ctx.share = share
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor, None]:
        return g * ctx.share, None


class DecodedPixels:
    """The decoded unit embeddings u_p of P rendered attribute rows (P, d), as the semantic losses use them.

    When the decoder folds (D > hidden) nothing (P, D) is built: cosines to a set of embeddings and the sums
    of u over each mask are taken in the hidden space (``SemanticDecoder.fold`` and ``gram``): at D = 512 the
    SAC losses cost a quarter of decoding in full, forward and backward. Otherwise the rows are decoded in
    full (``full``). Same values and gradients either way (tests/test_semantic_decoder.py). ``gram``: the
    decoder's ``gram()`` when another batch of the same step already computed it (None: computed here).
    ``label_share``: also make ``label``, the same decoding for the 3DCS label terms, whose gradient reaches the
    decoder's weights scaled by this (the rows get all of it; :class:`_LabelShare`, one decoding for both).
    """

    def __init__(self, decoder: SemanticDecoder | None, attributes: Tensor | None = None,
                 full: Tensor | None = None, gram: tuple[Tensor, Tensor, Tensor] | None = None,
                 label_share: float | None = None) -> None:
        self.decoder, self.full, self.gram, self.label = decoder, full, None, None
        self._fold_share = None  # a label view's share of the gradient its folding passes to the last layer
        shared = (label_share is not None and label_share < 1 and attributes is not None and decoder is not None
                  and decoder.hidden > 0 and torch.is_grad_enabled())
        if shared:  # decoded once; the label view's copy passes its gradient to the decoder scaled by label_share
            self._decode_shared(attributes, label_share, gram)
            return
        if full is None and not decoder.folds:
            self.full = decoder(attributes)
        if self.full is None:
            self.h = decoder.hidden_features(attributes)  # (P, hidden)
            self.gram = decoder.gram() if gram is None else gram
            ww, wb, bb = self.gram
            self.norm = (((self.h @ ww) * self.h).sum(-1) + 2 * (self.h @ wb) + bb).clamp_min(1e-24).sqrt()  # (P,)
        if label_share is not None:
            self.label = self  # nothing to split: the same tensors, the decoder's gradient as it comes

    def _decode_shared(self, attributes: Tensor, share: float, gram: tuple[Tensor, Tensor, Tensor] | None) -> None:
        """This decoding and its ``label`` view (the same values, decoded once, :class:`_LabelShare`)."""
        dec = self.decoder
        first, last = dec.net[0], dec.net[2]
        if dec.folds:
            self.gram = dec.gram() if gram is None else gram
        outs = _LabelShare.apply(share, self.gram, attributes, first.weight, first.bias, last.weight, last.bias)
        half = len(outs) // 2
        label = self.label = DecodedPixels.__new__(DecodedPixels)
        label.decoder, label.full, label.gram, label.label, label._fold_share = dec, None, None, None, share
        if dec.folds:
            (self.h, self.norm), (label.h, label.norm) = outs[:half], outs[half:]
        else:
            self.full, label.full = outs[0], outs[1]

    @classmethod
    def of(cls, decoded: Tensor) -> DecodedPixels:
        """Wrap already decoded (P, D) unit rows (the reference path)."""
        return cls(None, full=decoded)

    def cosines(self, embeddings: Tensor) -> Tensor:
        """(P, K) cosines u_p . t_k with (K, D) unit embeddings."""
        if self.full is not None:
            return self.full @ embeddings.to(self.full).T
        folded, offset = self.decoder.fold(embeddings.to(self.h), self._fold_share)  # a label view: its share
        return (self.h @ folded.T + offset) / self.norm[:, None]

    def mask_spread(self, ids: Tensor, masks: int) -> Tensor:
        """Mean over pixels of |u_p - m|^2, m the mean of u over the pixel's mask; ids (P,) in [0, masks)."""
        counts = torch.bincount(ids, minlength=masks).clamp(min=1)
        # Per-mask sums as products with the (P, masks) one-hot matrix, not index_add / indexing: their
        # backwards accumulate with atomics on a multi-threaded CPU, so runs would not repeat bit for bit.
        onehot = F.one_hot(ids, masks).to(self.full.dtype if self.full is not None else self.h.dtype)
        if self.full is not None:
            means = onehot.T @ self.full / counts[:, None].to(self.full.dtype)
            return ((self.full - onehot @ means) ** 2).sum(-1).mean()
        # sum_p |u_p - m|^2 over a mask of n pixels = n - |S|^2 / n (|u_p| = 1), S = sum_p u_p = W a + b c with
        # a = sum_p h_p / |W h_p + b| and c = sum_p 1 / |W h_p + b|.
        inv = 1.0 / self.norm
        a = onehot.T @ (self.h * inv[:, None])
        c = onehot.T @ inv
        ww, wb, bb = self.gram
        sums_sq = ((a @ ww) * a).sum(-1) + 2 * c * (a @ wb) + c * c * bb
        return 1.0 - (sums_sq / counts.to(sums_sq.dtype)).sum() / len(ids)


def sac_losses(decoded: Tensor | DecodedPixels, ids: Tensor, embeddings: Tensor, tau: float = 0.1) -> dict[str, Tensor]:
    """decoded: (P, D) unit rows, or the same kept implicit (:class:`DecodedPixels`); ids: (P,) mask ids;
    embeddings: (M, D) unit, one per mask id."""
    if not isinstance(decoded, DecodedPixels):
        decoded = DecodedPixels.of(decoded)
    # Contrast against the distinct embeddings of this frame (masks of one class share an embedding).
    unique, inverse = torch.unique(embeddings, dim=0, return_inverse=True)
    target = inverse[ids]
    cosines = decoded.cosines(unique)  # (P, K)
    cosine = (1 - cosines.gather(1, target[:, None])).mean()
    contrast = F.cross_entropy(cosines / tau, target)
    return {"cosine": cosine, "contrast": contrast, "variance": decoded.mask_spread(ids, len(embeddings))}


def weighted_sac(terms: dict[str, Tensor], config: SemanticTrainingConfig) -> Tensor:
    """The SAC losses of :func:`sac_losses` weighted as ``config`` says (w_sem, w_sem_contrast, w_sem_var)."""
    c = config
    return c.w_sem * terms["cosine"] + c.w_sem_contrast * terms["contrast"] + c.w_sem_var * terms["variance"]


def knn_neighbours(means: Tensor, anchors: Tensor, k: int, radius: float, chunk: int = 256) -> tuple[Tensor, Tensor]:
    """The k nearest other Gaussians of each anchor. means: (N, 3) m; anchors: (S,) indices.

    Returns neighbours (S, k) indices and valid (S, k) bool (closer than ``radius``).
    """
    k = min(k, len(means) - 1)
    idx, dist = [], []
    for start in range(0, len(anchors), chunk):
        a = anchors[start:start + chunk]
        d = torch.cdist(means[a], means)
        d[torch.arange(len(a), device=d.device), a] = float("inf")  # not its own neighbour
        values, nearest = d.topk(k, dim=1, largest=False)
        idx.append(nearest)
        dist.append(values)
    neighbours, distances = torch.cat(idx), torch.cat(dist)
    return neighbours, distances < radius


def knn_consistency(cosine: Tensor, valid: Tensor) -> Tensor:
    """Mean (1 - cos) over valid anchor-neighbour pairs; cosine, valid: (S, k) (see ``pair_cosine``)."""
    if not bool(valid.any()):
        return cosine.sum() * 0.0
    return (1 - cosine)[valid].mean()
