"""The control notes: dermlib's own template strategies (`dermlib.config.CONTROL_STRATEGIES`), never the paper's.

- `D`    the diagnosis alone ("Diagnosis: melanoma."): with the text branch's losses but without the note's content,
         so that D vs Img measures the extra losses and M vs D what the metadata adds.
- `M+G`  a positive control: the M note, then one findings sentence grounded in SynthDerm's *drawn* attributes
         ("Findings: irregular border; colours: dark brown, black; structures: streaks, dots/globules."). Each
         present/absent call (border irregular, each colour, each structure of the vocabulary, in that order) passes
         through SynthDerm's annotation noise (`dermlib.data.synthderm.present_call`: flipped with probability
         RECORD_FLIP), drawn from a RNG seeded from the sample id alone (`grounded_calls`): the same sentence on every
         run and machine. Asymmetry and diameter are left out. This is the deliberate, labelled exception to the
         whitelist `note_fields.csv`: no paper strategy ever sees the drawn attributes.
- `M+Gs` the M note with the findings sentence of *another* image of the same class, split and partition
         (`shuffled_within`): class-typical but not image-specific. A group of one image keeps its own sentence.

Real datasets have no drawn ground truth: M+G and M+Gs refuse any row without it (`drawn_attributes`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from dermlib.grammar import GROUNDED_CONTROLS
from dermlib.data.schema import load_attributes
from dermlib.data.synthderm import present_call
from dermlib.notes.fields import metadata_fields
from dermlib.notes.strategies import get_strategy, render_lines, render_m, stable_hash, vocabulary

SHUFFLE_GROUP = ("label", "split", "partition")  # M+Gs shuffles findings sentences within these groups


def drawn_attributes(row: pd.Series | dict[str, Any], strategy: str = "M+G") -> dict[str, Any]:
    """A row's drawn border, colours and structures (SynthDerm's `attributes`, marked `synthetic: true`); a clear
    error naming the row and its source where there are none (real data: nothing may be invented)."""
    attrs = load_attributes(row.get("attributes"))
    ok = (attrs.get("synthetic") is True and attrs.get("border") in ("regular", "irregular")
          and isinstance(attrs.get("colors"), list) and isinstance(attrs.get("structures"), list))
    if not ok:
        raise ValueError(
            f"control {strategy} needs SynthDerm's drawn attributes (attributes with synthetic: true, border, colors, "
            f"structures), and row {row.get('sample_id')!r} of source {row.get('source')!r} has none: real datasets "
            f"have no drawn ground truth, so the grounded controls {', '.join(GROUNDED_CONTROLS)} are for SynthDerm "
            f"only (leave them out of notes.strategies and eval.strategies here)")
    vocab = vocabulary()
    unknown = (set(attrs["colors"]) - set(vocab["colors"])) | (set(attrs["structures"]) - set(vocab["structures"]))
    if unknown:
        raise ValueError(f"row {row.get('sample_id')!r}: drawn attributes {sorted(unknown)} are not in the vocabulary")
    return attrs


def grounded_calls(sample_id: str, attrs: dict[str, Any]) -> dict[str, Any]:
    """The annotated calls of one image: its drawn border, colours and structures, each present/absent call flipped
    with probability RECORD_FLIP by a RNG seeded from `sample_id` (border first, then the vocabulary's colours and
    structures in its order)."""
    rng = np.random.default_rng(stable_hash(f"grounded:{sample_id}"))
    vocab = vocabulary()
    irregular = present_call(attrs["border"] == "irregular", rng)
    return {"border": "irregular" if irregular else "regular",
            "colors": [c for c in vocab["colors"] if present_call(c in attrs["colors"], rng)],
            "structures": [s for s in vocab["structures"] if present_call(s in attrs["structures"], rng)]}


def findings_sentence(calls: dict[str, Any]) -> str:
    """The findings sentence of M+G's template (`m_g.v1.txt`) for one image's calls."""
    return render_lines(get_strategy("M+G").sections["render"], calls)  # type: ignore[union-attr]


def shuffled_within(manifest: pd.DataFrame, texts: list[str]) -> list[str]:
    """`texts` (one per manifest row) moved among rows of one class, split and partition: within each group (rows
    in sample_id order), a random cycle seeded from the group's key gives each row the next row's text, so no row
    of a group of two or more keeps its own. Deterministic; the multiset of texts per group is unchanged."""
    keys = pd.DataFrame({c: (manifest[c].astype("string").fillna("").to_numpy() if c in manifest else "")
                         for c in SHUFFLE_GROUP}, index=range(len(manifest)))
    ids = manifest["sample_id"].astype(str).to_numpy()
    out = list(texts)
    for key, group in keys.groupby(list(SHUFFLE_GROUP), sort=True):
        rows = group.index.to_numpy()[np.argsort(ids[group.index.to_numpy()], kind="stable")]
        cycle = rows[np.random.default_rng(stable_hash("shuffle:" + "|".join(key))).permutation(len(rows))]
        for here, there in zip(cycle, np.roll(cycle, -1)):
            out[here] = texts[there]
    return out


def control_notes(manifest: pd.DataFrame, strategy: str) -> list[str]:
    """One note per manifest row for a control strategy (D, M+G or M+Gs), in row order; no LLM."""
    rows = manifest.to_dict("records")
    fields = [metadata_fields(row) for row in rows]
    if strategy == "D":
        template = get_strategy("D").sections["render"]  # type: ignore[union-attr]
        return [render_lines(template, f) for f in fields]
    if strategy not in GROUNDED_CONTROLS:
        raise ValueError(f"{strategy!r} is not a control strategy")
    findings = [findings_sentence(grounded_calls(str(row["sample_id"]), drawn_attributes(row, strategy)))
                for row in rows]
    if strategy == "M+Gs":
        findings = shuffled_within(manifest, findings)
    return [f"{render_m(f)} {sentence}" for f, sentence in zip(fields, findings)]
