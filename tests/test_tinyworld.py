"""TinyWorld: the procedural world, its tokenizer, and the shipped trained checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robust_u1.evaluation.prompts import RECOVERY_PROMPT, build_mcq_prompt, build_open_prompt
from robust_u1.generation_robust_u1 import THINK_SYSTEM_PROMPT
from robust_u1.reasoning import format_reasoning_target
from robust_u1.tinyworld import (
    TINYWORLD_CHECKPOINT,
    TINYWORLD_STAGE_CHECKPOINTS,
    TinyWorld,
    corrupt_scene_image,
    load_tinyworld,
    tinyworld_tokenizer,
    unknown_words,
)
from robust_u1.tinyworld.evaluation import accuracy, answer_rows, recover_rows
from robust_u1.tinyworld.world import COLORS, COUNT_WORDS, POSITIONS, SHAPES, SPLIT_SIZES
from robust_u1.trainers.utils import sample_generator

# Test questions rotate through the four kinds, so chance is the mean over kinds.
CHANCE = float(np.mean([1 / len(COUNT_WORDS), 1 / len(COLORS), 1 / len(SHAPES), 1 / len(POSITIONS)]))


pytestmark = pytest.mark.usefixtures("single_thread")  # see conftest.py


@pytest.fixture(scope="module")
def final():
    return load_tinyworld("final")[0]


@pytest.fixture(scope="module")
def test_rows():
    """30 held-out questions (kinds in rotation) with their clean and mid-corrupted images."""
    rows = []
    for scene, question in TinyWorld(seed=0).test_questions(count=30):
        clean = scene.render()
        rows.append({
            "clean_image": clean, "image": corrupt_scene_image(clean, "mid", key=(0, scene.index))[0],
            "question": question.text, "options": list(question.options), "answer": question.answer,
        })  # fmt: skip
    return rows


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64)


def psnr(a, b) -> float:
    return float(10 * np.log10(255.0**2 / ((pixels(a) - pixels(b)) ** 2).mean()))


# ----------------------------------------------------------------------------------------------
# World and tokenizer
# ----------------------------------------------------------------------------------------------


def test_world_is_a_pure_function_of_the_seed():
    first, again, other = TinyWorld(seed=0), TinyWorld(seed=0), TinyWorld(seed=1)
    for split in SPLIT_SIZES:
        for index in (0, 7, SPLIT_SIZES[split] - 1):
            scene = first.scene(split, index)
            assert scene == again.scene(split, index)
            assert np.array_equal(pixels(scene.render()), pixels(again.scene(split, index).render()))
            assert scene.questions() == again.scene(split, index).questions()
    assert [s.objects for s in first.scenes("test", 20)] != [s.objects for s in other.scenes("test", 20)]
    assert [s.objects for s in first.scenes("train", 20)] != [s.objects for s in first.scenes("test", 20)]
    image = first.scene("test", 3).render()
    corrupted, name = corrupt_scene_image(image, "mid", key=(0, 3))
    again_corrupted, again_name = corrupt_scene_image(image, "mid", key=(0, 3))
    assert name == again_name and np.array_equal(pixels(corrupted), pixels(again_corrupted))
    assert corrupt_scene_image(image, "clean", key=(0, 3))[0] is image


def test_questions_are_answered_by_the_scene():
    for scene in TinyWorld(seed=0).scenes("validation", 50):
        facts = {(o.color, o.shape, o.position) for o in scene.objects}
        for question in scene.questions():
            answer = question.answer_text
            if question.kind == "count":
                assert answer == COUNT_WORDS[len(scene.objects) - 1]
            elif question.kind == "color":
                assert any(c == answer and s in question.text for c, s, _ in facts)
            elif question.kind == "shape":
                assert any(s == answer and c in question.text for c, s, _ in facts)
            else:
                assert any(p == answer and c in question.text and s in question.text for c, s, p in facts)


def test_tokenizer_has_no_unknown_tokens_on_the_prompts():
    tokenizer = tinyworld_tokenizer()
    texts = [RECOVERY_PROMPT, THINK_SYSTEM_PROMPT]
    for scene in TinyWorld(seed=0).scenes("test", 40):
        for question in scene.questions():
            for recover in (False, True):
                texts.append(build_mcq_prompt(question.text, list(question.options), recover=recover))
                texts.append(build_open_prompt(question.text, recover=recover))
            texts.append(format_reasoning_target(question.answer, question.reasoning))
    assert [text for text in texts if unknown_words(text, tokenizer)] == []
    assert unknown_words("Which dog is red?", tokenizer) == ["dog"]
    ids = tokenizer.encode("<think>The circle is red.</think><ANSWER>B</ANSWER>", add_special_tokens=False)
    assert tokenizer.decode(ids, skip_special_tokens=True) == "<think> The circle is red . </think> <ANSWER> B </ANSWER>"
    assert load_tinyworld("final")[1].tokenizer.get_vocab() == tokenizer.get_vocab()


# ----------------------------------------------------------------------------------------------
# Shipped checkpoints
# ----------------------------------------------------------------------------------------------


def test_shipped_checkpoints_load_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    total = 0
    for stage, folder in TINYWORLD_STAGE_CHECKPOINTS.items():
        model, processor = load_tinyworld(stage)
        assert processor is not None and model.processor is processor
        assert (folder / "README.md").read_text().startswith("---\nlibrary_name: robust-u1")
        total += sum(path.stat().st_size for path in folder.iterdir())
    assert TINYWORLD_STAGE_CHECKPOINTS["final"] == TINYWORLD_CHECKPOINT
    assert total <= 50 * 2**20
    with pytest.raises(ValueError, match="Unknown TinyWorld stage"):
        load_tinyworld("stage-4")


def test_recoveries_beat_the_corrupted_inputs_at_mid_severity(final, test_rows):
    rows = test_rows[:8]
    recovered = recover_rows(final, [row["image"] for row in rows], seed=0)
    before = [psnr(row["image"], row["clean_image"]) for row in rows]
    after = [psnr(image, row["clean_image"]) for image, row in zip(recovered, rows)]
    print(f"mid-severity PSNR on {len(rows)} held-out images: corrupted {np.mean(before):.2f} dB, "
          f"recovered {np.mean(after):.2f} dB")  # fmt: skip
    assert np.mean(after) > np.mean(before) + 1.0


def test_clean_accuracy_is_far_above_chance(final, test_rows):
    score = accuracy(answer_rows(final, test_rows, image_key="clean_image"), test_rows)
    print(f"clean accuracy on {len(test_rows)} held-out questions: {score:.2f} (chance {CHANCE:.2f})")
    assert score >= 0.6


def test_accuracy_with_and_without_recovery_at_mid_severity(final, test_rows):
    recovered = recover_rows(final, [row["image"] for row in test_rows], seed=0)
    with_recovery = accuracy(answer_rows(final, test_rows, recovered), test_rows)
    without = accuracy(answer_rows(final, test_rows), test_rows)
    print(f"mid-severity accuracy on {len(test_rows)} held-out questions: I_c + I_r {with_recovery:.2f}, "
          f"I_c alone {without:.2f} (chance {CHANCE:.2f})")  # fmt: skip
    # Which of the two is higher is not stable on 30 questions (examples/tinyworld/README.md has the
    # 400-question figures); both being well above chance is.
    assert min(with_recovery, without) > CHANCE + 0.15


def test_model_answer_agrees_with_the_batched_evaluation(final, test_rows):
    row = test_rows[1]
    recovered = recover_rows(final, [row["image"]], seed=0)
    batched = answer_rows(final, [row], recovered)[0]
    recover_kwargs = {"num_inference_steps": 20, "generator": sample_generator(torch.device("cpu"), 0, 0), "progress": False}
    result = final.answer(row["image"], row["question"], options=row["options"], recover_kwargs=recover_kwargs, max_new_tokens=96)
    assert np.array_equal(pixels(result.recovered_image), pixels(recovered[0]))
    assert result.option == batched
    assert result.reasoning and result.reasoning.startswith("I see")


def test_bundled_example_is_a_corrupted_test_scene():
    """examples/corrupted_example.png is what the README says: test scene 52, motion blur at mid."""
    from pathlib import Path

    from PIL import Image

    examples = Path(__file__).parent.parent / "examples"
    clean = TinyWorld(seed=0).scene("test", 52).render()
    corrupted, name = corrupt_scene_image(clean, "mid", key=(0, 52))
    assert name == "imagenet_c/motion_blur"
    assert np.array_equal(pixels(Image.open(examples / "clean_example.png")), pixels(clean))
    assert np.array_equal(pixels(Image.open(examples / "corrupted_example.png")), pixels(corrupted))


def test_robust_vqa_pipeline_defaults_to_the_bundled_model(monkeypatch, final, test_rows):
    from transformers import pipeline

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    vqa = pipeline("robust-vqa")
    assert vqa.model.name_or_path == str(TINYWORLD_CHECKPOINT)
    row = test_rows[0]

    def recover_kwargs():
        return {"num_inference_steps": 20, "generator": sample_generator(torch.device("cpu"), 0, 0), "progress": False}

    output = vqa({"image": row["image"], "question": row["question"], "options": row["options"]}, recover_kwargs=recover_kwargs())
    direct = final.answer(row["image"], row["question"], options=row["options"], recover_kwargs=recover_kwargs())
    assert output["option"] == direct.option and output["reasoning"] == direct.reasoning
    assert np.array_equal(pixels(output["recovered_image"]), pixels(direct.recovered_image))


def test_the_from_scratch_recipe_runs_every_stage_end_to_end(tmp_path):
    """train_from_scratch.py's recipe with minute counts: every stage runs with the library's trainers
    and leaves a loadable plain checkpoint (the stage II LoRA adapter merged in)."""
    from robust_u1.modeling_robust_u1 import RobustU1ForConditionalGeneration
    from robust_u1.tinyworld.card import tinyworld_card
    from robust_u1.tinyworld.training import TinyWorldRecipe, train_tinyworld

    recipe = TinyWorldRecipe(
        vae_steps=2, vae_batch_size=4, understanding_scenes=4, understanding_steps=2, reconstruction_pairs=4,
        reconstruction_steps=2, sft_pairs=4, sft_steps=2, rl_images=4, rl_steps=1, rl_num_generations=2,
        rl_images_per_step=2, reasoning_scenes=4, reasoning_recovery_pairs=4, reasoning_steps=2, batch_size=4,
    )  # fmt: skip
    paths = train_tinyworld(recipe, tmp_path, tinyworld_card)
    assert list(paths) == ["base", "sft", "rl", "final"]
    weights = {}
    for stage, folder in paths.items():
        model = RobustU1ForConditionalGeneration.from_pretrained(folder)
        weights[stage] = dict(model.named_parameters())
        assert not any("lora" in name for name in weights[stage])
        assert f"TinyWorld — {stage}" in (folder / "README.md").read_text()
    name = "language_model.model.layers.0.self_attn.q_proj_moe_gen.weight"
    assert not torch.equal(weights["sft"][name], weights["rl"][name])  # the merged adapter changed the generation expert


def test_shipped_model_cards_are_the_rendered_template():
    """Each shipped README.md is exactly what `tinyworld_card` renders from model_cards/tinyworld.md.jinja
    with the recipe defaults and that run's stage minutes (read back from the card)."""
    import re

    from robust_u1.tinyworld.card import tinyworld_card
    from robust_u1.tinyworld.training import TinyWorldRecipe

    for stage, folder in TINYWORLD_STAGE_CHECKPOINTS.items():
        shipped = (folder / "README.md").read_text()
        rows = shipped.split("| step | minutes |\n| --- | --- |\n")[1].split("\n\n")[0]
        minutes = {name: float(value) for name, value in re.findall(r"\| (\w+) \| ([0-9.]+) \|", rows)}
        assert list(minutes)[0] == "vae"
        assert tinyworld_card(stage, TinyWorldRecipe(), minutes) == shipped


def test_reproduce_script_writes_table_plot_and_results(tmp_path):
    """examples/tinyworld/reproduce.py end to end on a few test images (the README's figures use 100 / 400)."""
    import importlib.util
    import json
    from pathlib import Path

    script = Path(__file__).parent.parent / "examples" / "tinyworld" / "reproduce.py"
    spec = importlib.util.spec_from_file_location("tinyworld_reproduce", script)
    reproduce = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reproduce)
    results = reproduce.main(["--output", str(tmp_path), "--recovery-images", "2", "--questions", "4", "--threads", "1"])

    assert list(results["recovery"]) == ["clean", "low", "mid", "high"]
    assert set(results["recovery"]["mid"]) == {"input", "base", "sft", "rl"}
    assert set(results["mcq"]["high"]) == {"base_corrupted_only", "final_corrupted_only", "final_with_recovery", "clean_oracle"}
    assert json.loads((tmp_path / "results.json").read_text())["mcq"] == results["mcq"]
    table = (tmp_path / "table.md").read_text().splitlines()
    assert len(table) == 6 and table[2].startswith("| clean | ∞ / 1.000 |")
    assert (tmp_path / "tinyworld.png").stat().st_size > 10_000
