"""Recovery-pair builder, JSONL exchange, dataset card / Hub push and the degraded MCQ benchmark."""

from __future__ import annotations

import base64
import io
import json

import datasets
import numpy as np
import pytest
from huggingface_hub import DatasetCard
from PIL import Image

from robust_u1.corruptions import corrupt, get_corruption
from robust_u1.data import (
    RECOVERY_PROMPT,
    build_degraded_benchmark,
    build_recovery_dataset,
    export_jsonl,
    load_jsonl,
    push_dataset_to_hub,
    recovery,
    render_dataset_card,
)

COLUMNS = ["image", "target_image", "prompt", "corruption", "severity", "seed", "source_index"]


def source_images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    rgb = [
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        for h, w in [(36, 40), (33, 47), (40, 32)]
    ]
    return [*rgb, rgb[0].convert("L"), rgb[1].convert("P")]


@pytest.fixture()
def source() -> datasets.Dataset:
    return datasets.Dataset.from_dict(
        {"image": source_images(), "label": list(range(5))},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")}),
    )


def undecoded(dataset: datasets.Dataset) -> list[dict]:
    for column in ("image", "target_image"):
        if column in dataset.column_names:
            dataset = dataset.cast_column(column, datasets.Image(decode=False))
    return dataset.to_list()


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image)


def build(source, tmp_path, **kwargs) -> datasets.Dataset:
    options = {"corruptions": ["imagenet_c/common", "robust_r1"], "samples_per_image": 2, "seed": 5}
    return build_recovery_dataset(source, **{**options, **kwargs, "cache_dir": tmp_path / "cache"})


def test_pairs_have_the_documented_columns_and_values(source, tmp_path):
    pairs = build(source, tmp_path)
    assert pairs.column_names == COLUMNS and pairs.num_rows == 10
    assert list(pairs["source_index"]) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert set(pairs["prompt"]) == {"Please restore this corrupted image to its clean version."}
    originals = source_images()
    for row in pairs:
        corruption = get_corruption(row["corruption"])
        allowed = {1, 2, 3, 4, 5} if corruption.family == "imagenet_c" else {0.23, 0.45, 0.9}
        assert row["severity"] in allowed
        original = originals[row["source_index"]].convert("RGB")
        assert row["image"].mode == row["target_image"].mode == "RGB"
        assert row["image"].size == row["target_image"].size == original.size
        assert np.array_equal(pixels(row["target_image"]), pixels(original))


def test_every_row_replays_from_its_record(source, tmp_path):
    for row in build(source, tmp_path, corruptions=None, severities=["mid", 2, 0.7]):
        family = get_corruption(row["corruption"]).family
        strength = (
            {"severity": row["severity"]}
            if family == "imagenet_c"
            else {"intensity": row["severity"]}
        )
        replayed = corrupt(row["target_image"], row["corruption"], **strength, seed=row["seed"])
        assert np.array_equal(pixels(replayed), pixels(row["image"]))


def test_two_workers_build_the_same_dataset_as_one(source, tmp_path):
    one = build(source, tmp_path / "one", num_proc=1)
    two = build(source, tmp_path / "two", num_proc=2)
    assert len(two.cache_files) == 2  # really sharded
    assert undecoded(one) == undecoded(two)


def test_seed_changes_the_draws(source, tmp_path):
    first, second = (
        undecoded(build(source, tmp_path, seed=5)),
        undecoded(build(source, tmp_path, seed=6)),
    )
    assert [r["seed"] for r in first] != [r["seed"] for r in second]


def test_a_repeated_build_is_read_back_from_the_cache(source, tmp_path, monkeypatch):
    first = undecoded(build(source, tmp_path, num_proc=2))

    def must_not_run(*args, **kwargs):
        raise AssertionError("recomputed instead of loading the cache")

    monkeypatch.setattr(recovery, "_corrupt_batch", must_not_run)
    assert undecoded(build(source, tmp_path, num_proc=2)) == first
    with pytest.raises(AssertionError, match="recomputed"):  # new inputs, new fingerprint
        build(source, tmp_path, seed=77)


