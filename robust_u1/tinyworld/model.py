"""The TinyWorld model: a tiny BAGEL-architecture `RobustU1ForConditionalGeneration` for 32×32 images.

Sizes (chosen so that the whole three-stage recipe trains in minutes on two CPU cores):

- language model: Qwen2 MoT, hidden 128, 4 layers, 4 heads (2 KV heads), MLP 384, both experts;
- vision: SigLIP NaViT, hidden 64, 2 layers, 8-pixel patches (a 32×32 image is 4×4 = 16 ViT tokens);
- VAE: diffusers `AutoencoderKL` with 3 blocks (×4 downsampling) and 4 latent channels, so with
  BAGEL's 2×2 latent patches an image is 4×4 = 16 generation tokens of 16 numbers.

Example:
    >>> model, processor = new_tinyworld_model(seed=0)  # random weights, TinyWorld shapes
    >>> model.num_parameters() < 5_000_000
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..configuration_robust_u1 import RobustU1Config
from ..processing_robust_u1 import RobustU1ImageProcessor, RobustU1Processor
from ..tiny import SPECIAL_TOKENS
from .tokenizer import tinyworld_tokenizer
from .world import IMAGE_SIZE

if TYPE_CHECKING:
    from ..modeling_robust_u1 import RobustU1ForConditionalGeneration

VIT_PATCH_SIZE = 8
VAE_BLOCK_CHANNELS = [16, 32, 32]
LATENT_CHANNELS = 4
LATENT_PATCH_SIZE = 2
PIXELS_PER_LATENT_TOKEN = 2 ** (len(VAE_BLOCK_CHANNELS) - 1) * LATENT_PATCH_SIZE


def tinyworld_processor() -> RobustU1Processor:
    """The word-level tokenizer and image transforms that bring any image to at most 32 px (TinyWorld
    images pass through unchanged).

    Example:
        >>> processor = tinyworld_processor()
        >>> processor.image_processor.resize(Image.new("RGB", (640, 480)), "vae").size
        (32, 24)
    """
    image_processor = RobustU1ImageProcessor(
        vae_max_size=IMAGE_SIZE, vae_min_size=IMAGE_SIZE, vae_stride=PIXELS_PER_LATENT_TOKEN,
        vit_max_size=IMAGE_SIZE, vit_min_size=IMAGE_SIZE, vit_stride=VIT_PATCH_SIZE,
    )  # fmt: skip
    return RobustU1Processor(image_processor=image_processor, tokenizer=tinyworld_tokenizer())


def tinyworld_config(processor: RobustU1Processor) -> RobustU1Config:
    """The model configuration for ``processor``'s tokenizer.

    Example:
        >>> config = tinyworld_config(tinyworld_processor())
        >>> config.latent_channels, config.max_latent_size
        (4, 4)
    """
    tokenizer = processor.tokenizer
    ids = tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    special = dict(zip(("bos_token_id", "eos_token_id", "start_of_image_token_id", "end_of_image_token_id"), ids))
    side = IMAGE_SIZE // PIXELS_PER_LATENT_TOKEN
    return RobustU1Config(
        text_config={
            "vocab_size": len(tokenizer), "hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 4,
            "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 1024,
            "rms_norm_eps": 1e-6, "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
            "tie_word_embeddings": False,
        },
        vision_config={
            "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
            "patch_size": VIT_PATCH_SIZE, "image_size": IMAGE_SIZE, "hidden_act": "gelu_pytorch_tanh",
            "layer_norm_eps": 1e-6,
        },
        vae_config={
            "latent_channels": LATENT_CHANNELS, "block_out_channels": VAE_BLOCK_CHANNELS, "layers_per_block": 1,
            "down_block_types": ["DownEncoderBlock2D"] * len(VAE_BLOCK_CHANNELS),
            "up_block_types": ["UpDecoderBlock2D"] * len(VAE_BLOCK_CHANNELS), "norm_num_groups": 8,
            "scaling_factor": 1.0, "shift_factor": 0.0,  # set from the trained VAE's latents
        },
        latent_patch_size=LATENT_PATCH_SIZE,
        timestep_shift=2.0,  # the training shift of the plain forward, as FlowMatchingConfig's default
        max_latent_size=side,
        vit_max_num_patch_per_side=IMAGE_SIZE // VIT_PATCH_SIZE,
        **special,
    )  # fmt: skip


def new_tinyworld_model(seed: int = 0) -> tuple[RobustU1ForConditionalGeneration, RobustU1Processor]:
    """A randomly initialised TinyWorld model and its processor (the starting point of training).

    Example:
        >>> model, processor = new_tinyworld_model(seed=0)
        >>> model.config.text_config.hidden_size
        128
    """
    from ..modeling_robust_u1 import RobustU1ForConditionalGeneration

    processor = tinyworld_processor()
    torch.manual_seed(seed)
    model = RobustU1ForConditionalGeneration(tinyworld_config(processor)).eval()
    model.processor = processor
    return model, processor
