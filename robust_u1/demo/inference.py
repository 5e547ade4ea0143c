"""What the demo runs, without Gradio: optional corruption, recovery with live previews, the answer
with its reasoning streamed token by token, and optionally the baseline answer from I_c alone.

`stream_demo` is a generator of `DemoState` snapshots. The model runs in a worker thread that feeds a
queue from `recover()`'s step callback (previews) and from a transformers `TextStreamer` (tokens),
so the caller (the Gradio app, a notebook) sees every step as it happens. Closing the generator stops
the worker at its next denoising step or token.
"""

from __future__ import annotations

import inspect
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from PIL import Image

MIN_IMAGE_SIDE = 16
"""Smallest accepted image side in pixels (one 16-pixel latent token of the real model)."""

MAX_OPTIONS = 26
LEVEL_NAMES = ("low", "mid", "high")
NO_CORRUPTION = "none"


class DemoInputError(ValueError):
    """A bad input of the demo (shown to the user as one line)."""


@dataclass
class DemoRequest:
    """One run of the demo.

    ``recover_kwargs`` go to `recover()` (``num_inference_steps``, ``timestep_shift``, ``cfg_*``) and
    ``answer_kwargs`` to `answer()` (``do_sample``, ``max_new_tokens``, ``temperature``); ``seed``
    seeds the corruption, the recovery noise and the sampling of reasoning tokens.
    """

    image: Any
    question: str
    options: Sequence[str]
    corruption: str | None = None
    level: str = "mid"
    compare_baseline: bool = False
    seed: int = 0
    recover_kwargs: dict[str, Any] = field(default_factory=dict)
    answer_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class DemoState:
    """A snapshot of a run: what the page shows at one moment."""

    input_image: Image.Image | None = None
    recovered_image: Image.Image | None = None
    step: int = 0
    total_steps: int = 0
    previews: int = 0
    reasoning: str = ""
    answer: str | None = None
    option: str | None = None
    option_text: str | None = None
    baseline_reasoning: str = ""
    baseline_answer: str | None = None
    baseline_option: str | None = None
    status: str = ""
    done: bool = False

    @property
    def answer_label(self) -> str:
        """``"B (square)"`` for a recognised option, else the answer text."""
        return _label(self.option, self.option_text, self.answer)


def _label(option: str | None, option_text: str | None, answer: str | None) -> str:
    if option:
        return f"{option} ({option_text})" if option_text else option
    return answer or ""


def parse_options(options: str | Sequence[str] | None) -> list[str]:
    """Options from a text box (one per line) or a list; blank entries are dropped.

    Example:
        >>> parse_options("circle\\n square \\n\\ntriangle")
        ['circle', 'square', 'triangle']
    """
    if options is None:
        return []
    items = options.splitlines() if isinstance(options, str) else [str(o) for o in options]
    return [item.strip() for item in items if item and item.strip()]


def answer_defaults() -> dict[str, Any]:
    """The defaults of `answer()` for the reasoning controls (read from its signature, so they stay equal)."""
    from ..generation_robust_u1 import RobustU1GenerationMixin

    parameters = inspect.signature(RobustU1GenerationMixin.answer).parameters
    return {name: parameters[name].default for name in ("do_sample", "max_new_tokens", "temperature")}


def recover_defaults(model) -> dict[str, Any]:
    """The defaults of ``model.recover()``: its `recovery_config` (the checkpoint's, else the official demo's)."""
    config = model.recovery_config
    return {
        "num_inference_steps": config.num_inference_steps,
        "timestep_shift": config.sampling_shift,
        "cfg_text_scale": config.cfg_text_scale,
        "cfg_img_scale": config.cfg_img_scale,
        "cfg_interval": tuple(config.cfg_interval),
        "cfg_renorm_type": config.cfg_renorm_type,
        "cfg_renorm_min": config.cfg_renorm_min,
    }


