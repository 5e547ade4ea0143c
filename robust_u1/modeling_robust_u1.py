"""BAGEL / Robust-U1 in PyTorch: Mixture-of-Transformers Qwen2 + SigLIP NaViT + FLUX VAE.

Module and parameter names follow the official checkpoint (`ema.safetensors`) so that official
weights load without renaming; only the VAE uses diffusers' `AutoencoderKL` names.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.models.qwen2.modeling_qwen2 import (
    Qwen2MLP,
    Qwen2RMSNorm,
    Qwen2RotaryEmbedding,
    apply_rotary_pos_emb,
)
from transformers.models.siglip.modeling_siglip import SiglipEncoderLayer
from transformers.utils import ModelOutput

from .attention import (
    packed_flex_attention,
    packed_sdpa,
    resolve_attention_backend,
)
from .configuration_recovery import RecoveryConfig
from .configuration_robust_u1 import RobustU1Config
from .generation_robust_u1 import RobustU1GenerationMixin
from .loading import module_execution_device
from .packing import Block, RobustU1KVCache, TextBlock, VaeImageBlock, VitImageBlock
from .sampling.schedule import shift_timesteps
from .taylorseer import TaylorSeerStep
from .token_layout import TokenLayout, TokenLayoutPlanner, attention_layout_from_batch as _training_layout

# ----------------------------------------------------------------------------------------------
# Token layout helpers
# ----------------------------------------------------------------------------------------------


def patchify(image: torch.Tensor, patch_size: int) -> torch.Tensor:
    """[C, H, W] → [(H/p)·(W/p), p·p·C], row-major patches flattened as (py, px, c) like BAGEL."""
    channels, height, width = image.shape
    h, w = height // patch_size, width // patch_size
    x = image[:, : h * patch_size, : w * patch_size].reshape(channels, h, patch_size, w, patch_size)
    return x.permute(1, 3, 2, 4, 0).reshape(h * w, patch_size * patch_size * channels)


def unpatchify(tokens: torch.Tensor, grid: tuple[int, int], patch_size: int) -> torch.Tensor:
    """Inverse of `patchify`: [h·w, p·p·C] → [C, h·p, w·p]."""
    h, w = grid
    channels = tokens.shape[-1] // (patch_size * patch_size)
    x = tokens.reshape(h, w, patch_size, patch_size, channels).permute(4, 0, 2, 1, 3)
    return x.reshape(channels, h * patch_size, w * patch_size)


def grid_position_ids(grid: tuple[int, int], max_side: int, device: torch.device | None = None) -> torch.Tensor:
    """Row-major ids ``row * max_side + col`` into a [max_side², dim] position table."""
    h, w = grid
    if h > max_side or w > max_side:
        raise ValueError(f"A {h}×{w} token grid exceeds the position table side {max_side}; use a smaller image.")
    rows = torch.arange(h, device=device)[:, None] * max_side
    return (rows + torch.arange(w, device=device)[None, :]).flatten()


def sincos_2d_table(max_side: int, dim: int) -> torch.Tensor:
    """BAGEL's fixed 2-D sin-cos table [max_side², dim]: [sin(c·ω), cos(c·ω), sin(r·ω), cos(r·ω)]."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    coords = torch.arange(max_side, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")
    col_angles = cols.flatten()[:, None] * omega[None]
    row_angles = rows.flatten()[:, None] * omega[None]
    table = torch.cat([col_angles.sin(), col_angles.cos(), row_angles.sin(), row_angles.cos()], dim=1)
    return table.float()


@dataclass
class RobustU1TrainingOutput(ModelOutput):
    """Output of the packed training forward (official `Bagel.forward` quantities)."""

    loss: torch.Tensor | None = None
    ce_loss: torch.Tensor | None = None
    mse_loss: torch.Tensor | None = None
    ce: torch.Tensor | None = None
    mse: torch.Tensor | None = None
    ce_logits: torch.Tensor | None = None
    velocity_pred: torch.Tensor | None = None
    velocity_target: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None


# ----------------------------------------------------------------------------------------------
# Mixture-of-Transformers language model
# ----------------------------------------------------------------------------------------------


class ExpertRouting:
    """Which packed tokens use the generation expert (VAE latents) and which the understanding one."""

    def __init__(self, gen_mask: torch.Tensor):
        self.num_tokens = gen_mask.numel()
        self.all_gen = bool(gen_mask.all())
        self.all_und = not bool(gen_mask.any())
        if not (self.all_gen or self.all_und):
            self.gen_index = gen_mask.nonzero().squeeze(1)
            self.und_index = (~gen_mask).nonzero().squeeze(1)

    def to(self, device: torch.device, non_blocking: bool = False) -> ExpertRouting:
        """The same routing with its indexes on ``device`` (a layer placed there by a device map)."""
        if self.all_gen or self.all_und or self.gen_index.device == torch.device(device):
            return self
        moved = object.__new__(ExpertRouting)
        moved.__dict__.update(self.__dict__)
        moved.gen_index = self.gen_index.to(device, non_blocking=non_blocking)
        moved.und_index = self.und_index.to(device, non_blocking=non_blocking)
        return moved

    def __call__(self, x: torch.Tensor, und: nn.Module, gen: nn.Module) -> torch.Tensor:
        """Apply ``und`` to understanding tokens and ``gen`` to generation tokens of ``x`` [N, …]."""
        if self.all_und:
            return und(x)
        if self.all_gen:
            return gen(x)
        und_out = und(x[self.und_index])
        out = und_out.new_empty((self.num_tokens, *und_out.shape[1:]))
        out[self.und_index] = und_out
        out[self.gen_index] = gen(x[self.gen_index])
        return out


