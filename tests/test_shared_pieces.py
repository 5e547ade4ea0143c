"""Pieces the layers share instead of repeating: the prompt/reply format, the cached dataset map, the
trainers' model/processor setup, and TRL's GRPO sampler."""

import datasets
import pytest
from datasets import Dataset
from helpers import noisy_pairs

from robust_u1 import FlowGRPOConfig, FlowGRPOTrainer, FlowMatchingConfig, FlowMatchingTrainer
from robust_u1.data.caching import cached_map, fingerprint
from robust_u1.prompting import (
    RECOVERY_PROMPT,
    THINK_SYSTEM_PROMPT,
    build_question_prompt,
    format_reply,
    parse_reply,
)
from robust_u1.rewards import SSIMReward
from robust_u1.tiny import tiny_random_model


@pytest.mark.parametrize(
    ("reply", "reasoning", "answer"),
    [
        ("<think>It has whiskers.</think><ANSWER>B</ANSWER>", "It has whiskers.", "B"),
        ("<ANSWER> red </ANSWER>", None, "red"),
        ("Let me see.</think>The answer is C", None, "The answer is C"),  # opening tag was in the prompt
        ("<think>A or C?</think><ANSWER>A</ANSWER> no, <ANSWER>C</ANSWER>", "A or C?", "C"),  # last tag wins
        ("Paris", None, "Paris"),
    ],
)
def test_parse_reply_reads_reasoning_and_answer(reply, reasoning, answer):
    assert parse_reply(reply) == (reasoning, answer)


def test_format_reply_round_trips_and_the_old_homes_re_export_the_same_objects():
    from robust_u1 import generation_robust_u1
    from robust_u1.evaluation import options, prompts
    from robust_u1.reasoning import default_reasoning_prompt, format_reasoning_target

    assert parse_reply(format_reply("B", "Two wheels.")) == ("Two wheels.", "B")
    assert parse_reply(format_reply("B")) == (None, "B")
    assert format_reasoning_target("B", "x") == format_reply("B", "x")
    assert prompts.RECOVERY_PROMPT is RECOVERY_PROMPT and prompts.build_mcq_prompt("q", ["a"]) == build_question_prompt("q", ["a"])
    assert options.final_answer_text("<think>x</think><ANSWER>D</ANSWER>") == "D"
    assert default_reasoning_prompt("Which?", ["a", "b"]) == build_question_prompt("Which?", ["a", "b"], recover=True)
    assert generation_robust_u1.THINK_SYSTEM_PROMPT is THINK_SYSTEM_PROMPT


def test_cached_map_names_the_cache_after_the_key_and_reuses_it(tmp_path):
    calls = []

    def double(row):
        calls.append(row["x"])
        return {"x": 2 * row["x"]}

    rows = Dataset.from_dict({"x": [1, 2, 3]})
    key = fingerprint("double", rows._fingerprint)
    first = cached_map(rows, double, prefix="double", key=key, cache_dir=tmp_path, desc="doubling")
    assert first["x"] == [2, 4, 6] and calls == [1, 2, 3]
    assert first._fingerprint == key and (tmp_path / f"double-{key}.arrow").is_file()
    again = cached_map(rows, double, prefix="double", key=key, cache_dir=tmp_path)
    assert again["x"] == [2, 4, 6] and calls == [1, 2, 3]  # read back, not recomputed
    other = cached_map(rows, double, prefix="double", key=fingerprint("double", rows._fingerprint, "v2"), cache_dir=tmp_path)
    assert other["x"] == [2, 4, 6] and calls == [1, 2, 3] * 2


def test_flow_grpo_uses_trls_repeat_sampler(tmp_path):
    from trl.trainer.grpo_trainer import RepeatSampler

    model, _ = tiny_random_model()
    args = FlowGRPOConfig(str(tmp_path), num_generations=3, per_device_train_batch_size=6, report_to=[], use_cpu=True, seed=7)
    trainer = FlowGRPOTrainer(model, [SSIMReward()], args, train_dataset=Dataset.from_list(noisy_pairs(4)))
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, RepeatSampler)
    order = list(sampler)
    groups = [order[i : i + 3] for i in range(0, len(order), 3)]
    assert len(order) == 12 and all(len(set(group)) == 1 for group in groups)  # G copies of one image in a row
    assert sorted(group[0] for group in groups) == [0, 1, 2, 3]
    assert order == list(trainer._get_train_sampler())  # seeded by args.seed


