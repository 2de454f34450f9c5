"""A grid of runs (dermlib.train.grid): one config per strategy and seed, parallel runs that train the same weights
as one after another, and map_jobs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from dermlib.config import get_config
from tests.fakes.workdirs import tiny_cfg
from dermlib.train.loop import read_checkpoint


def test_grid_configs_one_config_per_strategy_and_seed() -> None:
    from dermlib.train.grid import grid_configs

    cfg = get_config("demo", {"eval.strategies": ["Img", "M"], "eval.seeds": [0, 3]})
    runs = grid_configs(cfg)
    assert [(r["train"]["strategy"], r["train"]["seed"]) for r in runs] == [("Img", 0), ("Img", 3), ("M", 0),
                                                                             ("M", 3)]
    assert [(r["train"]["strategy"], r["train"]["seed"]) for r in grid_configs(cfg, ["P3"], [7])] == [("P3", 7)]
    runs[0]["train"]["epochs"] = -1  # each run's config is its own copy: the input is not mutated
    assert cfg["train"]["strategy"] == get_config("demo")["train"]["strategy"] and cfg["train"]["epochs"] > 0
    assert {k: v for k, v in runs[1]["train"].items() if k not in ("strategy", "seed")} == \
        {k: v for k, v in cfg["train"].items() if k not in ("strategy", "seed")}


@pytest.mark.slow
def test_parallel_runs_train_the_same_weights_as_one_after_another(work: Path) -> None:
    from dermlib.train.grid import fit_many
    from dermlib.train.runs import run_dir

    pairs = [("Img", 3), ("M", 3), ("M", 4), ("M", 5), ("Img", 4)]  # Img 3 and M 3 warm up here, three go to workers
    assert fit_many([]) == []

    def configs(parallel: int) -> list[dict]:
        return [tiny_cfg(work, strategy=s, seed=k, epochs=2, parallel_runs=parallel) for s, k in pairs]

    assert [run_dir(c) for c in configs(1)] == [run_dir(c) for c in configs(2)]  # how runs execute is not hashed
    for c in configs(2):
        shutil.rmtree(run_dir(c), ignore_errors=True)
    parallel = fit_many(configs(2))
    assert [p.name.split("-")[:2] for p in parallel] == [[s, f"seed{k}"] for s, k in pairs]
    saved = {p.name: read_checkpoint(p / "checkpoint.pt") for p in parallel}
    for p in parallel:
        shutil.rmtree(p)
    sequential = fit_many(configs(1))
    assert [p.name for p in sequential] == list(saved)
    for p in sequential:
        again = read_checkpoint(p / "checkpoint.pt")
        assert again["best_epoch"] == saved[p.name]["best_epoch"]
        for name, value in saved[p.name]["model"].items():
            torch.testing.assert_close(again["model"][name], value, rtol=0, atol=0, msg=f"{p.name} {name}")
    for p in sequential[1:4]:
        shutil.rmtree(p)
    m3, m4 = configs(2)[1], configs(2)[2]
    again = fit_many([m3, m4, m4, m4])  # M 3 here; M 4 asked three times is one folder, trained once
    assert again == [sequential[1]] + [sequential[2]] * 3
    for p in again[:2]:
        weights = read_checkpoint(p / "checkpoint.pt")["model"]
        assert all(torch.equal(weights[k], v) for k, v in saved[p.name]["model"].items())


def _square(x: int) -> int:
    if x < 0:
        raise ValueError(f"negative input {x}")
    return x * x


def _pid(_: object) -> int:
    import os

    return os.getpid()


def _pid_and_gpu(_: object) -> tuple[int, str | None]:
    import os
    import time

    time.sleep(0.3)  # long enough that both workers take jobs
    return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES")


@pytest.mark.slow  # spawns worker processes
def test_each_worker_of_a_grid_works_on_a_gpu_of_its_own(monkeypatch) -> None:
    """With several GPUs, worker k sees only GPU devices[k % n] (CUDA_VISIBLE_DEVICES is set in the worker before
    torch touches CUDA); checked on the CPU through the variable each worker sees."""
    from dermlib.config import get_config
    from dermlib.train.grid import gpu_ids, map_jobs

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    seen = map_jobs(_pid_and_gpu, list(range(8)), 2, desc="t", devices=["3", "5"])
    by_worker: dict[int, set] = {}
    for pid, gpu in seen:
        by_worker.setdefault(pid, set()).add(gpu)
    assert len(by_worker) == 2 and all(len(g) == 1 for g in by_worker.values())
    assert set().union(*by_worker.values()) == {"3", "5"}  # one GPU each, none shared
    assert {gpu for _, gpu in map_jobs(_pid_and_gpu, [0, 1, 2], 2, desc="t")} == {None}  # no devices: not pinned
    assert gpu_ids(get_config("demo", {"train.device": "cpu"})) == []


@pytest.mark.slow  # spawns worker processes, each importing torch
def test_map_jobs_keeps_order_warms_each_key_here_and_raises_job_errors() -> None:
    import os

    from dermlib.train.grid import map_jobs

    items = [3, 1, 4, 1, 5, 9, 2, 6]
    assert map_jobs(_square, items, 1, desc="t") == [x * x for x in items]
    assert map_jobs(_square, items, 2, desc="t", warm_key=lambda x: x % 2) == [x * x for x in items]
    assert map_jobs(_pid, [0], 2, desc="t") == [os.getpid()]  # one job: no worker is started
    pids = map_jobs(_pid, [0, 1, 2], 2, desc="t", warm_key=lambda x: 0)
    assert pids[0] == os.getpid() and os.getpid() not in pids[1:]  # the first of its key here, the rest in workers
    with pytest.raises(ValueError, match="negative input -2"):
        map_jobs(_square, [1, 2, -2, 3], 2, desc="t")


def test_only_runs_that_compute_features_first_train_before_the_workers(tmp_path: Path) -> None:
    """The first run trains alone (it computes the image features all runs share); so does the first of each
    strategy when its notes must be encoded, but not when a note store exists to look them up."""
    from dermlib.train.grid import _features_key

    store = tmp_path / "store.npz"
    cfg = get_config("demo", {"train.note_features": str(store), "train.strategy": "M+P1"})
    assert _features_key(cfg) == "M+P1"  # named but absent: its notes will be encoded
    store.write_bytes(b"")
    assert _features_key(cfg) == "image"
    none = get_config("demo", {"train.note_features": None, "train.strategy": "P3"})
    assert _features_key(none) == "P3"
    assert _features_key(get_config("demo", {"train.note_features": None, "train.strategy": "Img"})) == "image"
