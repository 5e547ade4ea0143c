"""Stage II: FlowGRPOTrainer — sampler equivalences, first-iteration ratio/KL, rewards errors, learning."""

import numpy as np
import pytest
import torch
from datasets import Dataset
from helpers import noisy_pairs

from robust_u1 import FlowGRPOConfig, FlowGRPOTrainer, generation_lora_config
from robust_u1.rewards import RewardFunctionError, SSIMReward
from robust_u1.tiny import tiny_random_model


def grpo_config(tmp_path, **kwargs):
    defaults = dict(
        num_generations=2, per_device_train_batch_size=4, max_steps=1, learning_rate=1e-3, num_inference_steps=4,
        sde_window_size=1, sde_window_range=(0, 3), report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True,
        lr_scheduler_type="constant", sample_posterior=False, seed=0,
    )  # fmt: skip
    return FlowGRPOConfig(str(tmp_path), **{**defaults, **kwargs})


def examples(count=2):
    return noisy_pairs(count)


def repeated(rows, G):
    return [row for row in rows for _ in range(G)]


def test_noise_level_zero_equals_the_ode_sampler_of_recover(tmp_path):
    model, _ = tiny_random_model()
    args = grpo_config(tmp_path, noise_level=0.0, sde_window_size=3)
    trainer = FlowGRPOTrainer(model, [SSIMReward()], args, train_dataset=Dataset.from_list(examples()))
    rows = repeated(examples(), 2)
    rollouts = trainer._generate(rows)
    assert rollouts.window == [0, 1, 2]
    for i, row in enumerate(rows):
        # the rollout's initial noise is the first draw of its stream
        from robust_u1.trainers.utils import sample_generator

        x0 = torch.randn(4, model.config.patch_latent_dim, generator=sample_generator(torch.device("cpu"), 0, 0, i))
        expected = model.recover(row["image"], num_inference_steps=4, latents=[x0], output_type="latent", progress=False, sample_posterior=False)
        torch.testing.assert_close(model.tokens_to_latent(rollouts.final_latents[i], (2, 2)), expected, atol=1e-5, rtol=1e-5)
    assert torch.all(rollouts.old_log_probs == 0)  # deterministic steps carry no density


def test_first_iteration_ratio_is_one_and_kl_is_zero_with_fresh_lora(tmp_path):
    model, _ = tiny_random_model()
    args = grpo_config(tmp_path, beta=0.04, sde_window_size=2)
    trainer = FlowGRPOTrainer(model, [SSIMReward()], args, train_dataset=Dataset.from_list(examples()),
                              peft_config=generation_lora_config(r=4, lora_alpha=8))  # fmt: skip
    trainer.model.train()
    rollouts = trainer._prepare_inputs(repeated(examples(), 2))
    loss = trainer.compute_loss(trainer.model, rollouts)
    metrics = dict(trainer._metrics)
    assert metrics["ratio_mean"] == [1.0] and metrics["ratio_min"] == [1.0] and metrics["ratio_max"] == [1.0]
    assert metrics["kl"] == [0.0] and metrics["clip_fraction"] == [0.0]
    # at ratio 1 the surrogate is −mean(A), which group normalisation makes ≈ 0, but its gradient is not
    torch.testing.assert_close(loss, -rollouts.advantages.mean(), atol=1e-6, rtol=0)
    loss.backward()
    lora_grads = [p.grad for n, p in trainer.model.named_parameters() if "lora_B" in n]
    assert lora_grads and any(g is not None and g.abs().sum() > 0 for g in lora_grads)


def test_later_iterations_reuse_the_rollouts(tmp_path):
    model, _ = tiny_random_model()
    args = grpo_config(tmp_path, num_iterations=2)
    trainer = FlowGRPOTrainer(model, [SSIMReward()], args, train_dataset=Dataset.from_list(examples()))
    rows = repeated(examples(), 2)
    first = trainer._prepare_inputs(rows)
    assert trainer._prepare_inputs(rows) is first
    assert trainer._prepare_inputs(rows) is not first


def test_beta_without_lora_is_a_clear_error(tmp_path):
    model, _ = tiny_random_model()
    with pytest.raises(ValueError, match="beta > 0 needs a peft_config"):
        FlowGRPOTrainer(model, [SSIMReward()], grpo_config(tmp_path, beta=0.1), train_dataset=Dataset.from_list(examples()))


def test_batch_size_must_hold_whole_groups(tmp_path):
    with pytest.raises(ValueError, match="must be a multiple of num_generations"):
        grpo_config(tmp_path, num_generations=3, per_device_train_batch_size=4)


def test_a_raising_reward_stops_the_run_with_its_name(tmp_path):
    def broken_reward(images, **kwargs):
        raise RuntimeError("reference missing")

    model, _ = tiny_random_model()
    trainer = FlowGRPOTrainer(model, [SSIMReward(), broken_reward], grpo_config(tmp_path), train_dataset=Dataset.from_list(examples()))
    with pytest.raises(RewardFunctionError, match="broken_reward.*reference missing"):
        trainer.train()


def test_unscored_samples_get_zero_advantage(tmp_path):
    def half_scored(images, **kwargs):
        return [0.5 if i % 2 == 0 else None for i in range(len(images))]

    model, _ = tiny_random_model()
    trainer = FlowGRPOTrainer(model, [half_scored], grpo_config(tmp_path), train_dataset=Dataset.from_list(examples()))
    rollouts = trainer._generate(repeated(examples(), 2))
    assert rollouts.advantages[1::2].eq(0).all()
    assert trainer._metrics["reward_unscored"] == [2.0]


def test_short_grpo_run_raises_the_ssim_reward(tmp_path, tiny_model_with_fitted_vae):
    model, _ = tiny_model_with_fitted_vae
    rows = noisy_pairs(4)
    ssim = SSIMReward()

    def mean_ssim():
        """Mean SSIM reward of recover() on the training images over three fixed noise seeds."""
        scores = []
        for repeat in range(3):
            generators = [torch.Generator().manual_seed(100 * repeat + i) for i in range(len(rows))]
            outputs = model.recover([r["image"] for r in rows], num_inference_steps=6, progress=False, generator=generators, sample_posterior=False)
            scores += [ssim.score(o, r["target_image"]) for o, r in zip(outputs, rows)]
        return float(np.mean(scores))

    args = grpo_config(tmp_path, num_generations=8, per_device_train_batch_size=16, max_steps=60, learning_rate=1e-3,
                       num_inference_steps=6, sde_window_size=3, sde_window_range=(0, 5), logging_steps=20)  # fmt: skip
    trainer = FlowGRPOTrainer(model, [ssim], args, train_dataset=Dataset.from_list(rows))
    before = mean_ssim()
    trainer.train()
    after = mean_ssim()
    print(f"mean SSIM reward of recover() on the training images: {before:.4f} → {after:.4f}")
    assert after > before + 0.02


def test_model_card(tmp_path):
    model, _ = tiny_random_model()
    trainer = FlowGRPOTrainer(model, [SSIMReward()], grpo_config(tmp_path), train_dataset=Dataset.from_list(examples()),
                              peft_config=generation_lora_config(r=4, lora_alpha=8))  # fmt: skip
    trainer.create_model_card()
    card = (tmp_path / "README.md").read_text()
    assert "FlowGRPOTrainer" in card and "LoRA r=4, alpha=8" in card and "| `num_generations` | 2 |" in card
