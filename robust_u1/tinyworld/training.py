"""The TinyWorld recipe: VAE, understanding and generation pre-training, then the paper's three stages,
each with the library's own trainers.

=====================  =====================================================================
step                   how
=====================  =====================================================================
VAE                    plain AdamW on reconstruction (+ a tiny KL), then the latent shift and
                       scale are set from the encoded training images (as FLUX's are)
understanding          standard `Trainer`: [ViT(I), question] →
                       ``<think>description fact</think><ANSWER>X</ANSWER>``
generation (base)      `FlowMatchingTrainer`, target = input (reconstruction of clean and corrupted
                       images), with condition dropout so that guidance works
stage I (SFT)          `FlowMatchingTrainer` on (corrupted, clean) pairs of `world.CORRUPTIONS`
stage II (RL)          `FlowGRPOTrainer` with LoRA on the generation expert (merged afterwards) and
                       the SSIM reward only (CLIP with random weights would reward nothing
                       meaningful, and no CLIP weights may be downloaded)
stage III (reasoning)  `build_reasoning_dataset` (I_r from the RL model) + standard `Trainer` on
                       [I_c, I_r, Q] rows, mixed with [I_c, Q] rows of the same images and with
                       recovery pairs (CE + flow-matching MSE, MathCanvas stage-2 template)
=====================  =====================================================================

Example:
    >>> recipe = TinyWorldRecipe()
    >>> checkpoints = train_tinyworld(recipe, "runs/tinyworld")  # {"base": path, "sft": …, "rl": …, "final": …}
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import datasets
import torch
from transformers import Trainer

from ..reasoning import build_reasoning_dataset, reasoning_training_arguments
from ..rewards import SSIMReward
from ..trainers import (
    FlowGRPOConfig,
    FlowGRPOTrainer,
    FlowMatchingConfig,
    FlowMatchingTrainer,
    TrainingSafetyCallback,
    generation_lora_config,
)
from .data import GuidanceDropoutCollator, TinyWorldCollator, question_rows, recovery_pairs
from .model import new_tinyworld_model
from .world import TinyWorld

if TYPE_CHECKING:
    from PIL import Image

    from ..modeling_robust_u1 import RobustU1ForConditionalGeneration
    from ..processing_robust_u1 import RobustU1Processor

    Model = RobustU1ForConditionalGeneration
    Processor = RobustU1Processor

logger = logging.getLogger(__name__)

STAGES = ("base", "sft", "rl", "final")
# Recovery settings of TinyWorld evaluation and of the I_r precomputation: the library's guidance
# defaults, with 20 schedule points instead of 50 (16 latent tokens need no finer schedule; it keeps
# CPU runs short).
RECOVER_KWARGS: dict[str, Any] = {"num_inference_steps": 20}


@dataclass
class TinyWorldRecipe:
    """Every setting of a from-scratch TinyWorld run (the shipped checkpoints use these defaults).

    Example:
        >>> quick = TinyWorldRecipe(sft_steps=200, rl_steps=10)  # a shorter run; every other setting as shipped
    """

    seed: int = 0
    # VAE
    vae_steps: int = 800
    vae_batch_size: int = 32
    vae_learning_rate: float = 2e-3
    # understanding pre-training (clean images, every question of each scene)
    understanding_scenes: int = 4000
    understanding_steps: int = 1200
    understanding_learning_rate: float = 1e-3
    # generation pre-training (reconstruction)
    reconstruction_pairs: int = 4000
    reconstruction_steps: int = 400
    reconstruction_learning_rate: float = 1e-3
    # stage I
    sft_pairs: int = 8000
    sft_steps: int = 1200
    sft_learning_rate: float = 1e-3
    # stage II
    rl_images: int = 512
    rl_steps: int = 60
    rl_num_generations: int = 8
    rl_images_per_step: int = 4
    rl_learning_rate: float = 1e-4  # flow_grpo's BAGEL template; 3e-4 diverged, 120 steps overfit (validation)
    rl_lora_rank: int = 16  # alpha = 2 × rank, as the template's r 64 / alpha 128
    # stage III
    reasoning_scenes: int = 2400
    reasoning_recovery_pairs: int = 2400
    reasoning_steps: int = 600
    reasoning_learning_rate: float = 3e-4
    batch_size: int = 32
    guidance_dropout: float = 0.1


def _trainer_defaults(seed: int) -> dict[str, Any]:
    return dict(
        use_cpu=True, report_to="none", save_strategy="no", disable_tqdm=True, logging_steps=50, seed=seed,
        dataloader_pin_memory=False, lr_scheduler_type="cosine", warmup_steps=20,
    )  # fmt: skip


def _train_vae(
    model: Model, processor: Processor, images: list[Image.Image], steps: int, batch_size: int, learning_rate: float, seed: int
) -> None:
    """Fits ``model.vae`` to reconstruct ``images`` (PIL), then sets ``shift_factor`` / ``scaling_factor``
    so that the scaled latents of these images have mean 0 and standard deviation 1 (flow matching
    assumes unit-scale data, as FLUX's factors give for natural images)."""
    vae = model.vae
    pixels = torch.stack([processor.image_processor.normalize_image(image) for image in images])
    generator = torch.Generator().manual_seed(seed)
    vae.requires_grad_(True).train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, learning_rate, total_steps=steps, pct_start=0.05)
    for step in range(steps):
        batch = pixels[torch.randint(len(pixels), (batch_size,), generator=generator)]
        posterior = vae.encode(batch).latent_dist
        reconstruction = vae.decode(posterior.sample(generator)).sample
        loss = (reconstruction - batch).pow(2).mean() + 1e-6 * posterior.kl().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 200 == 0 or step == steps - 1:
            logger.info("vae step %d: loss %.5f", step, loss.item())
    vae.requires_grad_(False).eval()
    with torch.no_grad():
        latents = torch.cat([vae.encode(chunk).latent_dist.mode() for chunk in pixels.split(256)])
    shift, scale = latents.mean().item(), 1.0 / latents.std().item()
    vae.register_to_config(shift_factor=shift, scaling_factor=scale)
    model.config.vae_config = {**model.config.vae_config, "shift_factor": shift, "scaling_factor": scale}


