"""BAGEL's token layout, computed in one place for inference (`prefill`) and training (the collators).

A sequence is a list of *blocks* (text, ViT image, VAE image) laid out back to back. The rules of
the official packing (BAGEL's ``data/dataset_base.py`` and ``Bagel.prepare_*``; checked by the
parity cases of ``tests/fixtures/bagel-tiny``) are written here once, in `TokenLayoutPlanner.plan`:

- a text block is ``<|im_start|> ids <|im_end|>`` (``wrap=False``: the bare ids, a decoding step);
  its tokens take consecutive RoPE positions and it advances the position by its length;
- an image block is ``<|vision_start|> image tokens <|vision_end|>``; all its tokens share the
  current RoPE position; a ViT image or a clean VAE image advances the position by 1, a noisy VAE
  image (the flow-matching target / the denoising query) does not advance it;
- attention modes: text ``causal``, ViT and clean VAE images ``full``, noisy VAE images ``noise``
  (full inside, invisible to later splits; `robust_u1.attention` evaluates the modes);
- expert routing: VAE latent tokens use the generation expert, every other token (text, image
  markers, ViT tokens) the understanding expert;
- losses: a text block with ``loss=True`` predicts each of its tokens after the first (CE at every
  token but the last, labelled with the next one); a noisy VAE image is the MSE target.

Example:
    >>> planner = TokenLayoutPlanner.from_config(model.config)
    >>> layout = planner.plan([[VitImageBlock(vit_pixels), TextBlock(prompt_ids)]])
    >>> layout.split_modes, layout.next_positions
    (['full', 'causal'], [1 + len(prompt_ids) + 2])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from .attention import SPLIT_MODES, PackedAttentionLayout

ATTENTION_MODE_IDS: dict[str, int] = {mode: index for index, mode in enumerate(SPLIT_MODES)}
"""Integer ids of the attention modes in packed training batches (``attn_modes``: 0 causal, 1 full, 2 noise)."""


@dataclass
class TextBlock:
    """Text token ids; ``wrap`` adds ``<|im_start|> … <|im_end|>`` as every BAGEL text piece has;
    ``loss`` (training) predicts every id and the closing ``<|im_end|>``."""

    ids: Sequence[int] | torch.Tensor
    wrap: bool = True
    loss: bool = field(default=False, kw_only=True)


@dataclass
class VitImageBlock:
    """An image for the understanding path: normalised pixels [3, H, W], H and W multiples of the patch."""

    pixel_values: torch.Tensor


@dataclass
class VaeImageBlock:
    """An image for the generation path, as latent tokens (inference) or as pixels (training).

    ``tokens`` are [h·w, p·p·C] patches of the scaled latent on a ``grid`` of h×w tokens; training
    blocks give normalised ``pixel_values`` [3, H, W] instead (the frozen VAE encodes them in the
    training step). A clean context image has ``timestep=0``; a noisy one (``noisy=True``: the
    denoising query, or the flow-matching target of training) is attended bidirectionally, does not
    advance the RoPE position and is never written to the cache.
    """

    tokens: torch.Tensor | None = None
    grid: tuple[int, int] | None = None
    timestep: float | torch.Tensor = 0.0
    noisy: bool = False
    pixel_values: torch.Tensor | None = None

    def __post_init__(self):
        if (self.tokens is None) == (self.pixel_values is None):
            raise ValueError("A VaeImageBlock takes latent `tokens` with their `grid`, or `pixel_values=`: exactly one of the two.")
        if self.tokens is not None and self.grid is None:
            raise ValueError("A VaeImageBlock of latent tokens needs their `grid` (h, w); for pixels pass `pixel_values=`.")


Block = TextBlock | VitImageBlock | VaeImageBlock


@dataclass
class PlacedBlock:
    """Where one block landed: its tokens ``start … start+length`` of the packed axis, its sequence,
    the RoPE position of its first token and its attention mode."""

    block: Block
    sequence: int
    start: int
    length: int
    position: int
    mode: str

    @property
    def content(self) -> range:
        """Indexes of the image tokens between the two markers (for text: all its tokens)."""
        if isinstance(self.block, TextBlock):
            return range(self.start, self.start + self.length)
        return range(self.start + 1, self.start + self.length - 1)


@dataclass
class TokenLayout:
    """Everything the packed forward needs to know about where tokens are (see the module docstring).

    Index lists count tokens along the packed axis (all sequences one after another); ``text_ids``
    are the ids of the tokens taken from the embedding table (text and image markers), in the order
    of ``text_indexes``; ``labels`` are the targets of ``ce_indexes``.
    """

    placements: list[PlacedBlock]
    sequence_lens: list[int]
    next_positions: list[int]
    position_ids: list[int]
    text_ids: torch.Tensor
    text_indexes: list[int]
    vit_indexes: list[int]
    vae_indexes: list[int]
    ce_indexes: list[int]
    labels: torch.Tensor
    mse_indexes: list[int]

    @property
    def num_tokens(self) -> int:
        return sum(self.sequence_lens)

    @property
    def split_lens(self) -> list[int]:
        """One attention split per block."""
        return [p.length for p in self.placements]

    @property
    def split_modes(self) -> list[str]:
        return [p.mode for p in self.placements]

    @property
    def splits_per_sequence(self) -> list[int]:
        counts = [0] * len(self.sequence_lens)
        for placement in self.placements:
            counts[placement.sequence] += 1
        return counts

    def gen_mask(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Expert routing [num_tokens]: True for tokens of the generation expert (VAE latents)."""
        mask = torch.zeros(self.num_tokens, dtype=torch.bool, device=device)
        mask[torch.tensor(self.vae_indexes, dtype=torch.long, device=device)] = True
        return mask

    def attention_layout(self, cache_lens: Sequence[int] | None = None) -> PackedAttentionLayout:
        """The splits as `PackedAttentionLayout`, each sequence after ``cache_lens`` cached tokens."""
        return PackedAttentionLayout(self.split_lens, self.split_modes, self.splits_per_sequence, list(cache_lens or []))


