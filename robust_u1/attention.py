"""Packed attention with BAGEL's rules, on SDPA (everywhere) or FlexAttention (CUDA training).

A forward call holds several independent *sequences* packed along one token axis. Each sequence
may have a KV cache (inference contexts) and its new tokens are cut into *splits* (a text piece, a
ViT image, a VAE image), each of one mode:

- ``causal``: a token sees the earlier tokens of its split (text);
- ``full``: a token sees its whole split (an image block);
- ``noise``: like ``full``, and no token of a *later* split may see it (the noisy target latents
  of training, which must not leak into what follows).

Every token also sees the whole cache of its sequence and every earlier split of its sequence;
sequences never see each other. One rule, two kernels: per-sequence SDPA, and one FlexAttention
call over the whole packed batch whose ``mask_mod`` evaluates the same rule. SDPA gets the
cheapest description of each sequence's pattern: no mask where everything is visible (image
blocks, decoding steps), ``is_causal`` for a causal split without cache (a text prefill), a
lower-right `CausalBias` for a causal split after a cache, and a dense boolean mask only for
several splits (training batches, where CUDA uses FlexAttention instead), so that memory does
not grow with the square of a prompt's length.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

SplitMode = Literal["causal", "full", "noise"]
SPLIT_MODES: tuple[str, ...] = ("causal", "full", "noise")
AttentionBackend = Literal["auto", "sdpa", "flex"]


@dataclass
class PackedAttentionLayout:
    """Where each sequence's new tokens are and how they may attend.

    Args:
        split_lens: length of every split, all sequences in order.
        split_modes: mode of every split (``"causal"``, ``"full"`` or ``"noise"``).
        splits_per_sequence: how many consecutive splits belong to each sequence.
        cache_lens: cached tokens of each sequence (all zero without a cache).

    Example:
        >>> layout = PackedAttentionLayout.single_split([6, 3], ["full", "causal"], cache_lens=[20, 8])
        >>> layout.query_lens
        [6, 3]
    """

    split_lens: list[int]
    split_modes: list[str]
    splits_per_sequence: list[int]
    cache_lens: list[int] = field(default_factory=list)

    def __post_init__(self):
        if not self.cache_lens:
            self.cache_lens = [0] * len(self.splits_per_sequence)
        unknown = sorted(set(self.split_modes) - set(SPLIT_MODES))
        if unknown:
            raise ValueError(f"Unknown attention split mode(s) {unknown}; expected one of {SPLIT_MODES}.")
        if len(self.split_lens) != len(self.split_modes) or sum(self.splits_per_sequence) != len(self.split_lens):
            raise ValueError("split_lens, split_modes and splits_per_sequence describe different numbers of splits.")
        if len(self.cache_lens) != len(self.splits_per_sequence):
            raise ValueError("cache_lens must have one entry per sequence.")

    @classmethod
    def single_split(cls, query_lens: list[int], modes: list[str], cache_lens: list[int] | None = None):
        """One split per sequence: a context update or a query against cached contexts."""
        return cls(list(query_lens), list(modes), [1] * len(query_lens), list(cache_lens or []))

    @property
    def query_lens(self) -> list[int]:
        lens, start = [], 0
        for count in self.splits_per_sequence:
            lens.append(sum(self.split_lens[start : start + count]))
            start += count
        return lens

    def sequence_splits(self, index: int) -> tuple[list[int], list[str]]:
        start = sum(self.splits_per_sequence[:index])
        stop = start + self.splits_per_sequence[index]
        return self.split_lens[start:stop], self.split_modes[start:stop]

    def sequence_mask(self, index: int, device: torch.device) -> torch.Tensor | None:
        """Boolean mask [new, cache + new] of one sequence (True = attend), or None if all visible."""
        lens, modes = self.sequence_splits(index)
        num_new = sum(lens)
        if len(lens) == 1 and (modes[0] != "causal" or num_new == 1):
            return None
        cache_len = self.cache_lens[index]
        lens_t = torch.tensor(lens, device=device)
        query_split = torch.repeat_interleave(torch.arange(len(lens), device=device), lens_t)
        key_split = torch.cat([torch.full((cache_len,), -1, device=device), query_split])
        is_causal = torch.tensor([m == "causal" for m in modes], device=device)
        is_noise = torch.tensor([m == "noise" for m in modes] + [False], device=device)  # index -1: cache
        key_pos = torch.arange(cache_len + num_new, device=device)
        query_pos = key_pos[cache_len:]
        return _visible(
            query_split[:, None], key_split[None, :], query_pos[:, None], key_pos[None, :],
            is_causal[query_split][:, None], is_noise[key_split][None, :],
        )  # fmt: skip


    def sequence_attention(self, index: int, device: torch.device, grouped_query: bool = False):
        """SDPA arguments ``(attn_mask, is_causal)`` of one sequence, without a dense mask where the
        pattern is described by its lengths alone (see the module docstring).

        ``grouped_query`` (fewer key/value heads than query heads) keeps a dense mask after a cache:
        `CausalBias` hands unexpanded grouped heads to the CUDA kernels it dispatches to.
        """
        lens, modes = self.sequence_splits(index)
        num_new, cache_len = sum(lens), self.cache_lens[index]
        if len(lens) == 1 and modes[0] == "causal" and num_new > 1:
            if cache_len == 0:
                return None, True
            if not grouped_query:
                from torch.nn.attention.bias import causal_lower_right

                return causal_lower_right(num_new, cache_len + num_new), False
        return self.sequence_mask(index, device), False


def _visible(query_split, key_split, query_pos, key_pos, query_causal, key_noise):
    """The attention rule, shared by the dense masks and FlexAttention's mask_mod."""
    earlier = (key_split < query_split) & ~key_noise
    same = key_split == query_split
    in_split = same & (~query_causal | (key_pos <= query_pos))
    return earlier | in_split


