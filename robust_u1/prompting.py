"""Prompts and the reply format of Robust-U1: the one home of every text the model reads or writes.

The model (`generation_robust_u1`), the collators, the trainers, the dataset builders, stage III
(`reasoning`) and the evaluation harness all import from here, so a prompt or a tag is written once.

Prompts:

- ``RECOVERY_PROMPT`` (P_rec) makes the model generate the recovered image I_r;
- questions use the VLMEvalKit multiple-choice layout of the official Robust-U1 demo
  (`build_mcq_prompt`; `build_open_prompt` without options; `build_question_prompt` picks one). With
  ``recover=True`` the answer instruction is preceded by P_rec and refers to the restored image, as in
  the demo's MCQ prompt (`with_recovery`);
- ``THINK_SYSTEM_PROMPT`` is BAGEL's think-mode system prompt (official inferencer).

Reply format: ``<think>{reasoning}</think><ANSWER>{answer}</ANSWER>``, or ``<ANSWER>{answer}</ANSWER>``
without reasoning (`format_reply`). ``<think>`` is BAGEL's think-mode wrapper and ``<ANSWER>…</ANSWER>``
the Robust-U1 answer tag. `parse_reply` reads any reply back into ``(reasoning, answer)``: it drops
``<think>`` blocks (text before a lone ``</think>`` is reasoning too, since chat templates often put
the opening tag in the prompt) and keeps the last ``<ANSWER>`` tag's content, or the whole remaining
text when there is none.

Example:
    >>> prompt = build_question_prompt("What animal is shown?", ["dog", "cat"], recover=True)
    >>> prompt.splitlines()[-2] == RECOVERY_PROMPT
    True
    >>> reply = format_reply("B", reasoning="It has whiskers.")
    >>> reply
    '<think>It has whiskers.</think><ANSWER>B</ANSWER>'
    >>> parse_reply(reply)
    ParsedReply(reasoning='It has whiskers.', answer='B')
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from typing import NamedTuple

RECOVERY_PROMPT = "Please restore this corrupted image to its clean version."
"""P_rec, the instruction that makes Robust-U1 generate the recovered image."""

MCQ_INSTRUCTION = "Please select the correct answer from the options above."
OPEN_QUESTION_INSTRUCTION = "Answer the question using a single word or phrase."

THINK_SYSTEM_PROMPT = (
    "You should first think about the reasoning process in the mind and then provide the user with the answer. "
    "The reasoning process is enclosed within <think> </think> tags, i.e. <think> reasoning process here </think> "
    "answer here"
)
"""BAGEL's think-mode system prompt (official inferencer, ``VLM_THINK_SYSTEM_PROMPT``)."""

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<ANSWER>", "</ANSWER>"

_THINK_BLOCK = re.compile(r"<think>(.*?)</think>", re.IGNORECASE | re.DOTALL)
_THINK_CLOSE = re.compile(r"</think>", re.IGNORECASE)
_ANSWER_TAG = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.IGNORECASE | re.DOTALL)


# ----------------------------------------------------------------------------------------------
# Prompts
# ----------------------------------------------------------------------------------------------


def normalize_options(options: Mapping[str, str] | Sequence[str]) -> dict[str, str]:
    """Return options as an ordered ``{letter: text}`` dict; a list is lettered A, B, C, … in order.

    Args:
        options: ``{letter: text}`` (letters are upper-cased) or the option texts in order.

    Returns:
        The options as ``{letter: text}``.

    Example:
        >>> normalize_options(["dog", "cat"])
        {'A': 'dog', 'B': 'cat'}
    """
    if isinstance(options, Mapping):
        return {str(letter).strip().upper(): str(text) for letter, text in options.items()}
    return {string.ascii_uppercase[index]: str(text) for index, text in enumerate(options)}


def parse_choice_string(choices: str | None) -> dict[str, str]:
    """Parse options written on one line, as R-Bench does (``"A.dog; B.cat"``); ``"N"`` or empty means none.

    Example:
        >>> parse_choice_string("A.running; B.Play football")
        {'A': 'running', 'B': 'Play football'}
    """
    options = {}
    for part in (choices or "").split(";"):
        found = re.match(r"\s*\(?([A-Z])[.:)]\s*(.*)$", part, re.DOTALL)
        if found:
            options[found.group(1)] = found.group(2).strip()
    return options


def with_recovery(instruction: str) -> str:
    """Prefix an answer instruction with P_rec and make it refer to the restored image.

    Args:
        instruction: the instruction used without recovery.

    Returns:
        ``RECOVERY_PROMPT``, a newline, then the instruction rephrased as the demo's MCQ prompt does.

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

    Args:
        question: the question text.
        options: the options, as accepted by `normalize_options`.
        recover: whether the model answers over [I_c, I_r] (adds P_rec, see `with_recovery`).
        hint: an optional ``Hint:`` line (MMStar, MMBench).

    Returns:
        The prompt, ending with a newline.

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

    Args:
        question: the question text.
        recover: whether the model answers over [I_c, I_r] (adds P_rec, see `with_recovery`).
        hint: an optional ``Hint:`` line.

    Returns:
        The prompt, ending with a newline.

    Example:
        >>> print(build_open_prompt("How many cars?"), end="")
        Question: How many cars?
        Answer the question using a single word or phrase.
    """
    lines = [f"Hint: {hint}"] if hint else []
    lines.append(f"Question: {question}")
    lines.append(with_recovery(OPEN_QUESTION_INSTRUCTION) if recover else OPEN_QUESTION_INSTRUCTION)
    return "\n".join(lines) + "\n"