def test_an_image_folder_gives_the_same_pairs_as_a_dataset(source, tmp_path):
    folder = tmp_path / "images"
    paths = []
    for index, image in enumerate(source_images()):
        path = folder / ("b" if index % 2 else "a") / f"{index}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
        paths.append(str(path))
    from_folder = build(folder, tmp_path / "folder")
    ordered = sorted(paths)
    as_dataset = datasets.Dataset.from_dict({"image": ordered}).cast_column(
        "image", datasets.Image()
    )
    assert undecoded(from_folder) == undecoded(build(as_dataset, tmp_path / "dataset"))


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        (
            {"image_column": "picture"},
            ValueError,
            "no column 'picture'; its columns are ['image', 'label']",
        ),
        ({"samples_per_image": 0}, ValueError, "samples_per_image must be a positive int"),
        ({"corruptions": ["nope"]}, ValueError, "unknown corruption 'nope'"),
        ({"seed": -3}, ValueError, "non-negative integer"),
    ],
)
def test_builder_rejects_bad_arguments(source, tmp_path, kwargs, error, fragment):
    with pytest.raises(error) as raised:
        build(source, tmp_path, **kwargs)
    assert fragment in str(raised.value)


def test_builder_rejects_dataset_dicts_and_missing_folders(source, tmp_path):
    with pytest.raises(TypeError, match=r"pick a split, e.g. source\['train'\]"):
        build_recovery_dataset(datasets.DatasetDict({"train": source}))
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        build_recovery_dataset(tmp_path / "missing")


def test_jsonl_export_and_import_round_trip(source, tmp_path):
    pairs = build(source, tmp_path)
    jsonl_path = export_jsonl(pairs, tmp_path / "export")
    lines = [json.loads(line) for line in jsonl_path.read_text().splitlines()]
    assert lines[0]["prompt"] == RECOVERY_PROMPT
    assert (
        lines[0]["image"] == "corrupted/00000000.png"
        and lines[0]["target_image"] == "clean/00000000.png"
    )
    assert (
        len(list((tmp_path / "export" / "clean").iterdir())) == 5
    )  # one clean file per source image
    for line in lines:
        for key in ("image", "target_image"):
            assert (tmp_path / "export" / line[key]).read_bytes().startswith(b"\x89PNG")

    loaded = load_jsonl(tmp_path / "export")
    assert loaded.num_rows == pairs.num_rows
    for original, restored in zip(pairs, loaded):
        assert {k: restored[k] for k in COLUMNS[2:]} == {k: original[k] for k in COLUMNS[2:]}
        for key in ("image", "target_image"):
            assert np.array_equal(pixels(restored[key]), pixels(original[key]))


def test_load_jsonl_names_missing_keys_and_files(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps({"prompt": "p", "image": "corrupted/x.png"}) + "\n")
    with pytest.raises(ValueError, match=r"data.jsonl:1 lacks keys \['target_image'\]"):
        load_jsonl(path)
    with pytest.raises(FileNotFoundError, match="JSONL file not found"):
        load_jsonl(tmp_path / "other.jsonl")


def test_dataset_card_describes_the_build(source, tmp_path):
    pairs = build(
        source, tmp_path, corruptions=["fog", "robust_r1/graffiti"], severities=["low", 4]
    )
    card = render_dataset_card(pairs, "someone/recovery-pairs", seed=5)
    text = card.content
    assert "| 10 | 5 | 2 |" in text  # rows, source images, samples per image
    assert "`imagenet_c/fog`" in text and "`robust_r1/graffiti`" in text
    assert "Base seed: 5." in text
    assert 'load_dataset("someone/recovery-pairs", split="train")' in text
    assert RECOVERY_PROMPT in text
    assert "robust-u1" in card.data.tags and card.data.task_categories == ["image-to-image"]