@dataclass(frozen=True)
class TokenLayoutPlanner:
    """Computes the `TokenLayout` of sequences of blocks: the one home of BAGEL's layout rules.

    Used by `RobustU1ForConditionalGeneration.run_blocks` (``prefill``, denoising queries, decoding)
    and by `robust_u1.collators.PackedBatchBuilder` (every training collator).

    Example:
        >>> planner = TokenLayoutPlanner.from_config(model.config)
        >>> planner.num_tokens(TextBlock([5, 6, 7]))
        5
    """

    bos_token_id: int
    eos_token_id: int
    start_of_image_token_id: int
    end_of_image_token_id: int
    vit_patch_size: int
    latent_stride: int  # pixels per latent token side (VAE downsample × latent patch)

    @classmethod
    def from_config(cls, config) -> TokenLayoutPlanner:
        """The planner of a `RobustU1Config` (its special token ids, ViT patch and latent token sizes)."""
        return cls(
            config.bos_token_id, config.eos_token_id, config.start_of_image_token_id, config.end_of_image_token_id,
            config.vision_config.patch_size, config.pixels_per_latent_token,
        )  # fmt: skip

    def image_grid(self, block: VitImageBlock | VaeImageBlock) -> tuple[int, int]:
        """Token grid (rows, columns) of an image block."""
        if isinstance(block, VitImageBlock):
            pixels = block.pixel_values
            return pixels.shape[1] // self.vit_patch_size, pixels.shape[2] // self.vit_patch_size
        if block.tokens is not None:
            return tuple(block.grid)
        pixels = block.pixel_values
        if pixels.shape[1] % self.latent_stride or pixels.shape[2] % self.latent_stride:
            raise ValueError(
                f"VAE images must have sides divisible by {self.latent_stride} (pixels per latent token), got "
                f"{tuple(pixels.shape[1:])}; resize them to multiples of {self.latent_stride}."
            )
        return pixels.shape[1] // self.latent_stride, pixels.shape[2] // self.latent_stride

    def num_tokens(self, block: Block) -> int:
        """Tokens a block occupies in the decoder (wrappers and image markers included)."""
        if isinstance(block, TextBlock):
            return torch.as_tensor(block.ids).numel() + (2 if block.wrap else 0)
        if isinstance(block, VaeImageBlock) and block.tokens is not None:
            return block.tokens.shape[0] + 2
        if isinstance(block, (VitImageBlock, VaeImageBlock)):
            rows, cols = self.image_grid(block)
            return rows * cols + 2
        raise TypeError(f"Unknown block {type(block).__name__}; use TextBlock, VitImageBlock or VaeImageBlock.")

    def sequence_length(self, blocks: Sequence[Block]) -> int:
        """Tokens a sequence of blocks occupies (text and image tokens, wrappers and markers included)."""
        return sum(self.num_tokens(block) for block in blocks)

    def plan(
        self,
        sequences: Sequence[Sequence[Block]],
        start_positions: Sequence[int] | None = None,
        device: torch.device | str | None = None,
    ) -> TokenLayout:
        """Lays out ``sequences`` (each a list of blocks) one after another on one packed axis.

        ``start_positions`` are the RoPE positions each sequence continues from (a cache's
        ``next_positions``; 0 for training samples). ``device`` is where ``text_ids`` and ``labels`` go.
        """
        starts = [0] * len(sequences) if start_positions is None else [int(p) for p in start_positions]
        if len(starts) != len(sequences):
            raise ValueError(f"Got {len(starts)} start positions for {len(sequences)} sequences.")
        placements: list[PlacedBlock] = []
        sequence_lens, next_positions, position_ids = [], [], []
        id_pieces, label_pieces = [], []
        text_indexes, vit_indexes, vae_indexes, ce_indexes, mse_indexes = [], [], [], [], []
        cursor = 0
        for sequence, (blocks, position) in enumerate(zip(sequences, starts)):
            sequence_start = cursor
            for block in blocks:
                length = self.num_tokens(block)
                if isinstance(block, TextBlock):
                    ids = torch.as_tensor(block.ids, dtype=torch.long, device=device).flatten()
                    if block.wrap:
                        ids = torch.cat([ids.new_tensor([self.bos_token_id]), ids, ids.new_tensor([self.eos_token_id])])
                    mode, advance = "causal", length
                    position_ids.extend(range(position, position + length))
                    id_pieces.append(ids)
                    text_indexes.extend(range(cursor, cursor + length))
                    if block.loss:
                        ce_indexes.extend(range(cursor, cursor + length - 1))
                        label_pieces.append(ids[1:])
                else:
                    noisy = isinstance(block, VaeImageBlock) and block.noisy
                    mode = "noise" if noisy else "full"
                    advance = 0 if noisy else 1
                    position_ids.extend([position] * length)
                    id_pieces.append(torch.tensor([self.start_of_image_token_id, self.end_of_image_token_id], device=device))
                    text_indexes.extend([cursor, cursor + length - 1])
                    content = range(cursor + 1, cursor + length - 1)
                    if isinstance(block, VitImageBlock):
                        vit_indexes.extend(content)
                    else:
                        vae_indexes.extend(content)
                        if noisy:
                            mse_indexes.extend(content)
                placements.append(PlacedBlock(block, sequence, cursor, length, position, mode))
                cursor += length
                position += advance
            sequence_lens.append(cursor - sequence_start)
            next_positions.append(position)
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return TokenLayout(
            placements, sequence_lens, next_positions, position_ids,
            torch.cat(id_pieces) if id_pieces else empty, text_indexes, vit_indexes, vae_indexes,
            ce_indexes, torch.cat(label_pieces) if label_pieces else empty, mse_indexes,
        )  # fmt: skip


