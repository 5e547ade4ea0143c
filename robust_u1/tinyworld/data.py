"""TinyWorld training and evaluation rows, and the collators that pack them.

Rows are plain dicts in the layouts the library's trainers read: recovery pairs ``{"image": corrupted,
"target_image": clean}`` (`FlowMatchingTrainer`, `FlowGRPOTrainer`) and question rows ``{"image",
"question", "options", "answer", "reasoning"}`` (`robust_u1.reasoning`, plus ``recovered_image`` once
`build_reasoning_dataset` has added I_r).

Example:
    >>> world = TinyWorld(seed=0)
    >>> pairs = recovery_pairs(world, count=8, seed=0)
    >>> rows = question_rows(world, "train", count=8, levels=("clean",), seed=0)
    >>> batch = TinyWorldCollator(processor, model.config)(rows[:2] + pairs[:2])
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..collators import PackedBatchBuilder, RecoveryCollator, TextItem, VaeItem, VitItem
from ..reasoning import ReasoningCollator
from .world import LEVELS, QUESTION_KINDS, TinyWorld, corrupt_scene_image


def recovery_pairs(
    world: TinyWorld,
    count: int,
    seed: int,
    levels: Sequence[str] = ("low", "mid", "high"),
    split: str = "train",
    identity: bool = False,
) -> list[dict[str, Any]]:
    """``count`` (corrupted, clean) pairs over the split's scenes, cycling through them; level and
    corruption drawn from ``seed``. With ``identity`` the target is the input itself (reconstruction
    pre-training: the generator learns to copy whatever it is given).

    Example:
        >>> pair = recovery_pairs(TinyWorld(0), count=1, seed=0)[0]
        >>> sorted(pair)
        ['image', 'target_image']
    """
    scenes = world.scenes(split)
    rng = np.random.default_rng([seed, 11])
    pairs = []
    for i in range(count):
        clean = scenes[i % len(scenes)].render()
        level = levels[int(rng.integers(len(levels)))]
        corrupted, _ = corrupt_scene_image(clean, level, key=(seed, i))
        pairs.append({"image": corrupted, "target_image": corrupted if identity else clean})
    return pairs


def question_rows(
    world: TinyWorld,
    split: str,
    count: int,
    levels: Sequence[str],
    seed: int,
    all_questions: bool = False,
) -> list[dict[str, Any]]:
    """Question rows over the first ``count`` scenes of a split, the image corrupted at a level drawn
    from ``levels``. One question per scene (kind drawn from ``seed``), or every question of the scene
    with ``all_questions``. ``clean_image`` keeps the uncorrupted image (for the clean oracle).

    Example:
        >>> row = question_rows(TinyWorld(0), "train", count=1, levels=("mid",), seed=0)[0]
        >>> row["question"], row["options"], row["answer"]
    """
    rng = np.random.default_rng([seed, 12])
    rows = []
    for scene in world.scenes(split, count):
        clean = scene.render()
        level = levels[int(rng.integers(len(levels)))]
        image, corruption = corrupt_scene_image(clean, level, key=(seed, scene.index))
        questions = scene.questions() if all_questions else [scene.question(QUESTION_KINDS[int(rng.integers(len(QUESTION_KINDS)))])]
        for question in questions:
            rows.append({
                "image": image, "clean_image": clean, "level": level, "corruption": corruption,
                "question": question.text, "options": list(question.options), "answer": question.answer,
                "reasoning": question.reasoning, "kind": question.kind,
            })  # fmt: skip
    return rows


class GuidanceDropoutCollator(RecoveryCollator):
    """`RecoveryCollator` that, as BAGEL's training does, sometimes drops conditions so that the
    guidance contexts of `recover` are in-distribution: with ``text_dropout`` the sample is
    [VAE(I_c), ViT(I_c), noisy] (the ``cfg_text`` context), with ``image_dropout`` [P_rec, noisy]
    (the ``cfg_img`` context). Draws come from a seeded generator, so runs repeat exactly.

    Example:
        >>> collator = GuidanceDropoutCollator(processor, model.config, text_dropout=0.1, image_dropout=0.1, seed=0)
        >>> trainer = FlowMatchingTrainer(model, args, train_dataset=pairs, data_collator=collator)
    """

    def __init__(self, processor, config, text_dropout: float, image_dropout: float, seed: int):
        super().__init__(processor, config)
        self.text_dropout, self.image_dropout = text_dropout, image_dropout
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self, example: dict[str, Any]):
        vae_condition, vit_condition, prompt, target = super().sample(example)
        draw = float(torch.rand((), generator=self.generator))
        if draw < self.text_dropout:
            return [vae_condition, vit_condition, target]
        if draw < self.text_dropout + self.image_dropout:
            return [prompt, target]
        return [vae_condition, vit_condition, prompt, target]


class TinyWorldCollator:
    """Packs any mix of TinyWorld rows into one batch for the model's own forward, so that the standard
    `Trainer` trains on it (CE on answers, flow-matching MSE on recoveries):

    - question rows with a ``recovered_image``: [ViT(I_c), ViT(I_r), prompt, target] (`ReasoningCollator`,
      the layout of ``model.answer(..., recover=True)``);
    - question rows without one: [ViT(I_c), prompt, target] (the layout of ``recover=False``, the same
      collator with ``allow_without_recovery``);
    - recovery pairs (``target_image``): [VAE(I_c), ViT(I_c), P_rec, VAE(clean) noisy] with guidance
      condition dropout (`GuidanceDropoutCollator`).

    The target is ``<think>{reasoning}</think><ANSWER>{letter}</ANSWER>`` (CE on it only). For recovery
    pairs the collator also draws what `FlowMatchingTrainer` would add — logit-normal raw timesteps and
    the noise — from its own seeded generator, and passes the pixels as ``padded_images`` for the
    forward's frozen-VAE encode (TinyWorld images share one size).

    Example:
        >>> collator = TinyWorldCollator(processor, model.config, guidance_dropout=0.1, seed=0)
        >>> model(**collator([question_row, question_row_with_recovery, recovery_pair])).loss
    """

    def __init__(self, processor, config, guidance_dropout: float = 0.0, seed: int = 0):
        self.reasoning = ReasoningCollator(processor, config, allow_without_recovery=True)
        self.recovery = GuidanceDropoutCollator(processor, config, guidance_dropout, guidance_dropout, seed)
        self.builder = PackedBatchBuilder.from_config(config)
        self.latent_dim = config.patch_latent_dim
        self.generator = torch.Generator().manual_seed(seed + 1)

    def sample(self, row: Mapping[str, Any]) -> list[TextItem | VitItem | VaeItem]:
        """The packing items of one row (recovery pair or question row, with or without I_r)."""
        if row.get("target_image") is not None:
            return self.recovery.sample(row)
        return self.reasoning.sample(row)

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        batch = self.builder([self.sample(row) for row in rows])
        images = batch.pop("vae_images", None)
        is_noisy = batch.pop("vae_image_is_noisy", None)
        counts = batch.pop("vae_image_token_counts", None)
        batch.pop("vae_image_sample", None)
        if images is None:
            return batch
        if len({tuple(image.shape) for image in images}) > 1:
            raise ValueError("TinyWorldCollator packs VAE images of one size only; resize the images first.")
        raw = [torch.randn((), generator=self.generator) if noisy else torch.tensor(float("-inf")) for noisy in is_noisy]
        batch["padded_images"] = torch.stack(images)
        batch["packed_timesteps"] = torch.cat([value.expand(count) for value, count in zip(raw, counts)])
        batch["noise"] = torch.randn(sum(counts), self.latent_dim, generator=self.generator)
        return batch


__all__ = ["GuidanceDropoutCollator", "LEVELS", "TinyWorldCollator", "question_rows", "recovery_pairs"]
