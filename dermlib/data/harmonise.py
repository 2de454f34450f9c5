"""Label and site harmonisation for the real datasets.

`label_map.csv` (beside this file) is the one explicit table: one row per (source, raw label) with the ISIC8 class
it becomes, or an empty class when the label has no ISIC8 counterpart (inflammatory diseases, scars, "other"
folders, ...). Those rows are excluded from the manifest and counted by `label_report`. Raw labels are matched
case-insensitively after trimming spaces. A raw label missing from the table is treated as excluded too, and
reported separately ("not in label_map.csv") so a new dataset release never slips through silently.

Principle for the borderline cases: the ISIC 2019 class definitions, the paper's taxonomy, for every source alike.
AK includes intraepithelial carcinoma: Bowen's disease, squamous cell carcinoma in situ and HAM10000's `akiec`
are AK wherever they occur (PAD-UFES-20's own release counts Bowen's disease with SCC; dermlib does not, so that
one lesion type never changes class with its source). BKL includes solar lentigo and lichen planus-like
keratosis; VASC includes angiomas and pyogenic granulomas.

Ages (`harmonise_age`): a number of years as the sources write it (`45`, `45.0`), or one of the unambiguous
spellings `45,0` (decimal comma), `45y`, `45 y`, `45 yrs`, `45 years`; anything else is left missing and reported in
one warning naming the file and the first few lines, never dropped silently.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache
from pathlib import Path

import pandas as pd

from dermlib.data.labels import ISIC8
from dermlib.data.schema import SITES

log = logging.getLogger(__name__)

LABEL_MAP_PATH = Path(__file__).with_name("label_map.csv")

REASON_EXCLUDED = "label has no ISIC8 class (label_map.csv)"
REASON_UNKNOWN = "label not in label_map.csv"
REASON_MISSING = "no label in the source"
REPORT_COLUMNS = ["source", "label_raw", "reason", "n"]  # what label_report and build_manifest's report hold

# Raw anatomical-site spellings (lower-case) -> dermlib.data.schema.SITES. Values already in SITES pass through.
SITE_MAP: dict[str, str] = {
    # HAM10000 `localization`
    "back": "posterior torso", "trunk": "torso", "abdomen": "anterior torso", "chest": "anterior torso",
    "face": "head/neck", "neck": "head/neck", "scalp": "head/neck", "ear": "head/neck", "hand": "upper extremity",
    "foot": "lower extremity", "genital": "oral/genital",
    # PAD-UFES-20 `region`
    "nose": "head/neck", "lip": "head/neck", "forearm": "upper extremity", "arm": "upper extremity",
    "thigh": "lower extremity",
    # Derm7pt `location`
    "head neck": "head/neck", "upper limbs": "upper extremity", "lower limbs": "lower extremity",
    "buttocks": "torso", "genital areas": "oral/genital",
}


def label_table() -> pd.DataFrame:
    """The label map as a DataFrame (source, label_raw, label, note); `label` is NA for excluded labels."""
    return _label_table().copy()


@lru_cache(maxsize=1)
def _label_table() -> pd.DataFrame:
    """label_map.csv, read and checked once."""
    table = pd.read_csv(LABEL_MAP_PATH, dtype="string", keep_default_na=False)
    table["label"] = table["label"].mask(table["label"] == "")
    bad = table["label"].notna() & ~table["label"].isin(ISIC8)
    if bad.any():
        raise ValueError(f"{LABEL_MAP_PATH}: row {int(bad.idxmax()) + 2} maps to {table.loc[bad, 'label'].iloc[0]!r}, "
                         f"which is not an ISIC8 class {ISIC8}")
    key = table["source"] + "\t" + table["label_raw"].str.strip().str.casefold()
    if key.duplicated().any():
        raise ValueError(f"{LABEL_MAP_PATH}: duplicate entry for {key[key.duplicated()].iloc[0]!r}")
    return table


def _lookup(source: str) -> dict[str, str | None]:
    """casefolded raw label -> class (None = excluded) for one source."""
    table = _label_table()
    rows = table[table["source"] == source]
    pairs = zip(rows["label_raw"], rows["label"])
    return {raw.strip().casefold(): (None if pd.isna(lab) else str(lab)) for raw, lab in pairs}


def harmonise(source: str, raw_labels: pd.Series) -> pd.Series:
    """Map a source's raw labels to ISIC8 classes; excluded, unknown and missing labels become NA."""
    lookup = _lookup(source)
    if not lookup:
        raise ValueError(f"no labels for source {source!r} in {LABEL_MAP_PATH}; add its rows there")
    key = raw_labels.astype("string").str.strip().str.casefold()
    unknown = key.notna() & ~key.isin(list(lookup))
    if unknown.any():
        log.warning("%s: %d rows have labels not in label_map.csv (excluded): %s", source, int(unknown.sum()),
                    sorted(raw_labels[unknown].astype(str).unique())[:10])
    return key.map(lookup).astype("string")


