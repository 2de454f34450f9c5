"""Do a strategy's notes differ from image to image, and do M+P1's chosen attributes follow the class as the
image's true attributes do?

- `spread(notes)`: per strategy, images with a note, distinct notes and their share of images, and the count of
  the most repeated note (P3 must be near one note per image; a per-class template would be 8 notes).
- `chosen_attributes(notes)`: what the LLM picked for each image, read from the raw JSON answer kept with every
  note (`notes.parquet` column `raw`), lists as sorted tuples.
- `top_tuple_share(choices)`: the share of images with the most common (morphology, border, symmetry, surface)
  choice: 1.0 means the model always picked the same options.
- `association(choices, manifest)`: Cramér's V of each chosen attribute with the class and its chance level
  (labels permuted), beside the V of the same attribute in SynthDerm's drawn ground truth (hidden from notes) and
  the share of images where the choice agrees with that truth. V is
  `scipy.stats.contingency.association(method="cramer")` on the class x value table.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats.contingency import association as _association

from dermlib.data.schema import load_attributes
from dermlib.notes.audit import recorded_structures, truth_attributes
from dermlib.notes.strategies import vocabulary

SCALAR = ("morphology", "border", "symmetry", "surface")
LISTS = ("colors", "structures")
TRUTH_COLUMNS = ["sample_id", "border", "symmetry", "colors", "structures", "structures_recorded"]


def spread(notes: pd.DataFrame) -> pd.DataFrame:
    """Per strategy (in table order): images with an ok note, distinct notes, distinct / images, the most repeated
    note's count."""
    ok = notes[notes["status"] == "ok"]
    rows = []
    for strategy, group in ok.groupby("strategy", sort=False):
        counts = group["note"].value_counts()
        rows.append({"strategy": strategy, "images": int(group["sample_id"].nunique()), "distinct notes": len(counts),
                     "distinct / images": len(counts) / max(int(group["sample_id"].nunique()), 1),
                     "most repeated note": int(counts.iloc[0]) if len(counts) else 0})
    return pd.DataFrame(rows)


def _parse(raw: Any) -> dict[str, Any] | None:
    """A raw answer as a JSON object, else None."""
    if not isinstance(raw, str):
        return None
    try:
        answer = json.loads(raw)
    except json.JSONDecodeError:
        return None
    return answer if isinstance(answer, dict) else None


def chosen_attributes(notes: pd.DataFrame, strategy: str = "M+P1") -> pd.DataFrame:
    """sample_id and each attribute `strategy`'s LLM chose (SCALAR as strings, LISTS as sorted tuples), from the raw
    answers of its ok notes; an answer that is not a JSON object gives a row of NA (`attrs["unparsed"]` counts them)."""
    if "raw" not in notes.columns:
        raise ValueError("the notes table has no 'raw' column (the LLM's answers): re-run notebook 02 to rewrite "
                         "notes.parquet with this version of dermlib")
    ok = notes[(notes["strategy"] == strategy) & (notes["status"] == "ok")]
    rows, unparsed = [], 0
    for sample_id, raw in zip(ok["sample_id"].astype(str), ok["raw"]):
        answer = _parse(raw)
        unparsed += answer is None
        answer = answer or {}
        row: dict[str, Any] = {"sample_id": sample_id}
        for field in SCALAR:
            row[field] = answer.get(field, pd.NA) if isinstance(answer.get(field), str) else pd.NA
        for field in LISTS:
            value = answer.get(field)
            row[field] = tuple(sorted(str(v) for v in value)) if isinstance(value, list) else pd.NA
        rows.append(row)
    out = pd.DataFrame(rows, columns=["sample_id", *SCALAR, *LISTS])
    out.attrs["unparsed"] = int(unparsed)
    return out


def top_tuple_share(choices: pd.DataFrame, fields: tuple[str, ...] = SCALAR) -> tuple[tuple[str, ...], float]:
    """The most common combination of `fields` over the images that answered all of them, and its share."""
    known = choices.dropna(subset=list(fields))
    if known.empty:
        return (), float("nan")
    counts = known[list(fields)].astype(str).value_counts()
    return tuple(counts.index[0]), float(counts.iloc[0] / len(known))


def cramers_v(x: pd.Series, y: pd.Series) -> float:
    """Cramér's V of two categorical series over the rows where both are known; NaN when either has one value."""
    both = pd.DataFrame({"x": x.to_numpy(), "y": y.to_numpy()}).dropna()
    table = pd.crosstab(both["x"].astype(str), both["y"].astype(str))
    if table.shape[0] < 2 or table.shape[1] < 2:
        return float("nan")
    return float(_association(table.to_numpy(), method="cramer"))


