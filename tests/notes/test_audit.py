"""The hallucination audit on hand-built notes whose right answers are known."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from dermlib.data.schema import to_manifest
from dermlib.notes import audit, audit_summary
from dermlib.notes.audit import (audit_note, distinct_ngrams, marked_phrases, rates_and_counts, stated_ages,
                                 truth_attributes)


def row(**kw: object) -> dict[str, object]:
    base = {"sample_id": "s/1", "source": "synthderm_a", "image_path": "x", "modality": "dermoscopic", "label": "MEL",
            "label_raw": "mel", "age": 54.0, "sex": "male", "site": "posterior torso",
            "attributes": json.dumps({"colors": ["black", "dark brown"], "structures": ["streaks"]})}
    return {**base, **kw}


def test_consistent_note_with_negated_structure() -> None:
    note = ("A 54-year-old man has a lesion on the upper back. Dermoscopy shows black and bluish-grey areas, "
            "streaks, and no blue-whitish veil. Diagnosis: melanoma.")
    flags = audit_note(note, row())
    assert (flags["age"], flags["sex"], flags["site"], flags["diagnosis"]) == ("correct",) * 4
    assert flags["colors_stated"] == "black, blue-gray" and flags["colors_tp"] == 1 and flags["colors_n_true"] == 2
    assert flags["structures_stated"] == "streaks" and flags["structures_tp"] == 1  # the veil is negated
    assert flags["any_contradiction"] is False and flags["any_unsupported_attribute"] is True  # blue-gray is not true


def test_contradicted_invented_and_off_vocabulary() -> None:
    note = "A 30-year-old woman with a pink and tan papule on the arm; basal cell carcinoma suspected."
    flags = audit_note(note, row(age=None))
    assert flags["age"] == "invented" and flags["sex"] == "contradicted" and flags["site"] == "contradicted"
    assert flags["diagnosis"] == "contradicted" and flags["any_contradiction"] is True
    assert flags["vocab_in"] == 0 and flags["vocab_off"] == 2
    mixed = audit_note("Melanoma versus melanocytic nevus; he is in his 50s.", row())
    assert mixed["diagnosis"] == "mixed" and mixed["age"] == "correct" and mixed["sex"] == "correct"
    assert audit_note("A skin lesion.", row())["age"] == "absent"
    assert audit_note("A skin lesion.", row(age=None, sex=None))["sex"] == "n/a"


def test_site_families_and_age_ranges() -> None:
    assert audit_note("Lesion on the trunk.", row())["site"] == "correct"  # torso includes the posterior torso
    assert audit_note("Lesion on the sole.", row(site="acral"))["site"] == "correct"
    assert stated_ages("a 7-year-old; aged 40; in her 60s") == [(7.0, 7.0), (40.0, 40.0), (60.0, 69.0)]
    assert stated_ages("present for 3 years") == []


def test_truth_from_synthderm_and_derm7pt_style_attributes() -> None:
    assert truth_attributes({"colors": ["Blue-Grey", "red"], "structures": ["dots/globules"]}) == (
        {"blue-gray", "red"}, {"dots/globules"})
    derm7pt = {"pigment_network": "atypical", "streaks": "absent", "blue_whitish_veil": "present",
               "dots_and_globules": "irregular", "vascular_structures": "absent"}
    assert truth_attributes(derm7pt) == (None, {"pigment network", "blue-whitish veil", "dots/globules"})
    assert truth_attributes({"diameter_mm": 4}) == (None, None)


def test_audit_table_and_summary_numbers() -> None:
    manifest = to_manifest(pd.DataFrame([row(sample_id="s/1"), row(sample_id="s/2", label="NV", sex="female")]))
    notes = pd.DataFrame({
        "sample_id": ["s/1", "s/2", "s/1", "s/2", "s/2"],
        "strategy": ["A", "A", "B", "B", "B"],
        "note": ["black, dark brown; melanoma", "red streaks; nevus", "Colours: black.", "x", "never used"],
        "status": ["ok", "ok", "ok", "ok", "failed"],
    })
    flags = audit(manifest, notes)
    assert len(flags) == 4 and list(flags["strategy"]) == ["A", "A", "B", "B"]
    summary = audit_summary(flags, notes).set_index("strategy")
    # A states 3 colours (black, dark brown, red) of which 2 are true; 4 true colours over both samples
    assert summary.at["A", "colors_precision"] == pytest.approx(2 / 3)
    assert summary.at["A", "colors_recall"] == pytest.approx(2 / 4)
    assert summary.at["A", "structures_precision"] == 1.0 and summary.at["A", "diagnosis_correct"] == 1.0
    assert summary.at["B", "colors_precision"] == 1.0 and summary.at["B", "diagnosis_absent"] == 1.0
    assert summary.at["B", "n_notes"] == 2 and summary.at["A", "unique_notes"] == 1.0
    assert math.isnan(summary.at["B", "structures_precision"])  # B never states a structure
    with pytest.raises(ValueError, match="not in the manifest"):
        audit(manifest, notes.assign(sample_id=["s/9"] * 5))


def test_audit_flags_are_kept_and_made_again_only_for_other_notes(tmp_path, monkeypatch) -> None:
    import sys

    from dermlib.notes import audit_cached

    audit_module = sys.modules["dermlib.notes.audit"]  # the module (dermlib.notes.audit is also the function's name)

    manifest = to_manifest(pd.DataFrame([row(sample_id="s/1"), row(sample_id="s/2", label="NV", sex="female")]))
    notes = pd.DataFrame({"sample_id": ["s/1", "s/2"], "strategy": ["A", "A"],
                          "note": ["black, dark brown; melanoma", "red streaks; nevus"], "status": ["ok", "ok"]})
    path = tmp_path / "audit_flags.parquet"
    first = audit_cached(manifest, notes, path)
    pd.testing.assert_frame_equal(first, audit(manifest, notes))
    with monkeypatch.context() as patch:  # the same notes: read back, not audited again
        patch.setattr(audit_module, "audit", lambda *a: pytest.fail("audited again"))
        pd.testing.assert_frame_equal(audit_cached(manifest, notes, path), first)
    edited = notes.assign(note=["red streaks; melanoma", "red streaks; nevus"])
    assert audit_cached(manifest, edited, path)["colors_stated"].tolist() == ["red", "red"]  # made again
    other_truth = manifest.assign(sex=["female", "female"])
    assert audit_cached(manifest, edited, path).equals(audit(manifest, edited))
    assert audit_cached(other_truth, edited, path).equals(audit(other_truth, edited))  # the manifest counts too


def test_distinct_ngrams() -> None:
    assert distinct_ngrams(["a b a b"], 1) == 0.5
    assert distinct_ngrams(["a b a b"], 2) == pytest.approx(2 / 3)
    assert distinct_ngrams(["same note", "same note"], 2) == 0.5
    assert math.isnan(distinct_ngrams([], 2))


def test_marked_phrases_mark_sex_and_every_age_form_like_the_audit() -> None:
    note = "A 54-year-old woman, aged 60; she is in her 50s. He agrees."
    spans = {(note[a:b], kind): verdict for a, b, kind, verdict in marked_phrases(note, row())}  # a 54-year-old man
    assert spans[("54-year-old", "age")] == "supported" and spans[("aged 60", "age")] == "contradicted"
    assert spans[("50s", "age")] == "supported"  # 50-59 holds 54
    assert spans[("woman", "sex")] == spans[("she", "sex")] == spans[("her", "sex")] == "contradicted"
    assert spans[("He", "sex")] == "supported"
    assert audit_note(note, row())["sex"] == "contradicted"  # the audit's verdict on the whole note agrees
    unknown = {note[a:b]: verdict for a, b, kind, verdict in marked_phrases(note, row(sex=None, age=None))}
    assert unknown["woman"] == unknown["54-year-old"] == "unchecked"
    assert [kind for *_, kind, _ in marked_phrases("Irregular border, asymmetric.", row())] == []  # not audited


def test_mixed_diagnoses_are_counted_and_only_the_diagnosis_can_be_mixed() -> None:
    manifest = to_manifest(pd.DataFrame([row(sample_id="s/1"), row(sample_id="s/2")]))
    notes = pd.DataFrame({"sample_id": ["s/1", "s/2", "s/1"], "strategy": ["A", "A", "B"], "status": "ok",
                          "note": ["Melanoma versus nevus.", "Melanoma.", "Melanoma or basal cell carcinoma."]})
    summary = audit_summary(audit(manifest, notes))
    rates, counts = rates_and_counts(summary)
    assert counts.loc["A", "n_diagnosis_mixed"] == 1 and counts.loc["B", "n_diagnosis_mixed"] == 1
    assert rates.loc["diagnosis_mixed", "A"] == 0.5 and rates.loc["diagnosis_mixed", "B"] == 1.0
    assert "n_diagnosis_mixed" not in rates.index and not any(f"{f}_mixed" in rates.index for f in ("age", "sex", "site"))
    assert list(counts.columns) == ["n_notes", "age_invented", "sex_invented", "site_invented", "diagnosis_invented",
                                    "n_diagnosis_mixed", "mean_words"]


def test_a_site_phrase_with_a_possessive_is_marked_as_the_site() -> None:
    row = {"age": 50, "sex": "male", "site": "posterior torso", "label": "NV", "attributes": "{}"}
    note = "A lesion on his back; he reports itching."
    spans = {note[a:b]: (kind, verdict) for a, b, kind, verdict in marked_phrases(note, row)}
    assert spans["his back"] == ("site", "supported") and spans["he"] == ("sex", "supported")
    assert audit_note(note, row)["site"] == "correct"
    assert stated_ages("a 54-year-old, aged 60, in her 70s") == [(54.0, 54.0), (60.0, 60.0), (70.0, 79.0)]
