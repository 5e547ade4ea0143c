"""Stage III: I_r precomputation (cache, resume), Robust-R1 import, collation, standard-Trainer training."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import Trainer

from robust_u1.modeling_robust_u1 import patchify
from robust_u1.reasoning import (
    ReasoningCollator,
    answer_token_loss,
    build_reasoning_dataset,
    default_reasoning_prompt,
    format_reasoning_target,
    load_robust_r1_jsonl,
    reasoning_training_arguments,
)
from robust_u1.tiny import tiny_random_model

pytestmark = pytest.mark.usefixtures("single_thread")  # see conftest.py
EXAMPLE_SCRIPT = Path(__file__).parents[1] / "examples" / "train_reasoning.py"
FAST_RECOVERY = {"num_inference_steps": 2}
COLORS = {"red": (200, 30, 30), "blue": (30, 30, 200)}


def color_rows(count: int, seed: int = 0) -> datasets.Dataset:
    """A tiny task: is the (noisy) image red or blue? Options as VLMEvalKit A/B columns, every other row with reasoning."""
    rng = np.random.default_rng(seed)
    names = [("red", "blue")[i % 2] for i in range(count)]
    images = [
        Image.fromarray(np.clip(np.array(COLORS[name]) + rng.integers(-40, 40, (32, 32, 3)), 0, 255).astype(np.uint8))
        for name in names
    ]
    return datasets.Dataset.from_dict(
        {
            "image": images,
            "question": ["What color is the image?"] * count,
            "A": ["red"] * count,
            "B": ["blue"] * count,
            "answer": ["A" if name == "red" else "blue" for name in names],  # an option's text becomes its letter
            "reasoning": [f"Most pixels are {name}." if i % 2 == 0 else None for i, name in enumerate(names)],
            "category": ["color"] * count,
        },
        features=datasets.Features(
            {
                "image": datasets.Image(),
                **{key: datasets.Value("string") for key in ("question", "A", "B", "answer", "reasoning", "category")},
            }
        ),
    )


@pytest.fixture(scope="module")
def tiny():
    return tiny_random_model(seed=0)


@pytest.fixture(scope="module")
def color_task(tiny, tmp_path_factory) -> datasets.Dataset:
    model, processor = tiny
    cache = tmp_path_factory.mktemp("reasoning-cache")
    return build_reasoning_dataset(color_rows(12), model, processor, recover_kwargs=FAST_RECOVERY, cache_dir=cache)


class RecoverCalls:
    """Stands in for `model.recover`: counts calls and can fail on one, like an interrupted run."""

    def __init__(self, model, fail_on_call: int | None = None):
        self.recover = model.recover
        self.fail_on_call = fail_on_call
        self.calls = 0

    def __call__(self, images, **kwargs):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise RuntimeError("interrupted")
        return self.recover(images, **kwargs)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


# ----------------------------------------------------------------------------------------------
# build_reasoning_dataset
# ----------------------------------------------------------------------------------------------


def test_built_rows_have_standard_columns_and_normalised_answers(color_task):
    assert set(color_task.column_names) == {
        "image",
        "recovered_image",
        "question",
        "options",
        "answer",
        "reasoning",
        "category",
    }
    assert color_task["options"][:2] == [["red", "blue"], ["red", "blue"]]
    assert color_task["answer"][:4] == ["A", "B", "A", "B"]
    assert color_task["reasoning"][:2] == ["Most pixels are red.", None]
    first = color_task[0]
    assert first["recovered_image"].size == (32, 32)
    assert not np.array_equal(pixels(first["recovered_image"]), pixels(first["image"]))


def test_paths_option_strings_and_blank_option_cells(tiny, tmp_path):
    model, processor = tiny
    path = tmp_path / "sign.png"
    Image.new("RGB", (40, 32), (200, 30, 30)).save(path)
    rows = datasets.Dataset.from_dict(
        {
            "image": [str(path), str(path)],
            "question": ["Which color?", "Which shape?"],
            "options": ["A.red; B.blue", None],
            "A": [None, "round"],
            "B": [None, "square"],
            "C": [None, float("nan")],  # VLMEvalKit TSV cell read through pandas
            "answer": ["A", "square"],
        }
    )
    built = build_reasoning_dataset(rows, model, processor, recover_kwargs=FAST_RECOVERY, cache_dir=tmp_path / "c")
    assert built["options"] == [["red", "blue"], ["round", "square"]]
    assert built["answer"] == ["A", "B"]
    assert built["reasoning"] == [None, None]
    assert built[0]["image"].size == (40, 32)


def test_corrupted_image_is_stored_byte_for_byte(color_task):
    original = color_rows(12).cast_column("image", datasets.Image(decode=False))[0]["image"]["bytes"]
    stored = color_task.cast_column("image", datasets.Image(decode=False))[0]["image"]["bytes"]
    assert stored == original


def test_rerun_is_cached_and_interrupted_run_resumes(tiny, tmp_path, monkeypatch):
    model, processor = tiny
    rows = color_rows(6)
    options = {"recover_kwargs": FAST_RECOVERY, "batch_size": 2, "rows_per_shard": 2, "cache_dir": tmp_path / "a"}

    interrupted = RecoverCalls(model, fail_on_call=3)  # shards 0-1 and 2-3 finish, 4-5 fails
    monkeypatch.setattr(model, "recover", interrupted)
    with pytest.raises(RuntimeError, match="interrupted"):
        build_reasoning_dataset(rows, model, processor, **options)
    assert interrupted.calls == 3

    resumed_calls = RecoverCalls(model)
    monkeypatch.setattr(model, "recover", resumed_calls)
    resumed = build_reasoning_dataset(rows, model, processor, **options)
    assert resumed_calls.calls == 1  # only the unfinished shard

    cached_calls = RecoverCalls(model)
    monkeypatch.setattr(model, "recover", cached_calls)
    cached = build_reasoning_dataset(rows, model, processor, **options)
    assert cached_calls.calls == 0
    assert cached["answer"] == resumed["answer"]

    # An uninterrupted build in other batches gives the same images: noise is seeded per row.
    reference_calls = RecoverCalls(model)
    monkeypatch.setattr(model, "recover", reference_calls)
    reference = build_reasoning_dataset(
        rows, model, processor, **{**options, "batch_size": 3, "rows_per_shard": 6, "cache_dir": tmp_path / "b"}
    )
    assert reference_calls.calls == 2
    for resumed_image, reference_image in zip(resumed["recovered_image"], reference["recovered_image"]):
        assert np.abs(pixels(resumed_image) - pixels(reference_image)).max() <= 1


def test_cache_key_follows_recover_arguments_seed_and_weights(tiny, tmp_path, monkeypatch):
    model, processor = tiny
    rows = color_rows(2)
    build_reasoning_dataset(rows, model, processor, recover_kwargs=FAST_RECOVERY, cache_dir=tmp_path)
    same_weights, _ = tiny_random_model(seed=0)
    other_weights, _ = tiny_random_model(seed=1)  # same name and config: only the weights differ
    calls = {}
    for name, candidate in (("model", model), ("same", same_weights), ("other", other_weights)):
        calls[name] = RecoverCalls(candidate)
        monkeypatch.setattr(candidate, "recover", calls[name])
    build_reasoning_dataset(rows, same_weights, processor, recover_kwargs=FAST_RECOVERY, cache_dir=tmp_path)
    assert calls["same"].calls == 0
    build_reasoning_dataset(rows, model, processor, recover_kwargs={"num_inference_steps": 3}, cache_dir=tmp_path)
    build_reasoning_dataset(rows, model, processor, recover_kwargs=FAST_RECOVERY, seed=1, cache_dir=tmp_path)
    assert calls["model"].calls == 2
    build_reasoning_dataset(rows, other_weights, processor, recover_kwargs=FAST_RECOVERY, cache_dir=tmp_path)
    assert calls["other"].calls == 1


def test_builder_rejects_bad_inputs(tiny):
    model, processor = tiny
    with pytest.raises(ValueError, match=r"lacks columns \['answer'\]"):
        build_reasoning_dataset(color_rows(2).remove_columns("answer"), model, processor)
    with pytest.raises(ValueError, match="may not set \\['generator'\\]"):
        build_reasoning_dataset(color_rows(2), model, processor, recover_kwargs={"generator": None})
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        build_reasoning_dataset(color_rows(2), model, processor, batch_size=0)


def test_killed_subprocess_resumes_without_redoing_finished_shards(tiny, tmp_path, monkeypatch):
    """SIGKILL in the middle of a shard, as a preempted job: the rerun only redoes that shard."""
    rows = color_rows(6)
    rows.save_to_disk(tmp_path / "rows")
    log = tmp_path / "calls.log"
    script = textwrap.dedent(
        f"""
        import time, datasets
        from robust_u1.reasoning import build_reasoning_dataset
        from robust_u1.tiny import tiny_random_model
        model, processor = tiny_random_model(seed=0)
        recover = model.recover
        def logged(images, **kwargs):
            with open({str(log)!r}, "a") as calls:
                calls.write("call\\n")
            if sum(1 for _ in open({str(log)!r})) == 3:
                time.sleep(600)  # killed here, in the third shard
            return recover(images, **kwargs)
        model.recover = logged
        build_reasoning_dataset(datasets.load_from_disk({str(tmp_path / "rows")!r}), model, processor,
                                recover_kwargs={FAST_RECOVERY!r}, batch_size=2, rows_per_shard=2,
                                cache_dir={str(tmp_path / "cache")!r})
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not (log.exists() and len(log.read_text().split()) == 3):
        assert time.monotonic() < deadline and process.poll() is None, "the subprocess did not reach the third shard"
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()

    model, processor = tiny
    calls = RecoverCalls(model)
    monkeypatch.setattr(model, "recover", calls)
    resumed = build_reasoning_dataset(
        datasets.load_from_disk(tmp_path / "rows"),
        model,
        processor,
        recover_kwargs=FAST_RECOVERY,
        batch_size=2,
        rows_per_shard=2,
        cache_dir=tmp_path / "cache",
    )
    assert calls.calls == 1
    assert resumed.num_rows == 6


