"""Text embeddings from an open_clip model's text tower with a prompt-template ensemble.

Weights only ever come from a local file (``weights``); without one the model is randomly initialised,
which is what tests and the simulated teacher use (their class embeddings only need to be distinct and
fixed). ``clipgs-tiny`` is a 3.4 M-parameter config shipped with clipgs for fast tests and demos.
"""
from __future__ import annotations

import functools
import pickle
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from clipgs.semantics.torch_compat import import_torchvision

CONFIG_DIR = Path(__file__).with_name("model_configs")
TEMPLATES = ("a photo of a {}.", "a photo of the {}.", "a {} in a room.", "a close-up photo of a {}.",
             "a photo of a small {}.", "a photo of a large {}.", "there is a {} in the scene.", "a {}.")


def load_open_clip(model: str, weights: str | Path | None = None, seed: int = 0, device: str | torch.device = "cpu"):
    """(model, preprocess, tokenizer) of an open_clip architecture; weights from a local path or random.

    Loaded once per (model, weights, seed, device) and shared (e.g. by the text encoder and the mask
    embedder of one session): the networks are only ever used for inference.
    """
    return _load_open_clip(model, str(weights) if weights else None, seed, str(torch.device(device)))


@functools.lru_cache(maxsize=4)
def _load_open_clip(model: str, weights: str | None, seed: int, device: str):
    import_torchvision()
    import open_clip

    open_clip.add_model_config(CONFIG_DIR)
    if model not in open_clip.list_models():
        raise ValueError(f"unknown open_clip model {model!r}; e.g. ViT-B-16, ViT-B-32, clipgs-tiny")
    if weights is not None and not Path(weights).expanduser().is_file():
        raise FileNotFoundError(
            f"CLIP weights not found: {weights}. clipgs never downloads weights: fetch the open_clip checkpoint "
            f"for {model} on a machine with internet and set its local path in the config.")
    with torch.random.fork_rng(devices=[]):  # random initialisation is reproducible, global RNG untouched
        torch.manual_seed(seed)
        try:
            net, _, preprocess = open_clip.create_model_and_transforms(
                model, pretrained=str(Path(weights).expanduser()) if weights else None)
        except (RuntimeError, KeyError, pickle.UnpicklingError, EOFError) as exc:
            raise ValueError(f"{weights} is not an open_clip {model} checkpoint ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from exc
    net.to(device).eval()
    return net, preprocess, open_clip.get_tokenizer(model)


class TextEncoder:
    """encode(["chair", ...]) -> (n, D) unit vectors: mean of the template embeddings, renormalised."""

    BATCH = 16  # prompts per text-tower pass: a 200-class vocabulary's 1600 prompts in one took 2.9 GB (ViT-B-16)

    def __init__(self, model: str = "clipgs-tiny", weights: str | Path | None = None,
                 templates: tuple[str, ...] = TEMPLATES, seed: int = 0, device: str | torch.device = "cpu") -> None:
        self.model_name, self.weights, self.templates = model, weights, templates
        self.device = torch.device(device)
        self.net, _, self.tokenizer = load_open_clip(model, weights, seed, device)
        self._cache: dict[str, Tensor] = {}
        self._cut_context: bool | None = None  # whether encode_tokens' shortcut matched encode_text (first use)

    @property
    def identity(self) -> dict:
        """What a saved map records so a later query uses the same text space."""
        return {"model": self.model_name, "weights": str(self.weights) if self.weights else None,
                "templates": list(self.templates)}

    @classmethod
    def from_identity(cls, identity: dict, device: str | torch.device = "cpu") -> TextEncoder:
        """The text encoder a saved map recorded (``identity``), to query it in the same text space."""
        return cls(identity["model"], identity["weights"], tuple(identity["templates"]), device=device)

    def _check_length(self, text: str) -> None:
        """ValueError when a prompt would not fit the text tower's context (CLIP: 77 tokens) and be cut silently."""
        encode, context = getattr(self.tokenizer, "encode", None), getattr(self.tokenizer, "context_length", None)
        if encode is None or not context or len(text) < context:  # a token is at least one character
            return
        longest = max(len(encode(tpl.format(text.strip()))) for tpl in self.templates) + 2  # + start/end tokens
        if longest > context:
            raise ValueError(f"text of {len(text)} characters is {longest} tokens with its prompt; the text model "
                             f"reads at most {context}: give a short object description such as 'red mug'")

    @torch.no_grad()
    def encode(self, texts: list[str]) -> Tensor:
        for text in texts:
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"text to encode must be a non-empty string, got {text!r}")
            self._check_length(text)
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            prompts = [tpl.format(t.strip()) for t in missing for tpl in self.templates]
            emb = torch.cat([self._encode_prompts(prompts[i:i + self.BATCH]) for i in range(0, len(prompts),
                                                                                            self.BATCH)])
            emb = F.normalize(F.normalize(emb, dim=-1).reshape(len(missing), len(self.templates), -1).mean(1), dim=-1)
            self._cache.update(zip(missing, emb))
        return torch.stack([self._cache[t] for t in texts])

    def _encode_prompts(self, prompts: list[str]) -> Tensor:
        """(len(prompts), D) float32 text-tower embeddings on the CPU (not normalised): :func:`encode_tokens`, whose
        shortcut is checked once against the model's own ``encode_text`` and not taken if they disagree."""
        tokens = self.tokenizer(prompts).to(self.device)
        if self._cut_context is None:
            first = tokens[:2]
            self._cut_context = bool(torch.allclose(encode_tokens(self.net, first), self.net.encode_text(first),
                                                    rtol=1e-4, atol=1e-4))
        return (encode_tokens(self.net, tokens) if self._cut_context else self.net.encode_text(tokens)).float().cpu()


def encode_tokens(net: torch.nn.Module, tokens: Tensor) -> Tensor:
    """(B, T) token ids -> (B, D) text embeddings, the same as ``net.encode_text(tokens)``. For open_clip's CLIP
    text tower (causal attention, pooled at the end-of-text token, the largest id of a prompt) the context is cut
    after the last end token first: later positions cannot reach the pooled one, and class prompts fill about 14
    of CLIP's 77 (ViT-B-16: 5.8x faster). Other towers run ``encode_text``."""
    parts = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection", "attn_mask")
    if getattr(net, "text_pool_type", None) != "argmax" or any(getattr(net, p, None) is None for p in parts):
        return net.encode_text(tokens)
    length = int(tokens.argmax(dim=-1).max()) + 1
    cast = net.transformer.get_cast_dtype()
    x = net.token_embedding(tokens[:, :length]).to(cast) + net.positional_embedding[:length].to(cast)
    x = net.ln_final(net.transformer(x, attn_mask=net.attn_mask[:length, :length]))
    x = x[torch.arange(len(tokens), device=tokens.device), tokens[:, :length].argmax(dim=-1)]
    return net.text_projection(x) if isinstance(net.text_projection, torch.nn.Linear) else x @ net.text_projection
