"""Lessons: the worked examples compute what the notebooks say they compute, checked by hand or with sklearn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from dermlib import lessons


def _emb(n: int = 40, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.choice(["MEL", "NV", "BCC"], n)
    centres = {"MEL": rng.normal(size=6), "NV": rng.normal(size=6), "BCC": rng.normal(size=6)}
    img = np.stack([centres[c] for c in labels]) + rng.normal(scale=1.0, size=(n, 6))
    txt = np.stack([centres[c] for c in labels]) + rng.normal(scale=1.0, size=(n, 6))
    return {"image_emb": img, "text_emb": txt, "label": labels, "sample_id": np.array([f"s{i}" for i in range(n)]),
            "partition": np.where(np.arange(n) < 30, "internal", "external"), "note": np.array([f"note {i}" for i in range(n)])}


def test_lesson_batch_is_seeded_sorted_and_from_one_partition() -> None:
    emb = _emb()
    a, b = lessons.lesson_batch(emb, n=8, seed=3), lessons.lesson_batch(emb, n=8, seed=3)
    assert np.array_equal(a["index"], b["index"]) and (a["index"] < 30).all()
    assert list(a["label"]) == sorted(a["label"])
    assert np.allclose(np.diag(a["similarity"]), np.sum(a["image"] * a["text"], axis=1))


def _nt_xent_by_hand(img: np.ndarray, txt: np.ndarray, t: float) -> float:
    z = np.vstack([img, txt])
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    n = len(img)
    sim = z @ z.T / t
    np.fill_diagonal(sim, -np.inf)
    pair = np.concatenate([np.arange(n, 2 * n), np.arange(n)])
    log_prob = sim[np.arange(2 * n), pair] - np.log(np.exp(sim).sum(axis=1))
    return float(-log_prob.mean())


def test_alignment_terms_match_a_numpy_nt_xent_and_chance() -> None:
    batch = lessons.lesson_batch(_emb(), n=10)
    terms = lessons.alignment_terms(batch, [0.1, 1.0]).set_index(["term", "temperature"])["value"]
    for t in (0.1, 1.0):
        assert terms[("NT-Xent", t)] == pytest.approx(_nt_xent_by_hand(batch["image"], batch["text"], t), rel=1e-5)
    cos = np.sum(batch["image"] * batch["text"], axis=1)
    assert terms.filter(like="cosine").iloc[0] == pytest.approx(1 - cos.mean(), rel=1e-5)
    assert terms.filter(like="guess").iloc[0] == pytest.approx(np.log(19))
    # L1 on the raw projections, as training computes it (not on the unit vectors of the heatmap)
    assert terms.filter(like="L1").iloc[0] == pytest.approx(np.abs(batch["image_raw"] - batch["text_raw"]).mean(), rel=1e-5)


def test_query_aps_agree_with_sklearn_and_choices_are_median_and_lowest() -> None:
    emb = _emb()
    aps = lessons.query_aps(emb)
    ok = np.arange(30)
    for row in aps.head(5).itertuples():
        scores = emb["text_emb"][ok] @ emb["image_emb"][row.index] / (
            np.linalg.norm(emb["text_emb"][ok], axis=1) * np.linalg.norm(emb["image_emb"][row.index]))
        want = average_precision_score(emb["label"][ok] == row.label, scores)
        assert row.ap == pytest.approx(want)
    chosen = lessons.chosen_queries(emb)
    assert chosen["lowest AP"] == aps["index"].iloc[0]
    assert chosen["median AP"] == aps["index"].iloc[len(aps) // 2]
    example = lessons.query_example(emb, chosen["median AP"], k=3)
    assert example["ap"] == pytest.approx(aps.set_index("index").loc[chosen["median AP"], "ap"])
    assert len(example["notes"]) == 3 and example["scores"] == sorted(example["scores"], reverse=True)
