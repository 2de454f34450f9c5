"""Metrics of the paper: Cohen's kappa and friends for classification, class-level retrieval mAP, Recall@k and
paired cosine similarity for the shared embedding space, and a summary over seeds (intervals and paired comparisons
are `dermlib.evaluate.stats`).

Embeddings may be numpy arrays or torch tensors (any device); everything is computed in numpy float32 with the
similarity matrix built in chunks of queries, so a 30,000 x 30,000 pool never needs more than a few hundred MB.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn.metrics import confusion_matrix


# Similarity-matrix entries held at once (per chunk of queries): 2**23 floats = 32 MB; with sort
# indices and cumulative counts a chunk peaks near 350 MB.
CHUNK_ELEMENTS = 2**23


def to_numpy(x: Any, dtype: type = np.float32) -> np.ndarray:
    """An array from a numpy array, list or torch tensor (detached, moved to CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _labels(x: Any) -> np.ndarray:
    """Class labels (strings or ints) as a 1-D numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x).ravel()


def l2_normalise(x: Any) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), so dot products are cosine similarities."""
    arr = to_numpy(x)
    if arr.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D [items, dim] array, got shape {arr.shape}")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    return arr / np.where(norms > 0, norms, 1.0)


def finite_rows(x: Any) -> np.ndarray:
    """Boolean mask of the rows with no NaN/inf (e.g. the samples whose note was embedded)."""
    return np.isfinite(to_numpy(x)).all(axis=1)


def _chunks(n_rows: int, n_cols: int) -> list[slice]:
    """Row slices so that a [rows, n_cols] block stays under CHUNK_ELEMENTS entries."""
    step = max(1, CHUNK_ELEMENTS // max(n_cols, 1))
    return [slice(i, min(i + step, n_rows)) for i in range(0, n_rows, step)]


# ----------------------------------------------------------------------------------------------- classification
# sklearn's metric functions validate their inputs on every call (milliseconds each); a grid evaluates thousands of
# small groups, so these build one confusion matrix by bincount instead. Tests check them against sklearn.
def _confusion_matrix(y_true: Sequence, y_pred: Sequence) -> np.ndarray:
    """Counts (k, k) over the labels occurring in either sequence, in one shared order ((0, 0) for no labels)."""
    y_true, y_pred = _labels(y_true), _labels(y_pred)
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} labels but y_pred {len(y_pred)}")
    codes, uniques = pd.factorize(np.concatenate([y_true, y_pred]), sort=False)
    k, n = len(uniques), len(y_true)
    return np.bincount(codes[:n] * k + codes[n:], minlength=k * k).reshape(k, k).astype(np.float64)


def cohen_kappa(y_true: Sequence, y_pred: Sequence) -> float:
    """Cohen's kappa (unweighted), the paper's headline; NaN when it is undefined (a single class everywhere)."""
    return kappa_parts(y_true, y_pred)["kappa"]


def kappa_parts(y_true: Sequence, y_pred: Sequence) -> dict[str, float]:
    """Observed agreement p_o, chance agreement p_e (from the marginals) and kappa = (p_o - p_e) / (1 - p_e)."""
    matrix = _confusion_matrix(y_true, y_pred)
    if not matrix.size:
        return {"p_observed": float("nan"), "p_chance": float("nan"), "kappa": float("nan")}
    total = matrix.sum()
    p_o = np.trace(matrix) / total
    p_e = float((matrix.sum(axis=0) * matrix.sum(axis=1)).sum() / total**2)
    return {"p_observed": float(p_o), "p_chance": p_e, "kappa": float((p_o - p_e) / (1 - p_e)) if p_e < 1 else np.nan}


def balanced_accuracy(y_true: Sequence, y_pred: Sequence) -> float:
    """Mean recall over the classes present in `y_true` (predicted classes absent from it count as errors)."""
    matrix = _confusion_matrix(y_true, y_pred)
    if not matrix.size:
        return float("nan")
    support = matrix.sum(axis=1)
    present = support > 0
    return float((np.diag(matrix)[present] / support[present]).mean())


def _auroc_columns(positive: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUROC of each column of `scores` (n, m) against the boolean column of `positive` (n, m): the Mann-Whitney
    statistic from mid-ranks (ties count one half), which is what `roc_auc_score` computes; NaN for a column
    whose truth is all one value."""
    n_pos = positive.sum(axis=0)
    n_neg = len(positive) - n_pos
    ranks = rankdata(scores, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0),
                        ((ranks * positive).sum(axis=0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg), np.nan)


def auroc(y_true: Sequence[bool], scores: Any) -> float:
    """Binary AUROC of `scores` for the True items of `y_true` (NaN when only one value occurs)."""
    positive = np.asarray(y_true, dtype=bool)
    return float(_auroc_columns(positive[:, None], to_numpy(scores, np.float64).reshape(-1, 1))[0])


def macro_auroc(y_true: Sequence, proba: Any, classes: Sequence[str]) -> float:
    """One-vs-rest AUROC averaged over the classes that occur in `y_true` (and are not all of it).

    `proba` is [n, len(classes)] in `classes` order. Classes absent from a split (common on small or external
    sources) are skipped rather than breaking the average; NaN when fewer than two classes occur.
    """
    y_true = _labels(y_true)
    scores = to_numpy(proba, np.float64)
    if scores.shape != (len(y_true), len(classes)):
        raise ValueError(f"proba has shape {scores.shape}, expected ({len(y_true)}, {len(classes)})")
    positive = y_true[:, None] == np.asarray(classes, dtype=object)[None, :]
    usable = positive.any(axis=0) & ~positive.all(axis=0)
    return float(_auroc_columns(positive[:, usable], scores[:, usable]).mean()) if usable.any() else float("nan")


def confusion(y_true: Sequence, y_pred: Sequence, classes: Sequence[str]) -> pd.DataFrame:
    """Confusion matrix as a DataFrame: rows = true class, columns = predicted class, in `classes` order."""
    matrix = confusion_matrix(_labels(y_true), _labels(y_pred), labels=list(classes))
    return pd.DataFrame(matrix, index=pd.Index(classes, name="true"), columns=pd.Index(classes, name="predicted"))


# ---------------------------------------------------------------------------------------------------- retrieval
def retrieval_ap(query_emb: Any, query_labels: Sequence, gallery_emb: Any, gallery_labels: Sequence, *,
                 exclude_pair: bool = False) -> np.ndarray:
    """Average precision of every query: gallery ranked by cosine similarity, relevant = same class.

    `exclude_pair`: query i and gallery item i are one image-note pair, and item i is left out of query i's
    gallery (so a query is never rewarded for finding its own note).

    AP = (1 / #relevant) * sum over relevant items r of precision at r, where precision at r counts every
    gallery item scoring >= r's score. Items with equal similarity therefore form one block (exactly as
    `sklearn.metrics.average_precision_score`), so the result does not depend on gallery order.
    Queries whose class has no item in the gallery get NaN.
    """
    return retrieval_ap_relabelled(query_emb, query_labels, gallery_emb, [gallery_labels], exclude_pair=exclude_pair)[0]


def retrieval_ap_relabelled(query_emb: Any, query_labels: Sequence, gallery_emb: Any,
                            gallery_labellings: Sequence[Sequence], *, exclude_pair: bool = False) -> np.ndarray:
    """`retrieval_ap` under several labellings of the same gallery, (n_labellings, n_queries): the gallery is
    ranked once and each labelling only decides which items are relevant (e.g. permuted labels for chance)."""
    q, g = l2_normalise(query_emb), l2_normalise(gallery_emb)
    q_lab, g_labs = _labels(query_labels), [_labels(labels) for labels in gallery_labellings]
    if len(q) != len(q_lab) or any(len(g) != len(labels) for labels in g_labs):
        raise ValueError(f"embeddings and labels differ in length: query {len(q)} vs {len(q_lab)}, "
                         f"gallery {len(g)} vs {sorted({len(labels) for labels in g_labs})}")
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"query and gallery dimensions differ: {q.shape[1]} vs {g.shape[1]}")
    if exclude_pair and len(q) != len(g):
        raise ValueError(f"exclude_pair needs paired rows, got {len(q)} queries and {len(g)} gallery items")
    # Integer class codes shared by query and gallery, so relevance is an integer comparison.
    codes, _ = pd.factorize(np.concatenate([q_lab, *g_labs]))
    q_code, g_codes = codes[: len(q_lab)], codes[len(q_lab):].reshape(len(g_labs), len(g))
    ap = np.full((len(g_labs), len(q)), np.nan)
    positions = np.arange(1, len(g) + 1, dtype=np.float32)
    for rows in _chunks(len(q), len(g)):
        sim = q[rows] @ g.T
        own = np.arange(len(q))[rows]
        if exclude_pair:
            sim[np.arange(len(own)), own] = -np.inf  # ranked last, and not relevant (below)
        order = np.argsort(-sim, axis=1)  # order inside a block of ties is irrelevant (see below)
        sim_sorted = np.take_along_axis(sim, order, axis=1)
        tied_next = sim_sorted[:, :-1] == sim_sorted[:, 1:]
        end = None
        if tied_next.any():
            # Judge every item of a block of equal scores at the block's last position.
            last = np.ones(sim.shape, dtype=bool)
            last[:, :-1] = ~tied_next
            end = np.where(last, np.arange(len(g)), len(g))
            end = np.minimum.accumulate(end[:, ::-1], axis=1)[:, ::-1]
        for i, g_code in enumerate(g_codes):
            relevant = g_code[order] == q_code[rows, None]
            if exclude_pair:
                relevant &= order != own[:, None]
            hits = np.cumsum(relevant, axis=1, dtype=np.int32)
            if end is not None:
                precision = np.take_along_axis(hits, end, axis=1) / positions[end]
            else:
                precision = hits / positions
            n_relevant = hits[:, -1]
            summed = np.where(relevant, precision, 0.0).sum(axis=1, dtype=np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                ap[i, rows] = np.where(n_relevant > 0, summed / n_relevant, np.nan)
    return ap


def retrieval_ap_at_k(query_emb: Any, query_labels: Sequence, gallery_emb: Any, gallery_labels: Sequence,
                      k: int) -> np.ndarray:
    """Per query, the authors' AP@k (`ilmaro8/multimodal_learning`, `scripts/utils_retrieval.py`): the sum over the
    first k gallery items of precision@i at each relevant item, divided by *all* relevant items of the gallery (not
    by the relevant ones found in the first k), so a query whose class has more than k items cannot reach 1.

    Ranked by cosine; ties keep gallery order (a stable sort), as a plain argsort does. NaN when the query's class
    has no item in the gallery. A sensitivity beside `retrieval_ap` (the full ranking, ties as blocks).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    q, g = l2_normalise(query_emb), l2_normalise(gallery_emb)
    q_lab, g_lab = _labels(query_labels), _labels(gallery_labels)
    if len(q) != len(q_lab) or len(g) != len(g_lab):
        raise ValueError(f"embeddings and labels differ in length: query {len(q)} vs {len(q_lab)}, gallery "
                         f"{len(g)} vs {len(g_lab)}")
    codes, _ = pd.factorize(np.concatenate([q_lab, g_lab]))
    q_code, g_code = codes[: len(q_lab)], codes[len(q_lab):]
    n_relevant = np.bincount(g_code, minlength=codes.max() + 1 if len(codes) else 0)[q_code]
    top = min(k, len(g))
    ap = np.full(len(q), np.nan)
    for rows in _chunks(len(q), len(g)):
        order = np.argsort(-(q[rows] @ g.T), axis=1, kind="stable")[:, :top]
        relevant = g_code[order] == q_code[rows, None]
        precision = np.cumsum(relevant, axis=1) / np.arange(1, top + 1)
        summed = np.where(relevant, precision, 0.0).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            ap[rows] = np.where(n_relevant[rows] > 0, summed / n_relevant[rows], np.nan)
    return ap


def ranked_list(query_emb: Any, query_label: str, gallery_emb: Any, gallery_labels: Sequence) -> pd.DataFrame:
    """One query's gallery ranking, for reading AP by hand: rank, cosine, label, relevant and the precision at
    each item, i.e. relevant items / all items scoring >= it (ties count as one block, as in retrieval_ap).

    The query's AP is the mean of `precision` over the relevant rows.
    """
    q = l2_normalise(np.atleast_2d(to_numpy(query_emb)))
    sim = l2_normalise(gallery_emb) @ q[0]
    order = np.argsort(-sim, kind="stable")
    ranked, labels = sim[order], _labels(gallery_labels)[order]
    relevant = labels == query_label
    at_or_above = np.searchsorted(-ranked, -ranked, side="right")  # items scoring >= this one
    relevant_at_or_above = np.cumsum(relevant)[at_or_above - 1]
    return pd.DataFrame({"rank": np.arange(1, len(order) + 1), "gallery_index": order, "cosine": ranked,
                         "label": labels, "relevant": relevant, "at_or_above": at_or_above,
                         "relevant_at_or_above": relevant_at_or_above,
                         "precision": relevant_at_or_above / at_or_above})


def retrieval_map(query_emb: Any, query_labels: Sequence, gallery_emb: Any, gallery_labels: Sequence) -> float:
    """Class-level mean average precision (queries without any relevant gallery item are left out).

    Image->text: `retrieval_map(image_emb, labels, text_emb, labels)`; text->image: swap the arguments.
    """
    return nanmean(retrieval_ap(query_emb, query_labels, gallery_emb, gallery_labels))


def recall_hits(query_emb: Any, gallery_emb: Any, k: int | Sequence[int]) -> np.ndarray:
    """Per query, the probability that its paired gallery item (same row) is in the top k; (len(ks), n) when
    `k` is a list (one ranking for every k).

    With g items scoring strictly higher and t other items tied with the pair, ties are broken at random:
    the value is clip((k - g) / (t + 1), 0, 1), i.e. 1/0 without ties and the expected hit with them
    (template notes are often identical, so ties are real).
    """
    q, g = l2_normalise(query_emb), l2_normalise(gallery_emb)
    ks = np.atleast_1d(np.asarray(k, dtype=np.int64))
    if len(q) != len(g):
        raise ValueError(f"recall@k pairs row i with row i: query has {len(q)} rows, gallery {len(g)}")
    if (ks < 1).any():
        raise ValueError(f"k must be >= 1, got {k}")
    higher, tied = np.empty(len(q)), np.empty(len(q))
    for rows in _chunks(len(q), len(g)):
        sim = q[rows] @ g.T
        paired = sim[np.arange(sim.shape[0]), np.arange(rows.start, rows.stop)][:, None]
        higher[rows] = (sim > paired).sum(axis=1)
        tied[rows] = (sim == paired).sum(axis=1) - 1
    hits = np.clip((ks[:, None] - higher) / (tied + 1), 0.0, 1.0)
    return hits if np.ndim(k) else hits[0]


def recall_at_k(query_emb: Any, gallery_emb: Any, k: int | Sequence[int]) -> float | list[float]:
    """Instance-level Recall@k: share of queries whose paired item (same row index) ranks in the top k (one
    value per k when `k` is a list)."""
    hits = recall_hits(query_emb, gallery_emb, k)
    return hits.mean(axis=1).tolist() if np.ndim(k) else float(hits.mean())


def paired_cosine(a: Any, b: Any) -> np.ndarray:
    """Cosine similarity of row i of `a` with row i of `b` (each image with its own note)."""
    a, b = l2_normalise(a), l2_normalise(b)
    if a.shape != b.shape:
        raise ValueError(f"paired_cosine needs equal shapes, got {a.shape} and {b.shape}")
    return np.einsum("ij,ij->i", a, b)


def paired_cosine_lift(a: Any, b: Any) -> np.ndarray:
    """Per pair i: cos(a_i, b_i) minus the mean cosine of a_i with every other row of `b` (its own chance level).

    The mean over pairs is the paired cosine minus the mean over all shuffles that move every pair, so a strategy
    whose notes all look alike (high cosine to any image) is not credited for it.
    """
    a, b = l2_normalise(a), l2_normalise(b)
    if a.shape != b.shape or len(a) < 2:
        raise ValueError(f"paired_cosine_lift needs equal shapes with 2+ rows, got {a.shape} and {b.shape}")
    own = np.einsum("ij,ij->i", a, b)
    others = (a @ b.sum(axis=0) - own) / (len(a) - 1)  # sum over j != i of a_i . b_j, averaged
    return own - others


# -------------------------------------------------------------------------------------------------- seeds
def nanmean(values: np.ndarray) -> float:
    """Mean ignoring NaN (NaN when nothing is left): the bootstrap statistic for per-query AP."""
    values = np.asarray(values, dtype=np.float64)
    return float(values[np.isfinite(values)].mean()) if np.isfinite(values).any() else float("nan")


def summarise_seeds(results: pd.DataFrame, keys: Sequence[str] = ("profile", "strategy", "source", "partition",
                                                                   "metric")) -> pd.DataFrame:
    """Mean, sample sd and number of seeds of `value` per group of a tidy results table."""
    keys = [k for k in keys if k in results.columns]
    grouped = results.groupby(keys, dropna=False, sort=True)["value"]
    out = grouped.agg(mean="mean", sd="std", n_seeds="count").reset_index()
    out["sd"] = out["sd"].fillna(0.0).where(out["n_seeds"] > 0)
    return out
