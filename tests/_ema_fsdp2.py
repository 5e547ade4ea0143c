"""EMA of a model trained a few steps, plain (``python``) or FSDP2-sharded (``torchrun``, 2 processes, gloo).

Usage: ``[torchrun --nproc_per_node 2] python tests/_ema_fsdp2.py OUT_DIR``. The EMA is built before the model
is sharded, as in the Trainer (accelerate shards in ``train()``). After two steps it is saved to
``OUT_DIR/checkpoint`` and a second EMA, built from the current weights, is restored from it; both go on for two
more steps and are saved to ``OUT_DIR/straight`` and ``OUT_DIR/resumed``; the model's state dict with the
averages substituted goes to ``OUT_DIR/with_ema.safetensors``. Each process writes
``OUT_DIR/rank<N>.json`` (how many EMA values it holds itself, and in total).
"""

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image

from robust_u1.sampling import GuidanceConfig
from robust_u1.tiny import tiny_random_model
from robust_u1.trainers.utils import EMAWeights, model_for_calls, prepare_model_for_training


class WrappedTrainer:
    def __init__(self, model):
        from accelerate import Accelerator

        self.model, self.accelerator = model, Accelerator(cpu=True)


def main(out_dir):
    out_dir = Path(out_dir)
    sharded = "RANK" in os.environ
    if sharded:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if sharded else 0
    torch.manual_seed(0)
    model, _ = tiny_random_model(0)
    model = prepare_model_for_training(model)
    ema = EMAWeights(model, decay=0.5)
    if sharded:
        from torch.distributed.fsdp import fully_shard

        for layer in [*model.language_model.model.layers, *model.vit_model.vision_model.encoder.layers]:
            fully_shard(layer)
        fully_shard(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    caller = model_for_calls(WrappedTrainer(model))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    resumed = None
    for step in range(4):
        if step == 2:
            ema.save(out_dir / "checkpoint", write=rank == 0)
            if sharded:
                dist.barrier()  # the file is complete before anyone reads it
            resumed = EMAWeights(model, decay=0.5)  # already sharded: DTensor averages of the current weights
            resumed.load(out_dir / "checkpoint")
        inputs = caller.prepare_edit_inputs([image], [5, 6, 7])
        contexts = caller.build_edit_contexts(inputs, latents=caller.encode_edit_latents(inputs, False))
        target = torch.linspace(-1, 1, 256).reshape(4, 64)
        (velocity,) = caller.guided_velocities(contexts, [torch.ones(4, 64) * (step + 1)], 0.5, GuidanceConfig())
        (velocity - target).pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        for average in (ema, resumed):
            if average is not None:
                average.update(model)
    ema.save(out_dir / "straight", write=rank == 0)
    resumed.save(out_dir / "resumed", write=rank == 0)
    with_ema = ema.state_dict_with_ema(model)  # full model state with the averages, gathered on every process
    if rank == 0:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in with_ema.items()}, str(out_dir / "with_ema.safetensors"))
    local = sum((v.to_local() if hasattr(v, "to_local") else v).numel() for v in ema.shadow.values())
    total = sum(v.numel() for v in ema.shadow.values())
    (out_dir / f"rank{rank}.json").write_text(json.dumps({"local": local, "total": total}))
    if sharded:
        dist.barrier()  # no rank tears gloo down while the other still has FSDP2 traffic in flight
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
