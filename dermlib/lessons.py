"""Worked examples for the notebooks, computed on the data in front of the reader (a trained run's embeddings).

Nothing here is used by the pipeline: these functions pick a batch or a query on purpose (not the first row) and
compute the quantities a lesson explains with the library's own losses and metrics. torch is imported only by the
functions that need it, so notebook 05 can use the retrieval examples without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import matplotlib.pyplot as plt
import seaborn as sns
from scipy.special import softmax

from dermlib import metrics
from dermlib.data.preprocess import cached_pixels
from dermlib.data.schema import read_manifest
from dermlib.plots import setup_style, source_title
from dermlib.workdir import WorkDir


def lesson_batch(emb: dict[str, np.ndarray], n: int = 12, seed: int = 0, partition: str = "internal"
                 ) -> dict[str, np.ndarray]:
    """A seeded batch of `n` samples with a note from one partition, sorted by class so the heatmap reads by block."""
    ok = np.flatnonzero(metrics.finite_rows(emb["text_emb"]) & (emb["partition"] == partition))
    if len(ok) < 2:
        raise ValueError(f"lesson_batch needs at least 2 {partition} samples with a note, found {len(ok)}")
    chosen = np.random.default_rng(seed).choice(ok, min(n, len(ok)), replace=False)
    chosen = chosen[np.lexsort((chosen, emb["label"][chosen]))]
    raw_img, raw_txt = emb["image_emb"][chosen], emb["text_emb"][chosen]
    img, txt = metrics.l2_normalise(raw_img), metrics.l2_normalise(raw_txt)
    return {"index": chosen, "image": img, "text": txt, "image_raw": raw_img, "text_raw": raw_txt,
            "label": emb["label"][chosen].astype(str), "similarity": img @ txt.T}


def training_batch(cfg: dict[str, Any], run_dir: str | Path, n: int = 12, seed: int = 0) -> dict[str, np.ndarray]:
    """`n` training images and their notes (seeded draw), embedded by a trained run: a real batch for the NT-Xent
    lesson. Returns what `lesson_batch` returns (image/text L2-normalised, similarity, label)."""
    from dermlib.embed import encode, load_run
    from dermlib.notes.store import first_notes

    work = WorkDir.of(cfg)
    model, run_cfg = load_run(run_dir)
    train = read_manifest(work.manifest)
    train = train[(train["partition"] == "internal") & (train["split"] == "train")].reset_index(drop=True)
    notes = first_notes(work.root, run_cfg["train"]["strategy"], train["sample_id"])
    train = train[[note is not None for note in notes]].reset_index(drop=True)
    picked = train.iloc[np.sort(np.random.default_rng(seed).choice(len(train), min(n, len(train)), replace=False))]
    rows, pixels = cached_pixels(picked.reset_index(drop=True), work.cache, missing="raise", what="lesson batch")
    texts = first_notes(work.root, run_cfg["train"]["strategy"], rows["sample_id"])
    emb = encode(model, pixels, texts, run_cfg)
    emb.update(label=rows["label"].astype(str).to_numpy(), partition=np.full(len(rows), "internal"))
    return lesson_batch(emb, n=n, seed=seed)


def lesson_temperatures(cfg: dict[str, Any], contrast: tuple[float, ...] = (0.5, 1.0)) -> list[float]:
    """The NT-Xent temperatures a lesson shows: the one training uses (`train.temperature`) and the contrast
    values, ascending; pass the same list to `ntxent_lesson` and `alignment_terms` so figure and table agree."""
    train = float(cfg["train"]["temperature"])
    return sorted({train, *(float(t) for t in contrast if not np.isclose(t, train))})


def alignment_terms(batch: dict[str, np.ndarray], temperatures: list[float],
                    train_temperature: float | None = None) -> pd.DataFrame:
    """The L1, cosine and NT-Xent terms of `dermlib.losses` on one batch, on the raw projections as in training
    (NT-Xent and cosine normalise them themselves); NT-Xent at each temperature. With `train_temperature`, a
    column `training temperature` marks the NT-Xent row at the temperature training uses."""
    import torch

    from dermlib import losses

    img, txt = torch.from_numpy(batch["image_raw"]).float(), torch.from_numpy(batch["text_raw"]).float()
    rows = [{"term": "L1 (mean |image - note| per dimension)", "temperature": np.nan,
             "value": float(losses.l1_loss(img, txt))},
            {"term": "cosine (1 - cos(image, own note))", "temperature": np.nan,
             "value": float(losses.cosine_loss(img, txt))}]
    rows += [{"term": "NT-Xent", "temperature": t, "value": float(losses.nt_xent(img, txt, t))} for t in temperatures]
    rows.append({"term": f"NT-Xent if every pair were a guess: log(2N - 1), N = {len(img)}", "temperature": np.nan,
                 "value": float(np.log(2 * len(img) - 1))})
    table = pd.DataFrame(rows)
    if train_temperature is not None:
        table["training temperature"] = (table["term"] == "NT-Xent") & np.isclose(table["temperature"],
                                                                                   train_temperature)
    return table


def query_aps(emb: dict[str, np.ndarray], partition: str = "internal") -> pd.DataFrame:
    """Image -> text AP of every query of one partition (gallery: that partition's notes), sorted by AP."""
    ok = np.flatnonzero(metrics.finite_rows(emb["text_emb"]) & (emb["partition"] == partition))
    labels = emb["label"][ok].astype(str)
    ap = metrics.retrieval_ap(emb["image_emb"][ok], labels, emb["text_emb"][ok], labels)
    frame = pd.DataFrame({"index": ok, "sample_id": emb["sample_id"][ok].astype(str), "label": labels, "ap": ap})
    return frame.sort_values(["ap", "sample_id"], kind="stable").reset_index(drop=True)


def chosen_queries(emb: dict[str, np.ndarray], partition: str = "internal") -> dict[str, int]:
    """Two queries picked on purpose: the one with the median AP (a typical query) and the lowest (a failure)."""
    aps = query_aps(emb, partition)
    return {"median AP": int(aps["index"].iloc[len(aps) // 2]), "lowest AP": int(aps["index"].iloc[0])}


def ranking(emb: dict[str, np.ndarray], query: int, partition: str = "internal") -> pd.DataFrame:
    """The ranked notes of one image query within its partition (`dermlib.metrics.ranked_list`), with the notes."""
    ok = np.flatnonzero(metrics.finite_rows(emb["text_emb"]) & (emb["partition"] == partition))
    ranked = metrics.ranked_list(emb["image_emb"][query], str(emb["label"][query]), emb["text_emb"][ok],
                                 emb["label"][ok].astype(str))
    ranked["note"] = emb["note"][ok][ranked["gallery_index"].to_numpy()].astype(str)
    return ranked


def query_example(emb: dict[str, np.ndarray], query: int, k: int = 5, partition: str = "internal") -> dict[str, Any]:
    """One image query, its AP and its k closest notes, for `dermlib.plots.retrieval_gallery`."""
    ranked = ranking(emb, query, partition)
    ap = float(ranked.loc[ranked["relevant"], "precision"].mean()) if ranked["relevant"].any() else 0.0
    top = ranked.head(k)
    return {"sample_id": str(emb["sample_id"][query]), "label": str(emb["label"][query]), "ap": ap,
            "notes": [str(n) for n in top["note"]], "note_labels": [str(c) for c in top["label"]],
            "scores": [float(v) for v in top["cosine"]]}


def ranking_summary(ranking: pd.DataFrame, top: int | None = None) -> dict[str, Any]:
    """Where a query's relevant items lie in its `ranking` (columns relevant, rank, precision): how many of how
    many, the rank by which half are found, the last one, how many lie beyond `top` (and their ranks), and AP =
    the mean precision at the relevant items."""
    ranked = ranking.reset_index(drop=True)
    hits = ranked.loc[ranked["relevant"].astype(bool), ["rank", "precision"]]
    ranks = hits["rank"].to_numpy()
    beyond = ranks[ranks > top] if top is not None else ranks[:0]
    return {"n": len(ranked), "relevant": len(ranks), "ap": float(hits["precision"].mean()) if len(ranks) else 0.0,
            "half_by": int(ranks[(len(ranks) - 1) // 2]) if len(ranks) else None,
            "last": int(ranks[-1]) if len(ranks) else None, "beyond": len(beyond),
            "beyond_ranks": (int(beyond[0]), int(beyond[-1])) if len(beyond) else None}


def ranking_strips(rankings: dict[str, pd.DataFrame], cfg: dict[str, Any], top: int | None = None) -> plt.Figure:
    """For each named query, its whole ranking (or the first `top` items, counting those left beyond) as a strip,
    relevant items green, and under it the precision at each rank with a dot per relevant item: AP is the mean
    of the dots, drawn as a line."""
    setup_style()
    strip_colours = plt.matplotlib.colors.ListedColormap(["0.85", "#4c9a6a"])
    fig, axes = plt.subplots(2 * len(rankings), 1, figsize=(11, 3.0 * len(rankings) + 0.6), squeeze=False,
                             gridspec_kw={"height_ratios": [0.3, 1.2] * len(rankings)}, layout="constrained")
    for k, (name, ranking) in enumerate(rankings.items()):
        strip, curve = axes[2 * k, 0], axes[2 * k + 1, 0]
        ranked, about = ranking.reset_index(drop=True), ranking_summary(ranking, top)
        shown = ranked if top is None else ranked.head(top)
        hits = shown["relevant"].to_numpy().astype(float)
        strip.imshow(hits[None, :], cmap=strip_colours, vmin=0, vmax=1, aspect="auto", interpolation="nearest",
                     extent=(0.5, len(hits) + 0.5, 0, 1))
        strip.set_yticks([])
        strip.set_xlim(0.5, len(hits) + 0.5)
        strip.tick_params(labelbottom=False)
        strip.grid(False)
        where = (f"{about['relevant']} relevant of {about['n']} notes; half found by rank {about['half_by']}, "
                 f"the last at rank {about['last']}" if about["relevant"] else f"no relevant note among {about['n']}")
        if about["beyond"]:
            lo, hi = about["beyond_ranks"]
            where += f"; {about['beyond']} relevant beyond rank {top} (ranks {lo}-{hi}), not drawn"
        strip.set_title(f"{name}\n{where}", fontsize=9, loc="left")
        curve.plot(shown["rank"], shown["precision"], color="0.6", lw=0.8, label="precision at rank (all items)")
        dots = shown[shown["relevant"].astype(bool)]
        curve.scatter(dots["rank"], dots["precision"], s=12, color="#4c9a6a", zorder=3,
                      label="precision at each relevant item")
        curve.axhline(about["ap"], color="black", ls="--", lw=1,
                      label=f"AP = mean over all {about['relevant']} relevant items = {about['ap']:.2f}")
        curve.set(xlim=(0.5, len(hits) + 0.5), ylim=(0, 1.05), ylabel="precision", yticks=[0, 0.5, 1])
        curve.legend(fontsize=7, loc="upper right", frameon=True)
    axes[-1, 0].set_xlabel("rank (strip: green = a note of the query's class)")
    fig.suptitle(source_title(cfg, "what average precision rewards: relevant notes near the top"), fontsize=11)
    return fig


def ntxent_lesson(sim: np.ndarray, labels: np.ndarray, temperatures: list[float] | None, cfg: dict[str, Any]
                  ) -> plt.Figure:
    """Left: cosine similarity of a batch's images (rows) and notes (columns), the own pairs on the diagonal.
    Right: for image 0, softmax over the notes at each temperature (default `lesson_temperatures(cfg)`; the
    training one, `train.temperature`, is always drawn and marked) - the probability NT-Xent asks to put on its pair."""
    setup_style()
    train = float(cfg["train"]["temperature"])
    temperatures = lesson_temperatures(cfg) if temperatures is None else list(temperatures)
    if not any(np.isclose(t, train) for t in temperatures):
        temperatures = sorted([*temperatures, train])
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [1.1, 1]})
    sns.heatmap(sim, cmap="vlag", vmin=-1, vmax=1, ax=left, square=True,
                xticklabels=labels, yticklabels=labels, cbar_kws={"label": "cosine"})
    for i in range(len(sim)):
        left.add_patch(plt.Rectangle((i, i), 1, 1, fill=False, edgecolor="black", lw=1.5))
    left.set(xlabel="note of sample (class)", ylabel="image of sample (class)",
             title="one batch: diagonal = own pairs (positives), the rest negatives")
    left.tick_params(labelsize=7)
    x = np.arange(sim.shape[1])
    width = 0.8 / len(temperatures)
    for j, t in enumerate(temperatures):
        p = softmax(sim[0] / t)
        trains = np.isclose(t, train)
        label = f"tau = {t:g}{' (training: train.temperature)' if trains else ''}: p(own note) = {p[0]:.2f}"
        right.bar(x + (j - (len(temperatures) - 1) / 2) * width, p, width, label=label,
                  edgecolor="black" if trains else "none", lw=1.2 if trains else 0)
    right.set_xticks(x, labels, fontsize=7, rotation=90)
    right.set(xlabel="note (sample 0's own note is first)", ylabel="softmax probability",
              title="image 0 against the notes (the image-to-note part of NT-Xent):\nlower temperature, sharper choice")
    right.legend(fontsize=8, frameon=False, title="outlined: the temperature training uses", title_fontsize=8)
    fig.suptitle(source_title(cfg, f"NT-Xent on a batch of {len(sim)} real image-note pairs, as the trained model embeds them"))
    fig.tight_layout()
    return fig
