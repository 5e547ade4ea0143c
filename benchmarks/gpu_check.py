"""GPU checks of issue 14, prepared for one CUDA GPU (sized to finish within 8 minutes on an H100; not yet run).

Run: ``python benchmarks/gpu_check.py`` (``$OUT`` set: also writes ``$OUT/gpu_check.json``).
Without a CUDA GPU it exits with code 2 and one line; ``--smoke-cpu`` runs every check at toy
widths on the CPU, only to exercise the code paths.

1. attention: the CUDA training attention path (FlexAttention, compiled) against SDPA in bf16 on a
   packed batch (causal text, full ViT / clean VAE blocks, noisy VAE queries), at BAGEL-7B-MoT's
   width (hidden 3584, 28 heads, 4 KV heads, head dim 128), 2 decoder layers: max |Δ| relative to
   the output scale, and both times.
2. split: the bagel-tiny reference loaded all on the GPU vs with a decoder layer and the VAE decoder
   offloaded to the CPU (accelerate streams them to the GPU per forward): recover() latents and
   generate() ids, which must match.
3. quantization: a random model of BAGEL-7B-MoT's width (2 decoder layers, 2 ViT layers, full
   vocabulary) in bf16, NF4 and INT8 (bitsandbytes): GPU memory of the weights, peak during a
   512² recover(), time per denoising step and deviation from bf16.
4. recover: a random-weight model of BAGEL-7B-MoT's width with as many decoder layers as fit (all 28
   on an 80 GB card), recover() at 512² and 1024², 50 schedule points: time per step, total, peak
   memory against `robust_u1.memory.estimate_memory`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
GIB = 2**30
REPORT: dict = {}


def log(line: str) -> None:
    print(line, flush=True)


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def bagel_width_config(layers: int, vit_layers: int, small: bool):
    """BAGEL-7B-MoT's shapes (its llm_config.json and vit_config.json: Qwen2.5-7B, SigLIP so400m) with ``layers`` decoder layers; ``small``: toy widths for --smoke-cpu."""
    from robust_u1 import RobustU1Config

    if small:
        text = {"vocab_size": 512, "hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 4, "num_key_value_heads": 2}
        vision = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2}
    else:
        text = {"vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944, "num_attention_heads": 28, "num_key_value_heads": 4}
        vision = {"hidden_size": 1152, "intermediate_size": 4304, "num_attention_heads": 16}
    text.update(num_hidden_layers=layers, max_position_embeddings=32768, rms_norm_eps=1e-6,
                rope_parameters={"rope_type": "default", "rope_theta": 1e6}, tie_word_embeddings=False)  # fmt: skip
    vision.update(num_hidden_layers=vit_layers, patch_size=14, image_size=980, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)
    special = {"bos_token_id": 1, "eos_token_id": 2, "start_of_image_token_id": 3, "end_of_image_token_id": 4} if small else {}
    return RobustU1Config(text_config=text, vision_config=vision, **special)


def random_model(config, device, dtype=torch.bfloat16):
    """Random weights straight on ``device`` in ``dtype`` (never a float32 copy): std 0.02 Linear/Embedding, unit norms."""
    from robust_u1 import RobustU1ForConditionalGeneration
    from robust_u1.modeling_robust_u1 import sincos_2d_table

    with torch.device("meta"):
        model = RobustU1ForConditionalGeneration(config)
    model.to(dtype).to_empty(device=device)
    generator = torch.Generator(device).manual_seed(0)
    with torch.no_grad():
        for name, tensor in model.named_parameters():
            if name.endswith("pos_embed"):
                side = int(tensor.shape[0] ** 0.5)
                tensor.copy_(sincos_2d_table(side, tensor.shape[1]))
            elif tensor.dim() == 1 and ("norm" in name or name.startswith("vae") and "weight" in name):
                tensor.fill_(1.0)
            elif tensor.dim() == 1:
                tensor.zero_()
            else:
                tensor.normal_(0.0, 0.02, generator=generator)
    model.rebuild_non_persistent_buffers(device)
    for name, buffer in model.named_buffers():
        if buffer.device.type == "meta":
            raise RuntimeError(f"buffer {name} left on meta")
    model.config.dtype = dtype
    return model.eval()


def test_image(size: int):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    base = np.kron(rng.integers(0, 255, (size // 32, size // 32, 3)), np.ones((32, 32, 1)))
    return Image.fromarray(base.astype(np.uint8))


def check_attention(device, small: bool) -> None:
    from robust_u1.attention import PackedAttentionLayout

    config = bagel_width_config(2, 1, small)
    model = random_model(config, device)
    decoder = model.language_model.model
    scale = 8 if small else 1
    splits = [(120 // scale, "causal"), (1024 // scale, "full"), (60 // scale, "causal"), (1024 // scale, "full"), (1024 // scale, "noise")]
    splits = splits + splits[:3]  # two samples: 5 + 3 splits
    layout = PackedAttentionLayout([n for n, _ in splits], [m for _, m in splits], [5, 3])
    total = sum(n for n, _ in splits)
    generator = torch.Generator(device).manual_seed(1)
    embeds = torch.randn(total, config.text_config.hidden_size, device=device, dtype=torch.bfloat16, generator=generator)
    positions = torch.cat([torch.arange(n, device=device) for n in (sum(n for n, _ in splits[:5]), sum(n for n, _ in splits[5:]))])
    gen_mask = torch.zeros(total, dtype=torch.bool, device=device)
    start = 0
    for n, mode in splits:
        gen_mask[start : start + n] = mode == "noise"
        start += n
    outputs, times = {}, {}
    with torch.no_grad():
        for backend in ("sdpa", "flex", "flex", "sdpa"):  # the first of each warms up (and compiles flex)
            sync(device)
            begin = time.perf_counter()
            outputs[backend] = decoder(embeds, positions, gen_mask, layout, attention_backend=backend).float()
            sync(device)
            times[backend] = time.perf_counter() - begin
    deviation = ((outputs["flex"] - outputs["sdpa"]).abs().max() / outputs["sdpa"].abs().max()).item()
    REPORT["attention"] = {"tokens": total, "max_rel_deviation": deviation, "sdpa_ms": times["sdpa"] * 1e3, "flex_ms": times["flex"] * 1e3,
                           "passed": deviation < 2e-2}  # fmt: skip
    log(f"attention  {total} packed tokens, 2 layers bf16: flex vs SDPA max rel Δ {deviation:.1e} "
        f"({'ok' if deviation < 2e-2 else 'FAIL'}); SDPA {times['sdpa'] * 1e3:.1f} ms, flex {times['flex'] * 1e3:.1f} ms")  # fmt: skip
    del model


def check_split(device) -> None:
    from safetensors.torch import load_file

    from robust_u1 import RobustU1ForConditionalGeneration
    from robust_u1.generation_robust_u1 import EditInputs
    from robust_u1.packing import TextBlock, VitImageBlock

    parity = ROOT / "tests" / "fixtures" / "bagel-tiny"
    golden = load_file(str(parity / "cases.safetensors"))

    def run(model):
        inputs = EditInputs([golden["edit/vae_pixel_values"]], [golden["edit/vit_pixel_values"]], [golden["edit/prompt_ids"]])
        latent = model.recover(inputs, num_inference_steps=8, latents=[golden["edit_full/text_channel/init_noise"]],
                               output_type="latent", sample_posterior=False, progress=False)[0]  # fmt: skip
        blocks = [VitImageBlock(golden["edit/vit_pixel_values"].to(model.device)), TextBlock(golden["edit/prompt_ids"])]
        ids = model.generate([blocks], max_new_tokens=8)
        cache = model.new_cache(1)
        return latent.float().cpu(), ids.cpu(), sorted({str(k[0].device) for k in cache.keys})

    main = "cuda:0" if torch.device(device).type == "cuda" else "cpu"
    whole = RobustU1ForConditionalGeneration.from_pretrained(parity, device_map=main)
    split_map = {"": 0 if main != "cpu" else "cpu", "language_model.model.layers.1": "cpu", "vae.decoder": "cpu"}
    with tempfile.TemporaryDirectory() as offload:
        split = RobustU1ForConditionalGeneration.from_pretrained(parity, device_map=split_map, offload_folder=offload)
        (a_latent, a_ids, a_dev), (b_latent, b_ids, b_dev) = run(whole), run(split)
    deviation = (a_latent - b_latent).abs().max().item()
    passed = deviation < 1e-4 and torch.equal(a_ids, b_ids)
    REPORT["split"] = {"latent_max_abs_deviation": deviation, "ids_equal": torch.equal(a_ids, b_ids), "cache_devices": b_dev, "passed": passed}
    log(f"split      all-GPU vs layer 1 + VAE decoder on CPU: recover() latent max |Δ| {deviation:.1e}, generate() ids "
        f"{'equal' if torch.equal(a_ids, b_ids) else 'DIFFER'}, cache on {b_dev} ({'ok' if passed else 'FAIL'})")  # fmt: skip


def measured_recover(model, size: int, steps: int, device) -> dict:
    image = test_image(size)
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        model.recover(image, num_inference_steps=3, generator=torch.Generator().manual_seed(0), progress=False)  # warm-up
        sync(device)
        begin = time.perf_counter()
        latent = model.recover(image, num_inference_steps=steps, output_type="latent", generator=torch.Generator().manual_seed(0), progress=False)
        sync(device)
    seconds = time.perf_counter() - begin
    peak = torch.cuda.max_memory_allocated() / GIB if torch.device(device).type == "cuda" else float("nan")
    return {"seconds": seconds, "per_step_ms": seconds / (steps - 1) * 1e3, "peak_gib": peak, "latent": latent.float().cpu()}


def check_quantization(device, small: bool, steps: int) -> None:
    from robust_u1 import RobustU1ForConditionalGeneration
    from robust_u1.loading import quantization_config_for
    from robust_u1.tiny import tiny_processor

    config = bagel_width_config(2, 2, small)
    size = 64 if small else 512
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        model = random_model(config, "cpu")
        model.save_pretrained(folder)
        del model
        processor = tiny_processor() if small else None
        for mode in ("bf16", "nf4", "int8"):
            if torch.device(device).type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            kwargs = {"dtype": torch.bfloat16, "device_map": "cuda:0" if torch.device(device).type == "cuda" else "cpu"}
            if mode != "bf16":
                kwargs["quantization_config"] = quantization_config_for(mode, compute_dtype=torch.bfloat16)
            model = RobustU1ForConditionalGeneration.from_pretrained(folder, **kwargs)
            model.processor = processor or model.processor
            if model.processor is None:
                from robust_u1.processing_robust_u1 import RobustU1ImageProcessor

                model.processor = RobustU1ImageProcessor()
            weights = torch.cuda.memory_allocated() / GIB if torch.device(device).type == "cuda" else float("nan")
            run = measured_recover_ids(model, size, steps, device)
            results[mode] = {"weights_gib": weights, **{k: v for k, v in run.items() if k != "latent"}, "latent": run["latent"]}
            del model
    reference = results["bf16"].pop("latent")
    for mode in ("nf4", "int8"):
        latent = results[mode].pop("latent")
        results[mode]["latent_rel_deviation"] = ((latent - reference).abs().max() / reference.abs().max()).item()
    REPORT["quantization"] = results
    for mode, r in results.items():
        extra = f", latent max rel Δ vs bf16 {r['latent_rel_deviation']:.1e}" if "latent_rel_deviation" in r else ""
        log(f"quantize   {mode:>4}: weights {r['weights_gib']:.2f} GiB, recover() {size}² peak {r['peak_gib']:.2f} GiB, "
            f"{r['per_step_ms']:.0f} ms/step ({results['bf16']['per_step_ms'] / r['per_step_ms']:.2f}× bf16 speed){extra}")  # fmt: skip


def measured_recover_ids(model, size: int, steps: int, device) -> dict:
    """recover() with the prompt as token ids (random-weight models have no tokenizer)."""
    original = model.recover

    def recover(image, **kwargs):
        return original(image, prompt=list(range(10, 21)), **kwargs)

    model.recover = recover
    try:
        return measured_recover(model, size, steps, device)
    finally:
        model.recover = original


def check_recover(device, small: bool, steps: int) -> None:
    from robust_u1.memory import estimate_memory
    from robust_u1.processing_robust_u1 import RobustU1ImageProcessor

    per_layer_bytes = 2 * (2 * 3584 * 3584 + 2 * 3584 * 512 + 3 * 3584 * 18944) * 2  # two experts, bf16
    if torch.device(device).type == "cuda":
        free, _ = torch.cuda.mem_get_info()
        layers = int(min(28, max(1, (free - 14 * GIB) // per_layer_bytes)))
    else:
        layers = 2
    config = bagel_width_config(layers, 2 if small else 26, small)
    model = random_model(config, device)
    model.processor = RobustU1ImageProcessor() if not small else RobustU1ImageProcessor(vae_max_size=128, vae_min_size=32, vit_max_size=112, vit_min_size=28)
    results = {"decoder_layers": layers}
    for size in (512, 1024) if not small else (64,):
        run = measured_recover_ids(model, size, steps, device)
        run.pop("latent")
        estimate = estimate_memory(config, image_size=size, prompt_tokens=11)
        run["estimated_gib"] = estimate.total / GIB
        results[f"{size}"] = run
        log(f"recover    {layers}/28 layers, {size}², {steps} points: {run['per_step_ms']:.0f} ms/step, {run['seconds']:.1f} s, "
            f"peak {run['peak_gib']:.2f} GiB (estimate_memory: {run['estimated_gib']:.2f} GiB)")  # fmt: skip
    REPORT["recover"] = results
    del model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke-cpu", action="store_true", help="Toy widths on the CPU: exercises the code paths only.")
    parser.add_argument("--steps", type=int, default=50, help="Schedule points of the timed recover() calls.")
    parser.add_argument("--only", nargs="*", default=["attention", "split", "quantization", "recover"])
    args = parser.parse_args()
    if not args.smoke_cpu and not torch.cuda.is_available():
        print("gpu_check.py needs a CUDA GPU (torch.cuda.is_available() is False); run it on a GPU machine, or pass --smoke-cpu.", file=sys.stderr)
        return 2
    device = "cpu" if args.smoke_cpu else "cuda"
    small = args.smoke_cpu
    REPORT["device"] = torch.cuda.get_device_name(0) if device == "cuda" else "cpu (smoke)"
    log(f"gpu_check on {REPORT['device']}, torch {torch.__version__}")
    started = time.perf_counter()
    checks = {"attention": lambda: check_attention(device, small), "split": lambda: check_split(device),
              "quantization": lambda: check_quantization(device, small, min(args.steps, 10)),
              "recover": lambda: check_recover(device, small, args.steps if not small else 4)}  # fmt: skip
    for name in args.only:
        try:
            checks[name]()
        except Exception as error:  # report and go on: one failing check must not hide the others
            REPORT[name] = {"error": f"{type(error).__name__}: {error}"}
            log(f"{name:<10} ERROR {type(error).__name__}: {error}")
        if device == "cuda":
            torch.cuda.empty_cache()
    REPORT["seconds"] = time.perf_counter() - started
    log(f"total {REPORT['seconds']:.0f} s")
    if os.environ.get("OUT"):
        out = Path(os.environ["OUT"]) / "gpu_check.json"
        tmp = out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(REPORT, indent=2, default=str))
        os.replace(tmp, out)
    failed = [name for name in args.only if isinstance(REPORT.get(name), dict) and (REPORT[name].get("error") or REPORT[name].get("passed") is False)]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
