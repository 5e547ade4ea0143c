"""Stage I: supervised visual self-recovery by flow matching (BAGEL's image-editing objective).

Given [VAE(I_c) clean, ViT(I_c), P_rec], the generation expert predicts the velocity ε − x₀ of the
noisy clean latent x_t = (1 − t)·x₀ + t·ε, t = shift·σ(n)/(1 + (shift − 1)·σ(n)), n ~ N(0, 1).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from transformers import Trainer, TrainingArguments

from ..collators import RecoveryCollator
from ..prompting import RECOVERY_PROMPT
from .utils import (
    EMACallback,
    EMAWeights,
    ImageBoundsArguments,
    TrainingSafetyCallback,
    load_model_and_processor,
    model_for_calls,
    prepare_model_for_training,
    raise_if_non_finite_loss,
    sample_generator,
    write_training_card,
)


@dataclass
class FlowMatchingConfig(ImageBoundsArguments, TrainingArguments):
    r"""
    Configuration of [`FlowMatchingTrainer`] (stage I). Defaults follow BAGEL's fine-tuning recipe.

    Parameters:
        timestep_shift (`float`, defaults to `2.0`): shift of the logit-normal training timesteps
            (MathCanvas stage-1 template; BAGEL pre-training used 1.0).
        mse_weight (`float`, defaults to `1.0`): weight of the flow-matching MSE.
        ce_weight (`float`, defaults to `1.0`): weight of the next-token CE on text items with loss
            (recovery samples have none).
        train_understanding (`bool`, defaults to `False`): also train the understanding path; the
            default trains only the generation expert (the official `freeze_und`).
        ema_decay (`float`, defaults to `0.0`): EMA of the trained weights (BAGEL: 0.9999;
            MathCanvas: 0.999); 0 disables it. Saved as `ema.safetensors` beside checkpoints.
        max_tokens_per_batch (`int` or `None`, defaults to `None`): packing budget: a packed batch
            longer than this is an error naming the fix. None: no limit.
        vae_max_size, vae_min_size, vit_max_size, vit_min_size (`int` or `None`): image size bounds;
            None keeps the processor's (VAE 1024/512, ViT 980/224).
        recovery_prompt (`str`): P_rec used where a dataset has no `prompt` column.

    The optimizer defaults are BAGEL's: lr 2e-5, AdamW β (0.9, 0.95), ε 1e-15, grad clip 1.0.
    """

    timestep_shift: float = field(default=2.0, metadata={"help": "Shift of the training timesteps."})
    mse_weight: float = field(default=1.0, metadata={"help": "Weight of the flow-matching MSE."})
    ce_weight: float = field(default=1.0, metadata={"help": "Weight of the text CE (items with loss)."})
    train_understanding: bool = field(default=False, metadata={"help": "Also train the understanding path."})
    ema_decay: float = field(default=0.0, metadata={"help": "EMA decay of the trained weights (0 = off)."})
    max_tokens_per_batch: int | None = field(default=None, metadata={"help": "Packing budget per batch."})
    recovery_prompt: str = field(default=RECOVERY_PROMPT, metadata={"help": "The recovery prompt P_rec."})

    learning_rate: float = field(default=2e-5, metadata={"help": "BAGEL fine-tuning learning rate."})
    adam_beta2: float = field(default=0.95, metadata={"help": "BAGEL's AdamW β2."})
    adam_epsilon: float = field(default=1e-15, metadata={"help": "BAGEL's AdamW ε."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "The collator needs the raw columns."})
    logging_steps: float = field(default=10, metadata={"help": "Log every N steps."})

    def __post_init__(self):
        super().__post_init__()
        _check_finite(self, "timestep_shift", low=0.0, low_inclusive=False)
        for name in ("mse_weight", "ce_weight"):
            _check_finite(self, name, low=0.0)
        if not (self.ema_decay == 0.0 or 0.0 < self.ema_decay < 1.0):
            raise ValueError(f"ema_decay must be 0 (off) or in (0, 1), got {self.ema_decay}.")
        if self.max_tokens_per_batch is not None and self.max_tokens_per_batch < 1:
            raise ValueError(f"max_tokens_per_batch must be None or a positive int, got {self.max_tokens_per_batch}.")
        if self.activation_checkpointing_kwargs is None:
            self.activation_checkpointing_kwargs = {"use_reentrant": False}  # the layers take non-tensor inputs


def _check_finite(config, name: str, low: float | None = None, low_inclusive: bool = True) -> None:
    """Config fields are checked when the config is built, not when a step first uses them."""
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}.")
    if low is not None and (value < low or (value == low and not low_inclusive)):
        raise ValueError(f"{name} must be {'>=' if low_inclusive else '>'} {low}, got {value!r}.")


class FlowMatchingTrainer(Trainer):
    """Stage I trainer: flow matching of the generation expert on (corrupted, clean) pairs.

    Full fine-tuning of the generation expert, or LoRA with ``peft_config`` (saving only the adapter);
    the VAE encodes under ``no_grad``; optional EMA; everything else (accelerate, FSDP, DeepSpeed,
    gradient accumulation and checkpointing, ``resume_from_checkpoint``, ``push_to_hub``) is the
    `transformers.Trainer` machinery.

    Example:
        >>> from robust_u1 import FlowMatchingConfig, FlowMatchingTrainer
        >>> args = FlowMatchingConfig("robust-u1-sft", per_device_train_batch_size=4, max_steps=1000)
        >>> trainer = FlowMatchingTrainer("ByteDance-Seed/BAGEL-7B-MoT", args, train_dataset=pairs)
        >>> trainer.train()
    """

    _tag_names = ["robust-u1", "flow-matching", "image-restoration"]
    _stage = "stage I (supervised visual self-recovery)"
    _card_hyperparameters = (
        "learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "max_steps", "num_train_epochs",
        "lr_scheduler_type", "warmup_steps", "timestep_shift", "mse_weight", "ce_weight", "ema_decay", "seed",
    )  # fmt: skip

    def __init__(
        self,
        model,
        args: FlowMatchingConfig | None = None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        data_collator=None,
        peft_config=None,
        callbacks=None,
        **kwargs,
    ):
        args = args or FlowMatchingConfig("robust-u1-sft")
        model, processing_class = load_model_and_processor(model, args, processing_class, type(self).__name__)
        config = model.config
        model = prepare_model_for_training(model, peft_config, args.train_understanding)
        data_collator = data_collator or RecoveryCollator(processing_class, config, args.recovery_prompt, args.max_tokens_per_batch)
        callbacks = [TrainingSafetyCallback(), *(callbacks or [])]  # non-finite stop, interrupted checkpoints
        super().__init__(
            model=model, args=args, data_collator=data_collator, train_dataset=train_dataset, eval_dataset=eval_dataset,
            processing_class=processing_class, callbacks=callbacks, **kwargs,
        )  # fmt: skip
        self._metrics: dict[str, dict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}
        self._micro_step = (-1, 0)
        self._eval_batches = 0
        if args.ema_decay > 0 and self.is_deepspeed_enabled:
            raise ValueError(
                "ema_decay > 0 is not supported with DeepSpeed (the EMA copy would be built from unsharded weights "
                "on every process): set ema_decay=0, or train with FSDP2 or DDP."
            )
        # Under FSDP the averages are built at their first use, after accelerate has sharded the model in train().
        self.ema = EMAWeights(self.model, args.ema_decay, defer=self.is_fsdp_enabled) if args.ema_decay > 0 else None
        if self.ema is not None:
            self.add_callback(EMACallback(self.ema, self.model))

    # -- the loss ----------------------------------------------------------------------------------

    def _sample_streams(self, model, inputs) -> list[torch.Generator]:
        """One generator per packed sample: (seed, step, micro-step, global sample position)."""
        num_samples = len(inputs["sample_lens"])
        if model.training:
            step = self.state.global_step
            micro = self._micro_step[1] + 1 if self._micro_step[0] == step else 0
            self._micro_step = (step, micro)
            stream = (self.args.seed, step, micro)
        else:
            self._eval_batches += 1
            stream = (self.args.seed, -1, self._eval_batches)
        offset = self.accelerator.process_index * num_samples
        return [sample_generator(torch.device("cpu"), *stream, offset + i) for i in range(num_samples)]

    def _complete_flow_inputs(self, model, inputs: dict[str, Any]) -> dict[str, Any]:
        """Adds the frozen-VAE latents and the flow-matching draws (timesteps, noise) the collator left out."""
        inputs = dict(inputs)
        images = inputs.pop("vae_images", None)
        is_noisy = inputs.pop("vae_image_is_noisy", None)
        owners = inputs.pop("vae_image_sample", None)
        counts = inputs.pop("vae_image_token_counts", None)
        if images is None:
            return inputs
        caller = model_for_calls(self)
        streams = self._sample_streams(model, inputs)
        latents, timesteps, noise = [], [], []
        for image, noisy, owner, count in zip(images, is_noisy, owners, counts):
            generator = streams[owner]
            # The VAE encodes each image at its own size (padding would change the latents at the edges).
            latents.append(caller.encode_images(image[None], sample_posterior=True, generator=generator)[0].cpu())
            raw = torch.randn((), generator=generator) if noisy else torch.tensor(float("-inf"))
            timesteps.append(raw.expand(count))
            noise.append(torch.randn(count, caller.config.patch_latent_dim, generator=generator))
        height = max(z.shape[1] for z in latents)
        width = max(z.shape[2] for z in latents)
        padded = torch.stack([F.pad(z, (0, width - z.shape[2], 0, height - z.shape[1])) for z in latents])
        device = next(caller.parameters()).device
        inputs.setdefault("padded_latent", padded.to(device))
        inputs.setdefault("packed_timesteps", torch.cat(timesteps).to(device))
        inputs.setdefault("noise", torch.cat(noise).to(device))
        return inputs

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = self._complete_flow_inputs(model, inputs)
        outputs = model(
            **inputs, timestep_shift=self.args.timestep_shift, ce_weight=self.args.ce_weight, mse_weight=self.args.mse_weight
        )
        mode = "train" if model.training else "eval"
        if model.training and outputs.loss is not None:
            raise_if_non_finite_loss(self, outputs.loss)
        for name in ("mse_loss", "ce_loss"):
            value = getattr(outputs, name)
            if value is not None:
                self._metrics[mode][name].append(self.accelerator.gather(value.detach()).mean().item())
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def evaluate(self, *args, **kwargs):
        self._eval_batches = 0  # every evaluation sees the same timesteps and noise
        return super().evaluate(*args, **kwargs)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "eval" if any(key.startswith("eval_") for key in logs) else "train"
        prefix = "eval_" if mode == "eval" else ""
        for name, values in self._metrics[mode].items():
            if values:
                logs[f"{prefix}{name}"] = sum(values) / len(values)
        self._metrics[mode].clear()
        super().log(logs, start_time)

    # -- saving: EMA beside the model, model card ----------------------------------------------

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        # Every process comes here (checkpoints, and FSDP users call save_model everywhere): under FSDP2 the EMA
        # shards are gathered into full tensors, a collective; one process writes them.
        if self.ema is not None:
            self.ema.save(output_dir or self.args.output_dir, write=self.args.should_save)
        super().save_model(output_dir, _internal_call)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        if self.ema is not None:
            self.ema.load(resume_from_checkpoint)

    def create_model_card(self, model_name: str | None = None, dataset_name: str | None = None, **kwargs) -> None:
        """Writes README.md in the output folder from ``model_cards/training.md.jinja``."""
        write_training_card(
            self, self._stage, "Stage I turns BAGEL's image generator into a recovery module: given the corrupted "
            "image and P_rec it learns by flow matching to generate the clean image.",
            self._card_hyperparameters, model_name, dataset_name,
        )  # fmt: skip
