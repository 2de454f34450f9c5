"""Per-source values of the paper's protocol: AP within each source's gallery (full ranking and the authors' AP@k),
paired cosine above its own source's chance, and chance levels for every source."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dermlib import metrics
from dermlib.config import get_config
from dermlib.evaluate.scoring import evaluate_embeddings, sample_values


def authors_ap_at_k(sims: np.ndarray, relevant: np.ndarray, k: int) -> float:
    """The authors' formula, item by item: precision at each relevant item among the first k, over all relevant."""
    order = np.argsort(-sims, kind="stable")[:k]
    hits, total = 0, 0.0
    for rank, item in enumerate(order, start=1):
        if relevant[item]:
            hits += 1
            total += hits / rank
    return total / relevant.sum() if relevant.sum() else float("nan")


def test_ap_at_k_is_the_authors_formula():
    rng = np.random.default_rng(3)
    q, g = rng.normal(size=(7, 5)), rng.normal(size=(30, 5))
    ql, gl = rng.integers(0, 3, 7), rng.integers(0, 3, 30)
    sims = metrics.l2_normalise(q) @ metrics.l2_normalise(g).T
    for k in (1, 5, 30, 50):
        got = metrics.retrieval_ap_at_k(q, ql, g, gl, k)
        want = [authors_ap_at_k(sims[i], gl == ql[i], k) for i in range(7)]
        np.testing.assert_allclose(got, want, rtol=1e-6)
    # over the whole gallery and without ties it is the usual AP
    np.testing.assert_allclose(metrics.retrieval_ap_at_k(q, ql, g, gl, 30), metrics.retrieval_ap(q, ql, g, gl),
                               rtol=1e-6)


def test_ap_at_k_cannot_reach_one_when_the_class_outnumbers_k():
    g = np.eye(4)[[0, 0, 0, 1]]  # three relevant items, a perfect ranking
    assert metrics.retrieval_ap_at_k(np.eye(4)[[0]], ["a"], g, ["a", "a", "a", "b"], k=2)[0] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="k must be"):
        metrics.retrieval_ap_at_k(g, list("aaab"), g, list("aaab"), k=0)


def _pool_and_embeddings(seed: int = 0):
    rng = np.random.default_rng(seed)
    rows = []
    for source, n in (("s1", 12), ("s2", 9)):
        for i in range(n):
            rows.append({"sample_id": f"{source}/{i:02d}", "source": source, "partition": "internal",
                         "label": ["MEL", "NV", "BCC"][i % 3], "patient_id": None, "lesion_id": None})
    pool = pd.DataFrame(rows)
    img = rng.normal(size=(len(pool), 8)).astype(np.float32)
    txt = (img + rng.normal(scale=0.8, size=img.shape)).astype(np.float32)
    txt[3] = np.nan  # one image without a note
    emb = {"image_emb": img, "text_emb": txt, "image_logits": rng.normal(size=(len(pool), 8)).astype(np.float32)}
    return pool, emb


def test_sample_values_carry_each_source_alone():
    cfg = get_config("demo", {"eval.bootstrap": 20})
    pool, emb = _pool_and_embeddings()
    samples = sample_values(emb, pool, cfg).set_index("sample_id")
    assert list(samples["source"].unique()) == ["s1", "s2"]
    assert samples.loc["s1/03", ["cosine", "cosine_lift_source", "ap_i2t_source"]].isna().all()
    labels = pool["label"].to_numpy()
    for source in ("s1", "s2"):
        own = (pool["source"] == source).to_numpy() & np.isfinite(emb["text_emb"]).all(axis=1)
        img, txt, y = emb["image_emb"][own], emb["text_emb"][own], labels[own]
        ids = pool.loc[own, "sample_id"]
        np.testing.assert_allclose(samples.loc[ids, "ap_i2t_source"], metrics.retrieval_ap(img, y, txt, y), rtol=1e-6)
        np.testing.assert_allclose(samples.loc[ids, "ap_t2i_source_at_k"],
                                   metrics.retrieval_ap_at_k(txt, y, img, y, cfg["eval"]["map_at_k"]), rtol=1e-6)
        # the lift by hand: own cosine minus the mean cosine to the other notes of the same source
        cos = metrics.l2_normalise(img) @ metrics.l2_normalise(txt).T
        others = (cos.sum(axis=1) - np.diag(cos)) / (len(cos) - 1)
        np.testing.assert_allclose(samples.loc[ids, "cosine_lift_source"], np.diag(cos) - others, rtol=1e-5)


def test_every_source_has_its_chance_rows():
    cfg = get_config("demo", {"eval.bootstrap": 20})
    pool, emb = _pool_and_embeddings()
    rows = evaluate_embeddings(emb, pool, cfg)
    chance = rows[rows["metric"] == "chance_map_i2t"]
    assert set(chance["source"]) == {"s1", "s2", "pooled"}
    # chance mAP of a source is near its share of each class, far below a perfect ranking
    assert (chance["value"] < 0.8).all() and (chance["value"] > 0.2).all()
    assert {"map_i2t_at_k", "map_t2i_at_k"} <= set(rows["metric"])


def test_source_only_baseline_is_sklearns_ap_of_a_ranking_by_source():
    """The pooled gallery's source-only baseline: every item of the query's own source tied first, the rest tied
    after; checked query by query against sklearn's average precision on that score (which also treats ties as one
    block), and reported on the pooled rows only, over the image-note pairs."""
    from sklearn.metrics import average_precision_score

    from dermlib.evaluate.scoring import source_only_values

    cfg = get_config("demo", {"eval.bootstrap": 20})
    pool, emb = _pool_and_embeddings()
    y, sources = pool["label"].to_numpy(), pool["source"].to_numpy()
    got = source_only_values(y, sources, exclude=False)
    want = [average_precision_score(y == y[i], (sources == sources[i]).astype(float)) for i in range(len(y))]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # a source made of a class no other source has: its queries' relevant items all come first, AP 1
    skewed = np.where(sources == "s2", "VASC", y)
    assert np.allclose(source_only_values(skewed, sources, exclude=False)[sources == "s2"], 1.0)
    rows = evaluate_embeddings(emb, pool, cfg)
    only = rows[rows["metric"] == "source_only_map"]
    assert list(only["source"]) == ["pooled"]
    paired = np.isfinite(emb["text_emb"]).all(axis=1)
    assert only["value"].iloc[0] == pytest.approx(np.mean(source_only_values(y[paired], sources[paired], False)))
    assert int(only["n"].iloc[0]) == paired.sum()
