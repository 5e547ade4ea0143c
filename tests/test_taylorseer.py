"""TaylorSeer outside the golden case: settings, guidance intervals, batches, misuse.

Parity with the official implementation is in test_parity.py (``test_taylorseer_*``).
"""

import pytest
import torch
from PIL import Image

from robust_u1 import GuidanceConfig
from robust_u1.sampling import euler_step, flow_timesteps, guided_velocity
from robust_u1.taylorseer import TaylorSeerCache, TaylorSeerConfig
from robust_u1.tiny import tiny_random_model

pytestmark = pytest.mark.usefixtures("single_thread")
PROMPT = [5, 6, 7]


@pytest.fixture(scope="module")
def tiny():
    model, _ = tiny_random_model(seed=0)
    return model


def images(*sizes):
    return [Image.new("RGB", size, (40 + 30 * i, 90, 200 - 40 * i)) for i, size in enumerate(sizes)]


def recover_latents(model, inputs, **kwargs):
    defaults = dict(prompt=PROMPT, num_inference_steps=16, output_type="latent", progress=False,
                    sample_posterior=False, generator=torch.Generator().manual_seed(0))  # fmt: skip
    return model.recover(inputs, **{**defaults, **kwargs})


def test_official_schedule_and_settings():
    assert TaylorSeerConfig().step_types(14) == ["full"] * 5 + ["Taylor", "Taylor", "full"] * 3
    assert TaylorSeerConfig(fresh_threshold=4, first_enhance=2).step_types(7) == ["full", "full", "Taylor", "Taylor", "Taylor", "full", "Taylor"]
    assert TaylorSeerConfig(fresh_threshold=1).step_types(9) == ["full"] * 9
    assert TaylorSeerConfig.from_value({"max_order": 2}) == TaylorSeerConfig(3, 5, 2)
    with pytest.raises(ValueError, match=r"TaylorSeerConfig.fresh_threshold must be an integer >= 1, got 0"):
        TaylorSeerConfig(fresh_threshold=0)
    with pytest.raises(ValueError, match=r"TaylorSeerConfig.first_enhance must be an integer >= 1, got 2.5"):
        TaylorSeerConfig(first_enhance=2.5)
    with pytest.raises(ValueError, match=r"Unknown TaylorSeer setting\(s\) \['order'\]: use fresh_threshold"):
        TaylorSeerConfig.from_value({"order": 2})
    with pytest.raises(TypeError, match="taylorseer_config must be a TaylorSeerConfig, a dict or None, got int"):
        TaylorSeerConfig.from_value(3)


def test_recover_rejects_misuse_before_work(tiny):
    (image,) = images((32, 32))
    with pytest.raises(ValueError, match="taylorseer_config is given but enable_taylorseer=False"):
        tiny.recover(image, prompt=PROMPT, taylorseer_config={"max_order": 2}, progress=False)
    with pytest.raises(ValueError, match="TaylorSeerConfig.max_order must be an integer >= 0, got -1"):
        tiny.recover(image, prompt=PROMPT, enable_taylorseer=True, taylorseer_config={"max_order": -1}, progress=False)


def test_every_step_full_equals_the_exact_sampler(tiny):
    inputs = tiny.prepare_edit_inputs(images((48, 32)), PROMPT)
    exact = recover_latents(tiny, inputs)
    always_full = recover_latents(tiny, inputs, enable_taylorseer=True, taylorseer_config={"fresh_threshold": 1})
    assert torch.equal(exact[0], always_full[0])
    approximate = recover_latents(tiny, inputs, enable_taylorseer=True)
    assert not torch.equal(exact[0], approximate[0])
    assert (exact[0] - approximate[0]).abs().max() < 0.2 * exact[0].abs().max()


def test_taylor_steps_skip_the_decoder_layers(tiny):
    inputs = tiny.prepare_edit_inputs(images((32, 32)), PROMPT)
    calls = []
    hook = tiny.language_model.model.layers[-1].register_forward_hook(lambda *args: calls.append(1))
    try:
        recover_latents(tiny, inputs, num_inference_steps=26, enable_taylorseer=True)
        with_taylorseer, calls[:] = len(calls), []
        recover_latents(tiny, inputs, num_inference_steps=26)
    finally:
        hook.remove()
    prefill = 4  # VAE, ViT and prompt stages of the gen context, prompt of cfg_img
    assert (with_taylorseer - prefill, len(calls) - prefill) == (11, 25)