@pytest.mark.parametrize("trainer_class", [FlowMatchingTrainer, FlowGRPOTrainer])
def test_both_trainers_share_the_model_and_processor_setup(tmp_path, trainer_class):
    model, processor = tiny_random_model()
    rows = Dataset.from_list(noisy_pairs(2))
    extra = [[SSIMReward()]] if trainer_class is FlowGRPOTrainer else []
    config_class = FlowGRPOConfig if trainer_class is FlowGRPOTrainer else FlowMatchingConfig
    sizes = dict(num_generations=2, per_device_train_batch_size=2) if trainer_class is FlowGRPOTrainer else {}
    args = config_class(str(tmp_path), report_to=[], use_cpu=True, vae_max_size=64, **sizes)
    model.processor = None
    with pytest.raises(ValueError, match=f"{trainer_class.__name__} needs the model's processor: pass `processing_class=`"):
        trainer_class(model, *extra, args, train_dataset=rows)
    trainer = trainer_class(model, *extra, args, train_dataset=rows, processing_class=processor)
    assert trainer.processing_class is processor and processor.image_processor.vae_max_size == 64


def test_cached_map_forwards_the_map_arguments(tmp_path):
    rows = datasets.Dataset.from_dict({"x": [1, 2, 3, 4]})
    sizes = []

    def increment(batch):
        sizes.append(len(batch["x"]))
        return {"x": [v + 1 for v in batch["x"]]}

    out = cached_map(rows, increment, prefix="inc", key="k" * 16, cache_dir=tmp_path, batched=True, batch_size=3)
    assert out["x"] == [2, 3, 4, 5] and sizes == [3, 1]


@pytest.mark.parametrize(
    ("implementation", "backend"), [(None, "auto"), ("sdpa", "sdpa"), ("eager", "sdpa"), ("flex_attention", "flex")]
)
def test_attn_implementation_from_pretrained_picks_the_packed_attention(parity_dir, golden, implementation, backend):
    import torch
    from test_parity import assert_close, training_batch

    from robust_u1 import RobustU1ForConditionalGeneration

    kwargs = {"attn_implementation": implementation} if implementation else {}
    model = RobustU1ForConditionalGeneration.from_pretrained(parity_dir, dtype=torch.float32, **kwargs).eval()
    assert model.attention_backend == backend
    assert model.config.vision_config._attn_implementation == (implementation or "sdpa")  # SigLIP honours it natively
    with torch.no_grad():
        out = model(**training_batch(golden))
    assert_close(out.last_hidden_state, golden["train_forward/last_hidden_state"], "train_forward/last_hidden_state")
    assert_close(out.velocity_pred, golden["train_forward/velocity_pred"], "train_forward/velocity_pred")


def test_attention_backend_assignment_sets_the_config(parity_model):
    model = parity_model
    try:
        model.attention_backend = "flex"
        assert model.config.text_config._attn_implementation == "flex_attention"
        with pytest.raises(ValueError, match=r"attention_backend must be one of \['auto', 'flex', 'sdpa'\], got 'fast'"):
            model.attention_backend = "fast"
    finally:
        model.attention_backend = "auto"
    assert model.config.text_config._attn_implementation is None


def test_flex_attention_serves_cache_free_batches_and_sdpa_the_cached_calls():
    import torch

    from robust_u1.attention import resolve_attention_backend

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert [resolve_attention_backend("flex", cpu, has_cache) for has_cache in (False, True)] == ["flex", "sdpa"]
    assert [resolve_attention_backend("auto", device, False) for device in (cpu, cuda)] == ["sdpa", "flex"]
    assert resolve_attention_backend("auto", cuda, True) == "sdpa"
