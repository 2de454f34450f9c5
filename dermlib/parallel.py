"""Independent jobs of a grid (training runs, evaluations) spread over a few worker processes.

`train.parallel_runs` decides how many. Each worker is a fresh (spawned) Python process whose torch uses one CPU
thread, so two workers on two cores do not fight; training pins `train.threads` either way, so a run's numbers do not
depend on how many ran beside it. With 1, every job runs one after another in the calling process.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Hashable, Sequence

from dermlib.progress import progress


def _start_worker(initializer: Callable[..., None] | None, initargs: tuple[Any, ...]) -> None:
    import torch

    torch.set_num_threads(1)
    if initializer is not None:
        initializer(*initargs)


def map_jobs(fn: Callable[[Any], Any], items: Sequence[Any], processes: int, *, desc: str,
             warm_key: Callable[[Any], Hashable] | None = None,
             initializer: Callable[..., None] | None = None, initargs: tuple[Any, ...] = ()) -> list[Any]:
    """`[fn(x) for x in items]`, in order, with a progress bar, over `processes` workers.

    `fn` and `initializer` must be importable module-level functions; `initializer(*initargs)` runs once here and
    once per worker. With `warm_key`, the first item of each key runs here first (e.g. the first run of each
    strategy: it computes the features every later run of that strategy reads), the rest in the workers.
    An exception in a job is raised here.
    """
    results: list[Any] = [None] * len(items)
    with progress(len(items), desc, unit="job") as bar:
        if initializer is not None:
            initializer(*initargs)
        here, there, seen = [], [], set()
        for i, item in enumerate(items):
            key = warm_key(item) if warm_key is not None else None
            first = warm_key is not None and key not in seen
            seen.add(key)
            (here if first or processes <= 1 else there).append(i)
        for i in here:
            results[i] = fn(items[i])
            bar.update(1)
        if len(there) == 1 or (there and processes <= 1):
            for i in there:
                results[i] = fn(items[i])
                bar.update(1)
        elif there:
            with ProcessPoolExecutor(max_workers=min(processes, len(there)),
                                     mp_context=multiprocessing.get_context("spawn"),
                                     initializer=_start_worker, initargs=(initializer, initargs)) as pool:
                for i, result in zip(there, pool.map(fn, [items[i] for i in there])):
                    results[i] = result
                    bar.update(1)
    return results
