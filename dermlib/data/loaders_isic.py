"""Loaders for the ISIC-archive datasets: HAM10000, BCN20000, ISIC 2019 and ISIC 2020 (all dermoscopic).

Each reads the dataset's own metadata files, as downloaded, and finds images by file name anywhere below `root`.
ISIC-namespace ids (HAM_*, BCN_*, MSK*_*, IL_*, IP_*) are kept as they are, so lesion/patient groups line up across
sources; `attributes.isic_id` holds the archive image id, which `build_manifest` uses to drop cross-source duplicates.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dermlib.data.harmonise import harmonise_age, harmonise_sex, harmonise_site
from dermlib.data.labels import ISIC8
from dermlib.data.loading import (
    Loaded,
    attach_images,
    attributes_json,
    find_file,
    read_text_table,
    require_ids,
    require_columns,
    require_root,
    to_bool,
)
from dermlib.data.schema import clean_missing


def load_ham10000(root: str | Path, strict: bool = True) -> Loaded:
    """HAM10000: HAM10000_metadata(.csv) + HAM10000_images_part_{1,2}/<image_id>.jpg."""
    name = "ham10000"
    root = require_root(name, root)
    meta = find_file(name, root, ["HAM10000_metadata.csv", "HAM10000_metadata", "*/HAM10000_metadata.csv"],
                     "metadata file HAM10000_metadata.csv")
    raw = read_text_table(meta, name)
    require_columns(raw, ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"], meta, name)
    frame = pd.DataFrame({"id": require_ids(raw["image_id"], meta, name, "image_id")})
    frame["label_raw"] = clean_missing(raw["dx"])
    frame["lesion_id"] = clean_missing(raw["lesion_id"])
    frame["age"] = harmonise_age(clean_missing(raw["age"]), meta, name)
    frame["sex"] = harmonise_sex(clean_missing(raw["sex"]))
    frame["site_raw"] = clean_missing(raw["localization"])
    frame["site"] = harmonise_site(frame["site_raw"])
    frame["dx_type"] = clean_missing(raw["dx_type"])
    frame["dataset"] = clean_missing(raw["dataset"]) if "dataset" in raw else pd.NA  # Dataverse 8-column variant
    frame["attributes"] = attributes_json(frame, {"isic_id": "id", "dx_type": "dx_type", "site_raw": "site_raw",
                                                  "dataset": "dataset"})
    return attach_images(frame, name, meta, root, strict, "image_id", frame["id"] + ".jpg")


def load_bcn20000(root: str | Path, strict: bool = True) -> Loaded:
    """BCN20000 as exported from the ISIC archive (collection 249): metadata csv + <isic_id>.jpg."""
    name = "bcn20000"
    root = require_root(name, root)
    meta = find_file(name, root, ["metadata.csv", "bcn20000_metadata*.csv", "*/bcn20000_metadata*.csv"],
                     "ISIC archive metadata export (metadata.csv or bcn20000_metadata_<date>.csv)")
    raw = read_text_table(meta, name)
    require_columns(raw, ["isic_id", "diagnosis_1", "diagnosis_2", "diagnosis_3", "age_approx", "anatom_site_general",
                          "sex", "lesion_id"], meta, name)
    frame = pd.DataFrame({"id": require_ids(raw["isic_id"], meta, name, "isic_id")})
    # the most specific level of the ISIC diagnosis hierarchy that is filled (vascular lesions stop at level 2)
    frame["label_raw"] = clean_missing(raw["diagnosis_3"]).fillna(clean_missing(raw["diagnosis_2"]))
    frame["lesion_id"] = clean_missing(raw["lesion_id"])
    if "patient_id" in raw:
        frame["patient_id"] = clean_missing(raw["patient_id"])
    frame["age"] = harmonise_age(clean_missing(raw["age_approx"]), meta, name)
    frame["sex"] = harmonise_sex(clean_missing(raw["sex"]))
    frame["site_raw"] = clean_missing(raw["anatom_site_general"])
    frame["site"] = harmonise_site(frame["site_raw"])
    extra = {"diagnosis_1": "diagnosis_1", "diagnosis_2": "diagnosis_2", "benign_malignant": "benign_malignant",
             "diagnosis_confirm_type": "diagnosis_confirm_type", "anatom_site_special": "anatom_site_special",
             "image_type": "image_type", "copyright_license": "copyright_license"}
    for key, col in extra.items():
        frame[key] = clean_missing(raw[col]) if col in raw else pd.NA
    for key in ("melanocytic", "concomitant_biopsy"):
        frame[key] = to_bool(raw[key]) if key in raw else None
    frame["attributes"] = attributes_json(frame, {"isic_id": "id", "site_raw": "site_raw", "melanocytic": "melanocytic",
                                                  "concomitant_biopsy": "concomitant_biopsy", **{k: k for k in extra}})
    return attach_images(frame, name, meta, root, strict, "isic_id", frame["id"] + ".jpg")


def load_isic2019(root: str | Path, strict: bool = True) -> Loaded:
    """ISIC 2019 training set: one-hot ground truth + metadata (sex or gender) + ISIC_2019_Training_Input/*.jpg."""
    name = "isic2019"
    root = require_root(name, root)
    gt_path = find_file(name, root, ["ISIC_2019_Training_GroundTruth.csv", "*/ISIC_2019_Training_GroundTruth.csv"],
                        "ground-truth file ISIC_2019_Training_GroundTruth.csv")
    meta_path = find_file(name, root, ["ISIC_2019_Training_Metadata.csv", "*/ISIC_2019_Training_Metadata.csv"],
                          "metadata file ISIC_2019_Training_Metadata.csv")
    gt = read_text_table(gt_path, name)
    require_columns(gt, ["image", *ISIC8], gt_path, name)
    meta = read_text_table(meta_path, name).rename(columns={"gender": "sex"})  # older copies name it `gender`
    require_columns(meta, ["image", "age_approx", "anatom_site_general", "sex"], meta_path, name)
    meta["age"] = harmonise_age(clean_missing(meta["age_approx"]), meta_path, name)  # in file order: its lines
    classes = [c for c in [*ISIC8, "UNK"] if c in gt]
    onehot = gt[classes].apply(pd.to_numeric, errors="coerce")
    bad = onehot.isna().any(axis=1) | (onehot.eq(1).sum(axis=1) != 1)
    if bad.any():
        line = int(bad.to_numpy().argmax()) + 2
        raise ValueError(f"{name}: {gt_path} line {line} ({gt['image'].iloc[line - 2]}) is not one-hot over {classes}; "
                         f"re-download the official ground truth")
    frame = pd.DataFrame({"id": require_ids(gt["image"], gt_path, name, "image")})
    frame["label_raw"] = onehot.idxmax(axis=1).astype("string")
    # one row per image, else `meta.loc` below would return every copy and shift all later images' metadata
    meta = meta.set_index(require_ids(meta["image"], meta_path, name, "image"))
    absent = ~frame["id"].isin(meta.index)
    if absent.any():
        first = int(absent.idxmax())
        raise ValueError(f"{name}: image {frame['id'][first]} ({gt_path.name} line {first + 2}) "
                         f"has no row in {meta_path}; use the metadata file of the same release")
    meta = meta.loc[frame["id"]].reset_index(drop=True)
    frame["lesion_id"] = clean_missing(meta["lesion_id"]) if "lesion_id" in meta else pd.NA
    frame["age"] = meta["age"]
    frame["sex"] = harmonise_sex(clean_missing(meta["sex"]))
    frame["site_raw"] = clean_missing(meta["anatom_site_general"])
    frame["site"] = harmonise_site(frame["site_raw"])
    frame["isic_id"] = frame["id"].str.replace(r"_downsampled$", "", regex=True)
    frame["attributes"] = attributes_json(frame, {"isic_id": "isic_id", "site_raw": "site_raw"})
    return attach_images(frame, name, gt_path, root, strict, "image", frame["id"] + ".jpg")


