"""Peak resident memory and recover() time: plain, disk-offloaded and each quantized mode.

Run: ``python benchmarks/bench_memory.py``. One run: a small random model (512 wide, 4 layers, saved
once in fp32) is loaded in a fresh process per mode — so each peak is that mode's own — which
records its resident memory after the imports, its peak after loading + one recover(), and the
recover() time, and the bytes of weights the model holds in memory (not offloaded; quantization states included).
Ratios are to the plain fp32 load; memory figures are increases over the post-import baseline (the
interpreter, torch and transformers weigh the same in every mode).
"""

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = ("plain", "offloaded", "nf4", "int8", "int8-torchao")
STEPS = 6


def status_mib() -> float:
    """Resident memory (VmRSS) in MiB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def child(mode: str, folder: str) -> None:
    import numpy as np
    import torch
    from PIL import Image

    from robust_u1 import RobustU1ForConditionalGeneration
    from robust_u1.loading import quantization_config_for

    torch.set_num_threads(1)
    baseline = status_mib()
    kwargs = {}
    if mode == "offloaded":  # decoder layers and the VAE decoder on disk, the rest in memory
        kwargs = {"device_map": "auto", "max_memory": {"cpu": "60MB"}, "offload_folder": f"{folder}-offload"}
    elif mode != "plain":
        kwargs = {"quantization_config": quantization_config_for(mode, compute_dtype=torch.float32)}
    model = RobustU1ForConditionalGeneration.from_pretrained(folder, **kwargs)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8))
    recover = lambda: model.recover(image, num_inference_steps=STEPS, generator=torch.Generator().manual_seed(0), progress=False)  # noqa: E731
    recover()  # warm-up
    start = time.perf_counter()
    recover()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT" + json.dumps({"baseline": baseline, "peak": peak, "held": weights_in_memory(model) / 2**20, "seconds": seconds}))


def weights_in_memory(model) -> int:
    """Bytes of the parameters and buffers held in memory (not offloaded to meta), quantization states included."""
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.device.type == "meta":
            continue
        if hasattr(tensor, "__tensor_flatten__"):  # torchao: the inner tensors
            names, _ = tensor.__tensor_flatten__()
            total += sum(getattr(tensor, name).nbytes for name in names)
            continue
        total += tensor.data.nbytes
        state = getattr(tensor, "quant_state", None)
        if state is not None:
            total += state.absmax.nbytes + (state.code.nbytes if state.code is not None else 0)
        if getattr(tensor, "SCB", None) is not None:
            total += tensor.SCB.nbytes
    return total


def save_model(folder: Path) -> None:
    import torch

    from robust_u1 import RobustU1ForConditionalGeneration
    from robust_u1 import RobustU1Config
    from robust_u1.tiny import SPECIAL_TOKENS, tiny_processor

    processor = tiny_processor()
    ids = processor.tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    special = dict(zip(("bos_token_id", "eos_token_id", "start_of_image_token_id", "end_of_image_token_id"), ids))
    config = RobustU1Config(
        text_config={
            "vocab_size": len(processor.tokenizer), "hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 4,
            "num_attention_heads": 8, "num_key_value_heads": 2, "max_position_embeddings": 4096,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
        },
        vision_config={"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 2, "patch_size": 14, "image_size": 224},
        vae_config={"block_out_channels": [32, 32, 64, 64], "layers_per_block": 1},
        max_latent_size=64, vit_max_num_patch_per_side=70, **special,
    )  # fmt: skip
    torch.manual_seed(0)
    RobustU1ForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        save_model(folder)
        results = {}
        for mode in MODES:
            run = subprocess.run([sys.executable, __file__, "--child", mode, str(folder)], capture_output=True, text=True)
            line = next((x for x in run.stdout.splitlines() if x.startswith("RESULT")), None)
            if line is None:
                raise SystemExit(f"{mode} failed:\n{run.stderr[-2000:]}")
            results[mode] = json.loads(line[len("RESULT") :])
    plain = results["plain"]
    plain_mem = plain["peak"] - plain["baseline"]
    print(f"Small random model (512 wide, 4 decoder layers, fp32 checkpoint), recover() of a 128² image, {STEPS} schedule points")
    print(f"{'mode':>13} | {'peak RSS − baseline':>19} | {'× plain':>7} | {'weights in memory':>18} | {'× plain':>7} | {'recover()':>9} | {'× plain':>7}")
    for mode, r in results.items():
        memory = r["peak"] - r["baseline"]
        print(
            f"{mode:>13} | {memory:15.0f} MiB | {memory / plain_mem:7.2f} | {r['held']:14.0f} MiB | {r['held'] / plain['held']:7.2f} | "
            f"{r['seconds'] * 1e3:6.0f} ms | {r['seconds'] / plain['seconds']:7.2f}"
        )
    print("Peak RSS counts the checkpoint's memory-mapped pages (transformers reads safetensors in place; the disk offload")
    print("maps each layer while it runs; quantizers read fp32 before packing); 'weights in memory' is what the model holds.")

if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
    else:
        main()
