"""Scoring embeddings (dermlib.evaluate.scoring): classification from the image branch only, per-sample values
regrouped by source around missing notes, and chance baselines, against metrics computed here by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dermlib import metrics
from dermlib.config import get_config
from dermlib.data.labels import ISIC8
from dermlib.evaluate.scoring import chance_values, evaluate_embeddings, sample_values


def test_classification_uses_the_image_branch_only() -> None:
    """Perfect image logits give kappa 1 whatever the text branch says; wrong image logits do not."""
    rng = np.random.default_rng(0)
    labels = rng.choice(["MEL", "NV", "BCC"], size=40)
    pool = pd.DataFrame({"sample_id": [f"s{i}" for i in range(40)], "label": labels, "partition": ["internal"] * 30 + ["external"] * 10,
                         "source": ["a"] * 30 + ["x"] * 10})
    cfg = get_config("demo", {"eval.bootstrap": 5})
    names = list(ISIC8)
    right = np.eye(len(names))[[names.index(c) for c in labels]] * 5.0
    wrong = np.roll(right, 1, axis=1)
    emb = {"image_logits": right, "image_emb": rng.normal(size=(40, 8)), "text_emb": rng.normal(size=(40, 8)),
           "text_logits": wrong}
    rows = evaluate_embeddings(emb, pool, cfg)
    assert (rows.loc[rows["metric"] == "kappa", "value"] == 1.0).all()
    rows = evaluate_embeddings({**emb, "image_logits": wrong, "text_logits": right}, pool, cfg)
    assert (rows.loc[rows["metric"] == "kappa", "value"] < 0.5).all()


def test_sample_values_regroup_by_source_around_missing_notes() -> None:
    cfg = get_config("demo")
    rng = np.random.default_rng(0)
    sources = ["s1"] * 5 + ["s2"] * 4 + ["s3"] * 2 + ["x1"] * 3
    pool = pd.DataFrame({"sample_id": [f"i{k:02d}" for k in range(14)], "source": sources,
                         "partition": ["internal"] * 11 + ["external"] * 3,
                         "label": rng.choice(["MEL", "NV", "BCC"], 14)})
    text = rng.normal(size=(14, 6))
    text[[1, 6, 10]] = np.nan  # no note: one in s1, one in s2, and s3 keeps a single paired image
    emb = {"image_emb": rng.normal(size=(14, 6)), "image_logits": rng.normal(size=(14, 8)), "text_emb": text}
    values = sample_values(emb, pool, cfg).set_index("sample_id")
    assert values.loc[["i01", "i06", "i10"], ["ap_i2t_source", "cosine_lift"]].isna().all().all()
    assert np.isnan(values.at["i09", "ap_i2t_source"])  # s3's one paired image has no gallery of its own
    assert np.isfinite(values.at["i09", "ap_i2t"]) and np.isfinite(values.at["i09", "cosine_lift"])
    for source in ("s1", "s2", "x1"):
        keep = (pool["source"] == source).to_numpy() & np.isfinite(text).all(axis=1)
        ids = pool.loc[keep, "sample_id"]
        by_hand = metrics.retrieval_ap(emb["image_emb"][keep], pool.loc[keep, "label"], text[keep],
                                       pool.loc[keep, "label"])
        np.testing.assert_allclose(values.loc[ids, "ap_i2t_source"], by_hand, rtol=1e-6)
    internal = np.isfinite(text).all(axis=1) & (pool["partition"] == "internal").to_numpy()
    np.testing.assert_allclose(values.loc[pool.loc[internal, "sample_id"], "cosine_lift"],
                               metrics.paired_cosine_lift(emb["image_emb"][internal], text[internal]), rtol=1e-5)


def test_chance_baselines_on_perfectly_aligned_embeddings() -> None:
    """Notes identical to images: true mAP and cosine are 1; chance is far below, near the class prevalence."""
    rng = np.random.default_rng(4)
    labels = np.repeat(np.array(["a", "b", "c", "d"]), [40, 30, 20, 10])
    centres = rng.normal(size=(4, 16)) * 3
    img = centres[pd.factorize(labels)[0]] + rng.normal(size=(100, 16))
    assert metrics.retrieval_map(img, labels, img, labels) > 0.9
    chance = chance_values(img, img.copy(), labels, exclude=False)
    prevalence = float(np.mean([np.mean(labels == c) for c in labels]))  # expected precision of a random ranking
    assert chance["chance_map_i2t"] == pytest.approx(prevalence, abs=0.06)
    assert chance["chance_paired_cosine"] < 0.5
