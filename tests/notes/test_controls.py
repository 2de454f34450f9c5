"""The control note strategies D, M+G and M+Gs (dermlib.notes.controls): their grammar, their texts against
references computed here from the drawn attributes and the noise model, and that no LLM is ever asked for them."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dermlib.grammar import (
    CONTROL_STRATEGIES,
    IMG,
    NOTE_STRATEGIES,
    PAPER_STRATEGIES,
    base_strategies,
    is_control,
    note_parts,
    parse_strategy,
)
from dermlib.config import get_config
from dermlib.data import assign_partitions, synthderm
from dermlib.data.labels import CLASS_NAMES, ISIC8
from dermlib.data.schema import load_attributes
from dermlib.data.synthderm import COLORS, RECORD_FLIP, STRUCTURES
from dermlib.notes import CONTROLS, STRATEGIES, audit, audit_summary, get_strategy, synthesize, synthesize_profile
from dermlib.notes.descriptions import description_styles
from dermlib.notes.strategies import vocabulary

CLAUSE = "Findings: "


def seed_of(sample_id: str) -> int:
    """The per-image seed, computed here: the first 4 bytes of sha256("grounded:<id>"), big-endian."""
    return int.from_bytes(hashlib.sha256(f"grounded:{sample_id}".encode()).digest()[:4], "big")


def expected_calls(sample_id: str, attrs: dict) -> tuple[dict, int]:
    """The annotated calls of one image as specified (border, then COLORS, then STRUCTURES; each truth flipped when
    a uniform draw is below RECORD_FLIP) and how many calls flipped."""
    rng = np.random.default_rng(seed_of(sample_id))
    flips = 0

    def call(truth: bool) -> bool:
        nonlocal flips
        flip = rng.random() < RECORD_FLIP
        flips += int(flip)
        return truth != flip

    border = "irregular" if call(attrs["border"] == "irregular") else "regular"
    colours = [c for c in COLORS if call(c in attrs["colors"])]
    structures = [s for s in STRUCTURES if call(s in attrs["structures"])]
    return {"border": border, "colors": colours, "structures": structures}, flips


def expected_sentence(calls: dict) -> str:
    colours = f"colours: {', '.join(calls['colors'])}" if calls["colors"] else "no colours called"
    structures = f"structures: {', '.join(calls['structures'])}" if calls["structures"] else "no structures called"
    return f"Findings: {calls['border']} border; {colours}; {structures}."


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """A small SynthDerm manifest, split and partitioned as the demo does (its images are tiny: notes ignore them)."""
    cfg = get_config("demo")
    raw = synthderm.generate(tmp_path_factory.mktemp("synthderm"), n_per_source=60, seed=0, image_size=24)
    return assign_partitions(raw, cfg["data"])


@pytest.fixture(scope="module")
def notes(manifest: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {s: synthesize(manifest, s).set_index("sample_id") for s in ["M", *CONTROL_STRATEGIES]}


def split_finding(note: str) -> tuple[str, str]:
    """(the M part, the findings sentence) of an M+G or M+Gs note."""
    head, sep, tail = note.rpartition(" " + CLAUSE)
    assert sep, f"no findings sentence in {note!r}"
    return head, CLAUSE + tail


# ------------------------------------------------------------------------------------------------ grammar
def test_grammar_accepts_controls_but_the_paper_grid_excludes_them() -> None:
    assert CONTROL_STRATEGIES == ("D", "M+G", "M+Gs")
    assert not set(CONTROL_STRATEGIES) & set(NOTE_STRATEGIES)
    assert PAPER_STRATEGIES == (IMG, "M", "M+P1", "M+P2", "P3")
    for name in CONTROL_STRATEGIES:
        assert note_parts(name) == ("single", (name,))
        assert parse_strategy(name) == [name] and is_control(name)
        strategy = get_strategy(name)
        assert strategy.control and not strategy.uses_llm and strategy.output == "template"
    assert note_parts("M+G&P3") == ("concat", ("M+G", "P3")) and note_parts("D|M") == ("mix", ("D", "M"))
    assert parse_strategy("M,D") == ["M", "D"] and base_strategies("M&M+Gs,D") == ["M", "M+Gs", "D"]
    assert is_control("M,D") and not any(is_control(s) for s in PAPER_STRATEGIES)
    assert not any(get_strategy(s).control for s in NOTE_STRATEGIES)  # type: ignore[union-attr]
    assert set(CONTROLS) == set(CONTROL_STRATEGIES) and not set(CONTROLS) & set(STRATEGIES)
    with pytest.raises(ValueError, match=r"controls \['D', 'M\+G', 'M\+Gs'\]"):
        note_parts("M+G~")
    with pytest.raises(ValueError, match="distinct"):
        note_parts("D&D")


def test_profiles_place_controls_after_the_paper_strategies() -> None:
    demo, paper = get_config("demo"), get_config("paper")
    assert demo["notes"]["strategies"] == ["M", "M+P1", "M+P2", "P3", "D", "M+G", "M+Gs"]
    assert demo["eval"]["strategies"] == ["Img", "M", "M+P1", "M+P2", "P3", "D", "M+G"]  # M+Gs: notes only (optional)
    assert paper["notes"]["strategies"] == ["M", "M+P1", "M+P2", "P3"]
    assert paper["eval"]["strategies"] == list(PAPER_STRATEGIES)
    get_config("paper", {"eval.strategies": ["Img", "M", "D"]})  # D needs only the diagnosis: fine on real data
    for key, value in (("eval.strategies", ["Img", "M+G"]), ("notes.strategies", ["M", "M+Gs&P3"]),
                       ("train.strategy", "M,M+G")):
        with pytest.raises(ValueError, match=r"needs SynthDerm's drawn attributes"):
            get_config("paper", {key: value})


def test_controls_ask_for_no_class_descriptions() -> None:
    """Zero-shot descriptions are for LLM styles only: the demo's grid with controls asks for the same three styles,
    and a grid of controls alone for none."""
    assert description_styles(get_config("demo")) == ["M+P1", "M+P2", "P3"]
    assert description_styles(get_config("demo", {"eval.strategies": ["Img", *CONTROL_STRATEGIES]})) == []


# ------------------------------------------------------------------------------------------------ D
def test_d_is_the_diagnosis_alone(manifest: pd.DataFrame, notes: dict[str, pd.DataFrame]) -> None:
    d = notes["D"]
    assert set(d["status"]) == {"ok"} and set(d["template_version"]) == {"d.v1"}
    names = {"MEL": "melanoma", "NV": "melanocytic nevus", "BCC": "basal cell carcinoma", "AK": "actinic keratosis",
             "BKL": "benign keratosis", "DF": "dermatofibroma", "VASC": "vascular lesion",
             "SCC": "squamous cell carcinoma"}
    assert names == CLASS_NAMES
    by_class = {label: set(d.loc[manifest.loc[manifest["label"] == label, "sample_id"], "note"])
                for label in manifest["label"].unique()}
    assert len(by_class) == len(ISIC8)
    assert by_class == {label: {f"Diagnosis: {names[label]}."} for label in by_class}
    alone = synthesize(pd.DataFrame({"sample_id": ["x"], "label": ["MEL"]}), "D")
    assert alone["note"].tolist() == ["Diagnosis: melanoma."]


# ------------------------------------------------------------------------------------------------ M+G
def test_m_g_states_the_drawn_attributes_through_exactly_the_noise_models_flips(
        manifest: pd.DataFrame, notes: dict[str, pd.DataFrame]) -> None:
    assert COLORS == vocabulary()["colors"] and STRUCTURES == vocabulary()["structures"]
    mg, m = notes["M+G"], notes["M"]
    assert set(mg["status"]) == {"ok"} and set(mg["template_version"]) == {"m_g.v1"}
    flips = calls = 0
    for sample_id, attributes in zip(manifest["sample_id"], manifest["attributes"]):
        expected, flipped = expected_calls(sample_id, load_attributes(attributes))
        flips, calls = flips + flipped, calls + 1 + len(COLORS) + len(STRUCTURES)
        assert mg.at[sample_id, "note"] == f"{m.at[sample_id, 'note']} {expected_sentence(expected)}"
    # the noise is there, at its rate: a binomial count within 4 standard deviations of calls x RECORD_FLIP
    assert abs(flips - calls * RECORD_FLIP) < 4 * np.sqrt(calls * RECORD_FLIP * (1 - RECORD_FLIP)), (flips, calls)
    assert flips > 0


def test_m_g_is_stable_across_calls_and_row_orders(manifest: pd.DataFrame, notes: dict[str, pd.DataFrame]) -> None:
    again = synthesize(manifest, "M+G").set_index("sample_id")["note"]
    reordered = synthesize(manifest.sample(frac=1.0, random_state=3), "M+G").set_index("sample_id")["note"]
    assert again.equals(notes["M+G"]["note"])
    assert reordered.loc[again.index].equals(again)
    one = manifest.iloc[[5]]
    assert synthesize(one, "M+G")["note"].iloc[0] == again.loc[one["sample_id"].iloc[0]]


def test_audit_scores_m_g_as_grounded(manifest: pd.DataFrame, notes: dict[str, pd.DataFrame]) -> None:
    """The audit reads M+G's findings as stated: on images whose source records no findings (so the M part names
    no colour or structure), its precision and recall equal those of the calls computed here against the drawn
    truth; M+G scores far above the shuffled M+Gs."""
    rows = manifest[manifest["attributes"].map(lambda a: "recorded" not in load_attributes(a))]
    tp = {"colors": 0, "structures": 0}
    stated = {"colors": 0, "structures": 0}
    true = {"colors": 0, "structures": 0}
    for sample_id, attributes in zip(rows["sample_id"], rows["attributes"]):
        attrs = load_attributes(attributes)
        calls, _ = expected_calls(sample_id, attrs)
        for name in tp:
            tp[name] += len(set(calls[name]) & set(attrs[name]))
            stated[name] += len(calls[name])
            true[name] += len(attrs[name])
    long = pd.concat([notes[s].loc[rows["sample_id"]].reset_index() for s in ("M+G", "M+Gs")])
    summary = audit_summary(audit(manifest, long)).set_index("strategy")
    for name in tp:
        assert summary.at["M+G", f"{name}_precision"] == pytest.approx(tp[name] / stated[name], abs=1e-12)
        assert summary.at["M+G", f"{name}_recall"] == pytest.approx(tp[name] / true[name], abs=1e-12)
        assert summary.at["M+G", f"{name}_precision"] > summary.at["M+Gs", f"{name}_precision"] + 0.1
        assert summary.at["M+G", f"{name}_recall"] > 0.85
    assert summary.at["M+G", "colors_precision"] > 0.8 and summary.at["M+G", "vocab_adherence"] == 1.0


# ------------------------------------------------------------------------------------------------ M+Gs
def test_m_gs_is_a_within_class_permutation_of_m_g(manifest: pd.DataFrame, notes: dict[str, pd.DataFrame]) -> None:
    mg, mgs, m = notes["M+G"], notes["M+Gs"], notes["M"]
    assert set(mgs["status"]) == {"ok"} and set(mgs["template_version"]) == {"m_g.v1+shuffled"}
    moved = kept = 0
    for _, group in manifest.groupby(["label", "split", "partition"]):
        ids = group["sample_id"].tolist()
        own = [split_finding(mg.at[s, "note"])[1] for s in ids]
        parts = [split_finding(mgs.at[s, "note"]) for s in ids]
        assert [head for head, _ in parts] == [m.at[s, "note"] for s in ids]  # each image keeps its own M note
        assert Counter(tail for _, tail in parts) == Counter(own)  # the group's sentences, each once
        if len(ids) > 1:
            moved += sum(tail != o for (_, tail), o in zip(parts, own))
            kept += sum(tail == o for (_, tail), o in zip(parts, own))
    assert moved > 5 * kept  # a sentence kept only where another image of the group has the same one
    again = synthesize(manifest.sample(frac=1.0, random_state=7), "M+Gs").set_index("sample_id")["note"]
    assert again.loc[mgs.index].equals(mgs["note"])


# ------------------------------------------------------------------------------------------------ refusal, no LLM
def test_grounded_controls_refuse_rows_without_drawn_attributes() -> None:
    real = pd.DataFrame({"sample_id": ["ham10000/ISIC_0024306"], "source": ["ham10000"], "label": ["NV"],
                         "age": [45.0], "sex": ["male"], "attributes": [json.dumps({"dx_type": "follow_up"})]})
    for name in ("M+G", "M+Gs", "M&M+G"):
        with pytest.raises(ValueError, match=r"needs SynthDerm's drawn attributes.*'ham10000/ISIC_0024306' of "
                                             r"source 'ham10000'"):
            synthesize(real, name)
    assert synthesize(real, "D")["note"].tolist() == ["Diagnosis: melanocytic nevus."]
    unmarked = real.assign(attributes=[json.dumps({"border": "regular", "colors": ["red"], "structures": []})])
    with pytest.raises(ValueError, match="drawn attributes"):
        synthesize(unmarked, "M+G")


def test_controls_are_made_without_any_llm(manifest: pd.DataFrame, monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    import dermlib.notes.profile as profile
    import dermlib.notes.synth as synth

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("an LLM was asked for a control note")

    monkeypatch.setattr(synth, "ask", refuse)
    monkeypatch.setattr(synth, "plan_jobs", refuse)
    monkeypatch.setattr(profile, "LocalLLM", refuse)
    cfg = get_config("demo", {"work_dir": str(tmp_path), "notes.cache_path": str(tmp_path / "absent.sqlite"),
                              "notes.strategies": list(CONTROL_STRATEGIES)})
    out = synthesize_profile(manifest, cfg)
    assert not (tmp_path / "absent.sqlite").exists()
    assert out.groupby("strategy")["status"].apply(set).to_dict() == {s: {"ok"} for s in CONTROL_STRATEGIES}
    for name in CONTROL_STRATEGIES:
        stats = out.attrs["stats"][name]
        assert stats["llm_calls"] == 0 and stats["pending_before"] == 0
        assert (out.loc[out["strategy"] == name, ["n_attempts", "prompt_tokens", "completion_tokens"]] == 0).all().all()
        assert not out.loc[out["strategy"] == name, "cached"].any()
    both = synthesize(manifest, "D&M+G")
    assert set(both["status"]) == {"ok"} and not both["cached"].any()
