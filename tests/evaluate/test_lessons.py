"""Retrieval and probe lessons (dermlib.evaluate.lessons): the worked examples compute what notebook 04 says they
compute, checked by hand or with sklearn."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from sklearn.metrics import average_precision_score  # noqa: E402

from dermlib.config import get_config  # noqa: E402
from dermlib.evaluate import lessons  # noqa: E402
from tests.fakes.embeddings import toy_embeddings  # noqa: E402


@pytest.fixture()
def cfg(tmp_path: Path) -> dict:
    return get_config("demo", {"figures_dir": str(tmp_path / "figures")})


def test_query_aps_agree_with_sklearn_and_choices_are_median_and_lowest() -> None:
    emb = toy_embeddings()
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


def test_ranking_summary_ap_is_the_query_ap() -> None:
    emb = toy_embeddings()
    aps = lessons.query_aps(emb).set_index("index")["ap"]
    for query in (0, 5, 17):
        about = lessons.ranking_summary(lessons.ranking(emb, query), top=10)
        assert about["ap"] == pytest.approx(aps[query])
        ranks = np.flatnonzero(emb["label"][:30] == emb["label"][query])
        assert about["relevant"] == len(ranks) and about["n"] == 30
        assert about["beyond"] == int((lessons.ranking(emb, query).query("relevant")["rank"] > 10).sum())


def _ranking(relevant: list[bool]) -> pd.DataFrame:
    """A ranking as `lessons.ranking` gives one, without ties: precision at rank r = relevant in the first r / r."""
    rank = np.arange(1, len(relevant) + 1)
    return pd.DataFrame({"relevant": relevant, "rank": rank, "precision": np.cumsum(relevant) / rank})


def test_ranking_strips_show_the_whole_ranking_and_where_ap_comes_from(cfg: dict) -> None:
    relevant = [True, False, True, False, False, True]
    fig = lessons.ranking_strips({"q": _ranking(relevant)}, cfg)
    strip, curve = fig.axes[0], fig.axes[1]
    assert np.array_equal(strip.get_images()[0].get_array()[0], np.array(relevant, dtype=float))  # all 6 ranks
    dots = curve.collections[0].get_offsets()
    assert np.allclose(dots[:, 0], [1, 3, 6]) and np.allclose(dots[:, 1], [1, 2 / 3, 3 / 6])
    ap = (1 + 2 / 3 + 3 / 6) / 3
    ap_line = [line for line in curve.get_lines() if line.get_label().startswith("AP")][0]
    assert ap_line.get_ydata()[0] == pytest.approx(ap) and f"= {ap:.2f}" in ap_line.get_label()
    assert "3 relevant of 6 notes; half found by rank 3, the last at rank 6" in strip.get_title(loc="left")
    fig = lessons.ranking_strips({"q": _ranking(relevant)}, cfg, top=4)
    assert len(fig.axes[0].get_images()[0].get_array()[0]) == 4
    assert "1 relevant beyond rank 4 (ranks 6-6), not drawn" in fig.axes[0].get_title(loc="left")
    assert lessons.ranking_summary(_ranking(relevant), top=2)["beyond_ranks"] == (3, 6)
    plt.close("all")


def test_ranking_strips_return_a_figure(cfg: dict) -> None:
    assert isinstance(lessons.ranking_strips({"q": _ranking([True, False, True])}, cfg), plt.Figure)
    plt.close("all")


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
    from matplotlib.colors import to_rgb
    from scipy.special import softmax

    from dermlib.plotstyle import STRATEGY_COLOURS

    inputs = _probe_inputs()
    unit = inputs["image_emb"] / np.linalg.norm(inputs["image_emb"], axis=1, keepdims=True)
    by_hand = np.array(inputs["classes"])[(unit @ inputs["class_dirs"]["M template"].T).argmax(axis=1)]
    assert np.array_equal(lessons.zero_shot_labels(inputs), by_hand)
    picks = lessons.zero_shot_picks(inputs, seed=3)
    assert picks == lessons.zero_shot_picks(inputs, seed=3) and set(picks) == {"correct", "incorrect"}
    assert by_hand[picks["correct"]] == inputs["label"][picks["correct"]] and picks["correct"] < 60
    assert by_hand[picks["incorrect"]] != inputs["label"][picks["incorrect"]] and picks["incorrect"] < 60
    fig = lessons.zero_shot_example(inputs, cfg, seed=3)
    for row, i in enumerate(picks.values()):
        cos_ax, clf_ax = fig.axes[3 * row + 1], fig.axes[3 * row + 2]
        p3 = np.array(inputs["classes"])[(inputs["class_dirs"]["P3"] @ unit[i]).argmax()]
        assert [t.get_text() for t in cos_ax.get_legend().get_texts()] == [f"M template: picks {by_hand[i]}",
                                                                           f"P3: picks {p3}"]
        assert np.allclose(cos_ax.collections[0].get_offsets()[:, 0], inputs["class_dirs"]["M template"] @ unit[i])
        # a prompt source in its strategy's colour: the M template is M's
        scatter = {c.get_label(): to_rgb(c.get_facecolor()[0]) for c in cos_ax.collections if c.get_label()[:1] != "_"}
        assert scatter[f"M template: picks {by_hand[i]}"] == to_rgb(STRATEGY_COLOURS["M"])
        assert scatter[f"P3: picks {p3}"] == to_rgb(STRATEGY_COLOURS["P3"])
        assert np.allclose([b.get_width() for b in clf_ax.patches[:4]], softmax(inputs["image_logits"][i]))
    plt.close("all")


def test_concept_roc_shows_best_median_worst_with_sklearn_aurocs(cfg: dict) -> None:
    from sklearn.metrics import roc_auc_score, roc_curve

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
    assert lessons.concept_picks(lessons.concept_table(inputs)) == dict(zip(("best", "median", "worst"),
                                                                                        order))
    fig = lessons.concept_roc(inputs, cfg)
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
