"""Safety of training and inference (issue 12): frozen parts after every loading path, non-finite
rewards / losses, interrupted checkpoints, sequence-length limits, clear errors for bad arguments."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import Trainer

from robust_u1 import FlowGRPOConfig, FlowGRPOTrainer, FlowMatchingConfig, FlowMatchingTrainer, RobustU1ForConditionalGeneration
from robust_u1.flow_grpo_math import grpo_advantages
from robust_u1.reasoning import ReasoningCollator, reasoning_training_arguments
from robust_u1.rewards import RewardFunctionError, compute_rewards
from robust_u1.tiny import tiny_random_model
from robust_u1.trainers.utils import NonFiniteTrainingError, TrainingSafetyCallback

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))
from _sft_run import InOrderTrainer, pairs  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")  # see conftest.py


def fixed_parts(model) -> dict[str, torch.nn.Parameter]:
    """The parameters that never train: the VAE and the two sin-cos position tables."""
    return {
        name: parameter
        for name, parameter in model.named_parameters()
        if ".vae." in f".{name}" or name.endswith(("vit_pos_embed.pos_embed", "latent_pos_embed.pos_embed"))
    }


def assert_frozen(model) -> None:
    parts = fixed_parts(model)
    assert len(parts) > 100  # the VAE's tensors and both tables are there
    assert any("vit_pos_embed" in name for name in parts) and any("latent_pos_embed" in name for name in parts)
    trainable = [name for name, parameter in parts.items() if parameter.requires_grad]
    assert trainable == []


def color_rows(count: int) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(count):
        color = (200, 30, 30) if i % 2 == 0 else (30, 30, 200)
        pixels = np.clip(np.array(color) + rng.integers(-40, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
        rows.append({"image": Image.fromarray(pixels), "question": "What color is the image?",
                     "options": ["red", "blue"], "answer": "AB"[i % 2]})  # fmt: skip
    return rows


def stage_three_trainer(model, processor, out, **kwargs) -> Trainer:
    args = reasoning_training_arguments(
        out, **{**dict(max_steps=3, learning_rate=1e-2, per_device_train_batch_size=2, report_to="none",
                       save_strategy="no", disable_tqdm=True, use_cpu=True, seed=0), **kwargs},
    )  # fmt: skip
    collator = ReasoningCollator(processor, model.config, allow_without_recovery=True)
    return Trainer(model=model, args=args, train_dataset=color_rows(6), data_collator=collator,
                   callbacks=[TrainingSafetyCallback()])  # fmt: skip


def all_finite(tensors) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())


# ----------------------------------------------------------------------------------------------
# Item 5: the VAE and the sin-cos tables stay frozen whatever the loading path
# ----------------------------------------------------------------------------------------------


def test_fixed_parts_are_frozen_after_every_loading_path(parity_dir, tmp_path):
    model, processor = tiny_random_model()
    assert_frozen(model)
    assert_frozen(RobustU1ForConditionalGeneration._from_config(model.config))
    model.save_pretrained(tmp_path / "hf")
    processor.save_pretrained(tmp_path / "hf")
    assert_frozen(RobustU1ForConditionalGeneration.from_pretrained(tmp_path / "hf"))  # was 178 trainable tensors
    assert_frozen(RobustU1ForConditionalGeneration.from_pretrained(parity_dir))  # the official layout

    from robust_u1.tinyworld import load_tinyworld

    assert_frozen(load_tinyworld("sft")[0])


def test_stage_three_with_the_standard_trainer_leaves_fixed_parts_unchanged(tmp_path):
    model, processor = tiny_random_model()
    model.save_pretrained(tmp_path / "hf")
    processor.save_pretrained(tmp_path / "hf")
    model = RobustU1ForConditionalGeneration.from_pretrained(tmp_path / "hf")  # the path that unfroze them
    before = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    model.train()
    stage_three_trainer(model, processor, tmp_path / "run").train()
    after = dict(model.named_parameters())
    frozen = fixed_parts(model)
    changed = [name for name in frozen if not torch.equal(after[name], before[name])]
    assert changed == []
    assert not torch.equal(after["connector.fc1.weight"], before["connector.fc1.weight"])  # training did happen


# ----------------------------------------------------------------------------------------------
# Item 6: non-finite rewards and losses
# ----------------------------------------------------------------------------------------------


def perfect_sample_reward(images, **kwargs):
    """Like a PSNR reward: +inf on a perfect sample."""
    return [math.inf, 1.0, 0.5, 1.0][: len(images)]


def test_infinite_reward_is_unscored_with_a_warning_and_training_stays_finite(tmp_path, caplog):
    model, processor = tiny_random_model()
    before = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    args = FlowGRPOConfig(
        str(tmp_path), num_generations=2, per_device_train_batch_size=4, max_steps=2, learning_rate=1e-3,
        num_inference_steps=4, sde_window_size=1, sde_window_range=(0, 3), report_to=[], save_strategy="no",
        use_cpu=True, disable_tqdm=True, sample_posterior=False, seed=0,
    )  # fmt: skip
    trainer = FlowGRPOTrainer(model, [perfect_sample_reward], args, train_dataset=pairs(2), processing_class=processor)
    with caplog.at_level(logging.WARNING, logger="robust_u1.rewards"):
        trainer.train()
    assert "reward 'perfect_sample_reward': 1 of 4 samples were ±inf" in caplog.text
    parameters = dict(model.named_parameters())
    assert all_finite(parameters.values())
    assert any(not torch.equal(parameters[name], before[name]) for name in parameters)  # the other group trained


def test_infinite_rewards_get_zero_advantage():
    advantages = grpo_advantages(torch.tensor([math.inf, 1.0, 0.0, 2.0, -math.inf, 3.0]), num_generations=2)
    assert torch.isfinite(advantages).all()
    assert advantages[0] == 0 and advantages[1] == 0 and advantages[4] == 0
    assert advantages[2] < 0 < advantages[3]


@pytest.mark.parametrize(
    "outputs, message",
    [
        (["good", "bad"], r"reward function 'bad_reward': returned str 'good' for sample 0; rewards must be numbers"),
        ("ab", r"reward function 'bad_reward': returned a str; it must return a list of one number per sample"),
        (0.5, r"reward function 'bad_reward': returned a float; it must return a list"),
        ([1.0], r"reward function 'bad_reward': returned 1 rewards for a batch of 2"),
    ],
)
def test_malformed_rewards_name_the_function(outputs, message):
    def bad_reward(images, **kwargs):
        return outputs

    with pytest.raises(RewardFunctionError, match=message):
        compute_rewards([bad_reward], images=[object(), object()], prompts=["", ""])


class NaNAfter:
    """Wraps a model's forward so that its loss is NaN from the ``after``-th training call on."""

    def __init__(self, model, after: int):
        self.forward, self.calls, self.after = model.forward, 0, after
        model.forward = self

    def __call__(self, *args, **kwargs):
        output = self.forward(*args, **kwargs)
        self.calls += 1
        if self.calls > self.after:
            output.loss = output.loss * float("nan")
        return output


