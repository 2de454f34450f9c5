"""Figures of the results (notebook 05): kappa, retrieval and paired-cosine bars, the embedding map, retrieval galleries
and the notes audit. Each function returns a matplotlib Figure; the notebook calls `dermlib.plotstyle.save(fig, cfg,
name)` and the figure shows inline where it is made. Every step's own figures are its `plots` module.
"""

from __future__ import annotations

import textwrap
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

from dermlib.data.labels import ISIC8
from dermlib.evaluate.results import permutation_chance
from dermlib.evaluate.stats import SOURCE_ONLY
from dermlib.metrics import finite_rows, l2_normalise
from dermlib.plotstyle import setup_style, source_title


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


def _grouped_bars(ax: plt.Axes, table: pd.DataFrame, order: list[str], hue: str, hues: list[str]) -> None:
    """Bars per strategy (x) and `hue` level, with error bars where known and the value printed on top."""
    width = 0.8 / max(len(hues), 1)
    colors = sns.color_palette("colorblind", len(hues))
    for j, level in enumerate(hues):
        part = table[table[hue] == level].set_index("strategy").reindex(order)
        x = np.arange(len(order)) + (j - (len(hues) - 1) / 2) * width
        err = np.vstack([part["err_low"].fillna(0).clip(lower=0), part["err_high"].fillna(0).clip(lower=0)])
        ax.bar(x, part["value"], width, yerr=err, capsize=3, color=colors[j], label=str(level))
        for xi, v, up in zip(x, part["value"], err[1]):
            if pd.notna(v):
                ax.text(xi, v + up + 0.01, f"{v:.2f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(np.arange(len(order)), order)


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
    _grouped_bars(ax, table, order, "partition", [p for p in ("internal", "external") if p in set(table["partition"])])
    ax.axhline(0, color="0.3", lw=0.8)
    ax.legend(fontsize=8, title="test partition", loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.set(xlabel=f"strategy ({_bar_note(table)})", ylabel="Cohen's kappa (chance = 0)",
           title=source_title(cfg, "kappa, internal vs external test"))
    return fig


def retrieval_map_bars(results: pd.DataFrame, cfg: dict[str, Any]) -> plt.Figure:
    """Class-level retrieval mAP per strategy, both directions, one panel per partition, each with its own chance
    levels (gallery labels permuted; mean over runs) and the source-only ranking's mAP (`source_only_map`) drawn and
    labelled in that panel."""
    setup_style()
    directions = (("map_i2t", "image -> text"), ("map_t2i", "text -> image"))
    table = pd.concat([pooled_bars(results, m).assign(direction=d) for m, d in directions], ignore_index=True)
    table = table[table["value"].notna()]
    if table.empty:
        raise ValueError("no retrieval mAP in the results: only the image-only baseline was evaluated")
    partitions = [p for p in ("internal", "external") if p in set(table["partition"])]
    order = [s for s in cfg["eval"]["strategies"] if s in set(table["strategy"])]
    colors = dict(zip([d for _, d in directions], sns.color_palette("colorblind", len(directions))))
    fig, axes = plt.subplots(1, len(partitions), figsize=(6 * len(partitions), 4), sharey=True, squeeze=False)
    for ax, partition in zip(axes[0], partitions):
        _grouped_bars(ax, table[table["partition"] == partition], order, "direction", list(colors))
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
        ax.set(xlabel=f"strategy ({_bar_note(table)})", ylabel="mAP", title=f"{partition} (pooled)", ylim=(0, 1.05),
               xlim=(-0.5, len(order) - 0.5))
    bars = [plt.Rectangle((0, 0), 1, 1, color=c, label=d) for d, c in colors.items()]
    fig.legend(handles=bars, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False,
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
    sns.violinplot(data=per_image, x="strategy", y="cosine", hue="partition", order=order, hue_order=partitions,
                   split=split, cut=0, inner="quartile", ax=ax)
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
    handles, labels = ax.get_legend_handles_labels()
    handles.append(plt.Line2D([], [], color="black", lw=2.2))
    labels.append("shuffled pairs (chance),\nper strategy and partition")
    ax.legend(handles, labels, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.set(ylabel="cosine(image, own note)", xlabel=f"strategy (means: {' / '.join(partitions)})")
    ax.set_title(source_title(cfg, "paired image-note cosine, every test image, mean over seeds"), pad=18)
    return fig


def embedding_map(emb: dict[str, np.ndarray], cfg: dict[str, Any], *, method: str = "pca", title: str = "",
                  max_points: int = 2000, seed: int = 0) -> plt.Figure:
    """2-D map of image and text embeddings of one run: left coloured by class, right by modality.

    `emb` is a saved embeddings file (image_emb, text_emb, label); embeddings are L2-normalised and projected
    jointly with PCA (deterministic) or t-SNE (`method="tsne"`, seeded); at most `max_points` pairs are drawn.
    """
    if "text_emb" not in emb:
        raise ValueError("embedding_map needs a run with notes (the Img baseline has no text embeddings)")
    keep = np.flatnonzero(finite_rows(emb["text_emb"]))
    if len(keep) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(keep, max_points, replace=False))
    points = np.vstack([l2_normalise(emb["image_emb"][keep]), l2_normalise(emb["text_emb"][keep])])
    if method == "tsne":
        xy = TSNE(2, init="pca", random_state=seed, perplexity=min(30.0, (len(points) - 1) / 3)).fit_transform(points)
    elif method == "pca":
        xy = PCA(2, random_state=seed).fit_transform(points)
    else:
        raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}")
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
        ax.set(title=what, xlabel=f"{method.upper()} 1", ylabel=f"{method.upper()} 2")
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
    fig.suptitle(source_title(cfg, f"image -> text retrieval {title}".strip()), fontsize=11)
    return fig


AUDIT_ERRORS = ["contradiction_rate", "unsupported_attribute_rate", "age_contradicted", "sex_contradicted",
                "site_contradicted", "diagnosis_contradicted", "diagnosis_mixed"]
AUDIT_FIDELITY = ["diagnosis_correct", "colors_precision", "colors_recall", "structures_precision",
                  "structures_recall", "vocab_adherence"]


def audit_heatmap(summary: pd.DataFrame, cfg: dict[str, Any]) -> plt.Figure:
    """The hallucination audit per strategy (dermlib.notes.audit_summary): error rates (with `diagnosis_mixed`, the
    share naming the true class and another one) and attribute fidelity."""
    if "strategy" not in summary.columns or summary.empty:
        raise ValueError("audit_heatmap needs the audit summary (one row per strategy, from dermlib.notes.audit_summary)")
    panels = [(c, t, cmap) for c, t, cmap in ((AUDIT_ERRORS, "error rates (lower is better)", "Reds"),
                                              (AUDIT_FIDELITY, "fidelity rates (higher is better)", "Greens"))
              if any(col in summary.columns for col in c)]
    if not panels:
        raise ValueError(f"audit summary has none of the expected columns (has {list(summary.columns)})")
    setup_style()
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 0.6 * len(summary) + 2.4), squeeze=False)
    for ax, (columns, what, cmap) in zip(axes[0], panels):
        shown = summary.set_index("strategy")[[c for c in columns if c in summary.columns]].astype(float)
        sns.heatmap(shown, annot=True, fmt=".2f", vmin=0, vmax=1, cmap=cmap, cbar=False, ax=ax)
        ax.grid(False)  # blank cells (metric undefined for a strategy) stay blank
        mixed = "diagnosis_mixed" in shown.columns
        ax.set(title=what, ylabel="strategy",
               xlabel="diagnosis_mixed: names the true class and another one" if mixed else "")
        ax.tick_params(axis="x", rotation=35)
        plt.setp(ax.get_xticklabels(), ha="right")
    fig.suptitle(source_title(cfg, "hallucination audit of the synthetic notes"))
    fig.tight_layout()
    return fig


