"""`robust-u1 demo`: the run without UI, the Gradio app through gradio_client, two clients at once
(queue), the CLI, the Space folder, and the page in a real browser (Debian's Chromium via Playwright)."""

import inspect
import os
import runpy
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from robust_u1.demo.inference import DemoInputError, DemoRequest, check_request, recover_defaults, stream_demo

pytestmark = pytest.mark.usefixtures("single_thread")

ROOT = Path(__file__).resolve().parents[1]
CORRUPTED = ROOT / "examples" / "corrupted_example.png"
CLEAN = ROOT / "examples" / "clean_example.png"
QUESTION = "Which shape is red?"
OPTIONS = ["circle", "square", "triangle"]
COUNT_QUESTION = "How many shapes are there?"
COUNT_OPTIONS = ["one", "two", "three", "four"]
# The /answer endpoint's inputs after (image, corruption, level, question, options, compare): seed and
# the advanced controls at recover()'s / answer()'s defaults.
DEFAULT_CONTROLS = [0, 4.0, 2.0, 0.0, 1.0, "text_channel", 0.0, 50, 3.0, False, 512, 0.3]


def _pixels(image) -> np.ndarray:
    return np.asarray(Image.open(image).convert("RGB") if isinstance(image, (str, Path)) else image.convert("RGB"))


@pytest.fixture(scope="module")
def tinyworld():
    from robust_u1.tinyworld import load_tinyworld

    return load_tinyworld()


def _expected(model, processor, image, question, options, recover=True, seed=0):
    """What the demo must show: `answer()` with the demo's seeding (one generator for recovery, one for text)."""
    generator = lambda: torch.Generator().manual_seed(seed)  # noqa: E731
    recover_kwargs = {"generator": generator(), "progress": False} if recover else None
    return model.answer(image, question, options=options, recover=recover, recover_kwargs=recover_kwargs, generator=generator(), processor=processor)


# -- the run without a UI -----------------------------------------------------------------------


def test_importing_the_library_and_the_demo_package_does_not_import_gradio():
    code = "import sys, robust_u1, robust_u1.demo; assert 'gradio' not in sys.modules, 'gradio imported'; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_stream_demo_previews_then_streams_then_equals_recover_and_answer(tinyworld):
    model, processor = tinyworld
    clean = Image.open(CLEAN).convert("RGB")
    request = DemoRequest(image=clean, question=QUESTION, options="circle\nsquare\n\ntriangle\n", corruption="imagenet_c/gaussian_noise",
                          level="high", compare_baseline=True, seed=3)  # fmt: skip
    states = list(stream_demo(model, processor, request))
    final = states[-1]
    assert final.done and final.status == "Done."

    from robust_u1.corruptions import corrupt

    corrupted = corrupt(clean, "imagenet_c/gaussian_noise", severity="high", seed=3)
    assert np.array_equal(_pixels(final.input_image), _pixels(corrupted))  # the corruption shown is the one used

    expected = _expected(model, processor, corrupted, QUESTION, OPTIONS, seed=3)
    assert np.array_equal(_pixels(final.recovered_image), _pixels(expected.recovered_image))
    assert (final.answer, final.option, final.reasoning) == (expected.answer, expected.option, expected.raw_text)
    assert final.answer_label == f"{expected.option} ({OPTIONS['ABC'.index(expected.option)]})"
    baseline = _expected(model, processor, corrupted, QUESTION, OPTIONS, recover=False, seed=3)
    assert final.baseline_option == baseline.option
    assert final.baseline_reasoning == baseline.raw_text

    before_answer = [s for s in states if s.answer is None]
    assert final.total_steps == 49 and final.previews >= 2
    previews = [s for s in before_answer if s.recovered_image is not None]
    assert previews and previews[0].step < 49  # an intermediate preview came before the end of denoising
    assert not np.array_equal(_pixels(previews[0].recovered_image), _pixels(expected.recovered_image))
    streamed = [s.reasoning for s in before_answer if s.reasoning]
    assert len(streamed) >= 2 and all(expected.raw_text.startswith(text.strip()) for text in streamed)  # token by token


