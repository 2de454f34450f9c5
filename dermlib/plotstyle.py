"""The one plotting style, titles that say what the data is, and `save` (PNG + PDF, stable names, synthetic mark).

Re-exported by `dermlib.report.plots`; figure modules import these from here so that none imports another's figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import seaborn as sns

SYNTHETIC_MARK = "SynthDerm (synthetic data) - not the paper's results"


def setup_style() -> None:
    """The one plotting style used by every figure."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 150, "savefig.bbox": "tight"})


def source_title(cfg: dict[str, Any], title: str) -> str:
    """Prefix a title with what the data is: SynthDerm for synthetic profiles, real datasets otherwise."""
    return f"SynthDerm (synthetic): {title}" if cfg.get("synthetic") else title


def figure_paths(cfg: dict[str, Any], name: str) -> tuple[Path, Path]:
    """Where `save` writes figure `name`: `<figures_dir>/<name>.png` and `.pdf`."""
    out = Path(cfg["figures_dir"])
    return out / f"{name}.png", out / f"{name}.pdf"


def save(fig: plt.Figure, cfg: dict[str, Any], name: str) -> None:
    """Write `fig` as PNG + PDF under its stable name (synthetic figures stamped, no timestamps in the files).

    Returns nothing, so a notebook cell that ends with `save(...)` shows the figure itself, not a path.
    """
    png, pdf = figure_paths(cfg, name)
    png.parent.mkdir(parents=True, exist_ok=True)
    if cfg.get("synthetic") and SYNTHETIC_MARK not in [t.get_text() for t in fig.texts]:
        fig.text(0.99, 0.005, SYNTHETIC_MARK, ha="right", va="bottom", fontsize=7, color="0.4", alpha=0.9)
    fig.savefig(png, metadata={"Software": None})
    fig.savefig(pdf, metadata={"Creator": None, "Producer": None, "CreationDate": None})
