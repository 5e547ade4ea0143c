"""recover()'s denoising loop: step callbacks (diffusers-style), early stop, previews, and up-front validation."""

import numpy as np
import pytest
import torch
from PIL import Image

from robust_u1.tiny import tiny_random_model

STEPS = 6  # 5 denoising steps


@pytest.fixture(scope="module")
def tiny():
    return tiny_random_model(seed=0)


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8))


def seeded(seed):
    return torch.Generator().manual_seed(seed)


def run(model, image, seed=0, **kwargs):
    kwargs = {"num_inference_steps": STEPS, "progress": False, "output_type": "latent", **kwargs}
    return model.recover(image, generator=seeded(seed), **kwargs)


def count_velocity_calls(model, monkeypatch):
    calls = []
    original = type(model).guided_velocities

    def counting(self, contexts, latents, t, guidance):
        calls.append(t)
        return original(self, contexts, latents, t, guidance)

    monkeypatch.setattr(type(model), "guided_velocities", counting)
    return calls


def test_callback_sees_every_step_with_index_time_and_requested_tensors(tiny, image):
    model, _ = tiny
    seen = []

    def callback(pipe, step_index, t, callback_kwargs):
        assert pipe is model
        seen.append((step_index, t, sorted(callback_kwargs)))
        return {}

    run(model, image, callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["latents", "velocities"])
    from robust_u1.sampling import flow_timesteps

    schedule = flow_timesteps(STEPS, 3.0).tolist()
    assert [s[0] for s in seen] == list(range(STEPS - 1))
    assert [s[1] for s in seen] == pytest.approx(schedule[:-1])
    assert all(s[2] == ["latents", "velocities"] for s in seen)


def test_interrupt_stops_early_and_decodes_the_current_latents(tiny, image, monkeypatch):
    model, _ = tiny
    captured = {}

    def stop_after_two(pipe, step_index, t, callback_kwargs):
        captured[step_index] = [x.clone() for x in callback_kwargs["latents"]]
        return {"interrupt": step_index == 1}

    calls = count_velocity_calls(model, monkeypatch)
    latent = run(model, image, callback_on_step_end=stop_after_two)
    assert len(calls) == 2 and sorted(captured) == [0, 1]  # 2 of the 5 steps ran
    torch.testing.assert_close(latent, model.tokens_to_latent(captured[1][0], (2, 3)), atol=0, rtol=0)
    full = run(model, image)
    assert not torch.allclose(latent, full, atol=1e-3)


def test_returned_latents_replace_the_current_ones(tiny, image):
    model, _ = tiny

    def zero_at_the_end(pipe, step_index, t, callback_kwargs):
        if step_index == STEPS - 2:
            return {"latents": [torch.zeros_like(x) for x in callback_kwargs["latents"]]}
        return None

    latent = run(model, image, callback_on_step_end=zero_at_the_end)
    assert torch.equal(latent, torch.zeros_like(latent))
    decoded = run(model, image, callback_on_step_end=zero_at_the_end, output_type="pt")
    expected = (model.decode_latents(torch.zeros_like(latent)[None])[0] * 0.5 + 0.5).clamp(0, 1)
    torch.testing.assert_close(decoded, expected, atol=1e-6, rtol=0)

    # Mid-run: swapping in another run's latents after step 1 gives that run's result.
    other = {}

    def record(pipe, step_index, t, callback_kwargs):
        other[step_index] = [x.clone() for x in callback_kwargs["latents"]]

    # (the mode of the posterior, so that both runs share their context and differ only in their noise)
    target = run(model, image, seed=7, callback_on_step_end=record, sample_posterior=False)
    swap = lambda p, i, t, kw: {"latents": other[1]} if i == 1 else {}  # noqa: E731
    swapped = run(model, image, seed=0, callback_on_step_end=swap, sample_posterior=False)
    torch.testing.assert_close(swapped, target, atol=1e-6, rtol=0)
    assert not torch.allclose(run(model, image, seed=0, sample_posterior=False), target, atol=1e-3)