class RobustU1MoTAttention(nn.Module):
    """One self-attention over the packed sequence; each token's Q/K/V/O and QK-norms come from its expert."""

    def __init__(self, config, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        hidden, q_dim, kv_dim = config.hidden_size, self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        for suffix in ("", "_moe_gen"):
            setattr(self, f"q_proj{suffix}", nn.Linear(hidden, q_dim, bias=True))
            setattr(self, f"k_proj{suffix}", nn.Linear(hidden, kv_dim, bias=True))
            setattr(self, f"v_proj{suffix}", nn.Linear(hidden, kv_dim, bias=True))
            setattr(self, f"o_proj{suffix}", nn.Linear(q_dim, hidden, bias=False))
            setattr(self, f"q_norm{suffix}", Qwen2RMSNorm(self.head_dim, eps=config.rms_norm_eps))
            setattr(self, f"k_norm{suffix}", Qwen2RMSNorm(self.head_dim, eps=config.rms_norm_eps))

    def forward(self, hidden_states, routing, position_embeddings, layout, cache, attention_backend):
        n = hidden_states.shape[0]
        q = routing(hidden_states, self.q_proj, self.q_proj_moe_gen).view(n, self.num_heads, self.head_dim)
        k = routing(hidden_states, self.k_proj, self.k_proj_moe_gen).view(n, self.num_kv_heads, self.head_dim)
        v = routing(hidden_states, self.v_proj, self.v_proj_moe_gen).view(n, self.num_kv_heads, self.head_dim)
        q = routing(q, self.q_norm, self.q_norm_moe_gen)
        k = routing(k, self.k_norm, self.k_norm_moe_gen)
        cos, sin = position_embeddings
        q, k = apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1)

        backend = resolve_attention_backend(attention_backend, q.device, has_cache=cache is not None)
        if backend == "flex":
            attn = packed_flex_attention(q, k, v, layout)
            new_keys = new_values = None
        else:
            new_keys, new_values = _merge_with_cache(k, v, layout, cache)
            attn = packed_sdpa(q, new_keys, new_values, layout)
        attn = attn.reshape(n, self.num_heads * self.head_dim)
        return routing(attn, self.o_proj, self.o_proj_moe_gen), new_keys, new_values


def _merge_with_cache(k, v, layout, cache):
    """Per sequence: [cached keys, new keys] (and values); ``cache`` = this layer's (keys, values) lists.

    The model hands each layer its own lists, so a layer never indexes by its ``layer_idx``: a compiled
    layer then has no per-layer constant and one graph serves every layer (regional compilation).
    """
    keys, values, start = [], [], 0
    for index, length in enumerate(layout.query_lens):
        new_k, new_v = k[start : start + length], v[start : start + length]
        if cache is not None and layout.cache_lens[index]:
            # .to: a no-op unless the cache was built before the layer moved (dispatched models)
            new_k = torch.cat([cache[0][index].to(new_k.device), new_k])
            new_v = torch.cat([cache[1][index].to(new_v.device), new_v])
        keys.append(new_k)
        values.append(new_v)
        start += length
    return keys, values


class RobustU1MoTDecoderLayer(GradientCheckpointingLayer):
    """A Qwen2 decoder layer with two experts (understanding, generation) and shared attention."""

    def __init__(self, config, layer_idx: int):
        super().__init__()
        self.self_attn = RobustU1MoTAttention(config, layer_idx)
        self.mlp = Qwen2MLP(config)
        self.mlp_moe_gen = Qwen2MLP(config)
        for suffix in ("", "_moe_gen"):
            setattr(self, f"input_layernorm{suffix}", Qwen2RMSNorm(config.hidden_size, eps=config.rms_norm_eps))
            setattr(self, f"post_attention_layernorm{suffix}", Qwen2RMSNorm(config.hidden_size, eps=config.rms_norm_eps))

    def forward(self, hidden_states, routing, position_embeddings, layout, cache=None, attention_backend="auto"):
        residual = hidden_states
        hidden_states = routing(hidden_states, self.input_layernorm, self.input_layernorm_moe_gen)
        attn, new_keys, new_values = self.self_attn(
            hidden_states, routing, position_embeddings, layout, cache, attention_backend
        )
        hidden_states = residual + attn
        residual = hidden_states
        hidden_states = routing(hidden_states, self.post_attention_layernorm, self.post_attention_layernorm_moe_gen)
        hidden_states = residual + routing(hidden_states, self.mlp, self.mlp_moe_gen)
        return hidden_states, new_keys, new_values


class RobustU1MoTModel(nn.Module):
    """Token embeddings, MoT decoder layers and the two final norms (``norm`` / ``norm_moe_gen``)."""

    def __init__(self, config):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(RobustU1MoTDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = Qwen2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.norm_moe_gen = Qwen2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = Qwen2RotaryEmbedding(config)
        self.compiled_layers: list[nn.Module] | None = None  # set by `compile_repeated_blocks`

    def forward(
        self, inputs_embeds, position_ids, gen_mask, layout, cache=None, update_cache=False, attention_backend="auto",
        final_norm=True,
    ):  # fmt: skip
        routing = ExpertRouting(gen_mask)
        cos, sin = self.rotary_emb(inputs_embeds, position_ids[None])
        position_embeddings = (cos[0], sin[0])  # [N, D], broadcast over the heads of [N, H, D]
        hidden_states = inputs_embeds
        # With a device map the layers sit on several devices: the routing indexes and RoPE tables
        # are copied once per device, the hidden states follow the layers, and each layer's KV
        # cache stays on that layer's device.
        per_device = {inputs_embeds.device: (routing, position_embeddings)}
        # Compiled layers serve only the denoising queries (cache read, not written): their shapes repeat
        # every step, while prefills, decoding and training change shape at every call.
        denoising = cache is not None and not update_cache and self.compiled_layers is not None
        for layer_idx, layer in enumerate(self.compiled_layers if denoising else self.layers):
            device = module_execution_device(self.layers[layer_idx]) or hidden_states.device
            if device not in per_device:
                per_device[device] = (routing.to(device), tuple(t.to(device) for t in position_embeddings))
            layer_routing, layer_rope = per_device[device]
            layer_cache = None if cache is None else (cache.keys[layer_idx], cache.values[layer_idx])
            hidden_states, keys, values = layer(
                hidden_states.to(device), layer_routing, layer_rope, layout, cache=layer_cache, attention_backend=attention_backend
            )
            if update_cache:
                cache.keys[layer_idx], cache.values[layer_idx] = keys, values
        hidden_states = hidden_states.to(inputs_embeds.device)
        return routing(hidden_states, self.norm, self.norm_moe_gen) if final_norm else hidden_states

    def final_norm(self, hidden_states: torch.Tensor, gen_mask: torch.Tensor) -> torch.Tensor:
        """``norm`` on understanding tokens, ``norm_moe_gen`` on generation tokens (after the last layer)."""
        return ExpertRouting(gen_mask)(hidden_states, self.norm, self.norm_moe_gen)


class RobustU1LanguageModel(nn.Module):
    """Holds ``model`` and ``lm_head`` under the official key prefix ``language_model``."""

    def __init__(self, config):
        super().__init__()
        self.model = RobustU1MoTModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)


# ----------------------------------------------------------------------------------------------
# Vision tower, connector and position/time embeddings
# ----------------------------------------------------------------------------------------------


