"""What a trained image–text model knows beyond its classifier: zero-shot classification from class prompts,
concept retrieval against known attributes, and a linear probe on its frozen image embeddings.

- Zero-shot: each class is described by an ensemble of prompts written with the M template (the diagnosis, and
  the diagnosis with each imaging modality), and by ensembles of class descriptions the LLM writes in the style
  of each LLM strategy of the grid (written by the notes step, read here: `dermlib.notes.descriptions`); an image takes the class whose mean prompt embedding is
  closest. Every prompt used is saved in `<work_dir>/results/prompts.json` and, committed beside the tables, in
  `figures/<profile>/prompts.json`, so anyone can reproduce the scores.
- Concepts: each visual attribute of the vocabulary (colours, dermoscopic structures, irregular border,
  asymmetry) is described by an ensemble of phrases; an image's score is its cosine to the mean phrase embedding,
  and the AUROC of that score against the ground truth says whether the space has learnt the concept.
  SynthDerm knows every attribute it drew; on real data the same code reads Derm7pt's criteria and PH2's colours
  and structures (`dermlib.notes.audit.truth_attributes`).
- Linear probe: logistic regression on the image embeddings of the internal training split, applied to every
  test image: how much class information the embedding holds, beside the end-to-end classifier.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from dermlib import metrics
from dermlib.config import shown
from dermlib.data.labels import CLASS_NAMES, config_classes
from dermlib.data.schema import read_manifest
from dermlib.evaluate.pools import pool_id, split_pool
from dermlib.evaluate.scoring import POOLED, metric_groups, metric_row
from dermlib.data.schema import load_attributes
from dermlib.notes.audit import recorded_structures, truth_attributes
from dermlib.notes.local_llm import model_fingerprint
from dermlib.notes.strategies import PROMPT_DIR, render_m, vocabulary
from dermlib.workdir import WorkDir
from dermlib.notes.descriptions import (DESCRIPTION_FILES, DESCRIPTIONS_FILE, class_descriptions,
                                        descriptions_cache_path)

CONCEPT_TEMPLATES = ("{}.", "The lesion shows {}.", "Dermoscopy shows {}.")
MODALITIES = (None, "dermoscopic", "clinical")
M_TEMPLATE = "M template"  # the prompt source built from the M note template (no LLM)
PROMPTS_FILE = "prompts.json"  # in <work_dir>/results/ and, committed, in <figures_dir>/


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
    """Ground truth per pool image and concept: True / False, or NA where the source does not say (e.g. vascular
    structures and border on PH2, which records neither)."""
    rows = []
    for text in pool["attributes"]:
        attrs = load_attributes(text)
        colours, structures = truth_attributes(attrs)
        recorded = recorded_structures(attrs) or set()
        row: dict[str, Any] = {}
        for c in vocabulary()["colors"]:
            row[f"colour:{c}"] = pd.NA if colours is None else c in colours
        for s in vocabulary()["structures"]:
            row[f"structure:{s}"] = pd.NA if structures is None or s not in recorded else s in structures
        border, asym = attrs.get("border"), attrs.get("asymmetry")
        row["border:irregular"] = pd.NA if border is None else str(border) == "irregular"
        row["asymmetry:any"] = pd.NA if asym is None or pd.isna(asym) else int(asym) > 0
        rows.append(row)
    return pd.DataFrame(rows, index=pool.index, dtype="boolean")


def ensemble(embeddings: np.ndarray) -> np.ndarray:
    """The normalised mean of normalised prompt embeddings (one row per prompt -> one direction)."""
    return metrics.l2_normalise(metrics.l2_normalise(embeddings).mean(axis=0, keepdims=True))[0]


def directions(texts: dict[str, list[str]], embed_texts: Any) -> np.ndarray:
    """One ensemble direction per key of `texts`, in key order; `embed_texts(list[str]) -> (n, E)` is called once,
    on every prompt together (one batch of a frozen encoder, not one per class or concept)."""
    embedded = embed_texts([prompt for prompts in texts.values() for prompt in prompts])
    bounds = np.cumsum([0, *(len(prompts) for prompts in texts.values())])
    return np.stack([ensemble(embedded[start:end]) for start, end in zip(bounds[:-1], bounds[1:])])


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
        value = metrics.auroc(y, scores[known, j])
        rows.append({"concept": name, "auroc": float(value), "n": int(known.sum()), "n_positive": int(y.sum())})
    return pd.DataFrame(rows)


def linear_probe(train_emb: np.ndarray, train_y: np.ndarray, test_emb: np.ndarray, seed: int = 0) -> np.ndarray:
    """Class index per test image from a multinomial logistic regression fitted on the training embeddings."""
    probe = LogisticRegression(max_iter=2000, C=1.0, random_state=seed)
    probe.fit(metrics.l2_normalise(train_emb), train_y)
    return probe.predict(metrics.l2_normalise(test_emb))


def probe_key(cfg: dict[str, Any]) -> dict[str, Any]:
    """What `probe_rows` reads beyond the run and the pool (part of the evaluation cache key): the description
    settings, every zero-shot prompt (LLM descriptions read or made as `write_prompts` does), the concept
    phrases and the train split's ids."""
    names = config_classes(cfg)
    manifest = read_manifest(WorkDir.of(cfg).manifest)
    train = manifest[(manifest["split"] == "train").fillna(False).astype(bool) & manifest["label"].notna()]
    digest = lambda text: hashlib.sha256(text.encode()).hexdigest()[:16]  # noqa: E731
    return {k: cfg["eval"][k] for k in ("class_descriptions", "class_descriptions_cache")} | {
        "prompts": digest(json.dumps([zero_shot_prompts(cfg, names), concept_phrases()], sort_keys=True)),
        "train": digest("\n".join(sorted(train["sample_id"].astype(str))))}


