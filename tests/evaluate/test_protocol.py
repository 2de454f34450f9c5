"""The paper's per-source protocol (dermlib.evaluate.protocol, dermlib.evaluate.macro) against independent references:
per-source κ from sklearn and per-source means from numpy loops, replicate by replicate; interval coverage in a small
seeded Monte Carlo; Holm by hand; TOST; the p-value floor; pairing on noted images; unweighted macro; the wording."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score

from dermlib.config import PAPER_PROTOCOL, check_protocol
from dermlib.evaluate import protocol
from dermlib.evaluate.macro import MacroBootstrap

PAIR = ["ap_i2t_source", "ap_t2i_source", "cosine", "cosine_lift_source", "ap_i2t_source_at_k", "ap_t2i_source_at_k"]
MARGINS = {"kappa": 0.03, "map": 0.03, "cosine": 0.03}


def make_samples(sizes: dict[str, dict[str, int]], strategies: list[str], n_seeds: int, rng: np.random.Generator,
                 n_classes: int = 3, cluster_size: int = 1) -> pd.DataFrame:
    """Random y/pred (60 % right) and per-pair values in [0, 1): sizes = {partition: {source: n_images}}; sample
    ids sort in pool order; clusters of `cluster_size` consecutive images of a source."""
    frames = []
    runs = len(strategies) * n_seeds
    for partition, sources in sizes.items():
        ids, srcs, clusters = [], [], []
        for source, n in sources.items():
            ids += [f"{partition[:3]}-{source}-{i:04d}" for i in range(n)]
            clusters += [f"{partition[:3]}-{source}-c{i // cluster_size}" for i in range(n)]
            srcs += [source] * n
        n = len(ids)
        y = rng.integers(0, n_classes, n)
        pred = np.where(rng.random((runs, n)) < 0.6, y, rng.integers(0, n_classes, (runs, n)))
        frames.append(pd.DataFrame({
            "strategy": np.repeat(strategies, n_seeds * n),
            "seed": np.tile(np.repeat(np.arange(n_seeds), n), len(strategies)),
            "partition": partition, "sample_id": np.tile(ids, runs), "source": np.tile(srcs, runs),
            "cluster": np.tile(clusters, runs), "y": np.tile(y, runs), "pred": pred.ravel(),
            **{column: rng.random(runs * n) for column in PAIR}}))
    return pd.concat(frames, ignore_index=True)


def reference(samples: pd.DataFrame, metric: str, a: list[str], b: list[str], partition: str,
              weights: list[np.ndarray] | None = None) -> np.ndarray:
    """Per seed, the unweighted mean over sources of mean_A − mean_B, by loops: κ from sklearn on repeated rows,
    other metrics as plain means over the images every strategy has (`weights`: one weight vector per source); a
    source left with no such image in a replicate is skipped by that replicate."""
    column = protocol.METRICS[metric][0]
    part = samples[(samples["partition"] == partition) & samples["strategy"].isin([*a, *b])]
    runs = {key: run.sort_values("sample_id") for key, run in part.groupby(["strategy", "seed", "source"])}
    sources = sorted(part["source"].unique())
    out = []
    for seed in sorted(part["seed"].unique()):
        per_source = []
        for i, source in enumerate(sources):
            run = {x: runs[(x, seed, source)] for x in {*a, *b}}
            w = np.ones(len(run[a[0]]), int) if weights is None else weights[i].astype(int)
            if column is None:
                value = {x: cohen_kappa_score(np.repeat(r["y"], w), np.repeat(r["pred"], w)) for x, r in run.items()}
            else:
                keep = np.logical_and.reduce([np.isfinite(r[column].to_numpy()) for r in run.values()])
                if not w[keep].sum():
                    continue
                value = {x: np.sum((w * r[column].to_numpy())[keep]) / np.sum(w[keep]) for x, r in run.items()}
            per_source.append(np.mean([value[x] for x in a]) - np.mean([value[x] for x in b]))
        out.append(np.mean(per_source) if per_source else np.nan)
    return np.array(out)


def decl(metric: str, a: list[str], b: list[str], **where: object) -> dict:
    return {"question": "q", "kind": "primary", "metric": metric, "a": a, "b": b, **where}


@pytest.fixture(scope="module")
def tiny() -> pd.DataFrame:
    rng = np.random.default_rng(11)
    samples = make_samples({"internal": {"s1": 9, "s2": 7}, "external": {"e1": 8, "e2": 6, "e3": 10}},
                           ["Img", "A", "B", "C"], 3, rng, cluster_size=2)
    notes = samples["strategy"] != "Img"
    samples.loc[~notes, PAIR] = np.nan
    gone = rng.random(len(samples)) < 0.15  # some notes missing, differently per strategy and seed
    samples.loc[gone & notes, PAIR] = np.nan
    return samples


@pytest.mark.parametrize("metric,a,b", [("kappa", ["A"], ["Img"]), ("kappa", ["A", "B", "C"], ["Img"]),
                                        ("map_i2t_within_source", ["C"], ["A", "B"]), ("paired_cosine", ["A"], ["B"])])
def test_point_and_every_replicate_match_loops_over_sources(tiny: pd.DataFrame, metric: str, a: list[str],
                                                            b: list[str]) -> None:
    engine = MacroBootstrap(tiny, PAIR, n_boot=6, seed=4)
    for partition in ("internal", "external"):
        found = engine.replicates(protocol.METRICS[metric][0], a, b, partition)
        np.testing.assert_allclose(found.per_seed[:, 0], reference(tiny, metric, a, b, partition), atol=1e-12)
        for rep in range(6):
            weights = [w[rep] for w in engine.weights(partition)]
            np.testing.assert_allclose(found.per_seed[:, 1 + rep], reference(tiny, metric, a, b, partition, weights),
                                       atol=1e-5)  # float32 weighted sums
        estimate, boot = engine.boot(found.per_seed)
        assert estimate == pytest.approx(found.per_seed[:, 0].mean(), abs=1e-12)
        draws = engine.seed_draws(3)
        assert boot[2] == pytest.approx(found.per_seed[draws[2], 3].mean(), abs=1e-12)


def test_pooled_kappa_is_kappa_of_all_the_partition_s_images(tiny: pd.DataFrame) -> None:
    found = MacroBootstrap(tiny, PAIR, n_boot=5).replicates(None, ["A"], ["Img"], "external", aggregate="pooled")
    expected = []
    for seed in range(3):
        runs = {x: tiny[(tiny["strategy"] == x) & (tiny["seed"] == seed) & (tiny["partition"] == "external")]
                for x in ("A", "Img")}
        expected.append(cohen_kappa_score(runs["A"]["y"], runs["A"]["pred"])
                        - cohen_kappa_score(runs["Img"]["y"], runs["Img"]["pred"]))
    np.testing.assert_allclose(found.per_seed[:, 0], expected, atol=1e-12)
    assert found.sources == ["e1", "e2", "e3"] and found.n_images == 24


def test_weights_are_drawn_within_each_source(tiny: pd.DataFrame) -> None:
    engine = MacroBootstrap(tiny, PAIR, n_boot=200)
    for weights, n in zip(engine.weights("external"), (8, 6, 10)):
        assert weights.shape == (200, n) and (weights.sum(axis=1) == n).all()  # clusters of 2: n/2 drawn, 2 each
        assert (weights[:, 0::2] == weights[:, 1::2]).all()  # whole clusters


def test_table_rows_interaction_and_holm_against_hand_computation(tiny: pd.DataFrame) -> None:
    declared = [decl("kappa", ["A"], ["Img"], partitions=["internal", "external"]),
                decl("kappa", ["A", "B", "C"], ["Img"], contrast="external - internal"),
                decl("map_t2i_within_source", ["C"], ["A", "B"], partitions=["external"]),
                {**decl("kappa", ["B"], ["Img"], partitions=["external"]), "kind": "control"}]
    table = protocol.protocol_rows(tiny, declared, n_boot=300, margins=MARGINS)
    assert list(table["partition"]) == ["internal", "external", "external - internal", "external", "external"]
    assert table.loc[0, "estimate"] == pytest.approx(reference(tiny, "kappa", ["A"], ["Img"], "internal").mean())
    interaction = (reference(tiny, "kappa", ["A", "B", "C"], ["Img"], "external")
                   - reference(tiny, "kappa", ["A", "B", "C"], ["Img"], "internal")).mean()
    assert table.loc[2, "estimate"] == pytest.approx(interaction)
    assert table.loc[3, "comparison"] == "C - mean(A, B)" and table.loc[3, "n_sources"] == 3
    primaries = table["kind"] == "primary"
    p = table.loc[primaries, "p_value"].to_numpy()
    order = np.argsort(p, kind="stable")
    by_hand = np.maximum.accumulate(np.minimum(1, (len(p) - np.arange(len(p))) * p[order]))
    np.testing.assert_allclose(table.loc[primaries, "p_holm"].to_numpy()[order], by_hand)
    assert table.loc[4, "p_holm"] == pytest.approx(table.loc[4, "p_value"])  # a family of one (the control)


def test_holm_by_hand_with_nan_and_floors() -> None:
    adjusted, floored = protocol.holm(np.array([0.01, 0.04, np.nan, 0.03, 0.005]),
                                      np.array([False, False, False, False, True]))
    np.testing.assert_allclose(adjusted, [0.03, 0.06, np.nan, 0.06, 0.02])
    assert list(floored) == [False, False, False, False, True]
    assert protocol.holm(np.array([0.5, 0.6]))[0].tolist() == [1.0, 1.0]


def shifted(shift_ext: float, shift_int: float, seed_offsets: np.ndarray, noise: float = 0.0,
            rng: np.random.Generator | None = None) -> pd.DataFrame:
    """Cosine of A = B's + shift (+ a per-seed offset shared by both partitions, + per-image noise)."""
    rng = rng or np.random.default_rng(0)
    base = make_samples({"internal": {"i1": 30, "i2": 20}, "external": {"e1": 25, "e2": 15}}, ["A", "B"],
                        len(seed_offsets), rng)
    a = base["strategy"] == "A"
    b_values = base.loc[~a, "cosine"].to_numpy()
    shift = np.where(base.loc[a, "partition"] == "external", shift_ext, shift_int)
    base.loc[a, "cosine"] = (b_values + shift + seed_offsets[base.loc[a, "seed"].to_numpy()]
                             + rng.normal(0, noise, len(b_values)))
    return base


