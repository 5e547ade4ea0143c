"""Inference on top of the model's building blocks: image recovery (BAGEL's edit path) and text generation."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

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

from .evaluation.options import extract_option, final_answer_text, strip_reasoning
from .evaluation.prompts import RECOVERY_PROMPT, build_mcq_prompt, build_open_prompt, check_options
from .packing import Block, RobustU1KVCache, TextBlock, VaeImageBlock, VitImageBlock
from .sampling import GuidanceConfig, euler_step, flow_timesteps, guided_velocity

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


# BAGEL's think-mode system prompt (official inferencer).
THINK_SYSTEM_PROMPT = (
    "You should first think about the reasoning process in the mind and then provide the user with the answer. "
    "The reasoning process is enclosed within <think> </think> tags, i.e. <think> reasoning process here </think> "
    "answer here"
)


@dataclass
class RobustAnswer:
    """What `answer` returns: the final answer text, the reasoning (think text), the option letter
    for multiple-choice questions, the recovered image (when recovering) and the raw reply."""

    answer: str
    reasoning: str | None
    option: str | None
    recovered_image: Image.Image | None
    raw_text: str


def _generator_for(generator, index: int):
    return generator[index] if isinstance(generator, (list, tuple)) else generator


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
        self, contexts: EditContexts, latents: Sequence[torch.Tensor], t: float, guidance: GuidanceConfig
    ) -> list[torch.Tensor]:
        """Velocities of B noisy latents at time ``t``; the needed contexts run as one batched forward."""
        batch = len(latents)
        if not guidance.is_active(t):
            return self.predict_velocity(contexts.gen, latents, contexts.grids, t)
        caches = [contexts.gen, contexts.cfg_text] + ([contexts.cfg_img] if guidance.uses_image_context else [])
        velocities = self.predict_velocity(
            RobustU1KVCache.concat(caches), list(latents) * len(caches), contexts.grids * len(caches), t
        )
        v_gen, v_text = velocities[:batch], velocities[batch : 2 * batch]
        v_img = velocities[2 * batch :] if guidance.uses_image_context else [None] * batch
        return [guided_velocity(g, tx, im, guidance) for g, tx, im in zip(v_gen, v_text, v_img)]

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

        ```python
        >>> model.check_edit_lengths(model.prepare_edit_inputs([image], processor=processor))
        ```
        """
        lengths = [
            self.sequence_length(
                [VaeImageBlock(pixel_values=vae), VitImageBlock(vit), TextBlock(ids), VaeImageBlock(pixel_values=vae, noisy=True)]
            )
            for vae, vit, ids in zip(inputs.vae_pixel_values, inputs.vit_pixel_values, inputs.prompt_ids)
        ]
        self.check_sequence_lengths(lengths)

    @torch.no_grad()
    def recover(
        self,
        images,
        prompt: str | Sequence[int] = RECOVERY_PROMPT,
        num_inference_steps: int = 50,
        timestep_shift: float = 3.0,
        cfg_text_scale: float = 4.0,
        cfg_img_scale: float = 2.0,
        cfg_interval: tuple[float, float] = (0.0, 1.0),
        cfg_renorm_type: str = "text_channel",
        cfg_renorm_min: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | Sequence[torch.Tensor] | None = None,
        output_type: str = "pil",
        progress: bool = True,
        sample_posterior: bool = True,
        processor=None,
    ):
        """Recovers (restores) corrupted images with the generation expert, as the official edit loop.

        Args:
            images: one image or a list (PIL, numpy HWC, tensors CHW in [0, 1], file paths; sizes may
                differ), or an `EditInputs` of already-transformed tensors.
            prompt: the recovery instruction, text or token ids.
            num_inference_steps: points of the flow schedule including t = 1 and t = 0, as the
                official ``num_timesteps`` (50 → 49 velocity evaluations).
            timestep_shift, cfg_*: schedule shift and guidance (see `GuidanceConfig`); defaults
                are the Robust-U1 demo's.
            generator: a generator, or one per image (posterior sample, then initial noise).
            latents: initial noise, [n_tok, p·p·C] per image (patchified); drawn when None.
            output_type: ``pil``, ``np`` (float HWC in [0, 1]), ``pt`` (float CHW in [0, 1]) or
                ``latent`` (scaled latents [C, h, w]).
            progress: show a tqdm bar over the denoising steps.
            sample_posterior: encode the input with a posterior sample (official) or its mode.

        Returns:
            One recovered image for one input image, else a list.

        Example:

        ```python
        >>> from PIL import Image
        >>> restored = model.recover(Image.open("corrupted.png"), num_inference_steps=50)
        >>> restored.save("restored.png")
        ```
        """
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}.")
        single = not isinstance(images, (list, tuple, EditInputs))
        inputs = self.prepare_edit_inputs(images, prompt, processor)
        guidance = GuidanceConfig(cfg_text_scale, cfg_img_scale, tuple(cfg_interval), cfg_renorm_type, cfg_renorm_min)
        contexts = self.build_edit_contexts(inputs, sample_posterior, generator)
        x = self._initial_latents(contexts.grids, latents, generator)
        timesteps = flow_timesteps(num_inference_steps, timestep_shift).tolist()

        for t, t_next in tqdm(list(zip(timesteps[:-1], timesteps[1:])), disable=not progress, desc="recover"):
            velocities = self.guided_velocities(contexts, x, t, guidance)
            x = [euler_step(xi, vi, t, t_next) for xi, vi in zip(x, velocities)]

        outputs = self._postprocess_latents(x, contexts.grids, output_type)
        return outputs[0] if single else outputs

    # -- text ----------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(
        self,
        inputs: Sequence[Sequence[Any]] | Sequence[Any],
        processor=None,
        max_new_tokens: int = 512,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        think: bool = False,
        generator: torch.Generator | None = None,
        **kwargs,
    ) -> torch.Tensor:
        """Generates text after interleaved images and texts, BAGEL-style, with a KV cache.

        Args:
            inputs: one interleaved list, or a batch of them: ``str`` items are text pieces, other
                items are images (PIL, arrays, tensors, `pathlib.Path`), or already-built blocks
                (`TextBlock`, `VitImageBlock`). Sequences may differ in structure.
            max_new_tokens, do_sample, temperature, top_p, top_k: as in transformers' `generate`.
            think: prepend BAGEL's think system prompt (reasoning inside ``<think>…</think>``).

        Returns:
            Token ids [B, T] starting after ``<|im_start|>``, each sequence stopped at (and including)
            ``<|im_end|>`` and right-padded with it. Decode with ``processor.batch_decode``.

        Example:

        ```python
        >>> ids = model.generate([image, "What is in this picture?"], processor=processor, max_new_tokens=64)
        >>> processor.batch_decode(ids)[0]
        ```
        """
        if kwargs:
            raise TypeError(f"Unsupported generate() arguments: {sorted(kwargs)}")
        check_generation_arguments(max_new_tokens, do_sample, temperature, top_p, top_k, generator)
        processor = processor or self.processor
        if isinstance(inputs, (str, bytes)) or not isinstance(inputs, (list, tuple)) or not inputs:
            raise ValueError(
                "generate() takes a non-empty list of interleaved items (texts and images), or a batch of such lists, "
                f"e.g. [image, 'What is shown?']; got {type(inputs).__name__}."
            )
        batch = [inputs] if not isinstance(inputs[0], (list, tuple)) else list(inputs)
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
        for _ in range(max_new_tokens):
            logits = self.next_token_logits(cache, tokens).float()
            if do_sample:
                probs = warpers(None, logits).softmax(-1)
                tokens = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            else:
                tokens = logits.argmax(-1)
            tokens = torch.where(finished, torch.full_like(tokens, eos), tokens)
            generated.append(tokens)
            finished |= tokens == eos
            if finished.all():
                break
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

        ```python
        >>> result = model.answer(corrupted, "What animal is shown?", options=["dog", "cat"])
        >>> result.option, result.answer
        ('B', 'B')
        ```
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
            prompt = build_mcq_prompt(question, options, recover=recover) if options else build_open_prompt(question, recover=recover)
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
        reasoning = raw.split("<think>", 1)[1].split("</think>", 1)[0].strip() if "<think>" in raw else None
        text = final_answer_text(strip_reasoning(raw)).strip()
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

        ```python
        >>> from robust_u1.evaluation import evaluate_benchmark, load_mcq_benchmark
        >>> results = evaluate_benchmark(load_mcq_benchmark("MMStar"), model.as_answerer(max_new_tokens=64))
        ```
        """

        def answer_fn(image, prompt: str, options, mode: str) -> dict[str, Any]:
            result = self.answer(
                image, prompt, options, recover=mode == "recover", prompt=prompt, processor=processor,
                recover_kwargs=recover_kwargs, **answer_kwargs,
            )  # fmt: skip
            return {"answer": result.raw_text, "reasoning": result.reasoning, "recovered_image": result.recovered_image}

        return answer_fn

    def _initial_latents(self, grids, latents, generator) -> list[torch.Tensor]:
        dim = self.config.patch_latent_dim
        if latents is not None:
            latents = [latents] if isinstance(latents, torch.Tensor) and latents.dim() == 2 else list(latents)
            for x, (h, w) in zip(latents, grids):
                if tuple(x.shape) != (h * w, dim):
                    raise ValueError(f"latents of shape {tuple(x.shape)} do not fit a {h}×{w} token grid: expected {(h * w, dim)}.")
            return [x.to(self.device, torch.float32) for x in latents]
        return [
            torch.randn(h * w, dim, generator=_generator_for(generator, i), device=self.device, dtype=torch.float32)
            for i, (h, w) in enumerate(grids)
        ]

    def _postprocess_latents(self, latents, grids, output_type):
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
