"""Model and dataset cards rendered from the Jinja templates in the repository's ``model_cards/``.

The templates ship with the package as data files (``share/robust-u1/model_cards``); in a source
checkout or editable install they are read from the repository.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import jinja2

_SEARCH_PATH = (
    Path(__file__).resolve().parents[1] / "model_cards",
    Path(sys.prefix) / "share" / "robust-u1" / "model_cards",
)


def template_path(name: str) -> Path:
    """Where the template ``name`` lives (``training.md.jinja``, ``dataset_card.md.jinja`` or ``tinyworld.md.jinja``).

    Args:
        name: the template's file name in ``model_cards/``.

    Returns:
        The path of the template file.

    Raises:
        FileNotFoundError: no such template in the source checkout or the installed data files.

    Example:
        >>> template_path("training.md.jinja").name
        'training.md.jinja'
    """
    for folder in _SEARCH_PATH:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"Card template {name!r} not found in {', '.join(map(str, _SEARCH_PATH))}.")


def render_card(name: str, **context: Any) -> str:
    """Renders a card template with ``context``; an undefined variable is an error, not a blank.

    The trainers render ``training.md.jinja`` (`robust_u1.trainers.utils.render_training_card`), the
    dataset builders ``dataset_card.md.jinja`` (`robust_u1.data.render_dataset_card`) and TinyWorld
    ``tinyworld.md.jinja``.

    Args:
        name: the template's file name in ``model_cards/``.
        **context: the template's variables.

    Returns:
        The rendered card (Markdown with a YAML header when the template has one).

    Raises:
        jinja2.UndefinedError: the template uses a variable that ``context`` does not give.

    Example:
        >>> card = render_card(
        ...     "training.md.jinja", card_data="license: apache-2.0", model_name="my-sft", repo_id="me/my-sft",
        ...     stage="stage I", stage_description="flow matching", trainer_name="FlowMatchingTrainer",
        ...     base_model="ByteDance-Seed/BAGEL-7B-MoT", datasets=["me/pairs"], is_adapter=False,
        ...     adapter_summary="", hyperparameters={"learning_rate": 2e-05}, results=None,
        ... )
        >>> "FlowMatchingTrainer" in card and "me/pairs" in card
        True
    """
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return environment.from_string(template_path(name).read_text()).render(**context)
