"""Device maps and offloading (issue 14 item 1): both layouts dispatched over cpu + disk give the
undispatched model's recover() and generate() outputs exactly; shared modules stay together; every
layer's KV cache is made on that layer's device."""

import pytest
import torch

from robust_u1 import RobustU1ForConditionalGeneration, convert_bagel_checkpoint
from robust_u1.loading import plan_device_map
from robust_u1.packing import TextBlock, VitImageBlock

from helpers import recover_latent

pytestmark = pytest.mark.usefixtures("single_thread")

SPLIT_MAP = {
    "": "cpu",
    "language_model.model.layers.1": "disk",  # the decoder layers on two placements
    "vit_model.vision_model.encoder.layers.0": "disk",
    "vae.decoder": "disk",
}


@pytest.fixture(scope="module")
def sources(parity_dir, tmp_path_factory):
    return {"official": parity_dir, "hf": convert_bagel_checkpoint(parity_dir, tmp_path_factory.mktemp("hf") / "bagel-tiny-hf")}


@pytest.fixture(scope="module")
def reference(parity_model, golden):
    return recover_latent(parity_model, golden), generate_ids(parity_model, golden)


def generate_ids(model, golden):
    blocks = [VitImageBlock(golden["edit/vit_pixel_values"]), TextBlock(golden["edit/prompt_ids"])]
    return model.generate([blocks, blocks[1:]], max_new_tokens=6)


@pytest.mark.parametrize("layout", ["official", "hf"])
@pytest.mark.parametrize("device_map", ["split", "auto"])
def test_dispatched_model_gives_the_same_outputs(sources, reference, golden, tmp_path, layout, device_map):
    kwargs = {"device_map": SPLIT_MAP, "offload_folder": tmp_path / "offload"}
    if device_map == "auto":  # accelerate's plan under a CPU cap: what does not fit goes to disk
        kwargs.update(device_map="auto", max_memory={"cpu": "400KB"})
    model = RobustU1ForConditionalGeneration.from_pretrained(sources[layout], **kwargs)
    placements = model.hf_device_map
    assert set(placements.values()) == {"cpu", "disk"}
    layers = model.language_model.model.layers
    if device_map == "split":
        assert placements["language_model.model.layers.0"] == "cpu" and placements["language_model.model.layers.1"] == "disk"
        assert layers[0].mlp.up_proj.weight.device.type == "cpu"
    offloaded = [name for name, place in placements.items() if place == "disk"]
    assert offloaded and all(p.device.type == "meta" for name in offloaded for p in model.get_submodule(name).parameters())
    if layout == "official":  # streamed to the offload folder; transformers reads the HF layout's safetensors in place
        assert any((tmp_path / "offload").glob("*.dat"))
    assert model.device == torch.device("cpu")
    expected_latent, expected_ids = reference
    assert torch.equal(recover_latent(model, golden), expected_latent)
    assert torch.equal(generate_ids(model, golden), expected_ids)


def test_shared_modules_follow_the_token_embeddings(parity_model):
    plan = plan_device_map(parity_model, {"": "disk", "language_model.model.embed_tokens": "cpu", "language_model.model.layers.0": "cpu"})
    for name in RobustU1ForConditionalGeneration._same_device_modules:
        assert plan[name] == "cpu", name
    assert plan["language_model.model.layers.0"] == "cpu" and plan["language_model.model.layers.1"] == "disk"
    assert plan["vae.decoder"] == "disk" and plan["vit_model.vision_model.encoder.layers.1"] == "disk"
    # Units are the modules our code calls: never the containers whose forward is not run.
    assert "language_model" not in plan and "vae" not in plan and "vit_model" not in plan


def test_bad_device_maps_are_named(parity_model, parity_dir):
    with pytest.raises(ValueError, match=r"device_map splits language_model\.model\.layers\.0 over several devices"):
        plan_device_map(parity_model, {"": "cpu", "language_model.model.layers.0.mlp": "disk"})
    with pytest.raises(ValueError, match=r"device_map names \['transformer.h.0'\], which are not modules"):
        plan_device_map(parity_model, {"": "cpu", "transformer.h.0": "disk"})
    with pytest.raises(ValueError, match="offloads to disk: pass offload_folder="):
        RobustU1ForConditionalGeneration.from_pretrained(parity_dir, device_map=SPLIT_MAP)


