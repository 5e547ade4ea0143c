"""Batched recovery and multiple-choice answering for TinyWorld evaluations.

`answer_rows` does what ``model.answer(image, question, options, recover=...)`` does — the same
prompts (`build_mcq_prompt`), image order [I_c, I_r, prompt] and greedy decoding — for many rows in
one batched `generate` call; recovery uses one seeded generator per row (`recover_rows`).

Example:
    >>> model, processor = load_tinyworld()
    >>> rows = question_rows(TinyWorld(0), "test", count=30, levels=("mid",), seed=0)
    >>> recovered = recover_rows(model, [row["image"] for row in rows], seed=0)
    >>> accuracy(answer_rows(model, rows, recovered), rows)
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch
from PIL import Image

from ..evaluation.options import extract_option
from ..evaluation.recovery import recovery_metrics
from ..prompting import build_mcq_prompt
from ..trainers.utils import sample_generator
from .training import RECOVER_KWARGS
from .world import LEVELS, TinyWorld, corrupt_scene_image

if TYPE_CHECKING:
    from ..modeling_robust_u1 import RobustU1ForConditionalGeneration

logger = logging.getLogger(__name__)


def recover_rows(
    model: RobustU1ForConditionalGeneration, images: Sequence[Image.Image], seed: int, batch_size: int = 64, **recover_kwargs: Any
) -> list[Image.Image]:
    """``model.recover`` of every image (``RECOVER_KWARGS`` unless overridden), image ``i`` with the
    generator of ``(seed, i)``, so results do not depend on ``batch_size``.

    Example:
        >>> restored = recover_rows(model, [corrupted_a, corrupted_b], seed=0)
        >>> [image.size for image in restored]
        [(32, 32), (32, 32)]
    """
    settings = {**RECOVER_KWARGS, **recover_kwargs}
    recovered: list[Image.Image] = []
    for start in range(0, len(images), batch_size):
        chunk = list(images[start : start + batch_size])
        generators = [sample_generator(torch.device("cpu"), seed, start + i) for i in range(len(chunk))]
        recovered += model.recover(chunk, generator=generators, output_type="pil", progress=False, **settings)
    return recovered


@torch.no_grad()
def answer_rows(
    model: RobustU1ForConditionalGeneration,
    rows: Sequence[Mapping[str, Any]],
    recovered: Sequence[Image.Image] | None = None,
    image_key: str = "image",
    batch_size: int = 64,
    max_new_tokens: int = 96,
) -> list[str | None]:
    """The option letter the model picks for each row (None when no option can be read from its reply).

    With ``recovered`` each row is answered over [I_c, I_r, Q] (``model.answer(recover=True)``),
    otherwise over [I_c, Q] (``recover=False``); ``image_key`` selects the input image column.

    Example:
        >>> answer_rows(model, rows, image_key="clean_image")[:3]  # the clean oracle
        ['A', 'C', None]
    """
    letters: list[str | None] = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        inputs = []
        for offset, row in enumerate(chunk):
            prompt = build_mcq_prompt(row["question"], row["options"], recover=recovered is not None)
            images = [row[image_key]] if recovered is None else [row[image_key], recovered[start + offset]]
            inputs.append([*images, prompt])
        ids = model.generate(inputs, max_new_tokens=max_new_tokens, do_sample=False)
        replies = model.processor.batch_decode(ids)
        letters += [extract_option(reply, row["options"]) for reply, row in zip(replies, chunk)]
    return letters


def accuracy(letters: Sequence[str | None], rows: Sequence[Mapping[str, Any]]) -> float:
    """Share of rows whose picked letter is the answer.

    Example:
        >>> accuracy(["A", None], [{"answer": "A"}, {"answer": "B"}])
        0.5
    """
    return sum(letter == row["answer"] for letter, row in zip(letters, rows)) / len(rows)


def recovery_table(
    models: Mapping[str, RobustU1ForConditionalGeneration],
    world: TinyWorld,
    num_images: int,
    levels: Sequence[str] = LEVELS,
    seed: int = 0,
    split: str = "test",
) -> dict[str, dict[str, dict[str, float]]]:
    """Mean PSNR / SSIM against the clean image, per level, of the corrupted input and of each model's
    recovery, on the first ``num_images`` scenes of ``split``: ``{level: {"input" | model name: {"psnr", "ssim"}}}``.
    The input of the clean level is the clean image itself, so its PSNR is infinite. (Settings are
    chosen on the validation split; the test split is only reported.)

    Example:
        >>> recovery_table({"sft": sft_model}, TinyWorld(0), num_images=8, levels=("mid",))["mid"]["sft"]["psnr"]
    """
    scenes = world.scenes(split, num_images)
    clean = [scene.render() for scene in scenes]
    table: dict[str, dict[str, dict[str, float]]] = {}
    for level in levels:
        corrupted = [corrupt_scene_image(image, level, key=(seed, i))[0] for i, image in enumerate(clean)]
        table[level] = {"input": recovery_metrics(corrupted, clean, metrics=("psnr", "ssim"))}
        for name, model in models.items():
            restored = recover_rows(model, corrupted, seed=seed)
            table[level][name] = recovery_metrics(restored, clean, metrics=("psnr", "ssim"))
        logger.info("recovery at %s: %s", level, {name: round(scores["psnr"], 2) for name, scores in table[level].items()})
    return table


def mcq_table(
    base: RobustU1ForConditionalGeneration,
    final: RobustU1ForConditionalGeneration,
    world: TinyWorld,
    num_questions: int,
    levels: Sequence[str] = LEVELS,
    seed: int = 0,
    split: str = "test",
) -> dict[str, dict[str, float]]:
    """MCQ accuracy per level on the first ``num_questions`` questions of ``split`` (one per scene, kinds in
    rotation): ``base`` on I_c alone, ``final`` on I_c alone, ``final`` on [I_c, I_r] (I_r its own
    recovery) and the clean oracle (``final`` on the clean image alone).

    Example:
        >>> mcq_table(base, final, TinyWorld(0), num_questions=40, levels=("mid",))["mid"]["final_with_recovery"]
    """
    pairs = world.test_questions(split, count=num_questions)
    rows = [
        {"clean_image": scene.render(), "question": q.text, "options": list(q.options), "answer": q.answer}
        for scene, q in pairs
    ]
    oracle = accuracy(answer_rows(final, rows, image_key="clean_image"), rows)
    table = {}
    for level in levels:
        for i, row in enumerate(rows):
            row["image"] = corrupt_scene_image(row["clean_image"], level, key=(seed, i))[0]
        recovered = recover_rows(final, [row["image"] for row in rows], seed=seed)
        table[level] = {
            "base_corrupted_only": accuracy(answer_rows(base, rows), rows),
            "final_corrupted_only": accuracy(answer_rows(final, rows), rows),
            "final_with_recovery": accuracy(answer_rows(final, rows, recovered), rows),
            "clean_oracle": oracle,
        }
        logger.info("accuracy at %s: %s", level, {name: round(value, 3) for name, value in table[level].items()})
    return table
