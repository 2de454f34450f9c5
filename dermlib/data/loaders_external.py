"""Loaders for the external (test-only in the paper) sets: SKINL2, Fitzpatrick17k, DDI and MED-NODE.

SKINL2 and MED-NODE ship no label file: the class is the folder an image sits in. Fitzpatrick17k does not fix an image
file name, so `<md5hash>.jpg`, `<md5hash>` (as the official train.py opens it), `<md5hash>.png` and `<url_alphanum>` are
all accepted. DDI's skin_tone is a Fitzpatrick pair, kept in attributes (the single-type `fitzpatrick` stays NA).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from dermlib.data.loading import (
    Loaded,
    attributes_json,
    drop_missing_images,
    find_file,
    finish,
    fix_hint,
    index_files,
    match_images,
    read_text_table,
    require_columns,
    require_ids,
    require_root,
    row_labels,
    to_bool,
    to_number,
)
from dermlib.data.schema import clean_missing

DDI_PAIRS = {"12": "I-II", "34": "III-IV", "56": "V-VI"}
_SKINL2_FILE = re.compile(r"^(\d+)_dermatoscopic\.(png|jpe?g)$", re.IGNORECASE)
_SKINL2_VERSION = re.compile(r"^skinl2_?(v\d+)$", re.IGNORECASE)


def load_skinl2(root: str | Path, strict: bool = True) -> Loaded:
    """SKINL2 dermoscopic images, v1 (Dermatoscopic/<Category>/<NNNN>_Dermatoscopic.png) and v2/v3
    (<NNNN>/<Category>/Dermatoscopic/<NNNN>_Dermatoscopic.png) layouts. No image list exists, so no image is missing;
    `strict`: an empty or too small image file raises (True) or has its row skipped and counted (False)."""
    name = "skinl2"
    root = require_root(name, root)
    rows = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for file in sorted(files):
            match = _SKINL2_FILE.match(file)
            if not match:
                continue
            parts = Path(folder).relative_to(root).parts
            if parts and parts[-1].lower() == "dermatoscopic" and len(parts) >= 2:  # v2/v3: class above Dermatoscopic/
                category, layout = parts[-2], "v2"
            elif len(parts) >= 2 and parts[-2].lower() == "dermatoscopic":  # v1: Dermatoscopic/<Category>/
                category, layout = parts[-1], "v1"
            else:
                raise ValueError(f"{name}: {os.path.join(folder, file)} is not in a documented SKINL2 layout. "
                                 f"{fix_hint(name)}")
            version = next((m.group(1).lower() for p in parts if (m := _SKINL2_VERSION.match(p))), layout)
            rows.append({"id": f"{version}/{match.group(1)}", "label_raw": category, "version": version,
                         "image_path": os.path.join(folder, file), "lesion_id": f"{name}/{match.group(1)}"})
    if not rows:
        raise FileNotFoundError(f"{name}: no <NNNN>_Dermatoscopic.png images found below {root}. {fix_hint(name)}")
    frame = pd.DataFrame(rows)
    frame["attributes"] = attributes_json(frame, {"skinl2_version": "version", "category_folder": "label_raw"})
    kept, skipped = drop_missing_images(frame, name, root, root, strict, frame["image_path"], frame["image_path"])
    return finish(name, kept), skipped


def load_med_node(root: str | Path, strict: bool = True) -> Loaded:
    """MED-NODE: complete_mednode_dataset/<class folder>/*.jpg; every class folder found is read (unknown ones are
    reported as unmapped labels). No image list exists, so no image is missing; `strict`: an empty or too small
    image file raises (True) or has its row skipped and counted (False)."""
    name = "med_node"
    root = require_root(name, root)
    base = root / "complete_mednode_dataset" if (root / "complete_mednode_dataset").is_dir() else root
    folders = sorted(p for p in base.iterdir() if p.is_dir())
    if not any(p.name.lower() in ("melanoma", "naevus") for p in folders):
        found = [p.name for p in folders]
        raise FileNotFoundError(f"{name}: no melanoma/ or naevus/ folder in {base} (found {found}). {fix_hint(name)}")
    rows = []
    for folder in folders:
        for file, path in sorted(index_files(folder).items()):
            rows.append({"id": f"{folder.name}/{Path(path).stem}", "label_raw": folder.name, "image_path": path})
    frame = pd.DataFrame(rows, columns=["id", "label_raw", "image_path"])
    frame["attributes"] = attributes_json(frame, {"class_folder": "label_raw"})
    kept, skipped = drop_missing_images(frame, name, base, base, strict, frame["image_path"], frame["image_path"])
    return finish(name, kept), skipped


def load_fitzpatrick17k(root: str | Path, strict: bool = True) -> Loaded:
    """Fitzpatrick17k: fitzpatrick17k.csv (current or 2021 release) + images named after md5hash (or url_alphanum)."""
    name = "fitzpatrick17k"
    root = require_root(name, root)
    meta = find_file(name, root, ["fitzpatrick17k.csv", "*/fitzpatrick17k.csv"], "metadata file fitzpatrick17k.csv")
    raw = read_text_table(meta, name).rename(columns={"fitzpatrick": "fitzpatrick_scale"})  # 2021 release name
    require_columns(raw, ["md5hash", "label", "fitzpatrick_scale", "nine_partition_label", "three_partition_label"],
                    meta, name)
    frame = pd.DataFrame({"id": require_ids(raw["md5hash"], meta, name, "md5hash")})
    frame["label_raw"] = clean_missing(raw["label"])
    frame["fitzpatrick"] = to_number(clean_missing(raw["fitzpatrick_scale"]))  # -1 (unknown) becomes NA
    keys = {}
    for col in ("fitzpatrick_centaur", "nine_partition_label", "three_partition_label", "qc", "url"):
        frame[col] = clean_missing(raw[col]) if col in raw else pd.NA
        keys[col] = col
    frame["attributes"] = attributes_json(frame, keys)
    alphanum = clean_missing(raw["url_alphanum"]) if "url_alphanum" in raw else frame["id"].where(False)
    candidates = [frame["id"] + ext for ext in (".jpg", "", ".png", ".jpeg")] + [alphanum]
    frame["image_path"] = match_images(candidates, index_files(root, any_suffix=True))
    expected = frame["id"] + ".jpg (or " + frame["id"] + ", .png, url_alphanum)"
    kept, skipped = drop_missing_images(frame, name, meta, root, strict, expected, row_labels(frame, meta, "md5hash"))
    return finish(name, kept), skipped


