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

    def fold(self, embeddings: Tensor) -> tuple[Tensor, Tensor]:
        """(K, D) embeddings t -> ((K, hidden), (K,)) with (W h + b) . t = folded h + offset."""
        last = self.net[2]
        return embeddings @ last.weight, embeddings @ last.bias

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


class DecodedPixels:
    """The decoded unit embeddings u_p of P rendered attribute rows (P, d), as the semantic losses use them.

    When the decoder folds (D > hidden) nothing (P, D) is built: cosines to a set of embeddings and the sums
    of u over each mask are taken in the hidden space (``SemanticDecoder.fold`` and ``gram``): at D = 512 the
    SAC losses cost a quarter of decoding in full, forward and backward. Otherwise the rows are decoded in
    full (``full``). Same values and gradients either way (tests/test_semantic_decoder.py). ``gram``: the
    decoder's ``gram()`` when another batch of the same step already computed it (None: computed here).
    """

    def __init__(self, decoder: SemanticDecoder | None, attributes: Tensor | None = None,
                 full: Tensor | None = None, gram: tuple[Tensor, Tensor, Tensor] | None = None) -> None:
        self.decoder, self.full, self.gram = decoder, full, None
        if full is None and not decoder.folds:
            self.full = decoder(attributes)
        if self.full is None:
            self.h = decoder.hidden_features(attributes)  # (P, hidden)
            self.gram = decoder.gram() if gram is None else gram
            ww, wb, bb = self.gram
            self.norm = (((self.h @ ww) * self.h).sum(-1) + 2 * (self.h @ wb) + bb).clamp_min(1e-24).sqrt()  # (P,)

    @classmethod
    def of(cls, decoded: Tensor) -> DecodedPixels:
        """Wrap already decoded (P, D) unit rows (the reference path)."""
        return cls(None, full=decoded)

    def cosines(self, embeddings: Tensor) -> Tensor:
        """(P, K) cosines u_p . t_k with (K, D) unit embeddings."""
        if self.full is not None:
            return self.full @ embeddings.to(self.full).T
        folded, offset = self.decoder.fold(embeddings.to(self.h))
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
