"""Lazy package attributes (PEP 562), so that importing a package does not import its heavy modules.

transformers' ``_LazyModule`` does the same but would make every sub-package import transformers
(seconds) just to be listed; the CLI and the corruptions must stay importable without it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from importlib import import_module
from typing import Any


def lazy_attributes(
    package: str, attributes: Mapping[str, str], also_listed: Iterable[str] = ()
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of a package whose names live in sub-modules.

    Args:
        package: the package's ``__name__``.
        attributes: public name → relative module that defines it (``{"corrupt": ".registry"}``).
        also_listed: names defined in the package itself that ``dir()`` lists too.

    Example:
        >>> __getattr__, __dir__ = lazy_attributes(__name__, {"corrupt": ".registry"})
    """

    def __getattr__(name: str) -> Any:
        if name in attributes:
            return getattr(import_module(attributes[name], package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted([*attributes, *also_listed])

    return __getattr__, __dir__