def packed_sdpa(
    query: torch.Tensor,
    keys: list[torch.Tensor],
    values: list[torch.Tensor],
    layout: PackedAttentionLayout,
) -> torch.Tensor:
    """Attention of packed queries [N, Hq, D] against per-sequence keys/values [cache + new, Hkv, D].

    Runs one SDPA call per sequence (grouped-query heads handled by SDPA), which on CUDA uses the
    flash kernel wherever the pattern needs no dense mask (image blocks, decoding steps, text
    prefills).
    """
    outputs, start = [], 0
    for index, length in enumerate(layout.query_lens):
        q = query[start : start + length].transpose(0, 1)[None]
        k = keys[index].transpose(0, 1)[None]
        v = values[index].transpose(0, 1)[None]
        grouped = q.shape[1] != k.shape[1]
        mask, is_causal = layout.sequence_attention(index, query.device, grouped_query=grouped)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, enable_gqa=grouped)
        outputs.append(out[0].transpose(0, 1))
        start += length
    return torch.cat(outputs) if len(outputs) > 1 else outputs[0]


def packed_flex_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, layout: PackedAttentionLayout
) -> torch.Tensor:
    """The same attention over a whole packed batch without cache, as one FlexAttention call.

    Long packed training batches (many samples of thousands of tokens) would need a dense
    [N, N] mask with SDPA; FlexAttention evaluates the rule block-sparsely instead.
    """
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    if any(layout.cache_lens):
        raise ValueError("packed_flex_attention serves training batches without a KV cache.")
    device = query.device
    total = query.shape[0]
    lens = torch.tensor(layout.split_lens, device=device)
    split_of_token = torch.repeat_interleave(torch.arange(len(layout.split_lens), device=device), lens)
    sequence_of_split = torch.repeat_interleave(
        torch.arange(len(layout.splits_per_sequence), device=device), torch.tensor(layout.splits_per_sequence, device=device)
    )
    sequence_of_token = sequence_of_split[split_of_token]
    causal = torch.tensor([m == "causal" for m in layout.split_modes], device=device)[split_of_token]
    noise = torch.tensor([m == "noise" for m in layout.split_modes], device=device)[split_of_token]

    def mask_mod(batch, head, q_idx, kv_idx):
        rule = _visible(split_of_token[q_idx], split_of_token[kv_idx], q_idx, kv_idx, causal[q_idx], noise[kv_idx])
        return rule & (sequence_of_token[q_idx] == sequence_of_token[kv_idx])

    block_mask = create_block_mask(mask_mod, None, None, total, total, device=device.type)
    # Uncompiled, FlexAttention materialises the score matrix; compiled it generates a fused kernel.
    kernel = _compiled_flex_attention() if device.type == "cuda" else flex_attention
    out = kernel(
        query.transpose(0, 1)[None], key.transpose(0, 1)[None], value.transpose(0, 1)[None],
        block_mask=block_mask, enable_gqa=query.shape[1] != key.shape[1],
    )  # fmt: skip
    return out[0].transpose(0, 1)


@functools.cache
def _compiled_flex_attention():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=True)


def resolve_attention_backend(backend: str, device: torch.device, has_cache: bool) -> str:
    """The kernel of one attention call: ``"sdpa"`` or ``"flex"``.

    ``auto`` → FlexAttention for cache-free CUDA batches (training), SDPA otherwise; ``flex`` →
    FlexAttention for cache-free batches, SDPA for calls with a KV cache (the FlexAttention path does
    not read a cache); ``sdpa`` → SDPA.

    Example:
        >>> resolve_attention_backend("flex", torch.device("cpu"), has_cache=True)
        'sdpa'
    """
    if backend not in ("auto", "sdpa", "flex"):
        raise ValueError(f"attention_backend must be 'auto', 'sdpa' or 'flex', got {backend!r}.")
    if backend == "auto":
        return "flex" if device.type == "cuda" and not has_cache else "sdpa"
    return "sdpa" if has_cache else backend

