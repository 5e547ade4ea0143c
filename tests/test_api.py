"""The user-facing API on a tiny random model: recover(), generate(), answer(), processor, pipeline."""

import numpy as np
import pytest
import torch
from PIL import Image

from robust_u1 import TextBlock, VitImageBlock
from robust_u1.processing_robust_u1 import to_rgb_image
from robust_u1.tiny import tiny_random_model

FAST = dict(num_inference_steps=4, progress=False)


@pytest.fixture(scope="module")
def tiny():
    return tiny_random_model(seed=0)


def picture(width, height, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def seeded(seed):
    return torch.Generator().manual_seed(seed)


def test_batch_of_different_sizes_equals_single_calls(tiny):
    model, _ = tiny
    images = [picture(64, 48, 1), picture(40, 72, 2)]
    batched = model.recover(images, generator=[seeded(1), seeded(2)], output_type="pt", **FAST)
    for image, seed, out in zip(images, (1, 2), batched):
        single = model.recover(image, generator=seeded(seed), output_type="pt", **FAST)
        assert single.shape == out.shape
        torch.testing.assert_close(single, out, atol=1e-5, rtol=1e-5)
    assert batched[0].shape[1:] == (48, 64) and batched[1].shape[1:] == (64, 32)  # VAE rule, Python rounding


def test_output_types_agree_and_seed_is_reproducible(tiny):
    model, _ = tiny
    image = picture(48, 32)
    outputs = {kind: model.recover(image, generator=seeded(3), output_type=kind, **FAST) for kind in ("pil", "np", "pt", "latent")}
    pt = outputs["pt"]
    assert isinstance(outputs["pil"], Image.Image) and outputs["pil"].size == (48, 32)
    np.testing.assert_allclose(outputs["np"], pt.permute(1, 2, 0).numpy(), atol=1e-6)
    assert np.array_equal(np.asarray(outputs["pil"]), (pt * 255).to(torch.uint8).permute(1, 2, 0).numpy())
    decoded = (model.decode_latents(outputs["latent"][None])[0] * 0.5 + 0.5).clamp(0, 1)
    torch.testing.assert_close(decoded, pt, atol=1e-5, rtol=1e-5)
    again = model.recover(image, generator=seeded(3), output_type="pt", **FAST)
    assert torch.equal(again, pt)
    other = model.recover(image, generator=seeded(4), output_type="pt", **FAST)
    assert not torch.equal(other, pt)


def test_prompt_as_token_ids_equals_prompt_as_text(tiny):
    model, processor = tiny
    image = picture(32, 32)
    text = "Please restore this corrupted image to its clean version."
    by_text = model.recover(image, prompt=text, generator=seeded(0), output_type="pt", **FAST)
    by_ids = model.recover(image, prompt=processor.encode_text(text).tolist(), generator=seeded(0), output_type="pt", **FAST)
    assert torch.equal(by_text, by_ids)


def test_cfg_branches_batched_equal_separate_calls(tiny):
    """The three guidance contexts run as one forward; each branch alone gives the same velocity."""
    model, _ = tiny
    from robust_u1.sampling import GuidanceConfig, guided_velocity

    inputs = model.prepare_edit_inputs([picture(32, 48)], prompt=[5, 6, 7])
    contexts = model.build_edit_contexts(inputs, sample_posterior=False)
    x = [torch.randn(contexts.grids[0][0] * contexts.grids[0][1], model.config.patch_latent_dim, generator=seeded(0))]
    guidance = GuidanceConfig()
    (batched,) = model.guided_velocities(contexts, x, 0.7, guidance)
    separate = [model.predict_velocity(c, x, contexts.grids, 0.7)[0] for c in (contexts.gen, contexts.cfg_text, contexts.cfg_img)]
    torch.testing.assert_close(batched, guided_velocity(*separate, guidance), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "I", "F", "1"])
def test_every_pil_mode_is_processed(tiny, mode):
    model, _ = tiny
    source = picture(40, 30)
    sixteen_bit = np.asarray(source.convert("L"), dtype=np.uint16) * 257
    image = source.convert(mode) if mode not in ("I;16", "I", "F") else Image.fromarray(
        sixteen_bit.astype(np.uint16) if mode == "I;16" else sixteen_bit.astype(np.int32) if mode == "I"
        else (sixteen_bit / 65535).astype(np.float32)  # float images are 0-1 by the input rule
    )  # fmt: skip
    assert image.mode == mode
    rgb = to_rgb_image(image)
    assert rgb.mode == "RGB" and rgb.size == (40, 30)
    out = model.recover(image, generator=seeded(0), **FAST)
    assert out.size == (48, 32)  # (40, 30) → the VAE resize rule (min side 32, stride 16)


def test_transparent_pixels_become_white():
    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    assert to_rgb_image(rgba).getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize(
    "image",
    [np.zeros((20, 30), np.uint8), np.ones((20, 30, 3), np.float32), np.zeros((20, 30, 4), np.uint8),
     torch.rand(3, 20, 30), torch.randint(0, 255, (1, 20, 30), dtype=torch.uint8)],
    ids=["np-gray", "np-float", "np-rgba", "pt-float", "pt-uint8-gray"],
)  # fmt: skip
def test_arrays_and_tensors_are_processed(image):
    assert to_rgb_image(image).size == (30, 20)


@pytest.mark.parametrize("size", [(1, 1), (15, 900), (2000, 30)])
def test_extreme_sizes_are_processed(tiny, size):
    model, processor = tiny
    image = picture(*size)
    out = model.recover(image, generator=seeded(0), **FAST)
    vae = processor.image_processor.vae_pixel_values(image)
    assert out.size == (vae.shape[2], vae.shape[1])
    assert vae.shape[1] % 16 == 0 and vae.shape[2] % 16 == 0


