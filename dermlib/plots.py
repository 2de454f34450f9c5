"""Figures: one style, stable file names, and a visible "SynthDerm (synthetic)" mark on every demo figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

SYNTHETIC_MARK = "SynthDerm (synthetic data) - not the paper's results"


def setup_style() -> None:
    """The one plotting style used by every figure."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 150, "savefig.bbox": "tight"})


def source_title(cfg: dict[str, Any], title: str) -> str:
    """Prefix a title with what the data is: SynthDerm for synthetic profiles, real datasets otherwise."""
    return f"SynthDerm (synthetic): {title}" if cfg.get("synthetic") else title


def savefig(fig: plt.Figure, cfg: dict[str, Any], name: str, *, pdf: bool = False) -> Path:
    """Save `fig` as `<figures_dir>/<name>.png` (and .pdf), stamping synthetic figures; returns the PNG path."""
    out = Path(cfg["figures_dir"])
    out.mkdir(parents=True, exist_ok=True)
    if cfg.get("synthetic"):
        fig.text(0.99, 0.005, SYNTHETIC_MARK, ha="right", va="bottom", fontsize=7, color="0.4", alpha=0.9)
    png = out / f"{name}.png"
    fig.savefig(png, metadata={"Software": None})
    if pdf:
        fig.savefig(out / f"{name}.pdf", metadata={"Creator": None, "Producer": None, "CreationDate": None})
    return png


# --------------------------------------------------------------------------------------------------------------
# Figures of the pipeline. Each takes plain DataFrames (the results table, histories, audit summary) and the
# config, draws one figure and saves it under a stable name via `savefig` (PNG + PDF); each returns the PNG path.
# --------------------------------------------------------------------------------------------------------------

_HISTORY_CORE = ("epoch", "train_loss", "val_loss", "val_kappa")


def plot_learning_curves(histories: dict[str, pd.DataFrame], cfg: dict[str, Any], name: str = "03_learning_curves") -> Path:
    """Total loss (train/val), validation kappa and the per-term training losses per epoch, one line per run."""
    if not histories:
        raise ValueError("plot_learning_curves: no histories given (expected {run name: history DataFrame})")
    for run, hist in histories.items():
        missing = [c for c in ("epoch", "train_loss", "val_kappa") if c not in hist.columns]
        if missing:
            raise ValueError(f"history of run {run!r} lacks columns {missing} (has {list(hist.columns)})")
    setup_style()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    palette = dict(zip(histories, sns.color_palette("colorblind", len(histories))))
    for run, hist in histories.items():
        color = palette[run]
        axes[0].plot(hist["epoch"], hist["train_loss"], color=color, marker="o", label=f"{run} train")
        if "val_loss" in hist.columns and hist["val_loss"].notna().any():
            axes[0].plot(hist["epoch"], hist["val_loss"], color=color, marker="s", ls="--", label=f"{run} val")
        axes[1].plot(hist["epoch"], hist["val_kappa"], color=color, marker="o", label=run)
        terms = [c for c in hist.columns if c not in _HISTORY_CORE and pd.api.types.is_numeric_dtype(hist[c])
                 and hist[c].notna().any() and not c.startswith("val_") and c not in ("lr", "seconds", "time")]
        for term, style in zip(terms, ["-", "--", ":", "-.", (0, (3, 1, 1, 1)), (0, (5, 2))] * 3):
            axes[2].plot(hist["epoch"], hist[term], color=color, ls=style, label=f"{run} {term}")
    axes[0].set(title="total loss", xlabel="epoch", ylabel="loss")
    axes[1].set(title="validation Cohen's kappa", xlabel="epoch", ylabel="kappa")
    axes[2].set(title="loss terms (train)", xlabel="epoch", ylabel="loss")
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, ncol=1 + len(ax.get_legend_handles_labels()[0]) // 12)
    fig.suptitle(source_title(cfg, "learning curves"))
    fig.tight_layout()
    png = savefig(fig, cfg, name, pdf=True)
    plt.close(fig)
    return png
