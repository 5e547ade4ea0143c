"""Pieces shared by the Robust-U1 trainers: what is trainable, LoRA on the generation expert, EMA,
per-sample random streams and the model card."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback

# The generation expert and the flow head: what stage I/II train when the understanding path is frozen
# (the official `freeze_und`).
GENERATION_PARAMETER_MARKERS = ("_moe_gen", "time_embedder.", "vae2llm.", "llm2vae.")
GENERATION_LORA_TARGETS = r".*\.(q_proj_moe_gen|k_proj_moe_gen|v_proj_moe_gen|o_proj_moe_gen|mlp_moe_gen\.(gate_proj|up_proj|down_proj))"


# Public methods the trainers call besides forward that use parameters; FSDP2 must gather them around
# these. `denoise` is not listed: it only calls `guided_velocities` (gathered per step) and the step rules.
FSDP_FORWARD_METHODS = ("encode_images", "encode_edit_latents", "build_edit_contexts", "guided_velocities", "postprocess_latents")


@dataclass
class ImageBoundsArguments:
    """Image size bounds of the training stages; None keeps the processor's (VAE 1024/512, ViT 980/224)."""

    vae_max_size: int | None = field(default=None, metadata={"help": "Long-side bound of VAE images."})
    vae_min_size: int | None = field(default=None, metadata={"help": "Short-side bound of VAE images."})
    vit_max_size: int | None = field(default=None, metadata={"help": "Long-side bound of ViT images."})
    vit_min_size: int | None = field(default=None, metadata={"help": "Short-side bound of ViT images."})

    def apply_image_bounds(self, processor) -> None:
        for name in ("vae_max_size", "vae_min_size", "vit_max_size", "vit_min_size"):
            if getattr(self, name) is not None:
                setattr(processor.image_processor, name, getattr(self, name))


def model_for_calls(trainer):
    """The model whose non-forward methods (encode, prefill, guided velocities…) a training step calls.

    Under FSDP2 that is the wrapped root, with those methods registered so that the sharded
    parameters are gathered around them; otherwise the unwrapped model (DDP hides methods).
    """
    try:
        from torch.distributed.fsdp import FSDPModule, register_fsdp_forward_method
    except ImportError:  # torch without FSDP2
        return trainer.accelerator.unwrap_model(trainer.model)
    if isinstance(trainer.model, FSDPModule):
        if not getattr(trainer.model, "_robust_u1_methods_registered", False):
            for name in FSDP_FORWARD_METHODS:
                register_fsdp_forward_method(trainer.model, name)
            trainer.model._robust_u1_methods_registered = True
        return trainer.model
    return trainer.accelerator.unwrap_model(trainer.model)


def is_generation_parameter(name: str) -> bool:
    return any(marker in name for marker in GENERATION_PARAMETER_MARKERS)


def generation_lora_config(r: int = 64, lora_alpha: int = 128, lora_dropout: float = 0.0, **kwargs):
    """A `peft.LoraConfig` on the generation expert's projections (flow_grpo's BAGEL template: r 64, α 128).

    Example:

    ```python
    >>> trainer = FlowMatchingTrainer(model, args, train_dataset=ds, peft_config=generation_lora_config(r=16))
    ```
    """
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=GENERATION_LORA_TARGETS, **kwargs)


def prepare_model_for_training(model, peft_config=None, train_understanding: bool = False):
    """Freezes what the stage does not train and wraps the model with LoRA when ``peft_config`` is given.

    Full fine-tuning trains the generation expert (and the understanding path too with
    ``train_understanding``); the VAE and the fixed position tables are always frozen.
    """
    for name, parameter in model.named_parameters():
        frozen_always = name.startswith("vae.") or name.endswith("pos_embed.pos_embed")
        parameter.requires_grad_(not frozen_always and (train_understanding or is_generation_parameter(name)))
    if peft_config is None:
        return model
    from peft import get_peft_model

    return get_peft_model(model, peft_config)


def sample_generator(device: torch.device, *stream: int) -> torch.Generator:
    """A generator for one training sample, seeded from (seed, step, micro-step, global position…).

    Draws made from it do not depend on how samples are spread over processes or on RNG states
    restored at resume, so a 2-process run and a resumed run see the same timesteps and noise.
    """
    seed = 0
    for value in stream:
        seed = (seed * 1_000_003 + int(value) + 7) % (2**63 - 1)
    return torch.Generator(device=device).manual_seed(seed)


