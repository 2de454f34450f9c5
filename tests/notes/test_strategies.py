"""Note strategies (dermlib.notes.strategies): the M template, versioned prompt templates and their combinations,
answers validated and rendered, prompts that hold only what a strategy may see, option orders shuffled per image, and
the response format each backend is sent."""

from __future__ import annotations

import json
import re
import sqlite3
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from dermlib.notes import STRATEGIES, get_strategy, synthesize
from dermlib.notes.fields import metadata_fields
from dermlib.notes.strategies import build_messages, option_order, parse_response, render_m, request_schema, vocabulary
from tests.fakes.fake_openai import FakeOpenAI
from tests.fakes.notes import llm_args, make_manifest


def test_m_template_leaves_out_missing_and_odd_values() -> None:
    frame = make_manifest(3)
    frame.loc[0, ["age", "sex", "site", "fitzpatrick"]] = pd.NA
    frame.loc[1, "age"], frame.loc[1, "fitzpatrick"] = 250.0, pd.NA  # impossible age: left out
    frame.loc[2, "label"], frame.loc[2, "label_raw"] = pd.NA, "lentigo maligna"
    notes = synthesize(frame, "M")
    assert list(notes["status"]) == ["ok"] * 3 and not notes["cached"].any() and notes["n_attempts"].sum() == 0
    for note in notes["note"]:
        for bad in ("nan", "None", "<NA>", "unknown", "250"):
            assert bad not in note
    assert notes.at[0, "note"].startswith("A patient presents with a skin lesion.")
    assert "site" not in metadata_fields(frame.iloc[0])
    assert notes.at[1, "note"].startswith("A woman presents")
    assert "Diagnosis: lentigo maligna." in notes.at[2, "note"]
    full = render_m(metadata_fields(make_manifest(1).iloc[0]))
    assert full.startswith("A 20-year-old man presents") and "Fitzpatrick skin type I." in full
    assert "Diagnosis: melanoma." in full and "dark brown" not in full  # ground truth never leaks into notes


def test_strategies_are_versioned_data_and_combinations_parse() -> None:
    assert {"M", "M+P1", "M+P2", "P3"} <= set(STRATEGIES)
    assert get_strategy("M+P1").template_version == "m_p1.v2"
    assert get_strategy("M+P2").template_version == "m_p2.v2"
    assert set(get_strategy("M+P1").files) == {"m.v2.txt", "m_p1.v2.txt", "m_p1.schema.v2.json", "vocabulary.v1.json"}
    combo = get_strategy("M&P3")
    assert combo.mode == "concat" and combo.parts == ("M", "P3") and combo.template_version == "m.v2&p3.v1"
    assert get_strategy("M+P2|P3").mode == "mix"
    for bad in ("M&X", "Q", "M&M"):
        with pytest.raises(ValueError, match="strateg"):
            get_strategy(bad)
    schema = get_strategy("M+P1").schema
    assert schema["properties"]["colors"]["items"]["enum"] == vocabulary()["colors"]


def test_parse_response_validates_and_renders() -> None:
    p1, fields = get_strategy("M+P1"), metadata_fields(make_manifest(1).iloc[0])
    good = ('{"morphology": "nodule", "border": "irregular", "symmetry": "symmetric", "surface": "smooth", '
            '"colors": ["black", "black", "blue-gray"], "structures": []}')
    note, error = parse_response(p1, fields, good, "stop")
    assert error is None and note.startswith("A 20-year-old man") and "Colours: black, blue-gray." in note
    assert "Dermoscopic structures" not in note  # empty list: the sentence is left out
    assert "malformed JSON" in parse_response(p1, fields, good[:-5], "stop")[1]
    assert "truncated" in parse_response(p1, fields, good[:-5], "length")[1]
    assert "schema violation at colors/0" in parse_response(p1, fields, good.replace('"black",', '"pink",', 1), "stop")[1]
    assert "empty" in parse_response(p1, fields, "  ", "stop")[1]
    note, error = parse_response(get_strategy("P3"), fields, "First sentence. Second one cut mid", "length")
    assert error is None and note == "First sentence."


def _p2_answer(**change: str) -> str:
    answer = {"lesion_type": "papule", "border": "regular", "colors": ["red"], "structures": [],
              "history": "Present for two years.", "examination": "A firm papule on the back.",
              "dermoscopy": "Dotted vessels are seen.", "impression": "Findings suggest melanoma."}
    return json.dumps({**answer, **change})


def test_m_p2_starts_with_the_m_note_and_rejects_cut_prose() -> None:
    p2, fields = get_strategy("M+P2"), metadata_fields(make_manifest(1).iloc[0])
    note, error = parse_response(p2, fields, _p2_answer(), "stop")
    assert error is None and note.startswith(render_m(fields) + "\n")
    assert "Examination: a papule with regular borders. A firm papule on the back." in note
    assert "Dermoscopy: colours red. Dotted vessels are seen." in note  # no structures: that clause is left out
    note, error = parse_response(p2, fields, _p2_answer(history="present for two years,"), "stop")
    assert error is None and "History: Present for two years.\n" in note  # a closed string is whole: end it
    note, error = parse_response(p2, fields, _p2_answer(history="unremarkable"), "stop")
    assert error is None and "History: Unremarkable.\n" in note  # one word is a whole section
    assert "is empty" in parse_response(p2, fields, _p2_answer(history="  ,  ;  -  "), "stop")[1]
    long = " ".join(["word"] * 61) + "."
    assert "longer than 60 words" in parse_response(p2, fields, _p2_answer(dermoscopy=long), "stop")[1]
    assert "truncated" in parse_response(p2, fields, _p2_answer()[:-40], "length")[1]
    assert "schema violation at lesion_type" in parse_response(p2, fields, _p2_answer(lesion_type="bump"), "stop")[1]


