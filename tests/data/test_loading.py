"""What every loader shares (dermlib.data.loading): a missing folder, file or column, an absent image, an Excel BOM,
an empty or header-only file and repeated rows are each named with the file, the line and the fix."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from dermlib.data import load_source
from dermlib.data.sources import load_with_skipped
from tests.fakes.layouts import raw_csv
from tests.fakes.manifests import values


def test_missing_root_names_folder_and_download(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"ham10000: dataset folder .*nope does not exist.*doi\.org/10\.7910"):
        load_source("ham10000", tmp_path / "nope")
    with pytest.raises(ValueError, match="unknown source 'ham'"):
        load_source("ham", tmp_path)


def test_missing_metadata_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"GroundTruth\.csv not found.*challenge\.isic-archive"):
        load_source("isic2019", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"meta/meta\.csv not found.*derm\.cs\.sfu\.ca"):
        load_source("derm7pt_derm", tmp_path)


def test_missing_column_names_file_and_column(fake_samples: Path, tmp_path: Path) -> None:
    shutil.copytree(fake_samples / "PAD-UFES-20", tmp_path / "pad")
    meta = raw_csv(tmp_path / "pad" / "metadata.csv").drop(columns="diagnostic")
    meta.to_csv(tmp_path / "pad" / "metadata.csv", index=False)
    with pytest.raises(ValueError, match=r"pad_ufes_20: .*metadata\.csv has no column\(s\) \['diagnostic'\]"):
        load_source("pad_ufes_20", tmp_path / "pad")


def test_absent_image_strict_error_or_counted_skip(fake_samples: Path, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "ham"
    shutil.copytree(fake_samples / "HAM10000", root)
    gone = "ISIC_0025500"  # line 6 of the fake HAM10000_metadata.csv
    (root / "HAM10000_images_part_1" / f"{gone}.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=rf"1 of 8 images .* line 6 \(image_id {gone}\) expects '{gone}\.jpg'"):
        load_source("ham10000", root)
    m, skipped = load_with_skipped("ham10000", root, strict=False)
    assert len(m) == 7 and skipped.to_dict("records") == [{"source": "ham10000", "sample_id": f"ham10000/{gone}",
                                                           "label_raw": "bkl", "reason": "image file missing"}]
    with caplog.at_level("WARNING", logger="dermlib.data.sources"):
        assert len(load_source("ham10000", root, strict=False)) == 7
    assert "ham10000: 1 metadata rows skipped (1 image file missing)" in caplog.text


def test_metadata_with_excel_bom_loads(fake_root: Callable[[str], Path]) -> None:
    """A metadata file re-saved by Excel as "CSV UTF-8" starts with a BOM: the first column keeps its name."""
    root = fake_root("ham10000")
    meta = root / "HAM10000_metadata.csv"
    meta.write_bytes(b"\xef\xbb\xbf" + meta.read_bytes().replace(b"\n", b"\r\n"))
    m = load_source("ham10000", root)
    assert len(m) == 8 and values(m["lesion_id"])[:3] == ["HAM_0900001", "HAM_0900001", "HAM_0900002"]


def test_empty_header_only_and_duplicate_metadata_name_file_line_and_fix(tmp_path: Path) -> None:
    root = tmp_path / "pad"
    root.mkdir()
    meta = root / "metadata.csv"
    meta.write_bytes(b"")
    with pytest.raises(ValueError, match=r"metadata.csv is empty \(0 bytes\).*pad-ufes|metadata.csv is empty"):
        load_source("pad_ufes_20", root)
    header = ("patient_id,lesion_id,smoke,drink,background_father,background_mother,age,pesticide,gender,"
              "skin_cancer_history,cancer_history,has_piped_water,has_sewage_system,fitspatrick,region,diameter_1,"
              "diameter_2,diagnostic,itch,grew,hurt,changed,bleed,elevation,img_id,biopsed\n")
    meta.write_text(header)
    with pytest.raises(ValueError, match="has a header but no rows"):
        load_source("pad_ufes_20", root)
    row = "PAT_1,1,False,False,POMERANIA,POMERANIA,55,False,FEMALE,True,True,True,True,3.0,NECK,6.0,5.0,BCC," \
          "True,True,False,True,True,True,PAT_1_1_1.png,True\n"
    meta.write_text(header + row + row.replace("PAT_1,1,", "PAT_2,2,"))
    with pytest.raises(ValueError, match=r"lines 2, 3 repeat img_id 'PAT_1_1_1.png'.*delete the extra rows"):
        load_source("pad_ufes_20", root)
