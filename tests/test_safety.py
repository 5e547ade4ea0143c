"""Safety of training and inference (issue 12): frozen parts after every loading path, non-finite
rewards / losses, interrupted checkpoints, sequence-length limits, clear errors for bad arguments."""

from __future__ import annotations

import json
import logging
import math
import os
import re
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


def test_nan_loss_stops_flow_grpo_before_any_update(tmp_path, monkeypatch):
    import robust_u1.trainers.flow_grpo as flow_grpo

    policy_loss = flow_grpo.clipped_policy_loss
    monkeypatch.setattr(flow_grpo, "clipped_policy_loss", lambda *a, **k: (lambda loss, stats: (loss * math.nan, stats))(*policy_loss(*a, **k)))
    model, processor = tiny_random_model()
    before = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    args = FlowGRPOConfig(
        str(tmp_path), num_generations=2, per_device_train_batch_size=2, max_steps=1, num_inference_steps=4,
        sde_window_range=(0, 3), report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0,
    )  # fmt: skip
    trainer = FlowGRPOTrainer(model, [lambda images, **kw: [0.0, 1.0]], args, train_dataset=pairs(1), processing_class=processor)
    with pytest.raises(NonFiniteTrainingError, match=r"^FlowGRPOTrainer: non-finite loss \(nan\) at step 1; training stopped"):
        trainer.train()
    assert all(torch.equal(parameter, before[name]) for name, parameter in model.named_parameters())


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
        (dict(sampling_shift=float("nan")), r"sampling_shift \(timestep_shift\) must be a finite number, got nan"),
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


# ----------------------------------------------------------------------------------------------
# Item 7: sequences longer than max_position_embeddings fail fast; no dense mask where lengths suffice
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    return tiny_random_model(seed=0)


def forbid(monkeypatch, model, *names):
    """Makes the expensive steps fail loudly, so a test shows the check came before them."""
    for name in names:
        monkeypatch.setattr(model, name, lambda *a, **k: pytest.fail(f"{name} ran before the length check"))


def test_a_100k_character_question_fails_fast_with_both_numbers(tiny, monkeypatch):
    import time

    model, processor = tiny
    forbid(monkeypatch, model, "recover", "run_blocks", "encode_images")
    image = Image.new("RGB", (32, 32), (200, 30, 30))
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"^The input has 100\d{3} tokens \(text and image tokens together\) and "
                                         r"max_new_tokens=16: \d+ exceeds max_position_embeddings=4096 of this model"):
        model.answer(image, "why " * 25_000, options=["red", "blue"], max_new_tokens=16)
    assert time.perf_counter() - start < 10  # was OOM-killed at 20.9 GB
    with pytest.raises(ValueError, match=r"^The input has 100\d{3} tokens .* max_position_embeddings=4096"):
        model.generate(["why " * 25_000], processor=processor, max_new_tokens=1)


def test_generation_that_would_run_past_the_positions_is_refused(tiny, monkeypatch):
    model, processor = tiny
    forbid(monkeypatch, model, "run_blocks")
    prompt = "x" * 4000
    with pytest.raises(ValueError, match=r"^The input has 4002 tokens .* and max_new_tokens=512: 4514 exceeds "
                                         r"max_position_embeddings=4096 of this model; .* lower max_new_tokens\.$"):
        model.generate([prompt], processor=processor, max_new_tokens=512)


def test_recovery_with_a_too_long_prompt_fails_before_the_vae(tiny, monkeypatch):
    model, processor = tiny
    forbid(monkeypatch, model, "run_blocks", "encode_images")
    with pytest.raises(ValueError, match=r"^The input has \d+ tokens \(text and image tokens together\), more than "
                                         r"max_position_embeddings=4096 of this model; shorten the text or use smaller images\.$"):
        model.recover(Image.new("RGB", (32, 32)), prompt="y" * 5000, processor=processor, progress=False)


def test_prefill_guard_counts_the_cache(tiny):
    from robust_u1.packing import TextBlock

    model, _ = tiny
    cache = model.prefill(model.new_cache(1), [TextBlock(torch.zeros(3000, dtype=torch.long))])
    with pytest.raises(ValueError, match=r"^The input has 5004 tokens .* max_position_embeddings=4096"):
        model.prefill(cache, [TextBlock(torch.zeros(2000, dtype=torch.long))])