def test_p3_prompt_holds_the_diagnosis_and_nothing_else_from_the_row() -> None:
    frame = make_manifest(4)
    frame["attributes"] = '{"recorded": {"streaks": "irregular"}}'
    frame["source"] = "synthderm_dermo_d"  # a source whose recorded findings notes may use
    for _, row in frame.iterrows():
        fields = metadata_fields(row)
        assert "streaks irregular" in fields["source_findings"]  # ... in M, M+P1, M+P2
        text = " ".join(m["content"] for m in build_messages(get_strategy("P3"), fields)).lower()
        assert fields["diagnosis"] in text
        for other in (fields["age"], fields["sex"], "man", "woman", "torso", "fitzpatrick", "streak", "dermoscop"):
            assert not re.search(rf"\b{other}\b", text), other


def test_option_order_is_shuffled_per_image_and_stable() -> None:
    ids = [f"synthderm_a/{i:03d}" for i in range(100)]
    orders = [option_order(i) for i in ids]
    assert orders == [option_order(i) for i in ids]  # same image, same order, every run
    for key, options in vocabulary().items():
        firsts = Counter(o[key][0] for o in orders)
        assert set(firsts) == set(options), key  # every option leads for some image
        assert all(sorted(o[key]) == sorted(options) for o in orders)
    messages = build_messages(get_strategy("M+P1"), {}, orders[0])
    assert f"border: {', '.join(orders[0]['border'])}" in messages[-1]["content"]
    schema = request_schema(get_strategy("M+P1"), orders[0])
    assert schema["properties"]["border"]["enum"] == orders[0]["border"]
    assert schema["properties"]["colors"]["items"]["enum"] == orders[0]["colors"]


def test_llamacpp_backend_sends_json_object_with_schema(tmp_path: Path) -> None:
    with FakeOpenAI() as fake:
        out = synthesize(make_manifest(2), "M+P1", llm_args(fake, tmp_path / "c.sqlite", backend="llamacpp"))
    fmt = fake.chat_bodies[0]["response_format"]
    assert fmt["type"] == "json_object" and fmt["schema"]["required"][0] == "morphology"
    orders = [option_order(f"synthderm_a/{i:03d}")["border"] for i in range(2)]
    for body in fake.chat_bodies:  # the schema lists each image's options in the order its prompt shows them
        border = body["response_format"]["schema"]["properties"]["border"]["enum"]
        assert border in orders and f"border: {', '.join(border)}" in body["messages"][-1]["content"]
    assert (out["status"] == "ok").all()


def test_first_option_answers_still_spread_over_the_options(tmp_path: Path) -> None:
    """A model that always takes the first listed option (SmolLM2 under a grammar) must not make every note alike."""
    manifest = make_manifest(100)
    with FakeOpenAI(first_option=True) as fake:
        out = synthesize(manifest, "M+P1", llm_args(fake, tmp_path / "c.sqlite", backend="llamacpp"))
        bodies = list(fake.chat_bodies)
    with FakeOpenAI(first_option=True) as fake:  # a second run from an empty cache sends the very same prompts
        synthesize(manifest, "M+P1", llm_args(fake, tmp_path / "c2.sqlite", backend="llamacpp"))
        def sent(found: list[dict]) -> list[str]:
            return sorted(json.dumps([b["messages"], b["response_format"]]) for b in found)

        assert sent(fake.chat_bodies) == sent(bodies)
    assert (out["status"] == "ok").all()
    chosen = pd.DataFrame([json.loads(row) for row in _raw_answers(tmp_path / "c.sqlite")])
    for key, options in [("morphology", vocabulary()["morphology"]), ("border", vocabulary()["border"]),
                         ("surface", vocabulary()["surface"]), ("symmetry", vocabulary()["symmetry"])]:
        counts = chosen[key].value_counts()
        assert set(counts.index) == set(options) and counts.max() <= 50, (key, counts.to_dict())
    tuples = chosen[["morphology", "border", "symmetry", "surface"]].apply(tuple, axis=1)
    assert tuples.value_counts().iloc[0] <= 10
    # the notes table carries each note's raw answer, so the choices can be read back without the cache
    from dermlib.notes.spread import chosen_attributes, top_tuple_share

    read_back = chosen_attributes(out)
    assert read_back.attrs["unparsed"] == 0 and len(read_back) == 100
    assert sorted(read_back["morphology"]) == sorted(chosen["morphology"])
    assert top_tuple_share(read_back)[1] == tuples.value_counts().iloc[0] / 100


def _raw_answers(cache: Path) -> list[str]:
    with sqlite3.connect(cache) as conn:
        return [r[0] for r in conn.execute("SELECT raw FROM notes WHERE status = 'ok' ORDER BY key")]