def attention_layout_from_batch(sample_lens, split_lens, attn_modes) -> PackedAttentionLayout:
    """The `PackedAttentionLayout` of a packed training batch (``sample_lens``, ``split_lens`` and
    ``attn_modes`` as ids or names), as produced by `PackedBatchBuilder` or the official ``PackedDataset``.

    Example:
        >>> attention_layout_from_batch([5], [3, 2], [1, 0]).split_modes
        ['full', 'causal']
    """
    sample_lens = [int(n) for n in torch.as_tensor(sample_lens).tolist()]
    split_lens = [int(n) for n in torch.as_tensor(split_lens).tolist()]
    values = attn_modes.tolist() if isinstance(attn_modes, torch.Tensor) else attn_modes
    # an unknown id stays as it is, for `PackedAttentionLayout` to name it
    modes = [SPLIT_MODES[m] if isinstance(m, int) and 0 <= m < len(SPLIT_MODES) else m for m in values]
    splits_per_sample, index = [], 0
    for sample_len in sample_lens:
        count, covered = 0, 0
        while covered < sample_len:
            if index >= len(split_lens):
                raise ValueError("split_lens do not add up to sample_lens.")
            covered += split_lens[index]
            index += 1
            count += 1
        if covered != sample_len:
            raise ValueError(f"A sample of {sample_len} tokens does not end on a split boundary.")
        splits_per_sample.append(count)
    return PackedAttentionLayout(split_lens, modes, splits_per_sample)


__all__ = [
    "ATTENTION_MODE_IDS",
    "Block",
    "PlacedBlock",
    "TextBlock",
    "TokenLayout",
    "TokenLayoutPlanner",
    "VaeImageBlock",
    "VitImageBlock",
    "attention_layout_from_batch",
]
