"""generate(streamer=...) with transformers' streamers; processor __call__ / chat template inputs."""

from pathlib import Path
from threading import Thread

import pytest
import torch
from PIL import Image
from transformers import BatchFeature, TextIteratorStreamer
from transformers.generation.streamers import BaseStreamer

from robust_u1.evaluation.prompts import build_mcq_prompt, build_open_prompt
from robust_u1.generation_robust_u1 import THINK_SYSTEM_PROMPT
from robust_u1.processing_robust_u1 import IMAGE_PLACEHOLDER, RobustU1Processor

pytestmark = pytest.mark.usefixtures("single_thread")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
QUESTION = "Which shape is red?"
OPTIONS = ["circle", "square", "triangle"]


@pytest.fixture(scope="module")
def tinyworld():
    from robust_u1.tinyworld import load_tinyworld

    return load_tinyworld()


@pytest.fixture(scope="module")
def corrupted():
    return Image.open(EXAMPLES / "corrupted_example.png").convert("RGB")


@pytest.fixture(scope="module")
def clean():
    return Image.open(EXAMPLES / "clean_example.png").convert("RGB")


class RecordingStreamer(BaseStreamer):
    def __init__(self):
        self.puts, self.ends = [], 0

    def put(self, value):
        self.puts.append(value.clone())

    def end(self):
        self.ends += 1


def _stream_in_thread(target, **kwargs) -> str:
    chunks, errors = [], []

    def run():
        try:
            target(**kwargs)
        except Exception as error:  # noqa: BLE001 - re-raised in the test thread
            errors.append(error)

    thread = Thread(target=run)
    thread.start()
    chunks = list(kwargs["streamer"])
    thread.join()
    if errors:
        raise errors[0]
    return chunks


def test_text_iterator_streamer_in_a_thread_gives_the_decoded_generate_output(tinyworld, corrupted):
    model, processor = tinyworld
    inputs = [corrupted, build_mcq_prompt(QUESTION, OPTIONS)]
    ids = model.generate(inputs, max_new_tokens=64)
    expected = processor.decode(ids[0])
    assert "<ANSWER>" in expected

    streamer = TextIteratorStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=60)
    chunks = _stream_in_thread(model.generate, inputs=inputs, max_new_tokens=64, streamer=streamer)
    assert "".join(chunks) == expected
    assert len([c for c in chunks if c]) > 5  # token by token, not one final chunk


def test_streamer_receives_prompt_then_each_token_then_end(tinyworld, corrupted):
    model, processor = tinyworld
    prompt = build_open_prompt(QUESTION)
    streamer = RecordingStreamer()
    ids = model.generate([corrupted, prompt], max_new_tokens=16, streamer=streamer)
    # transformers' convention: the prompt's ids first ([1, L]), then one token per step, then end()
    assert streamer.puts[0].tolist() == [processor.encode_text(prompt).tolist()]
    assert [p.tolist() for p in streamer.puts[1:]] == [[token] for token in ids[0].tolist()]
    assert streamer.ends == 1


def test_streamer_with_a_batch_is_an_error_before_any_work(tinyworld, corrupted, monkeypatch):
    model, _ = tinyworld
    monkeypatch.setattr(model, "prefill", lambda *a, **k: pytest.fail("work started"))
    with pytest.raises(ValueError, match=r"streamer= takes one sequence .* got a batch of 2"):
        model.generate([[corrupted, "a"], [corrupted, "b"]], streamer=RecordingStreamer())


def test_streamer_ends_when_generation_fails(tinyworld, corrupted, monkeypatch):
    model, processor = tinyworld

    def broken(*args, **kwargs):
        raise RuntimeError("device lost")

    monkeypatch.setattr(model, "next_token_logits", broken)
    streamer = TextIteratorStreamer(processor.tokenizer, skip_prompt=True, timeout=60)
    with pytest.raises(RuntimeError, match="device lost"):
        _stream_in_thread(model.generate, inputs=[corrupted, "Question"], streamer=streamer)


def test_answer_passes_the_streamer_through(tinyworld, corrupted):
    model, processor = tinyworld
    streamer = TextIteratorStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=60)
    results = []
    kwargs = dict(image=corrupted, question=QUESTION, options=OPTIONS, streamer=streamer,
                  recover_kwargs={"num_inference_steps": 10, "progress": False, "generator": torch.Generator().manual_seed(0)})  # fmt: skip
    chunks = _stream_in_thread(lambda **kw: results.append(model.answer(**kw)), **kwargs)
    assert "".join(chunks) == results[0].raw_text
    assert results[0].option in "ABC"


# -- processor: chat template and __call__ ------------------------------------------------------


def _messages(*images, text=QUESTION, role="user"):
    return [{"role": role, "content": [*({"type": "image", "image": image} for image in images), {"type": "text", "text": text}]}]


@pytest.mark.parametrize(
    "template_kwargs, expected",
    [
        ({"options": OPTIONS}, build_mcq_prompt(QUESTION, OPTIONS, recover=True)),
        ({"options": OPTIONS, "recover": False}, build_mcq_prompt(QUESTION, OPTIONS, recover=False)),
        ({"options": {"b": "dog", "D": "cat"}, "hint": "Look closely."}, build_mcq_prompt(QUESTION, {"b": "dog", "D": "cat"}, recover=True, hint="Look closely.")),
        ({}, build_open_prompt(QUESTION, recover=True)),
        ({"recover": False}, build_open_prompt(QUESTION, recover=False)),
    ],
)  # fmt: skip
def test_chat_template_renders_the_official_prompts(tinyworld, corrupted, template_kwargs, expected):
    _, processor = tinyworld
    rendered = processor.apply_chat_template(_messages(corrupted, corrupted), **template_kwargs)
    assert rendered == IMAGE_PLACEHOLDER * 2 + f"<|im_start|>{expected}<|im_end|>"