def test_interaction_draws_the_same_seeds_for_both_partitions() -> None:
    """Seed offsets common to both partitions cancel in the interaction: its interval is a point."""
    samples = shifted(0.1, 0.0, np.array([0.0, 0.3, -0.2, 0.5, 0.1]))
    row = protocol.protocol_rows(samples, [decl("paired_cosine", ["A"], ["B"], contrast="external - internal")],
                                 n_boot=500, margins=MARGINS).iloc[0]
    assert row["estimate"] == pytest.approx(0.1)
    assert row["ci_low"] == pytest.approx(0.1, abs=1e-6) and row["ci_high"] == pytest.approx(0.1, abs=1e-6)
    assert row["p_floor"] and row["p_value"] == pytest.approx(1 / 500)


def test_p_floor_exactly_when_no_replicate_crosses_zero() -> None:
    ones = np.full(1000, 0.2)
    assert protocol.summarise(0.2, ones, 0.03)["p_floor"] and protocol.summarise(0.2, ones, 0.03)["p_value"] == 1e-3
    one_below = ones.copy()
    one_below[7] = -0.01
    found = protocol.summarise(0.2, one_below, 0.03)
    assert not found["p_floor"] and found["p_value"] == pytest.approx(2e-3)
    touching = ones.copy()
    touching[3] = 0.0  # reaching 0 counts as crossing
    assert not protocol.summarise(0.2, touching, 0.03)["p_floor"]
    samples = shifted(0.1, 0.1, np.zeros(4))
    rows = protocol.protocol_rows(samples, [decl("paired_cosine", ["A"], ["B"], partitions=["external"]),
                                            decl("paired_cosine", ["B"], ["B2"], partitions=["external"])],
                                  n_boot=400, margins=MARGINS)
    assert len(rows) == 1 and bool(rows.loc[0, "p_floor"]) and rows.loc[0, "p_value"] == pytest.approx(1 / 400)


