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
from dermlib.plotstyle import setup_style, source_title

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
