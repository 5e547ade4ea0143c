"""Work spread over the processes of ``accelerate launch`` / ``torchrun`` (evaluation and dataset builders).

Every process takes a disjoint, contiguous share of the work (accelerate's ``split_between_processes``
rule: the first ``len % N`` processes take one item more), keeps its own resumable cache, and the
shares are gathered once, in process order, so the result equals the one-process result.

Without a launcher (no ``WORLD_SIZE`` in the environment and no initialised process group) everything
here is a no-op for a single process and accelerate is not even imported, so the one-process paths
cost nothing.

Example:
    >>> from robust_u1.distributed import process_share
    >>> process_share(list("abcde"))  # one process: everything
    ['a', 'b', 'c', 'd', 'e']
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import datasets

T = TypeVar("T")

# Variables set by the launchers accelerate supports (torchrun / accelerate launch, mpirun / Intel MPI).
_WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")


def _launched() -> bool:
    if any(int(os.environ.get(name, "1") or 1) > 1 for name in _WORLD_SIZE_VARIABLES):
        return True
    distributed = sys.modules.get("torch.distributed")
    return bool(distributed is not None and distributed.is_available() and distributed.is_initialized())


@lru_cache(maxsize=1)
def _state():
    """accelerate's ``PartialState`` (it initialises the process group the launcher described), or None alone."""
    if not _launched():
        return None
    import torch
    from accelerate import PartialState

    # accelerate only sets up a CPU process group (gloo / MPI) when asked for the CPU explicitly.
    state = PartialState(cpu=not torch.accelerator.is_available())
    return state if state.num_processes > 1 else None


def num_processes() -> int:
    """How many processes share the work (1 without a launcher)."""
    state = _state()
    return 1 if state is None else state.num_processes


def process_index() -> int:
    """This process's rank (0 without a launcher)."""
    state = _state()
    return 0 if state is None else state.process_index


def is_main_process() -> bool:
    """Whether this process writes the shared outputs (reports, final files)."""
    return process_index() == 0


def wait_for_everyone() -> None:
    """A barrier across the processes (nothing alone)."""
    state = _state()
    if state is not None:
        state.wait_for_everyone()


def process_bounds(count: int) -> tuple[int, int]:
    """``(start, stop)`` of this process's contiguous share of ``count`` items (``split_between_processes``' rule).

    Example:
        >>> process_bounds(5)  # one process
        (0, 5)
    """
    processes, index = num_processes(), process_index()
    per_process, extra = divmod(count, processes)
    start = index * per_process + min(index, extra)
    return start, start + per_process + (1 if index < extra else 0)


def process_share(items: Sequence[T]) -> list[T]:
    """This process's contiguous share of ``items`` (all of them alone).

    Example:
        >>> process_share([1, 2, 3])
        [1, 2, 3]
    """
    state = _state()
    if state is None:
        return list(items)
    with state.split_between_processes(list(items)) as share:
        return list(share)


def gather_objects(value: T) -> list[T]:
    """``[value of process 0, value of process 1, ...]`` on every process (``[value]`` alone)."""
    if _state() is None:
        return [value]
    from accelerate.utils import gather_object

    # gather_object flattens one level of lists; wrapping keeps each process's value whole.
    return list(gather_object([value]))


def broadcast_from_main(value: T) -> T:
    """The main process's ``value`` on every process."""
    if _state() is None:
        return value
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value], from_process=0)[0]


def check_shared_cache(dataset: datasets.Dataset, cache_dir: str | os.PathLike | None) -> None:
    """Distributed builders exchange their shares as cache files; fail before any work when there is no cache.

    Example:
        >>> check_shared_cache(None, None)  # one process: nothing to check
    """
    if num_processes() == 1 or cache_dir is not None:
        return
    import datasets

    if not dataset.cache_files and not datasets.is_caching_enabled():
        raise ValueError(
            "building a dataset with several processes exchanges the shares as cache files, but datasets' caching "
            "is disabled: pass cache_dir= (a folder every process can read) or enable caching."
        )


def gather_datasets(parts: Sequence[datasets.Dataset]) -> datasets.Dataset:
    """The concatenation, in process order, of every process's ``parts`` (the parts alone, concatenated).

    Each process's parts are ``Dataset.map`` results backed by cache files; only the file names travel
    between processes and every process memory-maps the files, so nothing is pickled or copied.
    """
    import datasets

    if _state() is None:
        return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(list(parts))
    names = []
    for part in parts:
        if part.num_rows == 0:
            continue
        if not part.cache_files:
            raise ValueError(
                "a dataset share has no cache file to exchange between processes: pass cache_dir= (a folder every "
                "process can read)."
            )
        names.extend(entry["filename"] for entry in part.cache_files)
    wait_for_everyone()  # every share's file is complete (map renames it when done) before anyone reads it
    everyone = [name for process_names in gather_objects(names) for name in process_names]
    if not everyone:
        return datasets.concatenate_datasets(list(parts)) if len(parts) > 1 else parts[0]
    return datasets.concatenate_datasets([datasets.Dataset.from_file(name) for name in everyone])
