"""Figures of notebook 04 (evaluation); the results figures of notebook 05 are `dermlib.report.plots`."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from dermlib.plotstyle import setup_style, source_title


def confusion(matrix: pd.DataFrame, cfg: dict[str, Any], title: str) -> plt.Figure:
    """A confusion matrix (rows true, columns predicted), counts annotated, rows shaded by recall."""
    setup_style()
    counts = matrix.to_numpy()
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    sns.heatmap(share, annot=counts, fmt="d", cmap="Blues", vmin=0, vmax=1, cbar_kws={"label": "row share"},
                xticklabels=matrix.columns, yticklabels=matrix.index, ax=ax)
    ax.grid(False)
    ax.set(xlabel="predicted", ylabel="true", title=source_title(cfg, title))
    return fig
