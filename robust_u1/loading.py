"""Finding and loading Robust-U1 checkpoints of both layouts.

- *Where*: a local folder, or a Hub id — downloaded, or read from the local Hugging Face cache when
  the Hub is offline (``HF_HUB_OFFLINE=1`` or ``local_files_only=True``). A path typo, an uncached
  id, a folder without its weight file and a truncated safetensors file are one-line errors that
  name the path / id / file.
- *What*: the official BAGEL / Robust-U1 layout (``llm_config.json``, ``vit_config.json``,
  ``ae.safetensors``, ``ema.safetensors``) is streamed one tensor at a time into a model built on the
  meta device; every key and shape is checked first (both layouts: a partial checkpoint is an error
  unless ``strict=False``).
- *Where to*: a device map (``"auto"``, ``"balanced"``, ``"sequential"``, a device, or a dict) is
  planned with accelerate in the model's *call units* (the modules our code runs through their own
  ``forward``, so accelerate's hooks see every call) and dispatched with accelerate, disk offload
  included.

`RobustU1ForConditionalGeneration.from_pretrained` and `convert_bagel_weights_to_hf` both use this
module; it never imports the model module (the model class is passed in), so neither imports the
other.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import torch

OFFICIAL_WEIGHT_FILES = ("ema.safetensors", "model.safetensors", "model_bf16.safetensors")
OFFICIAL_CONFIG_FILES = ("llm_config.json", "vit_config.json")
OFFICIAL_VAE_FILE = "ae.safetensors"
HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
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
AUTO_DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
HUB_KWARGS = ("revision", "token", "cache_dir", "local_files_only")


# ----------------------------------------------------------------------------------------------
# Where the checkpoint is
# ----------------------------------------------------------------------------------------------


class CheckpointLocation(NamedTuple):
    """``layout`` is ``"official"`` or ``"hf"``; ``folder`` the local folder (None: a Hub id of the
    Hugging Face layout that transformers downloads itself)."""

    layout: str
    folder: Path | None


def hub_offline(local_files_only: bool = False) -> bool:
    """Whether Hub files may only come from the local cache (read at call time, not import time)."""
    from huggingface_hub import constants

    return bool(local_files_only or constants.HF_HUB_OFFLINE)


def locate_checkpoint(name_or_path: str | os.PathLike, **hub_kwargs) -> CheckpointLocation:
    """The layout and local folder of a checkpoint given as a folder or a Hub id.

    Hub ids are read from the local cache (no network) when the Hub is offline; an id that is not
    cached, or a local path that does not exist, is a one-line `OSError` naming it.

    Example:
        >>> locate_checkpoint("ByteDance-Seed/BAGEL-7B-MoT")  # with HF_HUB_OFFLINE=1 and a cached copy
        CheckpointLocation(layout='official', folder=PosixPath('~/.cache/huggingface/hub/models--ByteDance-Seed--BAGEL-7B-MoT/snapshots/…'))
    """
    hub_kwargs = {k: v for k, v in hub_kwargs.items() if k in HUB_KWARGS}
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        return CheckpointLocation(folder_layout(path), path)
    if path.exists():
        raise OSError(f"{text} is a file; pass the checkpoint folder that holds it.")
    if looks_like_local_path(text):
        raise OSError(f"No such folder: {text} (and it is not a Hub repository id either); check the path.")
    if hub_offline(hub_kwargs.get("local_files_only", False)):
        return CheckpointLocation(*_cached_snapshot(text, hub_kwargs))
    return _hub_checkpoint(text, hub_kwargs)


def looks_like_local_path(text: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if text.startswith(("/", "./", "../", "~", ".\\")) or "\\" in text or text.count("/") > 1:
        return True
    if "/" in text and Path(text.split("/")[0]).is_dir():
        return True  # "checkpoints/run-1" next to a local "checkpoints" folder is a path typo
    try:
        validate_repo_id(text)
    except HFValidationError:
        return True
    return False


def _cached_snapshot(repo_id: str, hub_kwargs: dict) -> tuple[str, Path]:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(
            snapshot_download(
                repo_id, revision=hub_kwargs.get("revision"), cache_dir=hub_kwargs.get("cache_dir"), local_files_only=True
            )
        )
    except LocalEntryNotFoundError:
        cache = hub_kwargs.get("cache_dir") or constants.HF_HUB_CACHE
        raise OSError(
            f"{repo_id} is neither a local folder nor in the local Hugging Face cache ({cache}), and the Hub is offline: download it first "
            f"with `hf download {repo_id}` where there is internet (and copy the cache here), or pass a local folder."
        ) from None
    return folder_layout(folder), folder


def _hub_checkpoint(repo_id: str, hub_kwargs: dict) -> CheckpointLocation:
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import OfflineModeIsEnabled, RepositoryNotFoundError, RevisionNotFoundError

    try:
        files = set(HfApi(token=hub_kwargs.get("token")).list_repo_files(repo_id, revision=hub_kwargs.get("revision")))
    except OfflineModeIsEnabled:
        return CheckpointLocation(*_cached_snapshot(repo_id, hub_kwargs))
    except (RepositoryNotFoundError, RevisionNotFoundError) as error:
        raise OSError(f"{repo_id} is neither a local folder nor a Hub repository you can read ({type(error).__name__}).") from None
    if "config.json" in files:
        if not any(name in files for name in HF_WEIGHT_FILES):
            raise FileNotFoundError(f"{repo_id} has config.json but no weights: expected {' or '.join(HF_WEIGHT_FILES)}.")
        return CheckpointLocation("hf", None)  # transformers downloads it
    if not all(name in files for name in OFFICIAL_CONFIG_FILES):
        raise OSError(f"{repo_id} holds no Robust-U1 checkpoint: {_layout_help()}")
    weights = next((name for name in OFFICIAL_WEIGHT_FILES if name in files), None)
    if weights is None:
        raise FileNotFoundError(f"{repo_id} has the official config files but no weights: expected one of {', '.join(OFFICIAL_WEIGHT_FILES)}.")
    if OFFICIAL_VAE_FILE not in files:
        raise FileNotFoundError(f"{repo_id} has no VAE: expected {OFFICIAL_VAE_FILE} (the FLUX autoencoder).")
    patterns = ["*.json", "*.txt", "*.model", OFFICIAL_VAE_FILE, weights]
    kwargs = {k: hub_kwargs.get(k) for k in ("revision", "token", "cache_dir")}
    return CheckpointLocation("official", Path(snapshot_download(repo_id, allow_patterns=patterns, **kwargs)))


def _layout_help() -> str:
    return (
        "expected config.json + model.safetensors (Hugging Face layout) or "
        f"{' + '.join(OFFICIAL_CONFIG_FILES)} + {OFFICIAL_VAE_FILE} + {OFFICIAL_WEIGHT_FILES[0]} (official layout)."
    )


def folder_layout(folder: Path) -> str:
    """``"hf"`` (a ``config.json`` of model type ``robust_u1``) or ``"official"``; an error otherwise."""
    names = set(os.listdir(folder))
    if "config.json" in names:
        model_type = read_json(folder / "config.json").get("model_type")
        if model_type == "robust_u1" or not all(name in names for name in OFFICIAL_CONFIG_FILES):
            return "hf"
    if all(name in names for name in OFFICIAL_CONFIG_FILES):
        return "official"
    if "adapter_config.json" in names:
        return "hf"  # a PEFT adapter: transformers loads its base model and the adapter
    raise OSError(f"{folder} holds no Robust-U1 checkpoint: {_layout_help()}")


def read_json(path: Path) -> dict:
    """A JSON file's content; an invalid file is an error that names it."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}); restore the file from the checkpoint.") from None