# ----------------------------------------------------------------------------------------------
# Collation
# ----------------------------------------------------------------------------------------------


def test_collator_packs_rows_without_recovery_only_when_allowed(tiny, color_task):
    model, processor = tiny
    example = {**color_task[0], "recovered_image": None}
    with pytest.raises(KeyError, match=r"\['recovered_image'\]; run build_reasoning_dataset first"):
        ReasoningCollator(processor, model.config)([example])

    batch = ReasoningCollator(processor, model.config, allow_without_recovery=True)([example])
    prompt = default_reasoning_prompt(example["question"], example["options"], recover=False)
    assert "restore" not in prompt  # the recover=False prompt of model.answer
    prompt_ids = processor.encode_text(prompt).tolist()
    target_ids = processor.encode_text(format_reasoning_target(example["answer"], example["reasoning"])).tolist()
    vit_c = processor.image_processor.vit_pixel_values(example["image"])
    count = (vit_c.shape[1] // 14) * (vit_c.shape[2] // 14)
    # [BOI I_c EOI] [<|im_start|> prompt <|im_end|>] [<|im_start|> target <|im_end|>]
    assert batch["split_lens"].tolist() == [count + 2, len(prompt_ids) + 2, len(target_ids) + 2]
    assert batch["vit_token_seqlens"].tolist() == [count]
    assert batch["packed_label_ids"].tolist() == [*target_ids, model.config.eos_token_id]


def test_collator_puts_loss_on_target_tokens_only(tiny, color_task):
    model, processor = tiny
    example = color_task[0]
    batch = ReasoningCollator(processor, model.config)([example])

    target = format_reasoning_target(example["answer"], example["reasoning"])
    assert target == "<think>Most pixels are red.</think><ANSWER>A</ANSWER>"
    prompt_ids = processor.encode_text(default_reasoning_prompt(example["question"], example["options"])).tolist()
    target_ids = processor.encode_text(target).tolist()
    vit_c = processor.image_processor.vit_pixel_values(example["image"])
    vit_r = processor.image_processor.vit_pixel_values(example["recovered_image"])
    counts = [(v.shape[1] // 14) * (v.shape[2] // 14) for v in (vit_c, vit_r)]

    # [BOI I_c EOI] [BOI I_r EOI] [<|im_start|> prompt <|im_end|>] [<|im_start|> target <|im_end|>]
    split_lens = [counts[0] + 2, counts[1] + 2, len(prompt_ids) + 2, len(target_ids) + 2]
    assert batch["split_lens"].tolist() == split_lens
    assert batch["attn_modes"].tolist() == [1, 1, 0, 0]  # images full, text causal
    assert batch["vit_token_seqlens"].tolist() == counts
    assert torch.equal(batch["packed_vit_tokens"], torch.cat([patchify(vit_c, 14), patchify(vit_r, 14)]))
    assert batch["packed_position_ids"].tolist()[: split_lens[0] + split_lens[1] + 1] == (
        [0] * split_lens[0] + [1] * split_lens[1] + [2]
    )

    token_at = dict(zip(batch["packed_text_indexes"].tolist(), batch["packed_text_ids"].tolist()))
    prompt_start, target_start = split_lens[0] + split_lens[1], sum(split_lens[:3])
    bos, eos = model.config.bos_token_id, model.config.eos_token_id
    loss_positions = batch["ce_loss_indexes"].tolist()
    assert loss_positions == list(range(target_start, target_start + len(target_ids) + 1))
    assert [token_at[i] for i in loss_positions] == [bos, *target_ids]  # <|im_start|> predicts the first target token
    assert batch["packed_label_ids"].tolist() == [*target_ids, eos]
    prompt_positions = range(prompt_start, target_start)
    assert not set(prompt_positions) & set(loss_positions)
    assert [token_at[i] for i in prompt_positions] == [bos, *prompt_ids, eos]
    assert "Please restore this corrupted image" in processor.decode(prompt_ids)


def test_collator_without_reasoning_and_with_think_prompt(tiny, color_task):
    model, processor = tiny
    example = color_task[1]
    assert format_reasoning_target(example["answer"], example["reasoning"]) == "<ANSWER>B</ANSWER>"
    plain = ReasoningCollator(processor, model.config)([example, color_task[0]])
    think = ReasoningCollator(processor, model.config, think=True)([example])
    assert len(plain["sample_lens"]) == 2
    assert plain["packed_label_ids"].tolist()[: len("<ANSWER>B</ANSWER>") + 1] == [
        *processor.encode_text("<ANSWER>B</ANSWER>").tolist(),
        model.config.eos_token_id,
    ]
    assert think["attn_modes"].tolist() == [0, 1, 1, 0, 0]  # the system prompt comes first, without loss
    assert think["packed_label_ids"].tolist() == plain["packed_label_ids"].tolist()[: len(think["packed_label_ids"])]


# ----------------------------------------------------------------------------------------------
# Training with the standard Trainer
# ----------------------------------------------------------------------------------------------


def test_standard_trainer_lowers_held_out_answer_loss(color_task, tmp_path):
    model, processor = tiny_random_model(seed=0)  # trained in place, so not the shared fixture
    train, held_out = color_task.select(range(8)), color_task.select(range(8, 12))
    collator = ReasoningCollator(processor, model.config)
    args = reasoning_training_arguments(
        tmp_path,
        max_steps=60,
        learning_rate=1e-3,
        lr_scheduler_type="constant",
        per_device_train_batch_size=2,
        per_device_eval_batch_size=len(held_out),
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
        seed=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=held_out, data_collator=collator)

    before = answer_token_loss(model, held_out, collator, batch_size=len(held_out))
    # One eval batch holds every held-out target token, so the Trainer's eval loss is the same token mean.
    assert trainer.evaluate()["eval_loss"] == pytest.approx(before, rel=1e-5)
    trainer.train()
    after = answer_token_loss(model, held_out, collator, batch_size=2)
    print(f"held-out answer-token loss: {before:.4f} -> {after:.4f}")
    assert before == pytest.approx(np.log(len(processor.tokenizer)), rel=0.05)  # random weights: ~uniform
    assert after < 0.5 * before
    assert trainer.evaluate()["eval_loss"] == pytest.approx(after, rel=1e-4)


def test_training_arguments_keep_the_required_settings(tmp_path):
    args = reasoning_training_arguments(tmp_path, max_steps=3, report_to="none", use_cpu=True)
    assert (args.remove_unused_columns, args.label_names, args.prediction_loss_only) == (
        False,
        ["packed_label_ids"],
        True,
    )
    with pytest.raises(ValueError, match="label_names=\\['packed_label_ids'\\]"):
        reasoning_training_arguments(tmp_path, label_names=[])


def test_example_script_trains_lora_on_robust_r1_jsonl(tmp_path):
    jsonl = write_robust_r1_fixture(tmp_path)
    spec = importlib.util.spec_from_file_location("train_reasoning", EXAMPLE_SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    metrics = script.main(
        [
            *("--dataset", str(jsonl), "--image-root", str(tmp_path / "images"), "--output", str(tmp_path / "run")),
            *("--max-steps", "2", "--lora-r", "4", "--recover-steps", "2", "--batch-size", "2", "--eval-size", "1"),
        ]
    )
    assert json.loads((tmp_path / "run" / "reasoning_metrics.json").read_text()) == metrics
    adapter = load_file(tmp_path / "run" / "final" / "adapter_model.safetensors")
    assert adapter and all("language_model.model.layers." in key and "lora_" in key for key in adapter)
    assert not any("_moe_gen" in key for key in adapter)
    assert any(".self_attn.q_proj." in key for key in adapter) and any(".mlp.down_proj." in key for key in adapter)
    assert (tmp_path / "run" / "final" / "tokenizer.json").is_file()


# ----------------------------------------------------------------------------------------------
# Robust-R1 import
# ----------------------------------------------------------------------------------------------


def write_robust_r1_fixture(folder: Path) -> Path:
    """Three records in the Robust-R1 layout: lettered MCQ, A-OKVQA numbered MCQ, open question."""
    images = folder / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name, size in (("a.png", (40, 32)), ("b.png", (32, 48)), ("c.png", (36, 36))):
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(images / name)
    chain = "<TYPE>gaussian_noise(0.45)<TYPE_END>\n<REASONING>Ears and whiskers.<REASONING_END>\n"
    records = [
        {
            "id": "r0",
            "image": "a.png",
            "conversations": [
                {"from": "human", "value": "<image>\nWhat animal is this?\nA. dog\nB. cat"},
                {"from": "gpt", "value": f"{chain}<ANSWER>B<ANSWER_END>"},
            ],
        },
        {
            "id": "r1",
            "image": ["b.png"],
            "conversations": [
                {
                    "from": "human",
                    "value": "<image>What are the people riding?\n0. trucks\n1. wagons\n2. cars\n3. jeeps\n"
                    "First output the types of degradations in image briefly in <TYPE> <TYPE_END> tags, ...",
                },
                {"from": "gpt", "value": "<ANSWER> 2 <ANSWER_END>"},
            ],
        },
        {
            "id": "r2",
            "image": "c.png",
            "conversations": [
                {"from": "human", "value": "<image>\nWhat color is the sign?"},
                {"from": "gpt", "value": "<think>It is dim but red.</think><ANSWER>red</ANSWER>"},
            ],
        },
    ]
    path = folder / "data" / "train.jsonl"
    path.parent.mkdir()
    path.write_text("\n".join(json.dumps(record) for record in records) + "\n\n")
    return path


def test_robust_r1_jsonl_import(tmp_path):
    path = write_robust_r1_fixture(tmp_path)
    rows = load_robust_r1_jsonl(path, image_root=tmp_path / "images")
    assert rows.column_names == ["id", "image", "question", "options", "answer", "reasoning"]
    assert rows["id"] == ["r0", "r1", "r2"]
    assert rows["question"] == ["What animal is this?", "What are the people riding?", "What color is the sign?"]
    assert rows["options"] == [["dog", "cat"], ["trucks", "wagons", "cars", "jeeps"], None]
    assert rows["answer"] == ["B", "C", "red"]
    assert rows["reasoning"] == [
        "<TYPE>gaussian_noise(0.45)<TYPE_END>\n<REASONING>Ears and whiskers.<REASONING_END>",
        None,
        "It is dim but red.",
    ]
    assert [image.size for image in rows["image"]] == [(40, 32), (32, 48), (36, 36)]


def test_robust_r1_jsonl_errors_name_the_line(tmp_path):
    path = write_robust_r1_fixture(tmp_path)
    with pytest.raises(ValueError, match=r"train.jsonl:1: .*image not found"):
        load_robust_r1_jsonl(path)  # images are not next to the JSONL
    broken = tmp_path / "broken.jsonl"
    record = {"image": "a.png", "conversations": [{"from": "human", "value": "Q?"}, {"from": "gpt", "value": "B"}]}
    broken.write_text(json.dumps(record) + "\n")
    with pytest.raises(ValueError, match=r"broken.jsonl:1: .*no <ANSWER>"):
        load_robust_r1_jsonl(broken, image_root=tmp_path / "images")
    broken.write_text(json.dumps({"image": "a.png", "conversations": [{"from": "human", "value": "Q?"}]}) + "\n")
    with pytest.raises(ValueError, match=r"broken.jsonl:1: .*needs a human turn and a gpt turn"):
        load_robust_r1_jsonl(broken, image_root=tmp_path / "images")
    with pytest.raises(FileNotFoundError):
        load_robust_r1_jsonl(tmp_path / "missing.jsonl")


def test_robust_r1_rows_feed_the_collator(tiny, tmp_path):
    model, processor = tiny
    rows = load_robust_r1_jsonl(write_robust_r1_fixture(tmp_path), image_root=tmp_path / "images")
    built = build_reasoning_dataset(rows, model, processor, recover_kwargs=FAST_RECOVERY, cache_dir=tmp_path / "c")
    batch = ReasoningCollator(processor, model.config)(list(built))
    labels = processor.decode(batch["packed_label_ids"].tolist())
    assert "<ANSWER>B</ANSWER>" in labels and "<ANSWER>C</ANSWER>" in labels
    assert "<think>It is dim but red.</think><ANSWER>red</ANSWER>" in labels
    assert np.isfinite(answer_token_loss(model, built, ReasoningCollator(processor, model.config)))
