"""Stage II: Flow-GRPO — online RL on the flow sampler with SSIM and CLIP rewards (TRL-style trainer).

Per step: every corrupted image is prefilled once and G rollouts share that context; the sampler
injects SDE noise inside a random window of steps (ODE elsewhere) and records the log-probabilities
of the window steps; rewards → group-relative advantages; the loss recomputes the window steps with
gradients: clipped policy ratio, plus β·KL to the same model with its LoRA adapter disabled.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from transformers import Trainer, TrainingArguments
from transformers.utils import logging

from ..configuration_recovery import RecoveryConfig, RecoveryOverrides, resolve_recovery_config
from ..flow_grpo_math import clipped_policy_loss, gaussian_kl, grpo_advantages
from ..generation_robust_u1 import EditContexts, EditInputs
from ..rewards import compute_rewards, reward_name
from ..sampling import SDEStep, sample_sde_window
from .flow_matching import _check_finite
from .utils import (
    ImageBoundsArguments,
    TrainingSafetyCallback,
    load_model_and_processor,
    model_for_calls,
    prepare_model_for_training,
    raise_if_non_finite_loss,
    sample_generator,
    write_training_card,
)

logger = logging.get_logger(__name__)


# Rollouts use the recovery defaults except for a shorter schedule (flow_grpo's BAGEL template: 16 points).
ROLLOUT_RECOVERY_DEFAULTS: dict[str, Any] = {"num_inference_steps": 16}


@dataclass
class FlowGRPOConfig(ImageBoundsArguments, RecoveryOverrides, TrainingArguments):
    r"""
    Configuration class for the [`FlowGRPOTrainer`] (stage II of Robust-U1: Flow-GRPO on the recovery sampler).

    Only the parameters specific to Flow-GRPO are listed; every other argument is a
    [`~transformers.TrainingArguments`] one. Names are those of TRL's [`~trl.GRPOConfig`] where the concept is
    the same; defaults follow flow_grpo's BAGEL template (yifan123/flow_grpo, ``config/base.py`` and
    ``config/grpo.py``) or the official Robust-U1 code, as each entry says.

    Parameters:
        > Parameters that control the rollouts (generation)

        num_generations (`int`, *optional*, defaults to `16`):
            Rollouts G per corrupted image: flow_grpo's BAGEL template. ``per_device_train_batch_size`` counts
            rollouts and must be a multiple of G (its default here is 16: one image's rollouts per device). All G
            rollouts of an image run on one device (their context is prefilled once there), so G bounds the
            per-device memory; flow_grpo and TRL instead spread a group over processes.
        recovery_config (`RecoveryConfig`, `dict`, `str` or `None`, *optional*, defaults to `None`):
            The sampling settings of the rollouts and of the recomputation in the loss (schedule and guidance),
            as `recover()` uses them; a path names a ``recovery_config.json`` or a model folder holding one.
            None: `RecoveryConfig`'s defaults (the Robust-U1 demo's: sampling shift 3.0, which is also
            flow_grpo's ``train.timestep_shift = 3.0  # for bagel``; guidance 4.0 / 2.0, ``text_channel``) with
            ``num_inference_steps=16`` (``ROLLOUT_RECOVERY_DEFAULTS``: 16 schedule points = 15 denoising steps,
            flow_grpo's BAGEL template; `recover` uses 50).
        num_inference_steps, sampling_shift, cfg_text_scale, cfg_img_scale, cfg_interval, cfg_renorm_type, cfg_renorm_min (*optional*, defaults to `None`):
            Per-field overrides of ``recovery_config`` (what the command line sets); after initialisation they
            hold the resolved values.
        noise_level (`float`, *optional*, defaults to `0.7`):
            SDE noise level a of the window steps: the official Robust-U1 code and flow_grpo's
            ``sample.noise_level``.
        sde_type (`str`, *optional*, defaults to `"sde"`):
            ``"sde"`` (Flow-GRPO's SDE step) or ``"cps"`` (flow_grpo's coefficient-preserving variant).
        sde_window_size (`int`, *optional*, defaults to `1`):
            SDE (trained) steps per rollout; the others are ODE steps. Official Robust-U1 code: 1 (flow_grpo's
            generic default is 2).
        sde_window_range (`list[int]`, *optional*, defaults to `(0, 5)`):
            Where the window may start and end, as step indices: the official Robust-U1 code's (0, 5).
        sample_posterior (`bool`, *optional*, defaults to `True`):
            Encode the corrupted image with a sample of the VAE posterior rather than its mode, as BAGEL does.
        log_completions (`bool`, *optional*, defaults to `False`):
            Log corrupted / recovered / clean images as a table (wandb) every logging step (TRL's name).

        > Parameters that control the rewards and advantages

        reward_weights (`list[float]` or `None`, *optional*, defaults to `None`):
            Weight of each reward function; None weighs all by 1. The official pair
            (`robust_u1.rewards.official_rewards`) uses SSIM 1.0 and CLIP 0.2.
        scale_rewards (`str`, *optional*, defaults to `"group"`):
            How advantages ``r - mean_group`` are scaled: ``"group"`` divides by the std of the image's G
            rewards, ``"batch"`` by the std of all rewards of the step (gathered over processes), ``"none"`` does
            not divide (TRL's options). flow_grpo's recipe divides by the global std (``sample.global_std =
            True``, ``PerPromptStatTracker`` in ``flow_grpo/stat_tracking.py``): pass ``"batch"`` to reproduce it.
            The default is TRL's ``"group"`` because a recovery step mixes corruptions whose reward spreads
            differ widely (the rollouts of a mild blur score almost alike, those of heavy noise do not): the
            global std would shrink the advantages of the images with the least spread towards zero, while the
            group std gives every image the same advantage scale. Both use the population std plus 1e-4, as
            flow_grpo (`robust_u1.flow_grpo_math.grpo_advantages`).
        adv_clip_max (`float`, *optional*, defaults to `5.0`):
            Advantages are clipped to ±adv_clip_max: flow_grpo's ``train.adv_clip_max``.

        > Parameters that control the training (loss)

        beta (`float`, *optional*, defaults to `0.0`):
            KL weight against the same model with its LoRA adapter disabled (no second model in memory); 0 in
            flow_grpo's BAGEL template (``train.beta``). Greater than 0 needs a ``peft_config``.
        epsilon (`float`, *optional*, defaults to `1e-4`):
            Lower clip range of the policy ratio: flow_grpo's ``train.clip_range``.
        epsilon_high (`float` or `None`, *optional*, defaults to `None`):
            Upper clip range; None uses ``epsilon`` (TRL's name).
        num_iterations (`int`, *optional*, defaults to `1`):
            Optimisation steps per generated batch (TRL's μ; flow_grpo's ``train.num_inner_epochs``).
        per_device_train_batch_size (`int`, *optional*, defaults to `16`):
            Overrides [`~transformers.TrainingArguments`]' 8, which is not a multiple of the default G = 16.
        learning_rate (`float`, *optional*, defaults to `1e-4`):
            Overrides [`~transformers.TrainingArguments`]' 5e-5: flow_grpo's BAGEL template.
        remove_unused_columns (`bool`, *optional*, defaults to `False`):
            Overrides [`~transformers.TrainingArguments`]: reward functions receive every dataset column (e.g.
            ``target_image``), as in TRL's GRPOConfig.
        logging_steps (`float`, *optional*, defaults to `1`):
            Overrides [`~transformers.TrainingArguments`]: a step generates G rollouts per image and is slow
            enough to log every time.

        > Parameters that control the image sizes

        vae_max_size, vae_min_size, vit_max_size, vit_min_size (`int` or `None`, *optional*, defaults to `None`):
            Image size bounds set on the processor; None keeps the processor's (VAE 1024/512, ViT 980/224).
    """

    num_generations: int = field(default=16, metadata={"help": "Rollouts per corrupted image (G)."})
    beta: float = field(default=0.0, metadata={"help": "KL weight to the adapter-disabled reference."})
    epsilon: float = field(default=1e-4, metadata={"help": "Lower clip range of the ratio."})
    epsilon_high: float | None = field(default=None, metadata={"help": "Upper clip range (None = epsilon)."})
    num_iterations: int = field(default=1, metadata={"help": "Optimisation steps per generated batch."})
    scale_rewards: str = field(default="group", metadata={"help": "'group', 'batch' or 'none'."})
    reward_weights: list[float] | None = field(default=None, metadata={"help": "Weight per reward function."})
    adv_clip_max: float = field(default=5.0, metadata={"help": "Advantage clip."})
    log_completions: bool = field(default=False, metadata={"help": "Log image tables."})
    recovery_config: dict | str | None = field(
        default=None,
        metadata={"help": "Rollout sampling settings: a recovery_config.json or a model folder (default: RecoveryConfig, 16 steps)."},
    )
    noise_level: float = field(default=0.7, metadata={"help": "SDE noise level."})
    sde_type: str = field(default="sde", metadata={"help": "'sde' or 'cps'."})
    sde_window_size: int = field(default=1, metadata={"help": "SDE steps per rollout."})
    sde_window_range: list[int] = field(default_factory=lambda: (0, 5), metadata={"help": "Range START END of the SDE window."})
    sample_posterior: bool = field(default=True, metadata={"help": "Posterior sample for the VAE encode."})

    # TrainingArguments' 8 is not a multiple of the default G = 16: one image's rollouts per device.
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Rollouts per device (a multiple of G)."})
    learning_rate: float = field(default=1e-4, metadata={"help": "flow_grpo BAGEL template learning rate."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Rewards see every column."})
    logging_steps: float = field(default=1, metadata={"help": "Log every N steps."})

    def __post_init__(self):
        super().__post_init__()
        if self.scale_rewards not in ("group", "batch", "none"):
            raise ValueError(f"scale_rewards must be 'group', 'batch' or 'none', got {self.scale_rewards!r}.")
        # The rollouts' sampling settings: the recovery config with the per-field overrides, validated in
        # one place (RecoveryConfig); the resolved values stay readable as fields (model card, logs).
        base = RecoveryConfig(**ROLLOUT_RECOVERY_DEFAULTS) if self.recovery_config is None else self.recovery_config
        overrides = {item.name: getattr(self, item.name) for item in dataclasses.fields(RecoveryOverrides)}
        self.recovery_config = resolve_recovery_config(base, **overrides)
        for name, value in dataclasses.asdict(self.recovery_config).items():
            setattr(self, name, value)
        for name, low in (("num_generations", 1), ("num_iterations", 1), ("sde_window_size", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}.")
        if self.num_generations < 2:
            logger.warning("num_generations=1: every group-relative advantage is 0, so the policy gets no gradient.")
        for name, low, inclusive in (("beta", 0.0, True), ("epsilon", 0.0, True), ("adv_clip_max", 0.0, False),
                                     ("noise_level", 0.0, True)):  # fmt: skip
            _check_finite(self, name, low, inclusive)
        if self.epsilon_high is not None:
            _check_finite(self, "epsilon_high", 0.0)
        if self.sde_type not in ("sde", "cps"):
            raise ValueError(f"sde_type must be 'sde' or 'cps', got {self.sde_type!r}.")
        if self.reward_weights is not None and not all(
            isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) for w in self.reward_weights
        ):
            raise ValueError(f"reward_weights must be finite numbers, got {self.reward_weights!r}.")
        num_steps = self.num_inference_steps - 1
        low, high = self.sde_window_range
        if self.sde_window_size and not (0 <= low <= high - self.sde_window_size and high <= num_steps):
            raise ValueError(
                f"sde_window_range {tuple(self.sde_window_range)} must hold a window of sde_window_size="
                f"{self.sde_window_size} steps within the {num_steps} denoising steps of num_inference_steps="
                f"{self.num_inference_steps}."
            )
        if self.per_device_train_batch_size % self.num_generations:
            raise ValueError(
                f"per_device_train_batch_size ({self.per_device_train_batch_size}) counts rollouts and must be a "
                f"multiple of num_generations ({self.num_generations})."
            )
        if self.activation_checkpointing_kwargs is None:
            self.activation_checkpointing_kwargs = {"use_reentrant": False}
        self.sde_window_range = tuple(self.sde_window_range)

    def to_dict(self) -> dict[str, Any]:
        values = super().to_dict()
        if isinstance(values.get("recovery_config"), RecoveryConfig):
            values["recovery_config"] = values["recovery_config"].to_dict()
        return values


@dataclass
class Rollouts:
    """A generated batch: the window steps of every rollout with their old log-probs, and advantages."""

    inputs: EditInputs
    latents: list[torch.Tensor]  # the VAE latents of the corrupted images (the rollouts' condition)
    group_of_rollout: list[int]
    window: list[int]  # step indices with SDE noise
    timesteps: list[float]
    samples: list[list[torch.Tensor]]  # [window step][rollout] latent entering the step
    next_samples: list[list[torch.Tensor]]  # [window step][rollout] latent the SDE step produced
    old_log_probs: torch.Tensor  # [window steps, rollouts]
    advantages: torch.Tensor  # [rollouts]
    final_latents: list[torch.Tensor]  # [rollout] the generated latent tokens


def _identity_collator(features):
    return features


class FlowGRPOTrainer(Trainer):
    """Flow-GRPO for Robust-U1's recovery, in TRL's style.

    Args:
        model: a `RobustU1ForConditionalGeneration` or a checkpoint name.
        reward_funcs: reward callables (TRL convention: keyword arguments ``images``, ``prompts`` and
            every dataset column, e.g. ``target_image``; a list of floats, ``None`` for unscorable
            samples). A reward that raises stops the run with a `RewardFunctionError` naming it.
        args: a `FlowGRPOConfig`.
        train_dataset: rows with ``image`` (corrupted), ``target_image`` (clean) and an optional ``prompt``.
        processing_class: the processor (default: the model's).
        peft_config: a `peft.LoraConfig` (e.g. `generation_lora_config()`); needed for ``beta > 0``,
            the reference being the same model with the adapter disabled.

    Example:
        >>> from robust_u1 import FlowGRPOConfig, FlowGRPOTrainer, generation_lora_config
        >>> from robust_u1.rewards import official_rewards
        >>> rewards, weights = official_rewards()
        >>> args = FlowGRPOConfig("robust-u1-rl", num_generations=16, per_device_train_batch_size=16, reward_weights=weights)
        >>> trainer = FlowGRPOTrainer("Jiaqi-hkust/Robust-U1-SFT", rewards, args, train_dataset=pairs,
        ...                           peft_config=generation_lora_config())
        >>> trainer.train()
    """

    _tag_names = ["robust-u1", "flow-grpo", "image-restoration"]
    _stage = "stage II (Flow-GRPO with SSIM and CLIP rewards)"
    _card_hyperparameters = (
        "learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "max_steps", "num_generations",
        "beta", "epsilon", "num_iterations", "scale_rewards", "reward_weights", "num_inference_steps", "sampling_shift",
        "noise_level", "sde_type", "sde_window_size", "sde_window_range", "seed",
    )  # fmt: skip

    def __init__(
        self,
        model,
        reward_funcs: Callable | list[Callable],
        args: FlowGRPOConfig | None = None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        peft_config=None,
        callbacks=None,
        **kwargs,
    ):
        args = args or FlowGRPOConfig("robust-u1-rl")
        model, processing_class = load_model_and_processor(model, args, processing_class, type(self).__name__)
        if args.beta > 0 and peft_config is None:
            raise ValueError(
                "beta > 0 needs a peft_config: the KL reference is the same model with its LoRA adapter disabled "
                "(no second model is kept in memory)."
            )
        self.reward_funcs = list(reward_funcs) if isinstance(reward_funcs, (list, tuple)) else [reward_funcs]
        if args.reward_weights is not None and len(args.reward_weights) != len(self.reward_funcs):
            raise ValueError(f"{len(self.reward_funcs)} reward functions but {len(args.reward_weights)} reward_weights.")
        model = prepare_model_for_training(model, peft_config)
        callbacks = [TrainingSafetyCallback(), *(callbacks or [])]  # non-finite stop, interrupted checkpoints
        super().__init__(
            model=model, args=args, data_collator=_identity_collator, train_dataset=train_dataset,
            eval_dataset=eval_dataset, processing_class=processing_class, callbacks=callbacks, **kwargs,
        )  # fmt: skip
        self._metrics: dict[str, list[float]] = defaultdict(list)
        self._buffer: Rollouts | None = None
        self._steps_on_buffer = 0
        self._logged_completions: list[dict[str, Any]] = []

    def _get_train_sampler(self, *args, **kwargs):
        # TRL's GRPO sampler: each image num_generations times in a row (one group per image), in a seeded
        # shuffled order. Imported here: TRL costs about a second to import and only training needs it.
        from trl.trainer.grpo_trainer import RepeatSampler

        return RepeatSampler(self.train_dataset, mini_repeat_count=self.args.num_generations, seed=self.args.seed)

    # -- generation: rollouts, rewards, advantages ---------------------------------------------

    def _prepare_inputs(self, examples: list[dict[str, Any]]) -> Rollouts:
        if self._buffer is None or self._steps_on_buffer >= self.args.num_iterations:
            self._buffer = self._generate(examples)
            self._steps_on_buffer = 0
        self._steps_on_buffer += 1
        return self._buffer

    @torch.no_grad()
    def _generate(self, examples: list[dict[str, Any]]) -> Rollouts:
        args, model = self.args, model_for_calls(self)
        G = args.num_generations
        groups = examples[::G]
        group_of_rollout = [i // G for i in range(len(examples))]
        inputs = self._edit_inputs(groups)
        step = self.state.global_step
        offset = self.accelerator.process_index * len(examples)
        streams = [sample_generator(torch.device("cpu"), args.seed, step, offset + i) for i in range(len(examples))]
        latents = model.encode_edit_latents(inputs, args.sample_posterior, [streams[g * G] for g in range(len(groups))])
        contexts = model.build_edit_contexts(inputs, latents=latents).select(group_of_rollout)

        config = resolve_recovery_config(args.recovery_config)
        window_stream = sample_generator(torch.device("cpu"), args.seed, step, -1)
        window = sample_sde_window(config.num_inference_steps - 1, args.sde_window_size, tuple(args.sde_window_range), window_stream)
        x = model.prepare_latents(contexts.grids, generator=streams)
        # The rollout: the SDE rule inside the window (noise from each rollout's stream), Euler elsewhere.
        result = model.denoise(contexts, x, config, step_rule=self._step_rule(), sde_window=window, generator=streams)
        x = result.latents
        images = model.postprocess_latents(x, contexts.grids, "pil")

        columns = {key: [example.get(key) for example in examples] for key in examples[0]}
        columns.pop("image", None)
        per_func, weighted = compute_rewards(
            self.reward_funcs, self.args.reward_weights, images=images,
            prompts=[example.get("prompt") or "" for example in examples], **columns,
        )  # fmt: skip
        if args.scale_rewards == "batch":
            gathered = self.accelerator.gather(weighted.to(model.device)).cpu()
            advantages = grpo_advantages(gathered, G, scale_rewards="batch", clip=args.adv_clip_max)
            advantages = advantages[offset : offset + len(examples)]
        else:
            advantages = grpo_advantages(weighted, G, scale_rewards=args.scale_rewards, clip=args.adv_clip_max)

        for index, func in enumerate(self.reward_funcs):
            values = per_func[:, index]
            self._metrics[f"rewards/{reward_name(func)}/mean"].append(values.nanmean().item())
            self._metrics[f"rewards/{reward_name(func)}/std"].append(values[~values.isnan()].std(unbiased=False).item())
        self._metrics["reward"].append(weighted.nanmean().item())
        self._metrics["reward_unscored"].append(float(weighted.isnan().sum()))
        if args.log_completions:
            self._logged_completions = [
                {"corrupted": example["image"], "recovered": image, "clean": example.get("target_image"), "reward": r}
                for example, image, r in zip(examples, images, weighted.tolist())
            ]
        return Rollouts(inputs, latents, group_of_rollout, result.window, result.timesteps, result.samples,
                        result.next_samples, result.log_probs, advantages, x)  # fmt: skip

    def _edit_inputs(self, examples) -> EditInputs:
        from ..prompting import RECOVERY_PROMPT

        prompts = [example.get("prompt") or RECOVERY_PROMPT for example in examples]
        return model_for_calls(self).prepare_edit_inputs([e["image"] for e in examples], prompts, self.processing_class)

    def _step_rule(self) -> SDEStep:
        return SDEStep(noise_level=self.args.noise_level, sde_type=self.args.sde_type)

    # -- the loss ----------------------------------------------------------------------------

    def _window_means(self, contexts: EditContexts, rollouts: Rollouts, j: int):
        """Recomputed SDE log-probs (and means, stds) of window step j for every rollout."""
        k, timesteps, rule = rollouts.window[j], rollouts.timesteps, self._step_rule()
        config = resolve_recovery_config(self.args.recovery_config)
        velocities = model_for_calls(self).guided_velocities(contexts, rollouts.samples[j], timesteps[k], config)
        return [
            rule.step(v[None], x[None], timesteps[k], timesteps[k + 1], t_max=timesteps[1], prev_sample=x_next[None])
            for v, x, x_next in zip(velocities, rollouts.samples[j], rollouts.next_samples[j])
        ]

    def _contexts(self, rollouts: Rollouts) -> EditContexts:
        model = model_for_calls(self)
        return model.build_edit_contexts(rollouts.inputs, latents=rollouts.latents).select(rollouts.group_of_rollout)

    def compute_loss(self, model, inputs: Rollouts, return_outputs=False, num_items_in_batch=None):
        rollouts = inputs
        if not rollouts.window:
            raise ValueError("The SDE window is empty: set sde_window_size ≥ 1 within sde_window_range.")
        contexts = self._contexts(rollouts)  # with gradients: the generation expert also encodes the context
        reference = None
        if self.args.beta > 0:
            with torch.no_grad(), self.accelerator.unwrap_model(self.model).disable_adapter():
                reference = self._contexts(rollouts)
        losses, stats = [], defaultdict(list)
        for j in range(len(rollouts.window)):
            outs = self._window_means(contexts, rollouts, j)
            log_prob = torch.cat([out.log_prob for out in outs])
            loss, step_stats = clipped_policy_loss(
                log_prob, rollouts.old_log_probs[j].to(log_prob.device), rollouts.advantages.to(log_prob.device),
                self.args.epsilon, self.args.epsilon_high,
            )  # fmt: skip
            if reference is not None:
                with torch.no_grad(), self.accelerator.unwrap_model(self.model).disable_adapter():
                    ref_outs = self._window_means(reference, rollouts, j)
                kl = torch.cat([
                    gaussian_kl(out.prev_sample_mean, ref.prev_sample_mean.detach(), out.std_dev_t)
                    for out, ref in zip(outs, ref_outs)
                ]).mean()  # fmt: skip
                loss = loss + self.args.beta * kl
                stats["kl"].append(kl.item())
            losses.append(loss)
            for name, value in step_stats.items():
                stats[name].append(float(value))
        for name, values in stats.items():
            self._metrics[name].append(sum(values) / len(values))
        loss = torch.stack(losses).mean()
        if model.training:
            raise_if_non_finite_loss(self, loss)
        return (loss, rollouts) if return_outputs else loss

    # -- logging and cards ---------------------------------------------------------------------

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        for name, values in self._metrics.items():
            if values:
                logs[name] = sum(values) / len(values)
        self._metrics.clear()
        if self._logged_completions and "wandb" in (self.args.report_to or []):
            import wandb

            if wandb.run is not None:
                table = wandb.Table(columns=["corrupted", "recovered", "clean", "reward"])
                for row in self._logged_completions:
                    table.add_data(wandb.Image(row["corrupted"]), wandb.Image(row["recovered"]),
                                   wandb.Image(row["clean"]) if row["clean"] is not None else None, row["reward"])  # fmt: skip
                wandb.log({"completions": table})
        self._logged_completions = []
        super().log(logs, start_time)

    def create_model_card(self, model_name: str | None = None, dataset_name: str | None = None, **kwargs) -> None:
        """Writes README.md in the output folder from ``model_cards/training.md.jinja``."""
        write_training_card(
            self, self._stage, "Stage II aligns the recovery module with pixel-level structure (SSIM) and "
            "semantics (CLIP similarity) by Flow-GRPO on the stochastic flow sampler.",
            self._card_hyperparameters, model_name, dataset_name,
        )  # fmt: skip
