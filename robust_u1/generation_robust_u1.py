"""Inference on top of the model's building blocks: image recovery (BAGEL's edit path) and text generation."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm
from transformers import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.generation.streamers import BaseStreamer

from .packing import Block, RobustU1KVCache, TextBlock, VaeImageBlock, VitImageBlock
from .configuration_recovery import GuidanceConfig, RecoveryConfig, resolve_recovery_config
from .option_extraction import extract_option
from .prompting import RECOVERY_PROMPT, THINK_SYSTEM_PROMPT, build_question_prompt, check_options, parse_reply
from .sampling import EulerStep, StepRule, flow_timesteps, guided_velocity
from .taylorseer import TaylorSeerCache, TaylorSeerConfig

OUTPUT_TYPES = ("pil", "np", "pt", "latent")


@dataclass
class EditContexts:
    """The three KV-cached contexts of BAGEL's image editing, for a batch of B images.

    ``gen`` = [VAE(image), ViT(image), prompt]; ``cfg_text`` = [VAE(image), ViT(image)];
    ``cfg_img`` = [prompt]. ``grids`` are the latent token grids of the images to generate.
    """

    gen: RobustU1KVCache
    cfg_text: RobustU1KVCache
    cfg_img: RobustU1KVCache
    grids: list[tuple[int, int]]

    def select(self, indices: Sequence[int]) -> EditContexts:
        """Contexts of the given images (repeats allowed: G rollouts share one prefill)."""
        return EditContexts(
            self.gen.select(indices), self.cfg_text.select(indices), self.cfg_img.select(indices),
            [self.grids[i] for i in indices],
        )  # fmt: skip


@dataclass
class EditInputs:
    """Already-transformed inputs of `recover`: per image the VAE pixels, the ViT pixels (both in
    [-1, 1], [3, H, W]) and the prompt token ids (without ``<|im_start|>``/``<|im_end|>``)."""

    vae_pixel_values: list[torch.Tensor]
    vit_pixel_values: list[torch.Tensor]
    prompt_ids: list[torch.Tensor]


@dataclass
class RobustAnswer:
    """What `answer` returns: the final answer text, the reasoning (think text), the option letter
    for multiple-choice questions, the recovered image (when recovering) and the raw reply."""

    answer: str
    reasoning: str | None
    option: str | None
    recovered_image: Image.Image | None
    raw_text: str


# What `callback_on_step_end_tensor_inputs` may ask for (see `RobustU1GenerationMixin.denoise`).
CALLBACK_TENSOR_INPUTS = ("latents", "velocities", "denoised", "grids")


@dataclass
class DenoiseOutput:
    """What `denoise` returns.

    Attributes:
        latents: the final latent tokens, one [n_tok, p·p·C] tensor per image.
        timesteps: the schedule, ``num_inference_steps`` flow times from 1 to 0.
        window: the indices of the steps that ran the step rule.
        samples, next_samples: per window step, the latents entering and leaving it (one per image).
        log_probs: [window steps, images] log-probabilities of a stochastic rule (empty otherwise).
        steps_run: denoising steps run (fewer than ``len(timesteps) - 1`` when interrupted).
        interrupted: whether the callback stopped the loop.
    """

    latents: list[torch.Tensor]
    timesteps: list[float]
    window: list[int]
    samples: list[list[torch.Tensor]]
    next_samples: list[list[torch.Tensor]]
    log_probs: torch.Tensor
    steps_run: int
    interrupted: bool


def _generator_for(generator, index: int):
    return generator[index] if isinstance(generator, (list, tuple)) else generator


def _step_noise(sample: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard-normal noise for one image's stochastic step, drawn on the generator's device, batch of one."""
    device = generator.device if generator is not None else sample.device
    return torch.randn(sample.shape, generator=generator, device=device).to(sample.device)[None]


def _check_generator(generator, count: int) -> None:
    """One clear line for a generator of the wrong type or a list of the wrong length."""
    items = generator if isinstance(generator, (list, tuple)) else [generator]
    for item in items:
        if item is not None and not isinstance(item, torch.Generator):
            raise TypeError(
                f"generator must be a torch.Generator or a list of them (one per image), got {type(item).__name__} "
                f"{item!r}: pass e.g. generator=torch.Generator().manual_seed({item!r})."
                if isinstance(item, int) and not isinstance(item, bool)
                else f"generator must be a torch.Generator or a list of them (one per image), got {type(item).__name__}."
            )
    if isinstance(generator, (list, tuple)) and len(generator) != count:
        raise ValueError(f"Got {len(generator)} generators for {count} images: pass one generator, or one per image.")


def _latents_list(latents, count: int) -> list[torch.Tensor]:
    latents = [latents] if isinstance(latents, torch.Tensor) and latents.dim() == 2 else list(latents)
    if len(latents) != count:
        raise ValueError(f"Got {len(latents)} initial latents for {count} images: pass one [n_tok, C] tensor per image.")
    return latents


