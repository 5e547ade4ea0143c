"""Push recovery datasets to the Hugging Face Hub with a dataset card describing how they were built."""

from __future__ import annotations

from collections import Counter

import datasets
from huggingface_hub import DatasetCard, DatasetCardData

from ..model_cards import render_card

CARD_TEMPLATE = "dataset_card.md.jinja"  # in the repository's model_cards/, found by model_cards
CARD_TAGS = ("robust-u1", "image-restoration", "image-corruptions", "imagenet-c")

_COLUMN_DESCRIPTIONS = {
    "image": "corrupted image (RGB PNG)",
    "target_image": "clean image (RGB PNG)",
    "prompt": "recovery prompt",
    "corruption": "qualified corruption name, e.g. `imagenet_c/fog` or `robust_r1/graffiti`",
    "severity": "ImageNet-C severity (1-5) or Robust-R1 intensity (0-1)",
    "seed": "seed that replays this row's corruption",
    "source_index": "index of the clean source image",
}


def render_dataset_card(
    dataset: datasets.Dataset,
    repo_id: str,
    *,
    seed: int | None = None,
    description: str | None = None,
    card_data: DatasetCardData | None = None,
) -> DatasetCard:
    """Render the dataset card (``model_cards/dataset_card.md.jinja``) for a recovery dataset.

    Counts, corruptions and severities are read from the dataset's columns; ``seed`` is the base
    seed given to :func:`~robust_u1.data.recovery.build_recovery_dataset`. ``card_data`` (e.g. the
    YAML that ``Dataset.push_to_hub`` wrote) is kept, with tags and task category added.

    Example:
        >>> card = render_dataset_card(pairs, "me/recovery-pairs", seed=0)  # doctest: +SKIP
        >>> "## How to load" in card.text  # doctest: +SKIP
        True
    """
    card_data = card_data if card_data is not None else DatasetCardData()
    card_data.tags = sorted(set(card_data.get("tags") or []) | set(CARD_TAGS))
    card_data.task_categories = card_data.get("task_categories") or ["image-to-image"]
    pretty_name = card_data.get("pretty_name") or repo_id.split("/")[-1]

    columns = dataset.column_names
    source_indices = dataset["source_index"] if "source_index" in columns else None
    num_sources = len(set(source_indices)) if source_indices is not None else None
    per_source = set(Counter(source_indices).values()) if source_indices is not None else set()
    content = render_card(
        CARD_TEMPLATE,
        card_data=card_data.to_yaml(),
        repo_id=repo_id,
        pretty_name=pretty_name,
        description=description
        or f"Corrupted / clean image pairs for image recovery ({pretty_name}).",
        num_rows=dataset.num_rows,
        num_source_images=num_sources,
        samples_per_image=per_source.pop() if len(per_source) == 1 else None,
        corruptions=_corruption_rows(dataset),
        severities=[f"{s:g}" for s in sorted(set(dataset["severity"]))]
        if "severity" in columns
        else [],
        seed=seed,
        prompts=sorted(set(dataset["prompt"])) if "prompt" in columns else [],
        columns=[
            {
                "name": name,
                "description": _COLUMN_DESCRIPTIONS.get(name, str(dataset.features[name])),
            }
            for name in columns
        ],
    )
    return DatasetCard(content)


def _corruption_rows(dataset: datasets.Dataset) -> list[dict]:
    if "corruption" not in dataset.column_names:
        return []
    names = dataset["corruption"]
    strengths = dataset["severity"] if "severity" in dataset.column_names else [None] * len(names)
    counts = Counter(names)
    by_name: dict[str, set] = {}
    for name, strength in zip(names, strengths):
        by_name.setdefault(name, set()).add(strength)
    return [
        {
            "name": name,
            "family": name.split("/")[0],
            "strengths": [f"{s:g}" for s in sorted(s for s in by_name[name] if s is not None)],
            "count": counts[name],
        }
        for name in sorted(counts)
    ]


def push_dataset_to_hub(
    dataset: datasets.Dataset,
    repo_id: str,
    *,
    seed: int | None = None,
    description: str | None = None,
    private: bool | None = None,
    token: str | None = None,
    **push_kwargs,
) -> DatasetCard:
    """Push ``dataset`` with ``Dataset.push_to_hub``, then replace its README with our card.

    The YAML header that ``push_to_hub`` writes (configs, features, splits) is kept, so the repo
    still loads with ``load_dataset(repo_id)``. Returns the card that was pushed.

    Example:
        >>> push_dataset_to_hub(pairs, "me/recovery-pairs", seed=0, private=True)  # doctest: +SKIP
    """
    dataset.push_to_hub(repo_id, private=private, token=token, **push_kwargs)
    written = DatasetCard.load(repo_id, repo_type="dataset", token=token)
    card = render_dataset_card(
        dataset,
        repo_id,
        seed=seed,
        description=description,
        card_data=written.data,
    )
    card.push_to_hub(
        repo_id, token=token, repo_type="dataset", commit_message="Add Robust-U1 dataset card"
    )
    return card
