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

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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

    def similarity(self, attributes: Tensor, text: Tensor, unnormalised: bool = False) -> Tensor:
        """Cosine of each decoded attribute with each text embedding: (..., d), (K, D) -> (..., K).

        Equals ``self(attributes) @ text.T`` without building the (..., D) features: the last layer is folded
        into the text side (K x hidden) and the norm comes from a hidden x hidden Gram matrix, so the cost per
        pixel follows the decoder width and K, not D (512 for ViT-B/16). ``unnormalised``: skip the per-pixel
        norm (a positive factor per pixel): same argmax, cheaper, for labels only.
        """
        if self.hidden == 0 or self.embed_dim <= self.hidden:
            return self(attributes) @ text.T.to(attributes)
        last = self.net[2]
        text = text.to(attributes)
        folded, offset = text @ last.weight, text @ last.bias  # (K, hidden), (K,): (W h + b) . t = folded h + offset
        gram = None if unnormalised else (last.weight.T @ last.weight, last.weight.T @ last.bias, last.bias @ last.bias)
        rows = attributes.reshape(-1, attributes.shape[-1])
        # Row chunks keep the (rows, hidden) activations in cache: 4x faster than one pass over a 640x480 image.
        out = [self._rows_similarity(rows[i:i + self.CHUNK], folded, offset, gram)
               for i in range(0, max(len(rows), 1), self.CHUNK)]
        return torch.cat(out).reshape(*attributes.shape[:-1], len(text))

    CHUNK = 4096

    def pair_cosine(self, anchors: Tensor, neighbours: Tensor) -> Tensor:
        """Cosine of decoded anchors (S, d) with their decoded neighbours (S, k, d) -> (S, k); differentiable.

        Equals ``(self(anchors)[:, None] * self(neighbours)).sum(-1)``. When D > hidden the dot products and
        norms are taken in the hidden space through the Gram matrix of the last layer (hidden² instead of
        hidden·D per pair: 4x less for ViT-B/16's 512).
        """
        if self.hidden == 0 or self.embed_dim <= self.hidden:
            return (self(anchors)[:, None, :] * self(neighbours)).sum(-1)
        last = self.net[2]
        ha, hb = torch.relu(self.net[0](anchors)), torch.relu(self.net[0](neighbours))  # (S, H), (S, k, H)
        gram, wb, bb = last.weight.T @ last.weight, last.weight.T @ last.bias, last.bias @ last.bias
        ga = ha @ gram  # (S, H)
        ua, ub = ha @ wb, hb @ wb  # (S,), (S, k)
        dot = (ga[:, None, :] * hb).sum(-1) + ua[:, None] + ub + bb  # (W ha + b) . (W hb + b)
        norm_a = ((ga * ha).sum(-1) + 2 * ua + bb).clamp_min(1e-24).sqrt()
        norm_b = (((hb @ gram) * hb).sum(-1) + 2 * ub + bb).clamp_min(1e-24).sqrt()
        return dot / (norm_a[:, None] * norm_b)

    def _rows_similarity(self, rows: Tensor, folded: Tensor, offset: Tensor,
                         gram: tuple[Tensor, Tensor, Tensor] | None) -> Tensor:
        h = torch.relu(self.net[0](rows))  # (P, hidden)
        scores = h @ folded.T + offset
        if gram is None:
            return scores
        ww, wb, bb = gram
        squared = ((h @ ww) * h).sum(-1) + 2 * (h @ wb) + bb  # |W h + b|^2
        return scores / squared.clamp_min(0).sqrt().clamp_min(1e-12)[:, None]


def sample_mask_pixels(mask_ids: Tensor, max_pixels: int, generator: torch.Generator) -> Tensor:
    """Flat indices of up to ``max_pixels`` random pixels that belong to a mask (id >= 0).

    Drawn with replacement when there are more: a permutation of every mask pixel cost 6 ms per step at
    640x480, about what the rest of the semantic loss costs.
    """
    idx = torch.nonzero(mask_ids.reshape(-1) >= 0).squeeze(1)
    if len(idx) > max_pixels:
        idx = idx[torch.randint(len(idx), (max_pixels,), generator=generator, device=generator.device)]
    return idx


def sac_losses(decoded: Tensor, ids: Tensor, embeddings: Tensor, tau: float = 0.1) -> dict[str, Tensor]:
    """decoded: (P, D) unit; ids: (P,) mask ids; embeddings: (M, D) unit, one per mask id."""
    target = embeddings[ids]
    cosine = (1 - (decoded * target).sum(-1)).mean()
    # Contrast against the distinct embeddings of this frame (masks of one class share an embedding).
    unique, inverse = torch.unique(embeddings, dim=0, return_inverse=True)
    contrast = F.cross_entropy(decoded @ unique.T / tau, inverse[ids])
    means = decoded.new_zeros(len(embeddings), decoded.shape[1]).index_add_(0, ids, decoded)
    counts = torch.bincount(ids, minlength=len(embeddings)).clamp(min=1).to(decoded.dtype)
    means = means / counts[:, None]
    variance = ((decoded - means[ids]) ** 2).sum(-1).mean()
    return {"cosine": cosine, "contrast": contrast, "variance": variance}


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