def test_push_keeps_the_hub_metadata_and_uploads_the_card(source, tmp_path, monkeypatch):
    pairs = build(source, tmp_path)
    calls = {}
    monkeypatch.setattr(
        datasets.Dataset,
        "push_to_hub",
        lambda self, repo_id, **kw: calls.setdefault("data", (repo_id, kw)),
    )
    written = DatasetCard(
        "---\nconfigs:\n- config_name: default\n  data_files: data/*.parquet\n---\nold text"
    )
    monkeypatch.setattr(DatasetCard, "load", classmethod(lambda cls, repo_id, **kw: written))
    monkeypatch.setattr(
        DatasetCard,
        "push_to_hub",
        lambda self, repo_id, **kw: calls.setdefault("card", (repo_id, self.content)),
    )
    push_dataset_to_hub(pairs, "someone/pairs", seed=5, private=True)
    assert calls["data"] == ("someone/pairs", {"private": True, "token": None})
    repo_id, content = calls["card"]
    assert repo_id == "someone/pairs"
    assert "config_name: default" in content and "old text" not in content
    assert "## How to load" in content


def mcq_dataset(images: list[Image.Image]) -> datasets.Dataset:
    def jpeg(image: Image.Image) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
        return buffer.getvalue()

    return datasets.Dataset.from_dict(
        {
            "image": [{"bytes": jpeg(image.convert("RGB")), "path": None} for image in images],
            "question": [f"q{i}" for i in range(len(images))],
            "A": ["yes"] * len(images),
            "B": ["no"] * len(images),
            "answer": ["A"] * len(images),
        },
        features=datasets.Features(
            {
                "image": datasets.Image(),
                **{k: datasets.Value("string") for k in ("question", "A", "B", "answer")},
            }
        ),
    )


def psnr(first: np.ndarray, second: np.ndarray) -> float:
    mse = np.mean((first.astype(np.float64) - second.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def test_degraded_benchmark_levels(tmp_path):
    images = [image.resize((96, 80)) for image in source_images()]
    mcq = mcq_dataset(images)
    degraded = build_degraded_benchmark(mcq, seed=3, cache_dir=tmp_path)
    n = mcq.num_rows
    assert degraded.num_rows == 4 * n
    assert list(degraded["level"]) == [0] * n + [25] * n + [50] * n + [100] * n
    assert degraded.column_names == ["image", "question", "A", "B", "answer", "level", "corruption"]
    rows = undecoded(degraded)
    originals = undecoded(mcq)
    for index in range(n):
        clean, *levels = (rows[index + k * n] for k in range(4))
        assert (
            clean["image"]["bytes"] == originals[index]["image"]["bytes"]
            and clean["corruption"] is None
        )
        assert {row["question"] for row in (clean, *levels)} == {f"q{index}"}
        assert len({row["corruption"] for row in levels}) == 1  # one operation per image
        assert levels[0]["corruption"].startswith("robust_r1/")
    # the same draws at every level: damage grows from 25 % to 100 % for each image
    decoded = [np.asarray(row["image"].convert("RGB")) for row in degraded]
    for index in range(n):
        quality = [psnr(decoded[index], decoded[index + k * n]) for k in (1, 2, 3)]
        assert quality[0] > quality[1] > quality[2], (degraded[index + n]["corruption"], quality)


def test_degraded_benchmark_reads_base64_tsv_images_and_level_names(tmp_path):
    images = source_images()[:2]
    encoded = []
    for image in images:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, "PNG")
        encoded.append(base64.b64encode(buffer.getvalue()).decode())
    tsv_like = datasets.Dataset.from_dict(
        {"image": encoded, "question": ["a", "b"], "answer": ["A", "B"]}
    )
    degraded = build_degraded_benchmark(
        tsv_like, levels=("clean", "high"), seed=0, cache_dir=tmp_path
    )
    assert list(degraded["level"]) == [0, 0, 100, 100]
    assert isinstance(degraded.features["image"], datasets.Image)
    assert np.array_equal(np.asarray(degraded[0]["image"]), np.asarray(images[0].convert("RGB")))


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"levels": (0, 30)}, ValueError, "unknown degradation percent 30"),
        ({"levels": (25, "25%")}, ValueError, "levels must be distinct"),
        ({"operations": ["fog"]}, ValueError, "Robust-R1 operations only; got ['imagenet_c/fog']"),
        ({"image_column": "img"}, ValueError, "no column 'img'"),
    ],
)
def test_degraded_benchmark_rejects_bad_arguments(tmp_path, kwargs, error, fragment):
    with pytest.raises(error) as raised:
        build_degraded_benchmark(mcq_dataset(source_images()[:1]), cache_dir=tmp_path, **kwargs)
    assert fragment in str(raised.value)