def true_attributes(manifest: pd.DataFrame) -> pd.DataFrame:
    """sample_id and the drawn ground truth the choices can be compared with: border, symmetry (asymmetry axes 0-2
    as the vocabulary's words), colours and structures as sorted tuples, and which structures the source records at
    all; NA where a source does not say (nothing has a truth for morphology or surface)."""
    symmetry = dict(enumerate(vocabulary()["symmetry"]))  # symmetric, asymmetric in one axis, in two axes
    rows = []
    for sample_id, text in zip(manifest["sample_id"].astype(str), manifest["attributes"]):
        attrs = load_attributes(text)
        colours, structures = truth_attributes(attrs)
        asym, recorded = attrs.get("asymmetry"), recorded_structures(attrs)
        rows.append({"sample_id": sample_id, "border": attrs.get("border", pd.NA),
                     "symmetry": symmetry.get(int(asym), pd.NA) if asym is not None and not pd.isna(asym) else pd.NA,
                     "colors": tuple(sorted(colours)) if colours is not None else pd.NA,
                     "structures": tuple(sorted(structures)) if structures is not None else pd.NA,
                     "structures_recorded": tuple(sorted(recorded)) if recorded else pd.NA})
    return pd.DataFrame(rows, columns=TRUTH_COLUMNS)


def _has(values: pd.Series, item: str, recorded: pd.Series | None = None) -> pd.Series:
    """Whether each tuple holds `item`; NA for no tuple, or where `recorded` says the source does not record it."""
    known = values.map(lambda v: isinstance(v, tuple))
    if recorded is not None:
        known &= recorded.map(lambda r: isinstance(r, tuple) and item in r)
    return pd.Series([item in v if k else pd.NA for v, k in zip(values, known)], index=values.index, dtype=object)


def association(choices: pd.DataFrame, manifest: pd.DataFrame, permutations: int = 20, seed: int = 0
                ) -> pd.DataFrame:
    """One row per attribute (each scalar field; each colour and structure as present / absent): Cramér's V of the
    choice with the class, its chance level (mean V with the class labels permuted: V is never 0 on a finite
    sample), V of the true attribute with the class, the share of images where choice and truth agree, and that
    share's chance level: sum over values of P(choice = v) P(truth = v), the agreement of a choice blind to the image."""
    columns = ["attribute", "V(choice, class)", "V chance", "V(truth, class)", "choice = truth", "agreement chance"]
    frame = choices.merge(manifest[["sample_id", "label"]].astype({"sample_id": str}), on="sample_id")
    if frame.empty:
        return pd.DataFrame(columns=columns)
    truth = true_attributes(manifest[manifest["sample_id"].astype(str).isin(frame["sample_id"])])
    frame = frame.merge(truth, on="sample_id", how="left", suffixes=("", "_true"))
    items = [(f, frame[f], frame.get(f"{f}_true")) for f in SCALAR]
    vocab = vocabulary()
    items += [(f"colour: {v}", _has(frame["colors"], v), _has(frame["colors_true"], v)) for v in vocab["colors"]]
    items += [(f"structure: {v}", _has(frame["structures"], v),
               _has(frame["structures_true"], v, frame["structures_recorded"])) for v in vocab["structures"]]
    rng = np.random.default_rng(seed)
    shuffled = [pd.Series(rng.permutation(frame["label"].to_numpy())) for _ in range(permutations)]
    rows = []
    for name, chosen, true in items:
        chance = [v for v in (cramers_v(chosen, labels) for labels in shuffled) if np.isfinite(v)]
        row = {"attribute": name, "V(choice, class)": cramers_v(chosen, frame["label"]),
               "V chance": float(np.mean(chance)) if chance else float("nan"),
               "V(truth, class)": float("nan"), "choice = truth": float("nan"), "agreement chance": float("nan")}
        if true is not None and true.notna().any():
            row["V(truth, class)"] = cramers_v(true, frame["label"])
            both = chosen.notna() & true.notna()
            if both.any():
                said, real = chosen[both].astype(str), true[both].astype(str)
                row["choice = truth"] = float((said == real).mean())
                row["agreement chance"] = float((said.value_counts(normalize=True)
                                                 * real.value_counts(normalize=True)).sum())
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def close_out(notes: pd.DataFrame, manifest: pd.DataFrame) -> dict[str, Any]:
    """The numbers that say whether the strategies differ as the paper's do, for a record or a report."""
    out: dict[str, Any] = {"spread": spread(notes).round(4).to_dict("records")}
    if has_choices(notes):
        choices = chosen_attributes(notes)
        combo, share = top_tuple_share(choices)
        table = association(choices, manifest)
        out.update(m_p1_top_tuple=list(combo), m_p1_top_tuple_share=None if np.isnan(share) else round(share, 4),
                   m_p1_unparsed=choices.attrs["unparsed"],
                   association=table.round(4).astype(object).where(table.notna(), None).to_dict("records"))
    return out


def has_choices(notes: pd.DataFrame, strategy: str = "M+P1") -> bool:
    """Whether the notes table holds ok `strategy` notes with their raw answers (what `chosen_attributes` reads)."""
    return "raw" in notes.columns and bool(((notes["strategy"] == strategy) & (notes["status"] == "ok")).any())
