"""Independent jobs of a grid (its training runs) spread over a few worker processes.

`train.parallel_runs` decides how many. Each worker is a fresh (spawned) Python process whose torch uses one CPU
thread, so two workers on two cores do not fight; training pins `train.threads` either way, so a run's numbers do not
depend on how many ran beside it. With 1, every job runs one after another in the calling process.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable, Hashable, Sequence

from dermlib.progress import progress


def _start_worker() -> None:
    import torch

    os.environ["DERMLIB_NO_PROGRESS"] = "1"  # the parent's bar counts the jobs; a worker's own bars would garble it
    torch.set_num_threads(1)


def map_jobs(fn: Callable[[Any], Any], items: Sequence[Any], processes: int, *, desc: str,
             warm_key: Callable[[Any], Hashable] | None = None) -> list[Any]:
    """`[fn(x) for x in items]`, in order, with a progress bar, over `processes` workers (`fn` must be an importable
    module-level function). With `warm_key`, the first item of each key runs here first, e.g. the first run of each
    strategy, which computes the features every later run of that strategy reads. An exception in a job is raised here.
    """
    keys = [warm_key(item) if warm_key is not None else None for item in items]
    here = [i for i, key in enumerate(keys) if warm_key is not None and keys.index(key) == i]
    warmed = set(here)
    there = [i for i in range(len(items)) if i not in warmed]
    if processes <= 1 or len(there) <= 1:
        here, there = list(range(len(items))), []
    results: list[Any] = [None] * len(items)
    with progress(len(items), desc, unit="job") as bar:
        for i in here:
            results[i] = fn(items[i])
            bar.update(1)
        if there:
            with ProcessPoolExecutor(max_workers=min(processes, len(there)), initializer=_start_worker,
                                     mp_context=multiprocessing.get_context("spawn")) as pool:
                futures = {pool.submit(fn, items[i]): i for i in there}
                try:
                    for future in as_completed(futures):  # the bar moves as jobs finish, in any order
                        results[futures[future]] = future.result()
                        bar.update(1)
                except BaseException:
                    for future in futures:  # a failed job stops the rest: jobs not started are dropped
                        future.cancel()
                    raise
    return results