class EMAWeights:
    """Exponential moving average of the trainable parameters (fp32 copies).

    Saved as ``ema.safetensors`` beside a checkpoint; `state_dict_with_ema` gives the full model
    state dict with the averaged values substituted (what BAGEL releases as its ``ema.safetensors``).
    """

    FILE_NAME = "ema.safetensors"

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {decay}.")
        self.decay = decay
        self.shadow = {n: p.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for name, parameter in model.named_parameters():
            if name in self.shadow:
                self.shadow[name].lerp_(parameter.detach().float(), 1.0 - self.decay)

    def save(self, folder: str | os.PathLike) -> None:
        save_file({k: v.contiguous().cpu() for k, v in self.shadow.items()}, str(Path(folder) / self.FILE_NAME))

    def load(self, folder: str | os.PathLike) -> None:
        stored = load_file(str(Path(folder) / self.FILE_NAME))
        if set(stored) != set(self.shadow):
            raise ValueError(f"The EMA state in {folder} does not match the trainable parameters of this run.")
        for name, value in stored.items():
            self.shadow[name].copy_(value)

    def state_dict_with_ema(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        for name, value in self.shadow.items():
            state[name] = value.to(state[name].dtype).cpu()
        return state


class EMACallback(TrainerCallback):
    """Updates `EMAWeights` after every optimizer step."""

    def __init__(self, ema: EMAWeights, model: torch.nn.Module):
        self.ema, self.model = ema, model

    def on_step_end(self, args, state, control, **kwargs):
        self.ema.update(self.model)


def training_hyperparameters(args, names: tuple[str, ...]) -> dict[str, Any]:
    """The named fields of a config, for the model card."""
    known = {f.name for f in fields(args)}
    return {name: getattr(args, name) for name in names if name in known}


def render_training_card(trainer, stage: str, stage_description: str, hyperparameter_names: tuple[str, ...],
                         model_name: str | None = None, dataset_name: str | list[str] | None = None) -> str:  # fmt: skip
    """The README.md of a trainer's output (any `transformers.Trainer`), from ``model_cards/training.md.jinja``."""
    from huggingface_hub import ModelCardData

    from ..model_cards import render_card

    model = trainer.accelerator.unwrap_model(trainer.model)
    base = getattr(getattr(model, "config", None), "_name_or_path", None) or None
    if base is not None and os.path.isdir(base):
        base = None  # a local path means nothing to readers of the Hub page
    is_adapter = hasattr(model, "peft_config")
    datasets = [dataset_name] if isinstance(dataset_name, str) else list(dataset_name or [])
    card_data = ModelCardData(
        base_model=base, datasets=datasets or None, library_name="robust-u1",
        tags=list(getattr(trainer, "_tag_names", ["robust-u1"])),
        pipeline_tag="image-text-to-text",
    )  # fmt: skip
    adapter_summary = ""
    if is_adapter:
        config = next(iter(model.peft_config.values()))
        adapter_summary = f"LoRA r={config.r}, alpha={config.lora_alpha}"
    return render_card(
        "training.md.jinja",
        card_data=card_data.to_yaml(),
        model_name=model_name or Path(trainer.args.output_dir).name,
        repo_id=trainer.args.hub_model_id or Path(trainer.args.output_dir).name,
        stage=stage,
        stage_description=stage_description,
        trainer_name=type(trainer).__name__,
        base_model=base,
        datasets=datasets,
        is_adapter=is_adapter,
        adapter_summary=adapter_summary,
        hyperparameters=training_hyperparameters(trainer.args, hyperparameter_names),
        results=None,
    )


def write_training_card(trainer, stage: str, stage_description: str, hyperparameter_names: tuple[str, ...],
                        model_name: str | None = None, dataset_name: str | list[str] | None = None) -> Path:  # fmt: skip
    """Writes the rendered card as README.md in the trainer's output folder (main process only)."""
    path = Path(trainer.args.output_dir) / "README.md"
    if trainer.is_world_process_zero():
        card = render_training_card(trainer, stage, stage_description, hyperparameter_names, model_name, dataset_name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(card)
    return path