def test_closing_the_stream_stops_the_model(tinyworld, monkeypatch):
    model, processor = tinyworld
    steps = []
    predict_velocity = model.predict_velocity

    def slow_predict_velocity(*args, **kwargs):
        steps.append(time.monotonic())
        time.sleep(0.02)
        return predict_velocity(*args, **kwargs)

    monkeypatch.setattr(model, "predict_velocity", slow_predict_velocity)
    stream = stream_demo(model, processor, DemoRequest(image=CORRUPTED, question=QUESTION, options=OPTIONS))
    next(stream)  # the input image
    stream.close()
    time.sleep(0.5)
    count = len(steps)
    time.sleep(0.3)
    assert len(steps) == count < 49  # the worker stopped at its next step instead of finishing recovery


@pytest.mark.parametrize(
    "change, message",
    [
        ({"image": None}, "No image: upload an image or pick one of the examples"),
        ({"image": Image.new("RGB", (1, 1))}, r"The image is 1×1 pixels, too small to recover: upload one of at least 16×16"),
        ({"image": ROOT / "pyproject.toml"}, "The input is not a readable image"),
        ({"question": "   "}, "The question is empty"),
        ({"options": "\n \n"}, r"Got 0 option\(s\): give at least two answer options, one per line"),
        ({"options": ["only"]}, r"Got 1 option\(s\)"),
        ({"corruption": "imagenet_c/fogg"}, "unknown corruption 'imagenet_c/fogg'; did you mean"),
        ({"corruption": "imagenet_c/fog", "level": "extreme"}, "Unknown corruption level 'extreme'"),
        ({"seed": -1}, "The seed must be a whole number ≥ 0, got -1"),
        ({"seed": 1.5}, "The seed must be a whole number ≥ 0, got 1.5"),
        ({"recover_kwargs": {"cfg_renorm_type": "everything"}}, "cfg_renorm_type must be 'global', 'channel' or 'text_channel'"),
        ({"recover_kwargs": {"num_inference_steps": 2.5}}, "num_inference_steps must be a whole number, got 2.5"),
        ({"answer_kwargs": {"max_new_tokens": 0}}, "max_new_tokens must be a whole number ≥ 1, got 0"),
        ({"answer_kwargs": {"do_sample": True, "temperature": 0.0}}, "temperature must be > 0 when sampling"),
    ],
)  # fmt: skip
def test_bad_inputs_are_one_clear_line_before_any_model_work(tinyworld, monkeypatch, change, message):
    model, processor = tinyworld
    monkeypatch.setattr(model, "answer", lambda *a, **k: pytest.fail("the model ran"))
    fields = {"image": CORRUPTED, "question": QUESTION, "options": OPTIONS, **change}
    with pytest.raises(DemoInputError, match=message):
        next(stream_demo(model, processor, DemoRequest(**fields)))


def test_controls_have_the_names_and_defaults_of_recover_and_answer(tinyworld):
    from robust_u1.configuration_recovery import RecoveryConfig
    from robust_u1.demo import build_demo
    from robust_u1.generation_robust_u1 import RobustU1GenerationMixin

    model, processor = tinyworld
    demo = build_demo(model, processor)
    values = {getattr(block, "label", None): getattr(block, "value", None) for block in demo.blocks.values()}
    official = RecoveryConfig()
    answer = inspect.signature(RobustU1GenerationMixin.answer).parameters
    assert recover_defaults(model)["num_inference_steps"] == official.num_inference_steps == 50
    expected = {
        "seed": 0,
        "cfg_text_scale": official.cfg_text_scale,
        "cfg_img_scale": official.cfg_img_scale,
        "cfg_interval (start)": official.cfg_interval[0],
        "cfg_interval (end)": official.cfg_interval[1],
        "cfg_renorm_type": official.cfg_renorm_type,
        "cfg_renorm_min": official.cfg_renorm_min,
        "num_inference_steps (timesteps)": official.num_inference_steps,
        "timestep_shift": official.sampling_shift,
        "do_sample (sample reasoning tokens)": answer["do_sample"].default,
        "max_new_tokens (max reasoning tokens)": answer["max_new_tokens"].default,
        "temperature": answer["temperature"].default,
    }
    assert {label: values[label] for label in expected} == expected
    assert list(expected.values()) == DEFAULT_CONTROLS
    assert "Advanced inference controls" in values
    assert not list((ROOT / "robust_u1" / "demo").glob("*.pyi"))  # building the app writes nothing into the package