def label_reasons(source: str, raw_labels: pd.Series) -> pd.Series:
    """Why each row has no class (NA where it has one): missing, excluded by the table, or not in the table."""
    lookup = _lookup(source)
    key = raw_labels.astype("string").str.strip().str.casefold()
    mapped = key.map(lookup)
    reason = pd.Series(pd.NA, index=raw_labels.index, dtype="string")
    reason[key.isna()] = REASON_MISSING
    reason[key.notna() & key.isin(list(lookup)) & mapped.isna()] = REASON_EXCLUDED
    reason[key.notna() & ~key.isin(list(lookup))] = REASON_UNKNOWN
    return reason


def count_reasons(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows left out (source, label_raw, reason) counted into the report format REPORT_COLUMNS, typed."""
    if frame.empty:
        return pd.DataFrame({c: pd.Series(dtype="Int64" if c == "n" else "string") for c in REPORT_COLUMNS})
    counts = frame.groupby(["source", "label_raw", "reason"], dropna=False, sort=True).size().rename("n").reset_index()
    return counts.astype({"source": "string", "label_raw": "string", "reason": "string", "n": "Int64"})[REPORT_COLUMNS]


def label_report(manifest: pd.DataFrame) -> pd.DataFrame:
    """Count the rows of a manifest (before dropping) that have no harmonised label, per source/raw label/reason."""
    parts = []
    for source, rows in manifest[manifest["label"].isna()].groupby("source", sort=True):
        reasons = label_reasons(str(source), rows["label_raw"])
        parts.append(pd.DataFrame({"source": rows["source"], "label_raw": rows["label_raw"], "reason": reasons}))
    return count_reasons(pd.concat(parts, ignore_index=True) if parts else pd.DataFrame())


def harmonise_site(raw_sites: pd.Series) -> pd.Series:
    """Map raw anatomical sites to dermlib.data.schema.SITES (NA when missing or not mappable)."""
    key = raw_sites.astype("string").str.strip().str.lower()
    mapping = {**{s: s for s in SITES}, **SITE_MAP}
    return key.map(mapping).astype("string")


def harmonise_sex(raw_sex: pd.Series) -> pd.Series:
    """Map raw sex spellings (MALE, Female, m, ...) to "male"/"female"; anything else becomes NA."""
    key = raw_sex.astype("string").str.strip().str.lower()
    return key.map({"male": "male", "female": "female", "m": "male", "f": "female"}).astype("string")


# A number of years: digits with a decimal point, or 1-3 digits with a decimal comma of 1-2 digits ("45,0"; "1,000"
# is not an age), then optionally y / yr(s) / year(s); case and spaces around the unit do not matter.
_AGE = re.compile(r"^(\d{1,3},\d{1,2}|\d+(?:\.\d+)?)\s*(?:y|yrs?|years?)?\.?$", re.IGNORECASE)
AGE_SHOWN = 5  # unreadable ages a warning lists


def harmonise_age(raw_ages: pd.Series, path: Path, source: str) -> pd.Series:
    """Ages in years (Float64) from a metadata column already cleaned of missing spellings (`clean_missing`, index =
    row position in `path`): numbers and the spellings in the module's docs; any other text becomes NA and is
    reported in one warning with its file line (header = line 1) and value."""
    text = raw_ages.astype("string").str.strip()
    years = text.str.extract(_AGE, expand=False).str.replace(",", ".", regex=False)
    bad = text.notna() & years.isna()
    if bad.any():
        lines = [f"line {int(i) + 2} {v!r}" for i, v in text[bad].head(AGE_SHOWN).items()]
        more = f" and {int(bad.sum()) - AGE_SHOWN} more" if bad.sum() > AGE_SHOWN else ""
        log.warning("%s: %s: %d ages are not a number of years and are left missing: %s%s (read: 45, 45.0, 45,0, "
                    "45y, 45 years); correct them in the file to keep them", source, path, int(bad.sum()),
                    ", ".join(lines), more)
    return pd.to_numeric(years, errors="coerce").astype("Float64")