def check_safetensors(path: Path) -> None:
    """Reads a safetensors header: a truncated or corrupt file is an error that names it."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt"):
            pass
    except SafetensorError as error:
        raise OSError(f"{path} is not a readable safetensors file ({error}); it is probably truncated: download or save it again.") from None


def hf_weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a Hugging Face-layout folder, each header checked; a missing one is named."""
    single, index = folder / HF_WEIGHT_FILES[0], folder / HF_WEIGHT_FILES[1]
    if index.is_file():
        files = [folder / name for name in sorted(set(read_json(index).get("weight_map", {}).values()))]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"{folder} lacks {', '.join(missing)}, listed in {index.name}: download or save the checkpoint again.")
    elif single.is_file():
        files = [single]
    else:
        raise FileNotFoundError(f"{folder} has config.json but no weights: expected {' or '.join(HF_WEIGHT_FILES)}.")
    for file in files:
        check_safetensors(file)
    return files


def official_weight_files(folder: Path) -> tuple[Path, Path]:
    """The model weights and VAE files of an official folder, headers checked."""
    weights = next((folder / f for f in OFFICIAL_WEIGHT_FILES if (folder / f).exists()), None)
    if weights is None:
        raise FileNotFoundError(
            f"No weights in {folder}: expected one of {', '.join(OFFICIAL_WEIGHT_FILES)} (only safetensors are loaded)."
        )
    vae = folder / OFFICIAL_VAE_FILE
    if not vae.exists():
        raise FileNotFoundError(f"No VAE in {folder}: expected {OFFICIAL_VAE_FILE} (the FLUX autoencoder).")
    check_safetensors(weights)
    check_safetensors(vae)
    return weights, vae


