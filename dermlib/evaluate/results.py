"""The evaluation results on disk, and every lookup the figures make in them; no torch, no text model.

`dermlib.evaluate.grid.run_grid` writes `<work_dir>/results/` (paths in `dermlib.workdir.WorkDir`): `results.parquet`
(+ .csv; one row per run x (partition, source) x metric, columns RESULT_COLUMNS), per run its metric rows
(`runs/`), per-image values (`samples/`) and pool embeddings (`embeddings/<run>.npz`). Notebook 05 rebuilds
every figure and table from these files alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dermlib.atomic import atomic_path, read_parquet, write_csv, write_parquet
from dermlib.evaluate import protocol, stats
from dermlib.data.labels import config_classes
from dermlib.data.preprocess import load_cache
from dermlib.workdir import WorkDir

RESULT_COLUMNS = ["profile", "strategy", "seed", "run_id", "config_hash", "source", "partition", "metric",
                  "value", "ci_low", "ci_high", "n"]
# what writes the results again (each run's rows and per-image values come back from results/runs, or are evaluated)
REBUILD = "run notebook 04_evaluate again (./run_all.sh --only 04), which rewrites it"


def results_dir(cfg: dict[str, Any]) -> Path:
    """`<work_dir>/results`."""
    return WorkDir.of(cfg).results


def write_results(results: pd.DataFrame, cfg: dict[str, Any]) -> Path:
    """`<work_dir>/results/results.parquet` and `.csv`, and `<figures_dir>/results.csv` (strategy, seed,
    partition, source, metric, value, n: what outside checks read); returns the parquet path."""
    out = results_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    write_parquet(results, WorkDir.of(cfg).results_table, index=False)
    write_csv(results, out / "results.csv", index=False, float_format="%.6g")
    figures = Path(cfg["figures_dir"])
    figures.mkdir(parents=True, exist_ok=True)
    tidy = results[["strategy", "seed", "partition", "source", "metric", "value", "n"]].sort_values(
        ["strategy", "seed", "partition", "source", "metric"], kind="stable")
    write_csv(tidy, figures / "results.csv", index=False, float_format="%.6g")
    return WorkDir.of(cfg).results_table


def load_results(cfg: dict[str, Any]) -> pd.DataFrame:
    """The results table of a profile, with a clear error when the grid has not been run or the file is damaged."""
    path = WorkDir.of(cfg).results_table
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run the grid in notebook 04_evaluate "
                                "(dermlib.evaluate.grid.run_grid(cfg)) first, or copy results/ from a GPU run")
    results = read_parquet(path, fix=REBUILD)
    missing = [c for c in RESULT_COLUMNS if c not in results.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; regenerate it with dermlib.evaluate.grid.run_grid")
    return results


def load_samples(cfg: dict[str, Any], results: pd.DataFrame) -> pd.DataFrame:
    """The per-image values (`dermlib.evaluate.scoring.sample_values`) of every run in `results`, for
    `dermlib.evaluate.stats.comparisons`."""
    frames = []
    for run_id in results["run_id"].drop_duplicates():
        path = WorkDir.of(cfg).samples(run_id)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: re-run the grid (dermlib.evaluate.grid.run_grid)")
        frames.append(read_parquet(path, fix=REBUILD))
    return pd.concat(frames, ignore_index=True)


def write_comparisons(cfg: dict[str, Any], results: pd.DataFrame) -> pd.DataFrame:
    """Every comparison -> `<figures_dir>/comparisons.csv`: the declared protocol (`dermlib.evaluate.protocol`: per
    source, macro over sources; kinds primary, secondary, sensitivity, control), then the earlier protocol's pooled
    rows and the chance rows (`dermlib.evaluate.stats`). Columns: today's `stats.COMPARISON_COLUMNS` first, then
    `protocol.COLUMNS` (kind, protocol, p_holm, the equivalence test, chance levels ...)."""
    names = config_classes(cfg)
    samples = load_samples(cfg, results)
    earlier = stats.comparisons(samples, results, cfg, len(names))
    table = protocol.paper_comparisons(samples, cfg, len(names), results=results, earlier=earlier)
    table["n"] = table["n_images"]
    table = table[[*stats.COMPARISON_COLUMNS, *[c for c in table.columns if c not in stats.COMPARISON_COLUMNS]]]
    path = Path(cfg["figures_dir"]) / "comparisons.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_csv(table, path, index=False, float_format="%.6g")
    return table


def save_embeddings(path: Path, emb: dict[str, np.ndarray], pool: pd.DataFrame, notes: list[str | None] | None) -> Path:
    """Write a run's pool embeddings with the sample ids, labels, sources, partitions and notes (npz, no pickle)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: v for k, v in emb.items() if v.size}
    arrays.update({c: pool[c].astype(str).to_numpy(dtype=str) for c in ("sample_id", "label", "source", "partition")})
    if notes is not None:
        arrays["note"] = np.array([n or "" for n in notes], dtype=str)
    with atomic_path(path) as tmp:
        np.savez_compressed(tmp, **arrays)
    return path


def load_embeddings(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays save_embeddings wrote (image_emb, image_logits, [text_emb, note], sample_id, label, ...)."""
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def embeddings_path(cfg: dict[str, Any], run_id: str) -> Path:
    """Where evaluate_run saved a run's pool embeddings."""
    return WorkDir.of(cfg).embeddings(run_id)


def run_ids(results: pd.DataFrame, seed: int | None = None) -> dict[str, str]:
    """strategy -> run_id of one seed (the smallest one unless `seed` is given), in results order."""
    chosen = results if seed is None else results[results["seed"] == seed]
    first = chosen.sort_values("seed", kind="stable").drop_duplicates("strategy")
    order = list(dict.fromkeys(results["strategy"]))
    return {s: first.set_index("strategy").at[s, "run_id"] for s in order if s in set(first["strategy"])}


def query_image(cfg: dict[str, Any], sample_id: str) -> np.ndarray | None:
    """The cached pixels of one sample, or None when the cache is not on this machine (figures from results only)."""
    try:
        images, index = load_cache(WorkDir.of(cfg).cache)
    except FileNotFoundError:
        return None
    rows = np.flatnonzero(index["sample_id"].astype(str).to_numpy() == sample_id)
    return np.asarray(images[rows[0]]) if len(rows) else None


def load_audit_summary(cfg: dict[str, Any]) -> pd.DataFrame | None:
    """The notes' hallucination audit per strategy, as notebook 02 wrote it (`<work_dir>/notes/audit_summary.csv`);
    None without notes. An audit older than the notes table is an error that says how to write it again."""
    work = WorkDir.of(cfg)
    if not work.notes.exists():
        return None
    if not work.audit_summary.exists() or work.audit_summary.stat().st_mtime < work.notes.stat().st_mtime:
        state = "is older than" if work.audit_summary.exists() else "is missing beside"
        raise FileNotFoundError(f"{work.audit_summary} {state} {work.notes}: run notebook 02_notes again "
                                f"(./run_all.sh --only 02), which writes both")
    return pd.read_csv(work.audit_summary)


def permutation_chance(results: pd.DataFrame, metric: str, partition: str, strategy: str | None = None,
                       source: str = "pooled") -> float:
    """The chance baseline `chance_<metric>` of one partition's source (default: pooled), the mean over runs (or
    over one strategy's runs); NaN when the results hold none."""
    rows = results[(results["metric"] == f"chance_{metric}") & (results["source"] == source)
                   & (results["partition"] == partition)]
    if strategy is not None:
        rows = rows[rows["strategy"] == strategy]
    values = rows["value"].dropna()
    return float(values.mean()) if len(values) else float("nan")