def zero_shot_prompts(cfg: dict[str, Any], codes: list[str], *, missing: str = "raise"
                      ) -> dict[str, dict[str, list[str]]]:
    """Per prompt source, the class prompt ensembles: "M template", then one per description style (with
    `missing="skip"`, only the styles whose descriptions are all cached: see
    `dermlib.notes.descriptions.class_descriptions`)."""
    return {M_TEMPLATE: class_prompts(codes), **class_descriptions(cfg, codes, missing=missing)}


def trained_classes(cfg: dict[str, Any]) -> list[str]:
    """The classes of the taxonomy that the train split holds (zero-shot chooses among these), from the manifest."""
    manifest = read_manifest(WorkDir.of(cfg).manifest)
    seen = set(manifest.loc[(manifest["split"] == "train").fillna(False).astype(bool), "label"].dropna().astype(str))
    return [c for c in config_classes(cfg) if c in seen]


def zero_shot_metric(measure: str, source: str) -> str:
    """The results metric of a zero-shot measure: `zeroshot_kappa` (M template) or `zeroshot_kappa:P3` (LLM
    descriptions in P3's style)."""
    return f"zeroshot_{measure}" + ("" if source == M_TEMPLATE else f":{source}")


@dataclass(frozen=True)
class ProbeInputs:
    """What `probe_rows` reads besides the run, the same for every run of a grid (read once by `read`): the train
    split and its images (linear probe) and, for text runs (`text`), the classes it holds, the zero-shot prompts
    and the concepts' truth (empty without text: an image-only grid never asks the LLM for descriptions)."""

    train: pd.DataFrame
    train_pixels: np.ndarray
    present: list[str]
    prompts: dict[str, dict[str, list[str]]]
    truth: pd.DataFrame

    @classmethod
    def read(cls, cfg: dict[str, Any], pool: pd.DataFrame, text: bool = True) -> ProbeInputs:
        train, pixels = split_pool(cfg, "train")
        if not text:
            return cls(train, pixels, [], {}, pd.DataFrame(index=pool.index))
        present = trained_classes(cfg)
        return cls(train, pixels, present, zero_shot_prompts(cfg, present), concept_truth(pool))


