"""Zero-shot prompts, concept truth and AUROC, and the linear probe, against constructed embeddings with known
answers and explicit loops."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dermlib.probes import (class_prompts, concept_auroc, concept_phrases, concept_truth, directions, linear_probe,
                            zero_shot)


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


def test_zero_shot_and_concepts_on_embeddings_with_a_known_answer() -> None:
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(16, 16)))[0]  # orthonormal directions
    labels = rng.integers(0, 3, 60)
    images = basis[labels] + 0.1 * rng.normal(size=(60, 16))
    table = {f"c{k}": [f"p{k}a", f"p{k}b"] for k in range(3)}
    embed = {f"p{k}{v}": basis[k] + 0.05 * rng.normal(size=16) for k in range(3) for v in "ab"}
    dirs = directions(table, lambda texts: np.stack([embed[t] for t in texts]))
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
