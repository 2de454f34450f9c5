"""The loaders of PAD-UFES-20, Derm7pt (both views) and PH2 on the invented metadata of tests/fakes/layouts.py;
the expected value of every field is written out by hand."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from dermlib.data import load_source
from dermlib.data.sources import load_with_skipped
from tests.fakes.layouts import PH2_ROWS, write_ph2_workbook
from tests.fakes.manifests import EXCLUDED, attrs, check_manifest, image_names, report_of, values


def test_pad_ufes_20_fake_rows(fake_root: Callable[[str], Path]) -> None:
    m = load_source("pad_ufes_20", fake_root("pad_ufes_20"))
    check_manifest(m, "pad_ufes_20")
    assert values(m["sample_id"]) == ["pad_ufes_20/PAT_9001_9101_101", "pad_ufes_20/PAT_9001_9102_102",
                                      "pad_ufes_20/PAT_9002_9103_103", "pad_ufes_20/PAT_9003_9104_104",
                                      "pad_ufes_20/PAT_9004_9105_105", "pad_ufes_20/PAT_9005_9106_106",
                                      "pad_ufes_20/PAT_9006_9107_107"]
    assert values(m["label_raw"]) == ["BCC", "SCC", "NEV", "MEL", "ACK", "SEK", "BOW"]
    assert values(m["label"]) == ["BCC", "SCC", "NV", "MEL", "AK", "BKL", "AK"]
    assert values(m["age"]) == [61, 61, 17, 78, 66, 80, 45]
    assert values(m["sex"]) == ["male", "male", None, "female", "female", None, "male"]
    assert values(m["fitzpatrick"]) == [2, 2, None, 1, 3, None, 4]
    assert values(m["site"]) == ["head/neck", "head/neck", "upper extremity", "posterior torso", "upper extremity",
                                 "anterior torso", "lower extremity"]
    assert values(m["patient_id"]) == ["pad_ufes_20/PAT_9001"] * 2 + [f"pad_ufes_20/PAT_900{i}" for i in range(2, 7)]
    assert values(m["lesion_id"]) == [f"pad_ufes_20/910{i}" for i in range(1, 8)]
    assert (m["modality"] == "clinical").all()
    a = attrs(m)
    assert values(a["smoke"]) == [False, False, None, True, False, None, False]  # empty history is missing
    assert values(a["itch"]) == [True, None, False, True, True, False, False]  # UNK is missing, not a third value
    assert values(a["changed"]) == [True, None, False, True, False, False, True]
    assert values(a["biopsed"]) == [True, True, False, True, False, False, True]
    assert values(a["diameter_2_mm"]) == [6, 1.2, None, 9, 4, None, 12]
    assert values(a["background_father"]) == ["POMERANIA", "POMERANIA", None, "BRAZIL", "GERMANY", None,
                                              "NETHERLANDS"]  # BRASIL spelled BRAZIL
    assert [Path(p).parent.name for p in m["image_path"]] == [f"imgs_part_{i % 3 + 1}" for i in range(7)]


def test_fake_sample_images_decode(fake_samples: Path) -> None:
    ham = load_source("ham10000", fake_samples / "HAM10000")
    check_manifest(ham, "ham10000")
    pad = load_source("pad_ufes_20", fake_samples / "PAD-UFES-20")  # True/False and 2.0 (the original Mendeley style)
    check_manifest(pad, "pad_ufes_20")
    assert len(ham) == 8 and len(pad) == 5
    assert values(pad["label"]) == ["BCC", "NV", "AK", "MEL", "BKL"]
    assert values(pad["fitzpatrick"]) == [2, None, 3, 1, None]
    assert values(pad["site"]) == ["head/neck", "head/neck", "upper extremity", "posterior torso", "head/neck"]
    assert values(attrs(pad)["biopsed"]) == [True, False, True, True, False]
    for manifest, size in ((ham, (60, 45)), (pad, (48, 40))):
        for path in manifest["image_path"]:
            with Image.open(path) as img:
                assert img.size == size


def test_derm7pt_fake_rows_both_views(fake_root: Callable[[str], Path]) -> None:
    root = fake_root("derm7pt_derm")
    derm = load_source("derm7pt_derm", root)
    check_manifest(derm, "derm7pt_derm")
    assert values(derm["sample_id"]) == [f"derm7pt_derm/{i}" for i in range(1, 7)]
    assert values(derm["label"]) == ["BCC", "NV", "MEL", "BKL", None, "BKL"]
    assert values(derm["sex"]) == ["male", "female", "female", "male", "female", "male"]
    assert values(derm["site"]) == ["posterior torso", "upper extremity", "head/neck", "acral", "oral/genital",
                                    "lower extremity"]
    assert values(derm["lesion_id"]) == [f"derm7pt/{i}" for i in range(1, 7)] and derm["age"].isna().all()
    # case-insensitive paths: NEL/Nel902.jpg as written, FCl/Fcl902.jpg found in the FCL/ folder on disk
    assert image_names(derm, 2) == ["NEL/Nel902.jpg", "NDL/Ndl902.jpg", "FCL/Fcl902.jpg", "Fhl/Fhl902.jpg",
                                    "Ggl/Ggl902.jpg", "FCL/Fcl904.jpg"]
    a = attrs(derm)
    assert values(a["derm7pt_split"]) == ["train", "train", "test", "valid", "test", "train"]
    assert values(a["seven_point_score"]) == [1, 2, 4, 2, 0, 1]
    assert values(a["blue_whitish_veil"]) == ["absent", "absent", "present", "absent", "absent", "absent"]
    assert values(a["case_id"]) == [None, "9a8b7c6d", None, None, None, None]
    assert report_of(derm) == {("melanosis", EXCLUDED, 1)}
    clinic, skipped = load_with_skipped("derm7pt_clinic", root)
    check_manifest(clinic, "derm7pt_clinic")
    assert values(clinic["sample_id"]) == [f"derm7pt_clinic/{i}" for i in (1, 2, 3, 5, 6)]
    assert image_names(clinic, 2) == ["NEL/NEL901.JPG", "NDL/Ndl901.jpg", "FCL/Fcl901.jpg", "Ggl/Ggl901.jpg",
                                      "FCL/Fcl903.jpg"]
    assert skipped.to_dict("records") == [{"source": "derm7pt_clinic", "sample_id": "derm7pt_clinic/4",
                                           "label_raw": "lentigo",
                                           "reason": "clinical image missing in source (meta.csv reuses the derm "
                                                     "image)"}]
    assert set(clinic["lesion_id"]) <= set(derm["lesion_id"])


def test_derm7pt_index_outside_meta_names_the_file(fake_root: Callable[[str], Path]) -> None:
    root = fake_root("derm7pt_derm")
    (root / "release_v0" / "meta" / "valid_indexes.csv").write_text("indexes\n3\n6\n")
    with pytest.raises(ValueError, match=r"valid_indexes\.csv holds positions outside meta\.csv rows 0\.\.5"):
        load_source("derm7pt_derm", root)


def test_derm7pt_without_images_folder(fake_metadata: Path, tmp_path: Path) -> None:
    shutil.copytree(fake_metadata / "Derm7pt" / "meta", tmp_path / "release_v0" / "meta")
    with pytest.raises(FileNotFoundError, match=r"image folder .*release_v0/images not found.*derm\.cs\.sfu\.ca"):
        load_source("derm7pt_clinic", tmp_path)


def test_ph2_fake_workbook(fake_root: Callable[[str], Path], tmp_path: Path) -> None:
    m = load_source("ph2", fake_root("ph2"))
    check_manifest(m, "ph2")
    assert values(m["sample_id"]) == ["ph2/IMD901", "ph2/IMD905", "ph2/IMD902", "ph2/IMD903", "ph2/IMD904",
                                      "ph2/IMD906"]  # workbook order; the trailing space of "IMD906 " is dropped
    assert values(m["label_raw"]) == ["Common Nevus", "Common Nevus", "Atypical Nevus", "Atypical Nevus", "Melanoma",
                                      "Melanoma"]  # " x" counts as the mark
    assert values(m["label"]) == ["NV", "NV", "NV", "NV", "MEL", "MEL"]
    assert image_names(m, 2) == [f"{n}_Dermoscopic_Image/{n}.bmp" for n in
                                 ("IMD901", "IMD905", "IMD902", "IMD903", "IMD904", "IMD906")]
    a = attrs(m)
    assert values(a["asymmetry"]) == [0, 1, 1, 2, 2, 2] and a["asymmetry"].map(type).eq(int).all()
    assert values(a["pigment_network"]) == ["typical", "atypical", "atypical", "typical", "atypical", "atypical"]
    assert values(a["dots_globules"]) == ["absent", "typical", "atypical", "absent", "atypical", "typical"]
    assert values(a["streaks"]) == ["absent", "absent", "present", "absent", "present", "present"]
    assert values(a["regression_areas"]) == ["absent", "absent", "absent", "present", "present", "absent"]
    assert values(a["blue_whitish_veil"]) == ["absent", "absent", "absent", "absent", "present", "present"]
    assert values(a["colors"]) == [["light brown"], ["light brown", "dark brown"], ["light brown", "dark brown"],
                                   ["dark brown", "blue-gray"], ["white", "red", "dark brown", "blue-gray", "black"],
                                   ["dark brown", "black"]]
    assert values(a["histological_diagnosis"]) == [None, None, None, "Dysplastic nevus", "Melanoma in situ", None]
    # two marks in one row: the error names workbook, sheet, row and image
    rows = [list(r) for r in PH2_ROWS]
    rows[1][3] = "X"
    write_ph2_workbook(tmp_path / "bad" / "PH2_dataset.xlsx", rows)
    with pytest.raises(ValueError, match=r"PH2_dataset\.xlsx sheet Folha1 row 15 \(IMD905\) must have exactly one X"):
        load_source("ph2", tmp_path / "bad")


def test_ph2_error_row_number_counts_empty_rows(tmp_path: Path) -> None:
    rows = [list(r) for r in PH2_ROWS]
    rows.insert(2, [None] * 17)  # workbook row 16 left empty
    rows[4][2] = "X"  # IMD903, now on workbook row 18, marked twice
    write_ph2_workbook(tmp_path / "PH2_dataset.xlsx", rows)
    with pytest.raises(ValueError, match=r"row 18 \(IMD903\)"):
        load_source("ph2", tmp_path)
    rows[4][2] = None  # one X again; no images below tmp_path, so the first row names itself in the error
    rows.insert(0, [None] * 17)  # workbook row 14 left empty too: IMD901 moves to row 15
    write_ph2_workbook(tmp_path / "PH2_dataset.xlsx", rows)
    with pytest.raises(FileNotFoundError, match=r"first: PH2_dataset\.xlsx row 15 \(Image Name IMD901\) expects"):
        load_source("ph2", tmp_path)
