"""Numerical parity with the official BAGEL implementation on tiny random weights.

Every setting (sizes, token ids, prompts, guidance, steps, batch sizes) is read from the reference
folder (``ROBUST_U1_PARITY_DIR``, default ``tests/fixtures/bagel-tiny``), so any reference set made
the same way runs through these tests unchanged.
"""

import numpy as np
import pytest
import torch

from robust_u1 import EditInputs, GuidanceConfig, TextBlock, VitImageBlock
from robust_u1.modeling_robust_u1 import grid_position_ids, patchify
from robust_u1.sampling import flow_timesteps

ATOL = RTOL = 1e-4
RENORM_TYPES = ("text_channel", "global", "channel")


OBSERVED_ERRORS: dict[str, float] = {}  # max |Δ| per golden tensor, printed by conftest's summary


def assert_close(actual, expected, name):
    actual = actual.detach().float()
    err = (actual - expected.float()).abs().max().item()
    OBSERVED_ERRORS[name] = max(err, OBSERVED_ERRORS.get(name, 0.0))
    torch.testing.assert_close(actual, expected.float(), atol=ATOL, rtol=RTOL, msg=f"{name}: max |Δ| = {err:.3g}")


def per_sequence(golden, prefix):
    """Entries ``prefix/0``, ``prefix/1``, … in order."""
    items, i = [], 0
    while f"{prefix}/{i}" in golden:
        items.append(golden[f"{prefix}/{i}"])
        i += 1
    return items


def assert_kv(cache, golden, prefix, num_layers):
    for layer in range(num_layers):
        keys, values = cache.packed(layer)
        assert_close(keys, golden[f"{prefix}/layer{layer}/key"], f"{prefix}/layer{layer}/key")
        assert_close(values, golden[f"{prefix}/layer{layer}/value"], f"{prefix}/layer{layer}/value")


def test_vae(parity_model, golden):
    model = parity_model
    posterior = model.vae.encode(golden["vae/input_image"]).latent_dist
    assert_close(posterior.mean, golden["vae/posterior_mean"], "vae/posterior_mean")
    assert_close(posterior.logvar, golden["vae/posterior_logvar"], "vae/posterior_logvar")
    assert_close(model.encode_images(golden["vae/input_image"], sample_posterior=False), golden["vae/latent_mode"], "vae/latent_mode")
    scale, shift = model.vae.config.scaling_factor, model.vae.config.shift_factor
    sampled = posterior.mean + torch.exp(0.5 * posterior.logvar) * golden["vae/sample_eps"]
    assert_close((sampled - shift) * scale, golden["vae/latent_sample"], "vae/latent_sample")
    assert_close(model.decode_latents(golden["vae/decode_input"]), golden["vae/decode_output"], "vae/decode_output")
    assert_close(model.decode_latents(golden["vae/latent_mode"]), golden["vae/reconstruction"], "vae/reconstruction")


def test_position_tables_are_the_official_values(parity_model, parity_dir):
    from safetensors.torch import load_file

    official = load_file(str(parity_dir / "ema.safetensors"))
    from robust_u1.modeling_robust_u1 import sincos_2d_table

    for name in ("vit_pos_embed.pos_embed", "latent_pos_embed.pos_embed"):
        side = int(official[name].shape[0] ** 0.5)
        assert_close(sincos_2d_table(side, official[name].shape[1]), official[name], f"tables/{name}")


