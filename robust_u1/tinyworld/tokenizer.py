"""The TinyWorld tokenizer: a word-level `tokenizers` model over the world's words and the prompts of
`robust_u1.prompting`, plus BAGEL's special tokens and the answer / think tags.

Words are split on whitespace and punctuation (``\\w+|[^\\w\\s]+``), so newlines are not tokens and
decoding joins words with spaces (``"Question : Which shape is red ?"``); the answer parsers only
need the letters and the tags, which survive. ``<think>``, ``</think>``, ``<ANSWER>`` and
``</ANSWER>`` are ordinary added tokens, so ``decode(..., skip_special_tokens=True)`` keeps them.

Example:
    >>> tokenizer = tinyworld_tokenizer()
    >>> tokenizer.convert_ids_to_tokens(tokenizer.encode("Which shape is red?", add_special_tokens=False))
    ['Which', 'shape', 'is', 'red', '?']
    >>> unknown_words(RECOVERY_PROMPT)
    []
"""

from __future__ import annotations

from itertools import product

from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from ..prompting import RECOVERY_PROMPT, THINK_SYSTEM_PROMPT, build_mcq_prompt, build_open_prompt
from ..tiny import SPECIAL_TOKENS
from .world import COLORS, COUNT_WORDS, OPTION_LETTERS, POSITIONS, SHAPES

UNKNOWN_TOKEN = "[UNK]"
TAG_TOKENS = ("<think>", "</think>", "<ANSWER>", "</ANSWER>")
_PRE_TOKENIZER = pre_tokenizers.Whitespace()


def world_texts() -> list[str]:
    """Every text the world and the library's prompts produce: questions, options, reasoning, P_rec,
    the MCQ / open-question layouts (with and without recovery) and BAGEL's think system prompt.

    Example:
        >>> RECOVERY_PROMPT in world_texts()
        True
    """
    texts = [RECOVERY_PROMPT, THINK_SYSTEM_PROMPT, *OPTION_LETTERS, *COUNT_WORDS, *POSITIONS]
    for recover in (False, True):
        texts.append(build_mcq_prompt("", list(OPTION_LETTERS), recover=recover, hint=""))
        texts.append(build_open_prompt("", recover=recover))
    texts += ["How many shapes are there?", "There is one shape.", *(f"There are {n} shapes." for n in COUNT_WORDS)]
    texts += ["I see a red circle at the top left, a red circle at the top left and a red circle at the top left."]
    for color, shape, position in product(COLORS, SHAPES, POSITIONS):
        texts += [
            f"What color is the {shape}?", f"The {shape} is {color}.",
            f"Which shape is {color}?", f"The {color} shape is a {shape}.",
            f"Where is the {color} {shape}?", f"The {color} {shape} is at the {position}.",
        ]  # fmt: skip
    return texts


def _words(text: str) -> list[str]:
    return [word for word, _ in _PRE_TOKENIZER.pre_tokenize_str(text)]


def tinyworld_tokenizer() -> PreTrainedTokenizerFast:
    """The word-level tokenizer (deterministic: words sorted, special and tag tokens appended last).

    Example:
        >>> tinyworld_tokenizer().tokenize("Which shape is red?")
        ['Which', 'shape', 'is', 'red', '?']
    """
    words = sorted({word for text in world_texts() for word in _words(text)} - set(TAG_TOKENS) - {"<", ">", "</"})
    vocab = {UNKNOWN_TOKEN: 0, **{word: index + 1 for index, word in enumerate(words)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=UNKNOWN_TOKEN))
    tokenizer.pre_tokenizer = _PRE_TOKENIZER
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    tokenizer.add_tokens([AddedToken(tag, normalized=False) for tag in TAG_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|im_end|>",
        unk_token=UNKNOWN_TOKEN,
    )  # fmt: skip


def unknown_words(text: str, tokenizer: PreTrainedTokenizerFast | None = None) -> list[str]:
    """Words of ``text`` that the tokenizer maps to ``[UNK]`` (an empty list means full coverage).

    Example:
        >>> unknown_words("Which dog is red?")
        ['dog']
    """
    tokenizer = tokenizer or tinyworld_tokenizer()
    encoding = tokenizer._tokenizer.encode(text, add_special_tokens=False)
    return [text[start:end] for token, (start, end) in zip(encoding.ids, encoding.offsets) if token == tokenizer.unk_token_id]
