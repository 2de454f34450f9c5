"""Grammar-constrained decoding, shown on one schema (notebook 02): how a JSON schema keeps a small model inside its
option lists.

llama.cpp turns the request's JSON schema into a grammar (GBNF); at every step of decoding, the tokens that cannot
continue a string of that grammar get probability 0 (their logits are masked to -inf), and the model picks among
the rest. `decode` does the same, one character at a time, with a "model" that scores characters at random: the
result is always one of the options, however bad the scores are. Nothing here is used by the pipeline.
"""

from __future__ import annotations

import json
import string
from typing import Any

import numpy as np
import pandas as pd

END = "<end>"  # the step that closes the string (the closing quote, in JSON)
ALPHABET = [*string.ascii_lowercase, " ", "-", "/", END]


def grammar(schema: dict[str, Any]) -> str | None:
    """The GBNF grammar llama.cpp derives from `schema` (its own converter), or None where llama.cpp is not
    installed (`DERMLIB_NO_LLM=1` setups)."""
    try:
        from llama_cpp.llama_grammar import json_schema_to_gbnf
    except ImportError:
        return None
    return json_schema_to_gbnf(json.dumps(schema))


def allowed_next(prefix: str, options: list[str]) -> list[str]:
    """What may follow `prefix` so that the string can still become one of `options` (END once it is one)."""
    nxt = {o[len(prefix)] for o in options if o.startswith(prefix) and len(o) > len(prefix)}
    return sorted(nxt) + ([END] if prefix in options else [])


def decode(options: list[str], seed: int = 0, constrained: bool = True, max_steps: int = 40) -> pd.DataFrame:
    """Decode one string character by character from random scores over `ALPHABET` (a seeded stand-in for a
    model's logits): per step the prefix, the characters the grammar allows, and the one picked (the highest
    score among the allowed ones; among all of them when `constrained` is False)."""
    rng = np.random.default_rng(seed)
    prefix, steps = "", []
    for _ in range(max_steps):
        scores = rng.normal(size=len(ALPHABET))
        allowed = allowed_next(prefix, options) if constrained else ALPHABET
        masked = np.where(np.isin(ALPHABET, allowed), scores, -np.inf)
        pick = ALPHABET[int(np.argmax(masked))]
        steps.append({"prefix": prefix, "allowed": " ".join(allowed) if constrained else "(any)", "picked": pick})
        if pick == END:
            break
        prefix += pick
    table = pd.DataFrame(steps)
    table.attrs["result"] = prefix
    return table