@torch.no_grad()
def test_und_prefill_and_greedy_decoding(parity_model, golden):
    model = parity_model
    batch = int(golden["und/batch_size"])
    images = per_sequence(golden, "und/pixel_values")
    prompts = per_sequence(golden, "und/prompt_ids")
    assert len(images) == len(prompts) == batch

    # ViT tower and connector on the official packed patches.
    vit_tokens = golden["und/prefill_vit/packed_vit_tokens"]
    vit_pos = golden["und/prefill_vit/packed_vit_position_ids"]
    seqlens = golden["und/prefill_vit/vit_token_seqlens"].tolist()
    packed = torch.cat([patchify(img, model.config.vision_config.patch_size) for img in images])
    assert_close(packed, vit_tokens, "und/packed_vit_tokens")
    side = model.config.vit_max_num_patch_per_side
    patch = model.config.vision_config.patch_size
    ids = torch.cat([grid_position_ids((im.shape[1] // patch, im.shape[2] // patch), side) for im in images])
    assert torch.equal(ids, vit_pos)
    vit_out = model.vit_model.vision_model(vit_tokens, vit_pos, seqlens)
    assert_close(vit_out, golden["und/vit/last_hidden_state"], "und/vit/last_hidden_state")
    assert_close(model.connector(vit_out), golden["und/vit/connector_out"], "und/vit/connector_out")

    # Prefill: one ViT stage, one text stage, as the official chat does.
    cache = model.new_cache(batch)
    hidden, _, _ = model.run_blocks(cache, [VitImageBlock(img) for img in images], update_cache=True)
    assert_close(hidden, golden["und/prefill_vit/last_hidden"], "und/prefill_vit/last_hidden")
    hidden, _, _ = model.run_blocks(cache, [TextBlock(p) for p in prompts], update_cache=True)
    assert_close(hidden, golden["und/prefill_text/last_hidden"], "und/prefill_text/last_hidden")
    assert cache.lengths == golden["und/kv_lens"].tolist()
    assert cache.next_positions == golden["und/ropes"].tolist()
    assert_kv(cache, golden, "und/kv", model.config.text_config.num_hidden_layers)

    # Greedy decoding from <|im_start|>.
    tokens = golden["und/decode_start/packed_start_tokens"]
    step_logits, new_tokens = [], []
    for _ in range(golden["und/new_token_ids"].shape[0]):
        logits = model.next_token_logits(cache, tokens)
        tokens = logits.argmax(-1)
        step_logits.append(logits)
        new_tokens.append(tokens)
    assert torch.equal(torch.stack(new_tokens), golden["und/new_token_ids"])
    assert_close(torch.stack(step_logits), golden["und/step_logits"], "und/step_logits")
    assert torch.equal(golden["und/generated_ids"][1:], golden["und/new_token_ids"])


def edit_inputs(golden):
    return EditInputs([golden["edit/vae_pixel_values"]], [golden["edit/vit_pixel_values"]], [golden["edit/prompt_ids"]])


def edit_guidance(golden, renorm_type):
    return GuidanceConfig(
        cfg_text_scale=float(golden["edit/params/cfg_text_scale"]),
        cfg_img_scale=float(golden["edit/params/cfg_img_scale"]),
        cfg_interval=tuple(golden["edit/params/cfg_interval"].tolist()),
        cfg_renorm_type=renorm_type,
        cfg_renorm_min=float(golden["edit/params/cfg_renorm_min"]),
    )


@pytest.fixture(scope="module")
def edit_contexts(parity_model, golden):
    return parity_model.build_edit_contexts(edit_inputs(golden), sample_posterior=False)


def test_edit_contexts(parity_model, golden, edit_contexts):
    model = parity_model
    latent = model.encode_images(golden["edit/vae_pixel_values"][None], sample_posterior=False)
    assert_close(latent, golden["edit/ctx_gen/vae_stage/padded_latent"], "edit/vae_stage/padded_latent")
    tokens, grid = model.latent_to_tokens(latent[0])
    assert_close(tokens, golden["edit/ctx_gen/vae_stage/packed_latent"], "edit/vae_stage/packed_latent")
    assert list(grid) == golden["edit/ctx_gen/vae_stage/patchified_vae_latent_shapes"][0].tolist()
    layers = model.config.text_config.num_hidden_layers
    for name in ("gen", "cfg_text", "cfg_img"):
        cache = getattr(edit_contexts, name)
        assert cache.lengths == golden[f"edit/ctx_{name}/kv_lens"].tolist(), name
        assert cache.next_positions == golden[f"edit/ctx_{name}/ropes"].tolist(), name
        assert_kv(cache, golden, f"edit/ctx_{name}/kv", layers)


@torch.no_grad()
def test_edit_step_velocities_and_guidance(parity_model, golden, edit_contexts):
    model = parity_model
    x_t, t = golden["edit_step/x_t"], float(golden["edit_step/t"])
    grids = edit_contexts.grids
    for name, cache in (("gen", edit_contexts.gen), ("cfg_text", edit_contexts.cfg_text), ("cfg_img", edit_contexts.cfg_img)):
        (v,) = model.predict_velocity(cache, [x_t], grids, t)
        assert_close(v, golden[f"edit_step/v_{name}"], f"edit_step/v_{name}")
    for renorm in RENORM_TYPES:
        (v,) = model.guided_velocities(edit_contexts, [x_t], t, edit_guidance(golden, renorm))
        assert_close(v, golden[f"edit_step/{renorm}/v"], f"edit_step/{renorm}/v")


def test_flow_schedule(golden):
    schedule = flow_timesteps(int(golden["edit/params/num_timesteps"]), float(golden["edit/params/timestep_shift"]))
    assert_close(schedule, golden["edit_full/schedule_t"], "edit_full/schedule_t")
    assert_close(schedule[:-1] - schedule[1:], golden["edit_full/schedule_dt"], "edit_full/schedule_dt")


@pytest.mark.parametrize("renorm", RENORM_TYPES)
@torch.no_grad()
def test_edit_full_denoising_loop(parity_model, golden, renorm):
    """recover() with the golden initial noise reproduces the official edit loop end to end."""
    model = parity_model
    prefix = f"edit_full/{renorm}"
    guidance = edit_guidance(golden, renorm)
    kwargs = dict(
        num_inference_steps=int(golden["edit/params/num_timesteps"]),
        timestep_shift=float(golden["edit/params/timestep_shift"]),
        cfg_text_scale=guidance.cfg_text_scale, cfg_img_scale=guidance.cfg_img_scale,
        cfg_interval=guidance.cfg_interval, cfg_renorm_type=renorm, cfg_renorm_min=guidance.cfg_renorm_min,
        latents=[golden[f"{prefix}/init_noise"]], sample_posterior=False, progress=False,
    )  # fmt: skip
    (latent,) = model.recover(edit_inputs(golden), output_type="latent", **kwargs)
    assert_close(latent[None], golden[f"{prefix}/final_latent_unpatchified"], f"{prefix}/final_latent_unpatchified")
    (decoded,) = model.recover(edit_inputs(golden), output_type="pt", **kwargs)
    expected = (golden[f"{prefix}/decoded_image"][0] * 0.5 + 0.5).clamp(0, 1)
    assert_close(decoded, expected, f"{prefix}/decoded_image")
    (image,) = model.recover(edit_inputs(golden), output_type="pil", **kwargs)
    diff = (torch.from_numpy(np.array(image)).int() - golden[f"{prefix}/decoded_image_uint8"].int()).abs().max()
    assert diff <= 1, "uint8 images may differ by 1 through the truncating conversion"

    # Step by step: the velocities and latents entering every step.
    contexts = model.build_edit_contexts(edit_inputs(golden), sample_posterior=False)
    schedule = flow_timesteps(kwargs["num_inference_steps"], kwargs["timestep_shift"]).tolist()
    x = golden[f"{prefix}/init_noise"]
    active = golden[f"{prefix}/cfg_active"].tolist()
    for k, (t, t_next) in enumerate(zip(schedule[:-1], schedule[1:])):
        assert guidance.is_active(t) == bool(active[k])
        assert_close(x, golden[f"{prefix}/x_t"][k], f"{prefix}/x_t[{k}]")
        (v,) = model.guided_velocities(contexts, [x], t, guidance)
        assert_close(v, golden[f"{prefix}/v"][k], f"{prefix}/v[{k}]")
        x = x - v * (t - t_next)
    assert_close(x, golden[f"{prefix}/final_latent"], f"{prefix}/final_latent")


TRAIN_INPUTS = (
    "sequence_length", "packed_text_ids", "packed_text_indexes", "sample_lens", "packed_position_ids",
    "split_lens", "attn_modes", "packed_vit_tokens", "packed_vit_token_indexes", "packed_vit_position_ids",
    "vit_token_seqlens", "padded_latent", "patchified_vae_latent_shapes", "packed_latent_position_ids",
    "packed_vae_token_indexes", "packed_timesteps", "mse_loss_indexes", "ce_loss_indexes", "packed_label_ids", "noise",
)  # fmt: skip


def training_batch(golden):
    return {name: golden[f"train_forward/{name}"] for name in TRAIN_INPUTS}


@pytest.mark.parametrize("backend", ["sdpa", "flex"])
def test_train_forward(parity_model, golden, parity_dir, backend):
    import json

    model = parity_model
    shift = json.loads((parity_dir / "bagel_config.json").read_text())["timestep_shift"]
    assert model.config.timestep_shift == shift
    model.attention_backend = backend
    try:
        with torch.no_grad():
            out = model(**training_batch(golden))
    finally:
        model.attention_backend = "auto"
    assert_close(out.last_hidden_state, golden["train_forward/last_hidden_state"], "train_forward/last_hidden_state")
    assert_close(out.ce_logits, golden["train_forward/ce_logits"], "train_forward/ce_logits")
    assert_close(out.ce, golden["train_forward/ce"], "train_forward/ce")
    assert_close(out.ce_loss, golden["train_forward/ce_loss"], "train_forward/ce_loss")
    assert_close(out.velocity_pred, golden["train_forward/velocity_pred"], "train_forward/velocity_pred")
    assert_close(out.velocity_target, golden["train_forward/velocity_target"], "train_forward/velocity_target")
    assert_close(out.mse, golden["train_forward/mse"], "train_forward/mse")
    assert_close(out.mse_loss, golden["train_forward/mse_loss"], "train_forward/mse_loss")
    assert_close(out.loss, golden["train_forward/ce_loss"] + golden["train_forward/mse_loss"], "train_forward/loss")
    with torch.no_grad():
        weighted = model(**training_batch(golden), ce_loss_weights=golden["train_forward/ce_loss_weights"])
    assert_close(weighted.ce_loss, golden["train_forward/ce_loss_reweighted"], "train_forward/ce_loss_reweighted")


def test_training_masks(golden):
    from robust_u1.attention import PackedAttentionLayout
    from robust_u1.modeling_robust_u1 import _training_layout

    layout = _training_layout(golden["train_forward/sample_lens"], golden["train_forward/split_lens"], golden["train_forward/attn_modes"])
    assert isinstance(layout, PackedAttentionLayout)
    for i in range(len(layout.splits_per_sequence)):
        expected = golden[f"train_forward/attention_mask/{i}"] == 0
        mask = layout.sequence_mask(i, torch.device("cpu"))
        mask = torch.ones_like(expected) if mask is None else mask
        assert torch.equal(mask, expected), f"attention mask of sample {i}"


# -- TaylorSeer (official ``enable_taylorseer=True``; README section "TaylorSeer edit case") ----------

TAYLORSEER_STEP_TYPES = {1: "full", 0: "Taylor"}


@pytest.fixture(scope="module")
def taylorseer_golden(parity_dir):
    from safetensors.torch import load_file

    path = parity_dir / "taylorseer.safetensors"
    if not path.exists():
        pytest.skip(f"{parity_dir} has no taylorseer.safetensors (TaylorSeer reference case)")
    return load_file(str(path))


def taylorseer_settings(golden):
    from robust_u1.taylorseer import TaylorSeerConfig

    config = TaylorSeerConfig(**{k: int(golden[f"taylorseer/params/{k}"]) for k in ("fresh_threshold", "first_enhance", "max_order")})
    inputs = EditInputs([golden["taylorseer/vae_pixel_values"]], [golden["taylorseer/vit_pixel_values"]], [golden["taylorseer/prompt_ids"]])
    return config, inputs


def taylorseer_guidance(golden, cfg, parity_dir):
    import json

    info = parity_dir / "taylorseer.json"  # the renorm type is only recorded there (text_channel in the public set)
    settings = json.loads(info.read_text())["settings"]["cfg"] if info.exists() else {}
    scale = lambda name: float(golden[f"taylorseer/params/{name}"]) if cfg == "cfg" else 1.0  # noqa: E731
    return GuidanceConfig(
        cfg_text_scale=scale("cfg_text_scale"), cfg_img_scale=scale("cfg_img_scale"),
        cfg_interval=tuple(golden["taylorseer/params/cfg_interval"].tolist()),
        cfg_renorm_type=settings.get("cfg_renorm_type", "text_channel"),
        cfg_renorm_min=float(golden["taylorseer/params/cfg_renorm_min"]),
    )  # fmt: skip


def test_taylorseer_schedule(taylorseer_golden):
    golden = taylorseer_golden
    config, _ = taylorseer_settings(golden)
    steps = golden["taylorseer/step_type"].shape[0]
    types = [TAYLORSEER_STEP_TYPES[int(s)] for s in golden["taylorseer/step_type"]]
    assert config.step_types(steps) == types
    schedule = flow_timesteps(int(golden["taylorseer/params/num_timesteps"]), float(golden["taylorseer/params/timestep_shift"]))
    assert_close(schedule, golden["taylorseer/schedule_t"], "taylorseer/schedule_t")


@pytest.mark.parametrize("mode", ["taylor", "exact"])
@pytest.mark.parametrize("cfg", ["cfg", "nocfg"])
@torch.no_grad()
def test_taylorseer_denoising_loop(parity_model, taylorseer_golden, parity_dir, cfg, mode):
    """recover(enable_taylorseer=...) reproduces the official run; step by step with every branch's cache."""
    import json

    from robust_u1.taylorseer import TaylorSeerCache

    model, golden = parity_model, taylorseer_golden
    prefix = f"taylorseer/{cfg}/{mode}"
    config, inputs = taylorseer_settings(golden)
    guidance = taylorseer_guidance(golden, cfg, parity_dir)
    kwargs = dict(
        num_inference_steps=int(golden["taylorseer/params/num_timesteps"]),
        timestep_shift=float(golden["taylorseer/params/timestep_shift"]),
        cfg_text_scale=guidance.cfg_text_scale, cfg_img_scale=guidance.cfg_img_scale, cfg_interval=guidance.cfg_interval,
        cfg_renorm_type=guidance.cfg_renorm_type, cfg_renorm_min=guidance.cfg_renorm_min,
        latents=[golden["taylorseer/init_noise"]], sample_posterior=False, progress=False,
        enable_taylorseer=mode == "taylor", taylorseer_config=config if mode == "taylor" else None,
    )  # fmt: skip
    (latent,) = model.recover(inputs, output_type="latent", **kwargs)
    assert_close(latent[None], golden[f"{prefix}/final_latent_unpatchified"], f"{prefix}/final_latent_unpatchified")
    (decoded,) = model.recover(inputs, output_type="pt", **kwargs)
    assert_close(decoded, (golden[f"{prefix}/decoded_image"][0] * 0.5 + 0.5).clamp(0, 1), f"{prefix}/decoded_image")
    (image,) = model.recover(inputs, output_type="pil", **kwargs)
    diff = (torch.from_numpy(np.array(image)).int() - golden[f"{prefix}/decoded_image_uint8"].int()).abs().max()
    assert diff <= 1, "uint8 images may differ by 1 through the truncating conversion"

    # Step by step. `batched` is the production path (the called branches in one forward); `alone`
    # runs every branch by itself to read its raw velocity before guidance.
    contexts = model.build_edit_contexts(inputs, sample_posterior=False)
    batched = TaylorSeerCache(config) if mode == "taylor" else None
    alone = TaylorSeerCache(config)
    schedule = flow_timesteps(kwargs["num_inference_steps"], kwargs["timestep_shift"]).tolist()
    x = golden["taylorseer/init_noise"]
    active = golden[f"{prefix}/cfg_active"].tolist()
    branch_names = [n for n in ("gen", "cfg_text", "cfg_img") if f"{prefix}/branch/{n}/step_type" in golden]
    for k, (t, t_next) in enumerate(zip(schedule[:-1], schedule[1:])):
        assert guidance.is_active(t) == bool(active[k])
        assert_close(x, golden[f"{prefix}/x_t"][k], f"{prefix}/x_t[{k}]")
        (v,) = model.guided_velocities(contexts, [x], t, guidance, taylorseer=batched)
        assert_close(v, golden[f"{prefix}/v"][k], f"{prefix}/v[{k}]")
        if mode == "taylor":
            called = ["gen"] + (["cfg_text"] + (["cfg_img"] if guidance.uses_image_context else []) if guidance.is_active(t) else [])
            for name in branch_names:
                ref = f"{prefix}/branch/{name}"
                assert (name in called) == (int(golden[f"{ref}/step_type"][k]) != -1), f"{ref} called at step {k}"
                if name not in called:
                    continue
                (v_branch,) = model.predict_velocity(getattr(contexts, name), [x], contexts.grids, t, taylorseer=alone.select([name]))
                assert_close(v_branch, golden[f"{ref}/v"][k], f"{ref}/v[{k}]")
                for state in (batched.branches[name], alone.branches[name]):
                    assert state.last_step_type == TAYLORSEER_STEP_TYPES[int(golden[f"{ref}/step_type"][k])], f"{ref} step {k}"
                    assert state.last_counter == int(golden[f"{ref}/counter"][k]), f"{ref}/counter[{k}]"
                    assert state.order == int(golden[f"{ref}/taylor_order"][k]), f"{ref}/taylor_order[{k}]"
                    assert state.last_x == int(golden[f"{ref}/taylor_x"][k]), f"{ref}/taylor_x[{k}]"
                    assert_close(state.last_hidden, golden[f"{ref}/h_last"][k], f"{ref}/h_last[{k}]")
            assert batched.branches["gen"].last_step_type == TAYLORSEER_STEP_TYPES[int(golden["taylorseer/step_type"][k])]
        x = x - v * (t - t_next)
    assert_close(x, golden[f"{prefix}/final_latent"], f"{prefix}/final_latent")
    info = parity_dir / "taylorseer.json"
    if mode == "taylor" and info.exists():  # decoder-layer passes: one per branch and full call
        assert batched.decoder_passes == json.loads(info.read_text())["llm_layer_passes"][f"{cfg}/taylor"]


@torch.no_grad()
def test_taylorseer_state_does_not_leak_between_calls(parity_model, taylorseer_golden, parity_dir):
    """The official code keeps its TaylorSeer state on the model; here every call starts fresh."""
    golden = taylorseer_golden
    config, inputs = taylorseer_settings(golden)
    guidance = taylorseer_guidance(golden, "cfg", parity_dir)
    kwargs = dict(
        num_inference_steps=int(golden["taylorseer/params/num_timesteps"]),
        timestep_shift=float(golden["taylorseer/params/timestep_shift"]),
        cfg_text_scale=guidance.cfg_text_scale, cfg_img_scale=guidance.cfg_img_scale, cfg_interval=guidance.cfg_interval,
        cfg_renorm_type=guidance.cfg_renorm_type, cfg_renorm_min=guidance.cfg_renorm_min,
        latents=[golden["taylorseer/init_noise"]], sample_posterior=False, progress=False, output_type="latent",
    )  # fmt: skip
    (first,) = parity_model.recover(inputs, enable_taylorseer=True, taylorseer_config=config, **kwargs)
    (exact,) = parity_model.recover(inputs, **kwargs)
    (second,) = parity_model.recover(inputs, enable_taylorseer=True, taylorseer_config=config, **kwargs)
    assert_close(exact[None], golden["taylorseer/cfg/exact/final_latent_unpatchified"], "taylorseer/cfg/exact/final_latent_unpatchified")
    assert torch.equal(first, second)
