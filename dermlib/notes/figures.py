"""Figures and display tables for the note audit (notebook 02)."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from dermlib.plots import setup_style, source_title

FIELDS = ("age", "sex", "site", "diagnosis")
FLAG_COLOURS = {"correct": "#4c9a6a", "contradicted": "#c8553d", "absent": "#bdbdbd"}


def side_by_side(notes: pd.DataFrame, sample_id: str | None = None) -> pd.DataFrame:
    """One sample's note per strategy (the first sample with every strategy `ok` when none is given)."""
    ok = notes[notes["status"] == "ok"]
    if sample_id is None:
        complete = ok.groupby("sample_id")["strategy"].nunique()
        full = complete[complete == notes["strategy"].nunique()]
        if full.empty:
            raise ValueError("no sample has an ok note for every strategy")
        sample_id = str(full.index[0])
    chosen = notes[notes["sample_id"] == sample_id]
    return chosen.set_index("strategy")[["note", "status", "cached"]].rename_axis(f"sample {sample_id}")


def plot_consistency(summary: pd.DataFrame, cfg: dict[str, Any]) -> plt.Figure:
    """Per field, the share of notes that state it correctly, contradict it, or leave it out, per strategy."""
    setup_style()
    fig, axes = plt.subplots(1, len(FIELDS), figsize=(3.2 * len(FIELDS), 3.4), sharey=True)
    for ax, field in zip(axes, FIELDS):
        bottom = pd.Series(0.0, index=summary["strategy"])
        for flag, colour in FLAG_COLOURS.items():
            values = summary.set_index("strategy")[f"{field}_{flag}"].fillna(0.0)
            ax.bar(values.index, values, bottom=bottom, color=colour, label=flag)
            bottom += values
        ax.set_title(field)
        ax.set_ylim(0, 1)
        ax.tick_params(axis="x", rotation=30)
    axes[0].set_ylabel("share of notes")
    axes[-1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.suptitle(source_title(cfg, "metadata consistency of the notes"))
    fig.tight_layout()
    return fig


def plot_hallucination(summary: pd.DataFrame, cfg: dict[str, Any]) -> plt.Figure:
    """Attribute precision/recall against ground truth, vocabulary adherence and hallucination rates per strategy."""
    setup_style()
    columns = {"colors_precision": "colour precision", "colors_recall": "colour recall",
               "structures_precision": "structure precision", "structures_recall": "structure recall",
               "vocab_adherence": "vocabulary adherence", "contradiction_rate": "contradicts metadata",
               "unsupported_attribute_rate": "states an absent attribute"}
    long = summary.melt(id_vars="strategy", value_vars=list(columns), var_name="measure", value_name="value")
    long["measure"] = long["measure"].map(columns)
    table = long.pivot(index="measure", columns="strategy", values="value").loc[list(columns.values())]
    fig, ax = plt.subplots(figsize=(9, 3.8))
    table[list(summary["strategy"])].plot.bar(ax=ax, width=0.8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("rate (empty bar: not measurable)")
    ax.set_xlabel("")
    ax.tick_params(axis="x", rotation=25)
    ax.legend(title="strategy", loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.set_title(source_title(cfg, "attribute hallucination audit"))
    fig.tight_layout()
    return fig
