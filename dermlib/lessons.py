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


def alignment_terms(batch: dict[str, np.ndarray], temperatures: list[float]) -> pd.DataFrame:
    """The L1, cosine and NT-Xent terms of `dermlib.losses` on one batch, on the raw projections as in training
    (NT-Xent and cosine normalise them themselves); NT-Xent at each temperature."""
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
    return pd.DataFrame(rows)


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


def ranking_strips(rankings: dict[str, pd.DataFrame], cfg: dict[str, Any], top: int = 60) -> plt.Figure:
    """For each named query, its first `top` retrieved items as a strip: relevant (green) or not (grey)."""
    setup_style()
    fig, axes = plt.subplots(len(rankings), 1, figsize=(11, 0.9 * len(rankings) + 0.8), squeeze=False)
    for ax, (name, ranking) in zip(axes[:, 0], rankings.items()):
        hits = ranking["relevant"].to_numpy()[:top].astype(float)
        ax.imshow(hits[None, :], cmap=plt.matplotlib.colors.ListedColormap(["0.85", "#4c9a6a"]), vmin=0, vmax=1,
                  aspect="auto")
        ax.set_yticks([])
        ax.set_xticks(np.arange(0, len(hits), 10), np.arange(1, len(hits) + 1, 10))
        ax.set_title(name, fontsize=9, loc="left")
        ax.grid(False)
    axes[-1, 0].set_xlabel("rank (green: a note of the query's class)")
    fig.suptitle(source_title(cfg, "what average precision rewards: relevant notes near the top"), fontsize=11)
    fig.tight_layout()
    return fig


def ntxent_lesson(sim: np.ndarray, labels: np.ndarray, temperatures: list[float], cfg: dict[str, Any]) -> plt.Figure:
    """Left: cosine similarity of a batch's images (rows) and notes (columns), the own pairs on the diagonal.
    Right: for image 0, softmax over the notes at each temperature - the probability NT-Xent asks to put on its pair."""
    setup_style()
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
        right.bar(x + (j - (len(temperatures) - 1) / 2) * width, softmax(sim[0] / t), width, label=f"tau = {t:g}")
    right.set_xticks(x, labels, fontsize=7, rotation=90)
    right.set(xlabel="note (sample 0's own note is first)", ylabel="softmax probability",
              title="image 0 against the notes (the image-to-note part of NT-Xent):\nlower temperature, sharper choice")
    right.legend(fontsize=8, frameon=False)
    fig.suptitle(source_title(cfg, f"NT-Xent on a batch of {len(sim)} real image-note pairs, as the trained model embeds them"))
    fig.tight_layout()
    return fig
