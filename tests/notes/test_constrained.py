"""Grammar-constrained decoding as notebook 02 shows it (dermlib.notes.constrained): masked steps always end in one
of the options, unmasked ones do not; the grammar is llama.cpp's own, read from the request schema."""

from __future__ import annotations

import jsonschema
import pytest

from dermlib.notes.constrained import END, allowed_next, decode, grammar
from dermlib.notes.strategies import get_strategy, option_order, request_schema

OPTIONS = ["patch", "papule", "macule", "nodule", "plaque"]


def test_allowed_next_keeps_every_continuation_and_closes_only_a_whole_option() -> None:
    assert allowed_next("", OPTIONS) == ["m", "n", "p"]
    assert allowed_next("pa", OPTIONS) == ["p", "t"]
    assert allowed_next("patch", OPTIONS) == [END] and allowed_next("x", OPTIONS) == []
    assert allowed_next("ab", ["ab", "abc"]) == ["c", END]


def test_constrained_decoding_always_gives_an_option_and_unconstrained_does_not() -> None:
    field = {"type": "string", "enum": OPTIONS}
    results = [decode(OPTIONS, seed).attrs["result"] for seed in range(30)]
    for value in results:
        jsonschema.validate(value, field)  # raises on anything outside the enum
    assert len(set(results)) > 1  # the scores decide which option, the grammar only which are possible
    free = [decode(OPTIONS, seed, constrained=False).attrs["result"] for seed in range(30)]
    assert not set(free) <= set(OPTIONS)
    steps = decode(OPTIONS, 3)
    for _, step in steps.iterrows():
        assert step["picked"] in step["allowed"].split(" ")


def test_grammar_is_llama_cpps_own_for_the_request_schema() -> None:
    pytest.importorskip("llama_cpp", reason="llama.cpp not installed (DERMLIB_NO_LLM=1 setup)")
    schema = request_schema(get_strategy("M+P1"), option_order("synthderm_dermo_a/img_00000"))
    rules = grammar(schema)
    morphology = next(line for line in rules.splitlines() if line.startswith("morphology ::="))
    order = schema["properties"]["morphology"]["enum"]
    assert [part.strip().strip('"\\') for part in morphology.split("::=")[1].split("|")] == order