class RobustU1VisionEmbeddings(nn.Module):
    """NaViT patch embedding: a Linear over flattened patches plus a learned table indexed by row·side+col.

    transformers' `SiglipVisionEmbeddings` uses a Conv2d and a fixed square grid; BAGEL stores the
    convolution as a Linear [hidden, p·p·3] and indexes positions for any aspect ratio.
    """

    def __init__(self, config, max_num_patch_per_side: int):
        super().__init__()
        self.patch_embedding = nn.Linear(config.patch_size**2 * config.num_channels, config.hidden_size)
        self.position_embedding = nn.Embedding(max_num_patch_per_side**2, config.hidden_size)

    def forward(self, packed_patches: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        return self.patch_embedding(packed_patches) + self.position_embedding(position_ids)


class RobustU1VisionEncoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.layers = nn.ModuleList(SiglipEncoderLayer(config) for _ in range(config.num_hidden_layers))


class RobustU1VisionTransformer(nn.Module):
    """SigLIP encoder over packed images; each image attends only to itself."""

    def __init__(self, config, max_num_patch_per_side: int):
        super().__init__()
        self.embeddings = RobustU1VisionEmbeddings(config, max_num_patch_per_side)
        self.encoder = RobustU1VisionEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, packed_patches, position_ids, seqlens: Sequence[int]) -> torch.Tensor:
        embeddings = self.embeddings(packed_patches, position_ids)
        seqlens = [int(n) for n in seqlens]
        if len(set(seqlens)) <= 1:  # one image, or images of one size: a batch without any mask
            count = max(len(seqlens), 1)
            return self._encode(embeddings.reshape(count, -1, embeddings.shape[-1])).reshape(embeddings.shape)
        # Images of several sizes: one unmasked batch per size rather than a block-diagonal
        # [N, N] mask over all packed tokens, whose memory grows with the square of N.
        pieces = list(embeddings.split(seqlens))
        outputs: list[torch.Tensor | None] = [None] * len(pieces)
        for length in dict.fromkeys(seqlens):
            indices = [i for i, n in enumerate(seqlens) if n == length]
            encoded = self._encode(torch.stack([pieces[i] for i in indices]))
            for i, out in zip(indices, encoded):
                outputs[i] = out
        return torch.cat(outputs)

    def _encode(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for layer in self.encoder.layers:
            hidden_states = layer(hidden_states, None)
        return self.post_layernorm(hidden_states)


class RobustU1VisionModel(nn.Module):
    """Holds ``vision_model`` under the official key prefix ``vit_model``."""

    def __init__(self, config, max_num_patch_per_side: int):
        super().__init__()
        self.vision_model = RobustU1VisionTransformer(config, max_num_patch_per_side)


class RobustU1Connector(nn.Module):
    """ViT features → LLM hidden size: ``fc2(act(fc1(x)))``."""

    def __init__(self, in_features: int, hidden_size: int, act: str):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_size)
        self.act = ACT2FN[act]
        self.fc2 = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class PositionEmbedding2D(nn.Module):
    """Frozen 2-D sin-cos table [max_side², dim] (``vit_pos_embed``, ``latent_pos_embed``)."""

    def __init__(self, max_side: int, dim: int):
        super().__init__()
        self.max_side = max_side
        self.pos_embed = nn.Parameter(sincos_2d_table(max_side, dim), requires_grad=False)

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        return self.pos_embed[position_ids]


def _autoencoder_kl() -> type:
    # diffusers is imported when a model is built, not when this module is: importing it costs about
    # 3 s of CPU (all its autoencoders and quantizers), and `import robust_u1` only registers classes.
    from diffusers import AutoencoderKL

    return AutoencoderKL