def test_denoised_preview_of_the_last_step_is_the_final_image(tiny, image):
    model, _ = tiny
    previews = []

    def preview(pipe, step_index, t, callback_kwargs):
        previews.append(pipe.preview_latents(callback_kwargs["denoised"], callback_kwargs["grids"])[0])

    final = run(model, image, output_type="pil", callback_on_step_end=preview, callback_on_step_end_tensor_inputs=["denoised", "grids"])
    assert len(previews) == STEPS - 1 and all(isinstance(p, Image.Image) and p.size == image.size for p in previews)
    # the last step goes to t = 0, where the predicted clean latents are the Euler result
    assert np.abs(np.asarray(previews[-1]).astype(int) - np.asarray(final).astype(int)).max() <= 1


def test_callback_inputs_are_checked_before_any_model_work(tiny, image, monkeypatch):
    model, _ = tiny
    calls = count_velocity_calls(model, monkeypatch)
    with pytest.raises(ValueError, match=r"\['prompt_embeds'\] are not available; choose among \['latents', 'velocities', 'denoised', 'grids'\]"):
        run(model, image, callback_on_step_end=lambda *a: None, callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"])
    with pytest.raises(TypeError, match="callback_on_step_end must be callable, got str"):
        run(model, image, callback_on_step_end="print")
    with pytest.raises(ValueError, match=r"returned latents of shapes \[\(3, 64\)\] at step 0; expected \[\(6, 64\)\]"):
        run(model, image, callback_on_step_end=lambda p, i, t, kw: {"latents": [torch.zeros(3, 64)]})
    assert len(calls) == 1  # only the last call ran a step


def test_a_diffusers_style_callback_object_declares_its_inputs(tiny, image):
    model, _ = tiny

    class KeepLatents:
        tensor_inputs = ["velocities"]

        def __init__(self):
            self.keys = []

        def __call__(self, pipe, step_index, t, callback_kwargs):
            self.keys.append(sorted(callback_kwargs))
            return {}

    callback = KeepLatents()
    run(model, image, callback_on_step_end=callback)
    assert callback.keys == [["velocities"]] * (STEPS - 1)


# -- every setting checked up front (issue 12 item 9 and its unclear errors) ---------------------


@pytest.mark.parametrize(
    "settings, error, message",
    [
        ({"timestep_shift": 0}, ValueError, r"sampling_shift \(timestep_shift\) must be > 0, got 0"),
        ({"timestep_shift": -1.0}, ValueError, r"sampling_shift \(timestep_shift\) must be > 0, got -1"),
        ({"timestep_shift": float("nan")}, ValueError, r"sampling_shift \(timestep_shift\) must be a finite number, got nan"),
        ({"sampling_shift": float("inf")}, ValueError, r"sampling_shift \(timestep_shift\) must be a finite number, got inf"),
        ({"num_inference_steps": 1}, ValueError, r"num_inference_steps must be an int >= 2, got 1 \(the schedule points, t = 1 and t = 0 included\)"),
        ({"num_inference_steps": 2.5}, TypeError, r"num_inference_steps must be an int, got float 2.5"),
        ({"num_inference_steps": "50"}, TypeError, r"num_inference_steps must be an int, got str '50'"),
        ({"cfg_text_scale": float("inf")}, ValueError, r"cfg_text_scale must be a finite number, got inf"),
        ({"cfg_text_scale": float("nan")}, ValueError, r"cfg_text_scale must be a finite number, got nan"),
        ({"cfg_text_scale": -2.0}, ValueError, r"cfg_text_scale must be >= 0, got -2"),
        ({"cfg_img_scale": float("nan")}, ValueError, r"cfg_img_scale must be a finite number, got nan"),
        ({"cfg_img_scale": -1}, ValueError, r"cfg_img_scale must be >= 0, got -1"),
        ({"cfg_renorm_min": float("nan")}, ValueError, r"cfg_renorm_min must be a finite number, got nan"),
        ({"cfg_renorm_min": 1.5}, ValueError, r"cfg_renorm_min must be <= 1, got 1.5"),
        ({"cfg_renorm_type": "none"}, ValueError, r"cfg_renorm_type must be 'global', 'channel' or 'text_channel', got 'none'"),
        ({"cfg_interval": (0.6, 0.2)}, ValueError, r"cfg_interval must satisfy 0 <= low <= high <= 1, got \(0.6, 0.2\)"),
        ({"cfg_interval": (0.0, float("nan"))}, ValueError, r"cfg_interval\[1\] must be a finite number, got nan"),
        ({"cfg_interval": (0.0, 1.0, 2.0)}, ValueError, r"cfg_interval must be two numbers \(low, high\)"),
        ({"cfg_scale": 3.0}, TypeError, r"Unknown recovery settings \['cfg_scale'\]"),
    ],
)
def test_bad_settings_fail_before_any_model_work(tiny, image, monkeypatch, settings, error, message):
    model, _ = tiny
    prefills = []
    monkeypatch.setattr(type(model), "prefill", lambda self, *a, **k: prefills.append(1))
    monkeypatch.setattr(type(model), "encode_edit_latents", lambda self, *a, **k: prefills.append(1))
    with pytest.raises(error, match=message):
        model.recover(image, progress=False, **settings)
    assert not prefills


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"generator": [seeded(0)]}, ValueError, r"Got 1 generators for 2 images: pass one generator, or one per image"),
        ({"generator": 0}, TypeError, r"generator must be a torch.Generator .* got int 0: pass e.g. generator=torch.Generator\(\).manual_seed\(0\)"),
        ({"generator": [seeded(0), "seed"]}, TypeError, r"generator must be a torch.Generator or a list of them \(one per image\), got str"),
        ({"latents": [torch.zeros(6, 64)] * 3}, ValueError, r"Got 3 initial latents for 2 images"),
    ],
)
def test_generators_and_latents_must_match_the_images(tiny, image, monkeypatch, kwargs, error, message):
    model, _ = tiny
    prefills = []
    monkeypatch.setattr(type(model), "prefill", lambda self, *a, **k: prefills.append(1))
    with pytest.raises(error, match=message):
        model.recover([image, image], progress=False, num_inference_steps=3, **kwargs)
    assert not prefills


