"""The token-layout planner: BAGEL's layout rules written once, used by inference and training."""

import pytest
import torch

from robust_u1.token_layout import (
    TextBlock,
    TokenLayoutPlanner,
    VaeImageBlock,
    VitImageBlock,
    attention_layout_from_batch,
)

BOS, EOS, BOI, EOI = 1, 2, 3, 4
PLANNER = TokenLayoutPlanner(BOS, EOS, BOI, EOI, vit_patch_size=2, latent_stride=4)


def mixed_layout():
    """Sequence 0: a training sample; sequence 1: a decoding step then a denoising query after a cache."""
    sample = [
        VaeImageBlock(pixel_values=torch.zeros(3, 8, 4)),  # 2×1 latent grid → 2 + 2 tokens
        VitImageBlock(torch.zeros(3, 4, 6)),  # 2×3 patches → 6 + 2 tokens
        TextBlock([7, 8, 9]),  # <|im_start|> 7 8 9 <|im_end|>
        TextBlock([10, 11], loss=True),
        VaeImageBlock(pixel_values=torch.zeros(3, 4, 8), noisy=True),  # 1×2 grid, the MSE target
    ]
    query = [TextBlock(torch.tensor([12]), wrap=False), VaeImageBlock(torch.zeros(3, 16), (1, 3), 0.5, noisy=True)]
    return PLANNER.plan([sample, query], start_positions=[0, 5])


def test_token_counts_and_splits():
    layout = mixed_layout()
    assert layout.sequence_lens == [25, 6]
    assert layout.num_tokens == 31
    assert layout.split_lens == [4, 8, 5, 4, 4, 1, 5]
    assert layout.splits_per_sequence == [5, 2]
    assert [(p.sequence, p.start, p.length) for p in layout.placements] == [
        (0, 0, 4), (0, 4, 8), (0, 12, 5), (0, 17, 4), (0, 21, 4), (1, 25, 1), (1, 26, 5)
    ]  # fmt: skip
    assert PLANNER.sequence_length([TextBlock([7, 8, 9]), VitImageBlock(torch.zeros(3, 4, 6))]) == 13


def test_rope_positions():
    layout = mixed_layout()
    # An image block shares one position and advances it by 1 (ViT, clean VAE) or not at all (noisy
    # VAE); text takes consecutive positions; sequence 1 continues from its cache's position 5.
    expected = [0] * 4 + [1] * 8 + [2, 3, 4, 5, 6] + [7, 8, 9, 10] + [11] * 4 + [5] + [6] * 5
    assert layout.position_ids == expected
    assert [p.position for p in layout.placements] == [0, 1, 2, 7, 11, 5, 6]
    assert layout.next_positions == [11, 6]


def test_attention_modes():
    layout = mixed_layout()
    assert layout.split_modes == ["full", "full", "causal", "causal", "noise", "causal", "noise"]
    attention = layout.attention_layout(cache_lens=[0, 7])
    assert attention.split_lens == layout.split_lens
    assert attention.splits_per_sequence == [5, 2]
    assert attention.cache_lens == [0, 7]
    assert attention.query_lens == [25, 6]


def test_expert_routing_and_embedding_sources():
    layout = mixed_layout()
    vae = [1, 2, 22, 23, 27, 28, 29]
    assert layout.vae_indexes == vae
    assert layout.gen_mask().nonzero().flatten().tolist() == vae  # latents → generation expert, all else understanding
    assert layout.vit_indexes == list(range(5, 11))
    assert layout.text_indexes == [0, 3, 4, 11, *range(12, 21), 21, 24, 25, 26, 30]
    assert layout.text_ids.tolist() == [BOI, EOI, BOI, EOI, BOS, 7, 8, 9, EOS, BOS, 10, 11, EOS, BOI, EOI, 12, BOI, EOI]
    assert list(layout.placements[1].content) == list(range(5, 11))
    covered = sorted(layout.text_indexes + layout.vit_indexes + layout.vae_indexes)
    assert covered == list(range(layout.num_tokens))  # every token has exactly one source


def test_loss_indexes():
    layout = mixed_layout()
    assert layout.ce_indexes == [17, 18, 19]  # <|im_start|> 10 11 of the loss text, each predicting the next
    assert layout.labels.tolist() == [10, 11, EOS]
    assert layout.mse_indexes == [22, 23, 27, 28, 29]  # the latents of the noisy images


def test_batch_layout_round_trip():
    layout = mixed_layout()
    modes = torch.tensor([{"causal": 0, "full": 1, "noise": 2}[m] for m in layout.split_modes])
    rebuilt = attention_layout_from_batch(torch.tensor(layout.sequence_lens), torch.tensor(layout.split_lens), modes)
    assert rebuilt == layout.attention_layout()
    with pytest.raises(ValueError, match="does not end on a split boundary"):
        attention_layout_from_batch([6], [4, 4], [1, 0])
    with pytest.raises(ValueError, match=r"Unknown attention split mode\(s\) \[7\]"):
        attention_layout_from_batch([4], [4], [7])


def test_bad_blocks_are_named():
    with pytest.raises(ValueError, match="takes latent `tokens` with their `grid`, or `pixel_values=`: exactly one of the two"):
        VaeImageBlock()
    with pytest.raises(ValueError, match="exactly one of the two"):
        VaeImageBlock(torch.zeros(4, 16), (2, 2), pixel_values=torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match="needs their `grid`.*for pixels pass `pixel_values=`"):
        VaeImageBlock(torch.zeros(3, 8, 8))  # the former VaeItem(pixels) spelling
    with pytest.raises(ValueError, match=r"VAE images must have sides divisible by 4 \(pixels per latent token\), got \(6, 8\); resize them"):
        PLANNER.plan([[VaeImageBlock(pixel_values=torch.zeros(3, 6, 8))]])
    with pytest.raises(TypeError, match="Unknown block str; use TextBlock, VitImageBlock or VaeImageBlock"):
        PLANNER.plan([["text"]])
    with pytest.raises(ValueError, match="Got 1 start positions for 2 sequences"):
        PLANNER.plan([[TextBlock([5])], [TextBlock([6])]], start_positions=[0])


