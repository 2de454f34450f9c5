"""The evaluation grid (dermlib.evaluate.grid) end to end on a tiny real SynthDerm work dir: real training,
encoding, metrics, saved embeddings and per-sample values, probe rows, and reuse of runs and evaluations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dermlib import metrics
from dermlib.config import get_config
from dermlib.evaluate.grid import eval_key, run_grid
from dermlib.evaluate.pools import evaluation_pool
from dermlib.evaluate.results import RESULT_COLUMNS, embeddings_path, load_embeddings, load_results
from dermlib.workdir import WorkDir
from tests.fakes.workdirs import GRID_EXTERNAL, GRID_INTERNAL, make_grid_work_dir

INTERNAL, EXTERNAL = GRID_INTERNAL, GRID_EXTERNAL  # the work dir's two internal sources and one external


@pytest.fixture(scope="module")
def grid_cfg(tmp_path_factory: pytest.TempPathFactory) -> dict:
    torch.set_num_threads(1)
    work = make_grid_work_dir(tmp_path_factory.mktemp("grid"))
    return get_config("demo", {"work_dir": str(work), "figures_dir": str(work.parent / "figures"),
                               "train.epochs": 1, "train.batch_size": 16, "train.max_text_len": 48,
                               "train.note_features": None,  # the committed note store holds none of these notes
                               "eval.strategies": ["Img", "M"], "eval.seeds": [0], "eval.bootstrap": 30})


@pytest.fixture(scope="module")
def results(grid_cfg: dict) -> pd.DataFrame:
    return run_grid(grid_cfg)


def test_results_table(results: pd.DataFrame, grid_cfg: dict) -> None:
    assert list(results.columns) == RESULT_COLUMNS
    assert set(results["strategy"]) == {"Img", "M"} and results["config_hash"].str.len().eq(8).all()
    pd.testing.assert_frame_equal(load_results(grid_cfg), results)
    kappa = results[results["metric"] == "kappa"]
    assert set(kappa["source"]) == set(INTERNAL + EXTERNAL) | {"pooled"}
    assert set(kappa.loc[kappa["source"] == EXTERNAL[0], "partition"]) == {"external"}
    pooled_internal = kappa[(kappa["source"] == "pooled") & (kappa["partition"] == "internal")]
    per_source = kappa[kappa["source"].isin(INTERNAL) & (kappa["strategy"] == "Img")]
    assert pooled_internal["n"].iloc[0] == per_source["n"].sum()
    finite = kappa.dropna(subset=["ci_low"])
    assert ((finite["ci_low"] <= finite["value"] + 1e-9) & (finite["value"] <= finite["ci_high"] + 1e-9)).all()
    img = results[(results["strategy"] == "Img") & results["metric"].isin(["map_i2t", "paired_cosine"])]
    assert len(img) and img["value"].isna().all()  # the image-only baseline has no text side
    text = results[(results["strategy"] == "M") & results["metric"].str.startswith(("map_", "recall@"))]
    assert text["value"].between(0, 1).all()
    # recall@k can only grow with k, and reaches 1 once k covers the whole gallery (n pairs)
    recall = text[text["metric"].str.startswith("recall@")].assign(
        k=lambda t: t["metric"].str.extract(r"recall@(\d+)_")[0].astype(int),
        direction=lambda t: t["metric"].str[-3:])
    assert recall["k"].nunique() >= 2
    for _, group in recall.groupby(["seed", "source", "partition", "direction"]):
        ordered = group.sort_values("k")
        assert ordered["value"].is_monotonic_increasing, ordered
        assert (ordered.loc[ordered["k"] >= ordered["n"], "value"] == 1.0).all(), ordered


def test_results_match_saved_embeddings(results: pd.DataFrame, grid_cfg: dict) -> None:
    """The table's retrieval numbers are reproducible from the saved embeddings (what notebook 05 relies on)."""
    run_id = results.loc[results["strategy"] == "M", "run_id"].iloc[0]
    emb = load_embeddings(embeddings_path(grid_cfg, run_id))
    assert (emb["note"] == "").sum() == np.isnan(emb["text_emb"]).any(axis=1).sum() == 1  # the failed note
    mask = (emb["source"] == INTERNAL[0]) & np.isfinite(emb["text_emb"]).all(axis=1)
    # independent references: scikit-learn's average precision per text query (a hit is an image of the same class,
    # ranked by cosine similarity) and the cosine of each pair written out with numpy
    from sklearn.metrics import average_precision_score

    text, image, labels = emb["text_emb"][mask], emb["image_emb"][mask], np.asarray(emb["label"][mask])
    unit_t = text / np.linalg.norm(text, axis=1, keepdims=True)
    unit_i = image / np.linalg.norm(image, axis=1, keepdims=True)
    scores = unit_t @ unit_i.T
    aps = [average_precision_score(labels == labels[q], scores[q]) for q in range(len(labels))
           if (labels == labels[q]).any()]
    row = results.query("strategy == 'M' and metric == 'map_t2i' and source == @INTERNAL[0]")
    assert row["value"].iloc[0] == pytest.approx(np.mean(aps), rel=1e-6) and row["n"].iloc[0] == mask.sum()
    cos = (unit_i * unit_t).sum(axis=1).mean()
    assert results.query("strategy == 'M' and metric == 'paired_cosine' and source == @INTERNAL[0]")[
        "value"].iloc[0] == pytest.approx(cos, rel=1e-5)


