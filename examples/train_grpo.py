"""Stage II of Robust-U1: Flow-GRPO on the recovery sampler with SSIM and CLIP rewards (`FlowGRPOTrainer`).

Every corrupted image is prefilled once and sampled G times (``--num_generations``); SDE noise in a
random window of steps makes the rollouts differ; the rewards (SSIM and CLIP similarity to the clean
image, official weights 1.0 / 0.2) become group-relative advantages for a clipped policy loss on a
LoRA adapter of the generation expert (r 64, alpha 128: flow_grpo's BAGEL template).

Data: as `train_sft.py` (official JSONL, image folder, Hub dataset, or synthetic pictures by
default); clean-only images are corrupted with Robust-R1 degradations (stages II-III).

Arguments: the fields of `FlowGRPOConfig` (transformers' `TrainingArguments`, the GRPO settings and
the rollouts' `RecoveryConfig` fields: ``--num_generations``, ``--beta``, ``--noise_level``,
``--sde_window_size``, ``--num_inference_steps``, ``--cfg_text_scale``, ``--recovery_config FILE``, …),
of `ModelAndDataArguments` (`train_sft.py`) and of `RewardArguments` below, parsed by transformers'
`HfArgumentParser`: names, defaults and help come from the dataclasses (``--help`` lists them). The
script sets only its own defaults (``SCRIPT_DEFAULTS``: a bare run is an offline smoke run; LoRA r 64 as
flow_grpo's BAGEL template; Robust-R1 corruptions).
``--per_device_train_batch_size`` counts rollouts (a multiple of G).

Examples:

```bash
# offline smoke run on CPU: tiny random model, synthetic pairs, randomly initialised CLIP
python examples/train_grpo.py --output_dir outputs/grpo-demo --clip_pretrained none
# the real thing on 8 GPUs, starting from the stage I checkpoint
accelerate launch --config_file examples/accelerate/fsdp2.yaml examples/train_grpo.py \\
    --model Jiaqi-hkust/Robust-U1-SFT --dtype bfloat16 --dataset data/robust_r1/data.jsonl \\
    --output_dir outputs/stage2 --num_generations 16 --per_device_train_batch_size 16 --max_steps 1000
```
"""

from __future__ import annotations

from dataclasses import dataclass, field

from accelerate import PartialState
from train_sft import (
    ModelAndDataArguments,
    load_model,
    load_pairs,
    lora_config,
    train_and_save,
)
from transformers import HfArgumentParser

from robust_u1 import FlowGRPOConfig, FlowGRPOTrainer
from robust_u1.rewards import (
    OFFICIAL_REWARD_WEIGHTS,
    CLIPSimilarityReward,
    SSIMReward,
    reward_name,
)


@dataclass
class RewardArguments:
    """Which rewards score the rollouts (their weights are `FlowGRPOConfig.reward_weights`)."""

    rewards: str = field(default="ssim,clip", metadata={"help": "Comma-separated rewards among 'ssim' and 'clip'."})
    clip_model: str = field(default="ViT-B-32", metadata={"help": "open_clip model of the CLIP reward (official: ViT-B-32)."})
    clip_pretrained: str = field(
        default="openai", metadata={"help": "open_clip pretrained tag or weights file (official: openai); 'none' = random weights, for offline runs."}
    )


# The script's own defaults (a bare run is an offline smoke run); everything else is FlowGRPOConfig's (G = 16, …).
SCRIPT_DEFAULTS = dict(
    output_dir="outputs/train_grpo", max_steps=4, save_steps=500, save_total_limit=2, report_to="none",
    corruptions="robust_r1", lora_r=64,  # flow_grpo's BAGEL template trains a LoRA adapter of rank 64
)  # fmt: skip


def parse_args(argv: list[str] | None = None) -> tuple[ModelAndDataArguments, RewardArguments, FlowGRPOConfig]:
    parser = HfArgumentParser((ModelAndDataArguments, RewardArguments, FlowGRPOConfig), description=__doc__.split("\n\n")[0])
    parser.set_defaults(**SCRIPT_DEFAULTS)
    return tuple(parser.parse_args_into_dataclasses(argv))


def build_rewards(args: RewardArguments, weights: list[float] | None) -> tuple[list, list[float]]:
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
    return reward_funcs, weights or [OFFICIAL_REWARD_WEIGHTS[reward_name(func)] for func in reward_funcs]


def main(argv: list[str] | None = None) -> None:
    data, reward_args, config = parse_args(argv)
    model = load_model(data, config.seed)
    reward_funcs, config.reward_weights = build_rewards(reward_args, config.reward_weights)
    trainer = FlowGRPOTrainer(model, reward_funcs, config, train_dataset=load_pairs(data, config.seed), peft_config=lora_config(data))
    train_and_save(trainer, data)


if __name__ == "__main__":
    main()