@torch.no_grad()
def test_branches_keep_their_own_counters_inside_a_cfg_interval(tiny):
    """With cfg_interval = (0.3, 0.9) the CFG branches start after gen; a step where gen extrapolates
    and the CFG branches run their layers mixes both kinds in one call. Each branch must see the same
    sequence of calls as when it runs alone."""
    inputs = tiny.prepare_edit_inputs(images((32, 48), (48, 32)), PROMPT)  # two sizes in one batch
    contexts = tiny.build_edit_contexts(inputs, sample_posterior=False)
    guidance = GuidanceConfig(cfg_interval=(0.3, 0.9))
    x = tiny.prepare_latents(contexts.grids, generator=torch.Generator().manual_seed(1))
    batched, alone = TaylorSeerCache(), TaylorSeerCache()
    timesteps = flow_timesteps(30, 3.0).tolist()
    mixed_steps = 0
    for t, t_next in zip(timesteps[:-1], timesteps[1:]):
        v = tiny.guided_velocities(contexts, x, t, guidance, taylorseer=batched)
        names = ["gen", "cfg_text", "cfg_img"] if guidance.is_active(t) else ["gen"]
        per_branch = {
            name: tiny.predict_velocity(getattr(contexts, name), x, contexts.grids, t, taylorseer=alone.select([name]))
            for name in names
        }  # fmt: skip
        if len({batched.branches[n].last_step_type for n in names}) > 1:
            mixed_steps += 1
        expected = (
            [guided_velocity(*branch_v, guidance) for branch_v in zip(*per_branch.values())]
            if len(names) == 3 else per_branch["gen"]
        )  # fmt: skip
        for a, b in zip(v, expected):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        x = [euler_step(xi, vi, t, t_next) for xi, vi in zip(x, v)]
    active = sum(guidance.is_active(t) for t in timesteps[:-1])
    assert batched.branches["gen"].counter == 29
    assert batched.branches["cfg_text"].counter == batched.branches["cfg_img"].counter == active < 29
    assert mixed_steps > 0


def test_batch_equals_one_image_at_a_time(tiny):
    pictures, noise = images((32, 48), (64, 32)), [torch.randn(6, 64), torch.randn(8, 64)]  # 3×2 and 2×4 tokens
    batch = recover_latents(tiny, tiny.prepare_edit_inputs(pictures, PROMPT), enable_taylorseer=True, latents=noise)
    for i, picture in enumerate(pictures):
        (single,) = recover_latents(tiny, tiny.prepare_edit_inputs([picture], PROMPT), enable_taylorseer=True, latents=[noise[i]])
        torch.testing.assert_close(batch[i], single, atol=1e-5, rtol=1e-5)


def test_refused_with_gradients_and_across_runs(tiny):
    inputs = tiny.prepare_edit_inputs(images((32, 32)), PROMPT)
    with torch.no_grad():
        contexts = tiny.build_edit_contexts(inputs, sample_posterior=False)
    guidance = GuidanceConfig()
    x = [torch.randn(4, 64)]
    with pytest.raises(RuntimeError, match="TaylorSeer is for inference only: a Taylor step skips the decoder layers"):
        tiny.guided_velocities(contexts, x, 1.0, guidance, taylorseer=TaylorSeerCache())
    taylorseer = TaylorSeerCache({"first_enhance": 1})
    with torch.no_grad():
        tiny.guided_velocities(contexts, x, 1.0, guidance, taylorseer=taylorseer)  # full call: caches 4 latent tokens
        bigger = tiny.build_edit_contexts(tiny.prepare_edit_inputs(images((48, 32)), PROMPT), sample_posterior=False)
        with pytest.raises(ValueError, match=r"TaylorSeer cache holds queries of \[6\] tokens but this call has \[8\]"):
            tiny.guided_velocities(bigger, [torch.randn(6, 64)], 0.9, guidance, taylorseer=taylorseer)


def test_refused_for_stochastic_steps(tiny):
    """Flow-GRPO's SDE window must see exact velocities: `denoise` rejects TaylorSeer with a stochastic rule."""
    from robust_u1 import RecoveryConfig
    from robust_u1.sampling import SDEStep

    with torch.no_grad():
        contexts = tiny.build_edit_contexts(tiny.prepare_edit_inputs(images((32, 32)), PROMPT), sample_posterior=False)
    x = tiny.prepare_latents(contexts.grids, generator=torch.Generator().manual_seed(0))
    config = RecoveryConfig(num_inference_steps=8)
    with pytest.raises(ValueError, match=r"TaylorSeer cannot drive stochastic \(SDE\) steps"), torch.no_grad():
        tiny.denoise(contexts, x, config, step_rule=SDEStep(), sde_window=[1, 2], taylorseer=TaylorSeerConfig())
    with torch.no_grad():  # the Euler rule: the same as recover(enable_taylorseer=True)
        out = tiny.denoise(contexts, x, config, taylorseer={"fresh_threshold": 2})
    assert out.steps_run == 7 and torch.isfinite(out.latents[0]).all()
