"""Figures of the paired comparisons (notebook 05): the forest of every declared comparison and the slopegraph that
shows why a paired difference has a narrow interval. Re-exported by `dermlib.report.plots`."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import stats as sps

from dermlib.plotstyle import readable, setup_style, source_title, strategy_colours

VERDICT_COLOURS = {"above": "tab:blue", "below": "tab:red", "equivalent": "0.45", "not resolved": "tab:orange"}
METRIC_WORDS = {"kappa": "κ", "map_i2t_within_source": "mAP i→t", "map_t2i_within_source": "mAP t→i",
                "paired_cosine": "cosine", "paired_cosine_above_source": "cosine − source chance"}


def forest(comparisons: pd.DataFrame, cfg: dict[str, Any], kinds: tuple[str, ...] = ("primary", "control")
           ) -> plt.Figure:
    """Every declared comparison of `kinds` as a paired difference with its 95 % interval (the figure the
    conclusions rest on): one panel per question, a zero line, the equivalence band ±margin shaded, each interval
    coloured by its verdict (`dermlib.evaluate.protocol.verdict`), controls labelled as such."""
    from dermlib.evaluate.protocol import verdict  # the one rule that turns an interval into words

    setup_style()
    rows = comparisons[comparisons["kind"].isin(kinds)].copy()
    if rows.empty:
        raise ValueError(f"no comparisons of kind {kinds} in the table: re-run notebook 04")
    questions = sorted(rows["question"].unique())
    heights = [len(rows[rows["question"] == q]) + 1 for q in questions]
    fig, axes = plt.subplots(len(questions), 1, figsize=(8, 0.32 * sum(heights) + 1.2), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, question in zip(axes[:, 0], questions):
        part = rows[rows["question"] == question].iloc[::-1]
        y = np.arange(len(part))
        margin = float(part["margin"].max())
        ax.axvspan(-margin, margin, color="0.92", zorder=0)
        ax.axvline(0, color="0.2", lw=0.9, zorder=1)
        for i, (_, row) in enumerate(part.iterrows()):
            colour = VERDICT_COLOURS[verdict(row)]
            ax.plot([row["ci_low"], row["ci_high"]], [i, i], color=colour, lw=2.2, solid_capstyle="butt", zorder=2)
            ax.plot(row["estimate"], i, "o", color=colour, ms=5, zorder=3)
        labels = [f"{'control: ' if k == 'control' else ''}{c.replace(' - ', ' − ')}, "
                  f"{METRIC_WORDS.get(m, m)}, {p.replace(' - ', ' − ')}"
                  for c, m, p, k in zip(part["comparison"], part["metric"], part["partition"], part["kind"])]
        ax.set_yticks(y, labels, fontsize=7.5)
        ax.set_ylim(-0.7, len(part) - 0.3)
        ax.set_title(f"({question})", loc="left", fontsize=9)
    lim = max(float(rows[["ci_low", "ci_high"]].abs().max().max()), float(rows["margin"].max())) * 1.15
    for ax in axes[:, 0]:
        ax.set_xlim(-lim, lim)
    axes[-1, 0].set_xlabel("paired difference (95 % CI); shaded: ± equivalence margin")
    handles = [plt.Line2D([], [], color=c, lw=2.2, marker="o", ms=5, label=v) for v, c in VERDICT_COLOURS.items()]
    fig.legend(handles=handles, fontsize=7, loc="upper right", ncol=4, frameon=False, bbox_to_anchor=(0.99, 1.0))
    fig.suptitle(source_title(cfg, "declared comparisons"), x=0.01, ha="left", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return fig


def paired_values(results: pd.DataFrame, metric: str, partition: str, pair: tuple[str, str]) -> pd.DataFrame:
    """Per seed, the pooled `metric` of both strategies of `pair` on `partition` (columns: the two strategies,
    index: seed) and their paired difference `diff` = second − first; only seeds that have both."""
    a, b = pair
    rows = results[(results["metric"] == metric) & (results["source"] == "pooled")
                   & (results["partition"] == partition) & results["strategy"].isin(pair)]
    wide = rows.pivot_table(index="seed", columns="strategy", values="value", aggfunc="mean")
    missing = [s for s in pair if s not in wide.columns]
    if missing:
        raise ValueError(f"no pooled {metric} on the {partition} partition for {missing} in the results")
    wide = wide[[a, b]].dropna().sort_index()
    if wide.empty:
        raise ValueError(f"no seed has a pooled {metric} on the {partition} partition for both {a} and {b}")
    wide.columns.name = None
    return wide.assign(diff=wide[b] - wide[a])


def _t_half(sd: float, n: int) -> float:
    """Half-width of a 95 % t-interval of a mean of `n` values with sd `sd` (NaN with one value)."""
    return float(sps.t.ppf(0.975, n - 1) * sd / np.sqrt(n)) if n > 1 else np.nan


def slopegraph(results: pd.DataFrame, cfg: dict[str, Any], metric: str = "kappa", partition: str = "external",
               pair: tuple[str, str] = ("Img", "M+P1")) -> plt.Figure:
    """Left: per seed, a line from the first strategy's pooled `metric` to the second's (runs of one seed share
    their initialisation, batch order and augmentations). Right: the per-seed differences (second − first), their
    mean, and two 95 % t-intervals over seeds of that mean: paired (the sd of the differences) and as if the runs
    were unpaired (√(sd₁² + sd₂²)). The seed-to-seed spread both strategies share cancels in the paired one."""
    a, b = pair
    wide = paired_values(results, metric, partition, pair)
    n = len(wide)
    sd_a, sd_b, sd_diff = (float(wide[c].std(ddof=1)) if n > 1 else np.nan for c in (a, b, "diff"))
    sd_unpaired = float(np.hypot(sd_a, sd_b))
    mean = float(wide["diff"].mean())
    colours = strategy_colours(pair)
    setup_style()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4.2), gridspec_kw={"width_ratios": [1.1, 1]})
    for seed, row in wide.iterrows():
        left.plot([0, 1], [row[a], row[b]], color="0.55", lw=1, alpha=0.8, gid=f"seed:{seed}", zorder=1)
    for x, name in ((0, a), (1, b)):
        left.scatter(np.full(n, x), wide[name], s=28, color=colours[name], edgecolor="white", lw=0.5, zorder=2,
                     gid=f"values:{name}")
        left.errorbar(x + (-0.12 if x == 0 else 0.12), wide[name].mean(), yerr=0 if n < 2 else wide[name].std(),
                      fmt="o", color=colours[name], ms=6, capsize=4, lw=1.6, zorder=3)
    left.set_xticks([0, 1], [a, b])
    left.set_xlim(-0.35, 1.35)
    left.set(ylabel=readable(metric), title=f"per seed ({n} seeds)", xlabel="beside: mean ± sd over seeds")
    jitter = ((np.arange(n) * 0.618034) % 1 - 0.5) * 0.3  # a fixed spread (golden-ratio steps), no random draw
    right.axhline(0, color="0.2", lw=0.9)
    right.scatter(jitter, wide["diff"], s=24, color="0.35", zorder=3, gid="differences",
                  label=f"per seed: {b} − {a}")
    for x, sd, what, colour in ((0.45, sd_diff, "paired", "black"), (0.75, sd_unpaired, "unpaired", "0.6")):
        half = _t_half(sd, n)
        right.errorbar(x, mean, yerr=half if np.isfinite(half) else None, fmt="s", color=colour, ms=6, capsize=5,
                       lw=2, gid=f"interval:{what}", label=f"{what}: sd {sd:.3f}, 95 % CI ± {half:.3f}")
    right.set_xticks([0, 0.45, 0.75], ["seeds", "paired", "unpaired"])
    right.set_xlim(-0.3, 1.0)
    right.set(ylabel=f"difference in {readable(metric)}", title=f"{b} − {a}, mean {mean:+.3f}")
    right.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
    fig.suptitle(source_title(cfg, f"paired by seed: {readable(metric)}, {partition}"))
    fig.tight_layout()
    return fig