def test_training_collators_refuse_too_long_samples(tiny):
    model, processor = tiny
    row = {**color_rows(1)[0], "question": "z" * 5000}
    with pytest.raises(ValueError, match=r"^Sample 0 of the batch packs \d+ tokens \(text and image tokens together\), "
                                         r"more than max_position_embeddings=4096 of the model"):
        ReasoningCollator(processor, model.config, allow_without_recovery=True)([row])


def test_tinyworld_rejects_more_than_its_1024_positions(monkeypatch):
    from robust_u1.tinyworld import load_tinyworld

    model, processor = load_tinyworld("sft")
    forbid(monkeypatch, model, "recover", "run_blocks")
    question = " ".join(["Which shape is red?"] * 300)  # 1,500 words
    with pytest.raises(ValueError, match=r"^The input has \d{4} tokens .* exceeds max_position_embeddings=1024 of this model"):
        model.answer(Image.new("RGB", (64, 64)), question, max_new_tokens=8)


def test_sdpa_gets_lengths_instead_of_dense_masks():
    from torch.nn.attention.bias import CausalBias

    from robust_u1.attention import PackedAttentionLayout, packed_sdpa

    cpu = torch.device("cpu")
    prefill = PackedAttentionLayout.single_split([300], ["causal"])
    assert prefill.sequence_attention(0, cpu) == (None, True)  # a text prefill: is_causal, no 300×300 mask
    after_images = PackedAttentionLayout.single_split([7], ["causal"], cache_lens=[20])
    mask, is_causal = after_images.sequence_attention(0, cpu)
    assert isinstance(mask, CausalBias) and not is_causal
    assert torch.equal(mask._materialize(cpu), after_images.sequence_mask(0, cpu))  # the same rule
    assert isinstance(after_images.sequence_attention(0, cpu, grouped_query=True)[0], torch.Tensor)
    assert PackedAttentionLayout.single_split([9], ["full"], cache_lens=[4]).sequence_attention(0, cpu) == (None, False)

    # Same outputs as the dense masks, grouped-query heads included.
    torch.manual_seed(0)
    for heads, kv_heads, cache in ((4, 4, 0), (4, 4, 20), (4, 2, 0), (4, 2, 20)):
        layout = PackedAttentionLayout.single_split([7, 5], ["causal", "causal"], cache_lens=[cache, 3])
        query = torch.randn(12, heads, 8)
        keys = [torch.randn(cache + 7, kv_heads, 8), torch.randn(8, kv_heads, 8)]
        values = [torch.randn(cache + 7, kv_heads, 8), torch.randn(8, kv_heads, 8)]
        expected, start = [], 0
        for index, length in enumerate(layout.query_lens):
            q = query[start : start + length].transpose(0, 1)[None]
            k, v = keys[index].transpose(0, 1)[None], values[index].transpose(0, 1)[None]
            dense = torch.nn.functional.scaled_dot_product_attention(
                q, k, v, attn_mask=layout.sequence_mask(index, cpu), enable_gqa=heads != kv_heads
            )
            expected.append(dense[0].transpose(0, 1))
            start += length
        torch.testing.assert_close(packed_sdpa(query, keys, values, layout), torch.cat(expected), atol=1e-6, rtol=1e-6)


