"""Metric rows of one run's pool embeddings (`evaluate_embeddings`): classification from the image branch, retrieval
both ways, paired cosine and chance baselines per (partition, source); and the per-image values the paired
comparisons resample (`sample_values`). Pure numpy: no torch, no files."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.special import softmax

from dermlib import metrics
from dermlib.data.labels import config_classes
from dermlib.evaluate import stats


CLASSIFICATION = ["kappa", "balanced_accuracy", "macro_auroc"]
# + recall@k_i2t / recall@k_t2i; map_*_at_k is the authors' AP@k normaliser (a sensitivity: `metrics.retrieval_ap_at_k`)
EMBEDDING_METRICS = ["map_i2t", "map_t2i", "paired_cosine", "map_i2t_at_k", "map_t2i_at_k"]
POOLED = "pooled"
CHANCE_PERMUTATIONS = 20  # label / pair permutations behind each chance baseline
RETRIEVAL = ("ap_i2t", "ap_t2i", "ap_i2t_at_k", "ap_t2i_at_k")  # per-query values of one group (`group_retrieval`)


def metric_names(cfg: dict[str, Any]) -> list[str]:
    """Every metric a text run reports, in table order."""
    recalls = [f"recall@{k}_{d}" for d in ("i2t", "t2i") for k in cfg["eval"]["recall_k"]]
    return CLASSIFICATION + EMBEDDING_METRICS + recalls


def metric_groups(pool: pd.DataFrame) -> list[tuple[str, str, np.ndarray]]:
    """(partition, source, row mask): every source, then each partition pooled."""
    out = []
    for (partition, source), part in pool.groupby(["partition", "source"], sort=True):
        out.append((str(partition), str(source), pool.index.isin(part.index)))
    for partition in sorted(pool["partition"].dropna().unique()):
        out.append((str(partition), POOLED, (pool["partition"] == partition).fillna(False).to_numpy(dtype=bool)))
    return out


def predicted_labels(emb: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    """Predicted class per pool sample from the IMAGE branch only (argmax of `image_logits`; notes never classify)."""
    return np.asarray(names, dtype=object)[emb["image_logits"].argmax(axis=1)]


def metric_row(metric: str, value: float, n: int, ci: tuple[float, float] = (np.nan, np.nan)) -> dict[str, Any]:
    """One metric row of the results table (without the run columns)."""
    return {"metric": metric, "value": float(value), "ci_low": float(ci[0]), "ci_high": float(ci[1]), "n": int(n)}


def _ci(replicates: np.ndarray) -> tuple[float, float]:
    finite = replicates[np.isfinite(replicates)]
    return tuple(np.percentile(finite, [2.5, 97.5])) if len(finite) else (np.nan, np.nan)


def _retrieval(img: np.ndarray, txt: np.ndarray, y: np.ndarray, exclude: bool, k: int) -> dict[str, np.ndarray]:
    """Per-query AP image->text and text->image on one pool (`exclude`: a query's own pair is not in its gallery),
    and the authors' AP@k both ways (`metrics.retrieval_ap_at_k`, its gallery always whole)."""
    return {"ap_i2t": metrics.retrieval_ap(img, y, txt, y, exclude_pair=exclude),
            "ap_t2i": metrics.retrieval_ap(txt, y, img, y, exclude_pair=exclude),
            "ap_i2t_at_k": metrics.retrieval_ap_at_k(img, y, txt, y, k),
            "ap_t2i_at_k": metrics.retrieval_ap_at_k(txt, y, img, y, k)}


def group_retrieval(emb: dict[str, np.ndarray], pool: pd.DataFrame, cfg: dict[str, Any]
                    ) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """Per-query AP both ways and AP@k (`_retrieval`, keys RETRIEVAL) in every (partition, source) group of
    `metric_groups` with at least two image-note pairs, over those pairs in pool order: what the result rows and
    the per-sample values both read."""
    text = emb.get("text_emb")
    if text is None:
        return {}
    exclude = bool(cfg["eval"]["exclude_own_pair"])
    labels = pool["label"].astype(str).to_numpy()
    paired_rows = metrics.finite_rows(text)
    out = {}
    for partition, source, mask in metric_groups(pool):
        paired = mask & paired_rows
        if paired.sum() >= 2:
            out[(partition, source)] = _retrieval(emb["image_emb"][paired], text[paired], labels[paired], exclude,
                                                  int(cfg["eval"]["map_at_k"]))
    return out


def chance_values(img: np.ndarray, txt: np.ndarray, y: np.ndarray, exclude: bool, seed: int = 0) -> dict[str, float]:
    """What chance gives on this pool (a source, or a pooled partition): mAP with the gallery's labels permuted
    among its own items, cosine of shuffled pairs."""
    rng = np.random.default_rng(seed)
    permuted = [y[rng.permutation(len(y))] for _ in range(CHANCE_PERMUTATIONS)]
    i2t = metrics.retrieval_ap_relabelled(img, y, txt, permuted, exclude_pair=exclude)
    t2i = metrics.retrieval_ap_relabelled(txt, y, img, permuted, exclude_pair=exclude)
    cos = []
    for _ in range(CHANCE_PERMUTATIONS):
        shift = (np.arange(len(y)) + rng.integers(1, len(y))) % len(y)  # every image with another image's note
        cos.append(float(metrics.paired_cosine(img, txt[shift]).mean()))
    return {"chance_map_i2t": float(np.mean([metrics.nanmean(row) for row in i2t])),
            "chance_map_t2i": float(np.mean([metrics.nanmean(row) for row in t2i])),
            "chance_paired_cosine": float(np.mean(cos))}


def source_only_values(y: np.ndarray, sources: np.ndarray, exclude: bool) -> np.ndarray:
    """Per query, the AP of a ranking that knows only the source: every item of the query's own source tied first,
    the rest tied after (ties as blocks, as `metrics.retrieval_ap`). What a pooled gallery gives for recognising the
    source alone; the same both ways (a pair's image and note share their source)."""
    onehot = (sources[:, None] == np.unique(sources)[None, :]).astype(np.float32)
    return metrics.retrieval_ap(onehot, y, onehot, y, exclude_pair=exclude)


def evaluate_embeddings(emb: dict[str, np.ndarray], pool: pd.DataFrame, cfg: dict[str, Any],
                        retrieval: dict[tuple[str, str], dict[str, np.ndarray]] | None = None) -> pd.DataFrame:
    """Metric rows (partition, source, metric, value, ci_low, ci_high, n) of one run's pool embeddings.

    Intervals are percentile bootstraps that resample clusters (patients, else lesions, else images) of the
    group; every group, each source and each pooled partition, also gets its chance baselines (`chance_map_*`,
    `chance_paired_cosine`: labels permuted, pairs shuffled, within that group), and each pooled partition the mAP of
    a ranking by source alone (`source_only_map`, `source_only_values`). `retrieval` is `group_retrieval`'s
    result when the caller already has it.
    """
    retrieval = group_retrieval(emb, pool, cfg) if retrieval is None else retrieval
    names = config_classes(cfg)
    n_boot, k_list = int(cfg["eval"]["bootstrap"]), list(cfg["eval"]["recall_k"])
    exclude = bool(cfg["eval"]["exclude_own_pair"])
    labels = pool["label"].astype(str).to_numpy()
    sources = pool["source"].astype(str).to_numpy()
    proba = softmax(emb["image_logits"].astype(np.float64), axis=1)
    predicted = predicted_labels(emb, names)
    y_code = pd.Categorical(labels, categories=names).codes.astype(np.int64)
    p_code = pd.Categorical(predicted, categories=names).codes.astype(np.int64)
    clusters = stats.cluster_ids(pool)
    text = emb.get("text_emb")
    has_text = metrics.finite_rows(text) if text is not None else np.zeros(len(pool), dtype=bool)
    rows = []
    for partition, source, mask in metric_groups(pool):
        where = {"partition": partition, "source": source}
        y, p = labels[mask], predicted[mask]
        weights = stats.cluster_weights(clusters[mask], n_boot, seed=0)
        kappa = metrics.cohen_kappa(y_code[mask], p_code[mask])
        boot = stats.weighted_kappa(y_code[mask], p_code[mask], weights, len(names))
        rows.append({**where, **metric_row("kappa", kappa, mask.sum(), _ci(boot))})
        rows.append({**where, **metric_row("balanced_accuracy", metrics.balanced_accuracy(y, p), mask.sum())})
        rows.append({**where, **metric_row("macro_auroc", metrics.macro_auroc(y, proba[mask], names), mask.sum())})
        paired = mask & has_text
        n_pairs = int(paired.sum())
        if text is None or n_pairs < 2:  # the Img baseline (or no notes here): retrieval is not defined
            for metric in metric_names(cfg)[len(CLASSIFICATION):]:
                rows.append({**where, **metric_row(metric, np.nan, n_pairs)})
            continue
        img, txt, y = emb["image_emb"][paired], text[paired], labels[paired]
        weights = stats.cluster_weights(clusters[paired], n_boot, seed=0)
        cosine = metrics.paired_cosine(img, txt)
        found = retrieval[(partition, source)]
        for metric, values in (("map_i2t", found["ap_i2t"]), ("map_t2i", found["ap_t2i"]), ("paired_cosine", cosine),
                               ("map_i2t_at_k", found["ap_i2t_at_k"]), ("map_t2i_at_k", found["ap_t2i_at_k"])):
            point = metrics.nanmean(values)
            rows.append({**where, **metric_row(metric, point, np.isfinite(values).sum(),
                                         _ci(stats.weighted_mean(values, weights)))})
        for direction, (q, g) in (("i2t", (img, txt)), ("t2i", (txt, img))):
            for k, recall in zip(k_list, metrics.recall_at_k(q, g, k_list)):
                rows.append({**where, **metric_row(f"recall@{k}_{direction}", recall, n_pairs)})
        for metric, value in chance_values(img, txt, y, exclude).items():
            rows.append({**where, **metric_row(metric, value, n_pairs)})
        if source == POOLED:  # a pooled gallery mixes sources: what knowing only the source gives there
            values = source_only_values(y, sources[paired], exclude)
            rows.append({**where, **metric_row(stats.SOURCE_ONLY, metrics.nanmean(values), np.isfinite(values).sum())})
    return pd.DataFrame(rows)


def source_lift(img: np.ndarray, txt: np.ndarray, sources: np.ndarray) -> np.ndarray:
    """Per pair, its paired cosine above its mean cosine to the other notes of its own source
    (`metrics.paired_cosine_lift` within each source); NaN in a source with fewer than two pairs."""
    lift = np.full(len(img), np.nan)
    for name in np.unique(sources):
        own = sources == name
        if own.sum() >= 2:
            lift[own] = metrics.paired_cosine_lift(img[own], txt[own])
    return lift


def cosine_values(emb: dict[str, np.ndarray], pool: pd.DataFrame) -> pd.DataFrame:
    """Per test image of each pooled partition, in `sample_values`' row order: its raw paired cosine and that cosine
    above its own source's chance (`cosine_lift_source`); NaN without a note. What the last-checkpoint sensitivity of
    question (c) reads (no retrieval)."""
    text = emb.get("text_emb")
    sources = pool["source"].astype(str).to_numpy()
    frames = []
    for partition, source, mask in metric_groups(pool):
        if source != POOLED:
            continue
        part = pd.DataFrame({"sample_id": pool["sample_id"].astype(str).to_numpy()[mask], "cosine": np.nan,
                             "cosine_lift_source": np.nan})
        if text is not None:
            paired = metrics.finite_rows(text)[mask]
            img, txt, src = emb["image_emb"][mask][paired], text[mask][paired], sources[mask][paired]
            part.loc[paired, "cosine"] = metrics.paired_cosine(img, txt)
            part.loc[paired, "cosine_lift_source"] = source_lift(img, txt, src)
        frames.append(part)
    return pd.concat(frames, ignore_index=True)


def sample_values(emb: dict[str, np.ndarray], pool: pd.DataFrame, cfg: dict[str, Any],
                  retrieval: dict[tuple[str, str], dict[str, np.ndarray]] | None = None) -> pd.DataFrame:
    """Per test image of each pooled partition, what `dermlib.evaluate.stats` and `dermlib.evaluate.protocol` resample:
    its source and cluster, true and predicted class codes, and (NaN without a note) its AP as a query both ways
    against the partition's gallery (`ap_*`) and against its own source's gallery only (`ap_*_source`, as the
    per-source rows; `ap_*_source_at_k` with the authors' AP@k), its raw paired cosine, and that cosine above its
    chance: minus its mean cosine to the other notes of the partition (`cosine_lift`) or of its own source
    (`cosine_lift_source`). `retrieval` is `group_retrieval`'s result when the caller has it."""
    retrieval = group_retrieval(emb, pool, cfg) if retrieval is None else retrieval
    names = config_classes(cfg)
    labels = pool["label"].astype(str).to_numpy()
    sources = pool["source"].astype(str).to_numpy()
    y_code = pd.Categorical(labels, categories=names).codes.astype(np.int64)
    p_code = emb["image_logits"].argmax(axis=1).astype(np.int64)
    text = emb.get("text_emb")
    has_text = metrics.finite_rows(text) if text is not None else np.zeros(len(pool), dtype=bool)
    per_source = ["ap_i2t_source", "ap_t2i_source", "ap_i2t_source_at_k", "ap_t2i_source_at_k"]  # RETRIEVAL's order
    per_pair = ["ap_i2t", "ap_t2i", "cosine", "cosine_lift", *per_source, "cosine_lift_source"]
    clusters = stats.cluster_ids(pool)
    frames = []
    for partition, source, mask in metric_groups(pool):
        if source != POOLED:
            continue
        part = pd.DataFrame({"sample_id": pool["sample_id"].astype(str).to_numpy()[mask], "partition": partition,
                             "source": sources[mask], "cluster": clusters[mask], "y": y_code[mask],
                             "pred": p_code[mask], **{column: np.nan for column in per_pair}})
        paired = has_text[mask]
        if text is not None and paired.sum() >= 2:
            img, txt = emb["image_emb"][mask][paired], text[mask][paired]
            pooled = retrieval[(partition, POOLED)]
            src = sources[mask][paired]
            values = {"ap_i2t": pooled["ap_i2t"], "ap_t2i": pooled["ap_t2i"],
                      "cosine": metrics.paired_cosine(img, txt), "cosine_lift": metrics.paired_cosine_lift(img, txt),
                      "cosine_lift_source": source_lift(img, txt, src),
                      **{column: np.full(len(img), np.nan) for column in per_source}}
            for name in np.unique(src):
                if (partition, name) in retrieval:  # the gallery of this source alone, as its per-source result row
                    found = retrieval[(partition, name)]
                    for column, key in zip(per_source, RETRIEVAL):
                        values[column][src == name] = found[key]
            for column, value in values.items():
                part.loc[paired, column] = value
        frames.append(part)
    return pd.concat(frames, ignore_index=True)
