"""The one plotting style, titles that say what the data is, one colour per strategy, and `save` (PNG + PDF,
stable names, synthetic mark).

Re-exported by `dermlib.report.plots`; figure modules import these from here so that none imports another's figures.
Every figure that tells strategies apart by colour reads `strategy_colours` (and `strategy_hatch` /
`strategy_marker` for bars and curves), so a strategy has one colour in every figure; the controls (D, M+G, M+Gs and
any strategy that reads a control's notes) are greys, hatched in bars and marked on curves, so they are never taken
for the paper's strategies.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any, Iterable

import matplotlib.pyplot as plt
import seaborn as sns
from matplotlib.colors import to_rgb

from dermlib.grammar import CONTROL_STRATEGIES, is_control

SYNTHETIC_MARK = "SynthDerm (synthetic data) - not the paper's results"
MARK_GID = "synthetic-mark"

# Okabe-Ito (colourblind-safe) for the paper's grid; greys for dermlib's controls
STRATEGY_COLOURS: dict[str, str] = {"Img": "#0072B2", "M": "#E69F00", "M+P1": "#009E73", "M+P2": "#CC79A7",
                                    "P3": "#D55E00", "D": "#4d4d4d", "M+G": "#8c8c8c", "M+Gs": "#bdbdbd"}
# further colourblind-safe colours (Okabe-Ito's sky blue, then Paul Tol's muted scheme) for strategies not named
# above, and further greys for unnamed controls (combinations that read a control's notes)
EXTRA_COLOURS = ("#56B4E9", "#332288", "#88CCEE", "#117733", "#999933", "#882255", "#44AA99", "#AA4499", "#DDCC77")
EXTRA_GREYS = ("#6e6e6e", "#a6a6a6", "#5a5a5a", "#b5b5b5")
CONTROL_HATCH = "///"
CONTROL_MARKERS = {"D": "o", "M+G": "s", "M+Gs": "^"}


def is_control_strategy(name: str) -> bool:
    """Whether `name` is (or reads) a control's notes; names outside the strategy grammar are not controls."""
    if name in CONTROL_STRATEGIES:
        return True
    try:
        return is_control(str(name))
    except ValueError:
        return False


def strategy_colours(names: Iterable[str]) -> dict[str, str]:
    """A fixed colour (hex) per strategy: `STRATEGY_COLOURS` for the named ones; any other name gets a colour of
    `EXTRA_COLOURS` (a grey of `EXTRA_GREYS` for a control) chosen by a stable hash of the name, so it is the same in
    every figure (the next free one if two names of one call collide)."""
    out: dict[str, str] = {}
    for name in dict.fromkeys(str(n) for n in names):
        if name in STRATEGY_COLOURS:
            out[name] = STRATEGY_COLOURS[name]
            continue
        pool = EXTRA_GREYS if is_control_strategy(name) else EXTRA_COLOURS
        start = zlib.crc32(name.encode("utf-8")) % len(pool)
        taken = set(out.values())
        free = [pool[(start + k) % len(pool)] for k in range(len(pool)) if pool[(start + k) % len(pool)] not in taken]
        out[name] = free[0] if free else pool[start]
    return out


def strategy_hatch(name: str) -> str:
    """Bars of a control are hatched, the paper's strategies plain."""
    return CONTROL_HATCH if is_control_strategy(name) else ""


def strategy_marker(name: str) -> str | None:
    """Curves of a control carry a marker (one per control), the paper's strategies none."""
    if not is_control_strategy(name):
        return None
    return CONTROL_MARKERS.get(name, "D")


def lighter(colour: Any, amount: float = 0.55) -> tuple[float, float, float]:
    """`colour` mixed with white (`amount` of white): the second level of a strategy's pair of bars."""
    r, g, b = to_rgb(colour)
    return (r + (1 - r) * amount, g + (1 - g) * amount, b + (1 - b) * amount)


def strategy_legend_handles(names: Iterable[str], kind: str = "patch") -> list[Any]:
    """Legend entries in the strategies' colours: patches (hatched for controls) or lines (marked for controls);
    a control's entry says so."""
    colours = strategy_colours(names)
    handles = []
    for name, colour in colours.items():
        label = f"{name} (control)" if is_control_strategy(name) else name
        if kind == "line":
            handles.append(plt.Line2D([], [], color=colour, marker=strategy_marker(name), ms=4, label=label))
        else:
            handles.append(plt.Rectangle((0, 0), 1, 1, facecolor=colour, hatch=strategy_hatch(name),
                                         edgecolor="white", label=label))
    return handles


