"""Metrics against brute-force Python references and scikit-learn, on random data (with and without ties)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import average_precision_score, balanced_accuracy_score, cohen_kappa_score, roc_auc_score

from dermlib import metrics
from dermlib.data.labels import ISIC8


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def brute_ap(q: np.ndarray, q_lab: list, g: np.ndarray, g_lab: list) -> list[float]:
    """One query at a time, plain loops: precision at a relevant item counts every item scoring >= it."""
    out = []
    for qi, ql in zip(q, q_lab):
        scores = [_cos(qi, gj) for gj in g]
        rel = [gl == ql for gl in g_lab]
        n_rel = sum(rel)
        if n_rel == 0:
            out.append(math.nan)
            continue
        total = 0.0
        for s, r in zip(scores, rel):
            if r:
                at_or_above = [t >= s for t in scores]
                total += sum(a and b for a, b in zip(at_or_above, rel)) / sum(at_or_above)
        out.append(total / n_rel)
    return out


def brute_recall(q: np.ndarray, g: np.ndarray, k: int) -> float:
    """Rank of the paired item by explicit sort (no ties in continuous random data)."""
    hits = 0
    for i, qi in enumerate(q):
        scores = [_cos(qi, gj) for gj in g]
        ranking = sorted(range(len(g)), key=lambda j: -scores[j])
        hits += i in ranking[:k]
    return hits / len(q)


@pytest.fixture()
def random_pool() -> tuple[np.ndarray, list, np.ndarray, list]:
    rng = np.random.default_rng(3)
    q, g = rng.normal(size=(40, 6)).astype(np.float32), rng.normal(size=(55, 6)).astype(np.float32)
    q_lab = list(rng.choice(["MEL", "NV", "BCC", "AK"], size=40))
    g_lab = list(rng.choice(["MEL", "NV", "BCC"], size=55))  # AK never in the gallery: those queries drop out
    return q, q_lab, g, g_lab


def test_retrieval_ap_matches_brute_force_and_sklearn(random_pool, monkeypatch) -> None:
    q, q_lab, g, g_lab = random_pool
    monkeypatch.setattr(metrics, "CHUNK_ELEMENTS", 7 * 55)  # force several query chunks
    ap = metrics.retrieval_ap(q, q_lab, g, g_lab)
    np.testing.assert_allclose(ap, brute_ap(q, q_lab, g, g_lab), rtol=1e-5, equal_nan=True)
    assert np.isnan(ap[np.array(q_lab) == "AK"]).all() and np.isfinite(ap[np.array(q_lab) != "AK"]).all()
    for i in np.flatnonzero(np.array(q_lab) != "AK"):
        scores = (g / np.linalg.norm(g, axis=1, keepdims=True)) @ (q[i] / np.linalg.norm(q[i]))
        assert ap[i] == pytest.approx(average_precision_score(np.array(g_lab) == q_lab[i], scores), rel=1e-5)
    expected_map = np.nanmean(brute_ap(q, q_lab, g, g_lab))
    assert metrics.retrieval_map(q, q_lab, g, g_lab) == pytest.approx(expected_map, rel=1e-5)
    # The reverse direction is the same function with the arguments swapped.
    assert metrics.retrieval_map(g, g_lab, q, q_lab) == pytest.approx(np.nanmean(brute_ap(g, g_lab, q, q_lab)),
                                                                      rel=1e-5)


def test_retrieval_ap_ties_are_blocks_independent_of_gallery_order() -> None:
    rng = np.random.default_rng(5)
    # Few distinct gallery vectors (like identical template notes): many exactly tied similarities.
    base = rng.integers(-1, 2, size=(4, 3)).astype(np.float32) + np.eye(4, 3, dtype=np.float32)
    g = base[rng.integers(0, 4, size=30)]
    g_lab = list(rng.choice(["MEL", "NV"], size=30))
    q = rng.normal(size=(12, 3)).astype(np.float32)
    q_lab = list(rng.choice(["MEL", "NV"], size=12))
    ap = metrics.retrieval_ap(q, q_lab, g, g_lab)
    np.testing.assert_allclose(ap, brute_ap(q, q_lab, g, g_lab), rtol=1e-5)
    # sklearn's reference needs exactly tied scores: one score per distinct gallery vector (a float32 matmul over
    # the repeated rows may round them apart by an ulp, depending on the CPU's kernel for each row)
    distinct, which = np.unique(g, axis=0, return_inverse=True)
    unit = distinct / np.linalg.norm(distinct, axis=1, keepdims=True)
    for i in range(len(q)):
        scores = (unit @ (q[i] / np.linalg.norm(q[i])))[which.reshape(-1)]
        assert ap[i] == pytest.approx(average_precision_score(np.array(g_lab) == q_lab[i], scores), rel=1e-5)
    perm = rng.permutation(30)
    np.testing.assert_allclose(metrics.retrieval_ap(q, q_lab, g[perm], [g_lab[j] for j in perm]), ap, rtol=1e-6)


def test_retrieval_map_extremes_and_torch_input() -> None:
    labels = ["MEL", "NV", "BCC"] * 5
    onehot = np.eye(3, dtype=np.float32)[[["MEL", "NV", "BCC"].index(c) for c in labels]]
    assert metrics.retrieval_map(torch.tensor(onehot), labels, torch.tensor(onehot), labels) == pytest.approx(1.0)
    # Constant embeddings: every item tied, so AP = share of relevant items in the gallery.
    flat = np.ones((15, 4), dtype=np.float32)
    assert metrics.retrieval_map(flat, labels, flat, labels) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="differ in length"):
        metrics.retrieval_map(flat, labels[:-1], flat, labels)


def test_recall_at_k_matches_brute_force_and_handles_ties(monkeypatch) -> None:
    rng = np.random.default_rng(7)
    q = rng.normal(size=(30, 5))
    g = q + rng.normal(scale=1.2, size=(30, 5))
    monkeypatch.setattr(metrics, "CHUNK_ELEMENTS", 4 * 30)
    for k in (1, 5, 10):
        assert metrics.recall_at_k(torch.tensor(q), g, k) == pytest.approx(brute_recall(q, g, k))
    assert metrics.recall_at_k(q, q, 1) == 1.0
    # Three identical gallery rows: each query's pair is tied with two others -> expected hit 1/3 at k=1.
    same = np.ones((3, 4))
    assert metrics.recall_at_k(same, same, 1) == pytest.approx(1 / 3)
    assert metrics.recall_at_k(same, same, 3) == 1.0
    # several k from one ranking: the same values as one k at a time
    assert metrics.recall_at_k(q, g, [1, 5, 10]) == pytest.approx([brute_recall(q, g, k) for k in (1, 5, 10)])
    assert metrics.recall_at_k(same, same, [1, 3]) == pytest.approx([1 / 3, 1.0])
    with pytest.raises(ValueError, match="k must be >= 1"):
        metrics.recall_at_k(q, g, [1, 0])


def test_relabelled_retrieval_matches_sklearn_for_every_labelling(monkeypatch) -> None:
    rng = np.random.default_rng(11)
    labels = rng.choice(["a", "b", "c"], 25)
    img, txt = rng.normal(size=(25, 4)), rng.normal(size=(25, 4))
    txt[3] = txt[4]  # a tie in every ranking
    monkeypatch.setattr(metrics, "CHUNK_ELEMENTS", 3 * 25)
    labellings = [labels[rng.permutation(25)] for _ in range(4)]
    for exclude in (False, True):
        got = metrics.retrieval_ap_relabelled(img, labels, txt, labellings, exclude_pair=exclude)
        assert got.shape == (4, 25)
        sim = metrics.l2_normalise(img) @ metrics.l2_normalise(txt).T
        for row, gallery_labels in zip(got, labellings):
            for i in range(25):
                keep = np.arange(25) != i if exclude else np.ones(25, bool)
                relevant = gallery_labels[keep] == labels[i]
                expected = average_precision_score(relevant, sim[i, keep]) if relevant.any() else np.nan
                assert row[i] == pytest.approx(expected, abs=1e-6, nan_ok=True)
    with pytest.raises(ValueError, match="differ in length"):
        metrics.retrieval_ap_relabelled(img, labels, txt, [labels, labels[:-1]])


def test_finite_rows_marks_rows_without_nan() -> None:
    x = np.ones((4, 3))
    x[1, 2], x[3, 0] = np.nan, np.inf
    assert metrics.finite_rows(torch.tensor(x)).tolist() == [True, False, True, False]


def test_paired_cosine_lift_is_the_paired_cosine_above_every_shuffle() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(9, 5)), rng.normal(size=(9, 5))
    unit_a = a / np.linalg.norm(a, axis=1, keepdims=True)
    unit_b = b / np.linalg.norm(b, axis=1, keepdims=True)
    sim = unit_a @ unit_b.T
    by_hand = [sim[i, i] - np.mean([sim[i, j] for j in range(9) if j != i]) for i in range(9)]
    np.testing.assert_allclose(metrics.paired_cosine_lift(a, b), by_hand, rtol=1e-5, atol=1e-6)
    shuffles = [np.mean(metrics.paired_cosine(a, np.roll(b, k, axis=0))) for k in range(1, 9)]  # every pair moved
    assert metrics.paired_cosine_lift(a, b).mean() == pytest.approx(metrics.paired_cosine(a, b).mean()
                                                                     - np.mean(shuffles), abs=1e-6)
    same = np.tile(b[:1], (9, 1))  # notes that are all alike: high cosine to anything, no lift at all
    np.testing.assert_allclose(metrics.paired_cosine_lift(a, same), 0.0, atol=1e-6)
    with pytest.raises(ValueError, match="2\\+ rows"):
        metrics.paired_cosine_lift(a[:1], b[:1])


def test_paired_cosine() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(9, 4)), rng.normal(size=(9, 4))
    expected = [_cos(x, y) for x, y in zip(a, b)]
    np.testing.assert_allclose(metrics.paired_cosine(a, torch.tensor(b)), expected, rtol=1e-5)
    np.testing.assert_allclose(metrics.paired_cosine(a, 3 * a), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="equal shapes"):
        metrics.paired_cosine(a, b[:4])


def test_confusion_and_kappa_parts_against_sklearn() -> None:
    rng = np.random.default_rng(1)
    classes = ISIC8
    y = rng.choice(["MEL", "NV", "BCC"], size=60)  # five classes absent from this split
    proba = rng.dirichlet(np.ones(8), size=60)
    proba[np.arange(60), [classes.index(c) for c in y]] += rng.uniform(0, 0.6, size=60)  # informative
    pred = np.array(classes)[proba.argmax(axis=1)]
    assert metrics.cohen_kappa(y, pred) == pytest.approx(cohen_kappa_score(y, pred))
    assert 0 < metrics.cohen_kappa(y, pred) < 1 and 0 < metrics.balanced_accuracy(y, pred) <= 1
    assert 0.5 < metrics.macro_auroc(y, proba, classes) <= 1.0  # computed over MEL/NV/BCC only, not NaN
    cm = metrics.confusion(y, pred, classes)
    assert cm.shape == (8, 8) and cm.to_numpy().sum() == 60 and list(cm.index) == classes
    assert np.trace(cm.to_numpy()) == (y == pred).sum()
    parts = metrics.kappa_parts(y, pred)
    assert parts["kappa"] == pytest.approx(cohen_kappa_score(y, pred))
    assert parts["p_observed"] == pytest.approx(np.mean(y == pred))
    assert math.isnan(metrics.kappa_parts([], [])["kappa"])
    assert math.isnan(metrics.cohen_kappa(["NV"] * 5, ["NV"] * 5))
    assert math.isnan(metrics.macro_auroc(["NV"] * 3, np.full((3, 8), 1 / 8), classes))
    with pytest.raises(TypeError):
        metrics.macro_auroc(y, proba)  # no default taxonomy: the classes are always named


@pytest.mark.parametrize("seed", range(5))
def test_bincount_kappa_balanced_accuracy_and_rank_auroc_equal_sklearn(seed: int) -> None:
    """The fast metrics (one confusion matrix by bincount, AUROC from mid-ranks) against scikit-learn itself, on
    small groups with absent classes, predicted classes missing from the truth and tied scores."""
    rng = np.random.default_rng(seed)
    for _ in range(40):
        n, k = int(rng.integers(2, 120)), int(rng.integers(2, 8))
        y = np.array(ISIC8)[rng.integers(0, k, n)]
        pred = np.array(ISIC8)[rng.integers(0, k + 1, n)]  # sometimes a class y never has
        proba = np.round(rng.random((n, 8)), int(rng.integers(1, 3)))  # one or two decimals: many ties
        if len(set(y) | set(pred)) > 1:
            assert metrics.cohen_kappa(y, pred) == pytest.approx(cohen_kappa_score(y, pred), abs=1e-12)
        with warnings.catch_warnings():  # sklearn warns of predicted classes absent from y_true
            warnings.simplefilter("ignore", UserWarning)
            expected = balanced_accuracy_score(y, pred)
        assert metrics.balanced_accuracy(y, pred) == pytest.approx(expected, abs=1e-12)
        aucs = [roc_auc_score(y == c, proba[:, j]) for j, c in enumerate(ISIC8) if 0 < (y == c).sum() < n]
        if aucs:
            assert metrics.macro_auroc(y, proba, ISIC8) == pytest.approx(np.mean(aucs), abs=1e-12)
            first = y == y[0]
            if not first.all():
                assert metrics.auroc(first, proba[:, 0]) == pytest.approx(roc_auc_score(first, proba[:, 0]), abs=1e-12)
        else:
            assert math.isnan(metrics.macro_auroc(y, proba, ISIC8))
    with pytest.raises(ValueError, match="labels but y_pred"):
        metrics.cohen_kappa(["NV", "MEL"], ["NV"])
    assert math.isnan(metrics.auroc([True, True], [0.1, 0.9])) and math.isnan(metrics.auroc([], []))


def test_summarise_seeds() -> None:
    rows = [{"profile": "demo", "strategy": s, "source": "a", "partition": "internal", "metric": "kappa",
             "seed": seed, "value": v} for s, seed, v in [("M", 0, 0.5), ("M", 1, 0.7), ("Img", 0, 0.4)]]
    out = metrics.summarise_seeds(pd.DataFrame(rows)).set_index("strategy")
    assert out.loc["M", "mean"] == pytest.approx(0.6) and out.loc["M", "sd"] == pytest.approx(np.std([.5, .7],
                                                                                                      ddof=1))
    assert out.loc["Img", "n_seeds"] == 1 and out.loc["Img", "sd"] == 0.0


def test_ranked_list_gives_the_same_ap_by_hand_with_ties() -> None:
    rng = np.random.default_rng(8)
    g = np.repeat(rng.normal(size=(5, 4)), 4, axis=0)  # every gallery vector four times: tied blocks
    g_lab = list(rng.choice(["MEL", "NV"], size=20))
    q = rng.normal(size=4)
    table = metrics.ranked_list(q, "MEL", g, g_lab)
    assert list(table["rank"]) == list(range(1, 21)) and table["cosine"].is_monotonic_decreasing
    by_hand = table.loc[table["relevant"], "precision"].mean()
    assert by_hand == pytest.approx(metrics.retrieval_ap(q[None], ["MEL"], g, g_lab)[0])
    assert by_hand == pytest.approx(brute_ap(q[None], ["MEL"], g, g_lab)[0])
    assert (table.groupby("cosine")["at_or_above"].nunique() == 1).all()  # one precision per tied block


def test_retrieval_ap_can_leave_out_the_own_pair() -> None:
    rng = np.random.default_rng(2)
    labels = rng.choice(["a", "b", "c"], 30)
    img, txt = rng.normal(size=(30, 6)), rng.normal(size=(30, 6))
    got = metrics.retrieval_ap(img, labels, txt, labels, exclude_pair=True)
    sim = metrics.l2_normalise(img) @ metrics.l2_normalise(txt).T
    for i in range(30):
        keep = np.arange(30) != i
        expected = average_precision_score(labels[keep] == labels[i], sim[i, keep])
        assert got[i] == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="paired rows"):
        metrics.retrieval_ap(img, labels, txt[:5], labels[:5], exclude_pair=True)
