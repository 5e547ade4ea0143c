"""Evaluation, the dataset builders, the eval CLI and EMA under FSDP2 over 2 CPU processes (gloo) equal one process."""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch
from safetensors.torch import load_file

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))
import _distributed_build  # noqa: E402
from test_evaluation_harness import FIXTURES, ColorAnswerer, degrade  # noqa: E402
from test_flow_matching import free_port  # noqa: E402

from robust_u1 import distributed  # noqa: E402
from robust_u1.evaluation import evaluate_benchmark, load_mcq_benchmark  # noqa: E402
from robust_u1.tiny import tiny_random_model  # noqa: E402


def test_two_processes_build_and_evaluate_like_one(tmp_path, single_thread):
    _distributed_build.main(tmp_path / "one")  # one process, in this interpreter, one thread like the two below
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS.parent)}
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}"]
    result = subprocess.run(
        launch + [str(TESTS / "_distributed_build.py"), str(tmp_path / "two")], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = (pickle.loads((tmp_path / run / "results.pkl").read_bytes()) for run in ("one", "two"))
    assert one.keys() == two.keys() == {"eval", "degraded", "recovery", "reasoning"}
    for name in one:
        assert one[name] == two[name], name  # images compared as their stored PNG bytes
    assert [len(one[name]) for name in ("degraded", "recovery", "reasoning")] == [10, 10, 4]

    # Each process answered a disjoint, non-empty share; together every case once; the repeat answered nothing.
    calls = [json.loads((tmp_path / "two" / f"calls.rank{rank}.json").read_text()) for rank in range(2)]
    single = json.loads((tmp_path / "one" / "calls.rank0.json").read_text())
    assert all(process["first"] for process in calls) and all(process["repeat"] == [] for process in calls)
    assert calls[0]["first"] + calls[1]["first"] == single["first"]
    answers = tmp_path / "two" / "eval"
    assert sorted(path.name for path in answers.iterdir()) == ["answers.process0.jsonl", "answers.process1.jsonl"]
    # Each builder process wrote (and would resume from) its own share's cache files.
    assert len(list((tmp_path / "two" / "cache" / "recovery").glob("recovery-*-000000000-000000003.arrow"))) == 1
    assert len(list((tmp_path / "two" / "cache" / "recovery").glob("recovery-*-000000003-000000005.arrow"))) == 1

    # One process resumes from the two processes' caches without answering again.
    answerer = ColorAnswerer()
    resumed = evaluate_benchmark(
        load_mcq_benchmark(FIXTURES / "mmmb_tiny.tsv", name="MMMB"), answerer, levels=[0, 50, 100], degrade=degrade,
        cache_path=answers / "answers.jsonl", progress=False,
    )  # fmt: skip
    assert answerer.calls == [] and resumed.to_dict() == one["eval"]

    # The CLI: one report, written once, equal to the one-process report.
    reports = [json.loads((tmp_path / run / "cli" / "results.json").read_text()) for run in ("one", "two")]
    assert reports[0] == reports[1] and reports[0][0]["records"]
    assert (tmp_path / "two" / "cli" / "report.md").read_text() == (tmp_path / "one" / "cli" / "report.md").read_text()


def test_distributed_builders_need_a_cache_folder(monkeypatch):
    monkeypatch.setattr(distributed, "num_processes", lambda: 2)
    rows = datasets.Dataset.from_dict({"x": [1, 2]})
    datasets.disable_caching()
    try:
        with pytest.raises(ValueError, match="datasets' caching is disabled: pass cache_dir="):
            distributed.check_shared_cache(rows, None)
        distributed.check_shared_cache(rows, "shared/cache")  # an explicit folder is enough
    finally:
        datasets.enable_caching()


def test_shares_follow_split_between_processes(monkeypatch):
    monkeypatch.setattr(distributed, "num_processes", lambda: 3)
    bounds = []
    for rank in range(3):
        monkeypatch.setattr(distributed, "process_index", lambda rank=rank: rank)
        bounds.append(distributed.process_bounds(8))
    assert bounds == [(0, 3), (3, 6), (6, 8)]  # accelerate's rule: the first 8 % 3 processes take one more


def test_ema_under_fsdp2_equals_one_process_and_resumes(tmp_path):
    """EMA sharded like an FSDP2 model (2 processes, gloo): updated per shard, saved gathered, restored sharded."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS.parent)}
    script = str(TESTS / "_ema_fsdp2.py")
    for run in ("one", "two"):
        (tmp_path / run).mkdir()
    subprocess.run([sys.executable, script, str(tmp_path / "one")], check=True, env=env, capture_output=True)
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}", script]
    result = subprocess.run(launch + [str(tmp_path / "two")], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]

    sizes = [json.loads((tmp_path / "two" / f"rank{rank}.json").read_text()) for rank in range(2)]
    assert sizes[0]["local"] + sizes[1]["local"] == sizes[0]["total"]  # each process holds only its shards
    assert 0 < sizes[0]["local"] < sizes[0]["total"]
    one = load_file(str(tmp_path / "one" / "straight" / "ema.safetensors"))
    start = dict(tiny_random_model(0)[0].named_parameters())
    assert all(not torch.equal(value, start[name].detach()) for name, value in one.items())  # the average moved
    for run in ("one", "two"):
        for folder in ("straight", "resumed"):
            ema = load_file(str(tmp_path / run / folder / "ema.safetensors"))
            assert ema.keys() == one.keys()
            for name, value in ema.items():
                torch.testing.assert_close(value, one[name], atol=1e-6, rtol=1e-5, msg=f"{run}/{folder} {name}")
    assert not list((tmp_path / "two" / "straight").glob(".*"))  # written once, no temporary left
    full = [load_file(str(tmp_path / run / "with_ema.safetensors")) for run in ("one", "two")]
    assert full[0].keys() == full[1].keys() == start.keys() | set(full[0])  # every tensor of the model, whole
    for name, value in full[0].items():
        torch.testing.assert_close(full[1][name], value, atol=1e-6, rtol=1e-5, msg=name)
        if name in one:
            torch.testing.assert_close(value, one[name], msg=name)



def test_flow_matching_trainer_keeps_ema_under_fsdp2(tmp_path):
    """The Trainer's own path: EMA built before accelerate shards the model, then kept per shard (2 processes)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)])}
    script = str(TESTS / "_ema_trainer_fsdp2.py")
    subprocess.run([sys.executable, script, str(tmp_path / "one")], check=True, env=env, capture_output=True)
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}", script]
    result = subprocess.run(launch + [str(tmp_path / "two")], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [(tmp_path / "two" / f"rank{rank}.txt").read_text() for rank in range(2)] == ["DTensor DTensor True"] * 2
    one, two = (load_file(str(tmp_path / run / "ema.safetensors")) for run in ("one", "two"))
    assert one.keys() == two.keys() and len(one) > 10
    for name in one:
        torch.testing.assert_close(two[name], one[name], atol=1e-6, rtol=1e-5, msg=name)