def test_each_layer_cache_is_made_on_its_layer_device(sources, tmp_path):
    """A layer placed on another device gets its KV cache there (checked with 'meta' as the other device)."""
    model = RobustU1ForConditionalGeneration.from_pretrained(sources["official"], device_map=SPLIT_MAP, offload_folder=tmp_path)
    hook = model.language_model.model.layers[1]._hf_hook
    assert hook.execution_device in ("cpu", torch.device("cpu"))
    hook.execution_device = torch.device("meta")
    cache = model.new_cache(batch_size=2)
    assert [k[0].device.type for k in cache.keys] == ["cpu", "meta"]
    assert [v[1].device.type for v in cache.values] == ["cpu", "meta"]


def test_answer_and_pipeline_run_on_a_dispatched_model(tmp_path):
    """answer() (recover, then generate over [I_c, I_r, Q]) and the pipeline on a model with layers on disk."""
    import numpy as np
    from PIL import Image
    from transformers import pipeline

    from robust_u1.tiny import tiny_random_model

    plain, processor = tiny_random_model(seed=0)
    plain.save_pretrained(tmp_path / "tiny")
    processor.save_pretrained(tmp_path / "tiny")
    dispatched = RobustU1ForConditionalGeneration.from_pretrained(
        tmp_path / "tiny", device_map={"": "cpu", "language_model.model.layers.0": "disk", "vae.encoder": "disk"},
        offload_folder=tmp_path / "offload",
    )  # fmt: skip
    assert dispatched.language_model.model.layers[0].self_attn.q_proj.weight.device.type == "meta"
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8))
    kwargs = {"max_new_tokens": 4, "recover_kwargs": {"num_inference_steps": 3, "progress": False, "generator": torch.Generator().manual_seed(0)}}
    expected = plain.answer(image, "Which?", options=["a", "b"], **kwargs)
    kwargs["recover_kwargs"]["generator"] = torch.Generator().manual_seed(0)
    result = dispatched.answer(image, "Which?", options=["a", "b"], **kwargs)
    assert result.raw_text == expected.raw_text
    assert np.array_equal(np.asarray(result.recovered_image), np.asarray(expected.recovered_image))
    kwargs["recover_kwargs"]["generator"] = torch.Generator().manual_seed(0)
    output = pipeline("robust-vqa", model=dispatched)({"image": image, "question": "Which?", "options": ["a", "b"]}, **kwargs)
    assert output["answer"] == expected.answer and np.array_equal(np.asarray(output["recovered_image"]), np.asarray(expected.recovered_image))


def test_grpo_rollouts_on_a_dispatched_model(tmp_path):
    """FlowGRPOTrainer's rollouts (shared prefill, SDE window, log-probs) are identical with a layer on disk."""
    from datasets import Dataset
    from helpers import noisy_pairs

    from robust_u1 import FlowGRPOConfig, FlowGRPOTrainer
    from robust_u1.rewards import SSIMReward
    from robust_u1.tiny import tiny_random_model

    plain, processor = tiny_random_model(seed=0)
    plain.save_pretrained(tmp_path / "tiny")
    processor.save_pretrained(tmp_path / "tiny")
    dispatched = RobustU1ForConditionalGeneration.from_pretrained(
        tmp_path / "tiny", device_map={"": "cpu", "language_model.model.layers.1": "disk"}, offload_folder=tmp_path / "offload"
    )
    args = FlowGRPOConfig(
        str(tmp_path / "run"), num_generations=2, per_device_train_batch_size=4, max_steps=1, num_inference_steps=4,
        sde_window_size=1, sde_window_range=(0, 3), report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True,
        sample_posterior=False, seed=0,
    )  # fmt: skip
    rows = [row for row in noisy_pairs(2) for _ in range(2)]
    rollouts = [
        FlowGRPOTrainer(model, [SSIMReward()], args, train_dataset=Dataset.from_list(noisy_pairs(2)))._generate(rows)
        for model in (plain, dispatched)
    ]
    assert all(torch.equal(a, b) for a, b in zip(rollouts[0].final_latents, rollouts[1].final_latents))
    assert torch.equal(rollouts[0].old_log_probs, rollouts[1].old_log_probs) and rollouts[0].old_log_probs.abs().sum() > 0
