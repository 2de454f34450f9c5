"""The bootstrap engine of the paper's protocol (`dermlib.evaluate.protocol`): per-source differences of a metric
between two sets of strategies, their unweighted mean over the sources of a partition, and its replicates.

One partition's test images are put in one order (by source, then sample id) that every run must share. Each source
gets its own cluster-bootstrap weights (`stats.cluster_weights`, stratified by source: a replicate redraws every
source's clusters within that source), the same weights for every strategy and seed (paired). Row 0 of every
replicate array is the point value (all weights one); rows 1..B are the replicates.

Cohen's κ of every replicate comes from weighted counts, one matrix product per source and strategy: the weighted
number of images per true class, of agreements, and of predictions per class give p_o and p_e (the confusion matrix
itself is never needed). A mean metric (AP, cosine) of a set difference is linear: on the images every involved
strategy has (paired), mean_A − mean_B = Σ w·(d·m) / Σ w·m with d the per-image set difference and m the mask.
Seeds are resampled afterwards: replicate b averages the per-seed macro differences of a seed draw under weights b.
A source whose value a replicate leaves undefined (no paired image drawn, κ with one class) is skipped by that
replicate's macro mean; a source undefined at its point value in any seed is left out of the comparison altogether.

Drawing seeds and clusters independently (crossed) counts image x seed noise in both draws: where that noise is
most of the variance (e.g. Δκ between two strategies that flip different images on every seed) the interval is
conservative; with lesion- and seed-level effects it covers at about the nominal rate (tests/evaluate).
"""

from __future__ import annotations

import warnings
import zlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from dermlib.evaluate.stats import cluster_weights

@dataclass
class Runs:
    """One partition's test images in one order (by source, sample id) and every run's values in that order."""
    sources: list[str]
    blocks: list[slice]  # columns of each source
    y: np.ndarray
    cluster: np.ndarray
    seeds: dict[str, list[int]] = field(default_factory=dict)  # strategy -> its seeds, in order
    pred: dict[str, np.ndarray] = field(default_factory=dict)  # strategy -> (n_seeds, n)
    values: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # strategy -> column -> (n_seeds, n)


@dataclass
class Replicates:
    """Per-seed macro (or pooled) differences of one comparison: (n_seeds, 1 + B), row 0 the point value."""
    seeds: list[int]
    per_seed: np.ndarray
    sources: list[str]
    n_images: int


def align_runs(part: pd.DataFrame, columns: list[str]) -> Runs:
    """Every (strategy, seed) run of one partition aligned to the first run's images; an error when pools differ."""
    part = part.sort_values(["strategy", "seed", "source", "sample_id"], kind="stable")
    strategy, seed = part["strategy"].astype(str).to_numpy(), part["seed"].to_numpy(np.int64)
    ids, source = part["sample_id"].astype(str).to_numpy(), part["source"].astype(str).to_numpy()
    y, pred = part["y"].to_numpy(np.int64), part["pred"].to_numpy(np.int64)
    values = {c: part[c].to_numpy(np.float64) for c in columns if c in part.columns}
    cuts = [0, *(np.flatnonzero((strategy[1:] != strategy[:-1]) | (seed[1:] != seed[:-1])) + 1), len(part)]
    first = slice(cuts[0], cuts[1])
    names, starts = np.unique(source[first], return_index=True)
    ends = [*starts[1:], cuts[1]]
    runs = Runs(sources=[str(s) for s in names], blocks=[slice(a, b) for a, b in zip(starts, ends)],
                y=y[first], cluster=part["cluster"].astype(str).to_numpy()[first])
    rows: dict[str, list[slice]] = {}
    for start, stop in zip(cuts[:-1], cuts[1:]):
        run = slice(start, stop)
        if not (stop - start == first.stop and np.array_equal(ids[run], ids[first]) and np.array_equal(y[run], runs.y)):
            raise ValueError(f"{strategy[start]} (seed {seed[start]}) was evaluated on another pool of test images "
                             f"than {strategy[0]} (seed {seed[0]}): re-run the grid")
        runs.seeds.setdefault(strategy[start], []).append(int(seed[start]))
        rows.setdefault(strategy[start], []).append(run)
    for name, slices in rows.items():
        runs.pred[name] = np.stack([pred[r] for r in slices])
        runs.values[name] = {c: np.stack([v[r] for r in slices]) for c, v in values.items()}
    return runs


