"""The manifest: one row per image, the same columns for every source (real or SynthDerm).

`attributes` holds a JSON string (a dict) with whatever else the source gives: dermoscopic criteria, lesion
size, and for SynthDerm the ground-truth visual attributes. Missing values are real NA, never "nan"/"unknown".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from dermlib.atomic import read_parquet, write_parquet

MANIFEST_COLUMNS: list[str] = [
    "sample_id",  # unique across sources: "<source>/<id in source>"
    "source",  # registry name, e.g. "ham10000" or "synthderm_<name>"
    "image_path",  # absolute or root-relative path of the original image
    "modality",  # "dermoscopic" | "clinical"
    "label",  # harmonised class (isic8 taxonomy) or NA when unmapped
    "label_raw",  # the source's own diagnosis string
    "split",  # "train" | "val" | "test" | NA before assign_partitions
    "partition",  # "internal" | "external" | NA before assign_partitions
    "patient_id",  # grouping key for splits when the source has one, else NA
    "lesion_id",  # grouping key for splits when the source has one, else NA
    "age",  # float years
    "sex",  # "male" | "female"
    "site",  # harmonised anatomical site (see SITES)
    "fitzpatrick",  # Int 1..6, NA when unknown
    "attributes",  # JSON object string
]

MODALITIES = ("dermoscopic", "clinical")
SPLITS = ("train", "val", "test")
PARTITIONS = ("internal", "external")
SEXES = ("male", "female")
SITES = (
    "head/neck", "upper extremity", "lower extremity", "anterior torso", "posterior torso",
    "lateral torso", "torso", "palms/soles", "oral/genital", "acral",
)
MISSING_STRINGS = {"", "nan", "NaN", "none", "None", "unknown", "Unknown", "UNK", "unk", "NA", "N/A", "-1"}

_DTYPES: dict[str, str] = {
    "sample_id": "string", "source": "string", "image_path": "string", "modality": "string",
    "label": "string", "label_raw": "string", "split": "string", "partition": "string",
    "patient_id": "string", "lesion_id": "string", "age": "Float64", "sex": "string",
    "site": "string", "fitzpatrick": "Int64", "attributes": "string",
}


def clean_missing(series: pd.Series) -> pd.Series:
    """Turn the missing-value spellings sources use ("", "unknown", "nan", ...) into real NA."""
    as_text = series.astype("string").str.strip()
    return as_text.mask(as_text.isin(MISSING_STRINGS))


def dump_attributes(values: dict[str, Any]) -> str:
    """Serialise an attributes dict deterministically, dropping NA entries."""
    kept = {k: v for k, v in values.items() if v is not None and not (isinstance(v, float) and pd.isna(v))}
    return json.dumps(kept, sort_keys=True, default=str)


def load_attributes(text: Any) -> dict[str, Any]:
    """Parse one `attributes` cell back into a dict ({} for NA)."""
    return {} if text is None or pd.isna(text) else json.loads(text)


def to_manifest(frame: pd.DataFrame) -> pd.DataFrame:
    """Select, order and type the manifest columns; missing optional columns become NA."""
    missing_required = [c for c in ("sample_id", "source", "image_path", "modality", "label_raw") if c not in frame]
    if missing_required:
        raise ValueError(f"manifest is missing required columns {missing_required}")
    out = frame.copy()
    for col in MANIFEST_COLUMNS:
        if col not in out:
            out[col] = pd.NA
    out = out[MANIFEST_COLUMNS]
    for col, dtype in _DTYPES.items():
        if dtype == "string":
            out[col] = out[col].astype("string")
        else:
            out[col] = pd.to_numeric(out[col], errors="coerce").astype(dtype)
    out["attributes"] = out["attributes"].fillna("{}")
    return out.reset_index(drop=True)


def validate_manifest(frame: pd.DataFrame, *, where: str = "manifest") -> pd.DataFrame:
    """Check columns, vocabularies and id uniqueness; raise ValueError naming the offending rows."""
    missing = [c for c in MANIFEST_COLUMNS if c not in frame]
    if missing:
        raise ValueError(f"{where}: missing columns {missing}; build it with dermlib.data.to_manifest")
    dup = frame["sample_id"][frame["sample_id"].duplicated()]
    if len(dup):
        raise ValueError(f"{where}: duplicate sample_id values, first: {list(dup.head(3))}")
    for col, allowed in (("modality", MODALITIES), ("split", SPLITS), ("partition", PARTITIONS), ("sex", SEXES)):
        bad = frame[col].notna() & ~frame[col].isin(allowed)
        if bad.any():
            row = frame.index[bad][0]
            raise ValueError(f"{where}: row {row} ({frame.at[row, 'sample_id']}): {col}={frame.at[row, col]!r} "
                             f"is not one of {allowed}")
    for col in MANIFEST_COLUMNS:
        if frame[col].dtype == "string" and frame[col].isin(["nan", "unknown", "None"]).any():
            raise ValueError(f"{where}: column {col} holds a missing-value string; use NA (clean_missing)")
    return frame


def save_manifest(frame: pd.DataFrame, path: str | Path) -> Path:
    """Validate and write a manifest as parquet (atomically: `dermlib.atomic`)."""
    path = Path(path)
    return write_parquet(validate_manifest(frame, where=str(path)), path, index=False)


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read a manifest written by save_manifest, with a clear error when it is not there yet or is damaged."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run notebook 01_data (./run_all.sh --only 01) first")
    return to_manifest(read_parquet(path, fix="run notebook 01_data again (./run_all.sh --only 01), which writes it"))
