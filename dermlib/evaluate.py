"""The experiment grid: every strategy x seed is trained (or reused) and evaluated on the held-out data.

`run_grid(cfg)` trains each run of `cfg["eval"]` with `dermlib.train.fit` (finished runs are reused), embeds the
evaluation pool (internal test splits + every external source) with `dermlib.embed.encode`, and writes one tidy
table, `<work_dir>/results/results.parquet` (+ .csv): one row per run x (partition, source) x metric, with a
bootstrap CI for the headline metrics. Classification uses the image branch only (notes derive from the label).
Per run, `<work_dir>/results/runs/<run>.parquet` caches its rows and `<work_dir>/results/embeddings/<run>.npz`
keeps its embeddings for the figures; both are reused while the run, the evaluation settings and the probes'
prompts are unchanged (`_eval_key`).
Reading the results back (tables, figures, lookups) is `dermlib.results`, which needs no torch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import softmax

from dermlib import metrics, stats
from dermlib.data.labels import config_classes
from dermlib.data.preprocess import cached_pixels
from dermlib.data.schema import read_manifest
from dermlib.progress import progress
from dermlib.results import RESULT_COLUMNS, save_embeddings, write_results
from dermlib.workdir import WorkDir

# dermlib.train, dermlib.embed, dermlib.probes and dermlib.notes are imported where they are used.
CLASSIFICATION = ["kappa", "balanced_accuracy", "macro_auroc"]
EMBEDDING_METRICS = ["map_i2t", "map_t2i", "paired_cosine"]  # + recall@k_i2t / recall@k_t2i
POOLED = "pooled"
EVAL_VERSION = 6  # bump when the evaluation changes, to invalidate cached per-run results
CHANCE_PERMUTATIONS = 20  # label / pair permutations behind each chance baseline


def metric_names(cfg: dict[str, Any]) -> list[str]:
    """Every metric a text run reports, in table order."""
    recalls = [f"recall@{k}_{d}" for d in ("i2t", "t2i") for k in cfg["eval"]["recall_k"]]
    return CLASSIFICATION + EMBEDDING_METRICS + recalls


def evaluation_pool(cfg: dict[str, Any]) -> tuple[pd.DataFrame, np.ndarray]:
    """Labelled internal test rows and all external rows (manifest order by sample_id) and their cached images."""
    work = WorkDir.of(cfg)
    manifest = read_manifest(work.manifest)
    held_out = (manifest["label"].notna() & ((manifest["partition"] == "external") | (manifest["split"] == "test"))
                ).fillna(False).astype(bool)
    pool = manifest[held_out].sort_values("sample_id", kind="stable").reset_index(drop=True)
    if pool.empty:
        raise ValueError(f"{work.manifest}: no labelled test or external rows to evaluate; assign "
                         "splits and partitions in notebook 01_data")
    # images the cache skipped (unreadable) are left out of the evaluation, with a logged warning
    return cached_pixels(pool, work.cache, missing="drop", what="evaluation pool")


def metric_groups(pool: pd.DataFrame) -> list[tuple[str, str, np.ndarray]]:
    """(partition, source, row mask): every source, then each partition pooled."""
    out = []
    for (partition, source), part in pool.groupby(["partition", "source"], sort=True):
        out.append((str(partition), str(source), pool.index.isin(part.index)))
    for partition in sorted(pool["partition"].dropna().unique()):
        out.append((str(partition), POOLED, (pool["partition"] == partition).fillna(False).to_numpy(dtype=bool)))
    return out


def predicted_labels(emb: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    """Predicted class per pool sample from the IMAGE branch only (argmax of `image_logits`; notes never classify)."""
    return np.asarray(names, dtype=object)[emb["image_logits"].argmax(axis=1)]


def metric_row(metric: str, value: float, n: int, ci: tuple[float, float] = (np.nan, np.nan)) -> dict[str, Any]:
    """One metric row of the results table (without the run columns)."""
    return {"metric": metric, "value": float(value), "ci_low": float(ci[0]), "ci_high": float(ci[1]), "n": int(n)}


def _ci(replicates: np.ndarray) -> tuple[float, float]:
    finite = replicates[np.isfinite(replicates)]
    return tuple(np.percentile(finite, [2.5, 97.5])) if len(finite) else (np.nan, np.nan)


def _retrieval(img: np.ndarray, txt: np.ndarray, y: np.ndarray, exclude: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-query AP image->text and text->image on one pool (`exclude`: a query's own pair is not in its gallery)."""
    return (metrics.retrieval_ap(img, y, txt, y, exclude_pair=exclude),
            metrics.retrieval_ap(txt, y, img, y, exclude_pair=exclude))


