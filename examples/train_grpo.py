"""Stage II of Robust-U1: Flow-GRPO on the recovery sampler with SSIM and CLIP rewards (`FlowGRPOTrainer`).

Every corrupted image is prefilled once and sampled G times (``--num-generations``); SDE noise in a
random window of steps makes the rollouts differ; the rewards (SSIM and CLIP similarity to the clean
image, official weights 1.0 / 0.2) become group-relative advantages for a clipped policy loss on a
LoRA adapter of the generation expert (r 64, alpha 128: flow_grpo's BAGEL template).

Data: as `train_sft.py` (official JSONL, image folder, Hub dataset, or synthetic pictures by
default); clean-only images are corrupted with Robust-R1 degradations (stages II-III).

Examples:

```bash
# offline smoke run on CPU: tiny random model, synthetic pairs, randomly initialised CLIP
python examples/train_grpo.py --output outputs/grpo-demo --clip-pretrained none
# the real thing on 8 GPUs, starting from the stage I checkpoint
accelerate launch --config_file examples/accelerate/fsdp2.yaml examples/train_grpo.py \\
    --model Jiaqi-hkust/Robust-U1-SFT --dtype bfloat16 --dataset data/robust_r1/data.jsonl \\
    --output outputs/stage2 --num-generations 16 --batch-size 1 --max-steps 1000
```
"""

from __future__ import annotations

import argparse

from accelerate import PartialState
from train_sft import (
    add_common_arguments,
    load_model,
    load_pairs,
    lora_config,
    run_arguments,
    train_and_save,
)

from robust_u1 import FlowGRPOConfig, FlowGRPOTrainer
from robust_u1.rewards import (
    OFFICIAL_REWARD_WEIGHTS,
    CLIPSimilarityReward,
    SSIMReward,
    reward_name,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser, corruptions="robust_r1", max_steps=4)
    parser.add_argument("--lora-r", type=int, default=64, help="LoRA rank on the generation expert (flow_grpo BAGEL: 64); 0 = full fine-tuning")
    parser.add_argument("--lr", type=float, default=1e-4, help="learning rate (flow_grpo BAGEL template: 1e-4)")
    parser.add_argument("--batch-size", type=int, default=1, help="corrupted images per device per step; each gives --num-generations rollouts")
    parser.add_argument("--num-generations", type=int, default=4, help="rollouts G per image (flow_grpo BAGEL template: 16)")
    parser.add_argument("--rewards", default="ssim,clip", help="comma-separated rewards among 'ssim' and 'clip'")
    parser.add_argument("--reward-weights", help="comma-separated weights, one per reward (default: official, ssim 1.0, clip 0.2)")
    parser.add_argument("--clip-model", default="ViT-B-32", help="open_clip model of the CLIP reward (official: ViT-B-32)")
    parser.add_argument("--clip-pretrained", default="openai",
                        help="open_clip pretrained tag or weights file (official: openai); 'none' = random weights, for offline runs")  # fmt: skip
    parser.add_argument("--beta", type=float, default=0.0, help="KL weight to the model with its adapter disabled (flow_grpo BAGEL: 0)")
    parser.add_argument("--num-iterations", type=int, default=1, help="optimizer steps per generated batch (TRL's μ)")
    parser.add_argument("--num-inference-steps", type=int, default=16, help="flow schedule points per rollout (16 → 15 denoising steps)")
    parser.add_argument("--timestep-shift", type=float, default=3.0, help="schedule shift")
    parser.add_argument("--noise-level", type=float, default=0.7, help="SDE noise level (official Robust-U1: 0.7)")
    parser.add_argument("--sde-window-size", type=int, default=1, help="SDE (trained) steps per rollout (official Robust-U1: 1)")
    parser.add_argument("--sde-window-range", type=int, nargs=2, default=(0, 5), metavar=("START", "END"),
                        help="steps the SDE window may cover (official Robust-U1: 0 5)")  # fmt: skip
    parser.add_argument("--log-completions", action="store_true", help="log corrupted / recovered / clean images (wandb)")
    return parser.parse_args(argv)


def build_rewards(args: argparse.Namespace) -> tuple[list, list[float]]:
    # This process's accelerator: every rank scores its own rollouts on its own GPU.
    device = PartialState().device
    pretrained = None if args.clip_pretrained.lower() == "none" else args.clip_pretrained
    factories = {
        "ssim": lambda: SSIMReward(device=device),
        "clip": lambda: CLIPSimilarityReward(model_name=args.clip_model, pretrained=pretrained, device=device),
    }
    names = [name.strip() for name in args.rewards.split(",") if name.strip()]
    unknown = sorted(set(names) - set(factories))
    if unknown:
        raise SystemExit(f"unknown rewards {unknown}; choose among {sorted(factories)}")
    reward_funcs = [factories[name]() for name in names]
    if args.reward_weights:
        weights = [float(w) for w in args.reward_weights.split(",")]
    else:
        weights = [OFFICIAL_REWARD_WEIGHTS[reward_name(func)] for func in reward_funcs]
    return reward_funcs, weights


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    model = load_model(args)
    # FlowGRPOConfig has no image bounds: rollouts use the processor's, so set them there.
    for name in ("vae_max_size", "vae_min_size"):
        if getattr(args, name) is not None:
            setattr(model.processor.image_processor, name, getattr(args, name))
    reward_funcs, reward_weights = build_rewards(args)
    config = FlowGRPOConfig(
        **run_arguments(args),
        learning_rate=args.lr,
        per_device_train_batch_size=args.batch_size * args.num_generations,
        num_generations=args.num_generations,
        reward_weights=reward_weights,
        beta=args.beta,
        num_iterations=args.num_iterations,
        num_inference_steps=args.num_inference_steps,
        timestep_shift=args.timestep_shift,
        noise_level=args.noise_level,
        sde_window_size=args.sde_window_size,
        sde_window_range=tuple(args.sde_window_range),
        log_completions=args.log_completions,
    )
    trainer = FlowGRPOTrainer(model, reward_funcs, config, train_dataset=load_pairs(args), peft_config=lora_config(args))
    train_and_save(trainer, args)


if __name__ == "__main__":
    main()