class TimestepEmbedder(nn.Module):
    """``mlp(cat[cos(tφ), sin(tφ)])`` with t in [0, 1] used as is (no ×1000)."""

    frequency_dim = 256

    def __init__(self, hidden_size: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(self.frequency_dim, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        from diffusers.models.embeddings import get_timestep_embedding  # see `_autoencoder_kl`

        freqs = get_timestep_embedding(t, self.frequency_dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        return self.mlp(freqs.to(self.mlp[0].weight.dtype))


# ----------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------


class RobustU1PreTrainedModel(PreTrainedModel):
    config_class = RobustU1Config
    config: RobustU1Config
    base_model_prefix = ""
    supports_gradient_checkpointing = True
    _no_split_modules = ["RobustU1MoTDecoderLayer", "SiglipEncoderLayer"]
    _supports_sdpa = True
    _supports_flex_attn = True
    _keys_to_ignore_on_load_unexpected = [r".*rotary_emb\.inv_freq"]
    # Device maps are planned in these units (full-name regexes): the modules our code runs through
    # their own forward(), so accelerate's hooks see every call (a container such as
    # ``language_model`` or ``vae`` is never called itself: its ``encode``/``decode`` run its children).
    _device_map_units = (
        r"language_model\.model\.(embed_tokens|norm|norm_moe_gen|rotary_emb)", r"language_model\.model\.layers\.\d+",
        r"language_model\.lm_head", r"vit_model\.vision_model\.(embeddings|post_layernorm)",
        r"vit_model\.vision_model\.encoder\.layers\.\d+", r"connector", r"vit_pos_embed", r"latent_pos_embed",
        r"time_embedder", r"vae2llm", r"llm2vae", r"vae\.(encoder|decoder|quant_conv|post_quant_conv)",
    )  # fmt: skip
    # Modules that must share one device, the token embeddings' (the first entry), as the official
    # loader keeps them: their outputs are summed into one token embedding (connector + vit_pos_embed,
    # vae2llm + time_embedder + latent_pos_embed) or indexed by the same expert routing (final norms,
    # heads). Decoder layers, ViT layers and the VAE may sit anywhere.
    _same_device_modules = (
        "language_model.model.embed_tokens", "language_model.model.rotary_emb", "language_model.model.norm",
        "language_model.model.norm_moe_gen", "language_model.lm_head", "connector", "vit_pos_embed",
        "latent_pos_embed", "time_embedder", "vae2llm", "llm2vae",
    )  # fmt: skip
    # Never quantized (added to any quantization_config's skip list): the VAE (a convolutional
    # autoencoder whose decode is the output image), the output head, the latent/time/connector
    # projections whose small errors are amplified over 49 denoising steps, and the ViT patch
    # embedding. Embeddings and the sin-cos tables are not Linear layers and stay as loaded.
    _skip_modules_for_quantization = (
        "vae", "language_model.lm_head", "vae2llm", "llm2vae", "time_embedder", "connector",
        "vit_model.vision_model.embeddings",
    )  # fmt: skip

    def _init_weights(self, module):
        if isinstance(module, PositionEmbedding2D):
            init.copy_(module.pos_embed, sincos_2d_table(module.max_side, module.pos_embed.shape[1]))
        elif isinstance(module, Qwen2RotaryEmbedding):
            inv_freq, _ = module.compute_default_rope_parameters(module.config)
            init.copy_(module.inv_freq, inv_freq)
            init.copy_(module.original_inv_freq, inv_freq)
        elif id(module) not in self._vae_module_ids:
            super()._init_weights(module)  # the VAE keeps diffusers' own initialisation

    @functools.cached_property
    def _vae_module_ids(self) -> set[int]:
        return {id(m) for m in self.vae.modules()}


# transformers' attn_implementation of the language model -> packed attention backend (`attention.py`);
# None: nothing was requested (transformers leaves the sub-config unset), the automatic choice.
_ATTENTION_BACKENDS = {None: "auto", "sdpa": "sdpa", "eager": "sdpa", "flex_attention": "flex"}


class RobustU1ForConditionalGeneration(RobustU1GenerationMixin, RobustU1PreTrainedModel):
    """BAGEL: understands interleaved text and images, and generates (recovers) images.

    Example:
        >>> from robust_u1 import RobustU1ForConditionalGeneration
        >>> model = RobustU1ForConditionalGeneration.from_pretrained("ByteDance-Seed/BAGEL-7B-MoT", dtype="bfloat16")
        >>> restored = model.recover(corrupted_image, processor=processor)
    """

    def __init__(self, config: RobustU1Config):
        super().__init__(config)
        text, vision = config.text_config, config.vision_config
        if vision._attn_implementation is None:
            vision._attn_implementation = "sdpa"  # packed images use an additive block-diagonal mask
        self.language_model = RobustU1LanguageModel(text)
        self.vit_model = RobustU1VisionModel(vision, config.vit_max_num_patch_per_side)
        self.connector = RobustU1Connector(vision.hidden_size, text.hidden_size, config.connector_act)
        self.vit_pos_embed = PositionEmbedding2D(config.vit_max_num_patch_per_side, text.hidden_size)
        self.latent_pos_embed = PositionEmbedding2D(config.max_latent_size, text.hidden_size)
        self.time_embedder = TimestepEmbedder(text.hidden_size)
        self.vae2llm = nn.Linear(config.patch_latent_dim, text.hidden_size)
        self.llm2vae = nn.Linear(text.hidden_size, config.patch_latent_dim)
        self.vae = _autoencoder_kl()(**config.vae_config)
        self.post_init()
        self.freeze_fixed_parts()

    def freeze_fixed_parts(self) -> None:
        """Sets ``requires_grad=False`` on what never trains: the VAE and the sin-cos tables
        ``vit_pos_embed`` / ``latent_pos_embed`` (frozen in every BAGEL / Robust-U1 stage).

        Called at construction and again after every `from_pretrained`: transformers' loader rebuilds
        each loaded parameter with ``requires_grad=True`` whatever the module had set.

        Example:
            >>> model.freeze_fixed_parts()
            >>> any(p.requires_grad for p in model.vae.parameters())
            False
        """
        for module in (self.vae, self.vit_pos_embed, self.latent_pos_embed):
            module.requires_grad_(False)

    @property
    def attention_backend(self) -> str:
        """The kernel of the packed language-model attention, from transformers' ``attn_implementation``.

        ``from_pretrained(..., attn_implementation=...)`` (or ``set_attn_implementation``) sets
        ``config.text_config._attn_implementation``, which the packed layers read:

        - not set (the default): ``"auto"``: FlexAttention for cache-free batches on CUDA (packed
          training batches, block-sparse), SDPA everywhere else;
        - ``"flex_attention"``: FlexAttention for every cache-free batch (also on CPU, unfused), SDPA for
          calls with a KV cache (prefill and sampling), which the FlexAttention path does not serve;
        - ``"sdpa"`` and ``"eager"``: SDPA everywhere. There is no separate eager kernel: BAGEL's split
          masks need SDPA's boolean masks, and SDPA's math path computes exactly eager attention.

        The SigLIP tower uses transformers' own attention functions and honours the setting directly.
        The returned names (``"auto"``, ``"sdpa"``, ``"flex"``) are those of
        `robust_u1.attention.resolve_attention_backend`; assigning one sets the config accordingly.

        Example:
            >>> model = RobustU1ForConditionalGeneration.from_pretrained(path, attn_implementation="flex_attention")  # doctest: +SKIP
            >>> model.attention_backend  # doctest: +SKIP
            'flex'
        """
        implementation = self.config.text_config._attn_implementation
        if implementation not in _ATTENTION_BACKENDS:
            raise ValueError(
                f"attn_implementation={implementation!r} is not supported by the packed attention; "
                f"use one of {sorted(name for name in _ATTENTION_BACKENDS if name)}."
            )
        return _ATTENTION_BACKENDS[implementation]

    @attention_backend.setter
    def attention_backend(self, backend: str) -> None:
        implementations = {backend: implementation for implementation, backend in _ATTENTION_BACKENDS.items() if implementation != "eager"}
        if backend not in implementations:
            raise ValueError(f"attention_backend must be one of {sorted(implementations)}, got {backend!r}.")
        self.config.text_config._attn_implementation = implementations[backend]

    _repeated_blocks = ["RobustU1MoTDecoderLayer"]

    def compile_repeated_blocks(self, *args, **kwargs) -> None:
        """Regional compilation of the denoiser: ``torch.compile`` of each MoT decoder layer (`_repeated_blocks`).

        As diffusers' ``ModelMixin.compile_repeated_blocks`` (which this model, a transformers model,
        does not inherit), but the compiled layers serve only the denoising queries
        (`predict_velocity`, hence `recover` and the GRPO rollouts), whose shapes repeat at every step.
        Context prefills, text decoding and training keep the eager layers: their shapes change at
        every call, so compiling them would only add compile time. Arguments go to `torch.compile`;
        ``model.language_model.model.compiled_layers = None`` goes back to eager.

        When it compiles: one graph serves every layer (no per-layer constant). The first denoising
        call compiles it; the same image sizes, prompt lengths and guidance branches reuse it (no
        recompilation across steps or calls). A new token count (another image size bucket or prompt
        length) or another number of batched branches (guidance switching off inside ``cfg_interval``)
        recompiles once; after a size changed, dynamo's automatic dynamic shapes make that size
        symbolic, so further sizes reuse the dynamic graph.

        Example:
            >>> model.compile_repeated_blocks()  # or compile_repeated_blocks(mode="max-autotune") on GPU
            >>> restored = model.recover(image)  # the first call compiles, later calls reuse the graph
        """
        backend = kwargs.get("backend", args[0] if args else "inductor")
        if backend == "inductor" and self.device.type == "cpu":
            try:  # inductor generates C++ on CPU: fail here with the fix, not deep inside the first recover()
                from torch._inductor.cpp_builder import get_cpp_compiler

                get_cpp_compiler()
            except Exception as error:
                raise RuntimeError(
                    f"torch.compile's inductor backend needs a C++ compiler on CPU and found none ({error}): "
                    "install one (e.g. `apt-get install g++`) or set CXX, or pass backend='aot_eager'."
                ) from error
        model = self.language_model.model
        model.compiled_layers = [torch.compile(layer, *args, **kwargs) for layer in model.layers]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, strict: bool = True, **kwargs):
        """Loads the Hugging Face layout, or the official BAGEL / Robust-U1 layout directly.

        An official folder or Hub repository (``llm_config.json``, ``vit_config.json``,
        ``ae.safetensors`` and ``ema.safetensors`` / ``model.safetensors`` / ``model_bf16.safetensors``)
        is built on the meta device and its safetensors are streamed in, cast to ``dtype``.

        Both layouts accept transformers' placement arguments: ``device_map`` (``"auto"``,
        ``"balanced"``, ``"sequential"``, a device or a dict; planned by `robust_u1.loading.plan_device_map`
        so that ``_same_device_modules`` share a device), ``max_memory`` and ``offload_folder``; the
        Hugging Face layout also ``quantization_config`` (bitsandbytes NF4 / INT8, torchao), which
        never quantizes ``_skip_modules_for_quantization``. Hub ids load from the local cache when
        ``HF_HUB_OFFLINE=1``. A checkpoint with missing, unexpected or misshaped keys is an error;
        ``strict=False`` accepts missing keys (a deliberate partial load; they are initialised).

        Example:
            >>> model = RobustU1ForConditionalGeneration.from_pretrained(
            ...     "ByteDance-Seed/BAGEL-7B-MoT", dtype=torch.bfloat16, device_map="auto",
            ...     max_memory={0: "20GiB", 1: "20GiB", "cpu": "64GiB"}, offload_folder="offload",
            ... )
        """
        from .loading import HUB_KWARGS, locate_checkpoint

        location = locate_checkpoint(pretrained_model_name_or_path, **kwargs)
        source = location.folder or pretrained_model_name_or_path
        hub_kwargs = {k: v for k, v in kwargs.items() if k in HUB_KWARGS}
        if location.layout == "official":
            model = cls._from_official(location.folder, strict=strict, **kwargs)
        else:
            model = cls._from_hf_layout(source, model_args, strict, kwargs)
        loaded = model[0] if isinstance(model, tuple) else model  # (model, info) with output_loading_info=True
        loaded.recovery_config = RecoveryConfig.from_pretrained(source, **hub_kwargs)  # defaults when it has none
        return model

    @classmethod
    def _from_official(cls, folder, strict: bool = True, **kwargs):
        from .loading import HUB_KWARGS, as_dtype, load_official_checkpoint, official_processor

        if kwargs.get("quantization_config") is not None:
            # transformers' quantizers replace the Linear layers while loading; they take the official
            # weights as one state dict (read once, cast to dtype) instead of a file.
            from .loading import official_config, official_state_dict

            config = official_config(folder)
            dtype = as_dtype(kwargs.get("dtype", kwargs.get("torch_dtype")))
            state = official_state_dict(folder, config, dtype)
            model = cls._from_hf_layout(None, (), strict, {**kwargs, "config": config, "state_dict": state})
            model.processor = official_processor(folder)
            return model
        dtype = kwargs.pop("dtype", kwargs.pop("torch_dtype", None))
        placement = {k: kwargs.pop(k, None) for k in ("device_map", "max_memory", "offload_folder")}
        attn_implementation = kwargs.pop("attn_implementation", None)
        ignored = sorted(set(kwargs) - set(HUB_KWARGS) - {"config", "trust_remote_code", "_from_pipeline", "_from_auto", "_commit_hash"})
        if ignored:
            raise TypeError(f"Unsupported arguments for an official-layout checkpoint: {ignored}.")
        model = load_official_checkpoint(folder, cls, dtype=dtype, strict=strict, **placement)
        if attn_implementation is not None:
            model.config._attn_implementation = attn_implementation  # also sets the text and vision sub-configs
        model.freeze_fixed_parts()
        model.processor = official_processor(folder)
        return model

    @classmethod
    def _from_hf_layout(cls, source, model_args, strict: bool, kwargs: dict):
        from .loading import HUB_KWARGS, as_dtype, hf_weight_files, plan_device_map, raise_for_key_problems
        from .processing_robust_u1 import RobustU1Processor

        if isinstance(source, Path) and (source / "config.json").is_file():
            hf_weight_files(source)  # a missing or truncated weight file is named before transformers reads it
        kwargs = cls._with_quantization_skips(kwargs)
        return_info = kwargs.pop("output_loading_info", False)
        device_map = kwargs.get("device_map")
        if device_map is not None:
            config = kwargs.get("config")
            if not isinstance(config, RobustU1Config):
                config = RobustU1Config.from_pretrained(source, **{k: v for k, v in kwargs.items() if k in HUB_KWARGS})
            with torch.device("meta"):
                skeleton = cls(config)
            dtype = as_dtype(kwargs.get("dtype", kwargs.get("torch_dtype")))
            if dtype is not None:
                skeleton.to(dtype)
            kwargs["device_map"] = plan_device_map(skeleton, device_map, kwargs.pop("max_memory", None), dtype)
            del skeleton
        # transformers reports misshaped keys without naming them; we let it load and name them below.
        accept_mismatched = kwargs.pop("ignore_mismatched_sizes", False)
        model, info = super().from_pretrained(
            source, *model_args, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
        )
        mismatched = [
            f"{item[0]}: checkpoint {tuple(item[1])} vs model {tuple(item[2])}" if isinstance(item, (tuple, list)) else str(item)
            for item in ([] if accept_mismatched else info.get("mismatched_keys", []))
        ]
        raise_for_key_problems(str(source), info.get("missing_keys", []) if strict else [], info.get("unexpected_keys", []), mismatched)
        _use_generic_bnb_cpu_kernel_where_needed(model)
        model.freeze_fixed_parts()
        try:
            model.processor = RobustU1Processor.from_pretrained(source, **{k: v for k, v in kwargs.items() if k in HUB_KWARGS})
        except (OSError, ValueError, TypeError):
            model.processor = None  # a checkpoint saved without its processor (or weights given as a state dict)
        return (model, info) if return_info else model

    @classmethod
    def _with_quantization_skips(cls, kwargs: dict) -> dict:
        """Adds ``_skip_modules_for_quantization`` to the quantizer's skip list (a copy of the user's config)."""
        config = kwargs.get("quantization_config")
        if config is None:
            return kwargs
        import copy

        from transformers.quantizers import AutoQuantizationConfig

        config = AutoQuantizationConfig.from_dict(config) if isinstance(config, dict) else copy.deepcopy(config)
        for attribute in ("llm_int8_skip_modules", "modules_to_not_convert"):
            if hasattr(config, attribute):
                setattr(config, attribute, sorted(set(getattr(config, attribute) or ()) | set(cls._skip_modules_for_quantization)))
        return {**kwargs, "quantization_config": config}

    def rebuild_non_persistent_buffers(self, device: str | torch.device = "cpu") -> None:
        """Recomputes buffers that checkpoints do not store (RoPE frequencies) after a meta-device build."""
        rotary = self.language_model.model.rotary_emb
        inv_freq, _ = rotary.compute_default_rope_parameters(rotary.config)
        rotary.inv_freq = inv_freq.to(device)
        rotary.original_inv_freq = inv_freq.clone().to(device)

    # -- small accessors -------------------------------------------------------------------------

    @property
    def text_config(self):
        return self.config.text_config

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.model.embed_tokens

    def set_input_embeddings(self, value: nn.Module):
        self.language_model.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.lm_head

    @property
    def head_dim(self) -> int:
        text = self.text_config
        return getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads

    @property
    def device(self) -> torch.device:
        """Where inputs go: the token embeddings' execution device (accelerate's, when dispatched or offloaded)."""
        language_model = getattr(self, "language_model", None)  # None while __init__ runs
        return (language_model is not None and module_execution_device(language_model.model.embed_tokens)) or super().device

    def new_cache(self, batch_size: int) -> RobustU1KVCache:
        """An empty KV cache for ``batch_size`` sequences, each layer's part on that layer's device."""
        text = self.text_config
        devices = [module_execution_device(layer) or self.device for layer in self.language_model.model.layers]
        return RobustU1KVCache.empty(text.num_hidden_layers, batch_size, text.num_key_value_heads, self.head_dim, devices, self.dtype)

    # -- VAE -------------------------------------------------------------------------------------

    def encode_images(
        self,
        pixel_values: torch.Tensor,
        sample_posterior: bool = True,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Images in [-1, 1] [B, 3, H, W] → scaled latents ``(z − shift)·scale`` [B, C, H/8, W/8].

        BAGEL encodes with a sample of the posterior (``sample_posterior=True``); the mode is the
        deterministic alternative.
        """
        vae = self.vae
        with torch.no_grad():
            posterior = vae.encode(pixel_values.to(vae.dtype)).latent_dist
            z = posterior.sample(generator) if sample_posterior else posterior.mode()
        return (z - vae.config.shift_factor) * vae.config.scaling_factor

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents [B, C, h, w] → images in (about) [-1, 1], not clamped."""
        vae = self.vae
        z = latents.to(vae.dtype) / vae.config.scaling_factor + vae.config.shift_factor
        return vae.decode(z).sample

    def latent_to_tokens(self, latent: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Scaled latent [C, h, w] → generation tokens [h/p · w/p, p·p·C] and their grid."""
        p = self.config.latent_patch_size
        return patchify(latent, p), (latent.shape[1] // p, latent.shape[2] // p)

    def tokens_to_latent(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        return unpatchify(tokens, grid, self.config.latent_patch_size)

    # -- embeddings ------------------------------------------------------------------------------

    def embed_vit_images(self, pixel_values: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[int]]:
        """Normalised images [3, H, W] → LLM input embeddings of their patches (packed), and counts."""
        patch, side = self.config.vision_config.patch_size, self.config.vit_max_num_patch_per_side
        patches, position_ids, seqlens = [], [], []
        for image in pixel_values:
            grid = (image.shape[1] // patch, image.shape[2] // patch)
            patches.append(patchify(image, patch))
            position_ids.append(grid_position_ids(grid, side, image.device))
            seqlens.append(grid[0] * grid[1])
        return self.embed_vit_tokens(torch.cat(patches), torch.cat(position_ids), seqlens), seqlens

    def embed_vit_tokens(self, packed_patches: torch.Tensor, position_ids: torch.Tensor, seqlens: Sequence[int]):
        """Patchified pixels [N, p·p·3] → ``connector(vit(x)) + vit_pos_embed`` [N, hidden]."""
        vit = self.vit_model.vision_model
        features = vit(packed_patches.to(self.dtype), position_ids, seqlens)
        return self.connector(features) + self.vit_pos_embed(position_ids)

    def embed_latent_tokens(self, tokens: torch.Tensor, timesteps: torch.Tensor, position_ids: torch.Tensor):
        """Latent tokens [N, p·p·C] at flow times [N] → ``vae2llm(x) + time_embedder(t) + latent_pos_embed``."""
        return (
            self.vae2llm(tokens.to(self.dtype))
            + self.time_embedder(timesteps.float())
            + self.latent_pos_embed(position_ids)
        )

    def _embed_layout(self, layout: TokenLayout) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Input embeddings, RoPE position ids and expert mask of a planned query (`TokenLayoutPlanner`):
        text and image markers from the token table, ViT images through the ViT, latents at their time."""
        if any(isinstance(p.block, VaeImageBlock) and p.block.tokens is None for p in layout.placements):
            raise ValueError("The model takes VAE images as latent tokens: VaeImageBlock(*model.latent_to_tokens(latent)).")
        device = self.device
        as_index = lambda values: torch.tensor(values, dtype=torch.long, device=device)  # noqa: E731
        text_embeds = self.language_model.model.embed_tokens(layout.text_ids.to(device))
        if len(layout.text_indexes) == layout.num_tokens:  # text only (decoding steps, prompts): no scatter
            gen_mask = torch.zeros(layout.num_tokens, dtype=torch.bool, device=device)
            return text_embeds.to(self.dtype), as_index(layout.position_ids), gen_mask
        embeds = torch.zeros(layout.num_tokens, self.text_config.hidden_size, device=device, dtype=self.dtype)
        embeds[as_index(layout.text_indexes)] = text_embeds
        vit_pixels = [p.block.pixel_values.to(device) for p in layout.placements if isinstance(p.block, VitImageBlock)]
        if vit_pixels:
            embeds[as_index(layout.vit_indexes)] = self.embed_vit_images(vit_pixels)[0]
        for placement in layout.placements:
            block = placement.block
            if not isinstance(block, VaeImageBlock):
                continue
            count = block.tokens.shape[0]
            timesteps = torch.as_tensor(block.timestep, device=device, dtype=torch.float32).expand(count)
            position_ids = grid_position_ids(block.grid, self.config.max_latent_size, device)
            content = placement.content
            embeds[content.start : content.stop] = self.embed_latent_tokens(block.tokens.to(device), timesteps, position_ids)
        return embeds, as_index(layout.position_ids), layout.gen_mask(device)

    # -- inference building blocks -------------------------------------------------------------

    def run_blocks(
        self, cache: RobustU1KVCache, blocks: Sequence[Block], update_cache: bool, final_norm: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Runs one block per sequence against ``cache``; returns final hidden states, expert mask, lengths.

        With ``update_cache`` the blocks' keys/values are appended and the RoPE positions advanced
        (a context prefill); without it the cache is only read (a denoising query). With
        ``final_norm=False`` the hidden states are the last decoder layer's output (TaylorSeer caches it).
        """
        if len(blocks) != cache.batch_size:
            raise ValueError(f"Got {len(blocks)} blocks for a cache of {cache.batch_size} sequences.")
        lengths = self._block_lengths(blocks)
        self.check_sequence_lengths([cached + new for cached, new in zip(cache.lengths, lengths)])
        plan = self.token_layout_planner.plan([[block] for block in blocks], cache.next_positions, device=self.device)
        embeds, positions, gen_mask = self._embed_layout(plan)
        layout = plan.attention_layout(cache_lens=cache.lengths)
        hidden = self.language_model.model(
            embeds.to(self.dtype), positions, gen_mask, layout, cache=cache, update_cache=update_cache,
            attention_backend=self.attention_backend, final_norm=final_norm,
        )  # fmt: skip
        if update_cache:
            cache.next_positions = plan.next_positions
        return hidden, gen_mask, lengths

    def check_sequence_lengths(self, lengths: Sequence[int], max_new_tokens: int = 0) -> None:
        """Raises a one-line `ValueError` when a sequence of ``lengths`` tokens (text and image tokens
        together), plus ``max_new_tokens`` to generate, exceeds ``max_position_embeddings``.

        Called before any computation by `generate`, `answer`, `recover` and the training collators,
        and by every prefill as a last guard (attention memory grows with the square of the length).

        Example:
            >>> model.check_sequence_lengths([model.sequence_length(blocks)], max_new_tokens=64)
        """
        limit = self.text_config.max_position_embeddings
        longest = max((int(n) for n in lengths), default=0)
        if longest + max_new_tokens <= limit:
            return
        if max_new_tokens:
            raise ValueError(
                f"The input has {longest} tokens (text and image tokens together) and max_new_tokens={max_new_tokens}: "
                f"{longest + max_new_tokens} exceeds max_position_embeddings={limit} of this model; shorten the text, "
                "use smaller images or lower max_new_tokens."
            )
        raise ValueError(
            f"The input has {longest} tokens (text and image tokens together), more than max_position_embeddings="
            f"{limit} of this model; shorten the text or use smaller images."
        )

    def sequence_length(self, blocks: Sequence[Block]) -> int:
        """Tokens that a sequence of blocks occupies in the decoder (markers and wrappers included)."""
        return self.token_layout_planner.sequence_length(blocks)

    def _block_lengths(self, blocks: Sequence[Block]) -> list[int]:
        planner = self.token_layout_planner
        return [planner.num_tokens(block) for block in blocks]

    @property
    def token_layout_planner(self) -> TokenLayoutPlanner:
        """BAGEL's token layout rules with this model's token ids and patch sizes (`robust_u1.token_layout`)."""
        return TokenLayoutPlanner.from_config(self.config)

    def prefill(self, cache: RobustU1KVCache, blocks: Sequence[Block]) -> RobustU1KVCache:
        """Appends one block per sequence (text, ViT image or clean VAE image) to a context cache.

        Example:
            >>> cache = model.new_cache(1)
            >>> model.prefill(cache, [VaeImageBlock(*model.latent_to_tokens(latent))])
            >>> model.prefill(cache, [VitImageBlock(vit_pixels)])
            >>> model.prefill(cache, [TextBlock(prompt_ids)])

        Gradients flow when called outside ``torch.no_grad`` (training through a context).
        """
        self.run_blocks(cache, blocks, update_cache=True)
        return cache

    def predict_velocity(
        self,
        cache: RobustU1KVCache,
        latents: Sequence[torch.Tensor],
        grids: Sequence[tuple[int, int]],
        timesteps: Sequence[float] | torch.Tensor,
        taylorseer: TaylorSeerStep | None = None,
    ) -> list[torch.Tensor]:
        """Flow velocity (ε − x₀ direction) of noisy latent tokens against cached contexts, one per sequence.

        The cache is read, never written: every denoising step reuses the same prefill. With
        ``taylorseer`` (the branches of this call, see `robust_u1.taylorseer`), branches at a Taylor
        step skip the decoder layers and extrapolate their cached last-layer output.
        """
        timesteps = torch.as_tensor(timesteps, dtype=torch.float32).flatten().expand(len(latents))
        blocks = [VaeImageBlock(x, grid, t, noisy=True) for x, grid, t in zip(latents, grids, timesteps)]
        if taylorseer is None:
            hidden, _, lengths = self.run_blocks(cache, blocks, update_cache=False)
        else:
            hidden, gen_mask, lengths = taylorseer.decoder_outputs(self, cache, blocks)
            hidden = self.language_model.model.final_norm(hidden, gen_mask)
        velocities, start = [], 0
        for x, length in zip(latents, lengths):
            velocities.append(self.llm2vae(hidden[start + 1 : start + 1 + x.shape[0]]))
            start += length
        return velocities

    def next_token_logits(self, cache: RobustU1KVCache, token_ids: torch.Tensor) -> torch.Tensor:
        """Feeds one token per sequence (appending it to the cache) and returns next-token logits [B, vocab]."""
        blocks = [TextBlock(token_id.view(1), wrap=False) for token_id in token_ids]
        hidden, _, _ = self.run_blocks(cache, blocks, update_cache=True)
        return self.language_model.lm_head(hidden)

    # -- training forward ------------------------------------------------------------------------

    def forward(
        self,
        sequence_length: int | torch.Tensor,
        packed_text_ids: torch.Tensor,
        packed_text_indexes: torch.Tensor,
        sample_lens: Sequence[int] | torch.Tensor,
        packed_position_ids: torch.Tensor,
        split_lens: Sequence[int] | torch.Tensor,
        attn_modes: Sequence[str] | torch.Tensor,
        packed_vit_tokens: torch.Tensor | None = None,
        packed_vit_token_indexes: torch.Tensor | None = None,
        packed_vit_position_ids: torch.Tensor | None = None,
        vit_token_seqlens: torch.Tensor | None = None,
        padded_images: torch.Tensor | None = None,
        padded_latent: torch.Tensor | None = None,
        patchified_vae_latent_shapes: Sequence[tuple[int, int]] | torch.Tensor | None = None,
        packed_latent_position_ids: torch.Tensor | None = None,
        packed_vae_token_indexes: torch.Tensor | None = None,
        packed_timesteps: torch.Tensor | None = None,
        mse_loss_indexes: torch.Tensor | None = None,
        ce_loss_indexes: torch.Tensor | None = None,
        packed_label_ids: torch.Tensor | None = None,
        ce_loss_weights: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        timestep_shift: float | None = None,
        ce_weight: float = 1.0,
        mse_weight: float = 1.0,
        **kwargs,
    ) -> RobustU1TrainingOutput:
        """Packed training forward (the official `Bagel.forward`), returning CE and flow-matching MSE.

        The batch is what `RobustU1PackedCollator` (or the official `PackedDataset`) produces: text,
        ViT and VAE tokens scattered into one sequence of ``sequence_length`` tokens, split into
        attention splits (``split_lens`` with ``attn_modes`` 0 causal / 1 full / 2 noise, or the mode
        names). Raw ``packed_timesteps`` are −inf for clean images and N(0, 1) draws for noisy ones;
        t = shift·σ(raw)/(1 + (shift−1)·σ(raw)), x_t = (1 − t)·x₀ + t·ε, target ε − x₀.
        ``loss = ce_weight · mean CE + mse_weight · mean MSE``; CE is weighted by
        ``ce_loss_weights`` when given.
        """
        if kwargs:
            raise TypeError(f"Unexpected inputs for the packed training forward: {sorted(kwargs)}")
        device = self.device
        total = int(sequence_length)
        hidden_size = self.text_config.hidden_size
        embeds = torch.zeros(total, hidden_size, device=device, dtype=self.dtype)
        embeds[packed_text_indexes] = self.language_model.model.embed_tokens(packed_text_ids)
        gen_mask = torch.zeros(total, dtype=torch.bool, device=device)

        if packed_vit_tokens is not None:
            seqlens = [int(n) for n in torch.as_tensor(vit_token_seqlens).tolist()]
            embeds[packed_vit_token_indexes] = self.embed_vit_tokens(packed_vit_tokens, packed_vit_position_ids, seqlens)

        velocity_target = None
        if packed_vae_token_indexes is not None:
            if padded_latent is None:
                padded_latent = self.encode_images(padded_images, sample_posterior=True)
            clean = torch.cat(
                [
                    patchify(latent[:, : h * self.config.latent_patch_size, : w * self.config.latent_patch_size], self.config.latent_patch_size)
                    for latent, (h, w) in zip(padded_latent, torch.as_tensor(patchified_vae_latent_shapes).tolist())
                ]
            ).float()
            noise = torch.randn_like(clean) if noise is None else noise.to(clean)
            shift = self.config.timestep_shift if timestep_shift is None else timestep_shift
            t = shift_timesteps(torch.sigmoid(packed_timesteps.float()), shift)
            x_t = (1 - t[:, None]) * clean + t[:, None] * noise
            embeds[packed_vae_token_indexes] = self.embed_latent_tokens(x_t, t, packed_latent_position_ids)
            gen_mask[packed_vae_token_indexes] = True
            velocity_target = (noise - clean)[t > 0]

        layout = _training_layout(sample_lens, split_lens, attn_modes)
        hidden = self.language_model.model(
            embeds, packed_position_ids.to(device), gen_mask, layout, attention_backend=self.attention_backend
        )

        output = RobustU1TrainingOutput(last_hidden_state=hidden)
        losses = []
        if ce_loss_indexes is not None and len(ce_loss_indexes):
            output.ce_logits = self.language_model.lm_head(hidden[ce_loss_indexes])
            output.ce = F.cross_entropy(output.ce_logits.float(), packed_label_ids, reduction="none")
            if ce_loss_weights is None:
                output.ce_loss = output.ce.mean()
            else:
                output.ce_loss = (output.ce * ce_loss_weights).sum() / ce_loss_weights.sum()
            losses.append(ce_weight * output.ce_loss)
        if mse_loss_indexes is not None and len(mse_loss_indexes):
            output.velocity_pred = self.llm2vae(hidden[mse_loss_indexes]).float()
            output.velocity_target = velocity_target
            output.mse = (output.velocity_pred - velocity_target) ** 2
            output.mse_loss = output.mse.mean()
            losses.append(mse_weight * output.mse_loss)
        output.loss = sum(losses) if losses else None
        return output


def _use_generic_bnb_cpu_kernel_where_needed(model: nn.Module) -> None:
    """bitsandbytes' AVX512-bf16 CPU path for 4-bit layers repacks the weight by blocks of 64 input
    features and fails on other widths (SigLIP's fc2 has 4304); those layers use its generic CPU path."""
    for module in model.modules():
        state = getattr(getattr(module, "weight", None), "quant_state", None)
        if getattr(module, "support_avx512bf16_for_cpu", False) and state is not None:
            if module.in_features % state.blocksize:
                module.support_avx512bf16_for_cpu = False


__all__ = [
    "RobustU1ForConditionalGeneration",
    "RobustU1PreTrainedModel",
    "RobustU1KVCache",
    "TextBlock",
    "VitImageBlock",
    "VaeImageBlock",
    "patchify",
    "unpatchify",
]