def load_isic2020(root: str | Path, strict: bool = True) -> Loaded:
    """ISIC 2020 training set: ground truth (v2 with lesion_id, or v1 / Kaggle train.csv) + train/<image_name>.jpg."""
    name = "isic2020"
    root = require_root(name, root)
    gt_path = find_file(name, root, ["ISIC_2020_Training_GroundTruth_v2.csv", "ISIC_2020_Training_GroundTruth.csv",
                                     "train.csv"], "ground-truth file ISIC_2020_Training_GroundTruth(_v2).csv")
    raw = read_text_table(gt_path, name)
    require_columns(raw, ["image_name", "patient_id", "sex", "age_approx", "anatom_site_general_challenge",
                          "diagnosis", "benign_malignant", "target"], gt_path, name)
    frame = pd.DataFrame({"id": require_ids(raw["image_name"], gt_path, name, "image_name")})
    frame["label_raw"] = clean_missing(raw["diagnosis"])  # 'unknown' (27,124 benign images) becomes NA
    frame["patient_id"] = clean_missing(raw["patient_id"])
    frame["lesion_id"] = clean_missing(raw["lesion_id"]) if "lesion_id" in raw else pd.NA
    frame["age"] = harmonise_age(clean_missing(raw["age_approx"]), gt_path, name)
    frame["sex"] = harmonise_sex(clean_missing(raw["sex"]))
    frame["site_raw"] = clean_missing(raw["anatom_site_general_challenge"])
    frame["site"] = harmonise_site(frame["site_raw"])
    frame["benign_malignant"] = clean_missing(raw["benign_malignant"])
    frame["duplicate_of"] = pd.Series(pd.NA, index=frame.index, dtype="string")
    dup_path = root / "ISIC_2020_Training_Duplicates.csv"
    if dup_path.is_file():  # optional: pairs of duplicate images published with the challenge
        dups = read_text_table(dup_path, name)
        require_columns(dups, ["image_name_1", "image_name_2"], dup_path, name)
        partner = pd.concat([dups.set_index("image_name_1")["image_name_2"],
                             dups.set_index("image_name_2")["image_name_1"]])
        partner = partner[~partner.index.duplicated()]
        frame["duplicate_of"] = frame["id"].map(partner).astype("string")
    keys = {"isic_id": "id", "site_raw": "site_raw", "duplicate_of": "duplicate_of",
            "benign_malignant": "benign_malignant"}
    frame["attributes"] = attributes_json(frame, keys)
    return attach_images(frame, name, gt_path, root, strict, "image_name", frame["id"] + ".jpg")
