"""Figures of the results (notebook 05): kappa, retrieval and paired-cosine bars, the embedding map, retrieval galleries
and the notes audit; the forest of comparisons and the paired slopegraph live in `dermlib.report.comparison_plots`
and are re-exported here. Each function returns a matplotlib Figure; the notebook calls
`dermlib.plotstyle.save(fig, cfg, name)` and the figure shows inline where it is made. Every step's own figures are its
`plots` module. Strategies are drawn in their one colour (`dermlib.plotstyle.strategy_colours`), controls hatched.
"""

from __future__ import annotations

import textwrap
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from sklearn.decomposition import PCA
from matplotlib.patches import Patch
from sklearn.manifold import TSNE

from dermlib.data.labels import ISIC8
from dermlib.evaluate.results import permutation_chance
from dermlib.evaluate.stats import SOURCE_ONLY
from dermlib.metrics import finite_rows, l2_normalise
from dermlib.plotstyle import (is_control_strategy, lighter, readable, setup_style, source_title,
                                strategy_colours, strategy_hatch)
from dermlib.report.comparison_plots import METRIC_WORDS, VERDICT_COLOURS, forest, paired_values, slopegraph

__all__ = ["METRIC_WORDS", "VERDICT_COLOURS", "forest", "paired_values", "slopegraph"]  # re-exported


