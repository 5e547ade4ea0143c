"""Packing training samples into one sequence with BAGEL's layout and attention splits.

A training sample is a list of items — text (with or without loss), a ViT image, a VAE image
(clean condition or noisy target) — packed back to back with the official rules (DESIGN.md §1,
parity README "train_forward"): image blocks are ``<|vision_start|> tokens <|vision_end|>`` sharing
one RoPE position, text pieces are ``<|im_start|> ids <|im_end|>``; RoPE restarts at 0 per sample; a
text split advances the position by its length, a ViT or clean VAE image by 1, a noisy VAE image not
at all. The output dict is what `RobustU1ForConditionalGeneration.forward` takes, except the VAE
latents and the flow-matching randomness, which the trainer adds (the VAE is frozen and runs in
the training step, and per-sample random draws keep results independent of the process layout).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from .modeling_robust_u1 import grid_position_ids, patchify

MODE_IDS = {"causal": 0, "full": 1, "noise": 2}


@dataclass
class TextItem:
    """Text ids (without wrapper); with ``loss`` every id and the closing ``<|im_end|>`` are predicted."""

    ids: Sequence[int] | torch.Tensor
    loss: bool = False


@dataclass
class VitItem:
    """Normalised ViT pixels [3, H, W]."""

    pixel_values: torch.Tensor


@dataclass
class VaeItem:
    """Normalised VAE pixels [3, H, W]; ``noisy`` marks the flow-matching target (MSE loss)."""

    pixel_values: torch.Tensor
    noisy: bool = False


@dataclass
class PackedBatchBuilder:
    """Packs samples (lists of `TextItem` / `VitItem` / `VaeItem`) into one training sequence.

    Example:

    ```python
    >>> builder = PackedBatchBuilder.from_config(model.config)
    >>> batch = builder([[VaeItem(vae_c), VitItem(vit_c), TextItem(prompt_ids), VaeItem(vae_o, noisy=True)]])
    >>> sorted(batch)[:3]
    ['attn_modes', 'ce_loss_indexes', 'mse_loss_indexes']
    ```
    """

    bos_token_id: int
    eos_token_id: int
    start_of_image_token_id: int
    end_of_image_token_id: int
    vit_patch_size: int
    vit_max_num_patch_per_side: int
    latent_stride: int  # pixels per latent token side (VAE downsample × latent patch)
    max_latent_size: int
    max_tokens_per_batch: int | None = None
    max_sequence_length: int | None = None  # the model's max_position_embeddings: the longest sample

    @classmethod
    def from_config(cls, config, max_tokens_per_batch: int | None = None) -> PackedBatchBuilder:
        return cls(
            config.bos_token_id, config.eos_token_id, config.start_of_image_token_id, config.end_of_image_token_id,
            config.vision_config.patch_size, config.vit_max_num_patch_per_side, config.pixels_per_latent_token,
            config.max_latent_size, max_tokens_per_batch, config.text_config.max_position_embeddings,
        )  # fmt: skip

    def sample_length(self, items: Sequence[TextItem | VitItem | VaeItem]) -> int:
        """Tokens a sample packs to (text and image tokens, wrappers and markers included)."""
        length = 0
        for item in items:
            if isinstance(item, TextItem):
                length += torch.as_tensor(item.ids).numel() + 2
            elif isinstance(item, VitItem):
                length += (item.pixel_values.shape[1] // self.vit_patch_size) * (item.pixel_values.shape[2] // self.vit_patch_size) + 2
            elif isinstance(item, VaeItem):
                length += (item.pixel_values.shape[1] // self.latent_stride) * (item.pixel_values.shape[2] // self.latent_stride) + 2
        return length

    def __call__(self, samples: Sequence[Sequence[TextItem | VitItem | VaeItem]]) -> dict[str, Any]:
        s: dict[str, list] = {key: [] for key in (
            "text_ids", "text_indexes", "position_ids", "split_lens", "attn_modes", "sample_lens",
            "vit_tokens", "vit_position_ids", "vit_indexes", "vit_seqlens",
            "vae_images", "vae_noisy", "vae_sample", "vae_shapes", "latent_position_ids", "vae_indexes", "vae_token_counts",
            "mse_indexes", "ce_indexes", "labels",
        )}  # fmt: skip
        if self.max_sequence_length is not None:
            for sample_index, items in enumerate(samples):
                length = self.sample_length(items)
                if length > self.max_sequence_length:
                    raise ValueError(
                        f"Sample {sample_index} of the batch packs {length} tokens (text and image tokens together), more "
                        f"than max_position_embeddings={self.max_sequence_length} of the model; shorten its text or lower "
                        "the image size bounds."
                    )
        cursor = 0
        for sample_index, items in enumerate(samples):
            start, position = cursor, 0
            for item in items:
                if isinstance(item, TextItem):
                    cursor, position = self._add_text(s, item, cursor, position)
                elif isinstance(item, VitItem):
                    cursor, position = self._add_vit(s, item, cursor, position)
                elif isinstance(item, VaeItem):
                    cursor, position = self._add_vae(s, item, cursor, position, sample_index)
                else:
                    raise TypeError(f"Unknown sample item {type(item).__name__}; use TextItem, VitItem or VaeItem.")
            s["sample_lens"].append(cursor - start)
        if self.max_tokens_per_batch is not None and cursor > self.max_tokens_per_batch:
            raise ValueError(
                f"A packed batch of {cursor} tokens exceeds max_tokens_per_batch={self.max_tokens_per_batch}: "
                "lower per_device_train_batch_size or the image size bounds, or raise the budget."
            )
        long = lambda values: torch.tensor(values, dtype=torch.long)  # noqa: E731
        batch: dict[str, Any] = {
            "sequence_length": cursor,
            "packed_text_ids": long(s["text_ids"]),
            "packed_text_indexes": long(s["text_indexes"]),
            "packed_position_ids": long(s["position_ids"]),
            "split_lens": long(s["split_lens"]),
            "attn_modes": long(s["attn_modes"]),
            "sample_lens": long(s["sample_lens"]),
            "mse_loss_indexes": long(s["mse_indexes"]),
            "ce_loss_indexes": long(s["ce_indexes"]),
            "packed_label_ids": long(s["labels"]),
        }
        if s["vit_tokens"]:
            batch.update(
                packed_vit_tokens=torch.cat(s["vit_tokens"]), packed_vit_position_ids=torch.cat(s["vit_position_ids"]),
                packed_vit_token_indexes=long(s["vit_indexes"]), vit_token_seqlens=long(s["vit_seqlens"]),
            )  # fmt: skip
        if s["vae_images"]:
            batch.update(
                vae_images=s["vae_images"], vae_image_is_noisy=s["vae_noisy"], vae_image_sample=s["vae_sample"],
                vae_image_token_counts=s["vae_token_counts"],
                patchified_vae_latent_shapes=long(s["vae_shapes"]),
                packed_latent_position_ids=torch.cat(s["latent_position_ids"]),
                packed_vae_token_indexes=long(s["vae_indexes"]),
            )  # fmt: skip
        return batch

    def _split(self, s, length: int, mode: str) -> None:
        s["split_lens"].append(length)
        s["attn_modes"].append(MODE_IDS[mode])

    def _add_text(self, s, item: TextItem, cursor: int, position: int):
        ids = [self.bos_token_id, *[int(i) for i in torch.as_tensor(item.ids).flatten().tolist()], self.eos_token_id]
        indexes = list(range(cursor, cursor + len(ids)))
        s["text_ids"].extend(ids)
        s["text_indexes"].extend(indexes)
        s["position_ids"].extend(range(position, position + len(ids)))
        if item.loss:
            s["ce_indexes"].extend(indexes[:-1])
            s["labels"].extend(ids[1:])
        self._split(s, len(ids), "causal")
        return cursor + len(ids), position + len(ids)

    def _image_block(self, s, count: int, cursor: int, position: int, mode: str) -> list[int]:
        s["text_ids"].extend([self.start_of_image_token_id, self.end_of_image_token_id])
        s["text_indexes"].extend([cursor, cursor + count + 1])
        s["position_ids"].extend([position] * (count + 2))
        self._split(s, count + 2, mode)
        return list(range(cursor + 1, cursor + 1 + count))

    def _add_vit(self, s, item: VitItem, cursor: int, position: int):
        pixels = item.pixel_values
        grid = (pixels.shape[1] // self.vit_patch_size, pixels.shape[2] // self.vit_patch_size)
        count = grid[0] * grid[1]
        s["vit_tokens"].append(patchify(pixels, self.vit_patch_size))
        s["vit_position_ids"].append(grid_position_ids(grid, self.vit_max_num_patch_per_side))
        s["vit_seqlens"].append(count)
        s["vit_indexes"].extend(self._image_block(s, count, cursor, position, "full"))
        return cursor + count + 2, position + 1

    def _add_vae(self, s, item: VaeItem, cursor: int, position: int, sample_index: int):
        pixels = item.pixel_values
        if pixels.shape[1] % self.latent_stride or pixels.shape[2] % self.latent_stride:
            raise ValueError(f"VAE images must have sides divisible by {self.latent_stride}, got {tuple(pixels.shape[1:])}.")
        grid = (pixels.shape[1] // self.latent_stride, pixels.shape[2] // self.latent_stride)
        count = grid[0] * grid[1]
        s["vae_images"].append(pixels)
        s["vae_noisy"].append(item.noisy)
        s["vae_sample"].append(sample_index)
        s["vae_shapes"].append(grid)
        s["vae_token_counts"].append(count)
        s["latent_position_ids"].append(grid_position_ids(grid, self.max_latent_size))
        indexes = self._image_block(s, count, cursor, position, "noise" if item.noisy else "full")
        s["vae_indexes"].extend(indexes)
        if item.noisy:
            s["mse_indexes"].extend(indexes)
        return cursor + count + 2, position if item.noisy else position + 1


class RecoveryCollator:
    """Stage I / II data collator: (corrupted ``image``, clean ``target_image``[, ``prompt``]) examples →
    packed [VAE(I_c) clean, ViT(I_c), text(P_rec, no loss), VAE(I_o) noisy] samples.

    Example:

    ```python
    >>> collator = RecoveryCollator(processor, model.config)
    >>> batch = collator([{"image": corrupted, "target_image": clean}])
    ```
    """

    def __init__(self, processor, config, prompt: str | None = None, max_tokens_per_batch: int | None = None):
        from .evaluation.prompts import RECOVERY_PROMPT

        self.processor = processor
        self.prompt = prompt or RECOVERY_PROMPT
        self.builder = PackedBatchBuilder.from_config(config, max_tokens_per_batch)

    def sample(self, example: dict[str, Any]) -> list[TextItem | VitItem | VaeItem]:
        if "image" not in example or "target_image" not in example:
            raise KeyError(f"Recovery examples need 'image' (corrupted) and 'target_image' (clean); got {sorted(example)}.")
        image_processor = self.processor.image_processor
        (vae_c,), (vit_c,) = image_processor.edit_pixel_values([example["image"]])
        target = image_processor.resize(_rgb(example["target_image"]), "vae")
        if tuple(target.size) != (vae_c.shape[2], vae_c.shape[1]):
            target = target.resize((vae_c.shape[2], vae_c.shape[1]))  # the pair must share one latent grid
        prompt = self.processor.encode_text(example.get("prompt") or self.prompt)
        return [VaeItem(vae_c), VitItem(vit_c), TextItem(prompt), VaeItem(image_processor.normalize_image(target), noisy=True)]

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return self.builder([self.sample(example) for example in examples])


def _rgb(image):
    from .processing_robust_u1 import to_rgb_image

    return to_rgb_image(image)