def _train_with_trainer(
    model: Model, processor: Processor, rows: list[dict[str, Any]], steps: int, learning_rate: float, batch_size: int,
    guidance_dropout: float, output_dir: str | Path, seed: int,
) -> None:  # fmt: skip
    """The standard `Trainer` on TinyWorld rows packed by `TinyWorldCollator`: question rows (CE on the
    answer) and, in stage III, recovery pairs (flow-matching MSE) — every parameter but the VAE trains."""
    args = reasoning_training_arguments(
        output_dir, max_steps=steps, learning_rate=learning_rate, per_device_train_batch_size=batch_size,
        weight_decay=0.01, adam_beta2=0.95, max_grad_norm=1.0, **_trainer_defaults(seed),
    )  # fmt: skip
    collator = TinyWorldCollator(processor, model.config, guidance_dropout, seed)
    model.train()
    Trainer(model=model, args=args, train_dataset=rows, data_collator=collator, callbacks=[TrainingSafetyCallback()]).train()
    model.eval()


def _train_flow_matching(
    model: Model, processor: Processor, pairs: list[dict[str, Any]], steps: int, learning_rate: float, batch_size: int,
    dropout: float, output_dir: str | Path, seed: int,
) -> None:  # fmt: skip
    """`FlowMatchingTrainer` (generation expert only, VAE frozen) on (image, target_image) pairs, with
    guidance condition dropout (`GuidanceDropoutCollator`)."""
    args = FlowMatchingConfig(
        str(output_dir), max_steps=steps, learning_rate=learning_rate, per_device_train_batch_size=batch_size,
        max_grad_norm=1.0, **_trainer_defaults(seed),
    )  # fmt: skip
    collator = GuidanceDropoutCollator(processor, model.config, dropout, dropout, seed)
    FlowMatchingTrainer(model, args, train_dataset=pairs, processing_class=processor, data_collator=collator).train()
    _restore_after_stage(model)