def test_non_finite_latents_are_an_error_never_a_black_image(tiny, image, monkeypatch):
    model, _ = tiny
    noise = torch.zeros(6, 64)
    noise[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"latents\[0\] holds NaN or infinite values"):
        model.recover(image, latents=[noise], progress=False, num_inference_steps=3)
    original = type(model).guided_velocities
    monkeypatch.setattr(type(model), "guided_velocities", lambda *a: [v * float("nan") for v in original(*a)])
    with pytest.raises(ValueError, match=r"Recovery of image 0 produced NaN or infinite latents after 2 steps"):
        model.recover(image, progress=False, num_inference_steps=3)


def test_cli_rejects_a_bad_setting_with_one_line(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).parent.parent / "examples" / "corrupted_example.png"
    for flags, message in ((["--timestep-shift", "0"], "sampling_shift (timestep_shift) must be > 0, got 0."),
                           (["--cfg-text-scale", "nan", "--steps", "3"], "cfg_text_scale must be a finite number, got nan.")):  # fmt: skip
        result = subprocess.run(
            [sys.executable, "-m", "robust_u1", "recover", str(example), str(tmp_path / "out.png"), *flags],
            capture_output=True, text=True,
        )  # fmt: skip
        assert result.returncode == 2
        lines = [line for line in result.stderr.splitlines() if line.startswith("robust-u1")]
        assert lines == [f"robust-u1 recover: error: {message}"] and "Traceback" not in result.stderr
        assert "bundled TinyWorld" not in result.stderr  # refused before the model is loaded
        assert not (tmp_path / "out.png").exists()


