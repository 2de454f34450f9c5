"""What a trained image–text model knows beyond its classifier: zero-shot classification from class prompts,
concept retrieval against known attributes, and a linear probe on its frozen image embeddings.

- Zero-shot: each class is described by an ensemble of prompts written with the M template (the diagnosis, and
  the diagnosis with each imaging modality); an image takes the class whose mean prompt embedding is closest.
  The prompts used are returned with the scores, so anyone can reproduce them.
- Concepts: each visual attribute of the vocabulary (colours, dermoscopic structures, irregular border,
  asymmetry) is described by an ensemble of phrases; an image's score is its cosine to the mean phrase embedding,
  and the AUROC of that score against the ground truth says whether the space has learnt the concept.
  SynthDerm knows every attribute it drew; on real data the same code reads Derm7pt's criteria and PH2's colours
  and structures (`dermlib.notes.audit.truth_attributes`).
- Linear probe: logistic regression on the image embeddings of the internal training split, applied to every
  test image: how much class information the embedding holds, beside the end-to-end classifier.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from dermlib import metrics
from dermlib.data.labels import CLASS_NAMES, classes
from dermlib.data.preprocess import load_cache
from dermlib.data.schema import read_manifest
from dermlib.evaluate import POOLED, metric_groups, metric_row, pool_id, results_dir
from dermlib.data.schema import load_attributes
from dermlib.notes.audit import truth_attributes
from dermlib.notes.strategies import render_m, vocabulary

CONCEPT_TEMPLATES = ("{}.", "The lesion shows {}.", "Dermoscopy shows {}.")
MODALITIES = (None, "dermoscopic", "clinical")


def class_prompts(classes: list[str]) -> dict[str, list[str]]:
    """Per class, its prompt ensemble in the M template's words (diagnosis alone, then with each modality)."""
    out = {}
    for code in classes:
        fields = {"diagnosis": CLASS_NAMES.get(code, code)}
        out[code] = [render_m({**fields, **({"modality": m} if m else {})}) for m in MODALITIES]
    return out


def concept_phrases() -> dict[str, list[str]]:
    """Per concept (`colour:black`, `structure:streaks`, `border:irregular`, `asymmetry:any`), its phrase ensemble."""
    vocab = vocabulary()
    concepts = {f"colour:{c}": f"{c} colour" for c in vocab["colors"]}
    concepts |= {f"structure:{s}": s for s in vocab["structures"]}
    concepts |= {"border:irregular": "an irregular border", "asymmetry:any": "an asymmetric lesion"}
    return {name: [t.format(text) for t in CONCEPT_TEMPLATES] for name, text in concepts.items()}


def concept_truth(pool: pd.DataFrame) -> pd.DataFrame:
    """Ground truth per pool image and concept: True / False, or NA where the source does not say."""
    rows = []
    for text in pool["attributes"]:
        attrs = load_attributes(text)
        colours, structures = truth_attributes(attrs)
        row: dict[str, Any] = {}
        for c in vocabulary()["colors"]:
            row[f"colour:{c}"] = pd.NA if colours is None else c in colours
        for s in vocabulary()["structures"]:
            row[f"structure:{s}"] = pd.NA if structures is None else s in structures
        border, asym = attrs.get("border"), attrs.get("asymmetry")
        row["border:irregular"] = pd.NA if border is None else str(border) == "irregular"
        row["asymmetry:any"] = pd.NA if asym is None or pd.isna(asym) else int(asym) > 0
        rows.append(row)
    return pd.DataFrame(rows, index=pool.index, dtype="boolean")


def ensemble(embeddings: np.ndarray) -> np.ndarray:
    """The normalised mean of normalised prompt embeddings (one row per prompt -> one direction)."""
    return metrics.l2_normalise(metrics.l2_normalise(embeddings).mean(axis=0, keepdims=True))[0]


def directions(texts: dict[str, list[str]], embed_texts: Any) -> np.ndarray:
    """One ensemble direction per key of `texts`, in key order; `embed_texts(list[str]) -> (n, E)`."""
    return np.stack([ensemble(embed_texts(prompts)) for prompts in texts.values()])


def zero_shot(image_emb: np.ndarray, class_dirs: np.ndarray) -> np.ndarray:
    """Class index per image: the closest class direction by cosine."""
    return (metrics.l2_normalise(image_emb) @ class_dirs.T).argmax(axis=1)


def concept_auroc(image_emb: np.ndarray, concept_dirs: np.ndarray, names: list[str], truth: pd.DataFrame
                  ) -> pd.DataFrame:
    """AUROC of each concept's cosine score against its ground truth (NaN where only one value occurs)."""
    scores = metrics.l2_normalise(image_emb) @ concept_dirs.T
    rows = []
    for j, name in enumerate(names):
        known = truth[name].notna().to_numpy()
        y = truth[name].to_numpy(dtype=object)[known].astype(bool)
        value = roc_auc_score(y, scores[known, j]) if known.any() and 0 < y.sum() < len(y) else np.nan
        rows.append({"concept": name, "auroc": float(value), "n": int(known.sum()), "n_positive": int(y.sum())})
    return pd.DataFrame(rows)