def kappa_from_counts(counts: np.ndarray, n_classes: int, k: int) -> np.ndarray:
    """κ (rows, k) from weighted counts laid out as [images per true class (C) | agreements (k) | predictions per
    class (k x C)]: p_o = agreements / N, p_e = Σ_c true_c · pred_c / N²; NaN where p_e = 1 or N = 0."""
    true = counts[:, :n_classes]
    total = true.sum(axis=1, keepdims=True)
    agree = counts[:, n_classes:n_classes + k]
    pred = counts[:, n_classes + k:].reshape(len(counts), k, n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        observed = agree / total
        expected = np.einsum("bc,bkc->bk", true, pred) / total ** 2
        return np.where(expected < 1.0, (observed - expected) / (1.0 - expected), np.nan)


class MacroBootstrap:
    """Point values and replicates of per-source comparisons on one samples table (weights drawn once)."""

    def __init__(self, samples: pd.DataFrame, columns: list[str], *, n_boot: int, seed: int = 0,
                 n_classes: int | None = None) -> None:
        if (samples[["y", "pred"]] < 0).any().any():
            raise ValueError("samples hold negative class codes (a label outside the configured classes?)")
        self.samples, self.columns, self.n_boot, self.seed = samples, columns, int(n_boot), int(seed)
        self.n_classes = int(n_classes or max(samples["y"].max(), samples["pred"].max()) + 1)
        self._runs: dict[str, Runs] = {}
        self._weights: dict[str, list[np.ndarray]] = {}
        self._kappa: dict[tuple[str, str], np.ndarray] = {}

    def runs(self, partition: str) -> Runs:
        """The partition's aligned runs (cached)."""
        if partition not in self._runs:
            part = self.samples[self.samples["partition"] == partition]
            if part.empty:
                raise ValueError(f"no samples on partition {partition!r}")
            self._runs[partition] = align_runs(part, self.columns)
        return self._runs[partition]

    def weights(self, partition: str) -> list[np.ndarray]:
        """Per source, float32 (B, n_s) cluster weights drawn within that source (exact integer counts)."""
        if partition not in self._weights:
            runs = self.runs(partition)
            out = []
            for i, block in enumerate(runs.blocks):
                draw = zlib.crc32(f"{self.seed}/{partition}/{runs.sources[i]}".encode())
                out.append(cluster_weights(runs.cluster[block], self.n_boot, seed=draw).astype(np.float32))
            self._weights[partition] = out
        return self._weights[partition]

    def _kappa_table(self, partition: str, strategy: str) -> np.ndarray:
        """κ of one strategy's seeds: (n_seeds, n_sources + 1, 1 + B), the last unit all sources pooled."""
        key = (partition, strategy)
        if key not in self._kappa:
            runs, weights, c = self.runs(partition), self.weights(partition), self.n_classes
            pred = runs.pred[strategy]
            k = len(pred)
            out = np.empty((k, len(runs.blocks) + 1, 1 + self.n_boot))
            total = np.zeros((1 + self.n_boot, c + k * (c + 1)))
            for s, block in enumerate(runs.blocks):
                y, p = runs.y[block], pred[:, block]
                rows = np.arange(len(y))
                x = np.zeros((len(y), c + k * (c + 1)), np.float32)
                x[rows, y] = 1.0
                x[:, c:c + k] = (p == y).T
                x[rows[None, :], c + k + np.arange(k)[:, None] * c + p] = 1.0
                counts = np.vstack([x.sum(axis=0, dtype=np.float64)[None], (weights[s] @ x).astype(np.float64)])
                out[:, s, :] = kappa_from_counts(counts, c, k).T
                total += counts
            out[:, -1, :] = kappa_from_counts(total, c, k).T
            self._kappa[key] = out
        return self._kappa[key]

    def _kappa_units(self, a: list[str], b: list[str], partition: str, seeds: list[int]) -> np.ndarray:
        runs = self.runs(partition)
        table = {x: self._kappa_table(partition, x)[[runs.seeds[x].index(s) for s in seeds]] for x in {*a, *b}}
        return np.mean([table[x] for x in a], axis=0) - np.mean([table[x] for x in b], axis=0)

    def _mean_units(self, column: str, a: list[str], b: list[str], partition: str,
                    seeds: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Paired mean differences per (seed, unit, replicate) and the mask (n_seeds, n) of paired images."""
        runs, weights = self.runs(partition), self.weights(partition)
        vals = {x: runs.values[x][column][[runs.seeds[x].index(s) for s in seeds]] for x in {*a, *b}}
        mask = np.logical_and.reduce([np.isfinite(v) for v in vals.values()])
        with np.errstate(invalid="ignore"):
            diff = np.mean([vals[x] for x in a], axis=0) - np.mean([vals[x] for x in b], axis=0)
        dm, m = np.where(mask, diff, 0.0), mask.astype(np.float64)
        num = np.empty((len(seeds), len(runs.blocks) + 1, 1 + self.n_boot))
        den = np.empty_like(num)
        for s, block in enumerate(runs.blocks):
            for target, values in ((num, dm), (den, m)):
                target[:, s, 0] = values[:, block].sum(axis=1)
                target[:, s, 1:] = (weights[s] @ values[:, block].T.astype(np.float32)).T
        num[:, -1], den[:, -1] = num[:, :-1].sum(axis=1), den[:, :-1].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return num / den, mask

    def seeds_of(self, strategies: list[str], partitions: list[str]) -> list[int]:
        """The seeds every strategy has on every partition."""
        common: set[int] | None = None
        for partition in partitions:
            runs = self.runs(partition)
            for x in strategies:
                have = set(runs.seeds.get(x, []))
                common = have if common is None else common & have
        return sorted(common or [])

    def replicates(self, metric_column: str | None, a: list[str], b: list[str], partition: str, *,
                   aggregate: str = "macro", seeds: list[int] | None = None) -> Replicates:
        """mean(A) − mean(B) per seed, per source, then unweighted over the sources whose point value is defined
        in every seed (`aggregate="macro"`), or on all sources as one pool (`"pooled"`). `metric_column` None: κ."""
        seeds = self.seeds_of([*a, *b], [partition]) if seeds is None else seeds
        runs = self.runs(partition)
        if not seeds:
            return Replicates([], np.full((0, 1 + self.n_boot), np.nan), [], 0)
        if metric_column is None:
            units, mask = self._kappa_units(a, b, partition, seeds), np.ones((len(seeds), len(runs.y)), bool)
        else:
            units, mask = self._mean_units(metric_column, a, b, partition, seeds)
        pick = range(len(runs.sources)) if aggregate == "macro" else [len(runs.sources)]
        used = [i for i in pick if np.isfinite(units[:, i, 0]).all()]
        if not used:
            return Replicates(seeds, np.full((len(seeds), 1 + self.n_boot), np.nan), [], 0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a replicate where every source is undefined
            per_seed = np.nanmean(units[:, used, :], axis=1)
        sources = runs.sources if aggregate != "macro" else [runs.sources[i] for i in used]
        columns = np.concatenate([np.arange(len(runs.y))[runs.blocks[runs.sources.index(s)]] for s in sources])
        return Replicates(seeds, per_seed, sources, int(mask[:, columns].sum(axis=1).min()))

    def seed_draws(self, n_seeds: int) -> np.ndarray:
        """(B, n_seeds) seed indices drawn with replacement: the same draws for every comparison with n_seeds."""
        return np.random.default_rng([self.seed, 1, n_seeds]).integers(0, n_seeds, (self.n_boot, n_seeds))

    def boot(self, per_seed: np.ndarray) -> tuple[float, np.ndarray]:
        """(point estimate, B replicates): replicate b averages a seed draw's values under cluster weights b."""
        if not len(per_seed):
            return float("nan"), np.full(self.n_boot, np.nan)
        draws = self.seed_draws(len(per_seed))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            reps = np.nanmean(per_seed[draws, 1 + np.arange(self.n_boot)[:, None]], axis=1)
            return float(np.nanmean(per_seed[:, 0])), reps
