"""Memory needed to recover an image, from the config alone (like ``accelerate estimate-memory``).

`estimate_memory` counts the parameters of the model built on the meta device (no weight is read or
allocated), then adds the KV caches of the three editing contexts at the requested image size and the
largest transient activations of one recovery. Figures are bytes; the CLI prints GiB.

How each figure is derived (also in the README):

- **weights**: every parameter × bytes of ``dtype``; in a quantized mode the Linear weights that are
  quantized (all but ``_skip_modules_for_quantization``) take NF4: ½ byte per weight + one fp32
  absmax per block of 64 (bitsandbytes), INT8: 1 byte per weight + one fp32 scale per output row
  (bitsandbytes ``SCB``, torchao); biases and all other parameters stay in ``dtype``.
- **KV caches**: tokens × layers × 2 (K, V) × KV heads × head dim × bytes of ``dtype`` (caches are
  never quantized). The image is resized as the processor does (VAE side 512–1024 in steps of 16,
  one token per 16×16 pixels; ViT side 224–980 in steps of 14, one token per 14×14); each image
  block adds its two markers, each text block ``<|im_start|>``/``<|im_end|>``. gen = VAE + ViT +
  prompt, cfg_text = VAE + ViT (its own tensors once the prompt is appended to gen), cfg_img = prompt.
- **activations**: the largest of (a) one denoising step — the 3 contexts' noisy latent queries
  batched, per token 4 hidden-size and 3 MLP-size vectors in flight plus each context's keys/values
  concatenated with the new ones, (b) the ViT prefill — SigLIP over the ViT tokens, then the LLM over
  them, (c) the VAE decode — about 6 feature maps of the widest VAE level at full resolution.
  Attention scores are not counted: SDPA's flash / memory-efficient kernels (CUDA) never hold them.
  No gradient is kept (inference), so activations are per layer, not summed over layers.

The CUDA context (≈0.5 GiB) and the allocator's fragmentation come on top.

Example:
    >>> from robust_u1.memory import estimate_memory
    >>> estimate = estimate_memory("ByteDance-Seed/BAGEL-7B-MoT", image_size=1024, quantize="nf4")
    >>> print(estimate.total / 2**30)
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

QUANTIZED_BITS = {None: None, "nf4": 4, "int8": 8, "int8-torchao": 8}
MODE_NAMES = {None: "bf16", "nf4": "NF4", "int8": "INT8", "int8-torchao": "INT8 (torchao)"}
NF4_BLOCK = 64
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass
class MemoryEstimate:
    """Bytes needed by one recovery (batch of one image) in one mode."""

    mode: str
    image_size: int
    weights: int
    kv_caches: dict[str, int] = field(default_factory=dict)
    activations: int = 0
    tokens: dict[str, int] = field(default_factory=dict)

    @property
    def kv_cache(self) -> int:
        return sum(self.kv_caches.values())

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.activations


def load_config(name_or_path: str | os.PathLike):
    """The `RobustU1Config` of a folder or Hub id (either layout), reading config files only."""
    from .configuration_robust_u1 import RobustU1Config
    from .loading import OFFICIAL_CONFIG_FILES, looks_like_local_path, folder_layout, official_config

    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return official_config(path) if folder_layout(path) == "official" else RobustU1Config.from_pretrained(path)
    if path.exists():
        raise OSError(f"{name_or_path} is a file; pass the checkpoint folder that holds it.")
    if looks_like_local_path(str(name_or_path)):
        raise OSError(f"No such folder: {name_or_path} (and it is not a Hub repository id either); check the path.")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        return RobustU1Config.from_pretrained(name_or_path)
    except OSError:
        pass  # no config.json: the official layout
    try:
        files = [Path(hf_hub_download(str(name_or_path), name)) for name in OFFICIAL_CONFIG_FILES]
    except (EntryNotFoundError, LocalEntryNotFoundError, OSError) as error:
        raise OSError(
            f"Cannot read the config of {name_or_path}: neither config.json nor {' + '.join(OFFICIAL_CONFIG_FILES)} "
            f"could be found locally or on the Hub ({type(error).__name__})."
        ) from None
    for optional in ("ae_params.json", "bagel_config.json"):
        try:
            hf_hub_download(str(name_or_path), optional)
        except (EntryNotFoundError, LocalEntryNotFoundError, OSError):
            pass
    return official_config(files[0].parent)


def image_tokens(config, image_size: int, processor=None) -> tuple[int, int]:
    """VAE and ViT tokens of a square ``image_size`` image after the processor's resize rules."""
    from .processing_robust_u1 import RobustU1ImageProcessor, resized_size

    p = processor or RobustU1ImageProcessor()
    vae_w, vae_h = resized_size(image_size, image_size, p.vae_max_size, p.vae_min_size, p.vae_stride, p.vae_max_pixels)
    vit_w, vit_h = resized_size(image_size, image_size, p.vit_max_size, p.vit_min_size, p.vit_stride, p.vit_max_pixels)
    side = config.pixels_per_latent_token
    patch = config.vision_config.patch_size
    return (vae_w // side) * (vae_h // side), (vit_w // patch) * (vit_h // patch)


@functools.lru_cache(maxsize=8)
def _parameter_counts(config_json: str) -> tuple[int, int, int, int]:
    """(quantizable Linear weights, their output rows, their 64-blocks, all other parameters) of a config."""
    import torch

    from .configuration_robust_u1 import RobustU1Config
    from .modeling_robust_u1 import RobustU1ForConditionalGeneration

    with torch.device("meta"):  # shapes only: nothing is allocated
        model = RobustU1ForConditionalGeneration(RobustU1Config.from_dict(json.loads(config_json)))
    skips = model._skip_modules_for_quantization
    quantizable, rows, blocks, ids = 0, 0, 0, set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and not any(name == s or name.startswith(s + ".") for s in skips):
            quantizable += module.weight.numel()
            rows += module.weight.shape[0]
            blocks += -(-module.weight.numel() // NF4_BLOCK)
            ids.add(id(module.weight))
    others = sum(p.numel() for p in model.parameters() if id(p) not in ids)
    return quantizable, rows, blocks, others


def _parameter_bytes(config, quantize: str | None, dtype_bytes: int) -> int:
    quantizable, rows, blocks, others = _parameter_counts(config.to_json_string(use_diff=False))
    bits = QUANTIZED_BITS[quantize]
    if bits is None:
        return (quantizable + others) * dtype_bytes
    if bits == 4:  # two weights per byte + one fp32 absmax per block of 64
        return quantizable // 2 + blocks * 4 + others * dtype_bytes
    return quantizable + rows * 4 + others * dtype_bytes  # one byte per weight + one fp32 scale per row


def estimate_memory(
    model: str | os.PathLike | object,
    image_size: int = 1024,
    quantize: str | None = None,
    dtype: str = "bfloat16",
    prompt_tokens: int = 32,
) -> MemoryEstimate:
    """Weights, KV caches of the three editing contexts and peak activations of one recovery, in bytes.

    Args:
        model: a folder or Hub id (either layout; only config files are read) or a `RobustU1Config`.
        image_size: side of the (square) input image in pixels, before the processor's resize.
        quantize: None (``dtype`` weights), ``"nf4"``, ``"int8"`` or ``"int8-torchao"``.
        dtype: ``bfloat16`` (default), ``float16`` or ``float32``: the weights' dtype and the compute dtype.
        prompt_tokens: tokens of the recovery prompt (Robust-U1's is 11 with Qwen2's tokenizer).

    Example:
        >>> estimate_memory("Jiaqi-hkust/Robust-U1", image_size=512).total / 2**30
    """
    from .configuration_robust_u1 import RobustU1Config

    if quantize not in QUANTIZED_BITS:
        raise ValueError(f"quantize must be one of nf4, int8, int8-torchao or None, got {quantize!r}.")
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPE_BYTES)}, got {dtype!r}.")
    if not isinstance(image_size, int) or image_size < 16:
        raise ValueError(f"image_size must be an integer number of pixels ≥ 16, got {image_size!r}.")
    config = model if isinstance(model, RobustU1Config) else load_config(model)
    nbytes = DTYPE_BYTES[dtype]
    text, vision = config.text_config, config.vision_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    per_token = text.num_hidden_layers * 2 * text.num_key_value_heads * head_dim * nbytes

    vae_tokens, vit_tokens = image_tokens(config, image_size)
    vae_block, vit_block, prompt_block = vae_tokens + 2, vit_tokens + 2, prompt_tokens + 2
    tokens = {"gen": vae_block + vit_block + prompt_block, "cfg_text": vae_block + vit_block, "cfg_img": prompt_block}
    kv = {name: count * per_token for name, count in tokens.items()}

    kv_dim_bytes = 2 * text.num_key_value_heads * head_dim * nbytes  # K and V of one token, one layer
    step_tokens = 3 * vae_block  # the noisy latents against gen, cfg_text and cfg_img at once
    step = step_tokens * (4 * text.hidden_size + 3 * text.intermediate_size) * nbytes
    step += sum(tokens.values()) * kv_dim_bytes + step_tokens * kv_dim_bytes  # cache ⧺ new keys/values
    vit = vit_block * max(4 * vision.hidden_size + 2 * vision.intermediate_size, 4 * text.hidden_size + 3 * text.intermediate_size) * nbytes
    vae_side = image_tokens(config, image_size)[0] ** 0.5 * config.pixels_per_latent_token
    vae = int(6 * config.vae_config["block_out_channels"][0] * vae_side**2 * nbytes)
    return MemoryEstimate(
        mode=MODE_NAMES[quantize],
        image_size=image_size,
        weights=_parameter_bytes(config, quantize, nbytes),
        kv_caches=kv,
        activations=int(max(step, vit, vae)),
        tokens={**tokens, "vae_image": vae_tokens, "vit_image": vit_tokens},
    )


def format_estimates(estimates: list[MemoryEstimate]) -> str:
    """A Markdown table in GiB, one row per estimate."""
    gib = 2**30
    rows = [
        "| mode | image | weights | KV caches (gen / cfg_text / cfg_img) | activations | total |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for e in estimates:
        caches = " / ".join(f"{e.kv_caches[name] / gib:.2f}" for name in ("gen", "cfg_text", "cfg_img"))
        rows.append(
            f"| {e.mode} | {e.image_size}² | {e.weights / gib:.2f} GiB | {e.kv_cache / gib:.2f} GiB ({caches}) | "
            f"{e.activations / gib:.2f} GiB | **{e.total / gib:.2f} GiB** |"
        )
    return "\n".join(rows)
