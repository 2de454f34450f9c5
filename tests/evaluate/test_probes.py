"""Zero-shot prompts, concept truth and AUROC, and the linear probe (dermlib.evaluate.probes), against constructed
embeddings with known answers and explicit loops; the prompt file, and probe rows of a real tiny run with LLM class
descriptions written beforehand on the fake OpenAI-protocol server (tests/fakes/fake_openai.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dermlib.config import get_config
from dermlib.evaluate.probes import (
    class_prompts,
    concept_auroc,
    concept_phrases,
    concept_truth,
    directions,
    linear_probe,
    write_prompts,
    zero_shot,
    zero_shot_metric,
)
from dermlib.notes.descriptions import description_styles, descriptions_cache_path, generate_descriptions
from tests.fakes.fake_openai import FakeOpenAI
from tests.fakes.layouts import PH2_ROWS, build, write_ph2_workbook
from tests.fakes.notes import llm_cfg
from tests.fakes.workdirs import make_work_dir, tiny_cfg


def test_class_prompts_are_m_template_notes_naming_the_diagnosis() -> None:
    prompts = class_prompts(["MEL", "NV"])
    assert prompts["MEL"][0] == "A patient presents with a skin lesion. Diagnosis: melanoma."
    assert "A dermoscopic image was acquired." in prompts["MEL"][1] and "clinical" in prompts["MEL"][2]
    assert all("melanocytic nevus" in p for p in prompts["NV"]) and len(prompts["NV"]) == 3
    phrases = concept_phrases()
    assert "structure:blue-whitish veil" in phrases and phrases["border:irregular"][1] == \
        "The lesion shows an irregular border."


def test_concept_truth_reads_synthderm_and_derm7pt_style_attributes() -> None:
    pool = pd.DataFrame({"attributes": [
        json.dumps({"colors": ["black", "red"], "structures": ["streaks"], "border": "irregular", "asymmetry": 2}),
        json.dumps({"pigment_network": "typical", "streaks": "absent", "blue_whitish_veil": "present"}),
        None]})
    truth = concept_truth(pool)
    assert truth.loc[0, "colour:black"] and not truth.loc[0, "colour:white"] and truth.loc[0, "asymmetry:any"]
    assert truth.loc[0, "structure:streaks"] and truth.loc[0, "border:irregular"]
    assert truth.loc[1, "structure:pigment network"] and not truth.loc[1, "structure:streaks"]
    assert truth.loc[1, "structure:blue-whitish veil"] and pd.isna(truth.loc[1, "colour:black"])
    assert truth.loc[2].isna().all()


def test_concept_truth_reads_ph2_ground_truth_as_the_ph2_loader_records_it(tmp_path: Path) -> None:
    """The PH2 workbook stand-in (tests/fakes/layouts.py PH2_ROWS) through the real loader; expected values read off
    those rows by hand: Pigment Network T/AT is present; Dots/Globules, Streaks, Regression Areas and Blue-Whitish
    Veil present unless A; colours are the X-marked columns; asymmetry 1 or 2 is asymmetric. PH2 records neither
    border nor vascular structures: those stay NA."""
    from dermlib.data import load_source

    write_ph2_workbook(tmp_path / "meta" / "PH2" / "PH2_dataset.xlsx", PH2_ROWS)
    manifest = load_source("ph2", build("ph2", tmp_path / "meta", tmp_path / "ph2"))
    truth = concept_truth(manifest.set_index("sample_id"))
    pn, dg, st, rs, bwv = "pigment network", "dots/globules", "streaks", "regression structures", "blue-whitish veil"
    expected = {  # sample: (asymmetric, structures present, colours)
        "ph2/IMD901": (False, {pn}, {"light brown"}),
        "ph2/IMD905": (True, {pn, dg}, {"light brown", "dark brown"}),
        "ph2/IMD902": (True, {pn, dg, st}, {"light brown", "dark brown"}),
        "ph2/IMD903": (True, {pn, rs}, {"dark brown", "blue-gray"}),
        "ph2/IMD904": (True, {pn, dg, st, rs, bwv}, {"white", "red", "dark brown", "blue-gray", "black"}),
        "ph2/IMD906": (True, {pn, dg, st, bwv}, {"dark brown", "black"}),
    }
    assert list(truth.index) == list(expected)
    for sample, (asymmetric, structures, colours) in expected.items():
        row = truth.loc[sample]
        assert row["asymmetry:any"] == asymmetric, sample
        for s in (pn, dg, st, rs, bwv):
            assert row[f"structure:{s}"] == (s in structures), (sample, s)
        for c in ("light brown", "dark brown", "black", "blue-gray", "red", "white"):
            assert row[f"colour:{c}"] == (c in colours), (sample, c)
        assert pd.isna(row["structure:vascular structures"]) and pd.isna(row["border:irregular"]), sample
    assert truth.notna().sum().to_dict() == {**{c: 6 for c in truth.columns},
                                             "structure:vascular structures": 0, "border:irregular": 0}


def test_zero_shot_and_concepts_on_embeddings_with_a_known_answer() -> None:
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(16, 16)))[0]  # orthonormal directions
    labels = rng.integers(0, 3, 60)
    images = basis[labels] + 0.1 * rng.normal(size=(60, 16))
    table = {f"c{k}": [f"p{k}a", f"p{k}b"] for k in range(3)}
    embed = {f"p{k}{v}": basis[k] + 0.05 * rng.normal(size=16) for k in range(3) for v in "ab"}
    dirs = directions(table, lambda texts: np.stack([embed[t] for t in texts]))
    by_hand = [np.mean([embed[p] / np.linalg.norm(embed[p]) for p in table[f"c{k}"]], axis=0) for k in range(3)]
    np.testing.assert_allclose(dirs, [d / np.linalg.norm(d) for d in by_hand], atol=1e-6)  # float32
    assert (zero_shot(images, dirs) == labels).all()
    brute = [int(np.argmax([img @ d / np.linalg.norm(img) for d in dirs])) for img in images]
    assert zero_shot(images, dirs).tolist() == brute
    truth = pd.DataFrame({"c0": labels == 0, "c1": labels == 1, "c2": pd.array([pd.NA] * 60, dtype="boolean")},
                         dtype="boolean")
    found = concept_auroc(images, dirs, ["c0", "c1", "c2"], truth).set_index("concept")
    assert found.loc["c0", "auroc"] == 1.0 and found.loc["c1", "auroc"] == 1.0 and np.isnan(found.loc["c2", "auroc"])
    assert found.loc["c0", "n_positive"] == (labels == 0).sum() and found.loc["c2", "n"] == 0
    flipped = concept_auroc(images, -dirs, ["c0"], truth)
    assert flipped.loc[0, "auroc"] == 0.0  # a concept pointing away from its images scores below chance


def test_linear_probe_separates_separable_classes() -> None:
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(4, 8)) * 4
    y = np.repeat(np.arange(4), 30)
    x = centres[y] + rng.normal(size=(120, 8))
    predicted = linear_probe(x[::2], y[::2], x[1::2])
    assert (predicted == y[1::2]).mean() > 0.95
    with pytest.raises(ValueError):
        linear_probe(x[:5], np.zeros(5, int), x)  # one class: nothing to learn


def test_zero_shot_metrics_are_named_by_their_prompt_source() -> None:
    assert zero_shot_metric("kappa", "M template") == "zeroshot_kappa"
    assert zero_shot_metric("balanced_accuracy", "P3") == "zeroshot_balanced_accuracy:P3"


def test_write_prompts_saves_every_zero_shot_prompt_and_what_made_them(tmp_path: Path) -> None:
    with FakeOpenAI() as fake:
        cfg = llm_cfg(tmp_path, fake.base_url, **{"eval.class_descriptions": 1,
                                                  "figures_dir": str(tmp_path / "figures")})
        generate_descriptions(cfg)  # what notebook 02 does: write_prompts only reads them
        asked = fake.counts["chat"]
        path = write_prompts(cfg)
        assert fake.counts["chat"] == asked
    assert path == tmp_path / "work" / "results" / "prompts.json"
    text = path.read_text()
    assert (tmp_path / "figures" / "prompts.json").read_text() == text  # the committed copy beside the tables
    assert str(tmp_path) not in text and "/work/" not in text  # no machine's absolute path
    saved = json.loads(text)
    assert saved["class_descriptions_made_by"]["cache"] == "<outside the repository>/descriptions.sqlite"
    assert saved["class_prompts"]["MEL"][0].endswith("Diagnosis: melanoma.")
    assert set(saved["class_descriptions"]) == {"M+P1", "P3"} and len(saved["class_descriptions"]["P3"]) == 8
    made = saved["class_descriptions_made_by"]
    assert made["template"] == "class_descriptions.v1.json" and made["per_class"] == 1
    assert made["model"]["model"] == "fake-llm" and set(made["template_sha256"]) >= {"class_descriptions.v1.json"}
    assert saved["metrics"] == {"M template": "zeroshot_kappa", "M+P1": "zeroshot_kappa:M+P1", "P3": "zeroshot_kappa:P3"}


def test_prompt_files_record_the_cache_by_its_repository_path() -> None:
    from dermlib.config import REPO_ROOT
    from dermlib.config import shown

    assert shown(descriptions_cache_path(get_config("demo"))) == "data/class-descriptions-demo.sqlite"
    assert shown(Path("/elsewhere/cache.sqlite")) == "<outside the repository>/cache.sqlite"
    committed = REPO_ROOT / "figures" / "demo" / "prompts.json"  # written by the demo run (notebook 04)
    saved = json.loads(committed.read_text())
    assert saved["class_descriptions_made_by"]["cache"] == "data/class-descriptions-demo.sqlite"
    assert str(REPO_ROOT) not in committed.read_text()
    # one style per LLM strategy of the demo grid (M+P1, M+P2, P3), the demo's 4 descriptions per class
    assert set(saved["class_descriptions"]) == set(description_styles(get_config("demo"))) == {"M+P1", "M+P2", "P3"}
    assert all(len(saved["class_descriptions"][s]["MEL"]) == 4 for s in saved["class_descriptions"])


def test_probe_rows_score_zero_shot_for_every_prompt_source_on_a_trained_run(tmp_path: Path) -> None:
    """A real tiny M run: zero-shot kappa and balanced accuracy from the M template and from each style's LLM
    descriptions, per source and pooled partition, beside the linear probe."""
    import torch

    from dermlib.evaluate.pools import split_pool
    from dermlib.evaluate.probes import probe_rows
    from dermlib.train.inference import encode, load_run
    from dermlib.train.runs import fit

    torch.set_num_threads(1)
    work = make_work_dir(tmp_path, n_per_source=20)
    run = fit(tiny_cfg(work, strategy="M", epochs=1, train_last_n_text_layers=0))
    model, run_cfg = load_run(run)
    pool, pixels = split_pool(run_cfg, "test")
    emb = encode(model, pixels, None, run_cfg)
    with FakeOpenAI() as fake:
        cfg = llm_cfg(tmp_path, fake.base_url, work_dir=str(work))
        generate_descriptions(cfg)  # what notebook 02 does: probe_rows only reads them
        rows = probe_rows(model, emb, pool, run_cfg, cfg)
    pooled = rows[rows["source"] == "pooled"].set_index("metric")["value"]
    for source in ("M template", "M+P1", "P3"):
        for measure in ("kappa", "balanced_accuracy"):
            value = pooled[zero_shot_metric(measure, source)]
            assert np.isfinite(value) and -1 <= value <= 1, (source, measure)
    assert {"probe_kappa", "probe_balanced_accuracy", "concept_auroc:border:irregular"} <= set(pooled.index)
    per_source = rows[(rows["source"] != "pooled") & (rows["metric"] == "zeroshot_kappa:P3")]
    assert set(per_source["source"]) == set(pool["source"]) and (per_source["n"] > 0).all()
