"""Figures of the data-preparation step (notebook 01): counts, metadata completeness, a gallery, crop examples.

Each function returns a matplotlib Figure; the notebook saves it with dermlib.plotstyle.save and shows it inline. Titles
go through dermlib.plotstyle.source_title, so SynthDerm figures say they are synthetic.
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.patches import Rectangle

from dermlib.data.labels import ISIC8
from dermlib.data.preprocess import ImageError, load_rgb, preprocess_image
from dermlib.data.schema import load_attributes
from dermlib.plotstyle import setup_style, source_title

METADATA_FIELDS = ["age", "sex", "site", "fitzpatrick", "lesion_id", "patient_id"]


def class_source_counts(manifest: pd.DataFrame) -> pd.DataFrame:
    """Images per source (rows, sorted) x class (columns in ISIC8 order, then any other), with a total column."""
    table = pd.crosstab(manifest["source"], manifest["label"])
    cols = [c for c in ISIC8 if c in table.columns] + sorted(c for c in table.columns if c not in ISIC8)
    table = table.reindex(columns=cols).sort_index()
    table["total"] = table.sum(axis=1)
    table.index.name, table.columns.name = "source", None
    return table


def metadata_completeness(manifest: pd.DataFrame) -> pd.DataFrame:
    """Fraction of rows with a value, per source x metadata field."""
    present = manifest[METADATA_FIELDS].notna().astype(float)
    return present.groupby(manifest["source"].to_numpy()).mean().sort_index()


def counts_heatmap(manifest: pd.DataFrame, cfg: dict[str, Any]) -> plt.Figure:
    """Heatmap of images per source x class, with the partition beside each source name."""
    setup_style()
    table = class_source_counts(manifest).drop(columns="total")
    if "partition" in manifest and manifest["partition"].notna().any():
        part = manifest.groupby("source")["partition"].first()
        table.index = [f"{s} ({part.get(s)})" for s in table.index]
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * table.shape[1], 0.9 + 0.4 * table.shape[0]))
    sns.heatmap(table, annot=True, fmt="d", cmap="Blues", cbar=False, ax=ax, linewidths=0.5)
    ax.set(xlabel="class", ylabel="", title=source_title(cfg, "images per source and class"))
    return fig


def completeness_heatmap(manifest: pd.DataFrame, cfg: dict[str, Any]) -> plt.Figure:
    """Heatmap of the fraction of rows that have each metadata field, per source."""
    setup_style()
    table = metadata_completeness(manifest)
    fig, ax = plt.subplots(figsize=(1.5 + 0.9 * table.shape[1], 0.9 + 0.4 * table.shape[0]))
    sns.heatmap(table, annot=True, fmt=".2f", cmap="Greens", vmin=0, vmax=1, cbar=False, ax=ax, linewidths=0.5)
    ax.set(xlabel="metadata field", ylabel="", title=source_title(cfg, "metadata completeness (fraction present)"))
    return fig


def gallery(manifest: pd.DataFrame, images: np.ndarray, index: pd.DataFrame, cfg: dict[str, Any],
            per_source: int = 6) -> plt.Figure:
    """Preprocessed images from the cache: one row per source, the first `per_source` cached rows of each."""
    setup_style()
    rows = index.merge(manifest[["sample_id", "source", "label"]], on="sample_id")
    sources = sorted(rows["source"].unique())
    height = 1.3 * len(sources) + 0.8
    fig, axes = plt.subplots(len(sources), per_source, figsize=(1.2 * per_source + 2.0, height), squeeze=False,
                             gridspec_kw={"left": 0.22, "right": 0.99, "top": 1 - 0.55 / height,
                                          "bottom": 0.25 / height, "wspace": 0.05, "hspace": 0.3})
    for i, source in enumerate(sources):
        chosen = rows[rows["source"] == source].head(per_source)
        for j in range(per_source):
            ax = axes[i, j]
            ax.set(xticks=[], yticks=[])  # no ticks: else each is laid out (slowly) before it is hidden
            ax.axis("off")
            if j < len(chosen):
                ax.imshow(images[int(chosen["row"].iloc[j])])
                ax.set_title(str(chosen["label"].iloc[j]), fontsize=7, pad=2)
        axes[i, 0].text(-0.08, 0.5, source, transform=axes[i, 0].transAxes, ha="right", va="center", fontsize=8)
    fig.suptitle(source_title(cfg, "preprocessed images per source"), y=1 - 0.1 / height)
    return fig


def _cached_rows(manifest: pd.DataFrame, index: pd.DataFrame) -> pd.DataFrame:
    """Manifest rows that are in the image cache, with their cache row number, in manifest order."""
    return manifest.merge(index[["sample_id", "row"]], on="sample_id", how="inner", sort=False)


def class_gallery(manifest: pd.DataFrame, images: np.ndarray, index: pd.DataFrame, cfg: dict[str, Any],
                  per_partition: int = 3, seed: int = 0) -> plt.Figure:
    """One row per class: `per_partition` internal images, then as many external ones (seeded draw), source named.

    Shows what domain shift looks like for one diagnosis: the same class from the training sources and from the
    external ones, side by side.
    """
    setup_style()
    rows = _cached_rows(manifest, index)
    labels = [c for c in ISIC8 if c in set(rows["label"])] + sorted(set(rows["label"]) - set(ISIC8))
    parts = [p for p in ("internal", "external") if p in set(rows["partition"])]
    n_cols = per_partition * len(parts)
    fig, axes = plt.subplots(len(labels), n_cols, figsize=(1.35 * n_cols + 1.2, 1.45 * len(labels) + 0.6),
                             squeeze=False)
    rng = np.random.default_rng(seed)
    for i, label in enumerate(labels):
        for k, part in enumerate(parts):
            pool = rows[(rows["label"] == label) & (rows["partition"] == part)]
            chosen = pool.iloc[np.sort(rng.choice(len(pool), min(per_partition, len(pool)), replace=False))]
            for j in range(per_partition):
                ax = axes[i, k * per_partition + j]
                ax.set(xticks=[], yticks=[])  # no ticks: else each is laid out (slowly) before it is hidden
                ax.axis("off")
                if j < len(chosen):
                    ax.imshow(images[int(chosen["row"].iloc[j])])
                    ax.set_title(str(chosen["source"].iloc[j]).replace("synthderm_", ""), fontsize=6, pad=2)
        axes[i, 0].text(-0.1, 0.5, label, transform=axes[i, 0].transAxes, ha="right", va="center", fontsize=9)
    for k, part in enumerate(parts):
        axes[0, k * per_partition + per_partition // 2].text(0.5, 1.22, part, transform=axes[0, k * per_partition
                                                             + per_partition // 2].transAxes, ha="center",
                                                             fontsize=10, weight="bold")
    fig.suptitle(source_title(cfg, "classes: internal vs external sources"), y=1.02)
    return fig


ATTRIBUTE_VALUES: dict[str, list[str]] = {
    "colors": ["light brown", "dark brown", "black", "blue-gray", "red", "white"],
    "structures": ["pigment network", "dots/globules", "streaks", "blue-whitish veil", "regression structures",
                   "vascular structures"],
}


SHORT_VALUES = {"pigment network": "network", "blue-whitish veil": "blue-white veil",
                "regression structures": "regression", "vascular structures": "vessels"}


def glossary_picks(manifest: pd.DataFrame, index: pd.DataFrame, per_value: int = 4) -> dict[tuple[str, str], list[int]]:
    """For every (kind, value) of `ATTRIBUTE_VALUES`, up to `per_value` positions in `_cached_rows(manifest, index)`
    of images whose drawn ground truth has it, no image twice in all (deterministic, no random draw).

    The values with the fewest such images choose first; each takes, in turn, the image ranked best by: a lesion not
    shown yet, dermoscopic (structures are a dermoscopic notion), a class not yet in its row, the fewest other
    colours and structures (the value stands out), the largest diameter, then manifest order.
    """
    rows = _cached_rows(manifest, index)
    attrs = [load_attributes(a) for a in rows["attributes"]]
    clinical = (rows["modality"] != "dermoscopic").to_numpy()
    busy = np.array([len(a.get("colors") or []) + len(a.get("structures") or []) for a in attrs])
    size = np.array([float(a.get("diameter_mm") or 0.0) for a in attrs])
    lesions = (rows["lesion_id"].astype(str).to_numpy() if "lesion_id" in rows
               else rows["sample_id"].astype(str).to_numpy())
    labels = rows["label"].astype(str).to_numpy()
    values = [(kind, v) for kind, vs in ATTRIBUTE_VALUES.items() for v in vs]
    have = {kv: [i for i, a in enumerate(attrs) if kv[1] in (a.get(kv[0]) or [])] for kv in values}
    used: set[int] = set()
    shown_lesions: set[str] = set()
    picks: dict[tuple[str, str], list[int]] = {}
    for kv in sorted(values, key=lambda kv: len(have[kv])):  # stable: ties keep ATTRIBUTE_VALUES order
        chosen: list[int] = []
        free = [i for i in have[kv] if i not in used]
        while free and len(chosen) < per_value:
            in_row = {labels[i] for i in chosen}
            best = min(free, key=lambda i: (lesions[i] in shown_lesions, clinical[i], labels[i] in in_row, busy[i],
                                            -size[i], i))
            chosen.append(best)
            free.remove(best)
            used.add(best)
            shown_lesions.add(lesions[best])
        picks[kv] = chosen
    return {kv: picks[kv] for kv in values}


def attribute_glossary(manifest: pd.DataFrame, images: np.ndarray, index: pd.DataFrame, cfg: dict[str, Any],
                       per_value: int = 4) -> plt.Figure:
    """What each visual attribute looks like: for every colour and structure, images whose ground truth has it,
    each image at most once in the figure (`glossary_picks`).

    Uses the SynthDerm drawn ground truth (`attributes.colors` / `attributes.structures`); dermoscopic images
    first, since structures are a dermoscopic notion. Each image artist's gid is `sample:<sample_id>`.
    """
    setup_style()
    rows = _cached_rows(manifest, index)
    picks = glossary_picks(manifest, index, per_value)
    groups = list(ATTRIBUTE_VALUES)
    n_rows = len(picks)
    cell, label_w, top_h, gap = 1.05, 1.25, 0.75, 0.3
    width = label_w + cell * per_value + 0.1
    height = top_h + cell * n_rows + gap * (len(groups) - 1) + 0.1
    fig = plt.figure(figsize=(width, height))
    ratios = []
    for k, kind in enumerate(groups):
        ratios += [1.0] * len(ATTRIBUTE_VALUES[kind]) + ([gap / cell] if k < len(groups) - 1 else [])
    grid = fig.add_gridspec(len(ratios), per_value, height_ratios=ratios, left=label_w / width, right=1 - 0.1 / width,
                            top=1 - top_h / height, bottom=0.1 / height, wspace=0.06, hspace=0.22)
    grid_row = 0
    for k, kind in enumerate(groups):
        for n, value in enumerate(ATTRIBUTE_VALUES[kind]):
            chosen = picks[(kind, value)]
            for j in range(per_value):
                ax = fig.add_subplot(grid[grid_row, j])
                ax.set(xticks=[], yticks=[])  # no ticks: else each is laid out (slowly) before it is hidden
                ax.axis("off")
                if j < len(chosen):
                    row = rows.iloc[chosen[j]]
                    ax.imshow(images[int(row["row"])], gid=f"sample:{row['sample_id']}")
                    ax.set_title(str(row["label"]), fontsize=6, pad=2)
                if j == 0:
                    ax.text(-0.08, 0.5, SHORT_VALUES.get(value, value), transform=ax.transAxes, ha="right",
                            va="center", fontsize=9)
                    if n == 0:
                        ax.text(-0.08, 1.18, "colours" if kind == "colors" else kind, transform=ax.transAxes,
                                ha="right", va="bottom", fontsize=10, weight="bold")
            grid_row += 1
        grid_row += k < len(groups) - 1  # the spacer row between colours and structures
    fig.suptitle(source_title(cfg, "attributes (drawn ground truth)"), y=1 - 0.12 / height, va="top")
    return fig


def crop_examples(manifest: pd.DataFrame, cfg: dict[str, Any], size: int, n: int = 4) -> plt.Figure:
    """Before/after preprocessing for up to `n` images (one per source, the first that is actually cropped): the
    original with its crop box (Otsu field of view for dermoscopy, annotated box for clinical photos) above the
    resized result."""
    setup_style()
    examples = []
    for _, rows in manifest.groupby("source", sort=True):  # one example per source, as long as sources last
        for row in rows.head(10).itertuples(index=False):
            try:
                after, info = preprocess_image(row.image_path, row.modality, load_attributes(row.attributes), size)
            except ImageError:
                continue
            if info["crop_method"] in ("otsu", "bbox"):
                examples.append((row, after, info))
                break
        if len(examples) == n:
            break
    fig, axes = plt.subplots(2, max(len(examples), 1), figsize=(2.4 * max(len(examples), 1), 5), squeeze=False)
    for j, (row, after, info) in enumerate(examples):
        before, _ = load_rgb(row.image_path)
        axes[0, j].imshow(before)
        x0, y0, x1, y1 = info["crop_x0"], info["crop_y0"], info["crop_x1"], info["crop_y1"]
        axes[0, j].add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="yellow", lw=1.5))
        axes[0, j].set_title(f"{row.source}\n{info['crop_method']} box", fontsize=7)
        axes[1, j].imshow(after)
        axes[1, j].set_title(f"cached {size}x{size}", fontsize=7)
    for ax in axes.ravel():
        ax.set(xticks=[], yticks=[])  # no ticks: else each is laid out (slowly) before it is hidden
        ax.axis("off")
    fig.suptitle(source_title(cfg, "preprocessing: crop, then resize"))
    return fig