# -- RecoveryConfig: one object, saved with the model, overridable per call ------------------------


def test_recovery_config_is_saved_with_the_model_and_used_by_recover(tmp_path, image, monkeypatch):
    from robust_u1 import RecoveryConfig, RobustU1ForConditionalGeneration

    model, processor = tiny_random_model(seed=0)
    assert model.recovery_config == RecoveryConfig()
    model.recovery_config = {"num_inference_steps": 4, "cfg_text_scale": 3.0, "sampling_shift": 2.0}
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    saved = (tmp_path / "recovery_config.json").read_text()
    assert '"num_inference_steps": 4' in saved and '"sampling_shift": 2.0' in saved
    loaded = RobustU1ForConditionalGeneration.from_pretrained(tmp_path)
    assert loaded.recovery_config == RecoveryConfig(num_inference_steps=4, cfg_text_scale=3.0, sampling_shift=2.0)

    calls = count_velocity_calls(loaded, monkeypatch)
    by_default = loaded.recover(image, generator=seeded(0), progress=False, output_type="latent")
    assert len(calls) == 3  # the saved 4-point schedule
    explicit = loaded.recover(image, generator=seeded(0), progress=False, output_type="latent", num_inference_steps=4,
                              cfg_text_scale=3.0, timestep_shift=2.0, recovery_config=RecoveryConfig())  # fmt: skip
    torch.testing.assert_close(by_default, explicit, atol=0, rtol=0)
    overridden = loaded.recover(image, generator=seeded(0), progress=False, output_type="latent", cfg_text_scale=1.0)
    assert len(calls) == 3 + 3 + 3 and not torch.allclose(overridden, by_default, atol=1e-4)


def test_a_broken_recovery_config_file_names_itself(tmp_path):
    from robust_u1 import RecoveryConfig

    (tmp_path / "recovery_config.json").write_text('{"cfg_text_scale": -1}')
    with pytest.raises(ValueError, match=r"recovery_config.json: cfg_text_scale must be >= 0, got -1"):
        RecoveryConfig.from_pretrained(tmp_path)
    (tmp_path / "recovery_config.json").write_text('{"cfg_text_scale": ')
    with pytest.raises(ValueError, match=r"recovery_config.json is not valid JSON"):
        RecoveryConfig.from_pretrained(tmp_path)
    assert RecoveryConfig.from_pretrained("someone/not-cached-offline") == RecoveryConfig()  # a model without one


def test_flow_grpo_config_nests_the_recovery_config(tmp_path):
    import dataclasses

    from robust_u1 import FlowGRPOConfig, RecoveryConfig

    common = dict(report_to=[], use_cpu=True)
    default = FlowGRPOConfig(str(tmp_path), **common)
    assert default.recovery_config == RecoveryConfig(num_inference_steps=16)  # flow_grpo's BAGEL rollouts
    assert default.per_device_train_batch_size == default.num_generations == 16
    args = FlowGRPOConfig(str(tmp_path), recovery_config={"cfg_text_scale": 3.0, "num_inference_steps": 8}, cfg_img_scale=1.5, **common)
    assert args.recovery_config == RecoveryConfig(num_inference_steps=8, cfg_text_scale=3.0, cfg_img_scale=1.5)
    assert (args.num_inference_steps, args.cfg_text_scale) == (8, 3.0)  # the resolved values stay readable
    assert args.to_dict()["recovery_config"]["cfg_img_scale"] == 1.5 and '"cfg_img_scale": 1.5' in args.to_json_string()
    RecoveryConfig(num_inference_steps=6).save_pretrained(tmp_path / "settings")
    assert FlowGRPOConfig(str(tmp_path), recovery_config=str(tmp_path / "settings"), **common).num_inference_steps == 6
    with pytest.raises(ValueError, match="cfg_renorm_min must be <= 1, got 2"):
        FlowGRPOConfig(str(tmp_path), cfg_renorm_min=2.0, **common)
    assert dataclasses.replace(args, num_generations=4, per_device_train_batch_size=4).recovery_config == args.recovery_config