def _check_callback(callback, tensor_inputs: Sequence[str]) -> list[str]:
    if callback is None:
        return []
    if not callable(callback):
        raise TypeError(f"callback_on_step_end must be callable, got {type(callback).__name__}.")
    # diffusers' PipelineCallback objects say which inputs they need.
    tensor_inputs = list(getattr(callback, "tensor_inputs", None) or tensor_inputs)
    unknown = [name for name in tensor_inputs if name not in CALLBACK_TENSOR_INPUTS]
    if unknown:
        raise ValueError(
            f"callback_on_step_end_tensor_inputs {unknown} are not available; choose among {list(CALLBACK_TENSOR_INPUTS)}."
        )
    return tensor_inputs


def _replaced_latents(returned, current: list[torch.Tensor], step: int) -> list[torch.Tensor]:
    """The latents a callback returned, checked against the current ones."""
    returned = [returned] if isinstance(returned, torch.Tensor) and returned.dim() == 2 else list(returned)
    if len(returned) != len(current) or any(tuple(r.shape) != tuple(c.shape) for r, c in zip(returned, current)):
        raise ValueError(
            f"callback_on_step_end returned latents of shapes {[tuple(r.shape) for r in returned]} at step {step}; "
            f"expected {[tuple(c.shape) for c in current]}."
        )
    return [r.to(c.device, c.dtype) for r, c in zip(returned, current)]


