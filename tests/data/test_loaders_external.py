"""The loaders of the external clinical sets: Fitzpatrick17k and DDI on the invented metadata of
tests/fakes/layouts.py; SKINL2 and MED-NODE (no public label files) on folders laid out here."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from dermlib.data import label_report, load_source
from tests.fakes.layouts import JPEG, PNG, raw_csv, write_files
from tests.fakes.manifests import EXCLUDED, attrs, check_manifest, counts, image_names, report_of, values


def test_fitzpatrick17k_fake_rows_both_releases(fake_root: Callable[[str], Path], fake_metadata: Path,
                                                tmp_path: Path) -> None:
    root = fake_root("fitzpatrick17k")
    hashes = [f"0f17a00000000000000000000000000{i}" for i in range(1, 7)]
    images = root / "data" / "finalfitz17k"
    os.rename(images / f"{hashes[1]}.jpg", images / hashes[1])  # as the official train.py opens it
    alphanum = raw_csv(root / "fitzpatrick17k.csv")["url_alphanum"][2]
    os.rename(images / f"{hashes[2]}.jpg", images / alphanum)
    m = load_source("fitzpatrick17k", root)
    check_manifest(m, "fitzpatrick17k")
    assert values(m["sample_id"]) == ["fitzpatrick17k/" + h for h in hashes]
    assert values(m["label"]) == ["MEL", "BCC", None, "BKL", "VASC", "NV"]
    assert values(m["fitzpatrick"]) == [3, None, 5, 2, 6, 1]  # -1 is unknown
    a = attrs(m)
    assert values(a["fitzpatrick_centaur"]) == ["3", "2", None, "2", "5", "1"]
    assert values(a["qc"]) == [None, "1 Diagnostic", None, "3 Wrongly labelled", None, None]
    assert values(a["url"])[3] is None and values(a["nine_partition_label"])[2] == "inflammatory"
    # the three file-name conventions: <md5>.jpg, <md5>, <url_alphanum>
    assert image_names(m)[:3] == [hashes[0] + ".jpg", hashes[1], alphanum]
    assert alphanum == "httpsatlasexampleorgimgpsoriasis3jpg.jpg"
    assert report_of(m) == {("psoriasis", EXCLUDED, 1)}
    old = tmp_path / "fitz2021"
    old.mkdir()
    shutil.copy(fake_metadata / "Fitzpatrick17k" / "v2021_initial" / "fitzpatrick17k.csv", old)
    os.symlink(root / "data", old / "data")
    m2 = load_source("fitzpatrick17k", old)  # column `fitzpatrick`, unnamed index with repeated values
    assert values(m2["label"]) == values(m["label"]) and values(m2["fitzpatrick"]) == values(m["fitzpatrick"])
    # a repeated md5hash names both lines
    meta = root / "fitzpatrick17k.csv"
    lines = meta.read_text().splitlines()
    meta.write_text("\n".join(lines + [lines[1]]) + "\n")
    with pytest.raises(ValueError, match=rf"lines 2, 8 repeat md5hash '{hashes[0]}'"):
        load_source("fitzpatrick17k", root)


def test_ddi_fake_rows(fake_root: Callable[[str], Path]) -> None:
    root = fake_root("ddi")
    m = load_source("ddi", root)
    check_manifest(m, "ddi")
    assert values(m["sample_id"]) == [f"ddi/{i}" for i in range(1, 7)]
    assert values(m["label"]) == ["MEL", "BKL", "BCC", None, "AK", "NV"]  # SCC in situ is AK
    assert m["fitzpatrick"].isna().all()  # a pair is not one type
    a = attrs(m)
    assert values(a["fitzpatrick_pair"]) == ["I-II", "III-IV", "V-VI", "V-VI", "I-II", "III-IV"]
    assert values(a["skin_tone"]) == ["12", "34", "56", "56", "12", "34"]
    assert values(a["malignant"]) == [True, False, True, False, True, False]
    assert image_names(m) == [f"00090{i}.png" for i in range(1, 7)]
    assert report_of(m) == {("verruca-vulgaris", EXCLUDED, 1)}
    meta = root / "ddi_metadata.csv"
    meta.write_text(meta.read_text().replace("3,4,000904.png", "3,,000904.png"))
    with pytest.raises(ValueError, match=r"ddi: .*ddi_metadata\.csv line 5 has an empty DDI_ID"):
        load_source("ddi", root)


def test_skinl2_v1_and_v2_layouts(tmp_path: Path) -> None:
    cats = {"Melanoma": 3, "Nevus": 4, "Basal-cell Carcinoma": 2, "Seborrheic Keratosis": 2, "Hemangioma": 1,
            "Dermatofibroma": 1, "Psoriasis": 2, "Other": 1}
    files, lesion = [], 0
    for cat, n in cats.items():
        for _ in range(n):
            lesion += 1
            files.append(str(tmp_path / "SKINL2_v1" / "Dermatoscopic" / cat / f"{lesion:04d}_Dermatoscopic.png"))
            files.append(str(tmp_path / "SKINL2_v1" / "Central View" / cat / f"{lesion:04d}" / "a_TotalFocus.png"))
    for lesion, cat in ((301, "Melanoma"), (302, "Nevus"), (303, "Others")):
        folder = tmp_path / "SKINL2_v2" / f"{lesion:04d}" / cat / "Dermatoscopic"
        files.append(str(folder / f"{lesion:04d}_Dermatoscopic.jpg"))
    write_files(files, PNG)
    m = load_source("skinl2", tmp_path)
    check_manifest(m, "skinl2")
    assert len(m) == sum(cats.values()) + 3
    assert counts(m["label"]) == {"MEL": 4, "NV": 5, "BCC": 2, "BKL": 2, "VASC": 1, "DF": 1}
    assert counts(attrs(m)["skinl2_version"]) == {"v1": sum(cats.values()), "v2": 3}
    assert "skinl2/v2/0301" in set(m["sample_id"]) and m["lesion_id"].str.match(r"skinl2/\d{4}$").all()
    report = label_report(m)
    assert dict(zip(report["label_raw"], report["n"])) == {"Psoriasis": 2, "Other": 1, "Others": 1}


def test_med_node_folder_per_class(tmp_path: Path) -> None:
    base = tmp_path / "complete_mednode_dataset"
    write_files([str(base / "melanoma" / f"{1000 + i}.jpg") for i in range(70)], JPEG)
    write_files([str(base / "naevus" / f"{2000 + i}.jpg") for i in range(100)], JPEG)
    m = load_source("med_node", tmp_path)
    check_manifest(m, "med_node")
    assert counts(m["label"]) == {"MEL": 70, "NV": 100} and m["label_raw"].isin(["melanoma", "naevus"]).all()
    with pytest.raises(FileNotFoundError, match=r"no melanoma/ or naevus/ folder.*cs\.rug\.nl"):
        load_source("med_node", base / "melanoma")