# -- the served app ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tinyworld):
    """The app on 127.0.0.1 (its own model copy, 20 ms slower per denoising step as a large model is,
    so that previews and the queue are observable); records when each answer() ran."""
    pytest.importorskip("gradio")
    from robust_u1.demo import launch_demo
    from robust_u1.tinyworld import load_tinyworld

    model, processor = load_tinyworld()
    runs, predict_velocity, answer = [], model.predict_velocity, model.answer

    def slow_predict_velocity(*args, **kwargs):
        time.sleep(0.02)
        return predict_velocity(*args, **kwargs)

    def timed_answer(*args, **kwargs):
        start = time.monotonic()
        try:
            return answer(*args, **kwargs)
        finally:
            runs.append((start, time.monotonic(), args[1]))

    model.predict_velocity, model.answer = slow_predict_velocity, timed_answer
    demo = launch_demo(model, processor, host="127.0.0.1", port=_free_port(), concurrency=1, prevent_thread_lock=True)
    demo.runs = runs
    yield demo
    demo.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _predict_args(image, question, options, compare=False):
    from gradio_client import handle_file

    return [handle_file(str(image)), "none", "mid", question, "\n".join(options), compare, *DEFAULT_CONTROLS]


def test_two_clients_at_once_get_their_own_results_and_the_second_waits(served, tinyworld):
    from gradio_client import Client
    from gradio_client.utils import Status

    model, processor = tinyworld
    first, second = Client(served.local_url, verbose=False), Client(served.local_url, verbose=False)
    served.runs.clear()
    job1 = first.submit(*_predict_args(CORRUPTED, QUESTION, OPTIONS), api_name="/answer")
    job2 = second.submit(*_predict_args(CLEAN, COUNT_QUESTION, COUNT_OPTIONS), api_name="/answer")
    codes = {QUESTION: set(), COUNT_QUESTION: set()}
    while not (job1.done() and job2.done()):
        codes[QUESTION].add(job1.status().code)
        codes[COUNT_QUESTION].add(job2.status().code)
        time.sleep(0.01)
    result1, result2 = job1.result(timeout=120), job2.result(timeout=120)

    expected1 = _expected(model, processor, Image.open(CORRUPTED).convert("RGB"), QUESTION, OPTIONS)
    expected2 = _expected(model, processor, Image.open(CLEAN).convert("RGB"), COUNT_QUESTION, COUNT_OPTIONS)
    assert expected1.option != expected2.option or expected1.raw_text != expected2.raw_text
    for result, expected, options in ((result1, expected1, OPTIONS), (result2, expected2, COUNT_OPTIONS)):
        assert result[4] == f"{expected.option} ({options['ABCD'.index(expected.option)]})"
        assert result[3] == expected.raw_text
        assert np.array_equal(_pixels(result[1]), _pixels(expected.recovered_image))
    (start1, end1, ran_first), (start2, end2, ran_second) = sorted(served.runs)
    assert {ran_first, ran_second} == {QUESTION, COUNT_QUESTION}
    assert end1 <= start2  # the model never ran both at once ...
    assert Status.IN_QUEUE in codes[ran_second]  # ... the client served second waited in the queue


def test_space_folder_builds_the_demo(monkeypatch):
    pytest.importorskip("gradio")
    from huggingface_hub import metadata_load

    space = ROOT / "examples" / "space"
    meta = metadata_load(space / "README.md")
    assert (meta["sdk"], meta["app_file"]) == ("gradio", "app.py")
    import gradio

    assert meta["sdk_version"].split(".")[0] == gradio.__version__.split(".")[0]
    requirements = [line for line in (space / "requirements.txt").read_text().splitlines() if line and not line.startswith("#")]
    assert requirements == ["robust-u1[demo]>=0.1.0"]

    namespace = runpy.run_path(str(space / meta["app_file"]), run_name="space_app")  # imports and builds, no launch
    demo = namespace["demo"]
    assert isinstance(demo, gradio.Blocks)
    assert any(getattr(fn, "api_name", None) == "answer" for fn in demo.fns.values())


# -- the CLI -------------------------------------------------------------------------------------