def group_retrieval(emb: dict[str, np.ndarray], pool: pd.DataFrame, cfg: dict[str, Any]
                    ) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """Per-query AP both ways (`_retrieval`) in every (partition, source) group of `metric_groups` with at least two
    image-note pairs, over those pairs in pool order: what the result rows and the per-sample values both read."""
    text = emb.get("text_emb")
    if text is None:
        return {}
    exclude = bool(cfg["eval"]["exclude_own_pair"])
    labels = pool["label"].astype(str).to_numpy()
    paired_rows = metrics.finite_rows(text)
    out = {}
    for partition, source, mask in metric_groups(pool):
        paired = mask & paired_rows
        if paired.sum() >= 2:
            out[(partition, source)] = _retrieval(emb["image_emb"][paired], text[paired], labels[paired], exclude)
    return out


def chance_values(img: np.ndarray, txt: np.ndarray, y: np.ndarray, exclude: bool, seed: int = 0) -> dict[str, float]:
    """What chance gives on this pool: mAP with the gallery's labels permuted, cosine of shuffled pairs."""
    rng = np.random.default_rng(seed)
    permuted = [y[rng.permutation(len(y))] for _ in range(CHANCE_PERMUTATIONS)]
    i2t = metrics.retrieval_ap_relabelled(img, y, txt, permuted, exclude_pair=exclude)
    t2i = metrics.retrieval_ap_relabelled(txt, y, img, permuted, exclude_pair=exclude)
    cos = []
    for _ in range(CHANCE_PERMUTATIONS):
        shift = (np.arange(len(y)) + rng.integers(1, len(y))) % len(y)  # every image with another image's note
        cos.append(float(metrics.paired_cosine(img, txt[shift]).mean()))
    return {"chance_map_i2t": float(np.mean([metrics.nanmean(row) for row in i2t])),
            "chance_map_t2i": float(np.mean([metrics.nanmean(row) for row in t2i])),
            "chance_paired_cosine": float(np.mean(cos))}