# ----------------------------------------------------------------------------------------------
# The official layout
# ----------------------------------------------------------------------------------------------


def official_config(folder: str | os.PathLike):
    """`RobustU1Config` of an official checkpoint folder.

    Reads ``llm_config.json`` and ``vit_config.json`` (dropping the ViT's last layer as the official
    loaders do), ``ae_params.json`` when present (else the FLUX VAE) and the optional
    ``bagel_config.json`` of reference folders for the settings the official code passes in code.
    """
    from transformers import Qwen2Config, SiglipVisionConfig

    from .configuration_robust_u1 import FLUX_VAE_CONFIG, RobustU1Config

    folder = Path(folder)
    llm = Qwen2Config(**read_json(folder / "llm_config.json"))
    vit = SiglipVisionConfig(**read_json(folder / "vit_config.json"))
    text_config = {k: getattr(llm, k) for k in TEXT_CONFIG_KEYS}
    vision_config = {k: getattr(vit, k) for k in VISION_CONFIG_KEYS}

    extra = dict(OFFICIAL_CODE_DEFAULTS)
    bagel_file = folder / "bagel_config.json"
    if bagel_file.exists():
        bagel = read_json(bagel_file)
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
        ae = read_json(ae_file)
        levels = len(ae["ch_mult"])
        vae_config.update(
            in_channels=ae["in_channels"], out_channels=ae["out_ch"], latent_channels=ae["z_channels"],
            block_out_channels=[ae["ch"] * m for m in ae["ch_mult"]], layers_per_block=ae["num_res_blocks"],
            down_block_types=["DownEncoderBlock2D"] * levels, up_block_types=["UpDecoderBlock2D"] * levels,
            scaling_factor=ae["scale_factor"], shift_factor=ae["shift_factor"],
        )  # fmt: skip
    return RobustU1Config(text_config=text_config, vision_config=vision_config, vae_config=vae_config, **extra)


def _official_vae_state(vae_file: Path, vae_config: dict) -> dict[str, torch.Tensor]:
    """The FLUX VAE in diffusers names under ``vae.`` (small: converted in memory with diffusers' own mapping)."""
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
    from safetensors.torch import load_file

    return {f"vae.{k}": v for k, v in convert_ldm_vae_checkpoint(load_file(str(vae_file)), vae_config).items()}


def official_state_dict(folder: Path, config, dtype=None, device: str = "cpu") -> dict[str, torch.Tensor]:
    """The whole state dict of an official folder (VAE keys converted) — for tools and tests; loading streams instead."""
    from safetensors import safe_open

    weights, vae = official_weight_files(Path(folder))
    state = {}
    with safe_open(str(weights), framework="pt", device=device) as f:
        for key in f.keys():
            state[key] = _cast(f.get_tensor(key), dtype)
    state.update({k: _cast(v, dtype).to(device) for k, v in _official_vae_state(vae, config.vae_config).items()})
    return state


