"""The per-sequence KV cache of the packed decoder (the input blocks are in `robust_u1.token_layout`)."""

from __future__ import annotations

from typing import Sequence

import torch

# The block types live with the layout rules; importable from here as before.
from .token_layout import Block, TextBlock, VaeImageBlock, VitImageBlock


class RobustU1KVCache:
    """Per-sequence key/value cache of the packed decoder.

    Keys (after k-norm and RoPE) and values are kept per layer and per sequence, ``[len, Hkv, D]``,
    with each sequence's next RoPE position. Selecting or concatenating sequences shares tensors,
    so the three guidance contexts of a step, or G rollouts of one image, reuse one prefill.

    Example:
        >>> cache = model.new_cache(batch_size=2)
        >>> model.prefill(cache, [TextBlock([5, 6]), TextBlock([7])])
        >>> cache.lengths
        [4, 3]
    """

    def __init__(self, keys: list[list[torch.Tensor]], values: list[list[torch.Tensor]], next_positions: list[int]):
        self.keys = keys
        self.values = values
        self.next_positions = list(next_positions)

    @classmethod
    def empty(cls, num_layers: int, batch_size: int, num_kv_heads: int, head_dim: int, device=None, dtype=None):
        """``device``: one device, or one per layer (a model split over devices keeps each layer's cache there)."""
        devices = list(device) if isinstance(device, (list, tuple)) else [device] * num_layers
        blanks = [torch.empty(0, num_kv_heads, head_dim, device=d, dtype=dtype) for d in devices]
        return cls([[b] * batch_size for b in blanks], [[b] * batch_size for b in blanks], [0] * batch_size)

    @property
    def batch_size(self) -> int:
        return len(self.next_positions)

    @property
    def lengths(self) -> list[int]:
        return [k.shape[0] for k in self.keys[0]]

    def select(self, indices: Sequence[int]) -> RobustU1KVCache:
        """A cache of the given sequences (repeats allowed), sharing their tensors."""
        pick = lambda rows: [rows[i] for i in indices]  # noqa: E731
        return RobustU1KVCache([pick(k) for k in self.keys], [pick(v) for v in self.values], pick(self.next_positions))

    @classmethod
    def concat(cls, caches: Sequence[RobustU1KVCache]) -> RobustU1KVCache:
        """The sequences of several caches side by side (one batched forward for all of them)."""
        layers = range(len(caches[0].keys))
        keys = [[k for c in caches for k in c.keys[i]] for i in layers]
        values = [[v for c in caches for v in c.values[i]] for i in layers]
        return cls(keys, values, [p for c in caches for p in c.next_positions])

    def assign(self, indices: Sequence[int], other: RobustU1KVCache) -> None:
        """Writes the sequences of ``other`` (e.g. an updated `select`) back at ``indices``."""
        for layer in range(len(self.keys)):
            for position, row in enumerate(indices):
                self.keys[layer][row] = other.keys[layer][position]
                self.values[layer][row] = other.values[layer][position]
        for position, row in enumerate(indices):
            self.next_positions[row] = other.next_positions[position]

    def packed(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of one layer with the sequences stored one after another (the official layout)."""
        return torch.cat(self.keys[layer]), torch.cat(self.values[layer])


__all__ = ["Block", "RobustU1KVCache", "TextBlock", "VaeImageBlock", "VitImageBlock"]
