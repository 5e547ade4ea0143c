"""Append-only JSONL result cache, so an interrupted evaluation resumes where it stopped."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Hashable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any


def cache_key(*parts: Hashable) -> str:
    """A stable string key for a tuple of JSON-serialisable parts.

    Example:
        >>> cache_key("mmstar", "12", 25, "recover", 0)
        '["mmstar", "12", 25, "recover", 0]'
    """
    return json.dumps(list(parts), ensure_ascii=False)


class JsonlCache:
    """A dict-like view of an append-only JSONL file of ``{"key": …, "value": …}`` lines.

    Each :meth:`put` appends one line and flushes it, so at most the line being written when the
    process dies is lost; such a truncated line is skipped (with a warning) on reload and the next
    write starts on a fresh line. ``path=None`` keeps everything in memory.

    Example:
        >>> cache = JsonlCache(None)
        >>> cache.put(cache_key("bench", "1"), {"answer": "A"})
        >>> cache.get(cache_key("bench", "1"))
        {'answer': 'A'}
    """

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path is not None else None
        self._entries: dict[str, Any] = {}
        if self.path is not None and self.path.exists():
            self._entries = dict(self._read(self.path))

    @staticmethod
    def _read(path: Path) -> Iterator[tuple[str, Any]]:
        unreadable = 0
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as error:
            raise ValueError(f"{path} is not a robust-u1 result cache (not UTF-8 text: {error}).") from None
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                # Only an interrupted write produces a partial line; its item is simply redone.
                unreadable += 1
                continue
            # A complete JSON line that is not ours means the file is someone else's (another tool's output,
            # a results file, an edited cache): skipping it would silently redo work and append to that file,
            # so stop and say which line it is.
            if not (isinstance(entry, dict) and set(entry) == {"key", "value"} and isinstance(entry["key"], str)):
                raise ValueError(
                    f"{path}, line {number}: not a robust-u1 cache entry (expected {{\"key\": …, \"value\": …}}); "
                    "use another cache path / --output folder, or delete that line."
                )
            yield entry["key"], entry["value"]
        if unreadable:
            warnings.warn(f"Ignoring {unreadable} truncated line(s) in {path} (interrupted writes).", stacklevel=4)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str, default: Any = None) -> Any:
        return self._entries.get(key, default)

    def items(self) -> Iterator[tuple[str, Any]]:
        return iter(self._entries.items())

    def absorb(self, entries: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> None:
        """Adds entries found elsewhere (other processes' caches) in memory only; this file is not written."""
        self._entries.update(entries)

    def put(self, key: str, value: Any) -> None:
        self._entries[key] = value
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"key": key, "value": value}, ensure_ascii=False)
        with self.path.open("a", encoding="utf-8") as handle:
            # A previous crash may have left a partial line without a newline; start on a fresh one.
            if handle.tell() > 0 and not self._ends_with_newline():
                handle.write("\n")
            handle.write(line + "\n")
            handle.flush()

    def _ends_with_newline(self) -> bool:
        assert self.path is not None
        with self.path.open("rb") as handle:
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) == b"\n"
