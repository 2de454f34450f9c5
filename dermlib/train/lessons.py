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

import torch

from dermlib import metrics
from dermlib.notes.store import first_notes
from dermlib.train import losses
from dermlib.train.inference import encode, load_run
from dermlib.data.preprocess import cached_pixels
from dermlib.data.schema import read_manifest
from dermlib.plotstyle import setup_style, source_title
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
    """The L1, cosine and NT-Xent terms of `dermlib.train.losses` on one batch, on the raw projections as in training
    (NT-Xent and cosine normalise them themselves); NT-Xent at each temperature. With `train_temperature`, a
    column `training temperature` marks the NT-Xent row at the temperature training uses."""

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
             title="cosine in one batch (diagonal: own pairs)")
    left.tick_params(labelsize=7)
    x = np.arange(sim.shape[1])
    width = 0.8 / len(temperatures)
    for j, t in enumerate(temperatures):
        p = softmax(sim[0] / t)
        trains = np.isclose(t, train)
        label = f"τ = {t:g}{' (training)' if trains else ''}: p(own note) = {p[0]:.2f}"
        right.bar(x + (j - (len(temperatures) - 1) / 2) * width, p, width, label=label,
                  edgecolor="black" if trains else "none", lw=1.2 if trains else 0)
    right.set_xticks(x, labels, fontsize=7, rotation=90)
    right.set(xlabel="note (sample 0's own note is first)", ylabel="softmax probability",
              title="image 0 against the notes, per temperature")
    right.legend(fontsize=8, frameon=False, title="outlined: the temperature training uses", title_fontsize=8)
    fig.suptitle(source_title(cfg, f"NT-Xent on one batch ({len(sim)} image–note pairs)"))
    fig.tight_layout()
    return fig