class RobustU1GenerationMixin:
    """`recover` (image restoration through the generation expert) and `generate` (text)."""

    processor: Any = None

    # -- contexts --------------------------------------------------------------------------------

    def encode_edit_latents(
        self, inputs: EditInputs, sample_posterior: bool = True, generator: torch.Generator | list[torch.Generator] | None = None
    ) -> list[torch.Tensor]:
        """Scaled VAE latents [C, h, w] of the images to edit, one encode per image (sizes may differ)."""
        return [
            self.encode_images(pixels[None].to(self.device), sample_posterior, _generator_for(generator, i))[0]
            for i, pixels in enumerate(inputs.vae_pixel_values)
        ]

    def build_edit_contexts(
        self,
        inputs: EditInputs,
        sample_posterior: bool = True,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: Sequence[torch.Tensor] | None = None,
    ) -> EditContexts:
        """Prefills the gen / cfg_text / cfg_img contexts of every image once, in one batched call per stage.

        ``latents`` (from `encode_edit_latents`) reuse an earlier VAE encode, e.g. the posterior sample
        a rollout was conditioned on. Gradients flow when called outside ``torch.no_grad``.
        """
        batch = len(inputs.vae_pixel_values)
        if latents is None:
            latents = self.encode_edit_latents(inputs, sample_posterior, generator)
        blocks, grids = [], []
        for latent in latents:
            tokens, grid = self.latent_to_tokens(latent)
            blocks.append(VaeImageBlock(tokens, grid))
            grids.append(grid)
        gen = self.new_cache(batch)
        self.prefill(gen, blocks)
        self.prefill(gen, [VitImageBlock(p.to(self.device)) for p in inputs.vit_pixel_values])
        cfg_text = gen.select(range(batch))
        prompts = [TextBlock(ids) for ids in inputs.prompt_ids]
        self.prefill(gen, prompts)
        cfg_img = self.prefill(self.new_cache(batch), prompts)
        return EditContexts(gen, cfg_text, cfg_img, grids)

    # -- one guided step -------------------------------------------------------------------------

    def guided_velocities(
        self,
        contexts: EditContexts,
        latents: Sequence[torch.Tensor],
        t: float,
        guidance: GuidanceConfig,
        taylorseer: TaylorSeerCache | None = None,
    ) -> list[torch.Tensor]:
        """Guided velocities of B noisy latents at time ``t``; the needed contexts run as one batched forward.

        The one place the denoising loop asks for velocities (``guidance`` may be a `RecoveryConfig`).
        ``taylorseer`` (one per denoising run) lets each branch skip the decoder layers at its Taylor steps.
        """
        batch = len(latents)
        if not guidance.is_active(t):
            step = taylorseer.select(["gen"]) if taylorseer is not None else None
            return self.predict_velocity(contexts.gen, latents, contexts.grids, t, taylorseer=step)
        names = ["gen", "cfg_text"] + (["cfg_img"] if guidance.uses_image_context else [])
        caches = [getattr(contexts, name) for name in names]
        step = taylorseer.select(names) if taylorseer is not None else None
        velocities = self.predict_velocity(
            RobustU1KVCache.concat(caches), list(latents) * len(caches), contexts.grids * len(caches), t, taylorseer=step
        )
        v_gen, v_text = velocities[:batch], velocities[batch : 2 * batch]
        v_img = velocities[2 * batch :] if guidance.uses_image_context else [None] * batch
        return [guided_velocity(g, tx, im, guidance) for g, tx, im in zip(v_gen, v_text, v_img)]

    # -- the denoising loop ----------------------------------------------------------------------

    def denoise(
        self,
        contexts: EditContexts,
        latents: Sequence[torch.Tensor],
        config: RecoveryConfig,
        step_rule: StepRule | None = None,
        sde_window: Iterable[int] | None = None,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        callback_on_step_end: Callable[..., dict[str, Any] | None] | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        progress: bool = False,
        taylorseer: TaylorSeerConfig | dict[str, Any] | None = None,
    ) -> DenoiseOutput:
        """The denoising loop of image recovery, used by `recover()` and by Flow-GRPO's rollouts.

        For every step ``k`` of the schedule of ``config`` (``t_k → t_{k+1}``): the guided velocities
        (`guided_velocities`), then one step of ``step_rule`` for the steps in ``sde_window`` and the
        Euler ODE step for the others, then the callback.

        Args:
            contexts: the prefilled contexts (`build_edit_contexts`), one per latent.
            latents: initial noise, one [n_tok, p·p·C] tensor per image (`prepare_latents`).
            config: schedule and guidance (`RecoveryConfig`).
            step_rule: the rule of the ``sde_window`` steps (e.g. `SDEStep`); default `EulerStep`.
            sde_window: indices of the steps that run ``step_rule``; None = every step. The samples
                entering and leaving these steps and the log-probabilities of stochastic rules are
                recorded in the output (what Flow-GRPO trains on).
            generator: a generator, or one per image, for the noise of stochastic steps (drawn on the
                generator's device, one draw per image and step).
            callback_on_step_end: ``fn(model, step_index, t, callback_kwargs) -> dict | None``, called
                after each step with the step index, the flow time ``t`` the step started from and the
                requested ``callback_kwargs``. A returned ``"latents"`` list replaces the latents (same
                shapes); a returned ``"interrupt": True`` stops the loop after this step (the current
                latents are the result). diffusers' convention, except that stopping is a returned key
                instead of a pipeline attribute, so that concurrent calls do not share a flag.
            callback_on_step_end_tensor_inputs: what ``callback_kwargs`` holds, among
                ``CALLBACK_TENSOR_INPUTS``: ``latents`` (after the step), ``velocities`` (the guided
                velocities of the step), ``denoised`` (the predicted clean latents ``x − t·v``: what a
                preview should show, see `preview_latents`) and ``grids`` (the token grids).
            progress: show a tqdm bar.
            taylorseer: TaylorSeer settings (`TaylorSeerConfig` or a dict of its fields) to skip the
                decoder layers at most steps (`robust_u1.taylorseer`; fresh state for this call), or
                None for the exact velocities. Not with a stochastic ``step_rule`` in the window: a
                Taylor step's velocity ignores the current latent, so SDE transitions (and the
                log-probabilities Flow-GRPO recomputes with the exact forward) would not match.

        Returns:
            A `DenoiseOutput`: final latents, the schedule, the recorded window steps and log-probs,
            the number of steps run and whether the callback stopped the loop.

        Example:
            >>> contexts = model.build_edit_contexts(model.prepare_edit_inputs([image]))
            >>> noise = model.prepare_latents(contexts.grids, generator=torch.Generator().manual_seed(0))
            >>> out = model.denoise(contexts, noise, RecoveryConfig(num_inference_steps=30))
            >>> image = model.postprocess_latents(out.latents, contexts.grids, "pil")[0]
        """
        config.validate()
        step_rule = EulerStep() if step_rule is None else step_rule
        tensor_inputs = _check_callback(callback_on_step_end, callback_on_step_end_tensor_inputs)
        timesteps = flow_timesteps(config.num_inference_steps, config.sampling_shift).tolist()
        num_steps = len(timesteps) - 1
        window = set(range(num_steps) if sde_window is None else sde_window)
        if taylorseer is not None and step_rule.stochastic and window & set(range(num_steps)):
            raise ValueError(
                "TaylorSeer cannot drive stochastic (SDE) steps: a Taylor step's velocity ignores the current latent, "
                "so the sampled transitions would not follow the policy whose log-probabilities are trained. "
                "Use it with the Euler (ODE) rule only, e.g. in recover()."
            )
        feature_cache = TaylorSeerCache(taylorseer) if taylorseer is not None else None  # per call: no state leak
        euler = EulerStep()
        x = list(latents)
        samples, next_samples, log_probs = [], [], []
        steps_run, interrupted = 0, False
        for k in tqdm(range(num_steps), disable=not progress, desc="recover"):
            t, t_next = timesteps[k], timesteps[k + 1]
            # 1. The guided velocity of every image (its contexts run as one batched forward).
            if feature_cache is None:
                velocities = self.guided_velocities(contexts, x, t, config)
            else:
                velocities = self.guided_velocities(contexts, x, t, config, taylorseer=feature_cache)
            # 2. One step of the rule, image by image (their token counts may differ).
            rule = step_rule if k in window else euler
            outputs = [
                rule.step(vi[None], xi[None], t, t_next, t_max=timesteps[1],
                          noise=_step_noise(xi, _generator_for(generator, i)) if rule.stochastic else None)
                for i, (xi, vi) in enumerate(zip(x, velocities))
            ]  # fmt: skip
            next_x = [out.prev_sample[0] for out in outputs]
            # 3. What Flow-GRPO trains on: the window steps' samples and log-probabilities.
            if k in window:
                samples.append(x)
                next_samples.append(next_x)
                if outputs and outputs[0].log_prob is not None:
                    log_probs.append(torch.cat([out.log_prob for out in outputs]))
            # 4. The callback sees the step's result and may replace it or stop the loop.
            if callback_on_step_end is not None:
                available = {"latents": next_x, "velocities": velocities, "grids": contexts.grids}
                if "denoised" in tensor_inputs:
                    available["denoised"] = [xi - t * vi.to(xi.dtype) for xi, vi in zip(x, velocities)]
                result = callback_on_step_end(self, k, t, {name: available[name] for name in tensor_inputs}) or {}
                if "latents" in result:
                    next_x = _replaced_latents(result["latents"], next_x, k)
                interrupted = bool(result.get("interrupt", False))
            x, steps_run = next_x, k + 1
            if interrupted:
                break
        stacked = torch.stack(log_probs) if log_probs else torch.zeros(0, len(x))
        return DenoiseOutput(x, timesteps, sorted(window), samples, next_samples, stacked, steps_run, interrupted)

    def prepare_latents(
        self,
        grids: Sequence[tuple[int, int]],
        latents: torch.Tensor | Sequence[torch.Tensor] | None = None,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
    ) -> list[torch.Tensor]:
        """The initial noise of the denoising loop: one fp32 [h·w, p·p·C] tensor per token grid.

        Given ``latents`` are checked (one per image, shape, finite) and moved to the model's device;
        otherwise they are drawn from ``generator`` (one, or one per image) on its device.

        Example:
            >>> noise = model.prepare_latents([(4, 4)], generator=torch.Generator().manual_seed(0))
        """
        dim = self.config.patch_latent_dim
        _check_generator(generator, len(grids))
        if latents is not None:
            latents = _latents_list(latents, len(grids))
            for index, (x, (h, w)) in enumerate(zip(latents, grids)):
                if tuple(x.shape) != (h * w, dim):
                    raise ValueError(f"latents of shape {tuple(x.shape)} do not fit a {h}×{w} token grid: expected {(h * w, dim)}.")
                if not torch.isfinite(x).all():
                    raise ValueError(f"latents[{index}] holds NaN or infinite values: pass finite initial noise.")
            return [x.to(self.device, torch.float32) for x in latents]
        noises = []
        for i, (h, w) in enumerate(grids):
            g = _generator_for(generator, i)
            device = g.device if g is not None else self.device
            noises.append(torch.randn(h * w, dim, generator=g, device=device, dtype=torch.float32).to(self.device))
        return noises

    def postprocess_latents(self, latents: Sequence[torch.Tensor], grids: Sequence[tuple[int, int]], output_type: str = "pil"):
        """Latent tokens → images: ``pil``, ``np`` (float HWC in [0, 1]), ``pt`` (float CHW in [0, 1]) or
        ``latent`` (scaled latents [C, h, w]); one VAE decode per image size.

        Example:
            >>> images = model.postprocess_latents(out.latents, contexts.grids, "pil")
        """
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}.")
        unpatched = [self.tokens_to_latent(x, grid) for x, grid in zip(latents, grids)]
        if output_type == "latent":
            return unpatched
        images: list[torch.Tensor] = [None] * len(unpatched)
        same_size: dict[tuple[int, ...], list[int]] = {}
        for index, z in enumerate(unpatched):
            same_size.setdefault(tuple(z.shape), []).append(index)
        for indices in same_size.values():  # one VAE decode per image size (G rollouts share one)
            decoded = self.decode_latents(torch.stack([unpatched[i] for i in indices]).to(self.dtype)).float()
            for index, image in zip(indices, decoded):
                images[index] = image
        unit = [(img * 0.5 + 0.5).clamp(0, 1) for img in images]
        if output_type == "pt":
            return unit
        if output_type == "np":
            return [u.permute(1, 2, 0).cpu().numpy() for u in unit]
        return [Image.fromarray(to_uint8_image(img)) for img in images]

    @torch.no_grad()
    def preview_latents(
        self, latents: Sequence[torch.Tensor], grids: Sequence[tuple[int, int]], output_type: str = "pil"
    ) -> list:
        """Intermediate images for a UI: a real VAE decode of latent tokens (not an approximation).

        Pass the ``denoised`` callback input (the predicted clean latents ``x − t·v``): the noisy
        ``latents`` of early steps decode to noise. The cost is one VAE decode per image size, the same
        as the final decode; a UI that finds it too slow previews every few steps.

        Example:
            >>> def show(model, step, t, kwargs):
            ...     previews.append(model.preview_latents(kwargs["denoised"], kwargs["grids"])[0])
            >>> model.recover(image, callback_on_step_end=show, callback_on_step_end_tensor_inputs=["denoised", "grids"])
        """
        return self.postprocess_latents(latents, grids, output_type)

    # -- recovery --------------------------------------------------------------------------------

    def prepare_edit_inputs(self, images, prompt: str | Sequence[int] | Sequence[str] = RECOVERY_PROMPT, processor=None) -> EditInputs:
        """Turns images (PIL / numpy / tensors / paths, or an `EditInputs`) into transformed edit inputs.

        ``prompt`` is one prompt for every image (text or token ids) or a list with one per image.
        """
        if isinstance(images, EditInputs):
            self.check_edit_lengths(images)
            return images
        processor = processor or self.processor
        if processor is None:
            from .processing_robust_u1 import RobustU1ImageProcessor

            if isinstance(prompt, str) or (isinstance(prompt, (list, tuple)) and prompt and isinstance(prompt[0], str)):
                raise ValueError(
                    "A text prompt needs a tokenizer: pass `processor=RobustU1Processor.from_pretrained(...)`, "
                    "set `model.processor`, or give the prompt as token ids."
                )
            image_processor = RobustU1ImageProcessor()
        else:
            image_processor = getattr(processor, "image_processor", processor)
        images = images if isinstance(images, (list, tuple)) else [images]
        vae_pixels, vit_pixels = image_processor.edit_pixel_values(images)
        per_image = isinstance(prompt, (list, tuple)) and len(prompt) > 0 and not isinstance(prompt[0], int)
        prompts = list(prompt) if per_image else [prompt] * len(images)
        if len(prompts) != len(images):
            raise ValueError(f"Got {len(prompts)} prompts for {len(images)} images.")
        ids = [
            torch.tensor(processor.tokenizer.encode(p, add_special_tokens=False)) if isinstance(p, str) else torch.as_tensor(p, dtype=torch.long)
            for p in prompts
        ]
        inputs = EditInputs(vae_pixels, vit_pixels, ids)
        self.check_edit_lengths(inputs)
        return inputs

    def check_edit_lengths(self, inputs: EditInputs) -> None:
        """Checks before any computation that each recovery fits in ``max_position_embeddings``: the
        context [VAE(I_c), ViT(I_c), prompt] and the noisy latent query that attends to it.

        Example:
            >>> model.check_edit_lengths(model.prepare_edit_inputs([image], processor=processor))
        """
        lengths = [
            self.sequence_length(
                [VaeImageBlock(pixel_values=vae), VitImageBlock(vit), TextBlock(ids), VaeImageBlock(pixel_values=vae, noisy=True)]
            )
            for vae, vit, ids in zip(inputs.vae_pixel_values, inputs.vit_pixel_values, inputs.prompt_ids)
        ]
        self.check_sequence_lengths(lengths)

    @property
    def recovery_config(self) -> RecoveryConfig:
        """The default settings of `recover()`, saved as ``recovery_config.json`` by `save_pretrained`."""
        config = self.__dict__.get("_recovery_config")
        if config is None:
            config = self.__dict__["_recovery_config"] = RecoveryConfig()
        return config

    @recovery_config.setter
    def recovery_config(self, value: RecoveryConfig | dict) -> None:
        self.__dict__["_recovery_config"] = resolve_recovery_config(value)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """transformers' `save_pretrained`, plus ``recovery_config.json`` (the model's `recovery_config`)."""
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            self.recovery_config.save_pretrained(save_directory)
        return result

    @torch.no_grad()
    def recover(
        self,
        images,
        prompt: str | Sequence[int] = RECOVERY_PROMPT,
        num_inference_steps: int | None = None,
        timestep_shift: float | None = None,
        cfg_text_scale: float | None = None,
        cfg_img_scale: float | None = None,
        cfg_interval: tuple[float, float] | None = None,
        cfg_renorm_type: str | None = None,
        cfg_renorm_min: float | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | Sequence[torch.Tensor] | None = None,
        output_type: str = "pil",
        progress: bool = True,
        sample_posterior: bool = True,
        processor=None,
        recovery_config: RecoveryConfig | dict | None = None,
        callback_on_step_end: Callable[..., dict[str, Any] | None] | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        enable_taylorseer: bool = False,
        taylorseer_config: TaylorSeerConfig | dict[str, Any] | None = None,
        **overrides,
    ):
        """Recovers (restores) corrupted images with the generation expert, as the official edit loop.

        The sampling settings are ``recovery_config`` (default: ``model.recovery_config``, the Robust-U1
        demo's unless the checkpoint saved others) with the keyword arguments given here applied on top;
        all are checked before any model computation.

        Args:
            images: one image or a list (PIL, numpy HWC, tensors CHW in [0, 1], file paths; sizes may
                differ), or an `EditInputs` of already-transformed tensors.
            prompt: the recovery instruction, text or token ids.
            num_inference_steps: points of the flow schedule including t = 1 and t = 0, as the
                official ``num_timesteps`` (50 → 49 velocity evaluations).
            timestep_shift: the sampling shift (`RecoveryConfig.sampling_shift`, which is also accepted).
            cfg_text_scale, cfg_img_scale, cfg_interval, cfg_renorm_type, cfg_renorm_min: guidance
                (see `GuidanceConfig`).
            generator: a `torch.Generator`, or one per image (posterior sample, then initial noise).
            latents: initial noise, [n_tok, p·p·C] per image (patchified); drawn when None.
            output_type: ``pil``, ``np`` (float HWC in [0, 1]), ``pt`` (float CHW in [0, 1]) or
                ``latent`` (scaled latents [C, h, w]).
            progress: show a tqdm bar over the denoising steps.
            sample_posterior: encode the input with a posterior sample (official) or its mode.
            recovery_config: a `RecoveryConfig` (or dict) to use instead of ``model.recovery_config``.
            callback_on_step_end, callback_on_step_end_tensor_inputs: called after each denoising step,
                as in diffusers (see `denoise`): may replace ``latents`` and stop early by returning
                ``{"interrupt": True}``, in which case the current latents are decoded and returned.
            enable_taylorseer: TaylorSeer feature caching as the official inferencer's option: most
                steps skip the decoder layers and extrapolate their output (≈ 2–3× fewer layer
                passes, approximate); see `robust_u1.taylorseer`.
            taylorseer_config: a `TaylorSeerConfig` or a dict of its fields (``fresh_threshold``,
                ``first_enhance``, ``max_order``); None = the official defaults (3, 5, 6).

        Returns:
            One recovered image for one input image, else a list.

        Example:
            >>> from PIL import Image
            >>> restored = model.recover(Image.open("corrupted.png"), num_inference_steps=50)
            >>> restored.save("restored.png")
        """
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}.")
        config = resolve_recovery_config(
            self.recovery_config if recovery_config is None else recovery_config,
            num_inference_steps=num_inference_steps, timestep_shift=timestep_shift, cfg_text_scale=cfg_text_scale,
            cfg_img_scale=cfg_img_scale, cfg_interval=cfg_interval, cfg_renorm_type=cfg_renorm_type,
            cfg_renorm_min=cfg_renorm_min, **overrides,
        )  # fmt: skip
        _check_callback(callback_on_step_end, callback_on_step_end_tensor_inputs)
        if taylorseer_config is not None and not enable_taylorseer:
            raise ValueError("taylorseer_config is given but enable_taylorseer=False: pass enable_taylorseer=True to use it.")
        taylorseer = TaylorSeerConfig.from_value(taylorseer_config) if enable_taylorseer else None
        single = not isinstance(images, (list, tuple, EditInputs))
        inputs = self.prepare_edit_inputs(images, prompt, processor)
        count = len(inputs.vae_pixel_values)
        _check_generator(generator, count)
        if latents is not None:
            _latents_list(latents, count)
        encoded = self.encode_edit_latents(inputs, sample_posterior, generator)
        grids = [self.latent_to_tokens(latent)[1] for latent in encoded]
        x = self.prepare_latents(grids, latents, generator)
        contexts = self.build_edit_contexts(inputs, latents=encoded)
        result = self.denoise(
            contexts, x, config, callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs, progress=progress,
            taylorseer=taylorseer,
        )  # fmt: skip
        for index, final in enumerate(result.latents):
            if not torch.isfinite(final).all():
                raise ValueError(
                    f"Recovery of image {index} produced NaN or infinite latents after {result.steps_run} steps "
                    "(check the model weights' dtype and the sampling settings); no image is returned."
                )
        outputs = self.postprocess_latents(result.latents, contexts.grids, output_type)
        return outputs[0] if single else outputs

    # -- text ----------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(
        self,
        inputs: Sequence[Sequence[Any]] | Sequence[Any] | Mapping[str, Any] | None = None,
        processor=None,
        max_new_tokens: int = 512,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        think: bool = False,
        generator: torch.Generator | None = None,
        streamer: BaseStreamer | None = None,
        **kwargs,
    ) -> torch.Tensor:
        """Generates text after interleaved images and texts, BAGEL-style, with a KV cache.

        Args:
            inputs: one interleaved list, or a batch of them: ``str`` items are text pieces, other
                items are images (PIL, arrays, tensors, `pathlib.Path`), or already-built blocks
                (`TextBlock`, `VitImageBlock`). Sequences may differ in structure. Also the
                `BatchFeature` of ``processor(text=..., images=...)`` / ``processor.apply_chat_template(...,
                tokenize=True, return_dict=True)``, as ``generate(inputs)`` or ``generate(**inputs)``.
            max_new_tokens, do_sample, temperature, top_p, top_k: as in transformers' `generate`.
            think: prepend BAGEL's think system prompt (reasoning inside ``<think>…</think>``).
            streamer: a transformers streamer (`TextStreamer`, `TextIteratorStreamer`): as in
                transformers' `generate`, it first receives the prompt's text ids (dropped with
                ``skip_prompt=True``), then every new token as it is produced, then ``end()`` (also
                when generation fails, so a consumer thread never hangs). Streamers take one
                sequence, so a batch of several is an error.

        Returns:
            Token ids [B, T] starting after ``<|im_start|>``, each sequence stopped at (and including)
            ``<|im_end|>`` and right-padded with it. Decode with ``processor.batch_decode``.

        Example:
            >>> ids = model.generate([image, "What is in this picture?"], processor=processor, max_new_tokens=64)
            >>> processor.batch_decode(ids)[0]
            >>> from transformers import TextStreamer
            >>> model.generate([image, "What is in this picture?"], streamer=TextStreamer(processor.tokenizer, skip_prompt=True))
        """
        processor = processor or self.processor
        feature_keys = {"input_ids", "attention_mask", "pixel_values"}
        if inputs is None and "input_ids" in kwargs:  # generate(**processor(...))
            inputs = {key: kwargs.pop(key) for key in feature_keys & set(kwargs)}
        if kwargs:
            raise TypeError(f"Unsupported generate() arguments: {sorted(kwargs)}")
        check_generation_arguments(max_new_tokens, do_sample, temperature, top_p, top_k, generator)
        if isinstance(inputs, Mapping):  # a processor's BatchFeature: interleaved blocks per sequence
            if processor is None:
                raise ValueError("Processor outputs need the processor to read them: pass `processor=` or set `model.processor`.")
            batch = processor.features_to_blocks(inputs)
        else:
            if isinstance(inputs, (str, bytes)) or not isinstance(inputs, (list, tuple)) or not inputs:
                raise ValueError(
                    "generate() takes a non-empty list of interleaved items (texts and images), or a batch of such lists, "
                    f"or a processor's BatchFeature, e.g. [image, 'What is shown?']; got {type(inputs).__name__}."
                )
            batch = [inputs] if not isinstance(inputs[0], (list, tuple)) else list(inputs)
        if streamer is not None and len(batch) != 1:
            raise ValueError(
                f"streamer= takes one sequence (transformers' streamers support batch size 1), got a batch of {len(batch)}: "
                "call generate() once per input to stream each."
            )
        sequences = [self._as_blocks(items, processor, think) for items in batch]
        self.check_sequence_lengths([self.sequence_length(blocks) for blocks in sequences], max_new_tokens)
        cache = self.new_cache(len(sequences))
        for step in range(max(len(blocks) for blocks in sequences)):
            rows = [i for i, blocks in enumerate(sequences) if step < len(blocks)]
            sub = cache.select(rows)
            self.prefill(sub, [sequences[i][step] for i in rows])
            cache.assign(rows, sub)

        warpers = LogitsProcessorList()
        if do_sample:
            if temperature != 1.0:
                warpers.append(TemperatureLogitsWarper(temperature))
            if top_k:
                warpers.append(TopKLogitsWarper(top_k))
            if top_p < 1.0:
                warpers.append(TopPLogitsWarper(top_p))
        eos = self.config.eos_token_id
        tokens = torch.full((len(sequences),), self.config.bos_token_id, device=self.device)
        finished = torch.zeros(len(sequences), dtype=torch.bool, device=self.device)
        generated = []
        if streamer is not None:  # transformers' generate puts the prompt first; skip_prompt=True drops it
            prompt_ids = [torch.as_tensor(b.ids, dtype=torch.long) for b in sequences[0] if isinstance(b, TextBlock)]
            streamer.put(torch.cat(prompt_ids)[None] if prompt_ids else torch.zeros(1, 0, dtype=torch.long))
        try:
            for _ in range(max_new_tokens):
                logits = self.next_token_logits(cache, tokens).float()
                if do_sample:
                    probs = warpers(None, logits).softmax(-1)
                    tokens = torch.multinomial(probs, 1, generator=generator).squeeze(1)
                else:
                    tokens = logits.argmax(-1)
                tokens = torch.where(finished, torch.full_like(tokens, eos), tokens)
                generated.append(tokens)
                if streamer is not None:
                    streamer.put(tokens.cpu())
                finished |= tokens == eos
                if finished.all():
                    break
        finally:
            if streamer is not None:
                streamer.end()
        return torch.stack(generated, dim=1)

    def _as_blocks(self, items: Sequence[Any], processor, think: bool) -> list[Block]:
        blocks: list[Block] = [TextBlock(processor.encode_text(THINK_SYSTEM_PROMPT))] if think else []
        for item in items:
            if isinstance(item, (TextBlock, VitImageBlock)):
                blocks.append(item)
            elif processor is None:
                raise ValueError("Text and images need a processor: pass `processor=` or set `model.processor`.")
            else:
                blocks.extend(processor.interleaved_blocks([item]))
        return blocks

    @torch.no_grad()
    def answer(
        self,
        image,
        question: str,
        options: Sequence[str] | dict[str, str] | None = None,
        recover: bool = True,
        return_recovered: bool = True,
        think: bool = False,
        processor=None,
        max_new_tokens: int = 512,
        do_sample: bool = False,
        temperature: float = 0.3,
        recover_kwargs: dict[str, Any] | None = None,
        prompt: str | None = None,
        **generate_kwargs,
    ) -> RobustAnswer:
        """Robust answering as in the paper: recover I_r from I_c, then answer over [I_c, I_r, Q].

        With ``recover=False`` the model answers from I_c alone (the baseline). Prompts are the
        official demo's (VLMEvalKit MCQ layout with the recovery instruction) unless ``prompt`` gives
        the full text to use (benchmarks with their own prompts, e.g. R-Bench).

        Example:
            >>> result = model.answer(corrupted, "What animal is shown?", options=["dog", "cat"])
            >>> result.option, result.answer
            ('B', 'B')
        """
        processor = processor or self.processor
        if processor is None:
            raise ValueError("answer() needs a processor (tokenizer): pass `processor=` or set `model.processor`.")
        if not isinstance(question, str):
            raise TypeError(f"question must be a str, got {type(question).__name__}.")
        if options is not None:
            check_options(options)
        check_generation_arguments(
            max_new_tokens, do_sample, temperature, generate_kwargs.get("top_p", 1.0), generate_kwargs.get("top_k", 0),
            generate_kwargs.get("generator"),
        )  # fmt: skip
        image = _as_image_input(image)
        if prompt is None:
            prompt = build_question_prompt(question, options, recover=recover)
        # The answer's sequence is known before the (expensive) recovery: check its length first.
        length = self.sequence_length(self._as_blocks([image, prompt], processor, think))
        if recover:
            recovered_size = tuple(processor.image_processor.vae_pixel_values(image).shape[:0:-1])  # (W, H) of I_r
            length += self.sequence_length([VitImageBlock(processor.image_processor.vit_pixel_values(Image.new("RGB", recovered_size)))])
        self.check_sequence_lengths([length], max_new_tokens)
        recovered = None
        if recover:
            recovered = self.recover(image, processor=processor, output_type="pil", **(recover_kwargs or {}))
            items = [image, recovered, prompt]
        else:
            items = [image, prompt]
        ids = self.generate(
            [items], processor=processor, max_new_tokens=max_new_tokens, do_sample=do_sample,
            temperature=temperature, think=think, **generate_kwargs,
        )  # fmt: skip
        raw = processor.decode(ids[0])
        reasoning, text = parse_reply(raw)
        return RobustAnswer(
            answer=text,
            reasoning=reasoning,
            option=extract_option(raw, options) if options else None,
            recovered_image=recovered if return_recovered else None,
            raw_text=raw,
        )

    def as_answerer(self, processor=None, recover_kwargs: dict[str, Any] | None = None, **answer_kwargs):
        """This model as an evaluation `Answerer`: ``fn(image, prompt, options, mode) -> dict``.

        The benchmark gives the complete prompt; ``mode == "recover"`` recovers I_r first and answers
        over [I_c, I_r, prompt], the other modes answer over [image, prompt].

        Example:
            >>> from robust_u1.evaluation import evaluate_benchmark, load_mcq_benchmark
            >>> results = evaluate_benchmark(load_mcq_benchmark("MMStar"), model.as_answerer(max_new_tokens=64))
        """

        def answer_fn(image, prompt: str, options, mode: str) -> dict[str, Any]:
            result = self.answer(
                image, prompt, options, recover=mode == "recover", prompt=prompt, processor=processor,
                recover_kwargs=recover_kwargs, **answer_kwargs,
            )  # fmt: skip
            return {"answer": result.raw_text, "reasoning": result.reasoning, "recovered_image": result.recovered_image}

        return answer_fn