def probe_rows(model: Any, emb: dict[str, np.ndarray], pool: pd.DataFrame, run_cfg: dict[str, Any],
               cfg: dict[str, Any], inputs: ProbeInputs | None = None) -> pd.DataFrame:
    """Beyond the classifier (`dermlib.evaluate.probes`): a linear probe on the image embeddings for every run; for text
    runs, zero-shot classification from each prompt source (`zero_shot_prompts`) and concept AUROC. Rows as
    evaluate_embeddings; metrics `probe_*`, `zeroshot_*[:<style>]`, `concept_auroc:<concept>`. A grid passes
    `inputs` (`ProbeInputs.read`), read once for all its runs."""
    # torch only here: the lessons and tables read this module's zero-shot and concept helpers without it
    from dermlib.train.inference import encode, encode_texts

    inputs = inputs if inputs is not None else ProbeInputs.read(cfg, pool, text=model.text_encoder is not None)
    names = config_classes(cfg)
    y = pd.Categorical(pool["label"].astype(str), categories=names).codes.astype(np.int64)
    train_emb = encode(model, inputs.train_pixels, None, run_cfg, batch_size=int(cfg["eval"]["batch_size"]),
                       pool_id=pool_id(inputs.train))["image_emb"]
    train_y = pd.Categorical(inputs.train["label"].astype(str), categories=names).codes.astype(np.int64)
    predicted = {"probe_{}": linear_probe(train_emb, train_y, emb["image_emb"], seed=int(run_cfg["train"]["seed"]))}
    rows = []
    if model.text_encoder is not None:
        present = inputs.present
        embed = lambda texts: encode_texts(model, texts, run_cfg)  # noqa: E731
        for source, prompts in inputs.prompts.items():
            dirs = directions(prompts, embed)
            chosen = np.array([names.index(present[i]) for i in zero_shot(emb["image_emb"], dirs)])
            predicted[zero_shot_metric("{}", source)] = chosen
        phrases = concept_phrases()
        concept_dirs = directions(phrases, embed)
        for partition, source, mask in metric_groups(pool):
            if source != POOLED:
                continue
            found = concept_auroc(emb["image_emb"][mask], concept_dirs, list(phrases), inputs.truth[mask])
            for r in found.itertuples():
                rows.append({"partition": partition, "source": source,
                             **metric_row(f"concept_auroc:{r.concept}", r.auroc, r.n)})
    for partition, source, mask in metric_groups(pool):
        for pattern, pred in predicted.items():
            rows.append({"partition": partition, "source": source,
                         **metric_row(pattern.format("kappa"), metrics.cohen_kappa(y[mask], pred[mask]), mask.sum())})
            rows.append({"partition": partition, "source": source,
                         **metric_row(pattern.format("balanced_accuracy"),
                                      metrics.balanced_accuracy(y[mask], pred[mask]), mask.sum())})
    return pd.DataFrame(rows)


def write_prompts(cfg: dict[str, Any]) -> Path:
    """`results/prompts.json` and the same file in `<figures_dir>/` (committed beside the tables): every zero-shot
    prompt (M template and LLM descriptions per style, read from their cache), the concept phrases, and
    what made the descriptions (template, its digest, the model, the cache by its repository path)."""
    path = WorkDir.of(cfg).prompts
    names = config_classes(cfg)
    descriptions = class_descriptions(cfg, names)
    made_by = {"template": DESCRIPTIONS_FILE, "per_class": int(cfg["eval"]["class_descriptions"]),
               "styles": list(descriptions), "cache": shown(descriptions_cache_path(cfg)),
               "template_sha256": {f: hashlib.sha256((PROMPT_DIR / f).read_bytes()).hexdigest()[:16]
                                   for f in DESCRIPTION_FILES},
               "model": model_fingerprint(cfg["notes"]["backend"], cfg["notes"]["model"]),
               "temperature": cfg["notes"]["temperature"]}
    text = json.dumps({"class_prompts": class_prompts(names), "class_descriptions": descriptions,
                       "class_descriptions_made_by": made_by, "concept_phrases": concept_phrases(),
                       "metrics": {M_TEMPLATE: zero_shot_metric("kappa", M_TEMPLATE),
                                   **{s: zero_shot_metric("kappa", s) for s in descriptions}},
                       "ensemble": "mean of L2-normalised prompt embeddings, then L2-normalised"}, indent=1) + "\n"
    for target in (path, Path(cfg["figures_dir"]) / PROMPTS_FILE):
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return path
