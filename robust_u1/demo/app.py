"""The Gradio app of `robust-u1 demo` (and of the Hugging Face Space in ``examples/space``).

Gradio is imported when the app is built, never when `robust_u1` is imported (optional extra
``pip install "robust-u1[demo]"``).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .inference import (
    LEVEL_NAMES,
    MIN_IMAGE_SIDE,
    NO_CORRUPTION,
    DemoInputError,
    DemoRequest,
    answer_defaults,
    recover_defaults,
    stream_demo,
)

if TYPE_CHECKING:
    import gradio as gr

logger = logging.getLogger(__name__)

EXAMPLES_DIR = Path(__file__).parent / "examples"
TINYWORLD_EXAMPLES = [
    # TinyWorld test scene 52 with motion blur at mid (the README's example), as given
    [str(EXAMPLES_DIR / "corrupted_example.png"), NO_CORRUPTION, "mid", "Which shape is red?", "circle\nsquare\ntriangle"],
    # the clean scene, corrupted here first
    [str(EXAMPLES_DIR / "clean_example.png"), "imagenet_c/gaussian_noise", "high", "Which shape is red?", "circle\nsquare\ntriangle"],
    [str(EXAMPLES_DIR / "clean_example.png"), "robust_r1/lens_blur", "mid", "How many shapes are there?", "one\ntwo\nthree\nfour"],
]
"""Examples for the bundled TinyWorld model (32×32 images of coloured shapes)."""

DEMO_CSS = """
.robust-u1-small img { image-rendering: pixelated; width: 100%; height: 100%; object-fit: contain; }
"""
"""Page style (Gradio 6 takes CSS in ``launch(css=...)``): small images (TinyWorld's 32×32) are shown
enlarged with visible pixels instead of as a blurred thumbnail."""

DESCRIPTION = """\
**Robust-U1** recovers a corrupted image with the model's own image generator (I_r from I_c), then
answers a multiple-choice question by reasoning over the corrupted image, the recovered image and the
question. Upload an image (or pick an example), optionally corrupt it first, ask a question with its
options and press **Run**: the recovered image appears while it is being denoised and the reasoning
streams token by token."""


def _import_gradio():
    try:
        import gradio as gr
    except ImportError as error:
        raise ImportError('The demo needs Gradio: pip install "robust-u1[demo]"') from error
    return gr


class _ImageFiles:
    """Images handed to Gradio as PNG files named by their content.

    Gradio re-encodes a PIL output into the same cache file on every yield, which races with the
    browser still downloading it ("Content-Length" errors); files it copies once and never rewrites.
    Written to a temporary name and renamed, as every file the library writes.
    """

    def __init__(self):
        self._folder = tempfile.TemporaryDirectory(prefix="robust-u1-demo-")
        self._last: dict[int, tuple[object, str]] = {}  # holds the image, so its id is not reused

    def path(self, image) -> str | None:
        if image is None:
            return None
        if id(image) in self._last:  # the same object as before (the input image is sent on every update)
            return self._last[id(image)][1]
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data = buffer.getvalue()
        path = Path(self._folder.name) / f"{hashlib.sha256(data).hexdigest()[:24]}.png"
        if not path.exists():
            staging = path.with_suffix(f".{os.getpid()}.{id(image)}.tmp")
            staging.write_bytes(data)
            os.replace(staging, path)
        if len(self._last) > 64:
            self._last.clear()
        self._last[id(image)] = (image, str(path))
        return str(path)


def _with_clear_upload_errors(gr, component):
    """Makes an unreadable upload one clear line in the page (Gradio's own message is only "Error").

    Set on the instance: subclassing a Gradio component makes Gradio write a ``.pyi`` stub next to
    the module that defines it, i.e. into the installed package.
    """
    preprocess = component.preprocess

    def checked_preprocess(payload):
        try:
            return preprocess(payload)
        except gr.Error:
            raise
        except Exception as error:  # PIL.UnidentifiedImageError, truncated files, …
            name = getattr(payload, "orig_name", None) or "the upload"
            raise gr.Error(f"{name} is not an image Robust-U1 can read ({type(error).__name__}): upload a PNG, JPEG or WebP image.") from error

    component.preprocess = checked_preprocess
    return component


def build_demo(model, processor=None, examples: list[list[Any]] | None = None, title: str = "Robust-U1", preview_every: int = 1) -> gr.Blocks:
    """Builds the demo page for a Robust-U1 model.

    Args:
        model: a `RobustU1ForConditionalGeneration` (with ``model.processor`` or ``processor``).
        processor: its `RobustU1Processor`; default ``model.processor``.
        examples: rows ``[image path, corruption, level, question, options]`` for the examples table;
            default the TinyWorld examples (meant for the bundled model).
        title: the page title.
        preview_every: decode a recovery preview every this many denoising steps.

    Returns:
        The `gr.Blocks` app, queued with one run at a time (``demo.queue(default_concurrency_limit=...)``
        changes it; `launch_demo` does).

    Example:
        >>> from robust_u1.tinyworld import load_tinyworld
        >>> model, processor = load_tinyworld()
        >>> build_demo(model, processor).launch()
    """
    if isinstance(preview_every, bool) or not isinstance(preview_every, int) or preview_every < 1:
        raise ValueError(f"preview_every must be a whole number ≥ 1 (denoising steps per preview), got {preview_every!r}.")
    gr = _import_gradio()
    from ..corruptions import list_corruptions

    processor = processor or model.processor
    if processor is None:
        raise ValueError("The demo needs the model's processor (tokenizer): pass processor= or load a checkpoint with processor files.")
    recover_default = recover_defaults(model)
    answer_default = answer_defaults()
    corruption_names = [NO_CORRUPTION, *(name for names in list_corruptions().values() for name in names)]
    image_files = _ImageFiles()
    image_processor = getattr(processor, "image_processor", None)
    small = ["robust-u1-small"] if getattr(image_processor, "vae_max_size", 1024) <= 128 else None

    def run(image, corruption, level, question, options, compare, seed, cfg_text_scale, cfg_img_scale, cfg_interval_low,
            cfg_interval_high, cfg_renorm_type, cfg_renorm_min, num_inference_steps, timestep_shift, do_sample, max_new_tokens,
            temperature, progress=gr.Progress()):  # fmt: skip
        request = DemoRequest(
            image=image, question=question, options=options, corruption=corruption, level=level, compare_baseline=compare,
            seed=seed,
            recover_kwargs=dict(
                num_inference_steps=num_inference_steps, timestep_shift=timestep_shift, cfg_text_scale=cfg_text_scale,
                cfg_img_scale=cfg_img_scale, cfg_interval=(cfg_interval_low, cfg_interval_high),
                cfg_renorm_type=cfg_renorm_type, cfg_renorm_min=cfg_renorm_min,
            ),
            answer_kwargs=dict(do_sample=do_sample, max_new_tokens=max_new_tokens, temperature=temperature),
        )  # fmt: skip
        try:
            for state in stream_demo(model, processor, request, preview_every=preview_every):
                if state.total_steps and not state.answer:
                    progress((state.step, state.total_steps), desc="Denoising")
                yield (
                    image_files.path(state.input_image), image_files.path(state.recovered_image), state.status, state.reasoning, state.answer_label,
                    state.baseline_answer or "", state.baseline_reasoning,
                )  # fmt: skip
        except DemoInputError as error:
            raise gr.Error(str(error), print_exception=False) from error
        except (ValueError, TypeError) as error:  # settings recover()/answer() reject
            raise gr.Error(str(error), print_exception=False) from error
        except Exception as error:
            logger.exception("demo run failed")
            raise gr.Error(f"The model failed: {type(error).__name__}: {error}") from error

    def check_upload(image):
        """Says at upload time what is wrong with an image the model cannot use."""
        if image is not None and min(image.size) < MIN_IMAGE_SIDE:
            gr.Warning(
                f"The image is {image.width}×{image.height} pixels, too small to recover: upload one of at least "
                f"{MIN_IMAGE_SIDE}×{MIN_IMAGE_SIDE} pixels."
            )

    with gr.Blocks(title=title) as demo:
        gr.Markdown(f"# {title}\n\n{DESCRIPTION}")
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(label="Input image", type="pil", image_mode=None, sources=["upload", "clipboard"], height=256, elem_id="input-image", elem_classes=small)
                _with_clear_upload_errors(gr, image)
                with gr.Row():
                    corruption = gr.Dropdown(corruption_names, value=NO_CORRUPTION, label="Corrupt it first", elem_id="corruption")
                    level = gr.Radio(list(LEVEL_NAMES), value="mid", label="Corruption level", elem_id="level")
                question = gr.Textbox(label="Question", placeholder="Which shape is red?", elem_id="question")
                options = gr.Textbox(label="Options (one per line)", lines=4, placeholder="circle\nsquare\ntriangle", elem_id="options")
                compare = gr.Checkbox(label="Compare with no recovery (also answer from I_c alone)", value=False, elem_id="compare")
                with gr.Accordion("Advanced inference controls", open=False):
                    seed = gr.Number(label="seed", value=0, precision=0, minimum=0, elem_id="seed")
                    with gr.Row():
                        cfg_text_scale = gr.Slider(1.0, 8.0, value=recover_default["cfg_text_scale"], step=0.1, label="cfg_text_scale")
                        cfg_img_scale = gr.Slider(1.0, 4.0, value=recover_default["cfg_img_scale"], step=0.1, label="cfg_img_scale")
                    with gr.Row():
                        cfg_interval_low = gr.Slider(0.0, 1.0, value=recover_default["cfg_interval"][0], step=0.05, label="cfg_interval (start)")
                        cfg_interval_high = gr.Slider(0.0, 1.0, value=recover_default["cfg_interval"][1], step=0.05, label="cfg_interval (end)")
                    with gr.Row():
                        cfg_renorm_type = gr.Dropdown(["global", "channel", "text_channel"], value=recover_default["cfg_renorm_type"], label="cfg_renorm_type")
                        cfg_renorm_min = gr.Slider(0.0, 1.0, value=recover_default["cfg_renorm_min"], step=0.05, label="cfg_renorm_min")
                    with gr.Row():
                        num_inference_steps = gr.Slider(2, 100, value=recover_default["num_inference_steps"], step=1, label="num_inference_steps (timesteps)", elem_id="num-inference-steps")
                        timestep_shift = gr.Slider(1.0, 5.0, value=recover_default["timestep_shift"], step=0.5, label="timestep_shift")
                    with gr.Row():
                        do_sample = gr.Checkbox(value=answer_default["do_sample"], label="do_sample (sample reasoning tokens)")
                        max_new_tokens = gr.Slider(16, 2048, value=answer_default["max_new_tokens"], step=16, label="max_new_tokens (max reasoning tokens)")
                        temperature = gr.Slider(0.0, 1.0, value=answer_default["temperature"], step=0.05, label="temperature")
                run_button = gr.Button("Run", variant="primary", elem_id="run")
            with gr.Column(scale=1):
                with gr.Row():
                    shown_input = gr.Image(label="Model input I_c", interactive=False, height=256, elem_id="shown-input", elem_classes=small)
                    recovered = gr.Image(label="Recovered image I_r", interactive=False, height=256, elem_id="recovered", elem_classes=small)
                status = gr.Textbox(label="Progress", interactive=False, elem_id="status")
                reasoning = gr.Textbox(label="Reasoning (streamed)", lines=5, interactive=False, elem_id="reasoning")
                answer = gr.Textbox(label="Answer (option)", interactive=False, elem_id="answer")
                baseline = gr.Textbox(label="Baseline answer from I_c alone (no recovery)", interactive=False, elem_id="baseline")
                baseline_reasoning = gr.Textbox(label="Baseline reasoning", lines=3, interactive=False, elem_id="baseline-reasoning")
        if examples is None:
            examples = TINYWORLD_EXAMPLES
        if examples:
            gr.Examples(examples, inputs=[image, corruption, level, question, options], label="Examples (for the bundled TinyWorld model)")

        inputs = [image, corruption, level, question, options, compare, seed, cfg_text_scale, cfg_img_scale, cfg_interval_low,
                  cfg_interval_high, cfg_renorm_type, cfg_renorm_min, num_inference_steps, timestep_shift, do_sample,
                  max_new_tokens, temperature]  # fmt: skip
        outputs = [shown_input, recovered, status, reasoning, answer, baseline, baseline_reasoning]
        run_button.click(run, inputs, outputs, api_name="answer", show_progress_on=[status])
        image.upload(check_upload, image, None, api_visibility="private")
    demo.image_files = image_files  # the folder lives as long as the app
    demo.queue(default_concurrency_limit=1)
    return demo


def launch_demo(
    model,
    processor=None,
    host: str = "127.0.0.1",
    port: int | None = None,
    share: bool = False,
    concurrency: int = 1,
    max_queue_size: int | None = None,
    prevent_thread_lock: bool = False,
    **build_kwargs,
):
    """Builds the demo and serves it; ``concurrency`` runs of the model at a time, other users wait in the queue.

    Example:
        >>> launch_demo(model, processor, host="0.0.0.0", port=7860, concurrency=1)
    """
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be a whole number ≥ 1, got {concurrency!r}.")
    demo = build_demo(model, processor, **build_kwargs)
    demo.queue(default_concurrency_limit=concurrency, max_size=max_queue_size)
    demo.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=prevent_thread_lock, show_error=True, css=DEMO_CSS)
    return demo
