"""Run under torchrun (2 processes, gloo): FSDP2-sharded model, the trainers' non-forward calls and a backward.

Each rank writes its result to ``<output folder>/rank<N>.txt`` (files, not the shared stdout pipe, whose
lines torchrun may prefix or interleave).
"""

import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from accelerate import Accelerator
from PIL import Image
from torch.distributed.fsdp import fully_shard

from robust_u1.sampling import GuidanceConfig
from robust_u1.tiny import tiny_random_model
from robust_u1.trainers.utils import model_for_calls, prepare_model_for_training


class WrappedTrainer:
    def __init__(self, model):
        self.model, self.accelerator = model, Accelerator(cpu=True)


def main():
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    model, _ = tiny_random_model(0)
    model = prepare_model_for_training(model)
    for layer in [*model.language_model.model.layers, *model.vit_model.vision_model.encoder.layers]:
        fully_shard(layer)
    fully_shard(model)  # the root keeps the VAE, embeddings, heads and norms sharded outside forward
    caller = model_for_calls(WrappedTrainer(model))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    inputs = caller.prepare_edit_inputs([image], [5, 6, 7])
    contexts = caller.build_edit_contexts(inputs, latents=caller.encode_edit_latents(inputs, False))
    (velocity,) = caller.guided_velocities(contexts, [torch.ones(4, 64)], 0.5, GuidanceConfig())
    velocity.pow(2).mean().backward()
    (Path(sys.argv[1]) / f"rank{dist.get_rank()}.txt").write_text(f"{velocity.abs().mean().item():.6f}")
    dist.barrier()  # no rank tears gloo down while the other still has FSDP2 traffic in flight
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
