"""Learning curves of the grid's runs (notebook 03), re-exported by `dermlib.report.plots`.

Runs stop early at different epochs, so a late epoch's mean is over the few seeds still training: each curve and
its band are drawn where at least half of the strategy's seeds still train, and fainter (no band) after that;
one panel shows how many seeds train at each epoch.
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import MaxNLocator

from dermlib.grammar import IMG
from dermlib.plotstyle import setup_style, source_title, strategy_colours, strategy_legend_handles, strategy_marker

LOSS_TERMS = {"ce_text": "note cross-entropy", "l1": "L1 (image vs note embedding)",
              "cosine": "1 - cosine (image, own note)", "nt_xent": "NT-Xent (contrastive)"}
# validation alignment per epoch (history.csv, text runs): what question (c) and (b) measure, as training goes on
DYNAMICS = {"val_paired_cosine": "val paired cosine\n(image, own note)",
            "val_paired_cosine_above_chance_within_source": "val paired cosine above its\nsource's other notes",
            "val_map_i2t_within_source": "val mAP image→text\nwithin each source"}
TAIL_ALPHA = 0.35  # the faint part of a curve: fewer than half of the seeds still train


def stack_histories(histories: dict[Any, pd.DataFrame]) -> pd.DataFrame:
    """One long table of training histories; keys are (strategy, seed), "<strategy> seed <k>" or a strategy (seed 0)."""
    if not histories:
        raise ValueError("no histories given (expected {(strategy, seed): history DataFrame})")
    frames = []
    for key, hist in histories.items():
        if isinstance(key, tuple):
            strategy, seed = key
        elif " seed " in str(key):
            strategy, seed = str(key).rsplit(" seed ", 1)
        else:
            strategy, seed = key, 0
        missing = [c for c in ("epoch", "train_loss", "val_kappa") if c not in hist.columns]
        if missing:
            raise ValueError(f"history of run {key!r} lacks columns {missing} (has {list(hist.columns)})")
        frames.append(hist.assign(strategy=str(strategy), seed=int(seed)))
    return pd.concat(frames, ignore_index=True)


def seeds_per_epoch(long: pd.DataFrame, column: str = "train_loss") -> pd.DataFrame:
    """Per strategy and epoch, how many seeds have a value of `column` (still train) and how many seeds it has."""
    running = long[long[column].notna()].groupby(["strategy", "epoch"])["seed"].nunique().rename("seeds")
    total = long.groupby("strategy")["seed"].nunique().rename("of")
    return running.reset_index().merge(total.reset_index(), on="strategy")


def _band(ax: plt.Axes, long: pd.DataFrame, column: str, color: Any, label: str | None, ls: str = "-",
          marker: str | None = None) -> None:
    """Mean over seeds per epoch with a +-1 sd band, solid while at least half of the seeds have a value; the
    epochs after the last such one are drawn faint, without a band (a mean over a few seeds). `marker` marks
    every other epoch (the controls' curves)."""
    if column not in long.columns or not long[column].notna().any():
        return
    g = long.groupby("epoch")[column].agg(["mean", "std", "count"]).reset_index()
    enough = 2 * g["count"] >= long["seed"].nunique()
    last = g.loc[enough, "epoch"].max() if enough.any() else g["epoch"].min()
    main, tail = g[g["epoch"] <= last], g[g["epoch"] >= last]
    ax.plot(main["epoch"], main["mean"], color=color, ls=ls, label=label, marker=marker, ms=3.5, markevery=2)
    ax.fill_between(main["epoch"], main["mean"] - main["std"].fillna(0), main["mean"] + main["std"].fillna(0),
                    color=color, alpha=0.15, lw=0)
    if len(tail) > 1:
        ax.plot(tail["epoch"], tail["mean"], color=color, ls=ls, lw=1, alpha=TAIL_ALPHA, label="_few seeds")


def _seeds_panel(ax: plt.Axes, long: pd.DataFrame, order: list[str], colors: dict[str, Any]) -> None:
    """How many seeds of each strategy still train at each epoch (early stopping ends runs at different epochs)."""
    counts = seeds_per_epoch(long)
    for k, strategy in enumerate(order):  # drawn thinner one after another, so coinciding steps stay visible
        mine = counts[counts["strategy"] == strategy]
        ax.step(mine["epoch"], mine["seeds"], where="mid", color=colors[strategy], lw=max(3.2 - 0.7 * k, 1.0),
                label="_seeds")
    half = counts.groupby("strategy")["of"].first().max() / 2
    ax.axhline(half, color="0.4", ls=":", lw=1, label="_half")
    ax.text(counts["epoch"].max(), half, "half of the seeds: below, curves faint, no band ", fontsize=7,
            va="bottom", ha="right", color="0.3")
    ax.set(title="seeds still training\n(early stopping)", ylabel="seeds", ylim=(0, counts["of"].max() + 0.5))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def learning_curves(histories: pd.DataFrame, cfg: dict[str, Any]) -> plt.Figure:
    """Mean +- sd over seeds per strategy: image cross-entropy (all runs, comparable), the multimodal total loss
    (Img apart: its total loss is only the cross-entropy), validation kappa, the seeds still training, then each
    alignment term, then (where the histories hold them) the validation alignment per epoch (`DYNAMICS`). Curves turn
    faint where fewer than half of a strategy's seeds still train."""
    setup_style()
    order = [s for s in cfg["eval"]["strategies"] if s in set(histories["strategy"])]
    order += sorted(set(histories["strategy"]) - set(order))
    colors = strategy_colours(order)
    terms = [t for t in LOSS_TERMS if f"train_{t}" in histories.columns and histories[f"train_{t}"].notna().any()]
    dynamics = [c for c in DYNAMICS if c in histories.columns and histories[c].notna().any()]
    ncols = max(4, len(terms))
    nrows = 1 + bool(terms) + bool(dynamics)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols + 0.5, 3.5 * nrows), squeeze=False)
    top, bottom = axes[0], (axes[1] if terms else [])
    aligned = axes[-1] if dynamics else []
    for strategy in order:
        runs = histories[histories["strategy"] == strategy]
        c, m = colors[strategy], strategy_marker(strategy)
        image_ce = "train_ce_image" if "train_ce_image" in runs and runs["train_ce_image"].notna().any() else "train_loss"
        _band(top[0], runs, image_ce, c, strategy, marker=m)
        image_val = "val_image_loss" if "val_image_loss" in runs and runs["val_image_loss"].notna().any() else "val_loss"
        _band(top[0], runs, image_val, c, None, ls="--", marker=m)
        if strategy != IMG:
            _band(top[1], runs, "train_loss", c, None, marker=m)
            _band(top[1], runs, "val_loss", c, None, ls="--", marker=m)
        _band(top[2], runs, "val_kappa", c, None, marker=m)
        for ax, term in zip(bottom, terms):
            if strategy != IMG:
                _band(ax, runs, f"train_{term}", c, None, marker=m)
        for ax, column in zip(aligned, dynamics):
            if strategy != IMG:
                _band(ax, runs, column, c, None, marker=m)
    _seeds_panel(top[3], histories, order, colors)
    top[0].set(title="image cross-entropy\n(solid: train, dashed: val)", ylabel="loss")
    top[1].set(title="multimodal total loss\n(solid: train, dashed: val)", ylabel="loss")
    top[2].set(title="validation Cohen's κ\n(image branch)", ylabel="κ")
    for ax, term in zip(bottom, terms):
        ax.set(title=f"train: {LOSS_TERMS[term]}", ylabel="loss")
    for ax, column in zip(aligned, dynamics):
        ax.set(title=DYNAMICS[column], ylabel="value")
    for ax in list(top[4:]) + list(bottom[len(terms):]) + list(aligned[len(dynamics):]):
        ax.set_axis_off()
    for ax in axes.ravel():
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    seeds = histories.groupby("strategy")["seed"].nunique()
    handles = strategy_legend_handles(order, kind="line")
    for handle, s in zip(handles, order):
        control = ", control" if strategy_marker(s) else ""
        handle.set_label(f"{s} ({seeds[s]} seed{'s' if seeds[s] > 1 else ''}{control})")
    top[3].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False,
                  title="strategy")  # outside the axes: it hides no curve
    fig.suptitle(source_title(cfg, "learning curves (mean ± sd over seeds)"))
    fig.tight_layout()
    return fig
