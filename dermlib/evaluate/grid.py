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
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dermlib.grammar import IMG
from dermlib.evaluate import probes
from dermlib.evaluate.pools import evaluation_pool, pool_id
from dermlib.evaluate.results import RESULT_COLUMNS, save_embeddings, write_results
from dermlib.evaluate.scoring import cosine_values, evaluate_embeddings, group_retrieval, sample_values
from dermlib.notes.store import first_notes
from dermlib.progress import progress
from dermlib.train.grid import fit_many, grid_configs
from dermlib.train.inference import encode, load_run
from dermlib.train.model import pick_device
from dermlib.train.runs import config_hash
from dermlib.workdir import WorkDir


EVAL_VERSION = 8  # bump when the evaluation changes, to invalidate cached per-run results


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
        previous = pd.read_parquet(cached)
        if len(previous) and (previous["eval_key"] == key).all():
            return previous.drop(columns="eval_key")
    model, run_cfg = load_run(run_dir)
    model.to(pick_device(run_cfg["train"].get("device", "auto")))
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
        model, _ = load_run(run_dir, checkpoint="last")
        model.to(pick_device(run_cfg["train"].get("device", "auto")))
        last = cosine_values(encode(model, pixels, notes, run_cfg, batch_size=int(cfg["eval"]["batch_size"]),
                                    pool_id=pool_id(pool)), pool)
        samples["cosine_last"], samples["cosine_lift_source_last"] = last["cosine"], last["cosine_lift_source"]
    samples.insert(0, "strategy", strategy)
    samples.insert(1, "seed", int(run_cfg["train"]["seed"]))
    samples_path.parent.mkdir(parents=True, exist_ok=True)
    samples.to_parquet(samples_path, index=False)
    rows.insert(0, "profile", cfg["profile"])
    rows.insert(1, "strategy", strategy)
    rows.insert(2, "seed", int(run_cfg["train"]["seed"]))
    rows.insert(3, "run_id", run_dir.name)
    rows.insert(4, "config_hash", config_hash(run_cfg))
    rows = rows[RESULT_COLUMNS]
    cached.parent.mkdir(parents=True, exist_ok=True)
    rows.assign(eval_key=key).to_parquet(cached, index=False)
    return rows


def run_grid(cfg: dict[str, Any]) -> pd.DataFrame:
    """Train (or reuse) and evaluate every strategy x seed of `cfg["eval"]`; write and return the results table.

    Runs train `train.parallel_runs` at a time (`dermlib.train.grid.fit_many`) and are evaluated here one after another,
    with what they share (the pool, its notes, the probes' inputs) read once. Two worker processes were measured
    no faster on two cores (139 s against 132 s for the demo's 50 evaluations); with numpy's BLAS pinned to one
    thread they took 85 s, but a run's numbers then depended on the threads it was given, so they stay here."""

    pool, pixels = evaluation_pool(cfg)
    probes.write_prompts(cfg)
    runs = grid_configs(cfg)
    folders = fit_many(runs)
    strategies = sorted({r["train"]["strategy"] for r in runs} - {IMG})
    notes = {s: first_notes(cfg["work_dir"], s, pool["sample_id"]) for s in strategies}
    shared = probes.ProbeInputs.read(cfg, pool, text=bool(strategies))
    frames = []
    with progress(len(runs), "evaluate", unit="run") as bar:
        for run_cfg, folder in zip(runs, folders):
            bar.set_postfix_str(f"{run_cfg['train']['strategy']} seed {run_cfg['train']['seed']}")
            frames.append(evaluate_run(Path(folder), cfg, pool, pixels, pool_notes=notes, probe_inputs=shared))
            bar.update(1)
    results = pd.concat(frames, ignore_index=True)
    path = write_results(results, cfg)
    print(f"[grid] {len(runs)} runs evaluated on {len(pool)} images -> <work_dir>/"
          f"{path.relative_to(WorkDir.of(cfg).root)}", flush=True)
    return results
