"""The ISIC-archive loaders (HAM10000, BCN20000, ISIC 2019, ISIC 2020) on the invented metadata of
tests/fakes/layouts.py, in each dataset's own layout; the expected value of every field is written out by hand.
The same loaders on all rows of the real files: tests/data/test_real_data.py."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from dermlib.data import load_source
from tests.fakes.layouts import HAM_DATASET, raw_csv
from tests.fakes.manifests import EXCLUDED, MISSING, UNKNOWN, attrs, check_manifest, report_of, values


def test_ham10000_fake_rows(fake_root: Callable[[str], Path], fake_metadata: Path, tmp_path: Path) -> None:
    root = fake_root("ham10000")
    m = load_source("ham10000", root)
    check_manifest(m, "ham10000")
    assert values(m["sample_id"]) == ["ham10000/ISIC_0024401", "ham10000/ISIC_0024402", "ham10000/ISIC_0029400",
                                      "ham10000/ISIC_0029401", "ham10000/ISIC_0025500", "ham10000/ISIC_0031000",
                                      "ham10000/ISIC_0026000", "ham10000/ISIC_0033000"]
    assert values(m["label"]) == ["NV", "NV", "MEL", "AK", "BKL", "BCC", "DF", "VASC"]
    assert values(m["label_raw"]) == ["nv", "nv", "mel", "akiec", "bkl", "bcc", "df", "vasc"]
    assert values(m["age"]) == [45, 45, 70, None, 5, 85, 35, 0]
    assert values(m["sex"]) == ["female", "female", "male", None, "male", "female", "male", "female"]
    assert values(m["site"]) == ["posterior torso", "posterior torso", "head/neck", None, "head/neck", "torso",
                                 "lower extremity", "acral"]
    assert values(m["lesion_id"]) == ["HAM_0900001", "HAM_0900001", "HAM_0900002", "HAM_0900003", "HAM_0900004",
                                      "HAM_0900005", "HAM_0900006", "HAM_0900007"]
    assert m["patient_id"].isna().all() and m["fitzpatrick"].isna().all()
    assert (m["modality"] == "dermoscopic").all()
    a = attrs(m)
    assert values(a["dx_type"]) == ["follow_up", "follow_up", "histo", "histo", "consensus", "histo", "confocal",
                                    "histo"]
    assert values(a["site_raw"]) == ["back", "back", "face", None, "scalp", "trunk", "lower extremity", "acral"]
    assert values(a["isic_id"]) == [s.split("/")[1] for s in m["sample_id"]] and "dataset" not in a
    assert [Path(p).parent.name[-1] for p in m["image_path"]] == list("11221212")  # part_2 from ISIC_0029306 on
    # the Dataverse variant: no file extension, an 8th column `dataset`
    for part in ("HAM10000_images_part_1", "HAM10000_images_part_2"):
        os.symlink(root / part, tmp_path / part)
    shutil.copy(fake_metadata / "HAM10000" / "dataverse_variant" / "HAM10000_metadata", tmp_path)
    variant = load_source("ham10000", tmp_path)
    assert values(attrs(variant)["dataset"]) == HAM_DATASET
    assert values(variant["label"]) == values(m["label"]) and values(variant["age"]) == values(m["age"])


def test_bcn20000_fake_rows(fake_root: Callable[[str], Path]) -> None:
    m = load_source("bcn20000", fake_root("bcn20000"))
    check_manifest(m, "bcn20000")
    assert values(m["sample_id"]) == [f"bcn20000/ISIC_009000{i}" for i in range(1, 9)]
    assert values(m["label_raw"]) == ["Nevus", "Melanoma, NOS", None, "Benign soft tissue proliferations - Vascular",
                                      "Scar", "Nevus", "Basal cell carcinoma", "Atypical melanocytic neoplasm"]
    assert values(m["label"]) == ["NV", "MEL", None, "VASC", None, "NV", "BCC", None]
    assert values(m["age"]) == [60, 55, 50, 30, 45, None, 75, 65]
    assert values(m["sex"]) == ["male", "female", "male", "male", "female", None, "male", "female"]
    assert values(m["site"]) == ["anterior torso", "posterior torso", "lower extremity", "anterior torso", "head/neck",
                                 "palms/soles", "head/neck", "upper extremity"]
    assert values(m["lesion_id"])[0] == values(m["lesion_id"])[5] == "IL_0900001"  # two images of one lesion
    a = attrs(m)
    assert values(a["melanocytic"]) == [True, True, None, False, False, True, False, True]
    assert values(a["concomitant_biopsy"]) == [True, True, True, True, True, False, True, True]
    assert values(a["anatom_site_special"]) == [None] * 5 + ["acral palms or soles", None, None]
    assert values(a["diagnosis_1"]) == ["Benign", "Malignant", None, "Benign", "Benign", "Benign", "Malignant",
                                        "Indeterminate"]
    assert values(a["diagnosis_confirm_type"])[5:] == ["confocal microscopy with consensus dermoscopy",
                                                       "histopathology", None]
    assert report_of(m) == {(None, MISSING, 1), ("Scar", EXCLUDED, 1), ("Atypical melanocytic neoplasm", UNKNOWN, 1)}


def test_bcn20000_latin1_export_names_the_file(fake_root: Callable[[str], Path]) -> None:
    """An export re-saved as Latin-1 (the í of "Clínic" as one byte) is not UTF-8: the error names the file."""
    root = fake_root("bcn20000")
    path = root / "bcn20000_metadata_2025-05-22.csv"
    path.write_bytes(path.read_bytes().decode("utf-8").encode("latin-1"))
    with pytest.raises(ValueError, match=r"bcn20000: cannot parse .*bcn20000_metadata_2025-05-22\.csv as CSV"):
        load_source("bcn20000", root)


def test_isic2019_fake_rows(fake_root: Callable[[str], Path]) -> None:
    root = fake_root("isic2019")
    m = load_source("isic2019", root)
    check_manifest(m, "isic2019")
    ids = ["ISIC_0024401", "ISIC_0029400", "ISIC_0090001", "ISIC_0000901", "ISIC_0000902_downsampled",
           "ISIC_0000903", "ISIC_0000904", "ISIC_0000905", "ISIC_0000906", "ISIC_0000907"]
    assert values(m["sample_id"]) == ["isic2019/" + i for i in ids]
    assert values(m["label_raw"]) == ["NV", "MEL", "NV", "BCC", "AK", "SCC", "DF", "VASC", "BKL", "UNK"]
    assert values(m["label"]) == ["NV", "MEL", "NV", "BCC", "AK", "SCC", "DF", "VASC", "BKL", None]
    # metadata rows 4 and 5 are swapped in the file: values follow the image, not the row
    assert values(m["age"]) == [45, 70, 60, 55, None, 80, 35, 20, 65, 40]
    assert values(m["sex"]) == ["female", "male", "male", "female", None, "male", "female", "male", "female", "female"]
    assert values(m["lesion_id"]) == ["HAM_0900001", "HAM_0900002", "BCN_0900001", None, None, "MSK4_0900003",
                                      "MSK4_0900004", None, "BCN_0900002", None]
    assert values(m["site"]) == ["posterior torso", "head/neck", "anterior torso", "anterior torso", None, "head/neck",
                                 "lower extremity", "oral/genital", "lateral torso", "palms/soles"]
    assert values(attrs(m)["isic_id"])[4] == "ISIC_0000902"  # `_downsampled` dropped from the archive id
    assert report_of(m) == {("UNK", EXCLUDED, 1)}
    # older copies name the last metadata column `gender`
    meta = root / "ISIC_2019_Training_Metadata.csv"
    meta.write_bytes(meta.read_bytes().replace(b",sex\r\n", b",gender\r\n", 1))
    assert values(load_source("isic2019", root)["sex"]) == values(m["sex"])


def test_isic2019_repeated_metadata_row_is_an_error(fake_root: Callable[[str], Path]) -> None:
    # the real file repeats no image (../shared, 25,331 rows), so any repeat is an error, never a silent shift
    root = fake_root("isic2019")
    meta = root / "ISIC_2019_Training_Metadata.csv"
    original = meta.read_bytes()
    lines = original.split(b"\r\n")
    row = next(i for i, line in enumerate(lines) if line.startswith(b"ISIC_0000901,"))
    assert row == 5  # file line 6
    lines.insert(row, lines[row].replace(b",55,", b",99,"))  # a conflicting copy of ISIC_0000901 on line 6
    meta.write_bytes(b"\r\n".join(lines))
    message = (f"isic2019: {meta} lines 6, 7 repeat image 'ISIC_0000901'; each image must appear once: "
               f"delete the extra rows or re-download the file")
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        load_source("isic2019", root)
    lines[row] = lines[row + 1]  # an identical copy is refused too
    meta.write_bytes(b"\r\n".join(lines))
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        load_source("isic2019", root)
    meta.write_bytes(original)  # deduplicated: every image keeps its own metadata
    assert values(load_source("isic2019", root)["age"]) == [45, 70, 60, 55, None, 80, 35, 20, 65, 40]


def test_malformed_ground_truth_names_the_line(fake_metadata: Path, tmp_path: Path) -> None:
    for f in ("ISIC_2019_Training_GroundTruth.csv", "ISIC_2019_Training_Metadata.csv"):
        shutil.copy(fake_metadata / "ISIC2019" / f, tmp_path)
    good = raw_csv(tmp_path / "ISIC_2019_Training_GroundTruth.csv")
    gt = good.copy()
    gt.loc[8, "MEL"] = "1.0"  # two classes in one row (line 10: ISIC_0000906, BKL)
    gt.to_csv(tmp_path / "ISIC_2019_Training_GroundTruth.csv", index=False)
    with pytest.raises(ValueError, match=r"line 10 \(ISIC_0000906\) is not one-hot"):
        load_source("isic2019", tmp_path)
    gt.loc[8, "MEL"] = "x"  # not a number
    gt.to_csv(tmp_path / "ISIC_2019_Training_GroundTruth.csv", index=False)
    with pytest.raises(ValueError, match=r"line 10 \(ISIC_0000906\) is not one-hot"):
        load_source("isic2019", tmp_path)
    good.to_csv(tmp_path / "ISIC_2019_Training_GroundTruth.csv", index=False)
    meta = raw_csv(tmp_path / "ISIC_2019_Training_Metadata.csv")
    meta[meta["image"] != "ISIC_0000901"].to_csv(tmp_path / "ISIC_2019_Training_Metadata.csv", index=False)
    with pytest.raises(ValueError, match=r"image ISIC_0000901 \(ISIC_2019_Training_GroundTruth\.csv line 5\) has no "
                                         r"row in .*ISIC_2019_Training_Metadata\.csv"):
        load_source("isic2019", tmp_path)


def test_isic2020_fake_rows_v1_then_v2(fake_root: Callable[[str], Path], fake_metadata: Path) -> None:
    root = fake_root("isic2020")
    m = load_source("isic2020", root)
    check_manifest(m, "isic2020")
    assert values(m["sample_id"]) == [f"isic2020/ISIC_090000{i}" for i in range(1, 9)]
    assert values(m["label_raw"]) == [None, "nevus", "melanoma", None, "seborrheic keratosis", "cafe-au-lait macule",
                                      "lentigo NOS", "nevus"]
    assert values(m["label"]) == [None, "NV", "MEL", None, "BKL", None, "BKL", "NV"]
    assert values(m["age"]) == [45, 45, 60, None, 70, 70, 30, 30]
    assert values(m["sex"]) == ["male", "male", "female", None, "female", "female", "male", "male"]
    assert values(m["site"]) == ["head/neck", "torso", "lower extremity", None, "upper extremity", "palms/soles",
                                 "oral/genital", "torso"]
    assert values(m["patient_id"]) == ["IP_0900001", "IP_0900001", "IP_0900002", "IP_0900003", "IP_0900004",
                                       "IP_0900004", "IP_0900005", "IP_0900005"]
    assert m["lesion_id"].isna().all()  # v1 has no lesion_id
    a = attrs(m)
    assert values(a["duplicate_of"]) == ["ISIC_0900004", "ISIC_0900008", None, "ISIC_0900001", None, None, None,
                                         "ISIC_0900002"]
    assert values(a["benign_malignant"]) == ["benign", "benign", "malignant"] + ["benign"] * 5
    assert report_of(m) == {(None, MISSING, 2), ("cafe-au-lait macule", EXCLUDED, 1)}
    shutil.copy(fake_metadata / "ISIC2020" / "ISIC_2020_Training_GroundTruth_v2.csv", root)  # v2 wins when present
    v2 = load_source("isic2020", root)
    assert values(v2["lesion_id"]) == ["IL_0910001", "IL_0910002", "IL_0910003", "IL_0910004", "IL_0910005",
                                       "IL_0910006", "IL_0910007", "IL_0910002"]
    assert values(v2["age"]) == values(m["age"]) and values(v2["label"]) == values(m["label"])