def check_generation_arguments(
    max_new_tokens: int, do_sample: bool, temperature: float, top_p: float, top_k: int, generator=None
) -> None:
    """One-line `ValueError` / `TypeError` for text-generation settings that would fail late or mean nothing.

    Example:
        >>> check_generation_arguments(0, False, 1.0, 1.0, 0)
        Traceback (most recent call last):
        ...
        ValueError: max_new_tokens must be a positive int, got 0.
    """
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}.")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"top_k must be an int >= 0 (0 disables it), got {top_k!r}.")
    if not isinstance(top_p, (int, float)) or isinstance(top_p, bool) or not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}.")
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not math.isfinite(temperature):
        raise ValueError(f"temperature must be a finite number, got {temperature!r}.")
    if do_sample and temperature <= 0:
        raise ValueError(f"temperature must be > 0 when do_sample=True, got {temperature!r}; use do_sample=False for greedy decoding.")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}; e.g. torch.Generator().manual_seed(0).")


def _as_image_input(image):
    """File paths given as ``str`` are opened here so that `generate` sees images, never text."""
    from .processing_robust_u1 import to_rgb_image

    return to_rgb_image(image)


def to_uint8_image(tensor: torch.Tensor) -> np.ndarray:
    """A [3, H, W] image in [-1, 1] → uint8 HWC with the official conversion, which truncates."""
    return ((tensor * 0.5 + 0.5).clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


