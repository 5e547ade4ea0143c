"""Load the official BAGEL / Robust-U1 checkpoint layout and convert it to the Hugging Face layout.

Official layout (``ByteDance-Seed/BAGEL-7B-MoT``, ``Jiaqi-hkust/Robust-U1``): ``llm_config.json``,
``vit_config.json``, ``ae.safetensors`` (FLUX VAE, BFL key names), the model state dict in
``ema.safetensors`` (or ``model.safetensors`` / ``model_bf16.safetensors``) and the Qwen2 tokenizer.
The HF layout is what `save_pretrained` writes: ``config.json`` + ``model*.safetensors`` (VAE keys
in diffusers names under ``vae.``) + the processor files.

Usage:

```bash
robust-u1 convert /path/to/BAGEL-7B-MoT ./bagel-7b-hf --dtype bfloat16
python -m robust_u1.convert_bagel_weights_to_hf --input_dir ByteDance-Seed/BAGEL-7B-MoT --output_dir ./bagel-7b-hf
```
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import torch
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
from safetensors import safe_open

from .configuration_robust_u1 import FLUX_VAE_CONFIG, RobustU1Config

OFFICIAL_WEIGHT_FILES = ("ema.safetensors", "model.safetensors", "model_bf16.safetensors")
OFFICIAL_CONFIG_FILES = ("llm_config.json", "vit_config.json")
# Settings the official loaders pass in code rather than in the config files (BAGEL's ``app.py`` and
# ``inference.ipynb``: ``BagelConfig(latent_patch_size=2, max_latent_size=64, vit_max_num_patch_per_side=70,
# connector_act="gelu_pytorch_tanh")``, ``llm_config.qk_norm = True``, ``vit_config.num_hidden_layers -= 1``).
OFFICIAL_CODE_DEFAULTS: dict[str, Any] = {
    "latent_patch_size": 2,
    "max_latent_size": 64,
    "vit_max_num_patch_per_side": 70,
    "connector_act": "gelu_pytorch_tanh",
}
TEXT_CONFIG_KEYS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "hidden_act", "max_position_embeddings", "rms_norm_eps", "rope_parameters",
    "initializer_range", "tie_word_embeddings",
)  # fmt: skip
VISION_CONFIG_KEYS = (
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_channels",
    "image_size", "patch_size", "hidden_act", "layer_norm_eps", "attention_dropout",
)  # fmt: skip


def resolve_official_checkpoint(path_or_repo_id: str | os.PathLike, **hub_kwargs) -> Path | None:
    """The local folder of an official-layout checkpoint, downloading it from the Hub if needed.

    Returns None when the path or repository holds the Hugging Face layout (a ``config.json`` of
    model type ``robust_u1``) or no official config.
    """
    path = Path(path_or_repo_id)
    if path.is_dir():
        return path if _is_official_layout(set(os.listdir(path)), path) else None
    from huggingface_hub import HfApi, snapshot_download

    hub_kwargs = {k: v for k, v in hub_kwargs.items() if k in ("revision", "token", "cache_dir", "local_files_only")}
    if hub_kwargs.get("local_files_only"):
        files = None
    else:
        files = set(HfApi(token=hub_kwargs.get("token")).list_repo_files(str(path_or_repo_id), revision=hub_kwargs.get("revision")))
        if not _is_official_layout(files, None):
            return None
        weights = next(f for f in OFFICIAL_WEIGHT_FILES if f in files)
        hub_kwargs["allow_patterns"] = ["*.json", "*.txt", "*.model", "ae.safetensors", weights]
    folder = Path(snapshot_download(str(path_or_repo_id), **hub_kwargs))
    return folder if files is not None or _is_official_layout(set(os.listdir(folder)), folder) else None


def _is_official_layout(files: set[str], folder: Path | None) -> bool:
    if not all(name in files for name in OFFICIAL_CONFIG_FILES):
        return False
    if "config.json" in files and folder is not None:
        with open(folder / "config.json") as f:
            if json.load(f).get("model_type") == RobustU1Config.model_type:
                return False
    return True


def official_config(folder: str | os.PathLike) -> RobustU1Config:
    """`RobustU1Config` of an official checkpoint folder.

    Reads ``llm_config.json`` and ``vit_config.json`` (dropping the ViT's last layer as the official
    loaders do), ``ae_params.json`` when present (else the FLUX VAE) and the optional
    ``bagel_config.json`` of reference folders for the settings the official code passes in code.
    """
    folder = Path(folder)
    from transformers import Qwen2Config, SiglipVisionConfig

    llm = Qwen2Config(**json.loads((folder / "llm_config.json").read_text()))
    vit = SiglipVisionConfig(**json.loads((folder / "vit_config.json").read_text()))
    text_config = {k: getattr(llm, k) for k in TEXT_CONFIG_KEYS}
    vision_config = {k: getattr(vit, k) for k in VISION_CONFIG_KEYS}

    extra = dict(OFFICIAL_CODE_DEFAULTS)
    bagel_file = folder / "bagel_config.json"
    if bagel_file.exists():
        bagel = json.loads(bagel_file.read_text())
        extra.update({k: bagel[k] for k in (*OFFICIAL_CODE_DEFAULTS, "timestep_shift") if k in bagel})
        ids = bagel.get("special_token_ids", {})
        extra.update(
            bos_token_id=ids.get("bos_token_id"), eos_token_id=ids.get("eos_token_id"),
            start_of_image_token_id=ids.get("start_of_image"), end_of_image_token_id=ids.get("end_of_image"),
        )  # fmt: skip
        vision_config["num_hidden_layers"] = bagel.get("vit_num_hidden_layers_used", vit.num_hidden_layers - 1)
    else:
        vision_config["num_hidden_layers"] = vit.num_hidden_layers - 1
    extra = {k: v for k, v in extra.items() if v is not None}

    ae_file = folder / "ae_params.json"
    vae_config = dict(FLUX_VAE_CONFIG)
    if ae_file.exists():
        ae = json.loads(ae_file.read_text())
        levels = len(ae["ch_mult"])
        vae_config.update(
            in_channels=ae["in_channels"], out_channels=ae["out_ch"], latent_channels=ae["z_channels"],
            block_out_channels=[ae["ch"] * m for m in ae["ch_mult"]], layers_per_block=ae["num_res_blocks"],
            down_block_types=["DownEncoderBlock2D"] * levels, up_block_types=["UpDecoderBlock2D"] * levels,
            scaling_factor=ae["scale_factor"], shift_factor=ae["shift_factor"],
        )  # fmt: skip
    return RobustU1Config(text_config=text_config, vision_config=vision_config, vae_config=vae_config, **extra)


def _read_safetensors(path: Path, dtype: torch.dtype | None, device: str) -> dict[str, torch.Tensor]:
    """Tensors of one file, each cast as it is read (never two full copies of the weights)."""
    tensors = {}
    with safe_open(str(path), framework="pt", device=device) as f:
        for key in f.keys():
            tensor = f.get_tensor(key)
            tensors[key] = tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor
    return tensors


def official_state_dict(folder: Path, config: RobustU1Config, dtype=None, device: str = "cpu") -> dict[str, torch.Tensor]:
    """The model state dict of an official folder, VAE keys converted to diffusers names under ``vae.``."""
    weights = next((folder / f for f in OFFICIAL_WEIGHT_FILES if (folder / f).exists()), None)
    if weights is None:
        raise FileNotFoundError(
            f"No weights in {folder}: expected one of {', '.join(OFFICIAL_WEIGHT_FILES)} (only safetensors are loaded)."
        )
    if not (folder / "ae.safetensors").exists():
        raise FileNotFoundError(f"No VAE in {folder}: expected ae.safetensors (the FLUX autoencoder).")
    state = _read_safetensors(weights, dtype, device)
    vae = convert_ldm_vae_checkpoint(_read_safetensors(folder / "ae.safetensors", dtype, device), config.vae_config)
    state.update({f"vae.{k}": v for k, v in vae.items()})
    return state


def load_state_dict_strictly(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Assigns ``state`` into a (meta-device) model after checking every key and shape by name."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if state[k].shape != expected[k].shape
    ]
    problems = []
    for title, items in (("missing", missing), ("unexpected", unexpected), ("of the wrong shape", wrong_shape)):
        if items:
            shown = ", ".join(items[:8]) + (f" … (+{len(items) - 8} more)" if len(items) > 8 else "")
            problems.append(f"{len(items)} key(s) {title}: {shown}")
    if problems:
        raise ValueError(
            f"The checkpoint {source} does not match the model built from its config. "
            + "; ".join(problems)
            + ". Check that the config files belong to these weights."
        )
    model.load_state_dict(state, strict=True, assign=True)


def load_official_checkpoint(folder: str | os.PathLike, model_class=None, dtype=None, device: str = "cpu"):
    """Builds the model on the meta device and streams the official weights into it."""
    from .modeling_robust_u1 import RobustU1ForConditionalGeneration

    model_class = model_class or RobustU1ForConditionalGeneration
    folder = Path(folder)
    dtype = _as_dtype(dtype)
    config = official_config(folder)
    with torch.device("meta"):
        model = model_class(config)
    load_state_dict_strictly(model, official_state_dict(folder, config, dtype, device), str(folder))
    model.rebuild_non_persistent_buffers(device)
    if dtype is not None:
        model.config.dtype = dtype
    model.eval()
    return model


def _as_dtype(dtype) -> torch.dtype | None:
    if dtype is None or dtype == "auto":
        return None
    return getattr(torch, dtype) if isinstance(dtype, str) else dtype


def convert_bagel_checkpoint(
    input_dir: str | os.PathLike, output_dir: str | os.PathLike, dtype: str | torch.dtype | None = None, max_shard_size: str = "5GB"
) -> Path:
    """Writes the Hugging Face layout (model, config and, when tokenizer files exist, the processor).

    Example:
        >>> convert_bagel_checkpoint("BAGEL-7B-MoT", "bagel-7b-hf", dtype="bfloat16")
    """
    folder = resolve_official_checkpoint(input_dir)
    if folder is None:
        raise ValueError(
            f"{input_dir} is not an official BAGEL checkpoint: it needs {' and '.join(OFFICIAL_CONFIG_FILES)}, "
            f"ae.safetensors and one of {', '.join(OFFICIAL_WEIGHT_FILES)}."
        )
    model = load_official_checkpoint(folder, dtype=dtype)
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir, max_shard_size=max_shard_size)
    processor = official_processor(folder)
    if processor is not None:
        processor.save_pretrained(output_dir)
    return output_dir


def official_processor(folder: Path):
    """The processor of an official folder (its Qwen2 tokenizer, BAGEL's transforms), or None without tokenizer files."""
    if not any((folder / name).exists() for name in ("tokenizer.json", "vocab.json", "tokenizer_config.json")):
        return None
    from transformers import AutoTokenizer

    from .processing_robust_u1 import RobustU1ImageProcessor, RobustU1Processor

    return RobustU1Processor(image_processor=RobustU1ImageProcessor(), tokenizer=AutoTokenizer.from_pretrained(folder))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input_dir", required=True, help="Official checkpoint folder or Hub id.")
    parser.add_argument("--output_dir", required=True, help="Where to write the Hugging Face layout.")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--max_shard_size", default="5GB")
    args = parser.parse_args(argv)
    out = convert_bagel_checkpoint(args.input_dir, args.output_dir, args.dtype, args.max_shard_size)
    print(f"Wrote the Hugging Face layout to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