def check_request(model, request: DemoRequest) -> DemoRequest:
    """Checks every input before any model work; raises `DemoInputError` (one line) for bad ones.

    Returns the request with the image as an RGB PIL image and the options parsed.
    """
    from ..processing_robust_u1 import to_rgb_image

    if request.image is None:
        raise DemoInputError("No image: upload an image or pick one of the examples.")
    try:
        image = to_rgb_image(request.image)
    except (ValueError, TypeError, OSError) as error:
        raise DemoInputError(f"The input is not a readable image ({error}): upload a PNG, JPEG or WebP image.") from error
    if min(image.size) < MIN_IMAGE_SIDE:
        raise DemoInputError(
            f"The image is {image.width}×{image.height} pixels, too small to recover: upload one of at least "
            f"{MIN_IMAGE_SIDE}×{MIN_IMAGE_SIDE} pixels."
        )
    question = (request.question or "").strip()
    if not question:
        raise DemoInputError("The question is empty: type a question about the image.")
    options = parse_options(request.options)
    if len(options) < 2:
        raise DemoInputError(f"Got {len(options)} option(s): give at least two answer options, one per line.")
    if len(options) > MAX_OPTIONS:
        raise DemoInputError(f"Got {len(options)} options: at most {MAX_OPTIONS} (A–Z) are possible.")
    corruption = request.corruption if request.corruption and request.corruption != NO_CORRUPTION else None
    if corruption is not None:
        from ..corruptions import get_corruption

        try:
            get_corruption(corruption)
        except (ValueError, TypeError) as error:
            raise DemoInputError(str(error)) from error
        if request.level not in LEVEL_NAMES:
            raise DemoInputError(f"Unknown corruption level {request.level!r}: choose one of {list(LEVEL_NAMES)}.")
    seed = _whole_number("The seed", request.seed, minimum=0)
    answer_kwargs = dict(request.answer_kwargs)
    if "max_new_tokens" in answer_kwargs:
        answer_kwargs["max_new_tokens"] = _whole_number("max_new_tokens", answer_kwargs["max_new_tokens"], minimum=1)
    if answer_kwargs.get("do_sample") and not answer_kwargs.get("temperature", 1.0) > 0:
        raise DemoInputError(f"temperature must be > 0 when sampling reasoning tokens, got {answer_kwargs['temperature']!r}.")
    recover_kwargs = dict(request.recover_kwargs)
    if "num_inference_steps" in recover_kwargs:
        recover_kwargs["num_inference_steps"] = _whole_number("num_inference_steps", recover_kwargs["num_inference_steps"])
    from ..configuration_recovery import resolve_recovery_config

    try:  # the same checks recover() makes, before any model work
        resolve_recovery_config(model.recovery_config, **recover_kwargs)
    except (ValueError, TypeError) as error:
        raise DemoInputError(str(error)) from error
    return replace(
        request, image=image, question=question, options=options, corruption=corruption, seed=seed,
        recover_kwargs=recover_kwargs, answer_kwargs=answer_kwargs,
    )  # fmt: skip


def _whole_number(name: str, value: Any, minimum: int | None = None) -> int:
    """An int from a UI number (Gradio gives floats such as 3.0), else one line naming the setting."""
    bound = f" ≥ {minimum}" if minimum is not None else ""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not number.is_integer() or (minimum is not None and number < minimum):
        raise DemoInputError(f"{name} must be a whole number{bound}, got {value!r}.")
    return int(number)


class _Cancelled(Exception):
    """Raised inside the worker when the consumer of `stream_demo` went away."""