def _train_flow_grpo(
    model: Model, processor: Processor, pairs: list[dict[str, Any]], recipe: TinyWorldRecipe, output_dir: str | Path
) -> None:
    """`FlowGRPOTrainer` with the SSIM reward on (corrupted, clean) pairs, training a LoRA adapter on the
    generation expert as the paper's stage II does; the adapter is then merged into ``model``."""
    args = FlowGRPOConfig(
        str(output_dir), max_steps=recipe.rl_steps, learning_rate=recipe.rl_learning_rate,
        num_generations=recipe.rl_num_generations,
        per_device_train_batch_size=recipe.rl_num_generations * recipe.rl_images_per_step,
        num_inference_steps=RECOVER_KWARGS["num_inference_steps"], sde_window_size=2, sde_window_range=(0, 6),
        **{**_trainer_defaults(recipe.seed), "logging_steps": 10, "lr_scheduler_type": "constant", "warmup_steps": 0},
    )  # fmt: skip
    lora = generation_lora_config(r=recipe.rl_lora_rank, lora_alpha=2 * recipe.rl_lora_rank)
    trainer = FlowGRPOTrainer(
        model, [SSIMReward(device="cpu")], args, train_dataset=pairs, processing_class=processor, peft_config=lora
    )
    trainer.train()
    trainer.model.merge_and_unload()  # folds the adapter into ``model``'s own layers, in place
    _restore_after_stage(model)


def _train_reasoning(model: Model, processor: Processor, world: TinyWorld, recipe: TinyWorldRecipe, work_dir: str | Path) -> None:
    """Stage III: I_r of corrupted training images from the model's own recovery
    (`build_reasoning_dataset`), then the standard `Trainer` on [I_c, I_r, Q] rows, mixed with the same
    rows as [I_c, Q] (so that answering without recovery stays a trained, fair baseline) and with
    recovery pairs (the MathCanvas stage-2 template trains CE and flow-matching MSE together: without
    them the understanding expert drifts and the recoveries it conditions get worse)."""
    rows = question_rows(world, "train", recipe.reasoning_scenes, ("clean", "low", "mid", "high"), recipe.seed + 5)
    columns = ("image", "question", "options", "answer", "reasoning")
    table = datasets.Dataset.from_list([{key: row[key] for key in columns} for row in rows])
    with_recovery = build_reasoning_dataset(
        table.cast_column("image", datasets.Image()), model, processor, recover_kwargs=RECOVER_KWARGS,
        batch_size=64, seed=recipe.seed, cache_dir=Path(work_dir) / "recovered",
    )  # fmt: skip
    pairs = recovery_pairs(world, recipe.reasoning_recovery_pairs, recipe.seed + 6, levels=("clean", "low", "mid", "high"))
    mixed = [*with_recovery, *({**row, "recovered_image": None} for row in with_recovery), *pairs]
    _train_with_trainer(model, processor, mixed, recipe.reasoning_steps, recipe.reasoning_learning_rate, recipe.batch_size,
                       recipe.guidance_dropout, Path(work_dir) / "reasoning", recipe.seed)  # fmt: skip


def _restore_after_stage(model: Model) -> None:
    """The trainers freeze what a stage does not train; the saved model should be plainly trainable."""
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(not name.startswith("vae.") and not name.endswith("pos_embed.pos_embed"))
    model.eval()


