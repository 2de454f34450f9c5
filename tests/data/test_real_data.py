"""Tier 2 of the loader tests: every row of the real metadata files and the real sample images in `../shared`.

The loaders are tested everywhere on fakes in each dataset's own layout (`tests/data/test_loaders_*.py`,
`tests/fakes/layouts.py`); these tests repeat the checks on the real files, which cannot be committed. Without
`../shared/datasets` the whole module is skipped, with one message (set DERMLIB_SHARED to the shared/ folder). They
are `slow`: the all-rows checks read tens of thousands of rows.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from tests.conftest import SHARED

if not (SHARED / "datasets").is_dir():
    pytest.skip(f"tier 2 (this module): the real metadata and sample images are not at {SHARED / 'datasets'} (set "
                f"DERMLIB_SHARED to the shared/ folder); the fakes of tests/data/test_loaders_*.py test the loaders "
                f"without them",
                allow_module_level=True)

from dermlib.config import get_config  # noqa: E402
from dermlib.data import ISIC8, build_manifest, label_report, load_source  # noqa: E402
from dermlib.data.schema import validate_manifest  # noqa: E402
from dermlib.data.sources import load_with_skipped  # noqa: E402
from tests.fakes.layouts import BMP, JPEG, PNG, raw_csv, write_files  # noqa: E402
from tests.fakes.manifests import (  # noqa: E402
    BCN_MAP, DDI_MAP, FITZ_MAP, HAM_MAP, ISIC2020_MAP, PAD_MAP, attrs, check_manifest, check_note_fields, counts,
    derm7pt_class,
)


@pytest.fixture(scope="session")
def dataset_root(shared_metadata: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Path]]:
    """make(name, *metadata): a temporary dataset folder holding copies of real metadata files (paths relative to
    shared_metadata). Every folder is removed at the end: tens of thousands of links must not stay in /tmp."""
    made: list[Path] = []

    def make(name: str, *metadata: str) -> Path:
        root = tmp_path_factory.mktemp(name)
        made.append(root)
        for rel in metadata:
            shutil.copy(shared_metadata / rel, root)
        return root

    yield make
    for root in made:
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------- tier 2: all rows of the real metadata

# ---------------------------------------------------------------- HAM10000

@pytest.fixture(scope="session")
def ham_root(dataset_root: Callable[..., Path]) -> Path:
    root = dataset_root("ham10000", "HAM10000/HAM10000_metadata.csv")
    ids = raw_csv(root / "HAM10000_metadata.csv")["image_id"]
    part = (ids.str[5:].astype(int) >= 29306).map({False: "HAM10000_images_part_1", True: "HAM10000_images_part_2"})
    write_files([str(root / p / f"{i}.jpg") for p, i in zip(part, ids)], JPEG)
    return root


@pytest.mark.slow
def test_ham10000_all_rows(ham_root: Path, shared_metadata: Path, tmp_path: Path) -> None:
    raw = raw_csv(ham_root / "HAM10000_metadata.csv")
    m = load_source("ham10000", ham_root)
    check_manifest(m, "ham10000")
    check_note_fields(m, "ham10000")
    assert len(m) == len(raw) == 10015
    assert counts(m["label"]) == counts(raw["dx"].map(HAM_MAP))
    assert m["sex"].isna().sum() == (raw["sex"] == "unknown").sum() == 57
    assert m["age"].isna().sum() == (raw["age"] == "").sum()
    assert m["site"].isna().sum() == (raw["localization"] == "unknown").sum()
    assert m["lesion_id"].tolist() == raw["lesion_id"].tolist() and m["patient_id"].isna().all()
    a = attrs(m)
    assert counts(a["dx_type"]) == counts(raw["dx_type"])
    assert (a["isic_id"] == raw["image_id"]).all()
    assert m["image_path"].str.contains("HAM10000_images_part_2").sum() == (raw["image_id"] >= "ISIC_0029306").sum()
    # the Dataverse variant (no extension, 8th column `dataset`)
    for part in ("HAM10000_images_part_1", "HAM10000_images_part_2"):
        os.symlink(ham_root / part, tmp_path / part)  # symlinked image folders are followed
    shutil.copy(shared_metadata / "HAM10000" / "dataverse_variant" / "HAM10000_metadata", tmp_path)
    m = load_source("ham10000", tmp_path)
    raw = raw_csv(tmp_path / "HAM10000_metadata")
    assert len(m) == 10015 and counts(attrs(m)["dataset"]) == counts(raw["dataset"])


def test_real_sample_images(shared_samples: Path) -> None:
    m = load_source("ham10000", shared_samples / "HAM10000")
    check_manifest(m, "ham10000")
    assert len(m) == 35 and counts(m["label"]) == {c: 5 for c in ["AK", "BCC", "BKL", "DF", "MEL", "NV", "VASC"]}
    for path in m["image_path"]:
        with Image.open(path) as img:
            assert img.size == (600, 450)
    m = load_source("pad_ufes_20", shared_samples / "PAD-UFES-20")
    check_manifest(m, "pad_ufes_20")
    raw = raw_csv(shared_samples / "PAD-UFES-20" / "metadata.csv")
    assert len(m) == 15 and counts(m["label"]) == counts(raw["diagnostic"].map(PAD_MAP))
    assert counts(m["fitzpatrick"].astype("string")) == counts(raw["fitspatrick"].replace("", pd.NA).str[:1])
    biopsed = attrs(m)["biopsed"]
    assert biopsed.map(type).eq(bool).all() and biopsed.sum() == (raw["biopsed"] == "True").sum()


# ---------------------------------------------------------------- PAD-UFES-20

@pytest.fixture(scope="session")
def pad_root(dataset_root: Callable[..., Path]) -> Path:
    root = dataset_root("pad", "PAD-UFES-20/metadata.csv")
    names = raw_csv(root / "metadata.csv")["img_id"]
    write_files([str(root / "images" / f"imgs_part_{i % 3 + 1}" / n) for i, n in enumerate(names)], PNG)
    return root


@pytest.mark.slow
def test_pad_ufes_20_all_rows_across_image_parts(pad_root: Path) -> None:
    raw = raw_csv(pad_root / "metadata.csv")
    m = load_source("pad_ufes_20", pad_root)
    check_manifest(m, "pad_ufes_20")
    check_note_fields(m, "pad_ufes_20")
    assert len(m) == len(raw) == 2298 and m["label"].notna().all()
    assert counts(m["label"]) == counts(raw["diagnostic"].map(PAD_MAP))
    assert m["sex"].isna().sum() == (raw["gender"] == "").sum() == 804
    assert counts(m["fitzpatrick"].astype("string")) == counts(raw["fitspatrick"].replace("", pd.NA))
    assert (m["patient_id"] == "pad_ufes_20/" + raw["patient_id"]).all()
    assert m["image_path"].str.contains("imgs_part_3").sum() == len(raw) // 3
    a = attrs(m)
    assert a["smoke"].eq(True).sum() == (raw["smoke"] == "TRUE").sum() and a["smoke"].isna().sum() == 804
    assert a["itch"].isna().sum() == (raw["itch"] == "UNK").sum() == 6  # UNK is missing, not a third value
    assert a["diameter_2_mm"].eq(1.2).sum() == 1
    assert "BRASIL" not in set(a["background_father"].dropna())


# ---------------------------------------------------------------- ISIC 2019 / 2020, BCN20000

@pytest.fixture(scope="session")
def isic2019_root(dataset_root: Callable[..., Path]) -> Path:
    root = dataset_root("isic2019", "ISIC2019/ISIC_2019_Training_GroundTruth.csv",
                        "ISIC2019/ISIC_2019_Training_Metadata.csv")
    ids = raw_csv(root / "ISIC_2019_Training_GroundTruth.csv")["image"]
    write_files([str(root / "ISIC_2019_Training_Input" / f"{i}.jpg") for i in ids], JPEG)
    return root


@pytest.mark.slow
def test_isic2019_all_rows_one_hot(isic2019_root: Path, tmp_path: Path) -> None:
    gt = raw_csv(isic2019_root / "ISIC_2019_Training_GroundTruth.csv")
    meta = raw_csv(isic2019_root / "ISIC_2019_Training_Metadata.csv")
    m = load_source("isic2019", isic2019_root)
    check_manifest(m, "isic2019")
    check_note_fields(m, "isic2019")
    assert len(m) == len(gt) == 25331
    assert counts(m["label"]) == {c: int((gt[c] == "1.0").sum()) for c in ISIC8}
    assert m["sex"].isna().sum() == (meta["sex"] == "").sum() == 384
    assert m["lesion_id"].isna().sum() == (meta["lesion_id"] == "").sum() == 2084
    assert m["site"].isna().sum() == (meta["anatom_site_general"] == "").sum()
    assert not attrs(m)["isic_id"].str.contains("downsampled").any()
    # older copies name the last metadata column `gender`
    root = tmp_path / "isic2019"
    root.mkdir()
    os.symlink(isic2019_root / "ISIC_2019_Training_Input", root / "ISIC_2019_Training_Input")  # symlinks are followed
    shutil.copy(isic2019_root / "ISIC_2019_Training_GroundTruth.csv", root)
    header, rest = (isic2019_root / "ISIC_2019_Training_Metadata.csv").read_bytes().split(b"\n", 1)
    assert header.rstrip(b"\r").endswith(b",sex")
    (root / "ISIC_2019_Training_Metadata.csv").write_bytes(header.replace(b",sex", b",gender") + b"\n" + rest)
    m = load_source("isic2019", root)
    assert len(m) == 25331 and m["sex"].notna().sum() == 25331 - 384


@pytest.fixture(scope="session")
def isic2020_root(dataset_root: Callable[..., Path]) -> Path:
    root = dataset_root("isic2020", "ISIC2020/ISIC_2020_Training_GroundTruth.csv",
                        "ISIC2020/ISIC_2020_Training_Duplicates.csv")
    ids = raw_csv(root / "ISIC_2020_Training_GroundTruth.csv")["image_name"]
    write_files([str(root / "train" / f"{i}.jpg") for i in ids], JPEG)
    return root


@pytest.mark.slow
def test_isic2020_v1_then_v2_ground_truth(isic2020_root: Path, shared_metadata: Path) -> None:
    raw = raw_csv(isic2020_root / "ISIC_2020_Training_GroundTruth.csv")
    m = load_source("isic2020", isic2020_root)
    check_manifest(m, "isic2020")
    check_note_fields(m, "isic2020")
    assert len(m) == len(raw) == 33126
    assert counts(m["label"]) == counts(raw["diagnosis"].map(ISIC2020_MAP))
    assert m["label_raw"].isna().sum() == (raw["diagnosis"] == "unknown").sum() == 27124
    assert (m["patient_id"] == raw["patient_id"]).all() and m["lesion_id"].isna().all()
    assert m["age"].isna().sum() == (raw["age_approx"] == "").sum()
    dups = raw_csv(isic2020_root / "ISIC_2020_Training_Duplicates.csv")
    dup_ids = set(dups["image_name_1"]) | set(dups["image_name_2"])
    assert attrs(m)["duplicate_of"].notna().sum() == len(dup_ids)
    report = label_report(m).set_index("reason")["n"]
    assert report["no label in the source"] == 27124
    assert report["label has no ISIC8 class (label_map.csv)"].sum() == len(raw) - 27124 - m["label"].notna().sum()
    shutil.copy(shared_metadata / "ISIC2020" / "ISIC_2020_Training_GroundTruth_v2.csv", isic2020_root)
    try:
        v2 = load_source("isic2020", isic2020_root)
    finally:
        (isic2020_root / "ISIC_2020_Training_GroundTruth_v2.csv").unlink()
    raw2 = raw_csv(shared_metadata / "ISIC2020" / "ISIC_2020_Training_GroundTruth_v2.csv")
    assert len(v2) == 33126 and (v2["lesion_id"] == raw2["lesion_id"]).all()
    assert counts(v2["label"]) == counts(m["label"]) and (v2["age"] == m["age"]).fillna(True).all()


@pytest.fixture(scope="session")
def bcn_root(dataset_root: Callable[..., Path]) -> Path:
    root = dataset_root("bcn20000", "BCN20000/bcn20000_metadata_2025-05-22.csv")
    ids = raw_csv(root / "bcn20000_metadata_2025-05-22.csv")["isic_id"]
    write_files([str(root / f"{i}.jpg") for i in ids], JPEG)
    return root


@pytest.mark.slow
def test_bcn20000_all_rows(bcn_root: Path) -> None:
    raw = raw_csv(bcn_root / "bcn20000_metadata_2025-05-22.csv")
    m = load_source("bcn20000", bcn_root)
    check_manifest(m, "bcn20000")
    check_note_fields(m, "bcn20000")
    assert len(m) == len(raw) == 18946
    specific = raw["diagnosis_3"].where(raw["diagnosis_3"] != "", raw["diagnosis_2"])
    assert counts(m["label"]) == counts(specific.map(BCN_MAP))
    assert m["label_raw"].isna().sum() == (raw["diagnosis_2"] == "").sum() == 1156
    assert counts(m["label_raw"].where(m["label"].isna())) == {"Scar": 314}
    assert (m["lesion_id"] == raw["lesion_id"]).all() and m["sex"].isna().sum() == 117
    a = attrs(m)
    assert a["melanocytic"].eq(True).sum() == (raw["melanocytic"] == "True").sum()


# ---------------------------------------------------------------- Derm7pt, PH2

@pytest.fixture(scope="session")
def derm7pt_root(shared_metadata: Path, dataset_root: Callable[..., Path]) -> Path:
    root = dataset_root("derm7pt")
    shutil.copytree(shared_metadata / "Derm7pt" / "meta", root / "release_v0" / "meta")
    raw = raw_csv(root / "release_v0" / "meta" / "meta.csv")
    paths = pd.concat([raw["derm"], raw["clinic"]]).drop_duplicates()
    folders = paths.str.split("/").str[0]
    on_disk = folders.groupby(folders.str.lower()).agg(lambda f: f.value_counts().index[0])  # FCl/ exists as FCL/
    files = folders.str.lower().map(on_disk) + "/" + paths.str.split("/").str[1]
    write_files([str(root / "release_v0" / "images" / f) for f in files], JPEG)
    return root


@pytest.mark.slow
def test_derm7pt_both_views_case_insensitive(derm7pt_root: Path) -> None:
    raw = raw_csv(derm7pt_root / "release_v0" / "meta" / "meta.csv")
    derm = load_source("derm7pt_derm", derm7pt_root)
    check_manifest(derm, "derm7pt_derm")
    check_note_fields(derm, "derm7pt_derm")
    assert len(derm) == len(raw) == 1011
    assert counts(derm["label"]) == counts(raw["diagnosis"].map(derm7pt_class))
    fcl = derm.loc[derm["sample_id"] == "derm7pt_derm/" + raw.loc[raw["derm"] == "FCl/Fcl068.jpg", "case_num"].iloc[0]]
    assert fcl["image_path"].iloc[0].endswith(os.path.join("FCL", "Fcl068.jpg"))
    a = attrs(derm)
    assert counts(a["derm7pt_split"]) == {"train": 413, "valid": 203, "test": 395}
    assert counts(a["blue_whitish_veil"]) == counts(raw["blue_whitish_veil"])
    assert (a["seven_point_score"] == raw["seven_point_score"].astype(int)).all()
    clinic, skipped = load_with_skipped("derm7pt_clinic", derm7pt_root)
    check_manifest(clinic, "derm7pt_clinic")
    check_note_fields(clinic, "derm7pt_clinic")
    reused = raw["clinic"] == raw["derm"]
    assert len(clinic) == len(raw) - reused.sum() == 1002
    assert sorted(skipped["sample_id"]) == sorted("derm7pt_clinic/" + raw.loc[reused, "case_num"])
    assert set(clinic["lesion_id"]) <= set(derm["lesion_id"])  # both views of a case share the grouping key


@pytest.fixture(scope="session")
def ph2_root(shared_metadata: Path, dataset_root: Callable[..., Path]) -> Path:
    root = dataset_root("ph2") / "PH2Dataset"
    root.mkdir()
    shutil.copy(shared_metadata / "PH2" / "PH2_dataset.xlsx", root)
    sheet = pd.read_excel(root / "PH2_dataset.xlsx", header=None, dtype=str)
    names = sheet.iloc[13:, 0].dropna().str.strip()
    base = root / "PH2 Dataset images"
    write_files([str(base / n / f"{n}_Dermoscopic_Image" / f"{n}.bmp") for n in names], BMP)
    write_files([str(base / n / f"{n}_lesion" / f"{n}_lesion.bmp") for n in names], BMP)
    return root


@pytest.mark.slow
def test_ph2_workbook_all_rows(ph2_root: Path) -> None:
    sheet = pd.read_excel(ph2_root / "PH2_dataset.xlsx", header=None, dtype=str).iloc[13:]
    m = load_source("ph2", ph2_root.parent)
    check_manifest(m, "ph2")
    check_note_fields(m, "ph2")
    assert len(m) == len(sheet) == 200
    assert counts(m["label"]) == {"NV": int(sheet[[2, 3]].eq("X").sum().sum()), "MEL": int(sheet[4].eq("X").sum())}
    expected = [os.path.join(f"{n}_Dermoscopic_Image", f"{n}.bmp") for n in m["sample_id"].str[4:]]
    assert all(p.endswith(e) for p, e in zip(m["image_path"], expected))
    a = attrs(m)
    assert a["colors"].map(lambda c: "black" in c).sum() == sheet[16].eq("X").sum()
    assert a["colors"].map(lambda c: "light brown" in c).sum() == sheet[13].eq("X").sum()
    assert counts(a["streaks"]) == counts(sheet[8].map({"A": "absent", "P": "present"}))
    assert counts(a["asymmetry"].astype(str)) == counts(sheet[5]) and a["asymmetry"].map(type).eq(int).all()


# ---------------------------------------------------------------- Fitzpatrick17k, DDI

@pytest.fixture(scope="session")
def fitz_root(dataset_root: Callable[..., Path]) -> Path:
    root = dataset_root("fitzpatrick17k", "Fitzpatrick17k/fitzpatrick17k.csv")
    raw = raw_csv(root / "fitzpatrick17k.csv")
    names = [[f"{h}.jpg", h, a][i % 3] for i, (h, a) in enumerate(zip(raw["md5hash"], raw["url_alphanum"]))]
    write_files([str(root / "data" / "finalfitz17k" / n) for n in names], JPEG)  # all three naming conventions
    return root


@pytest.mark.slow
def test_fitzpatrick17k_all_rows_both_releases(fitz_root: Path, shared_metadata: Path, tmp_path: Path) -> None:
    raw = raw_csv(fitz_root / "fitzpatrick17k.csv")
    m = load_source("fitzpatrick17k", fitz_root)
    check_manifest(m, "fitzpatrick17k")
    check_note_fields(m, "fitzpatrick17k")
    assert len(m) == len(raw) == 16577
    assert counts(m["label"]) == counts(raw["label"].map(FITZ_MAP))
    assert m.loc[raw["three_partition_label"] == "non-neoplastic", "label"].isna().all()
    assert m["fitzpatrick"].isna().sum() == (raw["fitzpatrick_scale"] == "-1").sum() == 565
    report = label_report(m)
    assert report["n"].sum() == len(raw) - raw["label"].isin(list(FITZ_MAP)).sum()
    assert (report["reason"] == "label has no ISIC8 class (label_map.csv)").all()  # every raw label is in the table
    old = tmp_path / "fitz2021"
    old.mkdir()
    shutil.copy(shared_metadata / "Fitzpatrick17k" / "v2021_initial" / "fitzpatrick17k.csv", old)
    os.rename(fitz_root / "data", old / "data")
    try:
        m2 = load_source("fitzpatrick17k", old)
    finally:
        os.rename(old / "data", fitz_root / "data")
    assert len(m2) == 16577 and counts(m2["label"]) == counts(m["label"])


@pytest.fixture(scope="session")
def ddi_root(dataset_root: Callable[..., Path]) -> Path:
    root = dataset_root("ddi", "DDI/ddi_metadata.csv")
    write_files([str(root / f) for f in raw_csv(root / "ddi_metadata.csv")["DDI_file"]], PNG)
    return root


@pytest.mark.slow
def test_ddi_all_rows_skin_tone_pairs(ddi_root: Path) -> None:
    raw = raw_csv(ddi_root / "ddi_metadata.csv")
    m = load_source("ddi", ddi_root)
    check_manifest(m, "ddi")
    check_note_fields(m, "ddi")
    assert len(m) == len(raw) == 656 and m["fitzpatrick"].isna().all()
    assert counts(m["label"]) == counts(raw["disease"].map(DDI_MAP))
    a = attrs(m)
    assert counts(a["fitzpatrick_pair"]) == counts(raw["skin_tone"].map({"12": "I-II", "34": "III-IV", "56": "V-VI"}))
    assert a["malignant"].sum() == (raw["malignant"] == "True").sum()


@pytest.mark.slow
def test_build_manifest_drops_counts_and_dedupes(ham_root: Path, isic2019_root: Path, bcn_root: Path,
                                                 shared_samples: Path, tmp_path: Path) -> None:
    write_files([str(tmp_path / "datasets" / "med_node" / "naevus" / f"{i}.jpg") for i in range(3)], JPEG)
    cfg = get_config("paper", {"data.sources": ["ham10000", "bcn20000", "isic2019", "pad_ufes_20", "med_node"],
                               "data.roots.ham10000": str(ham_root), "data.roots.bcn20000": str(bcn_root),
                               "data.roots.isic2019": str(isic2019_root),
                               "data.roots.pad_ufes_20": str(shared_samples / "PAD-UFES-20"),
                               "work_dir": str(tmp_path)})
    manifest, report = build_manifest(cfg)
    validate_manifest(manifest)
    assert manifest["label"].notna().all() and manifest["split"].isna().all()
    ham = raw_csv(ham_root / "HAM10000_metadata.csv")
    bcn = raw_csv(bcn_root / "bcn20000_metadata_2025-05-22.csv")
    bcn_kept = bcn.loc[bcn["diagnosis_3"].where(bcn["diagnosis_3"] != "", bcn["diagnosis_2"]).isin(BCN_MAP), "isic_id"]
    gt = raw_csv(isic2019_root / "ISIC_2019_Training_GroundTruth.csv")
    isic_dup = gt["image"].isin(set(ham["image_id"]) | set(bcn_kept))
    per_source = manifest["source"].value_counts()
    assert per_source["ham10000"] == 10015 and per_source["bcn20000"] == len(bcn_kept)
    assert per_source["isic2019"] == len(gt) - isic_dup.sum() and per_source["med_node"] == 3
    assert per_source["pad_ufes_20"] == 15
    dup = report[report["reason"].str.startswith("same ISIC image")]
    assert dup["source"].unique().tolist() == ["isic2019"] and dup["n"].sum() == isic_dup.sum()
    bcn_out = report[report["source"] == "bcn20000"].set_index("reason")["n"]
    assert bcn_out.sum() == len(bcn) - len(bcn_kept)
    assert len(manifest) + report["n"].sum() == 10015 + len(bcn) + len(gt) + 15 + 3  # every row accounted for
