"""Configuration of Robust-U1 / BAGEL (Mixture-of-Transformers Qwen2 + SigLIP NaViT + FLUX VAE)."""

from __future__ import annotations

from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

# BAGEL-7B-MoT: Qwen2.5-7B with a generation expert in every layer (``llm_config.json`` of
# ByteDance-Seed/BAGEL-7B-MoT, plus the qk_norm / untied embeddings that BAGEL's ``app.py`` sets in code).
BAGEL_7B_TEXT_CONFIG: dict[str, Any] = {
    "vocab_size": 152064,
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
    "tie_word_embeddings": False,
    "hidden_act": "silu",
}

# SigLIP so400m-14-980 with the last layer dropped, as the official loader does.
BAGEL_7B_VISION_CONFIG: dict[str, Any] = {
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_hidden_layers": 26,
    "num_attention_heads": 16,
    "patch_size": 14,
    "image_size": 980,
    "hidden_act": "gelu_pytorch_tanh",
    "layer_norm_eps": 1e-6,
}

# The FLUX.1 autoencoder (``ae.safetensors``; BAGEL's ``modeling/autoencoder.py``) in diffusers'
# AutoencoderKL form: 16 latent channels, no quant convs, scale 0.3611 / shift 0.1159.
FLUX_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 16,
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "act_fn": "silu",
    "use_quant_conv": False,
    "use_post_quant_conv": False,
    "scaling_factor": 0.3611,
    "shift_factor": 0.1159,
}


@strict
class RobustU1Config(PreTrainedConfig):
    r"""
    Configuration of [`RobustU1ForConditionalGeneration`]: a BAGEL unified model.

    Args:
        text_config (`dict` or `Qwen2Config`): the language model (both MoT experts share its shapes).
        vision_config (`dict` or `SiglipVisionConfig`): the SigLIP NaViT encoder; `num_hidden_layers` is
            the number of layers actually used (the official loaders drop the last one).
        vae_config (`dict`): keyword arguments of `diffusers.AutoencoderKL` (FLUX autoencoder by default),
            including `scaling_factor` and `shift_factor`.
        latent_patch_size (`int`): side of the latent patch turned into one generation token.
        max_latent_size (`int`): side of the latent position table (`latent_pos_embed`).
        vit_max_num_patch_per_side (`int`): side of the ViT position tables; ViT position ids are
            `row * vit_max_num_patch_per_side + col`.
        connector_act (`str`): activation of the ViT→LLM connector MLP.
        timestep_shift (`float`): flow-matching timestep shift used in training.
        qk_norm (`bool`): RMSNorm on queries and keys before RoPE.
        bos_token_id, eos_token_id, start_of_image_token_id, end_of_image_token_id (`int`): the
            `<|im_start|>`, `<|im_end|>`, `<|vision_start|>`, `<|vision_end|>` ids.

    Example:
        >>> from robust_u1 import RobustU1Config, RobustU1ForConditionalGeneration
        >>> config = RobustU1Config()  # BAGEL-7B-MoT shapes
        >>> config.text_config.hidden_size
        3584
    """

    model_type = "robust_u1"
    sub_configs_defaults = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="qwen2", init_kwargs=BAGEL_7B_TEXT_CONFIG),
        "vision_config": SubConfigSpec(
            config_class=AutoConfig, model_type="siglip_vision_model", init_kwargs=BAGEL_7B_VISION_CONFIG
        ),
    }

    text_config: dict | PreTrainedConfig | None = None
    vision_config: dict | PreTrainedConfig | None = None
    vae_config: dict | None = None
    latent_patch_size: int = 2
    max_latent_size: int = 64
    vit_max_num_patch_per_side: int = 70
    connector_act: str = "gelu_pytorch_tanh"
    timestep_shift: float = 1.0
    qk_norm: bool = True
    bos_token_id: int | None = 151644
    eos_token_id: int | None = 151645
    start_of_image_token_id: int = 151652
    end_of_image_token_id: int = 151653
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        self.vae_config = {**FLUX_VAE_CONFIG, **(self.vae_config or {})}
        super().__post_init__(**kwargs)

    @property
    def latent_channels(self) -> int:
        return self.vae_config["latent_channels"]

    @property
    def vae_downsample(self) -> int:
        """Pixels per latent pixel along one side (8 for the FLUX VAE)."""
        return 2 ** (len(self.vae_config["block_out_channels"]) - 1)

    @property
    def patch_latent_dim(self) -> int:
        """Size of one generation token: a `latent_patch_size`² patch of latent channels."""
        return self.latent_patch_size**2 * self.latent_channels

    @property
    def pixels_per_latent_token(self) -> int:
        """Side in pixels covered by one generation token (16 for BAGEL)."""
        return self.vae_downsample * self.latent_patch_size


__all__ = ["RobustU1Config"]