def stream_demo(model, processor, request: DemoRequest, preview_every: int = 1) -> Iterator[DemoState]:
    """Runs one demo request and yields a `DemoState` after every change (preview, token, answer).

    Args:
        model, processor: a Robust-U1 model and its processor.
        request: the inputs and settings (checked first with `check_request`).
        preview_every: decode a preview every this many denoising steps (each costs one VAE decode);
            the last step is always shown.

    Example:
        >>> request = DemoRequest(image="examples/corrupted_example.png", question="Which shape is red?",
        ...                       options=["circle", "square", "triangle"])
        >>> for state in stream_demo(model, processor, request):
        ...     print(state.status)
    """
    import torch
    from transformers import TextStreamer

    from ..evaluation.options import normalize_options

    from ..configuration_recovery import resolve_recovery_config

    request = check_request(model, request)
    processor = processor or model.processor
    total_steps = resolve_recovery_config(model.recovery_config, **request.recover_kwargs).num_inference_steps - 1
    events: queue.Queue = queue.Queue()
    cancelled = threading.Event()
    option_texts = normalize_options(request.options)

    class QueueStreamer(TextStreamer):
        """transformers' `TextStreamer`, with its documented hook sending text to the queue."""

        def __init__(self, kind: str):
            super().__init__(processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
            self.kind = kind

        def put(self, value):
            if cancelled.is_set():
                raise _Cancelled()
            super().put(value)

        def on_finalized_text(self, text: str, stream_end: bool = False):
            if text:
                events.put((self.kind, text))

    def on_step_end(model, step_index: int, t: float, callback_kwargs: dict) -> dict:
        if cancelled.is_set():
            raise _Cancelled()
        preview = None
        if step_index + 1 == total_steps or (step_index + 1) % preview_every == 0:
            preview = model.preview_latents(callback_kwargs["denoised"], callback_kwargs["grids"])[0]
        events.put(("step", (step_index + 1, total_steps, preview)))
        return {}

    def generator():
        return torch.Generator(device=model.device).manual_seed(request.seed)

    def work():
        try:
            image = request.image
            if request.corruption:
                from ..corruptions import corrupt

                image = corrupt(image, request.corruption, severity=request.level, seed=request.seed)
            events.put(("input", image))
            recover_kwargs = {
                **request.recover_kwargs, "generator": generator(), "progress": False,
                "callback_on_step_end": on_step_end, "callback_on_step_end_tensor_inputs": ["denoised", "grids"],
            }  # fmt: skip
            common = dict(processor=processor, **request.answer_kwargs)
            result = model.answer(
                image, request.question, options=request.options, recover=True, recover_kwargs=recover_kwargs,
                streamer=QueueStreamer("token"), generator=generator(), **common,
            )  # fmt: skip
            events.put(("answer", result))
            if request.compare_baseline:
                baseline = model.answer(
                    image, request.question, options=request.options, recover=False,
                    streamer=QueueStreamer("baseline_token"), generator=generator(), **common,
                )  # fmt: skip
                events.put(("baseline", baseline))
        except _Cancelled:
            pass
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, which raises it
            events.put(("error", error))
        finally:
            events.put(("done", None))

    worker = threading.Thread(target=work, name="robust-u1-demo", daemon=True)
    state = DemoState(status="Starting…")
    worker.start()
    try:
        finished = False
        while not finished:
            # Events that arrived while the caller was busy are merged into one snapshot, so a slow UI
            # never falls behind a fast model (a preview per step on a tiny model, a token per step).
            pending = [events.get()]
            while True:
                try:
                    pending.append(events.get_nowait())
                except queue.Empty:
                    break
            for kind, payload in pending:
                if kind == "done":
                    finished = True
                    break
                if kind == "error":
                    raise payload
                state = _apply_event(state, kind, payload, option_texts, request.compare_baseline)
            if not finished:
                yield state
        yield replace(state, done=True)
    finally:
        cancelled.set()  # a consumer that stopped early (closed page) stops the worker at its next step


def _apply_event(state: DemoState, kind: str, payload, option_texts: dict[str, str], compare_baseline: bool) -> DemoState:
    if kind == "input":
        return replace(state, input_image=payload, status="Recovering the image…")
    if kind == "step":
        step, total, preview = payload
        state = replace(state, step=step, total_steps=total, status=f"Denoising step {step}/{total}")
        return state if preview is None else replace(state, recovered_image=preview, previews=state.previews + 1)
    if kind == "token":
        return replace(state, reasoning=state.reasoning + payload, status="Reasoning over I_c and I_r…")
    if kind == "answer":
        return replace(
            state, recovered_image=payload.recovered_image, answer=payload.answer, option=payload.option,
            option_text=option_texts.get(payload.option) if payload.option else None, reasoning=payload.raw_text,
            status="Answering from I_c alone (baseline)…" if compare_baseline else "Done.",
        )  # fmt: skip
    if kind == "baseline_token":
        return replace(state, baseline_reasoning=state.baseline_reasoning + payload)
    if kind == "baseline":
        label = _label(payload.option, option_texts.get(payload.option) if payload.option else None, payload.answer)
        return replace(state, baseline_answer=label, baseline_option=payload.option, baseline_reasoning=payload.raw_text, status="Done.")
    raise AssertionError(f"unknown demo event {kind!r}")