def load_ddi(root: str | Path, strict: bool = True) -> Loaded:
    """DDI: ddi_metadata.csv (skin_tone pairs 12/34/56) + <DDI_file> anywhere below root."""
    name = "ddi"
    root = require_root(name, root)
    meta = find_file(name, root, ["ddi_metadata.csv", "*/ddi_metadata.csv"], "metadata file ddi_metadata.csv")
    raw = read_text_table(meta, name)
    require_columns(raw, ["DDI_ID", "DDI_file", "skin_tone", "malignant", "disease"], meta, name)
    frame = pd.DataFrame({"id": require_ids(raw["DDI_ID"], meta, name, "DDI_ID")})
    files = require_ids(raw["DDI_file"], meta, name, "DDI_file")
    frame["label_raw"] = clean_missing(raw["disease"])
    frame["skin_tone"] = clean_missing(raw["skin_tone"])
    frame["fitzpatrick_pair"] = frame["skin_tone"].map(DDI_PAIRS).astype("string")
    frame["malignant"] = to_bool(raw["malignant"])
    frame["ddi_file"] = files
    frame["attributes"] = attributes_json(frame, {"skin_tone": "skin_tone", "fitzpatrick_pair": "fitzpatrick_pair",
                                                  "malignant": "malignant", "ddi_file": "ddi_file"})
    frame["image_path"] = match_images([files], index_files(root))
    kept, skipped = drop_missing_images(frame, name, meta, root, strict, files, row_labels(frame, meta, "DDI_ID"))
    return finish(name, kept), skipped