def save_stage(model: Model, processor: Processor, folder: str | Path, card: str) -> Path:
    """Saves a stage checkpoint (safetensors, processor files, model card README.md).

    Example:
        >>> save_stage(model, processor, "runs/tinyworld/sft", tinyworld_card("sft", TinyWorldRecipe(), minutes))
        PosixPath('runs/tinyworld/sft')
    """
    folder = Path(folder)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    (folder / "README.md").write_text(card)
    return folder


def train_tinyworld(
    recipe: TinyWorldRecipe,
    output_dir: str | Path,
    card_for: Callable[[str, TinyWorldRecipe, dict[str, float]], str],
) -> dict[str, Path]:
    """Runs the whole recipe from random weights; returns the folder of each stage's checkpoint.

    ``card_for(stage, recipe, minutes)`` writes each checkpoint's model card. Stage wall times (minutes)
    are logged and passed to the cards.

    Example:
        >>> from robust_u1.tinyworld.card import tinyworld_card
        >>> paths = train_tinyworld(TinyWorldRecipe(), "runs/tinyworld", tinyworld_card)
        >>> paths["final"]
        PosixPath('runs/tinyworld/final')
    """
    output_dir = Path(output_dir)
    world = TinyWorld(recipe.seed)
    torch.manual_seed(recipe.seed)
    model, processor = new_tinyworld_model(recipe.seed)
    minutes: dict[str, float] = {}

    def timed(name: str, function: Callable[[], None]) -> None:
        start = time.perf_counter()
        function()
        minutes[name] = (time.perf_counter() - start) / 60
        logger.info("%s: %.1f min", name, minutes[name])

    train_scenes = world.scenes("train")
    vae_images = [scene.render() for scene in train_scenes]
    vae_images += [pair["image"] for pair in recovery_pairs(world, len(train_scenes) // 4, recipe.seed + 1)]
    timed("vae", lambda: _train_vae(model, processor, vae_images, recipe.vae_steps, recipe.vae_batch_size,
                                   recipe.vae_learning_rate, recipe.seed))  # fmt: skip

    understanding = question_rows(world, "train", recipe.understanding_scenes, ("clean",), recipe.seed, all_questions=True)
    timed("understanding", lambda: _train_with_trainer(
        model, processor, understanding, recipe.understanding_steps, recipe.understanding_learning_rate,
        recipe.batch_size, recipe.guidance_dropout, output_dir / "work" / "understanding", recipe.seed))  # fmt: skip

    identity = recovery_pairs(world, recipe.reconstruction_pairs, recipe.seed + 2, levels=("clean", "low", "mid", "high"), identity=True)
    timed("reconstruction", lambda: _train_flow_matching(
        model, processor, identity, recipe.reconstruction_steps, recipe.reconstruction_learning_rate,
        recipe.batch_size, recipe.guidance_dropout, output_dir / "work" / "reconstruction", recipe.seed))  # fmt: skip
    paths = {"base": save_stage(model, processor, output_dir / "base", card_for("base", recipe, minutes))}

    restoration = recovery_pairs(world, recipe.sft_pairs, recipe.seed + 3, levels=("clean", "low", "mid", "high"))
    timed("sft", lambda: _train_flow_matching(
        model, processor, restoration, recipe.sft_steps, recipe.sft_learning_rate, recipe.batch_size,
        recipe.guidance_dropout, output_dir / "work" / "sft", recipe.seed))  # fmt: skip
    paths["sft"] = save_stage(model, processor, output_dir / "sft", card_for("sft", recipe, minutes))

    rl_pairs = recovery_pairs(world, recipe.rl_images, recipe.seed + 4, levels=("low", "mid", "high"))
    timed("rl", lambda: _train_flow_grpo(model, processor, rl_pairs, recipe, output_dir / "work" / "rl"))
    paths["rl"] = save_stage(model, processor, output_dir / "rl", card_for("rl", recipe, minutes))

    timed("reasoning", lambda: _train_reasoning(model, processor, world, recipe, output_dir / "work"))
    paths["final"] = save_stage(model, processor, output_dir / "final", card_for("final", recipe, minutes))
    return paths

