"""Checkpoint loading: official layout, conversion, HF round trip, clear errors, dtype."""

import re
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from robust_u1 import RobustU1ForConditionalGeneration, convert_bagel_checkpoint

from helpers import recover_latent


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


# -- strict loading of the Hugging Face layout (issue 12 item 10) -----------------------------------


@pytest.fixture(scope="module")
def hf_folder(parity_dir, tmp_path_factory):
    return convert_bagel_checkpoint(parity_dir, tmp_path_factory.mktemp("hf") / "bagel-tiny-hf")


def _edited_hf_copy(hf_folder, tmp_path, edit):
    folder = tmp_path / "edited"
    shutil.copytree(hf_folder, folder)
    state = load_file(str(folder / "model.safetensors"))
    edit(state)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


@pytest.mark.parametrize("key", ["llm2vae.weight", "language_model.model.layers.0.self_attn.q_proj.weight"])
def test_partial_hf_checkpoint_is_an_error_unless_strict_false(hf_folder, tmp_path, key):
    folder = _edited_hf_copy(hf_folder, tmp_path, lambda s: s.pop(key))
    with pytest.raises(ValueError, match=rf"1 key\(s\) missing: {re.escape(key)}\. .*strict=False"):
        RobustU1ForConditionalGeneration.from_pretrained(folder)
    partial = RobustU1ForConditionalGeneration.from_pretrained(folder, strict=False)
    full = RobustU1ForConditionalGeneration.from_pretrained(hf_folder)
    assert torch.isfinite(partial.get_parameter(key)).all()
    assert not torch.equal(partial.get_parameter(key), full.get_parameter(key))  # initialised, not loaded
    assert torch.equal(partial.vae2llm.weight, full.vae2llm.weight)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.__setitem__("extra.weight", torch.zeros(1)), "unexpected: extra.weight"),
        (lambda s: s.__setitem__("vae2llm.bias", torch.zeros(3)), "vae2llm.bias: checkpoint (3,) vs model (64,)"),
    ],
)
def test_hf_checkpoint_with_foreign_keys_is_an_error(hf_folder, tmp_path, edit, message):
    folder = _edited_hf_copy(hf_folder, tmp_path, edit)
    for strict in (True, False):  # strict=False accepts missing keys only
        with pytest.raises(ValueError, match=re.escape(message)):
            RobustU1ForConditionalGeneration.from_pretrained(folder, strict=strict)


def test_partial_official_checkpoint_loads_with_strict_false(parity_dir, tmp_path):
    folder = _broken_copy(parity_dir, tmp_path, lambda s: s.pop("llm2vae.weight"))
    model = RobustU1ForConditionalGeneration.from_pretrained(folder, strict=False)
    reference = load_file(str(parity_dir / "ema.safetensors"))
    assert model.llm2vae.weight.device.type == "cpu" and torch.isfinite(model.llm2vae.weight).all()
    assert model.llm2vae.weight.std() > 0
    assert torch.equal(model.vae2llm.weight, reference["vae2llm.weight"])


# -- unclear errors of issue 12: one line naming the path / file -------------------------------------


@pytest.mark.parametrize("name", ["./no-such-model", "/tmp/no/such/model", "checkpoints\\run-1", "my model"])
def test_local_path_typo_names_the_folder(name):
    with pytest.raises(OSError, match=rf"^No such folder: {re.escape(name)} \(and it is not a Hub repository id either\)"):
        RobustU1ForConditionalGeneration.from_pretrained(name)


def test_truncated_safetensors_are_named(parity_dir, hf_folder, tmp_path):
    official = tmp_path / "official"
    shutil.copytree(parity_dir, official)
    hf = tmp_path / "hf"
    shutil.copytree(hf_folder, hf)
    for path in (official / "ema.safetensors", official / "ae.safetensors", hf / "model.safetensors"):
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(OSError, match=rf"{re.escape(str(path))} is not a readable safetensors file .*truncated"):
            RobustU1ForConditionalGeneration.from_pretrained(path.parent)
        path.write_bytes(data)


@pytest.mark.parametrize("name", ["llm_config.json", "vit_config.json", "bagel_config.json"])
def test_invalid_official_config_is_named(parity_dir, tmp_path, name):
    folder = tmp_path / "official"
    shutil.copytree(parity_dir, folder)
    (folder / name).write_text('{"hidden_size": 64,')
    with pytest.raises(ValueError, match=rf"{re.escape(str(folder / name))} is not valid JSON"):
        RobustU1ForConditionalGeneration.from_pretrained(folder)


def test_config_without_weights_names_the_missing_file(hf_folder, tmp_path):
    folder = tmp_path / "config-only"
    folder.mkdir()
    shutil.copy(hf_folder / "config.json", folder)
    with pytest.raises(FileNotFoundError, match=r"has config.json but no weights: expected model.safetensors or model.safetensors.index.json"):
        RobustU1ForConditionalGeneration.from_pretrained(folder)
    shutil.copy(hf_folder / "model.safetensors", folder / "model-00001-of-00002.safetensors")
    (folder / "model.safetensors.index.json").write_text(
        '{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}'
    )
    with pytest.raises(FileNotFoundError, match=r"lacks model-00002-of-00002.safetensors, listed in model.safetensors.index.json"):
        RobustU1ForConditionalGeneration.from_pretrained(folder)


def test_modeling_and_conversion_share_a_loading_module_without_a_cycle():
    """modeling → loading ← convert: the loading module imports neither (no modeling ↔ convert cycle)."""
    import ast
    from pathlib import Path

    import robust_u1

    root = Path(robust_u1.__file__).parent

    def imported(name):
        tree = ast.parse((root / f"{name}.py").read_text())
        return {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 1}

    assert "loading" in imported("modeling_robust_u1") and "loading" in imported("convert_bagel_weights_to_hf")
    assert "convert_bagel_weights_to_hf" not in imported("modeling_robust_u1")
    assert not {"modeling_robust_u1", "convert_bagel_weights_to_hf"} & imported("loading")


def test_conversion_replaces_an_existing_output_only_when_complete(parity_dir, tmp_path, monkeypatch):
    out = tmp_path / "hf"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    convert_bagel_checkpoint(parity_dir, out)
    assert not (out / "stale.txt").exists() and (out / "model.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]  # no staging folder left

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(RobustU1ForConditionalGeneration, "save_pretrained", fail)
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(OSError, match="disk full"):
        convert_bagel_checkpoint(parity_dir, out)
    assert (out / "model.safetensors").read_bytes() == before  # the previous conversion is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]