@pytest.mark.parametrize(
    "bad, error, message",
    [
        ("does/not/exist.png", ValueError, "Image file not found"),
        (np.zeros((8, 8, 5), np.uint8), ValueError, r"\(H, W\) or \(H, W, C\) with C in 1-4; got \(8, 8, 5\)"),
        (np.zeros((4, 4, 3), np.int64), TypeError, "unsupported array dtype int64"),
        (12, TypeError, "Unsupported image type int"),
    ],
)
def test_bad_images_are_clear_errors(bad, error, message):
    from pathlib import Path

    with pytest.raises(error, match=message):
        to_rgb_image(Path(bad) if isinstance(bad, str) else bad)


def test_truncated_file_is_a_clear_error(tmp_path):
    from pathlib import Path

    path = tmp_path / "cut.png"
    picture(32, 32).save(path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="complete image file"):
        to_rgb_image(Path(path))


def test_generate_batch_with_different_structures_equals_single(tiny):
    model, processor = tiny
    first = [picture(28, 28), "What is this?"]
    second = ["No image here, just a longer question?"]
    batched = model.generate([first, second], max_new_tokens=6)
    for items, row in zip((first, second), batched):
        single = model.generate([items], max_new_tokens=6)[0]
        assert torch.equal(single, row[: len(single)])


def test_generate_stops_each_sequence_at_eos_and_pads(tiny, monkeypatch):
    model, _ = tiny
    eos, vocab = model.config.eos_token_id, model.config.text_config.vocab_size
    calls = {"n": 0}

    def scripted_logits(cache, tokens):
        step = calls["n"]
        calls["n"] += 1
        logits = torch.zeros(len(tokens), vocab)
        logits[:, 7] = 1.0
        if step >= 2:
            logits[0, eos] = 2.0  # sequence 0 ends at step 2, sequence 1 at step 4
        if step >= 4:
            logits[1, eos] = 2.0
        return logits

    monkeypatch.setattr(model, "next_token_logits", scripted_logits)
    ids = model.generate([["a"], ["b"]], max_new_tokens=10)
    assert ids.tolist() == [[7, 7, eos, eos, eos], [7, 7, 7, 7, eos]]


def test_sampling_is_reproducible_with_a_generator(tiny):
    model, _ = tiny
    kwargs = dict(max_new_tokens=5, do_sample=True, temperature=0.7, top_p=0.9, top_k=20)
    a = model.generate(["hi"], generator=seeded(1), **kwargs)
    assert torch.equal(a, model.generate(["hi"], generator=seeded(1), **kwargs))
    assert not torch.equal(a, model.generate(["hi"], generator=seeded(2), max_new_tokens=5, do_sample=True))


def test_generate_accepts_blocks(tiny):
    model, processor = tiny
    pixels = processor.image_processor.vit_pixel_values(picture(28, 28))
    as_items = model.generate([picture(28, 28), "Describe."], max_new_tokens=4)
    as_blocks = model.generate([VitImageBlock(pixels), TextBlock(processor.encode_text("Describe."))], max_new_tokens=4)
    assert torch.equal(as_items, as_blocks)


def test_think_mode_prepends_system_prompt(tiny):
    model, processor = tiny
    blocks = model._as_blocks(["Q"], processor, think=True)
    assert "<think>" in processor.decode(blocks[0].ids, skip_special_tokens=False)


def test_answer_recovers_then_answers(tiny):
    model, _ = tiny
    image = picture(32, 32)
    result = model.answer(image, "Which colour?", options=["red", "blue"], max_new_tokens=4, recover_kwargs={**FAST, "generator": seeded(0)})
    assert isinstance(result.recovered_image, Image.Image) and result.recovered_image.size == (32, 32)
    assert isinstance(result.answer, str)
    baseline = model.answer(image, "Which colour?", options=["red", "blue"], recover=False, max_new_tokens=4)
    assert baseline.recovered_image is None


def test_robust_vqa_pipeline(tiny):
    import robust_u1  # noqa: F401  (registers the task)
    from transformers import pipeline

    model, processor = tiny
    vqa = pipeline("robust-vqa", model=model, device="cpu")
    inputs = [
        {"image": picture(32, 32), "question": "Which colour?", "options": ["red", "blue"]},
        {"image": picture(48, 32, 1), "question": "What is shown?"},
    ]
    outputs = vqa(inputs, max_new_tokens=3, recover_kwargs=FAST)
    assert len(outputs) == 2
    for output in outputs:
        assert set(output) == {"answer", "option", "reasoning", "recovered_image"}
        assert isinstance(output["recovered_image"], Image.Image)
    with pytest.raises(TypeError, match="Unknown robust-vqa arguments"):
        vqa(inputs[0], bogus=1)
    with pytest.raises(ValueError, match='"image" and "question"'):
        vqa({"question": "no image"})


def test_saved_model_loads_with_its_processor(tiny, tmp_path):
    from robust_u1 import RobustU1ForConditionalGeneration

    model, processor = tiny
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = RobustU1ForConditionalGeneration.from_pretrained(tmp_path)
    assert loaded.processor is not None and loaded.processor.image_processor.vae_max_size == 128
    image = picture(32, 32)
    assert torch.equal(
        loaded.recover(image, generator=seeded(0), output_type="pt", **FAST),
        model.recover(image, generator=seeded(0), output_type="pt", **FAST),
    )
