"""The small contracts between the evaluation harness and any model.

The harness never imports the model: it drives anything that satisfies these protocols, so the
same code evaluates Robust-U1, plain BAGEL, or a stub in the tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol, TypedDict, runtime_checkable

from PIL import Image

Mode = Literal["baseline", "recover", "oracle"]
"""How an item is answered.

- ``baseline``: the corrupted image I_c only.
- ``recover``: the model first recovers I_r from I_c, then reasons over both.
- ``oracle``: the clean image is passed as ``image`` (the upper bound).
"""

MODES: tuple[Mode, ...] = ("baseline", "recover", "oracle")


class Answer(TypedDict, total=False):
    """What an answerer returns for one question."""

    answer: str
    """The model's full text reply (option extraction and judging run on it)."""
    reasoning: str | None
    """Optional reasoning trace, stored with the result for inspection."""
    recovered_image: Image.Image | None
    """Optional recovered image I_r (``recover`` mode); not stored in the result cache."""


@runtime_checkable
class Answerer(Protocol):
    """Answers one question about one image.

    ``question`` is the complete user prompt, already formatted by the benchmark (see
    :func:`robust_u1.evaluation.prompts.build_mcq_prompt` and
    :func:`robust_u1.evaluation.prompts.build_rbench_prompt`), including the recovery instruction in
    ``recover`` mode. ``options`` maps option letters to option texts for multiple-choice items
    (``None`` for open questions); it is informational, e.g. for constrained decoding.

    Example:
        >>> def answer_fn(image, question, options, mode):
        ...     return {"answer": "<ANSWER>A</ANSWER>", "reasoning": None, "recovered_image": None}
        >>> isinstance(answer_fn, Answerer)
        True
    """

    def __call__(self, image: Image.Image, question: str, options: dict[str, str] | None, mode: Mode) -> Answer: ...


@runtime_checkable
class Recoverer(Protocol):
    """Recovers a batch of corrupted images; returns one image per input, in order.

    Example:
        >>> def recover_fn(images):
        ...     return [image.copy() for image in images]
        >>> isinstance(recover_fn, Recoverer)
        True
    """

    def __call__(self, images: Sequence[Image.Image]) -> list[Image.Image]: ...


@runtime_checkable
class Degrader(Protocol):
    """Corrupts a clean image at ``level`` percent intensity (25 / 50 / 100), reproducibly per seed.

    Example:
        >>> def degrade(image, level, seed):
        ...     return image.point(lambda value: value * (100 - level) // 100)
        >>> isinstance(degrade, Degrader)
        True
    """

    def __call__(self, image: Image.Image, level: int, seed: int) -> Image.Image: ...