def test_vit_images_of_several_sizes_match_one_by_one(tiny):
    model, processor = tiny
    sizes = [(56, 56), (28, 84), (56, 56)]
    torch.manual_seed(0)
    images = [torch.randn(3, h, w) for h, w in sizes]
    with torch.no_grad():
        packed, seqlens = model.embed_vit_images(images)
        alone = torch.cat([model.embed_vit_images([image])[0] for image in images])
    assert seqlens == [16, 12, 16]
    torch.testing.assert_close(packed, alone, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# Unclear errors of text generation and answering
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(max_new_tokens=0), ValueError, r"^max_new_tokens must be a positive int, got 0\.$"),
        (dict(max_new_tokens=-3), ValueError, r"^max_new_tokens must be a positive int, got -3\.$"),
        (dict(max_new_tokens=2.5), ValueError, r"^max_new_tokens must be a positive int, got 2\.5\.$"),
        (dict(do_sample=True, temperature=0.0), ValueError, r"^temperature must be > 0 when do_sample=True, got 0\.0"),
        (dict(temperature=float("nan")), ValueError, r"^temperature must be a finite number, got nan\.$"),
        (dict(top_p=0.0), ValueError, r"^top_p must be in \(0, 1\], got 0\.0\.$"),
        (dict(top_p=1.5), ValueError, r"^top_p must be in \(0, 1\], got 1\.5\.$"),
        (dict(top_k=-1), ValueError, r"^top_k must be an int >= 0 \(0 disables it\), got -1\.$"),
        (dict(generator=0), TypeError, r"^generator must be a torch\.Generator or None, got int"),
    ],
)
def test_generate_rejects_bad_settings_before_the_prefill(tiny, monkeypatch, kwargs, error, message):
    model, processor = tiny
    forbid(monkeypatch, model, "run_blocks")
    with pytest.raises(error, match=message):
        model.generate(["Hello"], processor=processor, **kwargs)


def test_generate_rejects_inputs_that_are_not_a_list(tiny):
    model, processor = tiny
    with pytest.raises(ValueError, match=r"^generate\(\) takes a non-empty list of interleaved items .* got str\.$"):
        model.generate("Hello", processor=processor)
    with pytest.raises(ValueError, match=r"got list"):
        model.generate([], processor=processor)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(options="AB"), TypeError, r"^options must be a list of option texts or a \{letter: text\} dict, e\.g\. \['dog', 'cat'\]; got the string 'AB'\.$"),
        (dict(options=[f"option {i}" for i in range(27)]), ValueError, r"^At most 26 options \(letters A to Z\) are supported, got 27\.$"),
        (dict(max_new_tokens=0), ValueError, r"^max_new_tokens must be a positive int, got 0\.$"),
        (dict(do_sample=True, temperature=-1.0), ValueError, r"^temperature must be > 0 when do_sample=True"),
        (dict(top_p=2.0), ValueError, r"^top_p must be in \(0, 1\], got 2\.0\.$"),
    ],
)
def test_answer_rejects_bad_arguments_before_recovering(tiny, monkeypatch, kwargs, error, message):
    model, processor = tiny
    forbid(monkeypatch, model, "recover", "run_blocks")
    with pytest.raises(error, match=message):
        model.answer(Image.new("RGB", (32, 32)), "Which color?", **{"options": ["red", "blue"], **kwargs})


def test_mcq_prompt_and_pipeline_name_the_option_problem(tiny, monkeypatch):
    from transformers import pipeline

    from robust_u1.evaluation.prompts import build_mcq_prompt

    model, processor = tiny
    with pytest.raises(TypeError, match=r"options must be a list of option texts"):
        build_mcq_prompt("Which?", "ABCD")
    with pytest.raises(ValueError, match=r"At most 26 options"):
        build_mcq_prompt("Which?", [str(i) for i in range(30)])
    forbid(monkeypatch, model, "recover", "run_blocks")
    vqa = pipeline("robust-vqa", model=model, device="cpu")
    with pytest.raises(TypeError, match=r"got the string 'red or blue'"):
        vqa({"image": Image.new("RGB", (32, 32)), "question": "Which color?", "options": "red or blue"})
    with pytest.raises(ValueError, match=r"^max_new_tokens must be a positive int, got 0\.$"):
        vqa({"image": Image.new("RGB", (32, 32)), "question": "Which color?"}, max_new_tokens=0)


def test_cli_ask_reports_a_too_long_question_in_one_line(tmp_path):
    image = tmp_path / "image.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(image)
    question = " ".join(["Which shape is red?"] * 300)
    result = subprocess.run([sys.executable, "-m", "robust_u1", "ask", str(image), question, "--max-new-tokens", "8"],
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("robust-u1 ask")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert re.match(r"^robust-u1 ask: error: The input has \d{4} tokens \(text and image tokens together\) and "
                    r"max_new_tokens=8: \d{4} exceeds max_position_embeddings=1024 of this model", lines[0]), lines[0]