def test_nan_loss_stops_flow_matching_and_checkpoints_stay_finite(tmp_path):
    model, _ = tiny_random_model()
    NaNAfter(model, after=2)
    args = FlowMatchingConfig(
        str(tmp_path), per_device_train_batch_size=2, max_steps=4, learning_rate=1e-3, report_to=[],
        save_strategy="steps", save_steps=1, use_cpu=True, disable_tqdm=True, seed=0, ema_decay=0.9,
    )  # fmt: skip
    trainer = FlowMatchingTrainer(model, args, train_dataset=pairs(8))
    with pytest.raises(NonFiniteTrainingError, match=r"FlowMatchingTrainer: non-finite loss \(nan\) at step 3; .*no NaN weights were written"):
        trainer.train()
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    for checkpoint in tmp_path.glob("checkpoint-*"):
        for file in ("model.safetensors", "ema.safetensors"):
            assert all_finite(load_file(checkpoint / file).values()), checkpoint / file
    assert all_finite(model.parameters())


def test_nan_gradient_stops_the_standard_trainer_of_stage_three(tmp_path):
    model, processor = tiny_random_model()
    model.train()
    NaNAfter(model, after=1)
    trainer = stage_three_trainer(model, processor, tmp_path, save_strategy="steps", save_steps=1)
    with pytest.raises(NonFiniteTrainingError, match=r"Non-finite gradient norm \(nan\) at step 2; .*no NaN weights"):
        trainer.train()
    assert all_finite(model.parameters())
    assert all_finite(load_file(tmp_path / "checkpoint-1" / "model.safetensors").values())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_generations=0), r"num_generations must be an int >= 1, got 0"),
        (dict(num_generations=3, per_device_train_batch_size=4), r"per_device_train_batch_size \(4\) counts rollouts and must be a multiple of num_generations \(3\)"),
        (dict(num_iterations=0), r"num_iterations must be an int >= 1, got 0"),
        (dict(num_inference_steps=1), r"num_inference_steps must be an int >= 2, got 1"),
        (dict(timestep_shift=float("nan")), r"timestep_shift must be a finite number, got nan"),
        (dict(beta=-0.1), r"beta must be >= 0.0, got -0.1"),
        (dict(adv_clip_max=0), r"adv_clip_max must be > 0.0, got 0"),
        (dict(sde_type="ode"), r"sde_type must be 'sde' or 'cps', got 'ode'"),
        (dict(reward_weights=[1.0, float("inf")]), r"reward_weights must be finite numbers"),
        (dict(num_inference_steps=4, sde_window_range=(0, 5)), r"sde_window_range \(0, 5\) must hold a window of sde_window_size=1 steps within the 3 denoising steps"),
        (dict(cfg_interval=(0.5, 0.2)), r"cfg_interval must satisfy 0 <= low <= high <= 1"),
    ],
)
def test_flow_grpo_config_rejects_bad_values(tmp_path, kwargs, message):
    base = dict(num_generations=2, per_device_train_batch_size=4, report_to=[], use_cpu=True)
    with pytest.raises(ValueError, match=message):
        FlowGRPOConfig(str(tmp_path), **{**base, **kwargs})


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(timestep_shift=0.0), r"timestep_shift must be > 0.0, got 0.0"),
        (dict(mse_weight=float("inf")), r"mse_weight must be a finite number, got inf"),
        (dict(ema_decay=1.5), r"ema_decay must be 0 \(off\) or in \(0, 1\), got 1.5"),
        (dict(max_tokens_per_batch=0), r"max_tokens_per_batch must be None or a positive int, got 0"),
    ],
)
def test_flow_matching_config_rejects_bad_values(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        FlowMatchingConfig(str(tmp_path), report_to=[], use_cpu=True, **kwargs)


# ----------------------------------------------------------------------------------------------
# Item 11: a kill while a checkpoint is written does not block resume
# ----------------------------------------------------------------------------------------------

KILLED_RUN = textwrap.dedent(
    """
    import os, signal, sys
    from transformers import Trainer
    sys.path.insert(0, {tests!r})
    from _sft_run import InOrderTrainer, pairs
    from robust_u1 import FlowMatchingConfig
    from robust_u1.tiny import tiny_random_model

    save_rng_state = Trainer._save_rng_state

    def killed_at_step_2(self, output_dir):  # after the weights, optimizer and EMA; before trainer_state.json
        if self.state.global_step == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        save_rng_state(self, output_dir)

    Trainer._save_rng_state = killed_at_step_2
    model, _ = tiny_random_model()
    args = FlowMatchingConfig(sys.argv[1], per_device_train_batch_size=2, max_steps=3, learning_rate=1e-3,
                              lr_scheduler_type="constant", report_to=[], save_strategy="steps", save_steps=1,
                              use_cpu=True, disable_tqdm=True, seed=0, ema_decay=0.9)
    InOrderTrainer(model, args, train_dataset=pairs(8)).train()
    """
)


def sft_args(out, **kwargs):
    defaults = dict(per_device_train_batch_size=2, max_steps=3, learning_rate=1e-3, lr_scheduler_type="constant",
                    report_to=[], save_strategy="steps", save_steps=1, use_cpu=True, disable_tqdm=True, seed=0,
                    ema_decay=0.9)  # fmt: skip
    return FlowMatchingConfig(str(out), **{**defaults, **kwargs})


def test_kill_during_a_checkpoint_save_then_resume_from_the_last_complete_one(tmp_path, caplog):
    script = tmp_path / "killed_run.py"
    script.write_text(KILLED_RUN.format(tests=str(TESTS)))
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(script), str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    assert (out / "checkpoint-2" / "model.safetensors").exists()
    assert not (out / "checkpoint-2" / "trainer_state.json").exists()  # killed mid-save

    model, _ = tiny_random_model()
    with caplog.at_level(logging.WARNING):
        trainer = InOrderTrainer(model, sft_args(out), train_dataset=pairs(8))
        trainer.train(resume_from_checkpoint=True)  # transformers alone would pick checkpoint-2 and fail
    assert f"{out / 'checkpoint-2'} was interrupted while being written" in caplog.text
    assert (out / "incomplete-checkpoint-2").is_dir()
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]
    assert json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())["global_step"] == 3

    straight, _ = tiny_random_model()
    InOrderTrainer(straight, sft_args(tmp_path / "straight", save_strategy="no"), train_dataset=pairs(8)).train()
    for (name, a), b in zip(straight.named_parameters(), model.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6, msg=name)