def test_tost_equivalence_follows_the_effect_and_the_margin() -> None:
    rng = np.random.default_rng(5)
    null = shifted(0.0, 0.0, rng.normal(0, 0.002, 6), noise=0.01, rng=rng)
    big = shifted(0.06, 0.06, rng.normal(0, 0.002, 6), noise=0.01, rng=rng)
    spec = [decl("paired_cosine", ["A"], ["B"], partitions=["internal", "external"])]
    for row in protocol.protocol_rows(null, spec, n_boot=1000, margins=MARGINS).itertuples():
        assert row.equivalent and row.tost_p < 0.05 and -0.03 < row.ci90_low and row.ci90_high < 0.03
        assert "equivalent within ±0.03" in protocol.sentence(pd.Series(row._asdict()))
    for row in protocol.protocol_rows(big, spec, n_boot=1000, margins=MARGINS).itertuples():
        assert not row.equivalent and row.tost_p > 0.5 and row.ci_low > 0
        assert protocol.sentence(pd.Series(row._asdict())).endswith("A is above B.")


def test_pairing_drops_images_a_strategy_has_no_note_for() -> None:
    samples = shifted(0.1, 0.1, np.zeros(3))
    lost = (samples["strategy"] == "A") & (samples["sample_id"] == "ext-e1-0003")
    samples.loc[lost, "cosine"] = np.nan
    samples.loc[(samples["strategy"] == "B") & (samples["sample_id"] == "ext-e1-0003"), "cosine"] = -50.0
    row = protocol.protocol_rows(samples, [decl("paired_cosine", ["A"], ["B"], partitions=["external"])],
                                 n_boot=200, margins=MARGINS).iloc[0]
    assert row["estimate"] == pytest.approx(0.1) and row["n_images"] == 39  # 25 + 15 images, one unpaired


