"""A tiny BAGEL-architecture model with random weights and a byte-level tokenizer.

It runs every code path in seconds on a CPU (tests and benchmarks). Its outputs are meaningless: the
weights are random. For a small model that was actually trained (and is the CLI's and the
``robust-vqa`` pipeline's offline default), see `robust_u1.tinyworld` and its shipped checkpoints.

Example:
    >>> from PIL import Image
    >>> model, processor = tiny_random_model(seed=0)
    >>> restored = model.recover(Image.new("RGB", (64, 48)), processor=processor, num_inference_steps=4, progress=False)
    >>> restored.size
    (64, 48)
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from .configuration_robust_u1 import RobustU1Config
from .processing_robust_u1 import RobustU1ImageProcessor, RobustU1Processor

SPECIAL_TOKENS = ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>")


def byte_level_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (256 byte tokens, no merges) plus BAGEL's four special tokens.

    Example:
        >>> tokenizer = byte_level_tokenizer()
        >>> tokenizer.decode(tokenizer.encode("héllo"))
        'héllo'
    """
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {symbol: index for index, symbol in enumerate(sorted(alphabet))}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|im_end|>"
    )


def tiny_config(vocab_size: int, special_ids: dict[str, int]) -> RobustU1Config:
    """The tiny architecture: a 2-layer, 64-wide MoT language model, a 2-layer SigLIP and a small VAE.

    Args:
        vocab_size: the tokenizer's size.
        special_ids: ``bos_token_id``, ``eos_token_id``, ``start_of_image_token_id`` and ``end_of_image_token_id``.

    Returns:
        A `RobustU1Config`.

    Example:
        >>> tiny_config(260, {}).text_config.hidden_size
        64
    """
    return RobustU1Config(
        text_config={
            "vocab_size": vocab_size, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 4096,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
        },
        vision_config={
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
            "patch_size": 14, "image_size": 224,
        },
        vae_config={"block_out_channels": [32, 32, 64, 64], "layers_per_block": 1},
        max_latent_size=64,
        vit_max_num_patch_per_side=70,
        **special_ids,
    )  # fmt: skip


def tiny_processor() -> RobustU1Processor:
    """Byte-level tokenizer and small image bounds (VAE 32–128 px, ViT 28–112 px) for fast runs.

    Example:
        >>> tiny_processor().image_processor.vae_max_size
        128
    """
    image_processor = RobustU1ImageProcessor(vae_max_size=128, vae_min_size=32, vit_max_size=112, vit_min_size=28)
    return RobustU1Processor(image_processor=image_processor, tokenizer=byte_level_tokenizer())


def tiny_random_model(seed: int = 0):
    """A randomly initialised tiny model and its processor (deterministic for a given seed).

    Args:
        seed: the torch seed of the initialisation.

    Returns:
        ``(model, processor)``, the processor also set as ``model.processor``.

    Example:
        >>> model, processor = tiny_random_model(seed=0)
        >>> model.processor is processor
        True
    """
    from .modeling_robust_u1 import RobustU1ForConditionalGeneration

    processor = tiny_processor()
    ids = processor.tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    special = dict(zip(("bos_token_id", "eos_token_id", "start_of_image_token_id", "end_of_image_token_id"), ids))
    torch.manual_seed(seed)
    model = RobustU1ForConditionalGeneration(tiny_config(len(processor.tokenizer), special)).eval()
    model.processor = processor
    return model, processor