VERDICT_COLOURS = {"above": "tab:blue", "below": "tab:red", "equivalent": "0.45", "not resolved": "tab:orange"}
METRIC_WORDS = {"kappa": "κ", "map_i2t_within_source": "mAP i→t", "map_t2i_within_source": "mAP t→i",
                "paired_cosine": "cosine", "paired_cosine_above_source": "cosine − source chance"}


def forest(comparisons: pd.DataFrame, cfg: dict[str, Any], kinds: tuple[str, ...] = ("primary", "control")
           ) -> plt.Figure:
    """Every declared comparison of `kinds` as a paired difference with its 95 % interval (the figure the
    conclusions rest on): one panel per question, a zero line, the equivalence band ±margin shaded, each interval
    coloured by its verdict (`dermlib.evaluate.protocol.verdict`), controls labelled as such."""
    from dermlib.evaluate.protocol import verdict  # the one rule that turns an interval into words

    setup_style()
    rows = comparisons[comparisons["kind"].isin(kinds)].copy()
    if rows.empty:
        raise ValueError(f"no comparisons of kind {kinds} in the table: re-run notebook 04")
    questions = sorted(rows["question"].unique())
    heights = [len(rows[rows["question"] == q]) + 1 for q in questions]
    fig, axes = plt.subplots(len(questions), 1, figsize=(8, 0.32 * sum(heights) + 1.2), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, question in zip(axes[:, 0], questions):
        part = rows[rows["question"] == question].iloc[::-1]
        y = np.arange(len(part))
        margin = float(part["margin"].max())
        ax.axvspan(-margin, margin, color="0.92", zorder=0)
        ax.axvline(0, color="0.2", lw=0.9, zorder=1)
        for i, (_, row) in enumerate(part.iterrows()):
            colour = VERDICT_COLOURS[verdict(row)]
            ax.plot([row["ci_low"], row["ci_high"]], [i, i], color=colour, lw=2.2, solid_capstyle="butt", zorder=2)
            ax.plot(row["estimate"], i, "o", color=colour, ms=5, zorder=3)
        labels = [f"{'control: ' if k == 'control' else ''}{c.replace(' - ', ' − ')}, "
                  f"{METRIC_WORDS.get(m, m)}, {p.replace(' - ', ' − ')}"
                  for c, m, p, k in zip(part["comparison"], part["metric"], part["partition"], part["kind"])]
        ax.set_yticks(y, labels, fontsize=7.5)
        ax.set_ylim(-0.7, len(part) - 0.3)
        ax.set_title(f"({question})", loc="left", fontsize=9)
    lim = max(float(rows[["ci_low", "ci_high"]].abs().max().max()), float(rows["margin"].max())) * 1.15
    for ax in axes[:, 0]:
        ax.set_xlim(-lim, lim)
    axes[-1, 0].set_xlabel("paired difference (95 % CI); shaded: ± equivalence margin")
    handles = [plt.Line2D([], [], color=c, lw=2.2, marker="o", ms=5, label=v) for v, c in VERDICT_COLOURS.items()]
    fig.legend(handles=handles, fontsize=7, loc="upper right", ncol=4, frameon=False, bbox_to_anchor=(0.99, 1.0))
    fig.suptitle(source_title(cfg, "declared comparisons"), x=0.01, ha="left", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return fig