def evaluate_embeddings(emb: dict[str, np.ndarray], pool: pd.DataFrame, cfg: dict[str, Any],
                        retrieval: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] | None = None) -> pd.DataFrame:
    """Metric rows (partition, source, metric, value, ci_low, ci_high, n) of one run's pool embeddings.

    Intervals are percentile bootstraps that resample clusters (patients, else lesions, else images) of the
    group; pooled groups also get chance baselines (`chance_map_*`, `chance_paired_cosine`). `retrieval` is
    `group_retrieval`'s result when the caller already has it.
    """
    retrieval = group_retrieval(emb, pool, cfg) if retrieval is None else retrieval
    names = config_classes(cfg)
    n_boot, k_list = int(cfg["eval"]["bootstrap"]), list(cfg["eval"]["recall_k"])
    exclude = bool(cfg["eval"]["exclude_own_pair"])
    labels = pool["label"].astype(str).to_numpy()
    proba = softmax(emb["image_logits"].astype(np.float64), axis=1)
    predicted = predicted_labels(emb, names)
    y_code = pd.Categorical(labels, categories=names).codes.astype(np.int64)
    p_code = pd.Categorical(predicted, categories=names).codes.astype(np.int64)
    clusters = stats.cluster_ids(pool)
    text = emb.get("text_emb")
    has_text = metrics.finite_rows(text) if text is not None else np.zeros(len(pool), dtype=bool)
    rows = []
    for partition, source, mask in metric_groups(pool):
        where = {"partition": partition, "source": source}
        y, p = labels[mask], predicted[mask]
        weights = stats.cluster_weights(clusters[mask], n_boot, seed=0)
        kappa = metrics.cohen_kappa(y_code[mask], p_code[mask])
        boot = stats.weighted_kappa(y_code[mask], p_code[mask], weights, len(names))
        rows.append({**where, **metric_row("kappa", kappa, mask.sum(), _ci(boot))})
        rows.append({**where, **metric_row("balanced_accuracy", metrics.balanced_accuracy(y, p), mask.sum())})
        rows.append({**where, **metric_row("macro_auroc", metrics.macro_auroc(y, proba[mask], names), mask.sum())})
        paired = mask & has_text
        n_pairs = int(paired.sum())
        if text is None or n_pairs < 2:  # the Img baseline (or no notes here): retrieval is not defined
            for metric in metric_names(cfg)[len(CLASSIFICATION):]:
                rows.append({**where, **metric_row(metric, np.nan, n_pairs)})
            continue
        img, txt, y = emb["image_emb"][paired], text[paired], labels[paired]
        weights = stats.cluster_weights(clusters[paired], n_boot, seed=0)
        cosine = metrics.paired_cosine(img, txt)
        for metric, values in (*zip(("map_i2t", "map_t2i"), retrieval[(partition, source)]),
                               ("paired_cosine", cosine)):
            point = metrics.nanmean(values)
            rows.append({**where, **metric_row(metric, point, np.isfinite(values).sum(),
                                         _ci(stats.weighted_mean(values, weights)))})
        for direction, (q, g) in (("i2t", (img, txt)), ("t2i", (txt, img))):
            for k, recall in zip(k_list, metrics.recall_at_k(q, g, k_list)):
                rows.append({**where, **metric_row(f"recall@{k}_{direction}", recall, n_pairs)})
        if source == POOLED:
            for metric, value in chance_values(img, txt, y, exclude).items():
                rows.append({**where, **metric_row(metric, value, n_pairs)})
    return pd.DataFrame(rows)


def sample_values(emb: dict[str, np.ndarray], pool: pd.DataFrame, cfg: dict[str, Any],
                  retrieval: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] | None = None) -> pd.DataFrame:
    """Per test image of each pooled partition: true and predicted class codes, its AP as a query both ways
    against the partition's gallery and against its own source's gallery only (`*_source`, as the per-source
    rows), its paired cosine and that cosine above its chance (`cosine_lift`; NaN without a note), and its
    cluster: what `dermlib.stats` resamples. `retrieval` is `group_retrieval`'s result when the caller has it."""
    retrieval = group_retrieval(emb, pool, cfg) if retrieval is None else retrieval
    names = config_classes(cfg)
    labels = pool["label"].astype(str).to_numpy()
    sources = pool["source"].astype(str).to_numpy()
    y_code = pd.Categorical(labels, categories=names).codes.astype(np.int64)
    p_code = emb["image_logits"].argmax(axis=1).astype(np.int64)
    text = emb.get("text_emb")
    has_text = metrics.finite_rows(text) if text is not None else np.zeros(len(pool), dtype=bool)
    per_pair = ["ap_i2t", "ap_t2i", "ap_i2t_source", "ap_t2i_source", "cosine", "cosine_lift"]
    frames = []
    for partition, source, mask in metric_groups(pool):
        if source != POOLED:
            continue
        part = pd.DataFrame({"sample_id": pool["sample_id"].astype(str).to_numpy()[mask], "partition": partition,
                             "cluster": stats.cluster_ids(pool)[mask], "y": y_code[mask], "pred": p_code[mask],
                             **{column: np.nan for column in per_pair}})
        paired = has_text[mask]
        if text is not None and paired.sum() >= 2:
            img, txt = emb["image_emb"][mask][paired], text[mask][paired]
            values = dict(zip(("ap_i2t", "ap_t2i"), retrieval[(partition, POOLED)]))
            values["cosine"] = metrics.paired_cosine(img, txt)
            values["cosine_lift"] = metrics.paired_cosine_lift(img, txt)
            values["ap_i2t_source"], values["ap_t2i_source"] = np.full(len(img), np.nan), np.full(len(img), np.nan)
            src = sources[mask][paired]
            for name in np.unique(src):
                if (partition, name) in retrieval:  # the gallery of this source alone, as its per-source result row
                    own = src == name
                    values["ap_i2t_source"][own], values["ap_t2i_source"][own] = retrieval[(partition, name)]
            for column, value in values.items():
                part.loc[paired, column] = value
        frames.append(part)
    return pd.concat(frames, ignore_index=True)


