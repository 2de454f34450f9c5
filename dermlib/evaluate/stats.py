"""Paired comparisons of strategies with honest uncertainty: a bootstrap over seeds and over clusters of images.

A primary comparison (declared in `eval.comparisons` before any result is computed) is a difference of one metric
between two strategies on the same test images, e.g. Δκ = κ(M+P1) − κ(Img) on the pooled external partition.
Its estimate is the mean over seeds of the paired per-seed differences: runs of one seed share the initialisation
of the shared parts, the batch order and the augmentation draws (see `dermlib.train`), so the difference is paired.

Its 95 % interval comes from a two-level bootstrap. Each replicate draws the seeds with replacement and, independently,
the *clusters* of the test pool with replacement (a cluster is a patient where the source records one, else a lesion,
else one image: SynthDerm has two images per lesion and patients with several lesions, and images of one lesion are
not independent). The same cluster draw weighs both strategies (paired), and κ is recomputed from the weighted
confusion matrix (vectorised: one matrix product for all replicates), mAP and paired cosine as weighted means of
the per-query AP and per-pair cosine. The p-value is two-sided, from the same replicates:
p = 2 · min(P*(Δ ≤ 0), P*(Δ ≥ 0)), floored at 1 / B (B replicates). Chance baselines (rows `chance: …`) are
computed by `dermlib.evaluate` on the same pools: mAP with the gallery's labels permuted, and the cosine of
shuffled image–note pairs.
"""

from __future__ import annotations

import logging

from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)
COMPARISON_COLUMNS = ["comparison", "metric", "partition", "estimate", "ci_low", "ci_high", "p_value", "n_seeds", "n"]
SAMPLE_METRICS = {"kappa": "pred", "map_i2t": "ap_i2t", "map_t2i": "ap_t2i", "paired_cosine": "cosine",
                  # the post-hoc metrics (eval.post_hoc_comparisons): each query against its own source's gallery,
                  # and each pair's cosine minus that image's mean cosine to the other notes of the pool
                  "map_i2t_within_source": "ap_i2t_source", "map_t2i_within_source": "ap_t2i_source",
                  "paired_cosine_above_chance": "cosine_lift"}
POST_HOC = "post hoc: "  # the comparison column's prefix for a comparison declared after results were seen
CHANCE = "chance: "  # the comparison column's prefix for a chance-baseline row
SOURCE_ONLY = "source_only_map"  # a pooled gallery's baseline that knows only the source (`scoring.source_only_values`)


def cluster_ids(pool: pd.DataFrame) -> np.ndarray:
    """One cluster per patient where recorded, else per lesion, else per image (resampled together)."""
    missing = pd.Series(pd.NA, index=pool.index, dtype="string")
    ids = pool.get("patient_id", missing).astype("string").fillna(pool.get("lesion_id", missing).astype("string"))
    return ids.fillna(pool["sample_id"].astype("string")).astype(str).to_numpy()


def cluster_weights(clusters: np.ndarray, n_boot: int, seed: int = 0) -> np.ndarray:
    """int32 (n_boot, N): how often each image is drawn when whole clusters are resampled with replacement."""
    codes, _ = pd.factorize(clusters)
    n_clusters = int(codes.max()) + 1 if len(codes) else 0
    if not n_clusters:
        return np.zeros((n_boot, 0), np.int32)
    draws = np.random.default_rng(seed).integers(0, n_clusters, (n_boot, n_clusters))  # one resample per row
    flat = (draws + np.arange(n_boot)[:, None] * n_clusters).ravel()  # row b's clusters counted in bins of row b
    counts = np.bincount(flat, minlength=n_boot * n_clusters).reshape(n_boot, n_clusters)
    return counts[:, codes].astype(np.int32)


def weighted_kappa(y: np.ndarray, pred: np.ndarray, weights: np.ndarray, n_classes: int) -> np.ndarray:
    """Cohen's κ for every row of `weights` (B, N) at once, from weighted confusion matrices (NaN if undefined)."""
    cells = np.zeros((len(y), n_classes * n_classes), dtype=np.float64)
    cells[np.arange(len(y)), y * n_classes + pred] = 1.0
    conf = (weights.astype(np.float64) @ cells).reshape(-1, n_classes, n_classes)
    total = conf.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        observed = np.trace(conf, axis1=1, axis2=2) / total
        expected = (conf.sum(axis=2) * conf.sum(axis=1)).sum(axis=1) / total ** 2
        return np.where(expected < 1.0, (observed - expected) / (1.0 - expected), np.nan)


