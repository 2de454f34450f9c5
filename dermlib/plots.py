"""Figures: one style, stable file names, and a visible "SynthDerm (synthetic)" mark on every demo figure."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402

from dermlib.data.labels import ISIC8  # noqa: E402
from dermlib.metrics import finite_rows, l2_normalise  # noqa: E402

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


def _save_and_close(fig: plt.Figure, cfg: dict[str, Any], name: str) -> Path:
    """savefig as PNG + PDF, then free the figure; returns the PNG path."""
    png = savefig(fig, cfg, name, pdf=True)
    plt.close(fig)
    return png


# --------------------------------------------------------------------------------------------------------------
# Figures of the pipeline. Each takes plain DataFrames (the results table, histories, audit summary) and the
# config, draws one figure and saves it under a stable name via `savefig` (PNG + PDF); each returns the PNG path.
# --------------------------------------------------------------------------------------------------------------

def plot_learning_curves(histories: dict[str, pd.DataFrame], cfg: dict[str, Any], name: str = "03_learning_curves") -> Path:
    """Total loss (train/val), validation kappa and the per-term training losses per epoch, one line per run.

    Per-term columns are those named `train_<term>` (other than train_loss) or a key of train.loss_weights.
    """
    if not histories:
        raise ValueError("plot_learning_curves: no histories given (expected {run name: history DataFrame})")
    for run, hist in histories.items():
        missing = [c for c in ("epoch", "train_loss", "val_kappa") if c not in hist.columns]
        if missing:
            raise ValueError(f"history of run {run!r} lacks columns {missing} (has {list(hist.columns)})")
    loss_terms = set(cfg.get("train", {}).get("loss_weights", {}))  # per-term columns: train_<term> or <term>
    setup_style()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    palette = dict(zip(histories, sns.color_palette("colorblind", len(histories))))
    for run, hist in histories.items():
        color = palette[run]
        axes[0].plot(hist["epoch"], hist["train_loss"], color=color, marker="o", label=f"{run} train")
        if "val_loss" in hist.columns and hist["val_loss"].notna().any():
            axes[0].plot(hist["epoch"], hist["val_loss"], color=color, marker="s", ls="--", label=f"{run} val")
        axes[1].plot(hist["epoch"], hist["val_kappa"], color=color, marker="o", label=run)
        terms = [c for c in hist.columns if (c.startswith("train_") and c != "train_loss") or c in loss_terms]
        terms = [c for c in terms if pd.api.types.is_numeric_dtype(hist[c]) and hist[c].notna().any()]
        for term, style in zip(terms, ["-", "--", ":", "-.", (0, (3, 1, 1, 1)), (0, (5, 2))] * 3):
            axes[2].plot(hist["epoch"], hist[term], color=color, ls=style, marker=".", label=f"{run} {term}")
    axes[0].set(title="total loss", xlabel="epoch", ylabel="loss")
    axes[1].set(title="validation Cohen's kappa", xlabel="epoch", ylabel="kappa")
    axes[2].set(title="loss terms (train)", xlabel="epoch", ylabel="loss")
    epochs = sorted({int(e) for hist in histories.values() for e in hist["epoch"]})
    for ax in axes:
        if len(epochs) <= 15:
            ax.set_xticks(epochs)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, ncol=1 + len(ax.get_legend_handles_labels()[0]) // 12)
    fig.suptitle(source_title(cfg, "learning curves"))
    fig.tight_layout()
    return _save_and_close(fig, cfg, name)


def _pooled(results: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Pooled rows of one metric: mean over seeds per (strategy, partition) with an error bar half-width.

    The error bar is the sd over seeds when there are several, else half the bootstrap CI (asymmetric bounds kept).
    """
    rows = results[(results["metric"] == metric) & (results["source"] == "pooled")]
    out = rows.groupby(["strategy", "partition"], sort=False).agg(
        value=("value", "mean"), sd=("value", "std"), seeds=("value", "count"),
        ci_low=("ci_low", "mean"), ci_high=("ci_high", "mean")).reset_index()
    several = out["seeds"] > 1
    out["err_low"] = np.where(several, out["sd"], out["value"] - out["ci_low"])
    out["err_high"] = np.where(several, out["sd"], out["ci_high"] - out["value"])
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
        for xi, v, top in zip(x, part["value"], err[1]):
            if pd.notna(v):
                ax.text(xi, v + top + 0.01, f"{v:.2f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(np.arange(len(order)), order)
    ax.legend(fontsize=8)


def plot_kappa(results: pd.DataFrame, cfg: dict[str, Any], name: str = "05_kappa_internal_external") -> Path:
    """Cohen's kappa (image branch) per strategy, internal vs external partition, pooled over sources."""
    setup_style()
    table = _pooled(results, "kappa")
    order = [s for s in cfg["eval"]["strategies"] if s in set(table["strategy"])]
    fig, ax = plt.subplots(figsize=(8, 4))
    _grouped_bars(ax, table, order, "partition", [p for p in ("internal", "external") if p in set(table["partition"])])
    ax.set(xlabel="strategy", ylabel="Cohen's kappa", title=source_title(cfg, "kappa, internal vs external test"))
    return _save_and_close(fig, cfg, name)


def plot_retrieval_map(results: pd.DataFrame, cfg: dict[str, Any], name: str = "05_retrieval_map") -> Path:
    """Class-level retrieval mAP per strategy, both directions, one panel per partition (pooled over sources)."""
    setup_style()
    table = pd.concat([_pooled(results, m).assign(direction=d) for m, d in
                       (("map_i2t", "image -> text"), ("map_t2i", "text -> image"))], ignore_index=True)
    table = table[table["value"].notna()]
    if table.empty:
        raise ValueError("no retrieval mAP in the results: only the image-only baseline was evaluated")
    partitions = [p for p in ("internal", "external") if p in set(table["partition"])]
    order = [s for s in cfg["eval"]["strategies"] if s in set(table["strategy"])]
    fig, axes = plt.subplots(1, len(partitions), figsize=(6 * len(partitions), 4), sharey=True, squeeze=False)
    for ax, partition in zip(axes[0], partitions):
        _grouped_bars(ax, table[table["partition"] == partition], order, "direction",
                      ["image -> text", "text -> image"])
        ax.set(xlabel="strategy", ylabel="mAP", title=f"{partition} (pooled)", ylim=(0, 1.05))
    fig.suptitle(source_title(cfg, "class-level retrieval mAP"))
    return _save_and_close(fig, cfg, name)


def plot_paired_cosine(cosines: dict[str, np.ndarray], cfg: dict[str, Any], name: str = "05_paired_cosine") -> Path:
    """Distribution of the cosine similarity of each image with its own note, one violin per strategy."""
    if not cosines:
        raise ValueError("plot_paired_cosine: no strategies given (expected {strategy: cosine array})")
    setup_style()
    frame = pd.concat([pd.DataFrame({"strategy": s, "cosine": np.asarray(v, dtype=float)}) for s, v in cosines.items()])
    fig, ax = plt.subplots(figsize=(8, 4))
    sns.violinplot(data=frame, x="strategy", y="cosine", hue="strategy", order=list(cosines), cut=0,
                   inner="quartile", ax=ax, legend=False)
    for i, (strategy, values) in enumerate(cosines.items()):
        ax.text(i, 1.02, f"mean {np.mean(values):.2f}", ha="center", fontsize=8, transform=ax.get_xaxis_transform())
    ax.set(ylabel="cosine(image, own note)", xlabel="strategy")
    ax.set_title(source_title(cfg, "paired image-note cosine similarity"), pad=18)
    return _save_and_close(fig, cfg, name)


def plot_embedding_map(emb: dict[str, np.ndarray], cfg: dict[str, Any], *, method: str = "pca", title: str = "",
                       name: str = "05_embedding_map", max_points: int = 2000, seed: int = 0) -> Path:
    """2-D map of image and text embeddings of one run: left coloured by class, right by modality.

    `emb` is a saved embeddings file (image_emb, text_emb, label); embeddings are L2-normalised and projected
    jointly with PCA (deterministic) or t-SNE (`method="tsne"`, seeded); at most `max_points` pairs are drawn.
    """
    if "text_emb" not in emb:
        raise ValueError("plot_embedding_map needs a run with notes (the Img baseline has no text embeddings)")
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
        ax.legend(fontsize=7, markerscale=0.8)
    fig.suptitle(source_title(cfg, f"shared embedding space {title}".strip()))
    return _save_and_close(fig, cfg, name)


def plot_retrieval_gallery(image: np.ndarray | None, query_label: str, notes: list[str], note_labels: list[str],
                           scores: list[float], cfg: dict[str, Any], *, title: str = "",
                           name: str = "05_retrieval_gallery") -> Path:
    """An image query beside its top-k retrieved notes (rank, cosine, class; relevant = same class).

    `image` may be None when the image cache is not on this machine; the notes are drawn all the same.
    """
    setup_style()
    fig = plt.figure(figsize=(13, 1.5 + 0.8 * len(notes)))
    ax_img = fig.add_axes([0.01, 0.1, 0.22, 0.78])
    if image is not None:
        ax_img.imshow(image)
    else:
        ax_img.text(0.5, 0.5, "image cache\nnot available", ha="center", va="center")
    ax_img.set_axis_off()
    ax_img.set_title(f"query image\nclass {query_label}", fontsize=10)
    ax_txt = fig.add_axes([0.26, 0.02, 0.73, 0.9])
    ax_txt.set_axis_off()
    step = 1.0 / max(len(notes), 1)
    for rank, (note, label, score) in enumerate(zip(notes, note_labels, scores)):
        mark = "relevant" if label == query_label else "not relevant"
        text = textwrap.shorten(" ".join(str(note).split()), 260, placeholder=" ...")
        body = "\n".join(textwrap.wrap(text, 120))
        ax_txt.text(0, 1 - rank * step, f"#{rank + 1}  cos {score:.3f}  class {label} ({mark})\n{body}",
                    va="top", fontsize=8, family="monospace",
                    color="darkgreen" if label == query_label else "firebrick")
    fig.suptitle(source_title(cfg, f"image -> text retrieval {title}".strip()), fontsize=11)
    return _save_and_close(fig, cfg, name)


def plot_confusion(matrix: pd.DataFrame, cfg: dict[str, Any], title: str, name: str) -> Path:
    """A confusion matrix (rows true, columns predicted), counts annotated, rows shaded by recall."""
    setup_style()
    counts = matrix.to_numpy()
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    sns.heatmap(share, annot=counts, fmt="d", cmap="Blues", vmin=0, vmax=1, cbar_kws={"label": "row share"},
                xticklabels=matrix.columns, yticklabels=matrix.index, ax=ax)
    ax.grid(False)
    ax.set(xlabel="predicted", ylabel="true", title=source_title(cfg, title))
    return _save_and_close(fig, cfg, name)


AUDIT_ERRORS = ["contradiction_rate", "unsupported_attribute_rate", "age_contradicted", "sex_contradicted",
                "site_contradicted", "diagnosis_contradicted"]
AUDIT_FIDELITY = ["diagnosis_correct", "colors_precision", "colors_recall", "structures_precision",
                  "structures_recall", "vocab_adherence"]


def plot_audit(summary: pd.DataFrame, cfg: dict[str, Any], name: str = "05_hallucination_audit") -> Path:
    """The hallucination audit per strategy (dermlib.notes.audit_summary): error rates and attribute fidelity."""
    if "strategy" not in summary.columns or summary.empty:
        raise ValueError("plot_audit needs the audit summary (one row per strategy, from dermlib.notes.audit_summary)")
    panels = [(c, t, cmap) for c, t, cmap in ((AUDIT_ERRORS, "errors (lower is better)", "Reds"),
                                              (AUDIT_FIDELITY, "fidelity (higher is better)", "Greens"))
              if any(col in summary.columns for col in c)]
    if not panels:
        raise ValueError(f"audit summary has none of the expected columns (has {list(summary.columns)})")
    setup_style()
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 0.6 * len(summary) + 2.4), squeeze=False)
    for ax, (columns, what, cmap) in zip(axes[0], panels):
        shown = summary.set_index("strategy")[[c for c in columns if c in summary.columns]].astype(float)
        sns.heatmap(shown, annot=True, fmt=".2f", vmin=0, vmax=1, cmap=cmap, cbar=False, ax=ax)
        ax.grid(False)  # blank cells (metric undefined for a strategy) stay blank
        ax.set(title=what, xlabel="", ylabel="strategy")
        ax.tick_params(axis="x", rotation=35)
        plt.setp(ax.get_xticklabels(), ha="right")
    fig.suptitle(source_title(cfg, "hallucination audit of the synthetic notes"))
    fig.tight_layout()
    return _save_and_close(fig, cfg, name)
