"""Stage I: FlowMatchingTrainer — golden loss, learning, LoRA, resume, distributed equivalence."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file

from robust_u1 import FlowMatchingConfig, FlowMatchingTrainer, generation_lora_config
from robust_u1.tiny import tiny_processor, tiny_random_model

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))
from _sft_run import InOrderTrainer, pairs  # noqa: E402
from helpers import noisy_pairs, psnr  # noqa: E402


def config(tmp_path, **kwargs):
    defaults = dict(per_device_train_batch_size=2, max_steps=2, learning_rate=1e-3, lr_scheduler_type="constant",
                    report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0)  # fmt: skip
    return FlowMatchingConfig(str(tmp_path), **{**defaults, **kwargs})


def test_loss_on_the_official_batch(parity_model, golden, parity_dir, tmp_path):
    from test_parity import training_batch

    shift = json.loads((parity_dir / "bagel_config.json").read_text())["timestep_shift"]
    trainer = FlowMatchingTrainer(parity_model, config(tmp_path, timestep_shift=shift), processing_class=tiny_processor())
    parity_model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(parity_model, training_batch(golden))
    expected = golden["train_forward/ce_loss"] + golden["train_forward/mse_loss"]
    assert abs(loss.item() - expected.item()) <= 1e-4, (loss.item(), expected.item())
    for p in parity_model.parameters():
        p.requires_grad_(False)


def test_collator_layout_follows_the_official_rules(tmp_path):
    from robust_u1.collators import RecoveryCollator

    model, processor = tiny_random_model()
    batch = RecoveryCollator(processor, model.config)([pairs(1)[0]])
    prompt_len = len(processor.encode_text("Please restore this corrupted image to its clean version.")) + 2
    # 32×32 images: 4 latent tokens (16 px each), 4 ViT patches (28 px → 2×2 of 14)
    assert batch["split_lens"].tolist() == [6, 6, prompt_len, 6]
    assert batch["attn_modes"].tolist() == [1, 1, 0, 2]
    positions = batch["packed_position_ids"].tolist()
    assert positions[:12] == [0] * 6 + [1] * 6
    assert positions[12 : 12 + prompt_len] == list(range(2, 2 + prompt_len))
    assert positions[-6:] == [2 + prompt_len] * 6  # the noisy image does not advance the position
    assert batch["mse_loss_indexes"].tolist() == list(range(batch["sequence_length"] - 5, batch["sequence_length"] - 1))
    assert batch["vae_image_is_noisy"] == [False, True]


def test_token_budget_is_enforced(tmp_path):
    from robust_u1.collators import RecoveryCollator

    model, processor = tiny_random_model()
    collator = RecoveryCollator(processor, model.config, max_tokens_per_batch=40)
    with pytest.raises(ValueError, match="exceeds max_tokens_per_batch=40"):
        collator([pairs(2)[0], pairs(2)[1]])


def test_short_run_lowers_heldout_loss_and_raises_psnr(tmp_path, tiny_model_with_fitted_vae):
    model, processor = tiny_model_with_fitted_vae
    rows = noisy_pairs(12)
    train, held = Dataset.from_list(rows[:8]), rows[8:]

    def recovery_psnr():
        generators = [torch.Generator().manual_seed(i) for i in range(len(held))]
        outputs = model.recover([r["image"] for r in held], num_inference_steps=8, progress=False, generator=generators, sample_posterior=False)
        return float(np.mean([psnr(o, r["target_image"]) for o, r in zip(outputs, held)]))

    args = config(tmp_path, per_device_train_batch_size=4, max_steps=400, learning_rate=2e-3)
    trainer = FlowMatchingTrainer(model, args, train_dataset=train, eval_dataset=Dataset.from_list(held))
    loss_before, psnr_before = trainer.evaluate()["eval_loss"], recovery_psnr()
    trainer.train()
    loss_after, psnr_after = trainer.evaluate()["eval_loss"], recovery_psnr()
    print(f"held-out flow-matching loss {loss_before:.3f} → {loss_after:.3f}; recovery PSNR {psnr_before:.2f} → {psnr_after:.2f} dB")
    assert loss_after < 0.6 * loss_before
    assert psnr_after > psnr_before + 1.0


def test_full_finetuning_trains_only_the_generation_expert(tmp_path):
    model, _ = tiny_random_model()
    FlowMatchingTrainer(model, config(tmp_path), train_dataset=pairs(4))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("_moe_gen" in n or n.split(".")[0] in ("time_embedder", "vae2llm", "llm2vae") for n in trainable)
    assert "language_model.model.layers.0.mlp_moe_gen.up_proj.weight" in trainable
    assert "language_model.model.layers.0.mlp.up_proj.weight" not in trainable


def test_lora_trains_and_saves_only_the_adapter(tmp_path):
    from peft import PeftModel

    model, processor = tiny_random_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = FlowMatchingTrainer(model, config(tmp_path), train_dataset=pairs(4), peft_config=generation_lora_config(r=4, lora_alpha=8))
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable) and all("_moe_gen" in n for n in trainable)
    trainer.train()
    trainer.save_model(str(tmp_path / "adapter"))
    saved = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert saved and all("lora_" in k for k in saved)
    assert (tmp_path / "adapter" / "README.md").exists()

    image = pairs(1)[0]["image"]
    run = lambda m: m.recover(image, num_inference_steps=3, progress=False, generator=torch.Generator().manual_seed(0), output_type="latent", sample_posterior=False)  # noqa: E731
    trained = run(trainer.model)
    base, _ = tiny_random_model()
    assert all(torch.equal(p, before[n]) for n, p in base.named_parameters())
    assert not torch.allclose(run(base), trained)
    reloaded = PeftModel.from_pretrained(base, str(tmp_path / "adapter"))
    torch.testing.assert_close(run(reloaded), trained, atol=1e-5, rtol=1e-5)
    merged = reloaded.merge_and_unload()
    torch.testing.assert_close(run(merged), trained, atol=1e-4, rtol=1e-4)


def test_resume_equals_uninterrupted(tmp_path):
    data = pairs(8)

    def run(out, steps, resume=None, save_steps=None, ema=0.9):
        model, _ = tiny_random_model()
        args = config(out, max_steps=steps, ema_decay=ema, save_strategy="steps" if save_steps else "no", save_steps=save_steps or 500)
        trainer = InOrderTrainer(model, args, train_dataset=data)
        trainer.train(resume_from_checkpoint=resume)
        return model, trainer

    straight, straight_trainer = run(tmp_path / "straight", 4)
    run(tmp_path / "first", 2, save_steps=2)
    checkpoint = tmp_path / "first" / "checkpoint-2"
    assert (checkpoint / "ema.safetensors").exists() and (checkpoint / "optimizer.pt").exists()
    resumed, resumed_trainer = run(tmp_path / "first", 4, resume=str(checkpoint))
    for (name, a), b in zip(straight.named_parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6, msg=name)
    for name, value in straight_trainer.ema.shadow.items():
        torch.testing.assert_close(value, resumed_trainer.ema.shadow[name], atol=1e-6, rtol=1e-6, msg=f"ema {name}")


def test_gradient_checkpointing_gives_the_same_gradients(tmp_path):
    from robust_u1.collators import RecoveryCollator

    grads = []
    for checkpointing in (False, True):
        model, processor = tiny_random_model()
        trainer = FlowMatchingTrainer(model, config(tmp_path, gradient_checkpointing=checkpointing), train_dataset=pairs(2))
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        batch = RecoveryCollator(processor, model.config)([pairs(2)[0], pairs(2)[1]])
        trainer.compute_loss(model, batch).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-5, msg=name)


def test_two_processes_equal_one_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS.parent)}
    script = str(TESTS / "_sft_run.py")
    subprocess.run([sys.executable, script, str(tmp_path / "one"), "2", "2"], check=True, env=env, capture_output=True)
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}", script]
    result = subprocess.run(launch + [str(tmp_path / "two"), "1", "2"], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    one = load_file(str(tmp_path / "one" / "model.safetensors"))
    two = load_file(str(tmp_path / "two" / "model.safetensors"))
    start = load_file_from_fresh_model()
    changed = [k for k in one if not torch.equal(one[k], start[k])]
    assert changed, "training changed nothing"
    for key in one:
        torch.testing.assert_close(one[key], two[key], atol=1e-5, rtol=1e-5, msg=key)


def test_fsdp2_sharded_model_runs_the_trainers_non_forward_calls(tmp_path):
    """encode / prefill / guided velocities gather FSDP2-sharded root parameters (2 CPU processes)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS.parent)}
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}"]
    result = subprocess.run(launch + [str(TESTS / "_fsdp2_methods.py"), str(tmp_path)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    values = [(tmp_path / f"rank{rank}.txt").read_text() for rank in range(2)]
    assert values[0] == values[1] and float(values[0]) > 0


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load_file_from_fresh_model():
    model, _ = tiny_random_model()
    return {k: v.detach() for k, v in model.state_dict().items()}


def test_model_card_is_rendered(tmp_path):
    model, _ = tiny_random_model()
    trainer = FlowMatchingTrainer(model, config(tmp_path), train_dataset=pairs(2))
    trainer.create_model_card(dataset_name="robust-u1/imagenet-c-pairs")
    card = (tmp_path / "README.md").read_text()
    assert "FlowMatchingTrainer" in card and "stage I" in card
    assert "robust-u1/imagenet-c-pairs" in card and "| `timestep_shift` | 2.0 |" in card