def pool_id(frame: pd.DataFrame) -> str:
    """A short name for exactly these samples in this order (keys the cached features of a pool)."""
    return hashlib.sha256("\n".join(frame["sample_id"].astype(str)).encode()).hexdigest()[:16]


def _eval_key(run_dir: Path, pool: pd.DataFrame, cfg: dict[str, Any]) -> str:
    """What decides a run's evaluation: the finished run (its `done` marker), the pool, the eval settings and
    what the probe rows read (`dermlib.probes.probe_key`: class descriptions, prompts, train split)."""
    from dermlib.probes import probe_key

    done = run_dir / "done"
    key = {"run": run_dir.name, "done": done.stat().st_mtime_ns, "version": EVAL_VERSION,
           "eval": {k: cfg["eval"][k] for k in ("bootstrap", "recall_k", "exclude_own_pair")},
           "pool": hashlib.sha256("\n".join(pool["sample_id"].astype(str)).encode()).hexdigest(),
           "probes": probe_key(cfg)}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def evaluate_run(run_dir: Path, cfg: dict[str, Any], pool: pd.DataFrame, pixels: np.ndarray, *,
                 pool_notes: dict[str, list[str | None]] | None = None, probe_inputs: Any = None) -> pd.DataFrame:
    """Evaluate one finished run on the pool (cached in results/runs/<run>.parquet); rows in RESULT_COLUMNS.

    A grid passes what all its runs share, read once: `pool_notes` (strategy -> the pool's notes, as
    `first_notes` gives them) and `probe_inputs` (`dermlib.probes.ProbeInputs`); without them they are read here."""
    from dermlib import probes
    from dermlib.embed import encode, load_run
    from dermlib.notes.store import first_notes
    from dermlib.train import config_hash
    from dermlib.trainer import pick_device

    work = WorkDir.of(cfg)
    cached = work.run_results(run_dir.name)
    samples_path = work.samples(run_dir.name)
    key = _eval_key(run_dir, pool, cfg)
    if cached.exists() and samples_path.exists():
        previous = pd.read_parquet(cached)
        if len(previous) and (previous["eval_key"] == key).all():
            return previous.drop(columns="eval_key")
    model, run_cfg = load_run(run_dir)
    model.to(pick_device(run_cfg["train"].get("device", "auto")))
    strategy = run_cfg["train"]["strategy"]
    if strategy == "Img":
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

    Runs train `train.parallel_runs` at a time (`dermlib.train.fit_many`) and are evaluated here one after another,
    with what they share (the pool, its notes, the probes' inputs) read once. Two worker processes were measured
    no faster on two cores (139 s against 132 s for the demo's 50 evaluations); with numpy's BLAS pinned to one
    thread they took 85 s, but a run's numbers then depended on the threads it was given, so they stay here."""
    from dermlib.notes.store import first_notes
    from dermlib.probes import ProbeInputs, write_prompts
    from dermlib.train import fit_many, grid_configs

    pool, pixels = evaluation_pool(cfg)
    write_prompts(cfg)
    runs = grid_configs(cfg)
    folders = fit_many(runs)
    strategies = sorted({r["train"]["strategy"] for r in runs} - {"Img"})
    notes = {s: first_notes(cfg["work_dir"], s, pool["sample_id"]) for s in strategies}
    shared = ProbeInputs.read(cfg, pool, text=bool(strategies))
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
