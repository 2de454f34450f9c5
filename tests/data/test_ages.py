"""Ages as the metadata files spell them (issue 27): `45y`, `45 y`, `45 years`, `45,0` and `45.0` are 45 years in every
loader that reads an age; any other text is left missing and reported in one warning naming the file and its lines,
never dropped silently. Each dataset's own layout (tests/fakes/layouts.py) with invented ages; on the real metadata
files (../shared/datasets/metadata, when present) the ages read exactly as before."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from dermlib.data import load_source
from dermlib.data.harmonise import harmonise_age
from dermlib.data.loading import to_number
from dermlib.data.schema import clean_missing
from tests.fakes.layouts import build, raw_csv

SPELLINGS = ["45y", "45 y", "45 years", "45,0", "45.0", "forty", "45 ans"]  # in the first 7 rows of each file
EXPECTED = [45.0, 45.0, 45.0, 45.0, 45.0, None, None]
# source -> (metadata file below its root, age column, id column, how the loader turns an id into its sample id)
AGE_FILES = {
    "ham10000": ("HAM10000_metadata.csv", "age", "image_id", str),
    "bcn20000": ("bcn20000_metadata_2025-05-22.csv", "age_approx", "isic_id", str),
    "isic2019": ("ISIC_2019_Training_Metadata.csv", "age_approx", "image", str),
    "isic2020": ("ISIC_2020_Training_GroundTruth.csv", "age_approx", "image_name", str),
    "pad_ufes_20": ("metadata.csv", "age", "img_id", lambda i: i.removesuffix(".png")),
}


@pytest.mark.parametrize("source", sorted(AGE_FILES))
def test_unambiguous_age_spellings_are_read_and_the_rest_reported(source: str, fake_metadata: Path, tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    file, column, id_column, to_id = AGE_FILES[source]
    root = build(source, fake_metadata, tmp_path / source)
    meta = raw_csv(root / file)
    meta.loc[: len(SPELLINGS) - 1, column] = SPELLINGS
    meta.to_csv(root / file, index=False)
    with caplog.at_level(logging.WARNING, logger="dermlib.data.harmonise"):
        manifest = load_source(source, root)
    ages = manifest.set_index("sample_id")["age"]
    for i, expected in enumerate(EXPECTED):
        got = ages[f"{source}/{to_id(meta[id_column][i])}"]
        assert (pd.isna(got) if expected is None else got == expected), (source, SPELLINGS[i], got)
    warnings = [r.getMessage() for r in caplog.records if "ages" in r.getMessage()]  # not the label warnings
    assert len(warnings) == 1, warnings
    assert f"{source}: {root / file}: 2 ages are not a number of years" in warnings[0]
    assert "line 7 'forty', line 8 '45 ans'" in warnings[0]


def test_age_spellings_one_by_one() -> None:
    raw = pd.Series(["45", " 45.0 ", "45,5", "45Y", "45 yrs", "45 years", "7.25", pd.NA,
                     "1,000", "-3", "4 5", "45 months", "age 45"], dtype="string")
    ages = harmonise_age(raw, Path("meta.csv"), "ham10000")
    assert ages.dtype == "Float64"
    assert ages.tolist()[:7] == [45.0, 45.0, 45.5, 45.0, 45.0, 45.0, 7.25]
    assert ages.iloc[7:].isna().all()  # missing, and text that is not a number of years


def test_one_warning_per_file_naming_the_first_lines(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="dermlib.data.harmonise"):
        harmonise_age(pd.Series(["45", pd.NA, "50.0"], dtype="string"), Path("m.csv"), "ham10000")
        assert not caplog.records
        harmonise_age(pd.Series([f"x{i}" for i in range(9)], dtype="string"), Path("m.csv"), "ham10000")
    (message,) = [r.getMessage() for r in caplog.records]
    assert "9 ages" in message and "line 6 'x4'" in message and "line 7" not in message and "and 4 more" in message


REAL_AGES = {"HAM10000/HAM10000_metadata.csv": "age", "BCN20000/bcn20000_metadata_2025-05-22.csv": "age_approx",
             "ISIC2019/ISIC_2019_Training_Metadata.csv": "age_approx",
             "ISIC2020/ISIC_2020_Training_GroundTruth.csv": "age_approx",
             "ISIC2020/ISIC_2020_Training_GroundTruth_v2.csv": "age_approx", "PAD-UFES-20/metadata.csv": "age"}


def test_real_ages_read_as_before(shared_metadata: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The real metadata's ages: every value exactly what the plain number parse gave, and no warning."""
    for file, column in REAL_AGES.items():
        if not (shared_metadata / file).is_file():
            continue
        raw = pd.read_csv(shared_metadata / file, dtype=str, keep_default_na=False, encoding="utf-8-sig")[column]
        with caplog.at_level(logging.WARNING, logger="dermlib.data.harmonise"):
            ages = harmonise_age(clean_missing(raw), shared_metadata / file, "real")
        pd.testing.assert_series_equal(ages, to_number(clean_missing(raw)), check_names=False)
    assert not caplog.records
