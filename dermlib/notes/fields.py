"""What a note may say about a manifest row: the whitelist `note_fields.csv` (`note_fields_table`, `field_rule`) and
the template fields of one row it allows (`metadata_fields`: age, sex, site, skin type, modality, diagnosis and the
source's whitelisted findings; never identifiers, file names, URLs, licences or SynthDerm's drawn ground truth).
The one deliberate exception is labelled as such: the grounded controls M+G and M+Gs (never paper strategies) state
the drawn attributes through SynthDerm's annotation noise, outside this whitelist (`dermlib.notes.controls`)."""

from __future__ import annotations

import fnmatch
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dermlib.data.labels import CLASS_NAMES
from dermlib.data.schema import load_attributes

_ROMAN = {1: "I", 2: "II", 3: "III", 4: "IV", 5: "V", 6: "VI"}
NOTE_FIELDS_FILE = Path(__file__).resolve().parent / "note_fields.csv"


def is_missing(value: Any) -> bool:
    """None, NA, NaN, an empty string or an empty list: a field a note leaves out."""
    if value is None or value is pd.NA:
        return True
    if isinstance(value, float) and pd.isna(value):
        return True
    return isinstance(value, (str, list)) and len(value) == 0


def as_text(value: Any) -> str:
    """A field value as note text (lists joined by commas)."""
    return ", ".join(str(v) for v in value) if isinstance(value, list) else str(value)


@lru_cache(maxsize=1)
def note_fields_table() -> pd.DataFrame:
    """The whitelist of what notes may say (`note_fields.csv`): one row per source pattern and field, with
    `use` = note (written into notes and prompts), label (restates the diagnosis: covered by the diagnosis
    sentence) or never (identifiers, file names, URLs, licences, label leaks, SynthDerm's drawn ground truth)."""
    table = pd.read_csv(NOTE_FIELDS_FILE, dtype=str, keep_default_na=False)
    bad = table[~table["use"].isin(["note", "label", "never"])]
    if len(bad):
        raise ValueError(f"{NOTE_FIELDS_FILE} row {bad.index[0] + 2}: use must be note, label or never")
    return table


def field_rule(source: str, name: str) -> pd.Series | None:
    """The whitelist row for one `attributes` field of a source (None when the table does not list it)."""
    table = note_fields_table()
    matches = np.array([fnmatch.fnmatchcase(source, pattern) for pattern in table["source"]], dtype=bool)
    hits = table[(table["field"] == name).to_numpy() & matches]
    return hits.iloc[0] if len(hits) else None


def flat_attributes(attrs: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`attributes` with nested dicts flattened to dotted keys (`recorded.streaks`)."""
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if isinstance(value, dict):
            out.update(flat_attributes(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _finding_text(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return as_text(value)


@lru_cache(maxsize=None)
def _note_rules(source: str) -> tuple[tuple[str, str], ...]:
    """(field, phrase) of every `note` row that applies to a source, in the table's order."""
    table = note_fields_table()
    return tuple((r.field, r.phrase) for r in table.itertuples()
                 if r.use == "note" and fnmatch.fnmatchcase(source, r.source))


def findings(row: pd.Series | dict[str, Any]) -> list[str]:
    """The whitelisted findings of one row, rendered with their phrases, in the table's order."""
    rules = _note_rules(str(row.get("source") or ""))
    if not rules:
        return []
    attrs = flat_attributes(load_attributes(row.get("attributes")))
    out = [phrase.format(value=_finding_text(attrs[name])) for name, phrase in rules
           if name in attrs and not is_missing(attrs[name])]
    return list(dict.fromkeys(out))


def metadata_fields(row: pd.Series | dict[str, Any]) -> dict[str, str]:
    """The known metadata of one manifest row as template fields (missing or odd values are simply absent).

    Beyond age, sex, site, skin type, modality and diagnosis, only the findings that `note_fields.csv` marks
    `note` for the row's source are used: never identifiers, file names, URLs or licences, and never
    SynthDerm's drawn ground truth (which the audit keeps).
    """
    get = row.get
    out: dict[str, str] = {}
    age = get("age")
    if not is_missing(age) and 0 < float(age) < 120:
        out["age"] = str(int(float(age)))
        out["age_article"] = "An" if out["age"] in ("8", "11", "18") or out["age"].startswith("8") else "A"
    sex = get("sex")
    if not is_missing(sex) and str(sex) in ("male", "female"):
        out["sex"] = str(sex)
        out["sex_noun"] = "man" if sex == "male" else "woman"
    for key in ("site", "modality"):
        value = get(key)
        if not is_missing(value):
            out[key] = str(value)
    fitz = get("fitzpatrick")
    if not is_missing(fitz) and int(fitz) in _ROMAN:
        out["fitzpatrick"] = str(int(fitz))
        out["fitzpatrick_roman"] = _ROMAN[int(fitz)]
    label, raw = get("label"), get("label_raw")
    if not is_missing(label) and str(label) in CLASS_NAMES:
        out["diagnosis"] = CLASS_NAMES[str(label)]
    elif not is_missing(raw):
        out["diagnosis"] = str(raw)
    shown = findings(row)
    if shown:
        out["source_findings"] = "; ".join(shown)
    return out
