"""TinyWorld: a procedural world of coloured shapes and a tiny, trained Robust-U1 that ships with the package.

It lets anyone run the main job — recover a corrupted image, then answer a question about it — offline
in seconds on a laptop, and check the paper's claims stage by stage without GPUs
(``examples/tinyworld/reproduce.py``; ``examples/tinyworld/train_from_scratch.py`` re-creates the
checkpoints).

Example:
    >>> from robust_u1.tinyworld import TinyWorld, corrupt_scene_image, load_tinyworld
    >>> model, processor = load_tinyworld()  # the final (stage III) checkpoint
    >>> scene = TinyWorld(seed=0).scene("test", 0)
    >>> corrupted, _ = corrupt_scene_image(scene.render(), "mid", key=(0, 0))
    >>> question = scene.question("color")
    >>> result = model.answer(corrupted, question.text, options=list(question.options), recover_kwargs={"num_inference_steps": 20})
    >>> result.option, question.answer  # the picked letter and the right one
    >>> result.recovered_image.size
    (32, 32)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .data import GuidanceDropoutCollator, TinyWorldCollator, question_rows, recovery_pairs
from .model import new_tinyworld_model, tinyworld_config, tinyworld_processor
from .tokenizer import tinyworld_tokenizer, unknown_words
from .world import CORRUPTIONS, LEVELS, Question, Scene, TinyWorld, corrupt_scene_image

if TYPE_CHECKING:
    from ..modeling_robust_u1 import RobustU1ForConditionalGeneration
    from ..processing_robust_u1 import RobustU1Processor

TINYWORLD_CHECKPOINT = Path(__file__).parent / "checkpoint"
"""The final (stage III) TinyWorld checkpoint: Hugging Face layout, processor files and model card."""

TINYWORLD_STAGE_CHECKPOINTS: dict[str, Path] = {
    **{stage: Path(__file__).parent / "stages" / stage for stage in ("base", "sft", "rl")},
    "final": TINYWORLD_CHECKPOINT,
}
"""Checkpoint folder of every stage: ``base`` (pre-trained), ``sft`` (stage I), ``rl`` (stage II), ``final`` (stage III)."""


def load_tinyworld(stage: str = "final", dtype: torch.dtype = torch.float32) -> tuple[RobustU1ForConditionalGeneration, RobustU1Processor]:
    """Loads a shipped TinyWorld checkpoint (offline) and returns ``(model, processor)``.

    Example:
        >>> model, processor = load_tinyworld("sft")
        >>> restored = model.recover(corrupted_image, num_inference_steps=20, progress=False)
    """
    from ..modeling_robust_u1 import RobustU1ForConditionalGeneration

    if stage not in TINYWORLD_STAGE_CHECKPOINTS:
        raise ValueError(f"Unknown TinyWorld stage {stage!r}; expected one of {sorted(TINYWORLD_STAGE_CHECKPOINTS)}.")
    folder = TINYWORLD_STAGE_CHECKPOINTS[stage]
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"The TinyWorld {stage!r} checkpoint is missing from {folder}; re-create it with "
            "`python examples/tinyworld/train_from_scratch.py`."
        )
    model = RobustU1ForConditionalGeneration.from_pretrained(folder, dtype=dtype).eval()
    return model, model.processor


__all__ = [
    "CORRUPTIONS",
    "LEVELS",
    "TINYWORLD_CHECKPOINT",
    "TINYWORLD_STAGE_CHECKPOINTS",
    "GuidanceDropoutCollator",
    "Question",
    "Scene",
    "TinyWorld",
    "TinyWorldCollator",
    "corrupt_scene_image",
    "load_tinyworld",
    "new_tinyworld_model",
    "question_rows",
    "recovery_pairs",
    "tinyworld_config",
    "tinyworld_processor",
    "tinyworld_tokenizer",
    "unknown_words",
]