def test_chat_template_think_system_and_assistant_pieces(tinyworld):
    _, processor = tinyworld
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUESTION}, {"role": "assistant", "content": "red"}]
    rendered = processor.apply_chat_template(messages, think=True, recover=False)
    assert rendered == (
        f"<|im_start|>{THINK_SYSTEM_PROMPT}<|im_end|><|im_start|>Be brief.<|im_end|>"
        f"<|im_start|>{build_open_prompt(QUESTION)}<|im_end|><|im_start|>red<|im_end|>"
    )


def test_processor_call_returns_a_batch_feature(tinyworld, corrupted, clean):
    _, processor = tinyworld
    features = processor(text=IMAGE_PLACEHOLDER + "What is shown?" + IMAGE_PLACEHOLDER, images=[corrupted, clean])
    assert isinstance(features, BatchFeature)
    assert set(features) == {"input_ids", "attention_mask", "pixel_values"}
    token = processor.tokenizer.convert_tokens_to_ids
    marker = [token("<|vision_start|>"), token("<|vision_end|>")]
    text = [token("<|im_start|>"), *processor.encode_text("What is shown?").tolist(), token("<|im_end|>")]
    assert features["input_ids"] == [marker + text + marker]  # the bare text piece is wrapped
    assert len(features["pixel_values"]) == 2
    assert torch.equal(features["pixel_values"][1], processor.image_processor.vit_pixel_values(clean))
    blocks = processor.features_to_blocks(features)
    assert [type(b).__name__ for b in blocks[0]] == ["VitImageBlock", "TextBlock", "VitImageBlock"]
    assert blocks[0][1].ids.tolist() == processor.encode_text("What is shown?").tolist()


def test_processor_call_rejects_a_placeholder_count_mismatch(tinyworld, corrupted):
    _, processor = tinyworld
    with pytest.raises(ValueError, match=r"The text has 1 image placeholder\(s\) .* for 2 image\(s\)"):
        processor(text=IMAGE_PLACEHOLDER + "What?", images=[corrupted, corrupted])
    with pytest.raises(ValueError, match="takes text and images only"):
        processor(text="What?", videos=[corrupted])


def test_generate_from_chat_template_inputs_equals_answer(tinyworld, corrupted):
    model, processor = tinyworld
    result = model.answer(
        corrupted, QUESTION, options=OPTIONS,
        recover_kwargs={"num_inference_steps": 10, "progress": False, "generator": torch.Generator().manual_seed(0)},
    )  # fmt: skip
    messages = _messages(corrupted, result.recovered_image)
    inputs = processor.apply_chat_template(messages, options=OPTIONS, tokenize=True, return_dict=True, return_tensors="pt")
    assert processor.decode(model.generate(**inputs)[0]) == result.raw_text
    assert processor.decode(model.generate(inputs)[0]) == result.raw_text


def test_padded_batch_from_the_processor_equals_single_calls(tinyworld, corrupted, clean):
    model, processor = tinyworld
    texts = [IMAGE_PLACEHOLDER + build_mcq_prompt(QUESTION, OPTIONS), IMAGE_PLACEHOLDER + build_open_prompt("How many shapes are there?")]
    batch = processor(text=texts, images=[corrupted, clean], padding=True, return_tensors="pt")
    assert batch["attention_mask"].min() == 0  # padded
    ids = model.generate(**batch, max_new_tokens=48)
    for row, (text, image) in enumerate(zip(texts, [corrupted, clean])):
        single = model.generate(**processor(text=text, images=image), max_new_tokens=48)
        assert processor.decode(ids[row]) == processor.decode(single[0])


def test_chat_template_is_saved_with_the_processor(tinyworld, tmp_path):
    _, processor = tinyworld
    processor.save_pretrained(tmp_path)
    assert (tmp_path / "chat_template.jinja").read_text() == processor.chat_template
    reloaded = RobustU1Processor.from_pretrained(tmp_path)
    messages = _messages(text=QUESTION)
    assert reloaded.apply_chat_template(messages, options=OPTIONS) == processor.apply_chat_template(messages, options=OPTIONS)


def test_malformed_processor_features_and_missing_inputs_are_errors(tinyworld, corrupted):
    model, processor = tinyworld
    word = processor.encode_text("red").tolist()
    with pytest.raises(ValueError, match=r"sequence 0 have token \d+ outside a <\|im_start\|>…<\|im_end\|> piece"):
        model.generate({"input_ids": [word]})
    features = processor(text=IMAGE_PLACEHOLDER * 2 + "Hi", images=[corrupted, corrupted])
    features["pixel_values"] = features["pixel_values"][:1]
    with pytest.raises(ValueError, match="input_ids have more image placeholders than pixel_values has images"):
        model.generate(**features)
    with pytest.raises(ValueError, match=r"generate\(\) takes a non-empty list .* or a processor.s BatchFeature.*; got NoneType"):
        model.generate()