def test_hf_argument_parser_builds_the_flags_from_the_dataclasses():
    from transformers import HfArgumentParser

    from robust_u1 import FlowGRPOConfig, RecoveryConfig

    (args,) = HfArgumentParser(FlowGRPOConfig).parse_args_into_dataclasses(
        ["--output_dir", "out", "--steps", "8", "--cfg-interval", "0.4", "1", "--cfg_renorm_type", "global", "--use_cpu", "--report_to", "none"]
    )
    assert args.recovery_config == RecoveryConfig(num_inference_steps=8, cfg_interval=(0.4, 1.0), cfg_renorm_type="global")
    assert args.sde_window_range == (0, 5) and args.num_generations == 16


# -- one loop, one step interface -------------------------------------------------------------------


def test_step_rules_share_one_interface_and_vocabulary():
    from robust_u1 import flow_grpo_math
    from robust_u1.sampling import EulerStep, SDEStep, sde_step_with_logprob

    generator = torch.Generator().manual_seed(0)
    v, x = torch.randn(2, 6, 8, generator=generator), torch.randn(2, 6, 8, generator=generator)
    euler = EulerStep().step(v, x, 0.8, 0.6)
    still = SDEStep(noise_level=0.0).step(v, x, 0.8, 0.6)
    torch.testing.assert_close(still.prev_sample, euler.prev_sample, atol=1e-6, rtol=0)
    assert euler.log_prob is None and torch.equal(still.log_prob, torch.zeros(2))
    noise = torch.randn(2, 6, 8, generator=generator)
    ours = SDEStep(noise_level=0.7).step(v, x, 1.0, 0.9, t_max=0.9, noise=noise)
    flow_grpo_names = flow_grpo_math.sde_step_with_logprob(v, x, sigma=1.0, sigma_next=0.9, sigma_max=0.9, noise=noise)
    assert torch.equal(ours.prev_sample, flow_grpo_names.prev_sample) and torch.equal(ours.log_prob, flow_grpo_names.log_prob)
    with pytest.raises(ValueError, match="pass t_max \\(flow_grpo's sigma_max"):
        sde_step_with_logprob(v, x, 1.0, 0.9)


def test_the_training_and_sampling_shifts_are_one_formula():
    from robust_u1.sampling import flow_timesteps, shift_timesteps

    u = torch.linspace(1, 0, 7)
    assert torch.equal(flow_timesteps(7, 3.0), shift_timesteps(u, 3.0))
    torch.testing.assert_close(shift_timesteps(torch.tensor([0.5]), 3.0), torch.tensor([0.75]))


def test_denoise_records_the_sde_window(tiny, image):
    from robust_u1 import RecoveryConfig
    from robust_u1.sampling import SDEStep

    model, _ = tiny
    contexts = model.build_edit_contexts(model.prepare_edit_inputs([image, image]), sample_posterior=False)
    noise = model.prepare_latents(contexts.grids[:1], generator=seeded(0)) * 2  # both images start from the same noise
    config = RecoveryConfig(num_inference_steps=5)

    def rollout():
        streams = [seeded(1), seeded(2)]
        return model.denoise(contexts, noise, config, step_rule=SDEStep(0.7), sde_window=[1, 2], generator=streams)

    first, again = rollout(), rollout()
    assert first.window == [1, 2] and first.log_probs.shape == (2, 2) and first.steps_run == 4
    assert len(first.samples) == len(first.next_samples) == 2 and torch.equal(first.latents[0], again.latents[0])
    assert not torch.allclose(first.latents[0], first.latents[1])  # each image its own noise stream
    ode = model.denoise(contexts, noise, config)
    assert ode.log_probs.numel() == 0 and ode.window == [0, 1, 2, 3]
    assert torch.equal(ode.latents[0], ode.latents[1])  # same image, same initial noise, no SDE noise
