"""Pushing a stage's artefact (full model, LoRA adapter, processor, evaluation results) to the Hub.

Datasets go through `robust_u1.data.push_dataset_to_hub`; models and adapters through
`push_artifact`, which keeps the folder's model card (written by the trainers from
``model_cards/``) and merges evaluation results into its ``model-index``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from huggingface_hub import HfApi, ModelCard

ARTIFACT_MARKERS = {"adapter_config.json": "adapter", "config.json": "model", "processor_config.json": "processor"}


def artifact_kind(folder: str | os.PathLike) -> str:
    """``adapter``, ``model`` or ``processor``: what a saved folder holds (an error if none)."""
    folder = Path(folder)
    for marker, kind in ARTIFACT_MARKERS.items():
        if (folder / marker).is_file():
            return kind
    raise ValueError(
        f"{folder} holds no model, adapter or processor (expected one of {', '.join(ARTIFACT_MARKERS)}); "
        "save it with save_pretrained / trainer.save_model first."
    )


def card_with_results(folder: str | os.PathLike, results: Sequence, model_name: str | None = None) -> ModelCard:
    """The folder's README.md card with ``results`` (`BenchmarkResults`) merged into its model-index."""
    from .evaluation.report import model_index_results

    readme = Path(folder) / "README.md"
    card = ModelCard.load(readme) if readme.is_file() else ModelCard("---\n---\n")
    new = model_index_results(results)
    replaced = {(r.dataset_name, r.metric_name) for r in new}
    kept = [r for r in (card.data.eval_results or []) if (r.dataset_name, r.metric_name) not in replaced]
    card.data.eval_results = kept + new
    card.data.model_name = card.data.model_name or model_name or Path(folder).resolve().name
    return card


def push_artifact(
    folder: str | os.PathLike,
    repo_id: str,
    results: Sequence | None = None,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str | None = None,
    api: HfApi | None = None,
) -> str:
    """Uploads a saved model / adapter / processor folder, with its card and optional eval results.

    Example:
        >>> from robust_u1.evaluation import read_json
        >>> push_artifact("robust-u1-rl", "me/robust-u1-rl", results=read_json("reports/results.json"))
    """
    folder = Path(folder)
    kind = artifact_kind(folder)
    if results:
        card_with_results(folder, results).save(folder / "README.md")
    if not (folder / "README.md").is_file():
        raise ValueError(f"{folder} has no README.md model card: create it with trainer.create_model_card() before pushing.")
    api = api or HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo_id, folder_path=str(folder), commit_message=commit_message or f"Upload Robust-U1 {kind}",
        ignore_patterns=["checkpoint-*", "*.pt", "training_args.bin", "runs/*"],
    )  # fmt: skip
    return str(getattr(commit, "commit_url", commit))