def linear_probe(train_emb: np.ndarray, train_y: np.ndarray, test_emb: np.ndarray, seed: int = 0) -> np.ndarray:
    """Class index per test image from a multinomial logistic regression fitted on the training embeddings."""
    probe = LogisticRegression(max_iter=2000, C=1.0, random_state=seed)
    probe.fit(metrics.l2_normalise(train_emb), train_y)
    return probe.predict(metrics.l2_normalise(test_emb))


def split_pool(cfg: dict[str, Any], split: str) -> tuple[pd.DataFrame, np.ndarray]:
    """The labelled rows of one split of the internal sources (sample_id order) and their cached images."""
    work = Path(cfg["work_dir"])
    manifest = read_manifest(work / "manifest.parquet")
    rows = manifest[(manifest["split"] == split).fillna(False).astype(bool) & manifest["label"].notna()]
    rows = rows.sort_values("sample_id", kind="stable").reset_index(drop=True)
    images, index = load_cache(work / "cache")
    where = pd.Series(np.arange(len(index)), index=index["sample_id"].astype(str))
    rows = rows[rows["sample_id"].astype(str).isin(where.index)].reset_index(drop=True)
    cache_rows = where.loc[rows["sample_id"].astype(str)].to_numpy()
    order = np.argsort(cache_rows, kind="stable")
    pixels = np.empty((len(cache_rows), *images.shape[1:]), dtype=np.uint8)
    pixels[order] = images[cache_rows[order]]
    return rows, pixels


def probe_rows(model: Any, emb: dict[str, np.ndarray], pool: pd.DataFrame, run_cfg: dict[str, Any],
               cfg: dict[str, Any]) -> pd.DataFrame:
    """Beyond the classifier (`dermlib.probes`): a linear probe on the image embeddings for every run; zero-shot
    classification from M-template class prompts and concept AUROC for text runs. Rows as evaluate_embeddings."""
    from dermlib.embed import encode, encode_texts

    names = classes(cfg["data"].get("taxonomy", "isic8"))
    y = pd.Categorical(pool["label"].astype(str), categories=names).codes.astype(np.int64)
    train, pixels = split_pool(cfg, "train")
    train_emb = encode(model, pixels, None, run_cfg, batch_size=int(cfg["eval"]["batch_size"]),
                       pool_id=pool_id(train))["image_emb"]
    train_y = pd.Categorical(train["label"].astype(str), categories=names).codes.astype(np.int64)
    predicted = {"probe": linear_probe(train_emb, train_y, emb["image_emb"], seed=int(run_cfg["train"]["seed"]))}
    rows = []
    if model.text_encoder is not None:
        present = [c for c in names if c in set(train["label"].astype(str))]
        prompts = class_prompts(present)
        dirs = directions(prompts, lambda texts: encode_texts(model, texts, run_cfg))
        predicted["zeroshot"] = np.array([names.index(present[i]) for i in zero_shot(emb["image_emb"], dirs)])
        phrases = concept_phrases()
        concept_dirs = directions(phrases, lambda texts: encode_texts(model, texts, run_cfg))
        truth = concept_truth(pool)
        for partition, source, mask in metric_groups(pool):
            if source != POOLED:
                continue
            found = concept_auroc(emb["image_emb"][mask], concept_dirs, list(phrases), truth[mask])
            for r in found.itertuples():
                rows.append({"partition": partition, "source": source,
                             **metric_row(f"concept_auroc:{r.concept}", r.auroc, r.n)})
    for partition, source, mask in metric_groups(pool):
        for kind, pred in predicted.items():
            rows.append({"partition": partition, "source": source,
                         **metric_row(f"{kind}_kappa", metrics.cohen_kappa(y[mask], pred[mask]), mask.sum())})
            rows.append({"partition": partition, "source": source,
                         **metric_row(f"{kind}_balanced_accuracy", metrics.balanced_accuracy(y[mask], pred[mask]), mask.sum())})
    return pd.DataFrame(rows)


def write_prompts(cfg: dict[str, Any]) -> Path:
    """`results/prompts.json`: the zero-shot class prompts and concept phrases every run was scored with."""
    path = results_dir(cfg) / "prompts.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    names = classes(cfg["data"].get("taxonomy", "isic8"))
    path.write_text(json.dumps({"class_prompts": class_prompts(names), "concept_phrases": concept_phrases(),
                                "ensemble": "mean of L2-normalised prompt embeddings, then L2-normalised"}, indent=1))
    return path