def pooled_bars(results: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Pooled rows of one metric per (strategy, partition): mean over seeds and the error bar half-width.

    The error bar is the sd over seeds when there are several (`bar` = "sd over seeds"), else half the bootstrap
    95 % CI of the single run (`bar` = "95 % CI"); both are said in the figure.
    """
    rows = results[(results["metric"] == metric) & (results["source"] == "pooled")]
    out = rows.groupby(["strategy", "partition"], sort=False).agg(
        value=("value", "mean"), sd=("value", "std"), seeds=("value", "count"),
        ci_low=("ci_low", "mean"), ci_high=("ci_high", "mean")).reset_index()
    several = out["seeds"] > 1
    out["err_low"] = np.where(several, out["sd"], out["value"] - out["ci_low"])
    out["err_high"] = np.where(several, out["sd"], out["ci_high"] - out["value"])
    out["bar"] = np.where(several, "sd over seeds", "95 % CI")
    return out


LEVEL_SHADES = (0.0, 0.55)  # how much white the 1st and 2nd bar of a strategy's pair is mixed with


def _grouped_bars(ax: plt.Axes, table: pd.DataFrame, order: list[str], hue: str, hues: list[str]) -> None:
    """Bars per strategy (x, in the strategy's own colour; controls hatched) and `hue` level (the first level full
    colour, the next lighter with the strategy's colour as edge), with error bars and the value printed on top."""
    width = 0.8 / max(len(hues), 1)
    colours = strategy_colours(order)
    top = 0.0
    for j, level in enumerate(hues):
        part = table[table[hue] == level].set_index("strategy").reindex(order)
        x = np.arange(len(order)) + (j - (len(hues) - 1) / 2) * width
        err = np.vstack([part["err_low"].fillna(0).clip(lower=0), part["err_high"].fillna(0).clip(lower=0)])
        shade = LEVEL_SHADES[min(j, len(LEVEL_SHADES) - 1)]
        bars = ax.bar(x, part["value"], width, yerr=err, capsize=3, label=str(level),
                      color=[lighter(colours[s], shade) for s in order], edgecolor=[colours[s] for s in order], lw=1)
        for bar, strategy in zip(bars, order):
            bar.set_hatch(strategy_hatch(strategy) or None)
            bar.set_gid(f"bar:{strategy}:{level}")
        for xi, v, up in zip(x, part["value"], err[1]):
            if pd.notna(v):
                ax.text(xi, v + up + 0.01, f"{v:.2f}", ha="center", va="bottom", fontsize=7)
                top = max(top, v + up)
    ax.set_ylim(top=max(ax.get_ylim()[1], top * 1.1))  # room for the printed values
    ax.set_xticks(np.arange(len(order)), [f"{s}\n(control)" if is_control_strategy(s) else s for s in order])


def _level_handles(hues: list[str]) -> list[Patch]:
    """Legend entries for the levels of `_grouped_bars`, drawn in a neutral grey (the colour is the strategy)."""
    return [Patch(facecolor=lighter("0.3", LEVEL_SHADES[min(j, len(LEVEL_SHADES) - 1)]), edgecolor="0.3",
                  label=str(level)) for j, level in enumerate(hues)]


def _bar_note(table: pd.DataFrame) -> str:
    """What the error bars are, for the axis label."""
    kinds = sorted(set(table["bar"]))
    return "error bars: " + " / ".join(kinds)


def kappa_bars(results: pd.DataFrame, cfg: dict[str, Any]) -> plt.Figure:
    """Cohen's kappa (image branch) per strategy, internal vs external partition, pooled over sources."""
    setup_style()
    table = pooled_bars(results, "kappa")
    order = [s for s in cfg["eval"]["strategies"] if s in set(table["strategy"])]
    fig, ax = plt.subplots(figsize=(8, 4))
    partitions = [p for p in ("internal", "external") if p in set(table["partition"])]
    _grouped_bars(ax, table, order, "partition", partitions)
    ax.axhline(0, color="0.3", lw=0.8)
    ax.legend(handles=_level_handles(partitions), fontsize=8, title="test partition", title_fontsize=9,
              loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.set(xlabel=f"strategy ({_bar_note(table)})", ylabel="Cohen's κ (chance = 0)",
           title=source_title(cfg, "κ, internal vs external test"))
    return fig


def retrieval_map_bars(results: pd.DataFrame, cfg: dict[str, Any]) -> plt.Figure:
    """Class-level retrieval mAP per strategy, both directions, one panel per partition, each with its own chance
    levels (gallery labels permuted; mean over runs) and the source-only ranking's mAP (`source_only_map`) drawn and
    labelled in that panel."""
    setup_style()
    directions = (("map_i2t", "image → text"), ("map_t2i", "text → image"))
    table = pd.concat([pooled_bars(results, m).assign(direction=d) for m, d in directions], ignore_index=True)
    table = table[table["value"].notna()]
    if table.empty:
        raise ValueError("no retrieval mAP in the results: only the image-only baseline was evaluated")
    partitions = [p for p in ("internal", "external") if p in set(table["partition"])]
    order = [s for s in cfg["eval"]["strategies"] if s in set(table["strategy"])]
    levels = [d for _, d in directions]
    fig, axes = plt.subplots(1, len(partitions), figsize=(6 * len(partitions), 4), sharey=True, squeeze=False)
    for ax, partition in zip(axes[0], partitions):
        _grouped_bars(ax, table[table["partition"] == partition], order, "direction", levels)
        chance_lines = []
        for (metric, direction), ls in zip(directions, ("--", ":")):
            chance = permutation_chance(results, metric, partition)
            if np.isfinite(chance):
                chance_lines += ax.plot([-0.5, len(order) - 0.5], [chance, chance], color="0.15", ls=ls, lw=1.2,
                                        label=f"chance {direction}: {chance:.2f}")
        only = results[(results["metric"] == SOURCE_ONLY) & (results["source"] == "pooled")
                       & (results["partition"] == partition)]["value"].mean()
        if np.isfinite(only):  # the pooled gallery mixes sources: what ranking by source alone gives
            chance_lines += ax.plot([-0.5, len(order) - 0.5], [only, only], color="tab:red", ls="-.", lw=1.2,
                                    label=f"source-only ranking: {only:.2f}")
        if chance_lines:
            ax.legend(handles=chance_lines, fontsize=7, loc="upper left", frameon=True,
                      title="baselines", title_fontsize=7)
        ax.set(xlabel=f"strategy ({_bar_note(table)})", ylabel="class-level mAP", title=partition, ylim=(0, 1.05),
               xlim=(-0.5, len(order) - 0.5))
    fig.legend(handles=_level_handles(levels), fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False,
               title="direction")
    fig.suptitle(source_title(cfg, "class-level retrieval mAP"))
    fig.tight_layout()
    return fig


def paired_cosine_violins(samples: pd.DataFrame, results: pd.DataFrame, cfg: dict[str, Any]) -> plt.Figure:
    """Per test image, the cosine with its own note (mean over seeds), per strategy and partition.

    Drawn from the same per-image values as Table 5 (`results/samples`), so the printed means are its pooled cells;
    the black segment across each half-violin is that strategy's and partition's chance level, the mean cosine of
    shuffled image-note pairs (`chance_paired_cosine`, mean over seeds), value printed beside it.
    """
    frame = samples[samples["cosine"].notna()]
    if frame.empty:
        raise ValueError("no paired cosines in the samples: only the image-only baseline was evaluated")
    per_image = frame.groupby(["strategy", "partition", "sample_id"], sort=False)["cosine"].mean().reset_index()
    order = [s for s in cfg["eval"]["strategies"] if s in set(per_image["strategy"])]
    partitions = [p for p in ("internal", "external") if p in set(per_image["partition"])]
    setup_style()
    fig, ax = plt.subplots(figsize=(9, 4))
    split = len(partitions) == 2
    colours = strategy_colours(order)
    for strategy in order:  # one call per strategy: each is drawn in its own colour, the 2nd partition lighter
        before = len(ax.collections)
        shades = {p: lighter(colours[strategy], LEVEL_SHADES[min(j, 1)]) for j, p in enumerate(partitions)}
        sns.violinplot(data=per_image[per_image["strategy"] == strategy], x="strategy", y="cosine", hue="partition",
                       order=order, hue_order=partitions, split=split, cut=0, inner="quartile", saturation=1,
                       palette=shades, legend=False, ax=ax)
        for body in ax.collections[before:]:
            body.set_edgecolor(colours[strategy])
            body.set_hatch(strategy_hatch(strategy) or None)
    ax.set_xticks(np.arange(len(order)), [f"{s}\n(control)" if is_control_strategy(s) else s for s in order])
    means = per_image.groupby(["strategy", "partition"])["cosine"].mean()
    for i, strategy in enumerate(order):
        text = " / ".join(f"{means.get((strategy, p), np.nan):.2f}" for p in partitions)
        ax.text(i, 1.02, f"mean {text}", ha="center", fontsize=8, transform=ax.get_xaxis_transform())
        for j, partition in enumerate(partitions):
            chance = permutation_chance(results, "paired_cosine", partition, strategy)
            if not np.isfinite(chance):
                continue
            x0, x1 = (i - 0.4 + 0.4 * j, i + 0.4 * j) if split else (i - 0.4, i + 0.4)
            ax.plot([x0, x1], [chance, chance], color="black", lw=2.2, solid_capstyle="butt",
                    gid=f"chance:{strategy}:{partition}")
            ax.text(x1 + 0.02 if j else x0 - 0.02, chance, f"{chance:.2f}", ha="left" if j else "right",
                    va="center", fontsize=7)
    handles = _level_handles(partitions) + [plt.Line2D([], [], color="black", lw=2.2)]
    labels = [*partitions, "shuffled pairs (chance),\nper strategy and partition"]
    ax.legend(handles, labels, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.set(ylabel="cosine(image, own note)", xlabel=f"strategy (means over test images: {' / '.join(partitions)})")
    ax.set_title(source_title(cfg, "paired image–note cosine"), pad=18)
    return fig


def embedding_map(emb: dict[str, np.ndarray], cfg: dict[str, Any], *, method: str = "pca", title: str = "",
                  max_points: int = 2000, seed: int = 0) -> plt.Figure:
    """2-D map of image and text embeddings of one run: left coloured by class, right by modality.

    `emb` is a saved embeddings file (image_emb, text_emb, label); embeddings are L2-normalised and projected
    jointly with PCA (deterministic; each axis says the share of variance it explains) or t-SNE (`method="tsne"`,
    seeded); at most `max_points` pairs are drawn.
    """
    if "text_emb" not in emb:
        raise ValueError("embedding_map needs a run with notes (the Img baseline has no text embeddings)")
    keep = np.flatnonzero(finite_rows(emb["text_emb"]))
    if len(keep) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(keep, max_points, replace=False))
    points = np.vstack([l2_normalise(emb["image_emb"][keep]), l2_normalise(emb["text_emb"][keep])])
    axis_labels = ("t-SNE 1", "t-SNE 2")
    if method == "tsne":
        xy = TSNE(2, init="pca", random_state=seed, perplexity=min(30.0, (len(points) - 1) / 3)).fit_transform(points)
    elif method == "pca":
        pca = PCA(2, random_state=seed)
        xy = pca.fit_transform(points)
    else:
        raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}")
    if method == "pca":
        axis_labels = tuple(f"PC{k + 1} ({100 * r:.1f} % of variance)" for k, r in
                            enumerate(pca.explained_variance_ratio_))
    frame = pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "class": np.tile(emb["label"][keep], 2),
                          "modality": np.repeat(["image", "text"], len(keep))})
    present = set(frame["class"])
    hue_order = [c for c in ISIC8 if c in present] + sorted(present - set(ISIC8))
    setup_style()
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    sns.scatterplot(data=frame, x="x", y="y", hue="class", hue_order=hue_order, style="modality", s=18, alpha=0.8,
                    ax=axes[0])
    sns.scatterplot(data=frame, x="x", y="y", hue="modality", s=18, alpha=0.6, ax=axes[1])
    for ax, what in zip(axes, ("by class", "by modality")):
        ax.set(title=what, xlabel=axis_labels[0], ylabel=axis_labels[1])
        ax.legend(fontsize=7, markerscale=0.8, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.suptitle(source_title(cfg, f"shared embedding space {title}".strip()))
    fig.tight_layout()
    return fig


def retrieval_gallery(image: np.ndarray | None, example: dict[str, Any], cfg: dict[str, Any], *,
                      title: str = "") -> plt.Figure:
    """An image query beside its top-k retrieved notes (rank, cosine, class; relevant = same class).

    `example` holds label, notes, note_labels, scores (and ap); `image` may be None when the image cache is not on
    this machine. Identical notes are drawn once with their count.
    """
    setup_style()
    shown: list[tuple[str, str, float, int]] = []
    for note, label, score in zip(example["notes"], example["note_labels"], example["scores"]):
        if shown and shown[-1][0] == note:
            shown[-1] = (note, label, score, shown[-1][3] + 1)
        else:
            shown.append((str(note), str(label), float(score), 1))
    fig = plt.figure(figsize=(13, 1.5 + 0.9 * len(shown)))
    ax_img = fig.add_axes((0.01, 0.1, 0.22, 0.78))
    if image is not None:
        ax_img.imshow(image)
    else:
        ax_img.text(0.5, 0.5, "image cache\nnot available", ha="center", va="center")
    ax_img.set_axis_off()
    ap = f", AP {example['ap']:.2f}" if "ap" in example else ""
    ax_img.set_title(f"query image\nclass {example['label']}{ap}", fontsize=10)
    ax_txt = fig.add_axes((0.26, 0.02, 0.73, 0.9))
    ax_txt.set_axis_off()
    step = 1.0 / max(len(shown), 1)
    for rank, (note, label, score, count) in enumerate(shown):
        relevant = label == example["label"]
        body = "\n".join(textwrap.wrap(textwrap.shorten(" ".join(note.split()), 260, placeholder=" ..."), 120))
        times = f" x{count} identical" if count > 1 else ""
        ax_txt.text(0, 1 - rank * step, f"cos {score:.3f}  class {label} ({'relevant' if relevant else 'not relevant'})"
                    f"{times}\n{body}", va="top", fontsize=8, family="monospace",
                    color="darkgreen" if relevant else "firebrick")
    fig.suptitle(source_title(cfg, f"image → text retrieval {title}".strip()), fontsize=11)
    return fig


AUDIT_ERRORS = ["contradiction_rate", "unsupported_attribute_rate", "age_contradicted", "sex_contradicted",
                "site_contradicted", "diagnosis_contradicted", "diagnosis_mixed"]
AUDIT_FIDELITY = ["diagnosis_correct", "colors_precision", "colors_recall", "structures_precision",
                  "structures_recall", "vocab_adherence"]
AUDIT_LABELS = {"contradiction_rate": "contradicts metadata", "unsupported_attribute_rate": "absent attribute",
                "age_contradicted": "age contradicted", "sex_contradicted": "sex contradicted",
                "site_contradicted": "site contradicted", "diagnosis_contradicted": "diagnosis contradicted",
                "diagnosis_mixed": "diagnosis mixed", "diagnosis_correct": "diagnosis correct"}


def audit_heatmap(summary: pd.DataFrame, cfg: dict[str, Any]) -> plt.Figure:
    """The hallucination audit per strategy (dermlib.notes.audit_summary): error rates (with `diagnosis_mixed`, the
    share naming the true class and another one) and attribute fidelity."""
    if "strategy" not in summary.columns or summary.empty:
        raise ValueError("audit_heatmap needs the audit summary (one row per strategy, from dermlib.notes.audit_summary)")
    panels = [(c, t, cmap) for c, t, cmap in ((AUDIT_ERRORS, "errors (↓ lower is better)", "Reds"),
                                              (AUDIT_FIDELITY, "fidelity (↑ higher is better)", "Greens"))
              if any(col in summary.columns for col in c)]
    if not panels:
        raise ValueError(f"audit summary has none of the expected columns (has {list(summary.columns)})")
    setup_style()
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 0.6 * len(summary) + 2.4), squeeze=False)
    for ax, (columns, what, cmap) in zip(axes[0], panels):
        shown = summary.set_index("strategy")[[c for c in columns if c in summary.columns]].astype(float)
        shown.columns = [AUDIT_LABELS.get(c, readable(c)) for c in shown.columns]
        sns.heatmap(shown, annot=True, fmt=".2f", vmin=0, vmax=1, cmap=cmap, cbar=False, ax=ax)
        ax.grid(False)  # blank cells (metric undefined for a strategy) stay blank
        mixed = AUDIT_LABELS["diagnosis_mixed"] in shown.columns
        ax.set(title=what, ylabel="strategy",
               xlabel="diagnosis mixed: names the true class and another one" if mixed else "")
        ax.tick_params(axis="x", rotation=35)
        plt.setp(ax.get_xticklabels(), ha="right")
    fig.suptitle(source_title(cfg, "note audit"))
    fig.tight_layout()
    return fig
