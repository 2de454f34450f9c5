"""How much the notes differ per image, and M+P1's choices against the class and the drawn truth, on known answers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import chi2_contingency

from dermlib.notes.spread import (association, chosen_attributes, close_out, cramers_v, spread, top_tuple_share,
                                  true_attributes)


def _notes(rows: list[tuple[str, str, str, str | None]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["sample_id", "strategy", "note", "raw"]).assign(status="ok")


def _answer(morphology: str, border: str, symmetry: str = "symmetric", surface: str = "smooth",
            colors: tuple[str, ...] = ("black",), structures: tuple[str, ...] = ()) -> str:
    return json.dumps({"morphology": morphology, "border": border, "symmetry": symmetry, "surface": surface,
                       "colors": list(colors), "structures": list(structures)})


def test_spread_counts_distinct_notes_per_strategy() -> None:
    notes = _notes([("a", "P3", "x", None), ("b", "P3", "y", None), ("c", "P3", "x", None), ("a", "M", "m1", None),
                    ("b", "M", "m2", None), ("c", "M", "m3", None)])
    notes.loc[len(notes)] = ["d", "M", None, None, "failed"]  # a failed note counts for nothing
    table = spread(notes).set_index("strategy")
    assert table.loc["P3", "images"] == 3 and table.loc["P3", "distinct notes"] == 2
    assert table.loc["P3", "distinct / images"] == pytest.approx(2 / 3) and table.loc["P3", "most repeated note"] == 2
    assert table.loc["M", "images"] == 3 and table.loc["M", "distinct / images"] == 1.0


def test_chosen_attributes_read_the_raw_answers() -> None:
    notes = _notes([("a", "M+P1", "n", _answer("plaque", "regular", colors=("white", "black"))),
                    ("b", "M+P1", "n", "not json"), ("c", "P3", "n", "{}")])
    choices = chosen_attributes(notes)
    assert list(choices["sample_id"]) == ["a", "b"] and choices.attrs["unparsed"] == 1
    assert choices.loc[0, "morphology"] == "plaque" and choices.loc[0, "colors"] == ("black", "white")
    assert choices.iloc[1, 1:].isna().all()
    with pytest.raises(ValueError, match="no 'raw' column"):
        chosen_attributes(notes.drop(columns="raw"))


def test_top_tuple_share() -> None:
    notes = _notes([(str(i), "M+P1", "n", _answer("plaque" if i < 3 else "nodule", "regular")) for i in range(5)])
    assert top_tuple_share(chosen_attributes(notes)) == (("plaque", "regular", "symmetric", "smooth"), 0.6)


def test_chance_v_is_what_unrelated_choices_reach() -> None:
    rng = np.random.default_rng(1)
    n = 2000
    labels = rng.choice(["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC"], n)
    manifest = pd.DataFrame({"sample_id": [str(i) for i in range(n)], "label": labels,
                             "attributes": [json.dumps({"border": "regular"})] * n})
    notes = _notes([(str(i), "M+P1", "n", _answer(str(rng.choice(["plaque", "nodule"])), "regular"))
                    for i in range(n)])
    row = association(chosen_attributes(notes), manifest).set_index("attribute").loc["morphology"]
    # choices drawn independently of the class: V sits at its permutation chance, about sqrt(7 / n)
    assert abs(row["V(choice, class)"] - row["V chance"]) < 0.03 and row["V chance"] == pytest.approx(
        np.sqrt(7 / n), rel=0.35)


def test_cramers_v_equals_the_chi_square_formula() -> None:
    rng = np.random.default_rng(0)
    x = pd.Series(rng.choice(list("abc"), 300))
    y = pd.Series(np.where(rng.random(300) < 0.6, x, rng.choice(list("abcd"), 300)))
    table = pd.crosstab(x, y).to_numpy()
    chi2 = chi2_contingency(table, correction=False)[0]
    assert cramers_v(x, y) == pytest.approx(np.sqrt(chi2 / (table.sum() * (min(table.shape) - 1))))
    assert cramers_v(x, x) == pytest.approx(1.0)
    assert np.isnan(cramers_v(x, pd.Series(["same"] * 300)))  # one value: no association to measure


def test_association_sets_choices_beside_the_truth() -> None:
    # class decides the true border; the model's border follows it on 3 of 4 images, its morphology never varies
    labels = ["MEL", "MEL", "NV", "NV"]
    truth_border = ["irregular", "irregular", "regular", "regular"]
    chosen_border = ["irregular", "irregular", "regular", "irregular"]
    manifest = pd.DataFrame({"sample_id": list("abcd"), "label": labels, "attributes": [
        json.dumps({"border": b, "asymmetry": 2 * (lab == "MEL"), "colors": ["black"] if lab == "MEL" else [],
                    "structures": []}) for b, lab in zip(truth_border, labels)]})
    notes = _notes([(s, "M+P1", "n", _answer("plaque", b, colors=("black",))) for s, b in zip("abcd", chosen_border)])
    table = association(chosen_attributes(notes), manifest).set_index("attribute")
    assert table.loc["border", "choice = truth"] == 0.75
    # chance agreement of a choice blind to the image: P(irregular) P(irregular) + P(regular) P(regular)
    assert table.loc["border", "agreement chance"] == pytest.approx(0.75 * 0.5 + 0.25 * 0.5)
    assert table.loc["border", "V(truth, class)"] == pytest.approx(1.0)
    assert table.loc["border", "V(choice, class)"] == pytest.approx(cramers_v(pd.Series(chosen_border),
                                                                              pd.Series(labels)))
    assert np.isnan(table.loc["morphology", "V(choice, class)"]) and np.isnan(table.loc["morphology", "V(truth, class)"])
    assert np.isnan(table.loc["morphology", "V chance"])
    assert table.loc["symmetry", "choice = truth"] == 0.5  # "symmetric" is right for the two NV images only
    assert table.loc["colour: black", "choice = truth"] == 0.5 and table.loc["colour: black", "V(truth, class)"] == 1.0
    assert list(true_attributes(manifest)["symmetry"]) == ["asymmetric in two axes"] * 2 + ["symmetric"] * 2
    record = close_out(notes, manifest)
    assert record["m_p1_top_tuple_share"] == 0.75 and record["spread"][0]["images"] == 4
    json.dumps(record)  # a record is plain JSON


def test_agreement_chance_uses_both_answer_frequencies() -> None:
    # truth 3 irregular / 1 regular, choices 2 / 2: chance = 0.5 * 0.75 + 0.5 * 0.25 (the truth's own
    # sum of squares, 0.625, would be wrong)
    manifest = pd.DataFrame({"sample_id": list("abcd"), "label": ["MEL", "MEL", "NV", "NV"], "attributes": [
        json.dumps({"border": b}) for b in ("irregular", "irregular", "irregular", "regular")]})
    notes = _notes([(s, "M+P1", "n", _answer("plaque", b)) for s, b in zip("abcd", ("irregular", "regular") * 2)])
    row = association(chosen_attributes(notes), manifest).set_index("attribute").loc["border"]
    assert row["agreement chance"] == pytest.approx(0.5) and row["choice = truth"] == pytest.approx(0.75)


def test_association_of_no_answers_is_an_empty_table_and_close_out_skips_it() -> None:
    manifest = pd.DataFrame({"sample_id": ["a"], "label": ["MEL"], "attributes": ["{}"]})
    failed = _notes([("a", "M+P1", None, None)]).assign(status="failed")
    table = association(chosen_attributes(failed), manifest)
    assert table.empty and "V chance" in table.columns
    assert "association" not in close_out(failed, manifest)
    assert list(true_attributes(manifest.iloc[:0]).columns)[:2] == ["sample_id", "border"]


def test_structures_a_source_does_not_record_are_unknown_not_absent() -> None:
    # a PH2-like row records its five criteria (vascular structures is not one of them), a SynthDerm-like row all
    manifest = pd.DataFrame({"sample_id": ["p", "s"], "label": ["MEL", "NV"], "attributes": [
        json.dumps({"pigment_network": "typical", "streaks": "absent", "dots_globules": "absent",
                    "blue_whitish_veil": "absent", "regression_areas": "absent"}),
        json.dumps({"structures": ["streaks"], "colors": []})]})
    truth = true_attributes(manifest).set_index("sample_id")
    assert "vascular structures" not in truth.loc["p", "structures_recorded"]
    notes = _notes([(s, "M+P1", "n", _answer("plaque", "regular", structures=("vascular structures",)))
                    for s in "ps"])
    table = association(chosen_attributes(notes), manifest).set_index("attribute")
    assert table.loc["structure: vascular structures", "choice = truth"] == 0.0  # only the SynthDerm row counts
    assert table.loc["structure: pigment network", "choice = truth"] == 0.5  # PH2 has it, the model says no