def test_saved_embeddings_reproduce_the_paired_cosine_row(results: pd.DataFrame, grid_cfg: dict) -> None:
    run_id = results.loc[results["strategy"] == "M", "run_id"].iloc[0]
    emb = load_embeddings(embeddings_path(grid_cfg, run_id))
    has_note = np.isfinite(emb["text_emb"]).all(axis=1)
    assert has_note.sum() == len(emb["label"]) - 1  # the sample without a note stays NaN, in place
    internal = has_note & (emb["partition"] == "internal")
    img, txt = emb["image_emb"][internal], emb["text_emb"][internal]
    by_hand = np.mean(np.sum(img * txt, axis=1) / (np.linalg.norm(img, axis=1) * np.linalg.norm(txt, axis=1)))
    row = results[(results["run_id"] == run_id) & (results["metric"] == "paired_cosine")
                  & (results["partition"] == "internal") & (results["source"] == "pooled")]
    assert row["value"].iloc[0] == pytest.approx(by_hand, rel=1e-5)


def test_sample_values_hold_within_source_ap_and_cosine_lift(results: pd.DataFrame, grid_cfg: dict) -> None:
    run_id = results.loc[results["strategy"] == "M", "run_id"].iloc[0]
    samples = pd.read_parquet(WorkDir.of(grid_cfg).samples(run_id))
    emb = load_embeddings(embeddings_path(grid_cfg, run_id))
    by_id = dict(zip(emb["sample_id"], emb["source"]))
    assert samples["source"].tolist() == [by_id[s] for s in samples["sample_id"]]  # each image's own source
    rows = results[(results["run_id"] == run_id) & (results["source"] != "pooled")].set_index(["source", "metric"])
    for source, part in samples.groupby("source"):  # each query's AP in its own source's gallery: that source's row
        for direction in ("i2t", "t2i"):
            assert part[f"ap_{direction}_source"].mean() == pytest.approx(rows.at[(source, f"map_{direction}"),
                                                                                   "value"], rel=1e-6)
    internal = samples[(samples["partition"] == "internal")].dropna(subset=["cosine"])
    has_note = np.isfinite(emb["text_emb"]).all(axis=1) & (emb["partition"] == "internal")
    img, txt = emb["image_emb"][has_note], emb["text_emb"][has_note]
    shuffled = np.mean([metrics.paired_cosine(img, np.roll(txt, k, axis=0)).mean() for k in range(1, len(txt))])
    assert internal["cosine_lift"].mean() == pytest.approx(internal["cosine"].mean() - shuffled, abs=1e-5)


