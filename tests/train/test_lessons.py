"""The NT-Xent lesson (dermlib.train.lessons): the worked example computes what notebook 03 says it computes,
checked by hand."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from dermlib.config import get_config  # noqa: E402
from dermlib.train import lessons  # noqa: E402
from tests.fakes.embeddings import toy_embeddings  # noqa: E402


@pytest.fixture()
def cfg(tmp_path: Path) -> dict:
    return get_config("demo", {"figures_dir": str(tmp_path / "figures")})


def test_lesson_batch_is_seeded_sorted_and_from_one_partition() -> None:
    emb = toy_embeddings()
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
    batch = lessons.lesson_batch(toy_embeddings(), n=10)
    terms = lessons.alignment_terms(batch, [0.1, 1.0]).set_index(["term", "temperature"])["value"]
    for t in (0.1, 1.0):
        assert terms[("NT-Xent", t)] == pytest.approx(_nt_xent_by_hand(batch["image"], batch["text"], t), rel=1e-5)
    cos = np.sum(batch["image"] * batch["text"], axis=1)
    assert terms.filter(like="cosine").iloc[0] == pytest.approx(1 - cos.mean(), rel=1e-5)
    assert terms.filter(like="guess").iloc[0] == pytest.approx(np.log(19))
    # L1 on the raw projections, as training computes it (not on the unit vectors of the heatmap)
    assert terms.filter(like="L1").iloc[0] == pytest.approx(np.abs(batch["image_raw"] - batch["text_raw"]).mean(), rel=1e-5)


def test_alignment_terms_mark_the_training_temperature() -> None:
    batch = lessons.lesson_batch(toy_embeddings(), n=10)
    terms = lessons.alignment_terms(batch, [0.07, 0.5], train_temperature=0.07)
    marked = terms[terms["training temperature"]]
    assert list(marked["term"]) == ["NT-Xent"] and list(marked["temperature"]) == [0.07]
    assert "training temperature" not in lessons.alignment_terms(batch, [0.5]).columns


def test_ntxent_figure_always_shows_the_training_temperature_and_marks_it(cfg: dict) -> None:
    sim = np.array([[0.9, 0.5, 0.1], [0.2, 0.8, 0.3], [0.1, 0.4, 0.7]])
    assert cfg["train"]["temperature"] == 0.07
    assert lessons.lesson_temperatures(cfg) == [0.07, 0.5, 1.0]
    for given in ([0.5, 1.0], None):  # the training temperature is added when not given
        fig = lessons.ntxent_lesson(sim, np.array(["a", "b", "c"]), given, cfg)
        right = fig.axes[1]  # [0] heatmap, [1] softmax bars, [2] the colour bar
        legend = [t.get_text() for t in right.get_legend().get_texts()]
        p_train = np.exp(sim[0] / 0.07) / np.exp(sim[0] / 0.07).sum()
        assert legend[0] == f"τ = 0.07 (training): p(own note) = {p_train[0]:.2f}"
        assert len(legend) == 3 and "training" not in legend[1] + legend[2]
        heights = [patch.get_height() for patch in right.patches[:3]]  # the first temperature's bars
        assert np.allclose(heights, p_train)
        assert right.patches[0].get_linewidth() > 0 and right.patches[3].get_linewidth() == 0  # outlined: trains
    plt.close("all")


def test_ntxent_lesson_returns_a_figure(cfg: dict) -> None:
    rng = np.random.default_rng(0)
    fig = lessons.ntxent_lesson(rng.uniform(-1, 1, (4, 4)), np.array(list("abcd")), [0.1, 1.0], cfg)
    assert isinstance(fig, plt.Figure)
    plt.close("all")
