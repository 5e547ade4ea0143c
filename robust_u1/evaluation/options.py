"""Multiple-choice option extraction in the style of VLMEvalKit (``can_infer_option`` / ``can_infer_text``).

Order of rules, applied to the reply after removing ``<think>…</think>`` reasoning and, when present,
keeping only the content of the last ``<ANSWER>…</ANSWER>`` tag:

1. exactly one distinct option letter occurs as a token (tokens split on non-alphanumerics), and its
   last occurrence is among the last 5 tokens;
2. the reply is a single lowercase option letter (``"b"`` → ``"B"``); lowercase letters are
   otherwise ignored because ``a`` is usually the English article;
3. an explicit pattern such as ``answer is (B)``, ``Answer: B``, ``option B`` or ``choice B``
   (the letter must be uppercase; the last such mention wins);
4. exactly one option text occurs in the reply as whole words (case-insensitive; an option whose text
   is contained in another matching option's text, e.g. "red" in "red car", yields to it);
5. otherwise ``None`` — the item counts as wrong.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

# The reply format and option lettering live with the model's prompts; re-exported here for the harness.
from ..prompting import final_answer_text, normalize_options, parse_choice_string, strip_reasoning  # noqa: F401

_TOKEN = re.compile(r"[A-Za-z0-9]+")
_EXPLICIT_ANSWER = re.compile(
    r"\b(?:answer|option|choice)\b(?:\s*(?:is|:|=))?\s*(?:option\s*)?[(\[]?\s*((?-i:[A-Z]))(?![A-Za-z0-9])",
    re.IGNORECASE,
)
_LAST_TOKENS = 5


def extract_option(response: str | None, options: Mapping[str, str] | Sequence[str]) -> str | None:
    """Extract the chosen option letter from a model reply, or ``None`` when it cannot be inferred.

    Example:
        >>> extract_option("The answer is (B).", {"A": "dog", "B": "cat"})
        'B'
        >>> extract_option("<think>A looks odd</think><ANSWER>C</ANSWER>", ["x", "y", "z"])
        'C'
        >>> extract_option("A and B", {"A": "dog", "B": "cat"}) is None
        True
    """
    if not response:
        return None
    choices = normalize_options(options)
    text = final_answer_text(response)
    tokens = _TOKEN.findall(text)

    letters_found = {token for token in tokens if token in choices}
    if len(letters_found) == 1:
        letter = letters_found.pop()
        last_position = max(index for index, token in enumerate(tokens) if token == letter)
        if last_position >= len(tokens) - _LAST_TOKENS:
            return letter

    if len(tokens) == 1 and len(tokens[0]) == 1 and tokens[0].upper() in choices:
        return tokens[0].upper()

    for match in reversed(list(_EXPLICIT_ANSWER.finditer(text))):
        if match.group(1) in choices:
            return match.group(1)

    return _match_option_text(text, choices)


def _match_option_text(text: str, choices: dict[str, str]) -> str | None:
    lowered = text.lower()
    matching: dict[str, str] = {}
    for letter, option_text in choices.items():
        needle = option_text.strip().rstrip(".").strip().lower()
        if needle and re.search(rf"(?<![a-z0-9]){re.escape(needle)}(?![a-z0-9])", lowered):
            matching[letter] = needle
    # "red" also matches inside "red car": keep only texts not contained in another match.
    maximal = [
        letter
        for letter, needle in matching.items()
        if not any(needle != other and needle in other for other in matching.values())
    ]
    return maximal[0] if len(maximal) == 1 else None
