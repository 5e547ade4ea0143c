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
    """Where the template ``name`` (e.g. ``"sft.md.jinja"``) lives."""
    for folder in _SEARCH_PATH:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"Card template {name!r} not found in {', '.join(map(str, _SEARCH_PATH))}.")


def render_card(name: str, **context: Any) -> str:
    """Renders a card template with ``context``; an undefined variable is an error, not a blank.

    Example:

    ```python
    >>> card = render_card("sft.md.jinja", model_name="my-sft", base_model="ByteDance-Seed/BAGEL-7B-MoT", ...)
    ```
    """
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return environment.from_string(template_path(name).read_text()).render(**context)
