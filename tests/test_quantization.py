"""4-/8-bit weights through transformers' quantizers (issue 14 item 2): bitsandbytes NF4 and INT8 and
torchao int8 weight-only, all run on this CPU. Quantized models load, run recover() and answer(),
shrink the quantized Linear weights (measured against their bf16 size) and stay close to fp32."""

import numpy as np
import pytest
import torch
from PIL import Image

from robust_u1 import RobustU1ForConditionalGeneration
from robust_u1.loading import quantization_config_for
from robust_u1.packing import TextBlock, VitImageBlock
from robust_u1.tiny import SPECIAL_TOKENS, tiny_config, tiny_processor

pytest.importorskip("bitsandbytes")
pytest.importorskip("torchao")
pytestmark = pytest.mark.usefixtures("single_thread")

# Measured on this CPU (seeded random 256-wide model, fp32 reference; recover() pixels in [0, 1] and
# first-token logits relative to their largest magnitude): nf4 5.9e-2 / 1.6e-1, int8 6.8e-3 / 1.5e-2,
# int8-torchao 3.6e-3 / 1.3e-2 (random weights amplify quantization noise more than trained ones).
# Tolerances are about twice the measured deviations; a broken path (black image, wrong layer) is > 0.3.
MODES = {  # mode: (minimum shrink against bf16, max |Δ| of recover() pixels, max relative Δ of logits)
    "nf4": (3.5, 0.12, 0.3),
    "int8": (1.9, 0.015, 0.03),
    "int8-torchao": (1.9, 0.008, 0.03),
}


def quantized_bytes(module: torch.nn.Module) -> int | None:
    """Bytes a quantized Linear keeps for its weight (codes plus scales / absmax / code table); None if not quantized."""
    weight = getattr(module, "weight", None)
    state = getattr(weight, "quant_state", None)
    if state is not None:  # bitsandbytes 4-bit
        return weight.data.nbytes + state.absmax.nbytes + (state.code.nbytes if state.code is not None else 0)
    if getattr(weight, "SCB", None) is not None:  # bitsandbytes 8-bit: int8 codes + one scale per row
        return weight.data.nbytes + weight.SCB.nbytes
    if hasattr(weight, "__tensor_flatten__"):  # a torchao tensor subclass: its inner tensors
        names, _ = weight.__tensor_flatten__()
        return sum(getattr(weight, name).nbytes for name in names)
    return None


@pytest.fixture(scope="module")
def wide_checkpoint(tmp_path_factory):
    """A random model 256 wide (4-bit blocks of 64 and per-row scales weigh as on real widths), saved in fp32."""
    processor = tiny_processor()
    ids = processor.tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    special = dict(zip(("bos_token_id", "eos_token_id", "start_of_image_token_id", "end_of_image_token_id"), ids))
    config = tiny_config(len(processor.tokenizer), special)
    config.text_config.hidden_size, config.text_config.intermediate_size = 256, 512
    config.vision_config.hidden_size, config.vision_config.intermediate_size = 128, 256
    torch.manual_seed(0)
    model = RobustU1ForConditionalGeneration(config).eval()
    folder = tmp_path_factory.mktemp("wide") / "model"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def image():
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))


@torch.no_grad()
def outputs(model):
    restored = model.recover(image(), num_inference_steps=4, output_type="pt", generator=torch.Generator().manual_seed(0), progress=False)
    pixels = model.processor.image_processor.edit_pixel_values([image()])[1][0]
    cache = model.new_cache(1)
    model.prefill(cache, [VitImageBlock(pixels)])
    model.prefill(cache, [TextBlock(model.processor.tokenizer.encode("What is shown?"))])
    logits = model.next_token_logits(cache, torch.tensor([model.config.bos_token_id]))
    return restored, logits


@pytest.fixture(scope="module")
def fp32_outputs(wide_checkpoint):
    return outputs(RobustU1ForConditionalGeneration.from_pretrained(wide_checkpoint))


@pytest.mark.parametrize("mode", list(MODES))
def test_quantized_model_is_smaller_and_close(wide_checkpoint, fp32_outputs, mode):
    min_shrink, pixel_tol, logit_tol = MODES[mode]
    reference = RobustU1ForConditionalGeneration.from_pretrained(wide_checkpoint)
    model = RobustU1ForConditionalGeneration.from_pretrained(
        wide_checkpoint, quantization_config=quantization_config_for(mode, compute_dtype=torch.float32)
    )
    quantized = {name: quantized_bytes(m) for name, m in model.named_modules() if quantized_bytes(m) is not None}
    expected = {
        name for name, m in reference.named_modules()
        if isinstance(m, torch.nn.Linear) and not any(name == s or name.startswith(s + ".") for s in model._skip_modules_for_quantization)
    }  # fmt: skip
    assert set(quantized) == expected  # every decoder / ViT-layer Linear, none of the documented skips
    assert {"language_model.model.layers.0.self_attn.q_proj", "vit_model.vision_model.encoder.layers.1.mlp.fc2"} <= expected
    bf16_bytes = sum(reference.get_submodule(name).weight.numel() * 2 for name in quantized)
    shrink = bf16_bytes / sum(quantized.values())
    restored, logits = outputs(model)
    ref_restored, ref_logits = fp32_outputs
    pixel_dev = (restored - ref_restored).abs().max().item()
    logit_dev = ((logits - ref_logits).abs().max() / ref_logits.abs().max()).item()
    print(f"\n{mode}: {len(quantized)} Linear weights shrink {shrink:.2f}x against bf16 ({2 * shrink:.2f}x against fp32); "
          f"recover() max |Δ| {pixel_dev:.1e}, logits max relative Δ {logit_dev:.1e}")  # fmt: skip
    assert shrink >= min_shrink
    assert pixel_dev <= pixel_tol and logit_dev <= logit_tol
    result = model.answer(image(), "What is shown?", options=["a", "b"], max_new_tokens=3,
                          recover_kwargs={"num_inference_steps": 2, "progress": False})  # fmt: skip
    assert result.recovered_image.size == image().size and isinstance(result.raw_text, str)


def test_official_layout_quantizes_too(parity_dir, parity_model, golden):
    from test_device_map import recover_latent

    model = RobustU1ForConditionalGeneration.from_pretrained(parity_dir, quantization_config=quantization_config_for("int8-torchao"))
    assert quantized_bytes(model.language_model.model.layers[0].mlp.up_proj) is not None
    assert quantized_bytes(model.llm2vae) is None and quantized_bytes(model.language_model.lm_head) is None
    deviation = (recover_latent(model, golden) - recover_latent(parity_model, golden)).abs().max().item()
    print(f"\nofficial layout, int8-torchao: recover() latent max |Δ| {deviation:.1e}")
    assert deviation < 0.15  # measured 7.5e-2 (latents of unit scale)


def test_missing_quantization_package_is_one_line(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(ValueError, match=r"^--quantize nf4 needs the bitsandbytes package: pip install 'robust-u1\[quantization\]'\.$"):
        quantization_config_for("nf4")


def test_old_bitsandbytes_on_a_cpu_is_one_line(monkeypatch):
    import importlib.metadata

    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.45.0" if name == "bitsandbytes" else real(name))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"^--quantize int8 on a CPU needs bitsandbytes ≥ 0.50 \(installed: 0.45.0; older releases quantize on a CUDA GPU only\)"):
        quantization_config_for("int8")