def weighted_mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mean of the finite `values` for every row of `weights` (B, N)."""
    finite = np.isfinite(values)
    w = weights[:, finite].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w @ values[finite]) / w.sum(axis=1)


def metric_replicates(frame: pd.DataFrame, metric: str, weights: np.ndarray, n_classes: int) -> np.ndarray:
    """One run's metric on one pool under every weight row (the first row of ones gives the point value)."""
    if metric == "kappa":
        return weighted_kappa(frame["y"].to_numpy(), frame["pred"].to_numpy(), weights, n_classes)
    return weighted_mean(frame[SAMPLE_METRICS[metric]].to_numpy(dtype=np.float64), weights)


def paired_difference(samples: pd.DataFrame, metric: str, a: str, b: str, partition: str, *, n_boot: int,
                      n_classes: int, seed: int = 0) -> dict[str, Any]:
    """Estimate, 95 % CI and p-value of mean over seeds of metric(a) − metric(b) on the pooled partition."""
    part = samples[samples["partition"] == partition]
    seeds = sorted(set(part.loc[part["strategy"] == a, "seed"]) & set(part.loc[part["strategy"] == b, "seed"]))
    row = {"metric": metric, "partition": partition, "n_seeds": len(seeds)}
    if not seeds:
        return {**row, "estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p_value": np.nan, "n": 0}
    first = part[(part["strategy"] == a) & (part["seed"] == seeds[0])].sort_values("sample_id", kind="stable")
    weights = np.vstack([np.ones((1, len(first)), np.int32),
                         cluster_weights(first["cluster"].to_numpy(), n_boot, seed)])
    diffs = []
    for s in seeds:
        runs = [part[(part["strategy"] == x) & (part["seed"] == s)].sort_values("sample_id", kind="stable")
                for x in (a, b)]
        if any(not np.array_equal(r["sample_id"].to_numpy(), first["sample_id"].to_numpy()) for r in runs):
            raise ValueError(f"{a} and {b} (seed {s}) were evaluated on different {partition} pools: re-run the grid")
        diffs.append(metric_replicates(runs[0], metric, weights, n_classes)
                     - metric_replicates(runs[1], metric, weights, n_classes))
    diffs = np.asarray(diffs)  # (seeds, 1 + n_boot)
    estimate = float(np.nanmean(diffs[:, 0]))
    rng = np.random.default_rng(seed + 1)
    pick = rng.integers(0, len(seeds), size=(n_boot, len(seeds)))
    boot = np.nanmean(diffs[pick, 1 + np.arange(n_boot)[:, None]], axis=1)
    boot = boot[np.isfinite(boot)]
    low, high = np.percentile(boot, [2.5, 97.5]) if len(boot) else (np.nan, np.nan)
    p_value = max(2 * min(np.mean(boot <= 0), np.mean(boot >= 0)), 1 / max(len(boot), 1)) if len(boot) else np.nan
    return {**row, "estimate": estimate, "ci_low": float(low), "ci_high": float(high), "p_value": float(min(p_value, 1.0)),
            "n": len(first)}


def comparisons(samples: pd.DataFrame, results: pd.DataFrame, cfg: dict[str, Any], n_classes: int) -> pd.DataFrame:
    """The config's primary comparisons on each partition, then its post-hoc ones (`post hoc: A - B`), then the
    chance-baseline rows (`chance: …`).

    A comparison naming a strategy that is not in eval.strategies is left out (and logged), not reported as NaN.
    """
    e = cfg["eval"]
    rows = []
    declared = [(item, "") for item in e["comparisons"]] + [(item, POST_HOC) for item in e["post_hoc_comparisons"]]
    for (metric, a, b), prefix in declared:
        if a not in e["strategies"] or b not in e["strategies"]:
            log.info("comparison %s - %s (%s) left out: not both in eval.strategies %s", a, b, metric, e["strategies"])
            continue
        for partition in e["comparison_partitions"]:
            found = paired_difference(samples, metric, a, b, partition, n_boot=int(e["bootstrap"]), n_classes=n_classes)
            rows.append({"comparison": f"{prefix}{a} - {b}", **found})
    baselines = results["metric"].str.startswith("chance_") | (results["metric"] == SOURCE_ONLY)
    chance = results[baselines & (results["source"] == "pooled")]
    for (strategy, metric, partition), group in chance.groupby(["strategy", "metric", "partition"], sort=True):
        values = group["value"].to_numpy(dtype=np.float64)
        rows.append({"comparison": f"{CHANCE}{strategy}", "metric": metric.removeprefix("chance_"),
                     "partition": partition, "estimate": float(np.mean(values)),
                     "ci_low": float(np.percentile(values, 2.5)), "ci_high": float(np.percentile(values, 97.5)),
                     "p_value": np.nan, "n_seeds": group["seed"].nunique(), "n": int(group["n"].max())})
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def half_width(table: pd.DataFrame) -> pd.Series:
    """Half the width of each row's 95 % interval (the demo's precision targets are stated in these)."""
    return (table["ci_high"] - table["ci_low"]) / 2