def test_macro_is_unweighted_over_sources() -> None:
    rng = np.random.default_rng(2)
    samples = make_samples({"external": {"big": 300, "small": 3}}, ["A", "B"], 2, rng)
    a = samples["strategy"] == "A"
    samples.loc[a, "cosine"] = samples.loc[~a, "cosine"].to_numpy() + np.where(
        samples.loc[a, "source"] == "small", 1.0, 0.0)
    macro, pooled = (protocol.protocol_rows(samples, [decl("paired_cosine", ["A"], ["B"], partitions=["external"],
                                                          aggregate=agg)], n_boot=100, margins=MARGINS).iloc[0]
                     for agg in ("macro", "pooled"))
    assert macro["estimate"] == pytest.approx(0.5) and macro["n_sources"] == 2
    assert pooled["estimate"] == pytest.approx(3 / 303) and pooled["protocol"] == "pooled"


def _coverage(metric: str, truth: float, n_sim: int) -> float:
    """Share of simulated studies whose 95 % interval holds `truth`: new clusters, seeds and noise each time.

    Cosine: A = B + truth + a lesion effect (shared by a cluster's two images and every seed) + a seed effect + noise.
    κ: both strategies predict from the same process, so the true Δκ is 0: each image has a fixed chance of being
    right (mostly near 0 or 1, as a trained model's easy and hard images), redrawn per run."""
    hits = 0
    for sim in range(n_sim):
        rng = np.random.default_rng(100 + sim)
        samples = make_samples({"external": {"e1": 40, "e2": 30, "e3": 20}}, ["A", "B"], 5, rng, cluster_size=2)
        a = samples["strategy"] == "A"
        codes = pd.factorize(samples["cluster"])[0]
        if metric == "paired_cosine":
            cluster_effect = rng.normal(0, 0.15, codes.max() + 1)[codes[a]]
            seed_effect = rng.normal(0, 0.02, 5)[samples.loc[a, "seed"].to_numpy()]
            samples.loc[a, "cosine"] = (samples.loc[~a, "cosine"].to_numpy() + truth + cluster_effect
                                        + seed_effect + rng.normal(0, 0.05, a.sum()))
        else:
            right = rng.beta(0.3, 0.3, codes.max() + 1)[codes] > rng.random(len(samples))
            wrong = (samples["y"] + rng.integers(1, 3, len(samples))) % 3
            samples["pred"] = np.where(right, samples["y"], wrong)
        row = protocol.protocol_rows(samples, [decl(metric, ["A"], ["B"], partitions=["external"])], n_boot=300,
                                     margins=MARGINS, seed=sim).iloc[0]
        hits += row["ci_low"] <= truth <= row["ci_high"]
    return hits / n_sim


def test_interval_covers_a_known_effect_at_about_the_nominal_rate() -> None:
    """Binomial sd of a 95 % coverage over 120 studies: 2 points. The κ scenario is all image x seed noise, which
    the seeds x clusters bootstrap counts in both draws: conservative (0.997 over 300 studies), so no upper bound."""
    assert 0.87 <= _coverage("paired_cosine", 0.05, 120) <= 0.99
    assert 0.88 <= _coverage("kappa", 0.0, 60)