def test_second_run_reuses_runs_and_evaluations(results: pd.DataFrame, grid_cfg: dict) -> None:
    work = Path(grid_cfg["work_dir"])
    watched = sorted(work.glob("runs/*/checkpoint.pt")) + sorted(work.glob("results/runs/*.parquet"))
    assert len(watched) == 4
    before = {p: p.stat().st_mtime_ns for p in watched}
    again = run_grid(grid_cfg)
    assert {p: p.stat().st_mtime_ns for p in watched} == before  # nothing retrained, nothing re-evaluated
    pd.testing.assert_frame_equal(again, results)
    # A changed evaluation setting re-evaluates (cheap) without retraining.
    changed = run_grid({**grid_cfg, "eval": {**grid_cfg["eval"], "bootstrap": 10}})
    assert all(p.stat().st_mtime_ns == before[p] for p in watched if p.name == "checkpoint.pt")
    assert any(p.stat().st_mtime_ns != before[p] for p in watched if p.suffix == ".parquet")
    pd.testing.assert_series_equal(changed["value"], results["value"])


def test_eval_key_follows_the_probe_settings(results: pd.DataFrame, grid_cfg: dict) -> None:
    """Cached run results are reused only while the class-description settings (zero-shot rows) are unchanged."""
    run = next(Path(grid_cfg["work_dir"]).glob("runs/M-seed0-*"))
    pool, _ = evaluation_pool(grid_cfg)
    key = lambda **changes: eval_key(run, pool, {**grid_cfg, "eval": {**grid_cfg["eval"], **changes}})  # noqa: E731
    assert key() == key()
    assert len({key(), key(class_descriptions=0), key(class_descriptions_cache="{work_dir}/other.sqlite")}) == 3


def test_probe_rows_zero_shot_concepts_and_linear_probe(results: pd.DataFrame, grid_cfg: dict) -> None:
    """Every run gets a linear probe; text runs zero-shot and concept AUROC; the prompts are saved."""
    import json

    from dermlib.evaluate.results import results_dir

    for strategy in ("Img", "M"):
        got = results[(results["strategy"] == strategy) & (results["source"] == "pooled")]
        probe = got[got["metric"] == "probe_kappa"].set_index("partition")["value"]
        assert set(probe.index) == {"internal", "external"} and probe.between(-1, 1).all()
        zero = got[got["metric"].str.startswith("zeroshot_")]
        concepts = got[got["metric"].str.startswith("concept_auroc:")]
        if strategy == "Img":
            assert zero.empty and concepts.empty
        else:
            assert set(zero["metric"]) == {"zeroshot_kappa", "zeroshot_balanced_accuracy"}
            assert "concept_auroc:structure:streaks" in set(concepts["metric"])
            assert concepts["value"].dropna().between(0, 1).all() and (concepts["n"] > 0).all()
    prompts = json.loads((results_dir(grid_cfg) / "prompts.json").read_text())
    assert prompts["class_prompts"]["MEL"][0].endswith("Diagnosis: melanoma.")
    assert "The lesion shows an irregular border." in prompts["concept_phrases"]["border:irregular"]


def test_parallel_evaluation_gives_the_same_numbers(results: pd.DataFrame, grid_cfg: dict) -> None:
    """`eval.parallel_runs` changes how many runs are evaluated at once, never a number: every evaluation computes
    on one thread, here or in a worker process (4 runs: the first here, three in two spawned workers)."""
    work = Path(grid_cfg["work_dir"])
    cfg = {**grid_cfg, "eval": {**grid_cfg["eval"], "seeds": [0, 1], "bootstrap": 31, "parallel_runs": 1}}
    serial = run_grid(cfg)
    for cached in work.glob("results/runs/*.parquet"):  # forget the evaluations, keep the trained runs
        cached.unlink()
    parallel = run_grid({**cfg, "eval": {**cfg["eval"], "parallel_runs": 2}})
    assert serial["run_id"].nunique() == 4
    pd.testing.assert_frame_equal(parallel, serial)
