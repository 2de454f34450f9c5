"""A grid of runs: one config per strategy x seed (`grid_configs`), trained or reused (`fit_many`, `fit_strategies`),
with `train.parallel_runs` runs at once in worker processes (`map_jobs`).

Each worker is a fresh (spawned) Python process whose torch uses one CPU thread, so two workers on two cores do not
fight; training pins `train.threads` either way, so a run's numbers do not depend on how many ran beside it. With 1,
every job runs one after another in the calling process.
"""

from __future__ import annotations

import copy
import importlib
import multiprocessing
import os
import queue
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Hashable, Sequence

from dermlib.grammar import IMG
from dermlib.progress import progress
from dermlib.train.features import note_store_path
from dermlib.train.runs import fit, run_dir


def _start_worker(devices: Any = None) -> None:
    """A worker's setup: one CPU thread, no progress bars of its own, and with `devices` (a queue of GPU ids) one
    GPU of its own (`CUDA_VISIBLE_DEVICES`, set before torch touches CUDA, so "cuda" in the worker is that GPU)."""
    if devices is not None:
        try:
            os.environ["CUDA_VISIBLE_DEVICES"] = str(devices.get_nowait())
        except queue.Empty:  # more workers than GPU slots: this one sees what the parent sees
            pass
    import torch

    os.environ["DERMLIB_NO_PROGRESS"] = "1"  # the parent's bar counts the jobs; a worker's own bars would garble it
    torch.set_num_threads(1)


def _import(module: str) -> None:
    """Import `module` in a worker (what a job's function needs), so the worker is ready before its first job."""
    importlib.import_module(module)


def map_jobs(fn: Callable[[Any], Any], items: Sequence[Any], processes: int, *, desc: str,
             warm_key: Callable[[Any], Hashable] | None = None, devices: Sequence[str] = ()) -> list[Any]:
    """`[fn(x) for x in items]`, in order, with a progress bar, over `processes` workers (`fn` must be an importable
    module-level function). With `warm_key`, the first item of each key runs here first, e.g. the first run of each
    strategy, which computes the features every later run of that strategy reads. With `devices` (GPU ids), worker
    k works on GPU `devices[k % len(devices)]` alone. An exception in a job is raised here.
    """
    keys = [warm_key(item) if warm_key is not None else None for item in items]
    here = [i for i, key in enumerate(keys) if warm_key is not None and keys.index(key) == i]
    warmed = set(here)
    there = [i for i in range(len(items)) if i not in warmed]
    if processes <= 1 or len(there) <= 1:
        here, there = list(range(len(items))), []
    results: list[Any] = [None] * len(items)
    with progress(len(items), desc, unit="job") as bar, ExitStack() as stack:
        pool = None
        if there:  # started now, so the workers import torch and `fn`'s module while the jobs here run
            workers = min(processes, len(there))
            context = multiprocessing.get_context("spawn")
            slots = None
            if devices:
                slots = context.Queue()
                for k in range(workers):
                    slots.put(str(devices[k % len(devices)]))
            pool = stack.enter_context(ProcessPoolExecutor(max_workers=workers, initializer=_start_worker,
                                                           initargs=(slots,), mp_context=context))
            for _ in range(workers):
                pool.submit(_import, fn.__module__)
        for i in here:
            results[i] = fn(items[i])
            bar.update(1)
        if pool is not None:
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


def fit_many(configs: list[dict[str, Any]]) -> list[Path]:
    """Train (or reuse) every config and return their run folders, in order. With `train.parallel_runs` > 1, the
    first unfinished run trains here (it computes the frozen trunk's image features once), and so does the first
    of each strategy when no note store holds its notes' text features (it encodes them once); the others train in
    that many worker processes (`dermlib.train.grid`)."""
    todo = list({run_dir(c): c for c in configs if not (run_dir(c) / "done").exists()}.values())  # one per folder
    if todo:
        # under torchrun every process already is one rank of a single run: runs then go one after another
        processes = int(todo[0]["train"]["parallel_runs"]) if int(os.environ.get("WORLD_SIZE", "1")) == 1 else 1
        map_jobs(fit, todo, processes, desc="train", warm_key=_features_key, devices=gpu_ids(todo[0]))
    return [fit(c) for c in configs]  # all finished: each call only names its folder


def gpu_ids(cfg: dict[str, Any]) -> list[str]:
    """The GPUs a grid's workers are spread over, one per worker in turn: every visible GPU when runs train on CUDA
    (`train.device` "auto" or "cuda") and there are several, else none (one GPU, or the CPU: nothing to pin)."""
    import torch

    if cfg["train"]["device"] not in ("auto", "cuda") or not torch.cuda.is_available():
        return []
    count = torch.cuda.device_count()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [d.strip() for d in visible.split(",") if d.strip()] if visible else [str(i) for i in range(count)]
    return ids[:count] if count > 1 else []


def _features_key(cfg: dict[str, Any]) -> str:
    """Which frozen features a run computes first if none exist yet: the image features every run shares, or with
    no note store (`train.note_features`) its strategy's text features too (a store's notes are only looked up)."""
    stored = cfg["train"].get("note_features") and note_store_path(cfg) is not None and note_store_path(cfg).exists()
    return "image" if stored or cfg["train"]["strategy"] == IMG else cfg["train"]["strategy"]


def grid_configs(cfg: dict[str, Any], strategies: list[str] | None = None,
                 seeds: list[int] | None = None) -> list[dict[str, Any]]:
    """One full config per strategy x seed (defaults: `cfg["eval"]`), strategy-major, with train.strategy / .seed set."""
    configs = []
    for strategy in cfg["eval"]["strategies"] if strategies is None else strategies:
        for seed in cfg["eval"]["seeds"] if seeds is None else seeds:
            run = copy.deepcopy(cfg)  # nothing a run changes reaches the caller's config
            run["train"]["strategy"], run["train"]["seed"] = strategy, int(seed)
            configs.append(run)
    return configs


def fit_strategies(cfg: dict[str, Any], strategies: list[str] | None = None,
                   seeds: list[int] | None = None) -> dict[int, dict[str, Path]]:
    """Train (or reuse) one run per strategy x seed (defaults: `cfg["eval"]`) -> {seed: {strategy: run folder}}."""
    configs = grid_configs(cfg, strategies, seeds)
    runs: dict[int, dict[str, Path]] = {}
    for run_cfg, folder in zip(configs, fit_many(configs)):
        runs.setdefault(run_cfg["train"]["seed"], {})[run_cfg["train"]["strategy"]] = folder
    return runs
