"""examples/train_sft.py and examples/train_grpo.py: arguments built from the config dataclasses, short runs."""

import dataclasses
import importlib.util
import sys
from pathlib import Path

import pytest

from robust_u1 import FlowGRPOConfig, FlowMatchingConfig, RecoveryConfig

EXAMPLES = Path(__file__).parents[1] / "examples"


@pytest.fixture(scope="module")
def scripts():
    sys.path.insert(0, str(EXAMPLES))  # train_grpo imports train_sft, as when run from the folder
    try:
        modules = {}
        for name in ("train_sft", "train_grpo"):
            spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
            modules[name] = importlib.util.module_from_spec(spec)
            sys.modules[name] = modules[name]
            spec.loader.exec_module(modules[name])
        yield modules
    finally:
        sys.path.remove(str(EXAMPLES))
        for name in ("train_sft", "train_grpo"):
            sys.modules.pop(name, None)


def test_defaults_are_the_config_classes_except_the_scripts_own(tmp_path, scripts):
    data, rewards, grpo = scripts["train_grpo"].parse_args(["--output_dir", str(tmp_path)])
    reference = FlowGRPOConfig(str(tmp_path), report_to="none")
    own = set(scripts["train_grpo"].SCRIPT_DEFAULTS) | {"output_dir", "logging_dir"}
    for item in dataclasses.fields(FlowGRPOConfig):
        if item.name not in own:
            assert getattr(grpo, item.name) == getattr(reference, item.name), item.name
    assert grpo.num_generations == 16 and grpo.recovery_config == RecoveryConfig(num_inference_steps=16)
    assert data.lora_r == 64 and data.corruptions == "robust_r1"

    data, sft = scripts["train_sft"].parse_args(["--output_dir", str(tmp_path), "--timestep-shift", "1.5"])
    assert sft.timestep_shift == 1.5 and sft.max_steps == 10 and data.lora_r == 0  # the training shift of stage I
    assert FlowMatchingConfig(str(tmp_path)).learning_rate == sft.learning_rate == 2e-5


def test_recovery_flags_reach_the_rollouts(tmp_path, scripts):
    _, _, grpo = scripts["train_grpo"].parse_args(
        ["--output_dir", str(tmp_path), "--num_inference_steps", "8", "--cfg_interval", "0.4", "1", "--timestep-shift", "2"]
    )
    assert grpo.recovery_config == RecoveryConfig(num_inference_steps=8, cfg_interval=(0.4, 1.0), sampling_shift=2.0)
    with pytest.raises(ValueError, match="cfg_text_scale must be a finite number, got nan"):
        scripts["train_grpo"].parse_args(["--output_dir", str(tmp_path), "--cfg_text_scale", "nan"])


def test_short_grpo_run_saves_the_adapter_and_card(tmp_path, scripts):
    output = tmp_path / "run"
    scripts["train_grpo"].main([
        "--output_dir", str(output), "--num_generations", "2", "--per_device_train_batch_size", "2", "--max_steps", "1",
        "--num_inference_steps", "3", "--sde_window_range", "0", "2", "--rewards", "ssim", "--synthetic_images", "2",
        "--lora_r", "4", "--use_cpu", "--save_strategy", "no",
    ])  # fmt: skip
    assert (output / "adapter_model.safetensors").is_file() and "FlowGRPOTrainer" in (output / "README.md").read_text()


def test_short_sft_run_saves_the_model_and_its_recovery_config(tmp_path, scripts):
    output = tmp_path / "run"
    scripts["train_sft"].main(["--output_dir", str(output), "--max_steps", "1", "--synthetic_images", "3", "--use_cpu", "--save_strategy", "no"])
    assert (output / "model.safetensors").is_file() and (output / "recovery_config.json").is_file()
    assert RecoveryConfig.from_pretrained(output) == RecoveryConfig()
