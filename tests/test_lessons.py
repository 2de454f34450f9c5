"""Lessons: the worked examples compute what the notebooks say they compute, checked by hand or with sklearn."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from sklearn.metrics import average_precision_score  # noqa: E402

from dermlib import lessons  # noqa: E402
from dermlib.config import get_config  # noqa: E402


@pytest.fixture()
def cfg(tmp_path: Path) -> dict:
    return get_config("demo", {"figures_dir": str(tmp_path / "figures")})


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


def test_alignment_terms_mark_the_training_temperature() -> None:
    batch = lessons.lesson_batch(_emb(), n=10)
    terms = lessons.alignment_terms(batch, [0.07, 0.5], train_temperature=0.07)
    marked = terms[terms["training temperature"]]
    assert list(marked["term"]) == ["NT-Xent"] and list(marked["temperature"]) == [0.07]
    assert "training temperature" not in lessons.alignment_terms(batch, [0.5]).columns


def test_ranking_summary_ap_is_the_query_ap() -> None:
    emb = _emb()
    aps = lessons.query_aps(emb).set_index("index")["ap"]
    for query in (0, 5, 17):
        about = lessons.ranking_summary(lessons.ranking(emb, query), top=10)
        assert about["ap"] == pytest.approx(aps[query])
        ranks = np.flatnonzero(emb["label"][:30] == emb["label"][query])
        assert about["relevant"] == len(ranks) and about["n"] == 30
        assert about["beyond"] == int((lessons.ranking(emb, query).query("relevant")["rank"] > 10).sum())


def _probe_inputs(n: int = 80, seed: int = 0) -> dict:
    """Synthetic inputs for the probe lessons: image embeddings near their class centre, concept truth that the
    first embedding dimension tracks (concept a), tracks backwards (c) or ignores (b)."""
    rng = np.random.default_rng(seed)
    classes = ["MEL", "NV", "BCC"]
    centres = np.eye(3, 6) * 2
    label = rng.choice(classes, n)
    img = centres[[classes.index(c) for c in label]] + rng.normal(scale=1.0, size=(n, 6))
    dirs = centres / np.linalg.norm(centres, axis=1, keepdims=True)
    concept_dirs = np.eye(6)[[3, 4, 5]]
    truth = pd.DataFrame({"concept:a": img[:, 3] + rng.normal(scale=0.5, size=n) > 0,
                          "concept:b": rng.random(n) > 0.5,
                          "concept:c": img[:, 5] + rng.normal(scale=0.5, size=n) < 0}, dtype="boolean")
    truth.loc[0, "concept:b"] = pd.NA  # unknown for one image: left out of that concept's ROC
    return {"strategy": "M", "sample_id": np.array([f"s{i}" for i in range(n)]), "label": label,
            "partition": np.where(np.arange(n) < 60, "internal", "external"), "pixels": None,
            "image_emb": img, "image_logits": rng.normal(size=(n, 4)), "all_classes": classes + ["AK"],
            "classes": classes, "class_dirs": {"M template": dirs, "P3": dirs[[1, 0, 2]]},
            "concept_names": list(truth.columns), "concept_dirs": concept_dirs, "truth": truth}


def test_zero_shot_example_picks_a_success_and_a_failure_and_draws_their_numbers(cfg: dict) -> None:
    from scipy.special import softmax

    from dermlib import probe_lessons

    inputs = _probe_inputs()
    unit = inputs["image_emb"] / np.linalg.norm(inputs["image_emb"], axis=1, keepdims=True)
    by_hand = np.array(inputs["classes"])[(unit @ inputs["class_dirs"]["M template"].T).argmax(axis=1)]
    assert np.array_equal(probe_lessons.zero_shot_labels(inputs), by_hand)
    picks = probe_lessons.zero_shot_picks(inputs, seed=3)
    assert picks == probe_lessons.zero_shot_picks(inputs, seed=3) and set(picks) == {"correct", "incorrect"}
    assert by_hand[picks["correct"]] == inputs["label"][picks["correct"]] and picks["correct"] < 60
    assert by_hand[picks["incorrect"]] != inputs["label"][picks["incorrect"]] and picks["incorrect"] < 60
    fig = probe_lessons.zero_shot_example(inputs, cfg, seed=3)
    for row, i in enumerate(picks.values()):
        cos_ax, clf_ax = fig.axes[3 * row + 1], fig.axes[3 * row + 2]
        p3 = np.array(inputs["classes"])[(inputs["class_dirs"]["P3"] @ unit[i]).argmax()]
        assert [t.get_text() for t in cos_ax.get_legend().get_texts()] == [f"M template: picks {by_hand[i]}",
                                                                           f"P3: picks {p3}"]
        assert np.allclose(cos_ax.collections[0].get_offsets()[:, 0], inputs["class_dirs"]["M template"] @ unit[i])
        assert np.allclose([b.get_width() for b in clf_ax.patches[:4]], softmax(inputs["image_logits"][i]))
    plt.close("all")


def test_concept_roc_shows_best_median_worst_with_sklearn_aurocs(cfg: dict) -> None:
    from sklearn.metrics import roc_auc_score, roc_curve

    from dermlib import probe_lessons

    inputs = _probe_inputs()
    inside = np.arange(80) < 60
    unit = inputs["image_emb"][inside] / np.linalg.norm(inputs["image_emb"][inside], axis=1, keepdims=True)
    scores = unit @ inputs["concept_dirs"].T  # cosine of each image with each concept direction
    want = {}
    for j, name in enumerate(inputs["concept_names"]):
        known = inputs["truth"][name][inside].notna().to_numpy()
        y = inputs["truth"][name][inside].to_numpy(dtype=object)[known].astype(bool)
        want[name] = (roc_auc_score(y, scores[known, j]), roc_curve(y, scores[known, j]), int(known.sum()),
                      int(y.sum()))
    assert want["concept:a"][0] > 0.7 > 0.3 > want["concept:c"][0]  # the synthetic truth works as designed
    order = sorted(want, key=lambda k: -want[k][0])
    assert probe_lessons.concept_picks(probe_lessons.concept_table(inputs)) == dict(zip(("best", "median", "worst"),
                                                                                        order))
    fig = probe_lessons.concept_roc(inputs, cfg)
    right = fig.axes[1]
    legend = [t.get_text() for t in right.get_legend().get_texts()]
    for kind, name, text in zip(("best", "median", "worst"), order, legend):
        auc, (fpr, tpr, _), n, n_pos = want[name]
        assert text == f"{kind}: {name}, AUROC {auc:.2f} ({n_pos} of {n} images have it)"
        line = [line for line in right.get_lines() if line.get_gid() == f"roc:{name}"][0]
        assert np.allclose(line.get_xdata(), fpr) and np.allclose(line.get_ydata(), tpr)
    assert legend[-1] == "chance (AUROC 0.50)" and list(right.get_lines()[-1].get_xydata().ravel()) == [0, 0, 1, 1]
    assert want["concept:b"][2] == 59  # the image with unknown truth is left out
    assert [p.get_width() + 0.5 for p in fig.axes[0].patches] == pytest.approx([want[k][0] for k in order])
    plt.close("all")