def test_training_batch_follows_the_plan():
    from robust_u1.collators import PackedBatchBuilder

    builder = PackedBatchBuilder(PLANNER, vit_max_num_patch_per_side=8, max_latent_size=8)
    sample = [
        VaeImageBlock(pixel_values=torch.zeros(3, 8, 4)), VitImageBlock(torch.zeros(3, 4, 6)), TextBlock([7, 8, 9]),
        TextBlock([10, 11], loss=True), VaeImageBlock(pixel_values=torch.zeros(3, 4, 8), noisy=True),
    ]  # fmt: skip
    batch = builder([sample, [TextBlock([5], loss=True)]])
    assert batch["sequence_length"] == 25 + 3
    assert batch["sample_lens"].tolist() == [25, 3]
    assert batch["split_lens"].tolist() == [4, 8, 5, 4, 4, 3]
    assert batch["attn_modes"].tolist() == [1, 1, 0, 0, 2, 0]
    assert batch["packed_position_ids"].tolist() == [0] * 4 + [1] * 8 + [2, 3, 4, 5, 6] + [7, 8, 9, 10] + [11] * 4 + [0, 1, 2]
    assert batch["ce_loss_indexes"].tolist() == [17, 18, 19, 25, 26]
    assert batch["packed_label_ids"].tolist() == [10, 11, EOS, 5, EOS]
    assert batch["mse_loss_indexes"].tolist() == [22, 23]
    assert batch["packed_vae_token_indexes"].tolist() == [1, 2, 22, 23]
    assert batch["packed_vit_token_indexes"].tolist() == list(range(5, 11))
    assert batch["patchified_vae_latent_shapes"].tolist() == [[2, 1], [1, 2]]
    assert batch["vae_image_is_noisy"] == [False, True]
    assert batch["vit_token_seqlens"].tolist() == [6]
    with pytest.raises(ValueError, match=r"Training samples give VAE images as pixels: VaeImageBlock\(pixel_values="):
        builder([[VaeImageBlock(torch.zeros(2, 16), (1, 2))]])


def test_training_and_inference_share_the_layout():
    """A sample through the packed training forward and block by block through prefill gives the
    same hidden states: both sides take positions, splits and routing from the one planner."""
    from robust_u1.collators import PackedBatchBuilder
    from robust_u1.tiny import tiny_random_model

    model, processor = tiny_random_model()
    model.eval()
    torch.manual_seed(0)
    vae_pixels = torch.rand(3, 32, 32) * 2 - 1
    vit_pixels = torch.rand(3, 28, 28) * 2 - 1  # 2×2 patches of 14 px
    prompt = processor.encode_text("Describe the picture.")
    latent = model.encode_images(vae_pixels[None], sample_posterior=False)
    tokens, grid = model.latent_to_tokens(latent[0])

    builder = PackedBatchBuilder.from_config(model.config)
    batch = builder([[VaeImageBlock(pixel_values=vae_pixels), VitImageBlock(vit_pixels), TextBlock(prompt)]])
    for key in ("vae_images", "vae_image_is_noisy", "vae_image_sample", "vae_image_token_counts"):
        batch.pop(key)
    with torch.no_grad():
        trained = model(**batch, padded_latent=latent, packed_timesteps=torch.full((tokens.shape[0],), float("-inf")))
        cache = model.new_cache(1)
        pieces = []
        for block in (VaeImageBlock(tokens, grid), VitImageBlock(vit_pixels), TextBlock(prompt)):
            hidden, _, _ = model.run_blocks(cache, [block], update_cache=True)
            pieces.append(hidden)
    torch.testing.assert_close(torch.cat(pieces), trained.last_hidden_state, rtol=1e-4, atol=1e-4)
    assert cache.next_positions == [2 + len(prompt) + 2]
    latent_tokens = tokens.shape[0]
    expected = [0] * (latent_tokens + 2) + [1] * (4 + 2) + list(range(2, 2 + len(prompt) + 2))
    assert batch["packed_position_ids"].tolist() == expected
    with pytest.raises(ValueError, match=r"^The model takes VAE images as latent tokens: VaeImageBlock\(\*model.latent_to_tokens"):
        model.prefill(model.new_cache(1), [VaeImageBlock(pixel_values=vae_pixels)])
    # recover() counts its sequences with the same planner before any computation
    from robust_u1 import EditInputs

    model.config.text_config.max_position_embeddings = 2 * (4 + 2) + (4 + 2) + len(prompt) + 2
    model.check_edit_lengths(EditInputs([vae_pixels], [vit_pixels], [torch.as_tensor(prompt)]))
    model.config.text_config.max_position_embeddings -= 1
    with pytest.raises(ValueError, match=rf"^The input has {2 * 6 + 6 + len(prompt) + 2} tokens"):
        model.check_edit_lengths(EditInputs([vae_pixels], [vit_pixels], [torch.as_tensor(prompt)]))
    with pytest.raises(ValueError, match=r"VAE images must have sides divisible by 16 \(pixels per latent token\), got \(40, 32\)"):
        model.check_edit_lengths(EditInputs([torch.zeros(3, 40, 32)], [vit_pixels], [torch.as_tensor(prompt)]))
