"""Checkpoint loading: official layout, conversion, HF round trip, clear errors, dtype."""

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from robust_u1 import RobustU1ForConditionalGeneration, convert_bagel_checkpoint
from robust_u1.generation_robust_u1 import EditInputs


def recover_latent(model, golden):
    inputs = EditInputs([golden["edit/vae_pixel_values"]], [golden["edit/vit_pixel_values"]], [golden["edit/prompt_ids"]])
    return model.recover(
        inputs, num_inference_steps=4, latents=[golden["edit_full/text_channel/init_noise"]],
        output_type="latent", sample_posterior=False, progress=False,
    )[0]  # fmt: skip


def test_round_trip_is_bit_identical(parity_dir, golden, tmp_path):
    official = RobustU1ForConditionalGeneration.from_pretrained(parity_dir)
    converted_dir = convert_bagel_checkpoint(parity_dir, tmp_path / "hf")
    converted = RobustU1ForConditionalGeneration.from_pretrained(converted_dir)
    converted.save_pretrained(tmp_path / "again", max_shard_size="400KB")  # sharded
    assert len(list((tmp_path / "again").glob("model-*.safetensors"))) > 1
    reloaded = RobustU1ForConditionalGeneration.from_pretrained(tmp_path / "again")
    expected = recover_latent(official, golden)
    for model in (converted, reloaded):
        for name, tensor in official.state_dict().items():
            assert torch.equal(model.state_dict()[name], tensor), name
        assert torch.equal(recover_latent(model, golden), expected)


def test_official_layout_accepts_release_weight_names(parity_dir, golden, tmp_path):
    folder = tmp_path / "robust-u1-release"
    shutil.copytree(parity_dir, folder)
    (folder / "ema.safetensors").rename(folder / "model_bf16.safetensors")
    model = RobustU1ForConditionalGeneration.from_pretrained(folder, dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16
    assert model.language_model.lm_head.weight.dtype == torch.bfloat16
    reference = load_file(str(parity_dir / "ema.safetensors"))["language_model.lm_head.weight"]
    assert torch.equal(model.language_model.lm_head.weight, reference.to(torch.bfloat16))


def _broken_copy(parity_dir, tmp_path, edit):
    folder = tmp_path / "broken"
    shutil.copytree(parity_dir, folder)
    state = load_file(str(folder / "ema.safetensors"))
    edit(state)
    save_file(state, str(folder / "ema.safetensors"))
    return folder


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.pop("llm2vae.weight"), "missing: llm2vae.weight"),
        (lambda s: s.__setitem__("extra.weight", torch.zeros(1)), "unexpected: extra.weight"),
        (lambda s: s.__setitem__("vae2llm.bias", torch.zeros(3)), "vae2llm.bias: checkpoint (3,) vs model (64,)"),
    ],
)
def test_bad_checkpoint_keys_are_named(parity_dir, tmp_path, edit, message):
    folder = _broken_copy(parity_dir, tmp_path, edit)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        RobustU1ForConditionalGeneration.from_pretrained(folder)


def test_missing_weights_file_is_a_clear_error(parity_dir, tmp_path):
    folder = tmp_path / "no-weights"
    shutil.copytree(parity_dir, folder)
    (folder / "ema.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="ema.safetensors, model.safetensors, model_bf16.safetensors"):
        RobustU1ForConditionalGeneration.from_pretrained(folder)


def test_official_load_builds_on_meta_device(parity_dir, monkeypatch):
    """The model is never materialised with random weights before the checkpoint is assigned."""
    import robust_u1.loading as loading

    seen = {}
    original = loading.check_checkpoint_keys

    def spy(model, shapes, source, strict=True):
        seen["devices"] = {p.device.type for p in model.parameters()}
        return original(model, shapes, source, strict)

    monkeypatch.setattr(loading, "check_checkpoint_keys", spy)
    model = RobustU1ForConditionalGeneration.from_pretrained(parity_dir)
    assert seen["devices"] == {"meta"}
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    assert model.language_model.model.rotary_emb.inv_freq.device.type == "cpu"


def test_auto_classes(parity_dir, tmp_path):
    from transformers import AutoConfig, AutoModel

    converted = convert_bagel_checkpoint(parity_dir, tmp_path / "hf")
    assert type(AutoConfig.from_pretrained(converted)).__name__ == "RobustU1Config"
    assert isinstance(AutoModel.from_pretrained(converted), RobustU1ForConditionalGeneration)
