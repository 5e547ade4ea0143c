"""Model cards (README.md) of the TinyWorld checkpoints."""

from __future__ import annotations

from dataclasses import asdict

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
    """The README.md of one TinyWorld checkpoint: what it is, how to use it, how it was trained.

    Example:

    ```python
    >>> print(tinyworld_card("final", TinyWorldRecipe(), {"vae": 2.5})[:40])
    ---
    library_name: robust-u1
    ```
    """
    title, training = _STAGE_TEXT[stage]
    settings = "\n".join(f"| `{name}` | {value} |" for name, value in asdict(recipe).items())
    times = "\n".join(f"| {name} | {value:.1f} |" for name, value in minutes.items())
    return f"""---
library_name: robust-u1
pipeline_tag: image-text-to-text
tags: [robust-u1, bagel, tinyworld, image-restoration, toy-model]
license: apache-2.0
---

# Robust-U1 TinyWorld — {stage}: {title}

A tiny BAGEL-architecture model (Mixture-of-Transformers Qwen2 LLM, hidden 128, 4 layers; SigLIP
NaViT, hidden 64; diffusers `AutoencoderKL`, 4 latent channels) trained from scratch on **TinyWorld**
(32×32 images of one to four coloured shapes, multiple-choice questions on colour, shape, count and
position; `robust_u1.tinyworld`). It exists so that the library's main job — recover a corrupted image,
then answer over the corrupted and the recovered image — runs offline in seconds on a CPU, and so that
the paper's claims can be checked stage by stage without GPUs. It knows nothing outside TinyWorld.

## Use

```python
from robust_u1.tinyworld import load_tinyworld

model, processor = load_tinyworld("{stage}")
restored = model.recover(corrupted_image, num_inference_steps={RECOVER_KWARGS["num_inference_steps"]})
result = model.answer(corrupted_image, "Which shape is red?", options=["circle", "square", "triangle"])
```

Images of any size are resized to at most 32 px on the long side. The tokenizer is word-level over
the TinyWorld vocabulary and the library's prompts; other words map to `[UNK]`.

## Training

This checkpoint: {training}

Re-create every stage with `python examples/tinyworld/train_from_scratch.py` (2 CPU cores). Wall time
of the run that produced this checkpoint (minutes, cumulative stages so far):

| step | minutes |
| --- | --- |
{times}

Settings (`robust_u1.tinyworld.training.TinyWorldRecipe`):

| setting | value |
| --- | --- |
{settings}

Weights are stored in float32.

## Evaluation

`python examples/tinyworld/reproduce.py` prints recovery PSNR / SSIM (corrupted input, base, +SFT, +RL)
and MCQ accuracy (base on I_c, final on I_c, final on I_c + I_r, clean oracle) at clean / low / mid /
high corruption on the held-out test split.
"""
