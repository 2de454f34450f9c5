"""The experiment grid: every strategy x seed is trained (or reused) and evaluated on the held-out data.

`run_grid(cfg)` trains each run of `cfg["eval"]` with `dermlib.train.grid.fit_many` (finished runs are reused),
embeds the evaluation pool (internal test splits + every external source) with `dermlib.train.inference.encode`,
scores it (`dermlib.evaluate.scoring`, `dermlib.evaluate.probes`) and writes one tidy table,
`<work_dir>/results/results.parquet` (+ .csv): one row per run x (partition, source) x metric, with a bootstrap CI
for the headline metrics. Classification uses the image branch only (notes derive from the label). Per run,
`<work_dir>/results/runs/<run>.parquet` caches its rows and `<work_dir>/results/embeddings/<run>.npz` keeps its
embeddings for the figures; both are reused while the run, the evaluation settings and the probes' prompts are
unchanged (`eval_key`). Reading the results back (tables, figures, lookups) is `dermlib.evaluate.results`, which
needs no torch.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from dermlib.atomic import CorruptFileError, read_parquet, write_parquet
from dermlib.grammar import IMG
from dermlib.evaluate import probes
from dermlib.evaluate.pools import evaluation_pool, pool_id
from dermlib.evaluate.results import RESULT_COLUMNS, save_embeddings, write_results
from dermlib.evaluate.scoring import cosine_values, evaluate_embeddings, group_retrieval, sample_values
from dermlib.notes.store import first_notes
from dermlib.train.grid import fit_many, grid_configs, map_jobs
from dermlib.train.inference import checkpoint_state, encode, load_run
from dermlib.train.loop import load_trainable
from dermlib.train.model import pick_device, torch_threads
from dermlib.workdir import WorkDir


EVAL_VERSION = 9  # bump when the evaluation changes, to invalidate cached per-run results


def eval_key(run_dir: Path, pool: pd.DataFrame, cfg: dict[str, Any]) -> str:
    """What decides a run's evaluation: the finished run (its `done` marker), the pool, the eval settings and
    what the probe rows read (`dermlib.evaluate.probes.probe_key`: class descriptions, prompts, train split)."""

    done = run_dir / "done"
    key = {"run": run_dir.name, "done": done.stat().st_mtime_ns, "version": EVAL_VERSION,
           "eval": {k: cfg["eval"][k] for k in ("bootstrap", "recall_k", "exclude_own_pair", "map_at_k")},
           "pool": hashlib.sha256("\n".join(pool["sample_id"].astype(str)).encode()).hexdigest(),
           "probes": probes.probe_key(cfg)}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def evaluate_run(run_dir: Path, cfg: dict[str, Any], pool: pd.DataFrame, pixels: np.ndarray, *,
                 pool_notes: dict[str, list[str | None]] | None = None, probe_inputs: Any = None) -> pd.DataFrame:
    """Evaluate one finished run on the pool (cached in results/runs/<run>.parquet); rows in RESULT_COLUMNS.

    A grid passes what all its runs share, read once: `pool_notes` (strategy -> the pool's notes, as
    `first_notes` gives them) and `probe_inputs` (`dermlib.evaluate.probes.ProbeInputs`); without them they are read here."""

    work = WorkDir.of(cfg)
    cached = work.run_results(run_dir.name)
    samples_path = work.samples(run_dir.name)
    key = eval_key(run_dir, pool, cfg)
    if cached.exists() and samples_path.exists():
        try:
            previous = read_parquet(cached, fix="it is evaluated again")
        except CorruptFileError:  # a damaged cache is no cache: the run is evaluated again and the file rewritten
            previous = None
        if previous is not None and len(previous) and (previous["eval_key"] == key).all():
            return previous.drop(columns="eval_key")
    model, run_cfg = load_run(run_dir)
    device = pick_device(run_cfg["train"].get("device", "auto"))
    model.to(device)
    strategy = run_cfg["train"]["strategy"]
    if strategy == IMG:
        notes = None
    elif pool_notes is not None and strategy in pool_notes:
        notes = pool_notes[strategy]
    else:
        notes = first_notes(cfg["work_dir"], strategy, pool["sample_id"])
    emb = encode(model, pixels, notes, run_cfg, batch_size=int(cfg["eval"]["batch_size"]), pool_id=pool_id(pool))
    save_embeddings(work.embeddings(run_dir.name), emb, pool, notes)
    retrieval = group_retrieval(emb, pool, cfg)  # read by the result rows and the per-sample values alike
    rows = pd.concat([evaluate_embeddings(emb, pool, cfg, retrieval),
                      probes.probe_rows(model, emb, pool, run_cfg, cfg, probe_inputs)], ignore_index=True)
    samples = sample_values(emb, pool, cfg, retrieval)
    if notes is not None:  # question (c) at the last epoch too, a declared sensitivity: runs stop at different epochs
        load_trainable(model, checkpoint_state(run_dir, "last"))
        model.to(device)
        last = cosine_values(encode(model, pixels, notes, run_cfg, batch_size=int(cfg["eval"]["batch_size"]),
                                    pool_id=pool_id(pool)), pool)
        samples["cosine_last"], samples["cosine_lift_source_last"] = last["cosine"], last["cosine_lift_source"]
    samples.insert(0, "strategy", strategy)
    samples.insert(1, "seed", int(run_cfg["train"]["seed"]))
    write_parquet(samples, samples_path, index=False)
    rows.insert(0, "profile", cfg["profile"])
    rows.insert(1, "strategy", strategy)
    rows.insert(2, "seed", int(run_cfg["train"]["seed"]))
    rows.insert(3, "run_id", run_dir.name)
    rows.insert(4, "config_hash", run_cfg["resolved"]["config_hash"])
    rows = rows[RESULT_COLUMNS]
    write_parquet(rows.assign(eval_key=key), cached, index=False)
    return rows


@dataclass
class GridInputs:
    """What every evaluation of a grid reads besides its run, read once per process (`read`): the pool and its
    images, each strategy's notes of the pool (`first_notes`) and the probes' inputs."""

    pool: pd.DataFrame
    pixels: np.ndarray
    notes: dict[str, list[str | None]]
    probes: probes.ProbeInputs

    @classmethod
    def read(cls, cfg: dict[str, Any], strategies: list[str]) -> GridInputs:
        pool, pixels = evaluation_pool(cfg)
        notes = {s: first_notes(cfg["work_dir"], s, pool["sample_id"]) for s in strategies}
        return cls(pool, pixels, notes, probes.ProbeInputs.read(cfg, pool, text=bool(strategies)))


_READ: dict[str, GridInputs] = {}  # one GridInputs per process (a worker reads its own once, then reuses it)


@contextmanager
def one_thread() -> Iterator[None]:
    """torch and numpy's BLAS on one CPU thread inside the block: an evaluation's numbers then do not depend on how
    many threads (or evaluations beside it) the machine has."""
    with torch_threads(1), threadpool_limits(limits=1):
        yield


def _evaluate_job(job: tuple[str, dict[str, Any], list[str]]) -> pd.DataFrame:
    """One run of a grid (module level, so worker processes can run it): `evaluate_run` with the shared inputs."""
    folder, cfg, strategies = job
    key = json.dumps([cfg["work_dir"], strategies, cfg["eval"]], sort_keys=True, default=str)
    if key not in _READ:
        _READ.clear()
        _READ[key] = GridInputs.read(cfg, strategies)
    inputs = _READ[key]
    with one_thread():
        return evaluate_run(Path(folder), cfg, inputs.pool, inputs.pixels, pool_notes=inputs.notes,
                            probe_inputs=inputs.probes)


def run_grid(cfg: dict[str, Any]) -> pd.DataFrame:
    """Train (or reuse) and evaluate every strategy x seed of `cfg["eval"]`; write and return the results table.

    Runs train `train.parallel_runs` at a time (`dermlib.train.grid.fit_many`) and are evaluated
    `eval.parallel_runs` at a time, each worker reading what the runs share (the pool, its notes, the probes'
    inputs) once; the first evaluation runs here, before the workers start, so the pool's frozen features are
    computed once. Every evaluation computes on one CPU thread (`one_thread`): the demo's 80 evaluations on two
    cores took 340 s one after another with two threads each, and the numbers now do not depend on the setting."""
    _READ.clear()  # what an earlier call read may be stale (a re-run notebook 01 rewrote the pool)
    pool, _ = evaluation_pool(cfg)
    probes.write_prompts(cfg)
    runs = grid_configs(cfg)
    folders = fit_many(runs)
    strategies = sorted({r["train"]["strategy"] for r in runs} - {IMG})
    jobs = [(str(folder), cfg, strategies) for folder in folders]
    frames = map_jobs(_evaluate_job, jobs, int(cfg["eval"]["parallel_runs"]), desc="evaluate",
                      warm_key=lambda job: "pool")
    _READ.clear()  # the pool's images are not kept once the grid is done
    results = pd.concat(frames, ignore_index=True)
    path = write_results(results, cfg)
    print(f"[grid] {len(runs)} runs evaluated on {len(pool)} images -> <work_dir>/"
          f"{path.relative_to(WorkDir.of(cfg).root)}", flush=True)
    return results