def test_cli_demo_bad_concurrency_and_missing_gradio_are_one_line(capsys, monkeypatch):
    from robust_u1.cli import main

    assert main(["demo", "--concurrency", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--concurrency must be at least 1" in err
    monkeypatch.setitem(sys.modules, "gradio", None)  # what `import gradio` sees when it is not installed
    assert main(["demo"]) == 2
    err = capsys.readouterr().err
    assert err == 'robust-u1 demo: error: the demo needs Gradio: pip install "robust-u1[demo]"\n'


def test_cli_demo_serves_the_endpoint_to_gradio_client(tinyworld, monkeypatch):
    pytest.importorskip("gradio")
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    import robust_u1.demo.app as app
    from robust_u1.cli import main

    launched, launch_demo = [], app.launch_demo

    def launch_without_blocking(*args, **kwargs):  # the command serves until Ctrl+C; the test needs it back
        launched.append(launch_demo(*args, **{**kwargs, "prevent_thread_lock": True}))
        return launched[-1]

    monkeypatch.setattr(app, "launch_demo", launch_without_blocking)
    port = _free_port()
    assert main(["demo", "--port", str(port), "--concurrency", "2"]) == 0
    demo = launched[0]
    try:
        assert demo.local_url == f"http://127.0.0.1:{port}/"
        assert demo._queue.default_concurrency_limit == 2
        client = Client(demo.local_url, verbose=False)
        result = client.predict(*_predict_args(CORRUPTED, QUESTION, OPTIONS, compare=True), api_name="/answer")
        shown, recovered, status, reasoning, answer, baseline, baseline_reasoning = result
        model, processor = tinyworld
        corrupted = Image.open(CORRUPTED).convert("RGB")
        expected = _expected(model, processor, corrupted, QUESTION, OPTIONS)
        expected_baseline = _expected(model, processor, corrupted, QUESTION, OPTIONS, recover=False)
        assert (status, answer, reasoning) == ("Done.", "B (square)", expected.raw_text)  # the README's example
        assert (baseline, baseline_reasoning) == ("C (triangle)", expected_baseline.raw_text)
        assert np.array_equal(_pixels(shown), _pixels(corrupted))
        assert np.array_equal(_pixels(recovered), _pixels(expected.recovered_image))
        with pytest.raises(AppError, match="The question is empty: type a question about the image"):
            client.predict(*_predict_args(CORRUPTED, " ", OPTIONS), api_name="/answer")
    finally:
        demo.close()


# -- the page in a real browser ------------------------------------------------------------------


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:  # .ci/run installs Debian's package
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    return path


RECORD_PREVIEWS = """() => {
  window.__recovered = [];
  new MutationObserver(() => {
    const img = document.querySelector('#recovered img');
    const answer = document.querySelector('#answer textarea, #answer input');
    if (img && img.src && !window.__recovered.some(seen => seen.src === img.src))
      window.__recovered.push({src: img.src, answered: answer.value.length > 0});
  }).observe(document.body, {subtree: true, childList: true, attributes: true});
}"""


def test_the_page_in_a_real_browser(served, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    chromium = _chromium()
    screenshot = ROOT / "outputs" / "demo.png"
    screenshot.parent.mkdir(exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(30_000)
            page.goto(served.local_url)
            page.wait_for_selector("#run")
            page.evaluate(RECORD_PREVIEWS)
            page.set_input_files("#input-image input[type=file]", str(CORRUPTED))
            page.fill("#question textarea", QUESTION)
            page.fill("#options textarea", "\n".join(OPTIONS))
            page.check("#compare input")
            page.click("#run")
            page.wait_for_function("() => document.querySelector('#status textarea').value === 'Done.'", timeout=60_000)

            assert page.input_value("#answer textarea") == "B (square)"
            assert page.input_value("#baseline textarea") == "C (triangle)"
            assert "The red shape is a square" in page.input_value("#reasoning textarea")
            width, height = page.evaluate("() => { const i = document.querySelector('#recovered img'); return [i.naturalWidth, i.naturalHeight] }")
            assert (width, height) == (32, 32)  # the recovered image is displayed
            seen = page.evaluate("window.__recovered")
            final = page.evaluate("document.querySelector('#recovered img').src")
            intermediate = [s for s in seen if s["src"] != final and not s["answered"]]
            assert intermediate, f"no intermediate preview was displayed before the answer: {seen}"
            page.screenshot(path=str(screenshot), full_page=True)

            not_an_image = tmp_path / "photo.png"
            not_an_image.write_text("this is not an image")
            page.set_input_files("#input-image input[type=file]", str(not_an_image))
            page.wait_for_selector("text=photo.png is not an image Robust-U1 can read (UnidentifiedImageError): upload a PNG, JPEG or WebP image.")
        finally:
            browser.close()