# how a figure names a metric or a column: never snake_case on a page
READABLE = {"kappa": "Cohen's κ", "balanced_accuracy": "balanced accuracy", "macro_auroc": "macro AUROC",
            "map_i2t": "mAP image→text", "map_t2i": "mAP text→image", "paired_cosine": "paired cosine",
            "map_i2t_within_source": "mAP image→text (within source)",
            "map_t2i_within_source": "mAP text→image (within source)",
            "paired_cosine_above_chance": "paired cosine above chance", "source_only_map": "source-only mAP",
            "contradiction_rate": "contradicts metadata", "unsupported_attribute_rate": "states an absent attribute",
            "colors_precision": "colour precision", "colors_recall": "colour recall",
            "structures_precision": "structure precision", "structures_recall": "structure recall",
            "vocab_adherence": "vocabulary adherence"}


def readable(name: str) -> str:
    """A metric or column name as a figure prints it: `READABLE`, else underscores as spaces and i2t/t2i as
    arrows ("probe_kappa" -> "probe kappa", "recall@5_i2t" -> "recall@5 image→text")."""
    if name in READABLE:
        return READABLE[name]
    words = str(name).replace("_i2t", " image→text").replace("_t2i", " text→image")
    return words.replace("_", " ")


def setup_style() -> None:
    """The one plotting style used by every figure."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 150, "savefig.bbox": "tight", "hatch.color": "white",
                         "hatch.linewidth": 0.8})


def source_title(cfg: dict[str, Any], title: str) -> str:
    """Prefix a title with what the data is: SynthDerm for synthetic profiles, real datasets otherwise."""
    return f"SynthDerm (synthetic): {title}" if cfg.get("synthetic") else title


def figure_paths(cfg: dict[str, Any], name: str) -> tuple[Path, Path]:
    """Where `save` writes figure `name`: `<figures_dir>/<name>.png` and `.pdf`."""
    out = Path(cfg["figures_dir"])
    return out / f"{name}.png", out / f"{name}.pdf"


def place_mark(fig: plt.Figure, text: str = SYNTHETIC_MARK, pad_in: float = 0.06) -> plt.Text:
    """Stamp `text` under everything else the figure draws, right-aligned with its right edge: the tight bounding
    box of every other artist (axes, tick and axis labels, legends, titles) is measured first and the mark placed
    below it, so it can overlap none of them; a tight save (`savefig.bbox`) grows the page to hold it. Placed again
    (not added twice) when the figure already has it."""
    marks = [t for t in fig.texts if t.get_text() == text]
    for extra in marks[1:]:
        extra.remove()
    mark = marks[0] if marks else fig.text(0, 0, text, fontsize=7, color="0.4", alpha=0.9, gid=MARK_GID)
    mark.set_visible(False)
    fig.canvas.draw()  # lays the figure out as it will be saved (tick labels, legends, tight_layout)
    renderer = fig.canvas.get_renderer() if hasattr(fig.canvas, "get_renderer") else fig._get_renderer()
    box = fig.get_tightbbox(renderer)  # inches, without the hidden mark
    width, height = fig.get_size_inches()
    mark.set(x=box.x1 / width, y=(box.y0 - pad_in) / height, ha="right", va="top", visible=True)
    return mark


def save(fig: plt.Figure, cfg: dict[str, Any], name: str) -> None:
    """Write `fig` as PNG, and PDF unless the config's `pdf_figures` is off (the lab), under its stable name
    (synthetic figures stamped below everything else, no timestamps in the files).

    Returns nothing, so a notebook cell that ends with `save(...)` shows the figure itself, not a path.
    """
    png, pdf = figure_paths(cfg, name)
    png.parent.mkdir(parents=True, exist_ok=True)
    if cfg.get("synthetic"):
        place_mark(fig)
    fig.savefig(png, bbox_inches="tight", metadata={"Software": None})
    if cfg.get("pdf_figures", True):
        fig.savefig(pdf, bbox_inches="tight", metadata={"Creator": None, "Producer": None, "CreationDate": None})