def test_stage_three_resumes_past_a_save_that_failed_midway(tmp_path, monkeypatch):
    model, processor = tiny_random_model()
    model.train()
    save_rng_state = Trainer._save_rng_state

    def fails_at_step_2(self, output_dir):
        if self.state.global_step == 2:
            raise OSError("disk full")
        save_rng_state(self, output_dir)

    monkeypatch.setattr(Trainer, "_save_rng_state", fails_at_step_2)
    with pytest.raises(OSError, match="disk full"):
        stage_three_trainer(model, processor, tmp_path, save_strategy="steps", save_steps=1).train()
    monkeypatch.setattr(Trainer, "_save_rng_state", save_rng_state)
    assert not (tmp_path / "checkpoint-2" / "trainer_state.json").exists()

    model, processor = tiny_random_model()
    model.train()
    trainer = stage_three_trainer(model, processor, tmp_path, save_strategy="steps", save_steps=1)
    assert (tmp_path / "incomplete-checkpoint-2").is_dir() and not (tmp_path / "checkpoint-2").exists()
    trainer.train(resume_from_checkpoint=True)
    assert trainer.state.global_step == 3


@pytest.mark.parametrize("trainer_class", [FlowMatchingTrainer, FlowGRPOTrainer])
def test_our_trainers_carry_the_safety_callback(tmp_path, trainer_class):
    model, processor = tiny_random_model()
    (tmp_path / "checkpoint-5").mkdir(parents=True)
    (tmp_path / "checkpoint-5" / "trainer_state.json").write_text('{"global_step": 5, "log_hi')  # truncated
    if trainer_class is FlowMatchingTrainer:
        trainer = trainer_class(model, sft_args(tmp_path), processing_class=processor)
    else:
        args = FlowGRPOConfig(str(tmp_path), num_generations=2, per_device_train_batch_size=2, report_to=[], use_cpu=True)
        trainer = trainer_class(model, [perfect_sample_reward], args, processing_class=processor)
    assert any(isinstance(callback, TrainingSafetyCallback) for callback in trainer.callback_handler.callbacks)
    assert (tmp_path / "incomplete-checkpoint-5").is_dir() and not (tmp_path / "checkpoint-5").exists()
