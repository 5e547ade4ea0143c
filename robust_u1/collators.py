"""Training collators: dataset rows → blocks → one packed training batch.

A training sample is a list of blocks — text (with or without loss), a ViT image, a VAE image
(clean condition or noisy target) — laid out by `robust_u1.token_layout.TokenLayoutPlanner`, the
one home of BAGEL's layout rules (positions, splits, attention modes, expert routing, loss
indexes), shared with inference; RoPE restarts at 0 per sample. The output dict is what
`RobustU1ForConditionalGeneration.forward` takes, except the VAE latents and the flow-matching
randomness, which the trainer adds (the VAE is frozen and runs in the training step, and
per-sample random draws keep results independent of the process layout).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from .modeling_robust_u1 import grid_position_ids, patchify
from .token_layout import ATTENTION_MODE_IDS, Block, TextBlock, TokenLayoutPlanner, VaeImageBlock, VitImageBlock

MODE_IDS = ATTENTION_MODE_IDS

# Earlier names of the block types on the training side (one set of types, `robust_u1.token_layout`):
# ``TextItem(ids, loss=True)`` (``loss`` is keyword-only), ``VitItem(pixels)``; a VAE image by its
# pixels is ``VaeImageBlock(pixel_values=pixels, noisy=...)`` (``VaeItem(pixels)`` raises, naming it).
TextItem = TextBlock
VitItem = VitImageBlock
VaeItem = VaeImageBlock


@dataclass
class PackedBatchBuilder:
    """Packs samples (lists of `TextBlock` / `VitImageBlock` / `VaeImageBlock`) into one training sequence.

    Where every token goes (indexes, RoPE positions, splits and modes, loss indexes) comes from
    `TokenLayoutPlanner`, the planner that inference uses too; this class adds the tensors the packed
    forward reads (ViT patches, VAE pixels, their 2-D position ids) and checks the length budgets.

    Example:
        >>> builder = PackedBatchBuilder.from_config(model.config)
        >>> batch = builder([[VaeImageBlock(pixel_values=vae_c), VitImageBlock(vit_c), TextBlock(prompt_ids),
        ...                   VaeImageBlock(pixel_values=vae_o, noisy=True)]])
        >>> sorted(batch)[:3]
        ['attn_modes', 'ce_loss_indexes', 'mse_loss_indexes']
    """

    planner: TokenLayoutPlanner
    vit_max_num_patch_per_side: int
    max_latent_size: int
    max_tokens_per_batch: int | None = None
    max_sequence_length: int | None = None  # the model's max_position_embeddings: the longest sample

    @classmethod
    def from_config(cls, config, max_tokens_per_batch: int | None = None) -> PackedBatchBuilder:
        return cls(
            TokenLayoutPlanner.from_config(config), config.vit_max_num_patch_per_side, config.max_latent_size,
            max_tokens_per_batch, config.text_config.max_position_embeddings,
        )  # fmt: skip

    def sample_length(self, items: Sequence[Block]) -> int:
        """Tokens a sample packs to (text and image tokens, wrappers and markers included)."""
        return self.planner.sequence_length(items)

    def __call__(self, samples: Sequence[Sequence[Block]]) -> dict[str, Any]:
        planner = self.planner
        if self.max_sequence_length is not None:
            for sample_index, items in enumerate(samples):
                length = planner.sequence_length(items)
                if length > self.max_sequence_length:
                    raise ValueError(
                        f"Sample {sample_index} of the batch packs {length} tokens (text and image tokens together), more "
                        f"than max_position_embeddings={self.max_sequence_length} of the model; shorten its text or lower "
                        "the image size bounds."
                    )
        layout = planner.plan(samples)
        if self.max_tokens_per_batch is not None and layout.num_tokens > self.max_tokens_per_batch:
            raise ValueError(
                f"A packed batch of {layout.num_tokens} tokens exceeds max_tokens_per_batch={self.max_tokens_per_batch}: "
                "lower per_device_train_batch_size or the image size bounds, or raise the budget."
            )
        long = lambda values: torch.tensor(values, dtype=torch.long)  # noqa: E731
        batch: dict[str, Any] = {
            "sequence_length": layout.num_tokens,
            "packed_text_ids": layout.text_ids,
            "packed_text_indexes": long(layout.text_indexes),
            "packed_position_ids": long(layout.position_ids),
            "split_lens": long(layout.split_lens),
            "attn_modes": long([MODE_IDS[mode] for mode in layout.split_modes]),
            "sample_lens": long(layout.sequence_lens),
            "mse_loss_indexes": long(layout.mse_indexes),
            "ce_loss_indexes": long(layout.ce_indexes),
            "packed_label_ids": layout.labels,
        }
        vit = [p for p in layout.placements if isinstance(p.block, VitImageBlock)]
        if vit:
            grids = [planner.image_grid(p.block) for p in vit]
            batch.update(
                packed_vit_tokens=torch.cat([patchify(p.block.pixel_values, planner.vit_patch_size) for p in vit]),
                packed_vit_position_ids=torch.cat([grid_position_ids(grid, self.vit_max_num_patch_per_side) for grid in grids]),
                packed_vit_token_indexes=long(layout.vit_indexes), vit_token_seqlens=long([h * w for h, w in grids]),
            )  # fmt: skip
        vae = [p for p in layout.placements if isinstance(p.block, VaeImageBlock)]
        if vae:
            if any(p.block.pixel_values is None for p in vae):
                raise ValueError("Training samples give VAE images as pixels: VaeImageBlock(pixel_values=..., noisy=...).")
            grids = [planner.image_grid(p.block) for p in vae]
            batch.update(
                vae_images=[p.block.pixel_values for p in vae], vae_image_is_noisy=[p.block.noisy for p in vae],
                vae_image_sample=[p.sequence for p in vae], vae_image_token_counts=[h * w for h, w in grids],
                patchified_vae_latent_shapes=long(grids),
                packed_latent_position_ids=torch.cat([grid_position_ids(grid, self.max_latent_size) for grid in grids]),
                packed_vae_token_indexes=long(layout.vae_indexes),
            )  # fmt: skip
        return batch


class RecoveryCollator:
    """Stage I / II data collator: (corrupted ``image``, clean ``target_image``[, ``prompt``]) examples →
    packed [VAE(I_c) clean, ViT(I_c), text(P_rec, no loss), VAE(I_o) noisy] samples.

    Example:
        >>> collator = RecoveryCollator(processor, model.config)
        >>> batch = collator([{"image": corrupted, "target_image": clean}])
    """

    def __init__(self, processor, config, prompt: str | None = None, max_tokens_per_batch: int | None = None):
        from .prompting import RECOVERY_PROMPT

        self.processor = processor
        self.prompt = prompt or RECOVERY_PROMPT
        self.builder = PackedBatchBuilder.from_config(config, max_tokens_per_batch)

    def sample(self, example: dict[str, Any]) -> list[Block]:
        if "image" not in example or "target_image" not in example:
            raise KeyError(f"Recovery examples need 'image' (corrupted) and 'target_image' (clean); got {sorted(example)}.")
        image_processor = self.processor.image_processor
        (vae_c,), (vit_c,) = image_processor.edit_pixel_values([example["image"]])
        target = image_processor.resize(_rgb(example["target_image"]), "vae")
        if tuple(target.size) != (vae_c.shape[2], vae_c.shape[1]):
            target = target.resize((vae_c.shape[2], vae_c.shape[1]))  # the pair must share one latent grid
        prompt = self.processor.encode_text(example.get("prompt") or self.prompt)
        return [
            VaeImageBlock(pixel_values=vae_c), VitImageBlock(vit_c), TextBlock(prompt),
            VaeImageBlock(pixel_values=image_processor.normalize_image(target), noisy=True),
        ]  # fmt: skip

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return self.builder([self.sample(example) for example in examples])


def _rgb(image):
    from .processing_robust_u1 import to_rgb_image

    return to_rgb_image(image)
