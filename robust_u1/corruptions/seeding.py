"""Explicit, process-independent randomness for corruptions.

Every corruption draws from a ``numpy.random.Generator`` built from the caller's seed, so the same
seed gives byte-identical output in any process. ``imagecorruptions`` draws from numpy's *global*
RNG; :func:`seeded_global_numpy` seeds that RNG for one call and restores the caller's state after.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

SeedLike = int | np.integer | np.random.Generator | np.random.SeedSequence | None

# Seeds handed to imagecorruptions (numpy's legacy seeding and numba) must fit in 32 bits.
SEED_BOUND = 2**32

# numpy's global RNG is process-wide: serialise our temporary use of it across threads.
_GLOBAL_RNG_LOCK = threading.Lock()


def as_generator(seed: SeedLike) -> np.random.Generator:
    """Turn a seed into a ``numpy.random.Generator``.

    ``None`` draws fresh OS entropy (not reproducible); an int or ``SeedSequence`` gives a
    reproducible generator; a ``Generator`` is returned as is (and advanced by its users).

    Example:
        >>> int(as_generator(0).integers(10)) == int(as_generator(0).integers(10))
        True
    """
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not (
        seed is None or isinstance(seed, (int, np.integer, np.random.SeedSequence))
    ):
        raise TypeError(
            f"seed must be an int, a numpy.random.Generator, a SeedSequence or None; "
            f"got {type(seed).__name__}"
        )
    if isinstance(seed, (int, np.integer)) and seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed}")
    return np.random.default_rng(seed)


def as_int_seed(seed: SeedLike) -> int:
    """An int seed as is (after validation); any other seed-like draws one.

    Builders that derive per-example seeds from (seed, index) need an int to start from.

    Example:
        >>> as_int_seed(7), as_int_seed(np.random.default_rng(0)) == as_int_seed(np.random.default_rng(0))
        (7, True)
    """
    generator = as_generator(seed)  # validates
    if isinstance(seed, (int, np.integer)):
        return int(seed)
    return draw_seed(generator)


def draw_seed(rng: np.random.Generator) -> int:
    """Draw a 32-bit integer seed from ``rng`` (for replayable records and legacy APIs)."""
    return int(rng.integers(SEED_BOUND))


@contextmanager
def seeded_global_numpy(seed: int) -> Iterator[None]:
    """Seed numpy's global RNG for the duration of the block, then restore the previous state.

    Example:
        >>> with seeded_global_numpy(3):
        ...     value = np.random.uniform()
    """
    with _GLOBAL_RNG_LOCK:
        saved_state = np.random.get_state()
        np.random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(saved_state)
