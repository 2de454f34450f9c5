"""The manifest schema: column order, dtypes, NA handling and validation errors that name the row."""

import pandas as pd
import pytest

from dermlib.data.schema import (
    MANIFEST_COLUMNS,
    clean_missing,
    dump_attributes,
    load_attributes,
    read_manifest,
    save_manifest,
    to_manifest,
    validate_manifest,
)


def _rows() -> pd.DataFrame:
    return pd.DataFrame({
        "sample_id": ["s/1", "s/2"], "source": ["s", "s"], "image_path": ["a.jpg", "b.jpg"],
        "modality": ["dermoscopic", "clinical"], "label_raw": ["mel", "nv"], "label": ["MEL", "NV"],
        "age": ["45.0", ""], "fitzpatrick": [3, None],
        "attributes": [dump_attributes({"colors": ["black"], "size": float("nan")}), None],
    })


def test_to_manifest_orders_types_and_fills() -> None:
    m = to_manifest(_rows())
    assert list(m.columns) == MANIFEST_COLUMNS
    assert m["age"].tolist()[0] == 45.0 and pd.isna(m["age"].iloc[1])
    assert str(m["fitzpatrick"].dtype) == "Int64" and pd.isna(m["fitzpatrick"].iloc[1])
    assert load_attributes(m["attributes"].iloc[0]) == {"colors": ["black"]}  # NaN entries dropped
    assert load_attributes(m["attributes"].iloc[1]) == {}
    assert m["split"].isna().all()


def test_clean_missing_turns_spellings_into_na() -> None:
    cleaned = clean_missing(pd.Series(["male", "unknown", "", " nan ", "UNK", "female"]))
    assert cleaned.isna().tolist() == [False, True, True, True, True, False]


def test_validate_names_the_bad_row() -> None:
    m = to_manifest(_rows())
    m.loc[1, "modality"] = "xray"
    with pytest.raises(ValueError, match=r"row 1 \(s/2\): modality='xray'"):
        validate_manifest(m)
    dup = to_manifest(pd.concat([_rows(), _rows()]))
    with pytest.raises(ValueError, match="duplicate sample_id"):
        validate_manifest(dup)
    with pytest.raises(ValueError, match="missing required columns"):
        to_manifest(pd.DataFrame({"sample_id": ["x"]}))


def test_roundtrip_and_missing_file(tmp_path) -> None:
    m = to_manifest(_rows())
    path = save_manifest(m, tmp_path / "m.parquet")
    pd.testing.assert_frame_equal(read_manifest(path), m)
    with pytest.raises(FileNotFoundError, match="01_data"):
        read_manifest(tmp_path / "absent.parquet")
