"""Checks shared by the loader tests (tests/data/) on the fakes and on the real files: the manifest schema, the
ISIC8 maps written out independently of dermlib/data/label_map.csv, and what notes may say about a loaded row."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pandas as pd

from dermlib.data import ISIC8, SOURCES, label_report
from dermlib.data.schema import MANIFEST_COLUMNS, SITES, validate_manifest
from dermlib.notes.fields import field_rule, flat_attributes, metadata_fields

EXCLUDED, UNKNOWN, MISSING = ("label has no ISIC8 class (label_map.csv)", "label not in label_map.csv",
                              "no label in the source")

HAM_MAP = {"akiec": "AK", "bcc": "BCC", "bkl": "BKL", "df": "DF", "mel": "MEL", "nv": "NV", "vasc": "VASC"}
PAD_MAP = {"ACK": "AK", "BCC": "BCC", "MEL": "MEL", "NEV": "NV", "SCC": "SCC", "SEK": "BKL"}
BCN_MAP = {"Nevus": "NV", "Melanoma, NOS": "MEL", "Melanoma metastasis": "MEL", "Basal cell carcinoma": "BCC",
           "Seborrheic keratosis": "BKL", "Solar lentigo": "BKL", "Solar or actinic keratosis": "AK",
           "Squamous cell carcinoma, NOS": "SCC", "Dermatofibroma": "DF",
           "Benign soft tissue proliferations - Vascular": "VASC"}
ISIC2020_MAP = {"nevus": "NV", "melanoma": "MEL", "seborrheic keratosis": "BKL", "lentigo NOS": "BKL",
                "lichenoid keratosis": "BKL", "solar lentigo": "BKL"}
FITZ_MAP = {"melanoma": "MEL", "malignant melanoma": "MEL", "superficial spreading melanoma ssm": "MEL",
            "lentigo maligna": "MEL", "basal cell carcinoma": "BCC", "basal cell carcinoma morpheiform": "BCC",
            "solid cystic basal cell carcinoma": "BCC", "squamous cell carcinoma": "SCC", "actinic keratosis": "AK",
            "seborrheic keratosis": "BKL", "dermatofibroma": "DF", "nevocytic nevus": "NV", "congenital nevus": "NV",
            "halo nevus": "NV", "pyogenic granuloma": "VASC", "granuloma pyogenic": "VASC"}
DDI_MAP = {"melanoma": "MEL", "melanoma-acral-lentiginous": "MEL", "melanoma-in-situ": "MEL",
           "nodular-melanoma-(nm)": "MEL", "basal-cell-carcinoma": "BCC", "basal-cell-carcinoma-nodular": "BCC",
           "basal-cell-carcinoma-superficial": "BCC", "squamous-cell-carcinoma": "SCC",
           "squamous-cell-carcinoma-keratoacanthoma": "SCC", "squamous-cell-carcinoma-in-situ": "AK",
           "actinic-keratosis": "AK", "seborrheic-keratosis": "BKL", "seborrheic-keratosis-irritated": "BKL",
           "benign-keratosis": "BKL", "lichenoid-keratosis": "BKL", "solar-lentigo": "BKL", "dermatofibroma": "DF",
           "melanocytic-nevi": "NV", "dysplastic-nevus": "NV", "blue-nevus": "NV",
           "pigmented-spindle-cell-nevus-of-reed": "NV", "angioma": "VASC", "arteriovenous-hemangioma": "VASC",
           "pyogenic-granuloma": "VASC"}


def derm7pt_class(diagnosis: str) -> str | None:
    """The ISIC8 class of a Derm7pt diagnosis, written independently of label_map.csv."""
    if "melanoma" in diagnosis:
        return "MEL"
    if diagnosis.endswith("nevus"):
        return "NV"
    return {"basal cell carcinoma": "BCC", "seborrheic keratosis": "BKL", "lentigo": "BKL", "dermatofibroma": "DF",
            "vascular lesion": "VASC"}.get(diagnosis)


def values(series: pd.Series) -> list:
    """A column as a plain list, every kind of missing value (NA, NaN, None) as None."""
    return [None if not isinstance(v, list) and pd.isna(v) else v for v in series.astype(object)]


def report_of(manifest: pd.DataFrame) -> set[tuple]:
    """label_report as a set of (label_raw, reason, n), NA label_raw as None."""
    report = label_report(manifest)
    return {(None if pd.isna(r) else r, why, int(n)) for r, why, n in zip(report["label_raw"], report["reason"],
                                                                          report["n"])}


def image_names(manifest: pd.DataFrame, depth: int = 1) -> list[str]:
    """The last `depth` parts of each image path, joined with '/'."""
    return ["/".join(Path(p).parts[-depth:]) for p in manifest["image_path"]]


def counts(series: pd.Series) -> dict[str, int]:
    return {str(k): int(v) for k, v in series.dropna().value_counts().items()}


def attrs(manifest: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame([json.loads(t) for t in manifest["attributes"]], index=manifest.index)


def check_manifest(manifest: pd.DataFrame, source: str) -> None:
    """Schema, unique ids, no missing-value strings, vocabularies."""
    assert list(manifest.columns) == MANIFEST_COLUMNS
    validate_manifest(manifest)
    assert manifest["sample_id"].is_unique
    assert manifest["sample_id"].str.startswith(source + "/").all()
    assert (manifest["source"] == source).all() and (manifest["modality"] == SOURCES[source].modality).all()
    assert manifest["split"].isna().all() and manifest["partition"].isna().all()
    for col in ("label_raw", "sex", "site", "patient_id", "lesion_id"):
        missing = ["unknown", "nan", "none", ""] + ([] if (col, source) == ("label_raw", "isic2019") else ["unk"])
        assert not manifest[col].str.strip().str.lower().isin(missing).any(), col  # ISIC 2019's UNK is a class
    assert manifest["site"].dropna().isin(SITES).all()
    assert manifest["label"].dropna().isin(ISIC8).all()
    assert manifest["fitzpatrick"].dropna().between(1, 6).all()
    assert manifest["image_path"].map(os.path.isfile).all()


_LEAK = re.compile(r"https?://|www\.|\.(?:jpe?g|png|bmp|tiff?)\b|\bISIC_\d{5,}|licen[cs]e|\bCC[- ]BY|copyright|"
                   r"\bimg_\d|\bPAT_\d", re.IGNORECASE)


def check_note_fields(manifest: pd.DataFrame, source: str) -> None:
    """Every attribute a loader keeps is decided in note_fields.csv, and the note fields never contain an image /
    lesion / patient id, a URL, a file name or licence text (run on the fakes and on all rows of the real files)."""
    keys = {k for text in manifest["attributes"].dropna().unique() for k in flat_attributes(json.loads(text))}
    undecided = sorted(k for k in keys if field_rule(source, k) is None)
    assert not undecided, f"{source}: decide these attributes in dermlib/notes/note_fields.csv: {undecided}"
    ids = {str(v).split("/")[-1].lower() for col in ("lesion_id", "patient_id") for v in manifest[col].dropna()}
    ids |= {s.split("/", 1)[1].lower() for s in manifest["sample_id"]}
    ids = {i for i in ids if re.search(r"[a-z]", i) or len(i) >= 6}  # "55" may be an age, not Derm7pt's case 55
    used = 0
    for _, row in manifest.iterrows():
        fields = metadata_fields(row)
        used += "source_findings" in fields
        for name, value in fields.items():
            assert not _LEAK.search(value), (row["sample_id"], name, value)
            words = set(re.split(r"[\s;:,()]+", value.lower()))
            assert not words & ids, (row["sample_id"], name, words & ids)
    expect_findings = source in ("pad_ufes_20", "derm7pt_derm", "derm7pt_clinic", "ph2", "bcn20000")
    assert (used > 0) == expect_findings, (source, used)