def _cast(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    return tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor


def check_checkpoint_keys(
    model: torch.nn.Module, shapes: Mapping[str, tuple[int, ...]], source: str, strict: bool = True
) -> list[str]:
    """Compares a checkpoint's keys and shapes with the model's; returns the missing keys.

    Unexpected or misshaped keys are always an error; missing keys are an error unless
    ``strict=False`` (a deliberate partial load, whose missing weights are initialised).
    """
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong_shape = [
        f"{k}: checkpoint {tuple(shapes[k])} vs model {expected[k]}"
        for k in sorted(set(shapes) & set(expected))
        if tuple(shapes[k]) != expected[k]
    ]
    raise_for_key_problems(source, missing if strict else [], unexpected, wrong_shape)
    return missing


def raise_for_key_problems(source: str, missing, unexpected, wrong_shape) -> None:
    problems = []
    for title, items in (("missing", missing), ("unexpected", unexpected), ("of the wrong shape", wrong_shape)):
        items = sorted(items)
        if items:
            shown = ", ".join(items[:8]) + (f" … (+{len(items) - 8} more)" if len(items) > 8 else "")
            problems.append(f"{len(items)} key(s) {title}: {shown}")
    if problems:
        raise ValueError(
            f"The checkpoint {source} does not match the model built from its config. "
            + "; ".join(problems)
            + ". Check that the config files belong to these weights (strict=False accepts missing keys)."
        )


def load_official_checkpoint(
    folder: str | os.PathLike,
    model_class,
    dtype: str | torch.dtype | None = None,
    device_map: str | dict | torch.device | None = None,
    max_memory: dict | None = None,
    offload_folder: str | os.PathLike | None = None,
    strict: bool = True,
):
    """Builds ``model_class`` on the meta device and streams the official weights into it.

    Every tensor is read, cast to ``dtype`` and put on its place of the device map (a device, or
    the ``offload_folder`` for ``"disk"``) before the next one is read, so the weights are never
    held twice; the model is then dispatched with accelerate when the map has several places.

    Example:
        >>> model = load_official_checkpoint("BAGEL-7B-MoT", RobustU1ForConditionalGeneration, dtype="bfloat16", device_map="auto")
    """
    from accelerate.utils import offload_weight, save_offload_index, set_module_tensor_to_device
    from safetensors import safe_open

    folder = Path(folder)
    dtype = as_dtype(dtype)
    config = official_config(folder)
    weights_file, vae_file = official_weight_files(folder)
    with torch.device("meta"):
        model = model_class(config)
    if dtype is not None:
        model.to(dtype)  # on meta: only sizes the device map right
    plan = plan_device_map(model, device_map if device_map is not None else "cpu", max_memory, dtype)
    places = set(plan.values())
    if "disk" in places and offload_folder is None:
        raise ValueError("The device map offloads to disk: pass offload_folder= (a folder for the offloaded weights).")
    if "disk" in places:
        os.makedirs(offload_folder, exist_ok=True)
    vae_state = _official_vae_state(vae_file, config.vae_config)
    with safe_open(str(weights_file), framework="pt") as f:
        shapes = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
        shapes.update({k: tuple(v.shape) for k, v in vae_state.items()})
        missing = check_checkpoint_keys(model, shapes, str(folder), strict)
        offload_index: dict = {}

        def place(key: str, tensor: torch.Tensor) -> None:
            where = placement_of(plan, key)
            tensor = _cast(tensor, dtype)
            if where == "disk":
                offload_weight(tensor, key, str(offload_folder), offload_index)
            else:
                set_module_tensor_to_device(model, key, where, value=tensor)

        for key in shapes:
            place(key, vae_state.pop(key) if key in vae_state else f.get_tensor(key))
    if missing:  # strict=False: initialise what the checkpoint lacks, on its place
        _initialise_missing(model, missing, plan, dtype)
    if offload_index:
        save_offload_index(offload_index, str(offload_folder))
    single = len(places) == 1 and "disk" not in places
    model.rebuild_non_persistent_buffers(next(iter(places)) if single else "cpu")
    if not single:
        from accelerate import dispatch_model

        dispatch_model(model, plan, offload_dir=str(offload_folder) if offload_folder else None)
        model.hf_device_map = plan
    if dtype is not None:
        model.config.dtype = dtype
    model.eval()
    return model


def _initialise_missing(model, missing: list[str], plan: dict, dtype) -> None:
    from accelerate.utils import set_module_tensor_to_device

    owners = set()
    for key in missing:
        module_name, _, _ = key.rpartition(".")
        tensor = model.get_parameter(key) if key in dict(model.named_parameters()) else model.get_buffer(key)
        where = placement_of(plan, key)
        set_module_tensor_to_device(model, key, "cpu" if where == "disk" else where, value=torch.empty(tensor.shape, dtype=tensor.dtype))
        owners.add(module_name)
    for name in owners:
        model._init_weights(model.get_submodule(name))


def as_dtype(dtype) -> torch.dtype | None:
    if dtype is None or dtype == "auto":
        return None
    return getattr(torch, dtype) if isinstance(dtype, str) else dtype


def official_processor(folder: Path):
    """The processor of an official folder (its Qwen2 tokenizer, BAGEL's transforms), or None without tokenizer files."""
    if not any((folder / name).exists() for name in ("tokenizer.json", "vocab.json", "tokenizer_config.json")):
        return None
    from transformers import AutoTokenizer

    from .processing_robust_u1 import RobustU1ImageProcessor, RobustU1Processor

    return RobustU1Processor(image_processor=RobustU1ImageProcessor(), tokenizer=AutoTokenizer.from_pretrained(folder))


# ----------------------------------------------------------------------------------------------
# Device maps
# ----------------------------------------------------------------------------------------------


def device_map_units(model: torch.nn.Module) -> list[str]:
    """Names of the model's call units (``model._device_map_units`` patterns), in module order.

    Every parameter and buffer belongs to exactly one unit; accelerate places and hooks whole units.
    """
    patterns = [re.compile(p) for p in model._device_map_units]
    units = [name for name, _ in model.named_modules() if name and any(p.fullmatch(name) for p in patterns)]
    covered = tuple(unit + "." for unit in units)
    stray = [name for name, _ in _named_tensors(model) if not name.startswith(covered)]
    if stray:
        raise RuntimeError(f"{type(model).__name__}._device_map_units leaves {stray[:4]} without a unit.")
    return units


def _named_tensors(model):
    yield from model.named_parameters()
    yield from model.named_buffers()


def placement_of(device_map: Mapping[str, Any], name: str):
    """The place of a module or tensor name: the value of the longest device-map key covering it."""
    best = None
    for key in device_map:
        if key == "" or name == key or name.startswith(key + "."):
            if best is None or len(key) > len(best):
                best = key
    if best is None:
        raise ValueError(f"The device map places no module for {name}.")
    return device_map[best]


def plan_device_map(
    model: torch.nn.Module,
    device_map: str | int | torch.device | Mapping[str, Any],
    max_memory: Mapping[Any, Any] | None = None,
    dtype: torch.dtype | None = None,
) -> dict[str, Any]:
    """A device map in the model's call units, its shared modules on one device.

    ``device_map`` is a device (``"cpu"``, ``"cuda:0"``, ``0``), a strategy (``"auto"``,
    ``"balanced"``, ``"balanced_low_0"``, ``"sequential"``: accelerate's
    ``infer_auto_device_map`` under ``max_memory``, never splitting ``model._no_split_modules``) or
    a dict of module names to devices / ``"cpu"`` / ``"disk"``. The modules of
    ``model._same_device_modules`` go where the token embeddings go, as the official loader does:
    their outputs are added together or indexed by the same routing.

    Example:
        >>> plan_device_map(model, "auto", max_memory={0: "20GiB", 1: "20GiB", "cpu": "64GiB"})
        {'language_model.model.embed_tokens': 0, ..., 'language_model.model.layers.27': 1, 'vae.decoder': 1}
    """
    units = device_map_units(model)
    if isinstance(device_map, (int, torch.device)) or (isinstance(device_map, str) and device_map not in AUTO_DEVICE_MAPS):
        device = _as_place(device_map)
        return dict.fromkeys(units, device)
    if isinstance(device_map, str):
        from accelerate.utils import get_balanced_memory, infer_auto_device_map

        no_split = list(model._no_split_modules)
        if max_memory is not None:
            max_memory = {_as_place(k): v for k, v in max_memory.items()}
        if device_map != "sequential":
            max_memory = get_balanced_memory(
                model, max_memory, no_split_module_classes=no_split, dtype=dtype, low_zero=device_map == "balanced_low_0"
            )
        device_map = infer_auto_device_map(model, max_memory=max_memory, no_split_module_classes=no_split, dtype=dtype)
    device_map = {key: _as_place(value) for key, value in dict(device_map).items()}
    module_names = {name for name, _ in model.named_modules()} | {name for name, _ in _named_tensors(model)}
    unknown = sorted(k for k in device_map if k and k not in module_names)
    if unknown:
        raise ValueError(f"device_map names {unknown[:4]}, which are not modules of {type(model).__name__}.")
    plan = {}
    for unit in units:
        inner = {str(v) for k, v in device_map.items() if k.startswith(unit + ".")}
        if len(inner | {str(_maybe_place(device_map, unit))} - {"None"}) > 1:
            raise ValueError(f"device_map splits {unit} over several devices; it runs as one block, so give it one device.")
        place = _maybe_place(device_map, unit)
        plan[unit] = place if place is not None else next(v for k, v in device_map.items() if k.startswith(unit + "."))
    anchor = plan[model._same_device_modules[0]]
    for unit in units:
        if any(unit == m or unit.startswith(m + ".") for m in model._same_device_modules):
            plan[unit] = anchor
    return plan


def _maybe_place(device_map, name):
    try:
        return placement_of(device_map, name)
    except ValueError:
        return None


def _as_place(value):
    """Device-map values as accelerate writes them: ints for CUDA devices, ``"cpu"``, ``"disk"``, ``"mps"``."""
    if isinstance(value, torch.device):
        return value.index if value.type == "cuda" and value.index is not None else value.type if value.type != "cuda" else 0
    if isinstance(value, str):
        if value.isdigit():
            return int(value)
        if value.startswith("cuda"):
            return int(value.split(":")[1]) if ":" in value else 0
    return value


QUANTIZATION_MODES = ("nf4", "int8", "int8-torchao")
BNB_CPU_VERSION = "0.50"  # the first bitsandbytes these CPU tests ran NF4 / INT8 with


def quantization_config_for(mode: str, compute_dtype: torch.dtype | None = None):
    """transformers' quantization config of a CLI mode: ``nf4`` / ``int8`` (bitsandbytes, the official
    app's modes) or ``int8-torchao`` (torchao int8 weight-only); a missing package is one clear line.

    Example:
        >>> model = RobustU1ForConditionalGeneration.from_pretrained(path, quantization_config=quantization_config_for("nf4"))
    """
    import importlib.util

    if mode not in QUANTIZATION_MODES:
        raise ValueError(f"Unknown quantization {mode!r}; choose one of {', '.join(QUANTIZATION_MODES)}.")
    package = "torchao" if mode == "int8-torchao" else "bitsandbytes"
    if importlib.util.find_spec(package) is None:
        raise ValueError(f"--quantize {mode} needs the {package} package: pip install 'robust-u1[quantization]'.")
    if mode == "int8-torchao":
        from torchao.quantization import Int8WeightOnlyConfig
        from transformers import TorchAoConfig

        return TorchAoConfig(Int8WeightOnlyConfig())
    from importlib.metadata import version

    from packaging.version import Version
    from transformers import BitsAndBytesConfig

    installed = version("bitsandbytes")
    if Version(installed) < Version(BNB_CPU_VERSION) and not torch.cuda.is_available():
        raise ValueError(
            f"--quantize {mode} on a CPU needs bitsandbytes ≥ {BNB_CPU_VERSION} (installed: {installed}; older releases "
            "quantize on a CUDA GPU only): pip install -U bitsandbytes, or use --quantize int8-torchao."
        )
    if mode == "nf4":
        return BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype or torch.bfloat16,
            bnb_4bit_use_double_quant=False,  # the official app's NF4 settings
        )  # fmt: skip
    return BitsAndBytesConfig(load_in_8bit=True)


