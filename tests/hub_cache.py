"""A local Hugging Face Hub cache built by the tests (no download): huggingface_hub's layout
``models--{org}--{name}/{blobs,refs/main,snapshots/<commit>}`` with snapshot files linked to blobs."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Iterable


def add_to_hub_cache(cache: Path, repo_id: str, source: Path, names: Iterable[str] | None = None) -> Path:
    """Puts the files of ``source`` (or only ``names``) into ``cache`` as ``repo_id`` at ``main``; returns the snapshot."""
    repo = Path(cache) / f"models--{repo_id.replace('/', '--')}"
    files = sorted(names) if names is not None else sorted(p.name for p in Path(source).iterdir() if p.is_file())
    commit = hashlib.sha1(repo_id.encode() + "".join(files).encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for name in files:
        data = (Path(source) / name).read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        if not blob.exists():
            shutil.copyfile(Path(source) / name, blob)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot
