"""Figures and display tables for the note audit (notebook 02); figures are Figures, saved with dermlib.plotstyle.save."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from PIL import Image

from dermlib.data.schema import load_attributes
from dermlib.notes.audit import marked_phrases
from dermlib.plotstyle import setup_style, source_title, strategy_colours, strategy_hatch, strategy_legend_handles

FIELDS = ("age", "sex", "site", "diagnosis")
FLAG_COLOURS = {"correct": "#4c9a6a", "mixed": "#e0a458", "contradicted": "#c8553d", "absent": "#bdbdbd"}


def plot_consistency(summary: pd.DataFrame, cfg: dict[str, Any]) -> plt.Figure:
    """Per field, the share of notes that state it correctly, contradict it, or leave it out, per strategy."""
    setup_style()
    fig, axes = plt.subplots(1, len(FIELDS), figsize=(3.2 * len(FIELDS), 3.4), sharey=True)
    for ax, field in zip(axes, FIELDS):
        bottom = pd.Series(0.0, index=summary["strategy"])
        for flag, colour in FLAG_COLOURS.items():
            column = f"{field}_{flag}"
            if column not in summary.columns:
                continue
            values = summary.set_index("strategy")[column].fillna(0.0)
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


HALLUCINATION_MEASURES = {  # (panel, direction): column -> tick label
    "higher": {"colors_precision": "colour\nprecision", "colors_recall": "colour\nrecall",
               "structures_precision": "structure\nprecision", "structures_recall": "structure\nrecall",
               "vocab_adherence": "vocabulary\nadherence"},
    "lower": {"contradiction_rate": "contradicts\nmetadata",
              "unsupported_attribute_rate": "states an\nabsent attribute"},
}
PANEL_TITLES = {"higher": "↑ higher is better", "lower": "↓ lower is better"}
ZERO_STUB = 0.012  # a measured 0 is drawn as a stub this high (labelled "0"); not measurable (NaN) draws no bar
SMALL = 0.05  # positive values below this are printed on their bar


def plot_hallucination(summary: pd.DataFrame, cfg: dict[str, Any]) -> plt.Figure:
    """Attribute precision/recall against ground truth and vocabulary adherence (higher is better, left), and
    the rates of contradicting the metadata and stating an absent attribute (lower is better, right), per strategy
    in its colour (controls hatched). A measured 0 is a stub labelled "0"; "n/a" without a bar: not measurable (a
    strategy that states no attribute has no precision)."""
    panels = {d: {c: t for c, t in m.items() if c in summary.columns} for d, m in HALLUCINATION_MEASURES.items()}
    panels = {d: m for d, m in panels.items() if m}
    if not panels:
        raise ValueError(f"summary has none of the audit's attribute measures (has {list(summary.columns)})")
    setup_style()
    strategies = [str(s) for s in summary["strategy"]]
    colours = strategy_colours(strategies)
    table = summary.set_index(summary["strategy"].astype(str))
    fig, axes = plt.subplots(1, len(panels), figsize=(2.0 + 1.7 * sum(map(len, panels.values())), 4.0), sharey=True,
                             squeeze=False, gridspec_kw={"width_ratios": [len(m) for m in panels.values()]})
    width = 0.8 / len(strategies)
    for ax, (direction, measures) in zip(axes[0], panels.items()):
        for g, column in enumerate(measures):
            for k, strategy in enumerate(strategies):
                x = g + (k - (len(strategies) - 1) / 2) * width
                value = float(table.loc[strategy, column])
                if np.isnan(value):
                    ax.text(x, 0.02, "n/a", rotation=90, ha="center", va="bottom", fontsize=6.5, style="italic",
                            color="0.35", gid=f"na:{column}:{strategy}")
                    continue
                ax.bar(x, value if value else ZERO_STUB, width, color=colours[strategy], edgecolor="white", lw=0.5,
                       hatch=strategy_hatch(strategy) or None, gid=f"bar:{column}:{strategy}")
                if value == 0:
                    ax.text(x, ZERO_STUB + 0.01, "0", ha="center", va="bottom", fontsize=7,
                            gid=f"zero:{column}:{strategy}")
                elif value < SMALL:  # a bar too short to read: its value printed, so it is not taken for a 0
                    ax.text(x, value + 0.01, f"{value:.2f}".lstrip("0"), rotation=90, ha="center", va="bottom",
                            fontsize=6.5)
        ax.set_xticks(range(len(measures)), list(measures.values()), fontsize=9)
        ax.set_xlim(-0.5, len(measures) - 0.5)
        ax.set_title(PANEL_TITLES[direction])
        ax.grid(axis="x", visible=False)
    axes[0, 0].set(ylim=(0, 1.05), ylabel="rate")
    axes[0, -1].legend(handles=strategy_legend_handles(strategies), title="strategy", loc="upper left",
                       bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=9)
    axes[0, -1].text(1.02, 0.0, "0: measured zero\nn/a: not measurable", transform=axes[0, -1].transAxes,
                     fontsize=7.5, color="0.3", va="bottom")
    fig.suptitle(source_title(cfg, "note attributes against the drawn truth"))
    fig.tight_layout()
    return fig


VERDICT_STYLE = {"supported": "background:#cdeccf", "contradicted": "background:#f4b6a6;font-weight:bold",
                 "unsupported": "background:#fbe3a1", "unchecked": "background:#e4e4e4"}


def examples_with_every_strategy(notes: pd.DataFrame, manifest: pd.DataFrame, n: int = 4, seed: int = 0) -> list[str]:
    """`n` sample ids (seeded, one per class as far as classes last) whose note is `ok` for every strategy."""
    ok = notes[notes["status"] == "ok"]
    complete = ok.groupby("sample_id")["strategy"].nunique()
    ids = set(complete[complete == notes["strategy"].nunique()].index.astype(str))
    pool = manifest[manifest["sample_id"].astype(str).isin(ids)].sort_values("sample_id")
    rng = np.random.default_rng(seed)
    chosen: list[str] = []
    for _, group in pool.groupby("label", sort=True):
        chosen.append(str(group["sample_id"].iloc[rng.integers(len(group))]))
    return sorted(chosen, key=lambda sid: rng.random())[:n]


def _mark(note: str, row: pd.Series) -> str:
    """The note as HTML with each checkable phrase highlighted by its verdict (hover shows kind and verdict)."""
    out, at = [], 0
    for start, end, kind, verdict in marked_phrases(note, row):
        out.append(html.escape(note[at:start]))
        out.append(f'<mark style="{VERDICT_STYLE[verdict]}" title="{kind}: {verdict}">{html.escape(note[start:end])}</mark>')
        at = end
    out.append(html.escape(note[at:]))
    return "".join(out)


def shown_value(value: Any) -> str:
    """A metadata value as the card prints it: whole numbers without a decimal point (age 54, not 54.0)."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return (", ".join(map(str, value)) or "none") if isinstance(value, list) else str(value)


def _png(image: np.ndarray) -> str:
    """An RGB uint8 array as an inline PNG data URI."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def note_cards(sample_ids: list[str], manifest: pd.DataFrame, notes: pd.DataFrame,
               images: dict[str, np.ndarray]) -> str:
    """HTML: per sample, its image, metadata and drawn ground truth beside its note from every strategy in `notes`
    (however many), with phrases marked green (agrees), red (contradicts the metadata: age, sex, site, diagnosis),
    amber (an attribute the image does not have), grey (nothing to check it against)."""
    rows = manifest.set_index(manifest["sample_id"].astype(str))
    legend = " ".join(f'<mark style="{style}">{verdict}</mark>' for verdict, style in VERDICT_STYLE.items())
    parts = [f'<div style="font-family:sans-serif;font-size:13px;max-width:1100px"><p>Marks: {legend}</p>']
    for sid in sample_ids:
        row = rows.loc[sid]
        attrs = load_attributes(row.get("attributes"))
        truth = {k: v for k, v in attrs.items() if k in ("colors", "structures", "border", "asymmetry", "diameter_mm")}
        meta = ", ".join(f"{k} {shown_value(row.get(k))}" for k in ("label", "age", "sex", "site", "fitzpatrick")
                         if pd.notna(row.get(k)))
        truth_html = "<br>".join(f"<b>{html.escape(k)}</b>: {html.escape(shown_value(v))}" for k, v in truth.items())
        img = f'<img src="{_png(images[sid])}" width="160" alt="{html.escape(sid)}">' if sid in images else "(no image)"
        mine = notes[(notes["sample_id"].astype(str) == sid) & (notes["status"] == "ok")]
        cells = "".join(f'<tr><td style="vertical-align:top;padding:4px 8px"><b>{html.escape(str(r.strategy))}</b></td>'
                        f'<td style="padding:4px 8px;white-space:normal">{_mark(str(r.note), row)}</td></tr>'
                        for r in mine.itertuples(index=False))
        parts.append(f'<hr><table style="border-collapse:collapse"><tr><td style="vertical-align:top;width:180px">{img}'
                     f'<br><small>{html.escape(sid)}<br>{html.escape(meta)}<br>{truth_html}</small></td>'
                     f'<td style="vertical-align:top"><table>{cells}</table></td></tr></table>')
    parts.append("</div>")
    return "\n".join(parts)


def audit_sentences(summary: pd.DataFrame) -> str:
    """What the audit found, in words rendered from its numbers (Markdown), one bullet per strategy."""
    lines = []
    for row in summary.itertuples(index=False):
        r = row._asdict()
        parts = [f"contradicts the metadata in {r['contradiction_rate']:.0%} of notes",
                 f"names the right diagnosis in {r['diagnosis_correct']:.0%}"]
        if pd.notna(r.get("unsupported_attribute_rate")):
            parts.append(f"states an attribute the image does not have in {r['unsupported_attribute_rate']:.0%}")
        if pd.notna(r.get("colors_precision")):
            parts.append(f"colour precision {r['colors_precision']:.2f}, recall {r['colors_recall']:.2f}")
        if pd.notna(r.get("unique_notes")):
            parts.append(f"{r['unique_notes']:.0%} of its notes are distinct")
        lines.append(f"- **{r['strategy']}** ({r['n_notes']} notes): " + "; ".join(parts) + ".")
    return "\n".join(lines) + "\n"