def parse_max_memory(text: str) -> dict:
    """``"0=20GiB,1=20GiB,cpu=64GiB"`` → ``{0: "20GiB", 1: "20GiB", "cpu": "64GiB"}`` (the CLI's ``--max-memory``).

    Example:
        >>> parse_max_memory("0=20GiB,cpu=64GiB")
        {0: '20GiB', 'cpu': '64GiB'}
    """
    from accelerate.utils import convert_file_size_to_int

    limits = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        device, sep, size = part.partition("=")
        if not sep or not device.strip() or not size.strip():
            raise ValueError(f"--max-memory entry {part!r} is not DEVICE=SIZE (e.g. 0=20GiB,cpu=64GiB).")
        try:
            convert_file_size_to_int(size.strip())
        except ValueError:
            raise ValueError(f"--max-memory size {size.strip()!r} is not a size like 20GiB or 500MB.") from None
        limits[_as_place(device.strip())] = size.strip()
    if not limits:
        raise ValueError("--max-memory is empty: give DEVICE=SIZE pairs, e.g. 0=20GiB,cpu=64GiB.")
    return limits


def module_execution_device(module: torch.nn.Module) -> torch.device | None:
    """Where ``module`` computes: accelerate's hook device when dispatched, else its first tensor's device.

    Example:
        >>> module_execution_device(model.language_model.model.layers[27])  # offloaded to disk, run on GPU 0
        device(type='cuda', index=0)
    """
    hook = getattr(module, "_hf_hook", None)
    device = getattr(hook, "execution_device", None)
    if device is None:
        for hook_part in getattr(hook, "hooks", ()):  # SequentialHook
            device = getattr(hook_part, "execution_device", None) or device
    if device is not None:
        return torch.device(device) if not isinstance(device, int) else torch.device("cuda", device)
    for _, tensor in _named_tensors(module):
        if tensor.device.type != "meta":
            return tensor.device
    return None
