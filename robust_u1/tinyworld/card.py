"""Model cards (README.md) of the TinyWorld checkpoints."""

from __future__ import annotations

from dataclasses import asdict

from ..model_cards import render_card
from .training import RECOVER_KWARGS, TinyWorldRecipe

_STAGE_TEXT = {
    "base": (
        "pre-trained (no Robust-U1 stage yet)",
        "VAE fitted to TinyWorld images; understanding pre-trained on clean images with the standard `Trainer`; "
        "the generation expert pre-trained with `FlowMatchingTrainer` to reconstruct its input (clean and "
        "corrupted images), with condition dropout so that classifier-free guidance works.",
    ),
    "sft": (
        "Robust-U1 stage I (supervised visual self-recovery)",
        "`FlowMatchingTrainer` on (corrupted, clean) pairs: the generation expert learns to restore.",
    ),
    "rl": (
        "Robust-U1 stage II (Flow-GRPO)",
        "`FlowGRPOTrainer` with a LoRA adapter on the generation expert (merged into this checkpoint) and the "
        "SSIM reward only (a CLIP reward with random weights would reward nothing meaningful, and no CLIP "
        "weights are downloaded).",
    ),
    "final": (
        "Robust-U1 stage III (reasoning over the corrupted and the recovered image)",
        "Standard `Trainer` on [I_c, I_r, Q] rows (I_r recovered by the stage II model, "
        "`build_reasoning_dataset`), mixed with [I_c, Q] rows of the same images so that answering without "
        "recovery is a fair baseline of the same model.",
    ),
}


def tinyworld_card(stage: str, recipe: TinyWorldRecipe, minutes: dict[str, float]) -> str:
    """The README.md of one TinyWorld checkpoint (``model_cards/tinyworld.md.jinja``): what it is, how to
    use it, how it was trained.

    Example:
        >>> print(tinyworld_card("final", TinyWorldRecipe(), {"vae": 2.5})[:40])
        ---
        library_name: robust-u1
    """
    title, training = _STAGE_TEXT[stage]
    return render_card(
        "tinyworld.md.jinja", stage=stage, title=title, training=training, minutes=minutes, settings=asdict(recipe),
        num_inference_steps=RECOVER_KWARGS["num_inference_steps"],
    )  # fmt: skip
