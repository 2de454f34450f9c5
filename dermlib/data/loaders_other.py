"""Loaders for PAD-UFES-20, Derm7pt (dermoscopic and clinical views) and PH2: datasets with rich per-image
metadata (patient history, 7-point criteria, PH2 dermoscopic criteria and colours), all kept in `attributes`.

Ids outside the ISIC namespace are prefixed with the dataset name ("pad_ufes_20/PAT_46", "derm7pt/12") so grouping
keys never collide across sources; both Derm7pt views share lesion_id "derm7pt/<case_num>" so a case's dermoscopic and
clinical images always land in the same split.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dermlib.data.harmonise import harmonise_age, harmonise_sex, harmonise_site
from dermlib.data.loading import (
    Loaded,
    attach_images,
    attributes_json,
    drop_missing_images,
    find_file,
    finish,
    index_files,
    index_relative,
    match_images,
    read_text_table,
    require_columns,
    require_ids,
    require_root,
    row_labels,
    skipped_rows,
    to_bool,
    to_number,
)
from dermlib.data.schema import clean_missing

PAD_BOOLEANS = ["smoke", "drink", "pesticide", "skin_cancer_history", "cancer_history", "has_piped_water",
                "has_sewage_system", "itch", "grew", "hurt", "changed", "bleed", "elevation", "biopsed"]
DERM7PT_CRITERIA = ["pigment_network", "streaks", "pigmentation", "regression_structures", "dots_and_globules",
                    "blue_whitish_veil", "vascular_structures"]
PH2_CRITERIA = {  # workbook header (newlines folded) -> attribute key
    "Pigment Network (AT/T)": "pigment_network", "Dots/Globules (A/AT/T)": "dots_globules",
    "Streaks (A/P)": "streaks", "Regression Areas (A/P)": "regression_areas",
    "Blue-Whitish Veil (A/P)": "blue_whitish_veil",
}
PH2_CODES = {"AT": "atypical", "T": "typical", "A": "absent", "P": "present"}
PH2_CLASSES = ["Common Nevus", "Atypical Nevus", "Melanoma"]
PH2_COLOURS = {"White": "white", "Red": "red", "Light-Brown": "light brown", "Dark-Brown": "dark brown",
               "Blue-Gray": "blue-gray", "Black": "black"}  # workbook column -> SynthDerm colour name


def load_pad_ufes_20(root: str | Path, strict: bool = True) -> Loaded:
    """PAD-UFES-20: metadata.csv + PAT_*.png searched recursively (official: images/imgs_part_{1,2,3}/)."""
    name = "pad_ufes_20"
    root = require_root(name, root)
    meta = find_file(name, root, ["metadata.csv", "*/metadata.csv"], "metadata file metadata.csv")
    raw = read_text_table(meta, name).rename(columns={"fitzpatrick": "fitspatrick"})  # the official misspelling
    require_columns(raw, ["patient_id", "lesion_id", "img_id", "diagnostic", "age", "gender", "fitspatrick", "region",
                          "diameter_1", "diameter_2", *PAD_BOOLEANS], meta, name)
    img = require_ids(raw["img_id"], meta, name, "img_id")
    frame = pd.DataFrame({"id": img.str.replace(r"\.png$", "", regex=True, case=False)})
    frame["label_raw"] = clean_missing(raw["diagnostic"])
    frame["patient_id"] = name + "/" + clean_missing(raw["patient_id"])
    frame["lesion_id"] = name + "/" + clean_missing(raw["lesion_id"])
    frame["age"] = harmonise_age(clean_missing(raw["age"]), meta, name)
    frame["sex"] = harmonise_sex(clean_missing(raw["gender"]))
    frame["fitzpatrick"] = to_number(clean_missing(raw["fitspatrick"]))
    frame["site_raw"] = clean_missing(raw["region"])
    frame["site"] = harmonise_site(frame["site_raw"])
    keys: dict[str, str] = {"site_raw": "site_raw"}
    for col in PAD_BOOLEANS:
        frame[col] = to_bool(raw[col])
        keys[col] = col
    for col in ("diameter_1", "diameter_2"):
        frame[col + "_mm"] = to_number(raw[col])
        keys[col + "_mm"] = col + "_mm"
    for col in ("background_father", "background_mother"):
        frame[col] = clean_missing(raw[col]).replace("BRASIL", "BRAZIL") if col in raw else pd.NA
        keys[col] = col
    frame["attributes"] = attributes_json(frame, keys)
    return attach_images(frame, name, meta, root, strict, "img_id", img)


def _derm7pt_table(name: str, root: Path) -> tuple[Path, Path, pd.DataFrame]:
    """(release folder, meta.csv path, meta table with the official split as column `derm7pt_split`)."""
    base = root / "release_v0" if (root / "release_v0").is_dir() else root
    meta = find_file(name, base, ["meta/meta.csv", "meta.csv"], "metadata file meta/meta.csv")
    raw = read_text_table(meta, name)
    require_columns(raw, ["case_num", "diagnosis", "clinic", "derm", "seven_point_score", "location", "sex",
                          "elevation", "management", "level_of_diagnostic_difficulty", *DERM7PT_CRITERIA], meta, name)
    raw["derm7pt_split"] = pd.Series(pd.NA, index=raw.index, dtype="string")
    for split, file in (("train", "train_indexes.csv"), ("valid", "valid_indexes.csv"), ("test", "test_indexes.csv")):
        path = meta.parent / file
        if path.is_file():  # optional: the suggested split, 0-based row positions into meta.csv
            positions = pd.to_numeric(read_text_table(path, name)["indexes"], errors="coerce")
            if positions.isna().any() or not positions.between(0, len(raw) - 1).all():
                raise ValueError(f"{name}: {path} holds positions outside meta.csv rows 0..{len(raw) - 1}")
            raw.loc[raw.index[positions.astype(int)], "derm7pt_split"] = split
    return base, meta, raw


def _load_derm7pt(name: str, column: str, root: str | Path, strict: bool) -> Loaded:
    """One Derm7pt view (`derm` or `clinic` column); image paths are matched case-insensitively below images/."""
    root = require_root(name, root)
    base, meta, raw = _derm7pt_table(name, root)
    images = base / "images"
    if not images.is_dir():
        raise FileNotFoundError(f"{name}: image folder {images} not found (meta.csv paths are relative to it). "
                                f"Download release_v0 from http://derm.cs.sfu.ca/ and unzip it whole.")
    frame = pd.DataFrame({"id": require_ids(raw["case_num"], meta, name, "case_num")})
    frame["label_raw"] = clean_missing(raw["diagnosis"])
    frame["lesion_id"] = "derm7pt/" + frame["id"]
    frame["sex"] = harmonise_sex(clean_missing(raw["sex"]))
    frame["site_raw"] = clean_missing(raw["location"])
    frame["site"] = harmonise_site(frame["site_raw"])
    frame["seven_point_score"] = to_number(raw["seven_point_score"]).astype("Int64")
    keys = {"seven_point_score": "seven_point_score", "site_raw": "site_raw", "derm7pt_split": "derm7pt_split"}
    for col in [*DERM7PT_CRITERIA, "elevation", "management", "level_of_diagnostic_difficulty", "case_id", "notes"]:
        frame[col] = clean_missing(raw[col]) if col in raw else pd.NA
        keys[col] = col
    frame["derm7pt_split"] = raw["derm7pt_split"]
    frame["attributes"] = attributes_json(frame, keys)
    rel = clean_missing(raw[column]).fillna("")
    skipped = skipped_rows(frame.iloc[:0], name, "")
    if column == "clinic":  # meta.csv reuses the dermoscopic file where the clinical photo is missing
        reused = rel.str.lower() == raw["derm"].str.strip().str.lower()
        skipped = skipped_rows(frame[reused], name, "clinical image missing in source (meta.csv reuses the derm image)")
        frame, rel = frame[~reused], rel[~reused]
    frame["image_path"] = match_images([rel.str.strip()], index_relative(images))
    lines = row_labels(frame, meta, "case_num")
    kept, absent = drop_missing_images(frame, name, meta, images, strict, "images/" + rel, lines)
    return finish(name, kept), pd.concat([skipped, absent], ignore_index=True)


def load_derm7pt_derm(root: str | Path, strict: bool = True) -> Loaded:
    """Derm7pt dermoscopic images (meta.csv column `derm`)."""
    return _load_derm7pt("derm7pt_derm", "derm", root, strict)


def load_derm7pt_clinic(root: str | Path, strict: bool = True) -> Loaded:
    """Derm7pt clinical images (meta.csv column `clinic`)."""
    return _load_derm7pt("derm7pt_clinic", "clinic", root, strict)


def _x_marks(columns: pd.DataFrame) -> pd.DataFrame:
    """True where a PH2 workbook cell holds the mark "X" (any case, spaces ignored); empty cells are False."""
    return columns.apply(lambda c: c.astype("string").str.strip().str.upper().eq("X").fillna(False))


def load_ph2(root: str | Path, strict: bool = True) -> Loaded:
    """PH2: PH2_dataset.xlsx (sheet Folha1, header row 13, X marks) + <IMD>/<IMD>_Dermoscopic_Image/<IMD>.bmp."""
    name = "ph2"
    root = require_root(name, root)
    book = find_file(name, root, ["PH2_dataset.xlsx", "PH2 Dataset.xlsx", "*/PH2_dataset.xlsx"],
                     "workbook PH2_dataset.xlsx")
    sheets = pd.ExcelFile(book).sheet_names
    sheet = "Folha1" if "Folha1" in sheets else sheets[0]
    raw = pd.read_excel(book, sheet_name=sheet, header=12, dtype=str)  # rows 1-12 hold the legend and a super-header
    raw.columns = [" ".join(str(c).split()) for c in raw.columns]
    required = ["Image Name", "Histological Diagnosis", *PH2_CLASSES, "Asymmetry (0/1/2)", *PH2_CRITERIA, *PH2_COLOURS]
    require_columns(raw, required, book, name)
    raw = raw[raw["Image Name"].notna()]
    # spreadsheet row numbers, for errors: taken before reset_index so empty rows above still count
    row = pd.Series(raw.index + 14, dtype="int64").astype(str)
    raw = raw.reset_index(drop=True)
    marks = _x_marks(raw[PH2_CLASSES])
    bad = marks.sum(axis=1) != 1
    if bad.any():
        first = int(bad.to_numpy().argmax())
        raise ValueError(f"{name}: {book} sheet {sheet} row {row[first]} ({raw['Image Name'][first]}) must have "
                         f"exactly one X in {PH2_CLASSES}; re-download the official workbook")
    frame = pd.DataFrame({"id": raw["Image Name"].astype("string").str.strip()})
    frame["label_raw"] = marks.idxmax(axis=1).astype("string")
    frame["histological_diagnosis"] = clean_missing(raw["Histological Diagnosis"])
    frame["asymmetry"] = to_number(raw["Asymmetry (0/1/2)"]).astype("Int64")
    keys = {"histological_diagnosis": "histological_diagnosis", "asymmetry": "asymmetry"}
    for header, key in PH2_CRITERIA.items():
        frame[key] = clean_missing(raw[header]).str.upper().map(PH2_CODES).astype("string")
        keys[key] = key
    marked = _x_marks(raw[list(PH2_COLOURS)])
    frame["colors"] = [[PH2_COLOURS[c] for c in PH2_COLOURS if flags[c]] for flags in marked.to_dict("records")]
    keys["colors"] = "colors"  # same key and vocabulary as SynthDerm's ground truth
    frame["attributes"] = attributes_json(frame, keys)
    frame["image_path"] = match_images([frame["id"] + ".bmp"], index_files(root, (".bmp",)))
    lines = book.name + " row " + row + " (Image Name " + frame["id"].astype(str) + ")"
    expected = frame["id"] + "/" + frame["id"] + "_Dermoscopic_Image/" + frame["id"] + ".bmp"
    kept, skipped = drop_missing_images(frame, name, book, root, strict, expected, lines)
    return finish(name, kept), skipped
