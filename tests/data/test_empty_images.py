"""Image files that are there but empty or too small to be an image (a download or copy cut short): the loaders'
strict check names them, a non-strict load skips and counts their rows, and the doctor lists each one with its path
(issue 27)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dermlib.data.__main__ import main
from dermlib.data.doctor import check_source, report
from dermlib.data.loading import MIN_IMAGE_BYTES, REASON_EMPTY_IMAGE
from dermlib.data.sources import load_with_skipped
from tests.fakes.layouts import PNG, build, write_files


def _replace(path: Path, data: bytes) -> None:
    """Put `data` at `path` as a file of its own (the layouts hard-link one image under every name)."""
    path.unlink()
    path.write_bytes(data)


def test_a_zero_byte_image_stops_a_strict_load_naming_the_file(fake_metadata: Path, tmp_path: Path) -> None:
    root = build("ham10000", fake_metadata, tmp_path / "ham")
    empty = root / "HAM10000_images_part_1" / "ISIC_0025500.jpg"  # line 6 of the fake metadata
    tiny = root / "HAM10000_images_part_2" / "ISIC_0031000.jpg"  # line 7
    _replace(empty, b"")
    _replace(tiny, b"\xff\xd8\xff")  # a JPEG cut after its first bytes
    with pytest.raises(ValueError) as info:
        load_with_skipped("ham10000", root)
    message = str(info.value)
    assert "2 of 8 image files" in message and f"under {MIN_IMAGE_BYTES} bytes" in message
    assert f"line 6 (image_id ISIC_0025500): {empty} (0 bytes)" in message and f"{tiny} (3 bytes)" in message
    assert "strict=False" in message and "doctor" in message
    manifest, skipped = load_with_skipped("ham10000", root, strict=False)
    assert len(manifest) == 6 and not manifest["image_path"].isin([str(empty), str(tiny)]).any()
    assert skipped.to_dict("records") == [
        {"source": "ham10000", "sample_id": "ham10000/ISIC_0025500", "label_raw": "bkl", "reason": REASON_EMPTY_IMAGE},
        {"source": "ham10000", "sample_id": "ham10000/ISIC_0031000", "label_raw": "bcc", "reason": REASON_EMPTY_IMAGE}]


def test_a_missing_image_is_still_named_first_and_both_are_counted(fake_metadata: Path, tmp_path: Path) -> None:
    root = build("pad_ufes_20", fake_metadata, tmp_path / "pad")
    files = sorted((root / "images").rglob("*.png"))
    files[0].unlink()
    _replace(files[1], b"")
    with pytest.raises(FileNotFoundError, match="1 of 7 images .* are missing"):
        load_with_skipped("pad_ufes_20", root)
    manifest, skipped = load_with_skipped("pad_ufes_20", root, strict=False)
    assert len(manifest) == 5 and sorted(skipped["reason"]) == sorted(["image file missing", REASON_EMPTY_IMAGE])


def test_folder_layouts_without_an_image_list_check_their_files_too(tmp_path: Path) -> None:
    base = tmp_path / "med_node" / "complete_mednode_dataset"
    write_files([str(base / "melanoma" / f"{1000 + i}.jpg") for i in range(3)], PNG)
    write_files([str(base / "naevus" / f"{2000 + i}.jpg") for i in range(3)], PNG)
    _replace(base / "naevus" / "2001.jpg", b"")
    with pytest.raises(ValueError, match=r"1 of 6 image files .*2001\.jpg \(0 bytes\)"):
        load_with_skipped("med_node", tmp_path / "med_node")
    manifest, skipped = load_with_skipped("med_node", tmp_path / "med_node", strict=False)
    assert len(manifest) == 5 and skipped["sample_id"].tolist() == ["med_node/naevus/2001"]


def test_the_doctor_reports_each_unusable_image_with_its_path(fake_metadata: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    root = build("ham10000", fake_metadata, tmp_path / "ham")
    empty = root / "HAM10000_images_part_1" / "ISIC_0024402.jpg"
    _replace(empty, b"")
    check = check_source("ham10000", root)
    assert check.status == "partial" and check.n_images == 7 and check.n_missing_images == 1
    assert check.small_files == [(str(empty), 0)]
    assert "1 image files are empty or too small to be an image" in check.problem
    assert "metadata rows have no image file" not in check.problem  # none is absent
    text = report([check])
    assert f"  0 bytes: {empty}" in text and "ham10000 (HAM10000): partial:" in text
    monkeypatch.setenv("DERMLIB_WORK", str(tmp_path / "work"))  # the other sources: missing folders there
    assert main(["doctor", "--set", f"data.roots.ham10000={root}"]) == 1
    out = capsys.readouterr().out
    assert f"  0 bytes: {empty}" in out and "ham10000 (HAM10000): partial: 1 image files are empty" in out
    empty.unlink()
    empty.write_bytes((root / "HAM10000_images_part_1" / "ISIC_0024401.jpg").read_bytes())  # replaced: ok again
    assert check_source("ham10000", root).status == "ok"
