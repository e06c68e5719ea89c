"""Attention written out by hand, found as it runs: `q @ k^T`, a softmax over its last
dimension, then a product with the values.

timm's Swin (its default path), transformers' eager attention, diffusers' `AttnProcessor`, the
SAGAN layer and most research code compute attention this way rather than through
`scaled_dot_product_attention`. `Finder` watches the torch functions a step calls (the routing
mode hands it each one) and tags tensors:

- the output of a matrix product (`matmul`, `@`, `bmm`, `baddbmm`, `einsum`) is a candidate score;
- a candidate carries its tag through any op that keeps its number of elements (a scale, a
  bias or mask added, `masked_fill`, a view, a transpose, a dtype cast, dropout);
- a softmax over the last dimension of a candidate gives probabilities;
- a matrix product that takes probabilities (either operand, in any layout) is attention: the
  module running it is an attention layer, and `on_found(shape)` gets the probabilities' shape.

A tag is a weak reference: nothing is kept alive, and the same rules hold on meta and real tensors.
"""

from __future__ import annotations

import torch
from torch.utils.weak import WeakTensorKeyDictionary

PRODUCTS = frozenset({"matmul", "__matmul__", "__rmatmul__", "bmm", "baddbmm", "einsum"})
SOFTMAX = frozenset({"softmax", "_softmax"})
SCORES, PROBS = 1, 2


class Finder:
    def __init__(self, on_found=None):
        self.tags = WeakTensorKeyDictionary()
        self.on_found = on_found or (lambda shape: None)

    def observe(self, func, args, kwargs, out) -> None:
        if not isinstance(out, torch.Tensor) or out.dim() < 2:
            return
        name = getattr(func, "__name__", "")
        tagged = [(a, self.tags[a]) for a in args if isinstance(a, torch.Tensor) and a in self.tags]
        if name in PRODUCTS:
            probs = [a for a, tag in tagged if tag == PROBS]
            if probs:
                self.on_found(tuple(probs[0].shape))
                return
            self.tags[out] = SCORES
            return
        if not tagged:
            return
        source, tag = tagged[0]
        if name in SOFTMAX and tag == SCORES:
            dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
            if isinstance(dim, int) and dim in (-1, source.dim() - 1):
                self.tags[out] = PROBS
            return
        if out.numel() == source.numel():
            self.tags[out] = tag