def build_question_prompt(
    question: str,
    options: Mapping[str, str] | Sequence[str] | None = None,
    *,
    recover: bool = False,
    hint: str | None = None,
) -> str:
    """The prompt `model.answer` and stage III use: `build_mcq_prompt` with options, else `build_open_prompt`.

    Example:
        >>> build_question_prompt("How many cars?") == build_open_prompt("How many cars?")
        True
    """
    if options:
        return build_mcq_prompt(question, options, recover=recover, hint=hint)
    return build_open_prompt(question, recover=recover, hint=hint)


# ----------------------------------------------------------------------------------------------
# Reply format
# ----------------------------------------------------------------------------------------------


class ParsedReply(NamedTuple):
    """A reply read by `parse_reply`: the ``<think>`` reasoning (None without one) and the answer text."""

    reasoning: str | None
    answer: str


def format_reply(answer: str, reasoning: str | None = None) -> str:
    """The text the model learns to write: optional ``<think>`` reasoning, then the ``<ANSWER>`` tag.

    Args:
        answer: the answer (an option letter for multiple-choice questions, as the scorers expect).
        reasoning: the reasoning; empty or None writes the answer tag alone.

    Returns:
        ``<think>{reasoning}</think><ANSWER>{answer}</ANSWER>`` or ``<ANSWER>{answer}</ANSWER>``.

    Example:
        >>> format_reply("B", "The sign is red.")
        '<think>The sign is red.</think><ANSWER>B</ANSWER>'
        >>> format_reply("B")
        '<ANSWER>B</ANSWER>'
    """
    answer_tag = f"{ANSWER_OPEN}{answer}{ANSWER_CLOSE}"
    return f"{THINK_OPEN}{reasoning}{THINK_CLOSE}{answer_tag}" if reasoning else answer_tag


def strip_reasoning(response: str) -> str:
    """Remove ``<think>…</think>`` reasoning; text before a lone ``</think>`` is reasoning too.

    Example:
        >>> strip_reasoning("<think>maybe A</think>The answer is B")
        'The answer is B'
    """
    without_blocks = _THINK_BLOCK.sub(" ", response)
    # Chat templates often put the opening <think> in the prompt, so only the closing tag is generated.
    return _THINK_CLOSE.split(without_blocks)[-1].strip()


def final_answer_text(response: str) -> str:
    """The part of a reply that states the answer: the last ``<ANSWER>`` tag, else the reply without reasoning.

    Example:
        >>> final_answer_text("<think>A or C?</think><ANSWER>C</ANSWER>")
        'C'
    """
    text = strip_reasoning(response)
    tagged = _ANSWER_TAG.findall(text)
    return tagged[-1].strip() if tagged else text


def reasoning_text(response: str) -> str | None:
    """The content of the first ``<think>…</think>`` block (an unclosed one runs to the end), or None.

    Example:
        >>> reasoning_text("<think> It is red. </think><ANSWER>A</ANSWER>")
        'It is red.'
        >>> reasoning_text("<ANSWER>A</ANSWER>") is None
        True
    """
    # Same rule as `model.answer` always had: split on the first exact-case tags.
    if THINK_OPEN not in response:
        return None
    return response.split(THINK_OPEN, 1)[1].split(THINK_CLOSE, 1)[0].strip()


def parse_reply(response: str) -> ParsedReply:
    """Split a reply into its reasoning and its final answer text (the inverse of `format_reply`).

    Args:
        response: the decoded reply (special tokens already removed).

    Returns:
        ``ParsedReply(reasoning, answer)``: see `reasoning_text` and `final_answer_text`.

    Example:
        >>> parse_reply("<think>Two wheels.</think><ANSWER>bicycle</ANSWER>")
        ParsedReply(reasoning='Two wheels.', answer='bicycle')
        >>> parse_reply("Paris")
        ParsedReply(reasoning=None, answer='Paris')
    """
    return ParsedReply(reasoning_text(response), final_answer_text(response).strip())


__all__ = [
    "ANSWER_CLOSE",
    "ANSWER_OPEN",
    "MCQ_INSTRUCTION",
    "OPEN_QUESTION_INSTRUCTION",
    "RECOVERY_PROMPT",
    "THINK_CLOSE",
    "THINK_OPEN",
    "THINK_SYSTEM_PROMPT",
    "ParsedReply",
    "build_mcq_prompt",
    "build_open_prompt",
    "build_question_prompt",
    "check_options",
    "final_answer_text",
    "format_reply",
    "normalize_options",
    "parse_choice_string",
    "parse_reply",
    "reasoning_text",
    "strip_reasoning",
    "with_recovery",
]
