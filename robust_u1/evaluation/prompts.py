"""Benchmark prompts: R-Bench's, plus the model's question prompts re-exported for the harness.

MCQ benchmarks use the VLMEvalKit multiple-choice layout of the official Robust-U1 demo, which is the
model's own prompt and lives in `robust_u1.prompting` (re-exported here for compatibility). R-Bench
uses the prompts of its official inference script (Q-Future/R-Bench, ``R-Bench-Script.ipynb``). In
``recover`` mode the answer instruction is preceded by the recovery prompt and rephrased to refer to
the restored image, exactly as in the demo's MCQ prompt; the same rule is applied to the R-Bench
instructions (the paper does not print its R-Bench recovery prompts).
"""

from __future__ import annotations

from typing import Literal

from ..prompting import (  # noqa: F401  (re-exported: the harness and user code import them from here)
    MCQ_INSTRUCTION,
    OPEN_QUESTION_INSTRUCTION,
    RECOVERY_PROMPT,
    build_mcq_prompt,
    build_open_prompt,
    check_options,
    with_recovery,
)

RBENCH_MCQ_INSTRUCTION = "Answer with the option's letter from the given choices directly."
RBENCH_VQA_INSTRUCTION = "Please answer no more than 10 words"
RBENCH_CAPTION_PROMPT = (
    "Please describe this image in general. Directly provide the description, "
    "do not include prefix like 'This image depicts'"
)

RBenchTask = Literal["MCQ", "VQA", "CAP"]


def build_rbench_prompt(task: RBenchTask, question: str, choices: str | None = None, *, recover: bool = False) -> str:
    """The R-Bench prompt for one item.

    Args:
        task: the R-Bench task: ``"MCQ"``, ``"VQA"`` or ``"CAP"`` (captioning).
        question: the question text (unused for captioning).
        choices: the raw choice string (``"A.x; B.y"``) of an MCQ item.
        recover: whether the model answers over [I_c, I_r] (adds P_rec, see `with_recovery`).

    Returns:
        The prompt text.

    Example:
        >>> build_rbench_prompt("VQA", "What color is the car")
        'What color is the car. Please answer no more than 10 words'
        >>> build_rbench_prompt("MCQ", "Which season?", "A.summer; B.winter")
        "Which season?\\nA.summer; B.winter\\nAnswer with the option's letter from the given choices directly."
    """
    if task == "MCQ":
        instruction = with_recovery(RBENCH_MCQ_INSTRUCTION) if recover else RBENCH_MCQ_INSTRUCTION
        return f"{question}\n{choices or ''}\n{instruction}"
    if task == "VQA":
        if recover:
            return f"{question}.\n{with_recovery(RBENCH_VQA_INSTRUCTION)}"
        return f"{question}. {RBENCH_VQA_INSTRUCTION}"
    if task == "CAP":
        return with_recovery(RBENCH_CAPTION_PROMPT) if recover else RBENCH_CAPTION_PROMPT
    raise ValueError(f"Unknown R-Bench task {task!r}; expected 'MCQ', 'VQA' or 'CAP'.")
