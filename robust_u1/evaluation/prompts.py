"""Prompt builders shared by the benchmarks and the model code.

MCQ benchmarks use the VLMEvalKit multiple-choice layout of the official Robust-U1 demo; R-Bench
uses the prompts of its official inference script (Q-Future/R-Bench, ``R-Bench-Script.ipynb``).
In ``recover`` mode the answer instruction is preceded by the recovery prompt and rephrased to refer
to the restored image, exactly as in the demo's MCQ prompt; the same rule is applied to the R-Bench
instructions (the paper does not print its R-Bench recovery prompts).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from .options import normalize_options

RECOVERY_PROMPT = "Please restore this corrupted image to its clean version."
"""P_rec, the instruction that makes Robust-U1 generate the recovered image."""

MCQ_INSTRUCTION = "Please select the correct answer from the options above."
OPEN_QUESTION_INSTRUCTION = "Answer the question using a single word or phrase."
RBENCH_MCQ_INSTRUCTION = "Answer with the option's letter from the given choices directly."
RBENCH_VQA_INSTRUCTION = "Please answer no more than 10 words"
RBENCH_CAPTION_PROMPT = (
    "Please describe this image in general. Directly provide the description, "
    "do not include prefix like 'This image depicts'"
)

RBenchTask = Literal["MCQ", "VQA", "CAP"]


def with_recovery(instruction: str) -> str:
    """Prefix an answer instruction with P_rec and make it refer to the restored image.

    Example:
        >>> with_recovery("Please select the correct answer from the options above.")
        'Please restore this corrupted image to its clean version.\\nBased on what you observe in the restored image, please select the correct answer from the options above.'
    """
    return (
        f"{RECOVERY_PROMPT}\nBased on what you observe in the restored image, "
        f"{instruction[:1].lower()}{instruction[1:]}"
    )


def build_mcq_prompt(
    question: str,
    options: Mapping[str, str] | Sequence[str],
    *,
    recover: bool = False,
    hint: str | None = None,
) -> str:
    """The VLMEvalKit MCQ prompt used by the official Robust-U1 demo (``Hint:`` line first when given).

    Example:
        >>> print(build_mcq_prompt("What animal is shown?", ["dog", "cat"]), end="")
        Question: What animal is shown?
        Options:
        A. dog
        B. cat
        Please select the correct answer from the options above.
    """
    check_options(options)
    lines = [f"Hint: {hint}"] if hint else []
    lines.append(f"Question: {question}")
    choices = normalize_options(options)
    if choices:
        lines.append("Options:")
        lines.extend(f"{letter}. {text}" for letter, text in choices.items())
    lines.append(with_recovery(MCQ_INSTRUCTION) if recover else MCQ_INSTRUCTION)
    return "\n".join(lines) + "\n"


def check_options(options: Mapping[str, str] | Sequence[str]) -> None:
    """Options are a list of texts (lettered A–Z) or a ``{letter: text}`` dict: one clear error otherwise.

    Example:
        >>> check_options("AB")
        Traceback (most recent call last):
        ...
        TypeError: options must be a list of option texts or a {letter: text} dict, e.g. ['dog', 'cat']; got the string 'AB'.
    """
    if isinstance(options, (str, bytes)):
        raise TypeError(
            f"options must be a list of option texts or a {{letter: text}} dict, e.g. ['dog', 'cat']; got the string {options!r:.60}."
        )
    if not (hasattr(options, "__len__") and hasattr(options, "__iter__")):  # lists, tuples, arrays, dicts
        raise TypeError(f"options must be a list of option texts or a {{letter: text}} dict, got {type(options).__name__}.")
    if len(options) > 26:
        raise ValueError(f"At most 26 options (letters A to Z) are supported, got {len(options)}.")


def build_open_prompt(question: str, *, recover: bool = False, hint: str | None = None) -> str:
    """The prompt for a question without options (some RealWorldQA items).

    Example:
        >>> print(build_open_prompt("How many cars?"), end="")
        Question: How many cars?
        Answer the question using a single word or phrase.
    """
    lines = [f"Hint: {hint}"] if hint else []
    lines.append(f"Question: {question}")
    lines.append(with_recovery(OPEN_QUESTION_INSTRUCTION) if recover else OPEN_QUESTION_INSTRUCTION)
    return "\n".join(lines) + "\n"


def build_rbench_prompt(task: RBenchTask, question: str, choices: str | None = None, *, recover: bool = False) -> str:
    """The R-Bench prompt for one item; ``choices`` is the raw choice string (``"A.x; B.y"``) for MCQ.

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