def test_chance_columns_are_macro_means_of_per_source_chance_rows(tiny: pd.DataFrame) -> None:
    results = pd.DataFrame([{"strategy": x, "seed": s, "partition": "external", "source": src,
                             "metric": "chance_map_i2t", "value": v + s * 0.01}
                            for x, base in (("A", 0.1), ("B", 0.2), ("C", 0.4))
                            for src, v in (("e1", base), ("e2", base + 0.1), ("e3", base + 0.2)) for s in range(3)])
    row = protocol.protocol_rows(tiny, [decl("map_i2t_within_source", ["C"], ["A", "B"], partitions=["external"])],
                                 n_boot=50, margins=MARGINS, results=results).iloc[0]
    assert row["chance_a"] == pytest.approx(0.5 + 0.01) and row["chance_b"] == pytest.approx(0.25 + 0.01)
    assert row["ci_low"] != row["chance_a"]


def test_sentences_say_what_the_numbers_say() -> None:
    row = {"comparison": "P3 - mean(M+P1, M+P2)", "metric": "map_i2t_within_source", "partition": "external",
           "protocol": protocol.MACRO, "n_sources": 5, "estimate": -0.041, "ci_low": -0.055, "ci_high": -0.028,
           "p_value": 1e-4, "p_floor": True, "p_holm": 4e-4, "p_holm_floor": True, "n_seeds": 10, "margin": 0.03,
           "tost_p": 0.4, "tost_floor": False, "equivalent": False}
    assert protocol.sentence(row) == ("P3 − mean(M+P1, M+P2), image→text mAP within each source, macro over 5 "
                                      "external sources: −0.041 (95 % CI −0.055 to −0.028; p < 0.0001, Holm p < "
                                      "0.0004; 10 seeds): P3 is below mean(M+P1, M+P2).")
    null = {**row, "estimate": 0.004, "ci_low": -0.012, "ci_high": 0.02, "p_value": 0.61, "p_floor": False,
            "p_holm": 1.0, "p_holm_floor": False, "tost_p": 0.004, "equivalent": True}
    assert protocol.sentence(null).endswith("p = 0.61, Holm p = 1.00; 10 seeds): equivalent within ±0.03 "
                                            "(TOST p = 0.004).")
    wide = {**null, "ci_low": -0.05, "ci_high": 0.06, "tost_p": 0.3, "equivalent": False}
    assert "not resolved — the interval still holds effects of ±0.03" in protocol.sentence(wide)
    shift = {**row, "partition": "external - internal", "estimate": 0.05, "ci_low": 0.01, "ci_high": 0.09}
    assert "the difference is larger on external than on internal" in protocol.sentence(shift)


def test_declarations_checked_and_paper_protocol_valid() -> None:
    check_protocol(PAPER_PROTOCOL)
    for d in PAPER_PROTOCOL:
        if len(d["a"]) > 1:
            assert not {"D", "M+G"} & set(d["a"])  # controls never join the MM mean
    with pytest.raises(ValueError, match="either partitions"):
        check_protocol([decl("kappa", ["A"], ["B"])])
    with pytest.raises(ValueError, match="metric must be"):
        check_protocol([decl("accuracy", ["A"], ["B"], partitions=["external"])])


def test_runs_on_different_pools_are_an_error(tiny: pd.DataFrame) -> None:
    broken = tiny.drop(tiny.index[(tiny["strategy"] == "B") & (tiny["seed"] == 1)][:1])
    with pytest.raises(ValueError, match="another pool"):
        protocol.protocol_rows(broken, [decl("kappa", ["B"], ["Img"], partitions=["internal"])], n_boot=10,
                               margins=MARGINS)


def test_earlier_protocol_rows_keep_the_pooled_table() -> None:
    earlier = pd.DataFrame({"comparison": ["P3 - M+P1", "post hoc: P3 - M+P2", "chance: M"],
                            "metric": ["map_i2t", "kappa", "paired_cosine"], "partition": "external",
                            "estimate": [0.05, 0.01, 0.5], "ci_low": [0.03, -0.01, 0.48], "ci_high": [0.06, 0.03, 0.52],
                            "p_value": [0.001, 0.3, np.nan], "n_seeds": 10, "n": 600})
    rows = protocol.earlier_protocol_rows(earlier, 1000)
    assert list(rows["kind"]) == ["earlier-protocol", "earlier-protocol", "chance"]
    assert list(rows["question"]) == ["b", "a", "c"] and list(rows["p_floor"]) == [True, False, False]
    assert (rows["protocol"] == "pooled").all() and list(rows.columns) == protocol.COLUMNS
