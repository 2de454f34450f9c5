"""Preprocessing (dermlib.data.preprocess): the Otsu field-of-view crop, the box crop, awkward image files, the
cache, and rows -> cached pixels."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermlib.data import build_cache, load_cache, read_skipped, to_manifest
from dermlib.data.preprocess import bbox_crop, cached_pixels, load_rgb, otsu_box, preprocess_image

# ---------------------------------------------------------------- Otsu field-of-view crop


def _fov_image(h: int, w: int, cy: float, cx: float, r: float, seed: int = 0) -> np.ndarray:
    """A dermoscope-like frame: pinkish skin disc with a dark lesion and hair, black surround, noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.full((h, w, 3), 8.0) + rng.normal(0, 4, (h, w, 3))
    disc = np.hypot(yy - cy, xx - cx) <= r
    img[disc] = np.array([225, 170, 160]) + rng.normal(0, 6, (int(disc.sum()), 3))
    lesion = np.hypot(yy - cy - 0.1 * r, xx - cx + 0.2 * r) <= 0.45 * r
    img[lesion] = [90, 55, 40]
    img[(np.abs(yy - xx * 0.7 - 5) < 1.2) & disc] = [40, 30, 25]  # a hair across the disc
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("h,w,cy,cx,r", [(300, 400, 150, 200, 120), (256, 256, 128, 128, 100),
                                         (240, 320, 130, 150, 105), (450, 600, 225, 300, 210)])
def test_otsu_box_finds_the_field_of_view(h: int, w: int, cy: float, cx: float, r: float) -> None:
    box, found = otsu_box(_fov_image(h, w, cy, cx, r))
    expected = [cx - r, cy - r, cx + r, cy + r]
    assert found
    tol = 0.05 * max(h, w)  # the 2% margin plus the downscaled grid
    assert np.allclose(box, expected, atol=tol), (box, expected)


def test_otsu_box_keeps_images_without_a_dark_surround() -> None:
    rng = np.random.default_rng(1)
    skin = np.clip(np.array([220, 170, 150]) + rng.normal(0, 5, (200, 300, 3)), 0, 255).astype(np.uint8)
    skin[60:140, 100:200] = [80, 50, 40]  # a large dark lesion is not a field-of-view border
    assert otsu_box(skin) == ([0, 0, 300, 200], False)
    assert otsu_box(np.zeros((50, 60, 3), np.uint8)) == ([0, 0, 60, 50], False)  # degenerate: flat black


def test_real_dermoscopic_images_crop_to_a_plausible_box(shared_samples: Path) -> None:
    files = sorted((shared_samples / "HAM10000").rglob("*.jpg"))
    assert len(files) >= 30
    for path in files:
        pixels, converted = load_rgb(path)
        box, _ = otsu_box(pixels)
        h, w = pixels.shape[:2]
        assert converted is None and 0 <= box[0] < box[2] <= w and 0 <= box[1] < box[3] <= h
        assert (box[2] - box[0]) * (box[3] - box[1]) >= 0.6 * w * h, path.name  # HAM images are mostly full-field
        out, info = preprocess_image(path, "dermoscopic", {}, 48)
        assert out.shape == (48, 48, 3) and out.dtype == np.uint8 and info["orig_width"] == w


def test_real_clinical_rgba_pngs_are_converted(shared_samples: Path) -> None:
    notes = {p.name: load_rgb(p)[1] for p in sorted((shared_samples / "PAD-UFES-20" / "images").glob("*.png"))}
    rgba = [name for name in notes if Image.open(shared_samples / "PAD-UFES-20" / "images" / name).mode == "RGBA"]
    assert rgba and all(notes[name].startswith("RGBA -> RGB") for name in rgba)
    assert all(note is None for name, note in notes.items() if name not in rgba)


def test_bbox_crop_clips_and_rejects_empty_boxes() -> None:
    img = np.arange(40 * 50 * 3, dtype=np.uint32).reshape(40, 50, 3).astype(np.uint8)
    crop, box = bbox_crop(img, [10, 5, 30, 25])
    assert box == [10, 5, 30, 25] and np.array_equal(crop, img[5:25, 10:30])
    assert bbox_crop(img, [-5, -5, 80, 80])[1] == [0, 0, 50, 40]
    with pytest.raises(ValueError, match=r"bounding box \[60, 0, 70, 10\] is empty inside a 50x40 image"):
        bbox_crop(img, [60, 0, 70, 10])


# ---------------------------------------------------------------- awkward files and the cache


def _write_awkward_files(folder: Path) -> dict[str, Path]:
    """One file per awkward case, plus two ordinary ones."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = _fov_image(60, 80, 30, 40, 26)
    paths = {name: folder / f"{name}.{ext}" for name, ext in [
        ("ok_jpg", "jpg"), ("ok_png", "png"), ("grayscale", "png"), ("rgba", "png"), ("palette", "png"),
        ("gray16", "png"), ("corrupt", "jpg"), ("truncated", "jpg"), ("empty", "png"), ("tiny", "png"),
        ("missing", "jpg")]}
    Image.fromarray(rgb).save(paths["ok_jpg"], quality=95)
    Image.fromarray(rgb).save(paths["ok_png"])
    Image.fromarray(rgb).convert("L").save(paths["grayscale"])
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    rgba[:5, :5, 3] = 0
    Image.fromarray(rgba, "RGBA").save(paths["rgba"])
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=32).save(paths["palette"])
    gray16 = np.full((60, 80), 32768, np.uint16)
    gray16[:, :40] = 65535
    Image.fromarray(gray16).save(paths["gray16"])
    paths["corrupt"].write_bytes(os.urandom(2048))
    full = paths["ok_jpg"].read_bytes()
    paths["truncated"].write_bytes(full[: len(full) // 2])
    paths["empty"].write_bytes(b"")
    Image.fromarray(rgb[:4, :4]).save(paths["tiny"])
    return paths


def _manifest(paths: dict[str, Path], modality: str = "dermoscopic") -> pd.DataFrame:
    return to_manifest(pd.DataFrame({
        "sample_id": [f"t/{name}" for name in paths], "source": "t", "image_path": [str(p) for p in paths.values()],
        "modality": modality, "label_raw": "nevus", "label": "NV"}))


def test_awkward_images_are_converted_or_skipped_with_reasons(tmp_path: Path) -> None:
    paths = _write_awkward_files(tmp_path / "img")
    manifest = _manifest(paths)
    index = build_cache(manifest, tmp_path / "cache", size=24)
    skipped = read_skipped(tmp_path / "cache").set_index("sample_id")["reason"]
    assert len(index) + len(skipped) == len(manifest)  # nothing silently dropped
    assert set(skipped.index) == {"t/corrupt", "t/truncated", "t/empty", "t/tiny", "t/missing"}
    assert skipped["t/missing"].startswith("missing file:") and str(paths["missing"]) in skipped["t/missing"]
    assert skipped["t/truncated"].startswith("unreadable or truncated image")
    assert skipped["t/corrupt"].startswith("unreadable or truncated image")
    assert skipped["t/tiny"] == "image too small to use: 4x4 px"
    converted = index.set_index("sample_id")["converted"]
    assert converted["t/grayscale"] == "grayscale -> RGB" and converted["t/palette"] == "palette -> RGB"
    assert converted["t/rgba"] == "RGBA -> RGB (transparent pixels composited on black)"
    assert converted["t/gray16"].endswith("-> 8-bit RGB") and "16-bit" in converted["t/gray16"]
    assert pd.isna(converted["t/ok_png"])
    assert list(index["sample_id"]) == [s for s in manifest["sample_id"] if s not in skipped.index]  # row order kept
    pixels, _ = load_rgb(paths["gray16"])
    assert pixels.shape == (60, 80, 3) and pixels[0, 0, 0] == 255 and pixels[0, 79, 0] == 128


def test_cache_round_trip_and_reuse(tmp_path: Path) -> None:
    paths = _write_awkward_files(tmp_path / "img")
    ok = {k: v for k, v in paths.items() if k in ("ok_jpg", "ok_png", "grayscale", "rgba")}
    manifest = _manifest(ok)
    cache = tmp_path / "cache"
    index = build_cache(manifest, cache, size=20)
    images, loaded = load_cache(cache)
    assert images.shape == (4, 20, 20, 3) and images.dtype == np.uint8 and isinstance(images, np.memmap)
    pd.testing.assert_frame_equal(index, loaded)
    for row in loaded.itertuples():
        expected, info = preprocess_image(ok[row.sample_id.split("/")[1]], "dermoscopic", {}, 20)
        assert np.array_equal(images[row.row], expected) and row.crop_method == info["crop_method"] == "otsu"
    build_cache(manifest, tmp_path / "parallel", size=20, workers=2)
    assert np.array_equal(load_cache(tmp_path / "parallel")[0], images)  # workers do not change the result
    stamp = (cache / "images.npy").stat().st_mtime_ns
    build_cache(manifest, cache, size=20)
    assert (cache / "images.npy").stat().st_mtime_ns == stamp  # same manifest + size: reused
    build_cache(manifest, cache, size=16)
    assert load_cache(cache)[0].shape == (4, 16, 16, 3)  # a different size rebuilds
    build_cache(manifest.iloc[:2], cache, size=16)
    assert load_cache(cache)[0].shape[0] == 2  # a different manifest rebuilds


def _meta(cache: Path) -> dict:
    return json.loads((cache / "cache_meta.json").read_text())


def test_cache_entries_follow_file_contents_not_paths_or_times(tmp_path: Path) -> None:
    """A corrected image is preprocessed again (only it); a touched or moved one is not; the fingerprint (which
    runs and features are keyed by) follows the content."""
    paths = _write_awkward_files(tmp_path / "img")
    ok = {k: v for k, v in paths.items() if k in ("ok_jpg", "ok_png", "grayscale", "rgba")}
    manifest, cache = _manifest(ok), tmp_path / "cache"
    build_cache(manifest, cache, size=20)
    first = _meta(cache)["fingerprint"]
    os.utime(ok["ok_png"], ns=(1, 1))  # touched: same bytes
    build_cache(manifest, cache, size=20)
    assert _meta(cache)["fingerprint"] == first
    flipped = np.asarray(Image.open(ok["ok_png"]))[:, ::-1].copy()
    Image.fromarray(flipped).save(ok["ok_png"])  # corrected in place, same path
    os.utime(ok["ok_png"], ns=(1, 1))  # ... even with the old mtime: the size changed, or the bytes do
    index = build_cache(manifest, cache, size=20)
    meta = _meta(cache)
    assert meta["fingerprint"] != first and meta["n_reused"] == 3  # the three others copied, not redone
    row = index.set_index("sample_id").loc["t/ok_png", "row"]
    assert np.array_equal(load_cache(cache)[0][row], preprocess_image(ok["ok_png"], "dermoscopic", {}, 20)[0])
    moved = tmp_path / "moved"
    (tmp_path / "img").rename(moved)  # the dataset moved to another folder: same content, same cache
    manifest_moved = manifest.assign(image_path=manifest["image_path"].str.replace(str(tmp_path / "img"), str(moved)))
    build_cache(manifest_moved, cache, size=20)
    assert _meta(cache)["fingerprint"] == meta["fingerprint"]


def test_replacing_a_skipped_file_and_rerunning_recovers_it(tmp_path: Path) -> None:
    """The README's recovery: an undecodable image is skipped; replace the file, re-run notebook 01, it is in."""
    paths = _write_awkward_files(tmp_path / "img")
    chosen = {k: paths[k] for k in ("ok_png", "corrupt", "missing")}
    manifest, cache = _manifest(chosen), tmp_path / "cache"
    build_cache(manifest, cache, size=16)
    assert set(read_skipped(cache)["sample_id"]) == {"t/corrupt", "t/missing"}
    stamp = (cache / "images.npy").stat().st_mtime_ns
    build_cache(manifest, cache, size=16)  # unchanged files are not tried again, and stay skipped with the reason
    assert set(read_skipped(cache)["sample_id"]) == {"t/corrupt", "t/missing"}
    assert (cache / "images.npy").stat().st_mtime_ns == stamp
    Image.fromarray(_fov_image(40, 50, 20, 25, 18)).save(chosen["corrupt"], format="JPEG")
    Image.fromarray(_fov_image(40, 50, 20, 25, 18, seed=3)).save(chosen["missing"], format="JPEG")
    index = build_cache(manifest, cache, size=16)
    assert list(index["sample_id"]) == ["t/ok_png", "t/corrupt", "t/missing"] and read_skipped(cache).empty


def _build_in_child(args: tuple[str, str]) -> int:
    manifest_path, cache = args
    return len(build_cache(pd.read_parquet(manifest_path), cache, size=16))


def test_two_concurrent_builders_lose_no_image(tmp_path: Path) -> None:
    """Two processes building one cache at once (two notebook-01 runs): one waits for the other, every image is in."""
    folder = tmp_path / "img"
    folder.mkdir()
    paths = {}
    for i in range(40):
        paths[f"im{i:02d}"] = folder / f"im{i:02d}.png"
        Image.fromarray(_fov_image(60, 80, 30, 40, 26, seed=i)).save(paths[f"im{i:02d}"])
    manifest = _manifest(paths)
    manifest.to_parquet(tmp_path / "manifest.parquet")
    cache = tmp_path / "cache"
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        sizes = pool.map(_build_in_child, [(str(tmp_path / "manifest.parquet"), str(cache))] * 2)
    assert sizes == [40, 40]
    images, index = load_cache(cache)
    assert len(index) == 40 and read_skipped(cache).empty and not list(cache.glob("*.tmp.npy"))
    for row in index.itertuples():
        assert np.array_equal(images[row.row], preprocess_image(paths[row.sample_id[2:]], "dermoscopic", {}, 16)[0])


def test_clinical_rows_use_their_box(tmp_path: Path) -> None:
    paths = _write_awkward_files(tmp_path / "img")
    manifest = _manifest({"ok_png": paths["ok_png"], "rgba": paths["rgba"]}, modality="clinical")
    manifest.loc[0, "attributes"] = '{"bbox": [10, 20, 50, 40]}'
    manifest.loc[1, "attributes"] = '{"bbox": [100, 100, 120, 120]}'  # outside the image: skipped with reason
    index = build_cache(manifest, tmp_path / "cache", size=16)
    row = index.iloc[0]
    assert row["crop_method"] == "bbox" and [row.crop_x0, row.crop_y0, row.crop_x1, row.crop_y1] == [10, 20, 50, 40]
    assert "is empty inside a 80x60 image" in read_skipped(tmp_path / "cache")["reason"].iloc[0]
    with pytest.raises(FileNotFoundError, match="build_cache"):
        load_cache(tmp_path / "nowhere")


def test_large_jpeg_is_decoded_reduced_and_cropped_in_original_pixels(tmp_path: Path) -> None:
    """A 6000x4000 dermoscopy photo with a black surround on the left: DCT-scaled decoding, the box in file pixels."""
    rng = np.random.default_rng(0)
    big = np.full((4000, 6000, 3), 190, np.uint8)
    big += rng.integers(0, 30, big.shape, dtype=np.uint8)
    big[:, :1500] = 0  # the scope's dark surround: a quarter of the width
    Image.fromarray(big).save(tmp_path / "big.jpg", quality=90)
    pixels, info = preprocess_image(tmp_path / "big.jpg", "dermoscopic", None, 224)
    assert pixels.shape == (224, 224, 3)
    assert (info["orig_width"], info["orig_height"]) == (6000, 4000)  # reported in the file's pixels
    assert info["crop_method"] == "otsu" and 1300 <= info["crop_x0"] <= 1500 and info["crop_x1"] == 6000
    full, _ = load_rgb(tmp_path / "big.jpg")
    assert full.shape == (4000, 6000, 3)  # load_rgb still gives every pixel


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    """A phone photo stored 400x200 with orientation 6 (rotate 90 clockwise) is upright 200x400."""
    stored = np.zeros((200, 400, 3), np.uint8)
    stored[:, :40] = 255  # a white band at the stored left edge: after the rotation it is at the top
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    pixels, note = load_rgb(tmp_path / "phone.jpg")
    assert pixels.shape == (400, 200, 3) and "EXIF orientation" in note
    assert pixels[:30].mean() > 200 and pixels[-100:].mean() < 30


@pytest.mark.parametrize("peak, expected", [(127, 127), (4095, 255), (65535, 255)])
def test_sixteen_bit_images_keep_their_dynamic_range(peak: int, expected: int, tmp_path: Path) -> None:
    grey = (np.linspace(0, peak, 64 * 64).reshape(64, 64)).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "g.png")
    pixels, note = load_rgb(tmp_path / "g.png")
    assert pixels.max() == expected and f"values up to {peak}" in note
    assert pixels.min() == 0 and len(np.unique(pixels)) > 100  # not flattened to black


# ---------------------------------------------------------------- rows -> cached pixels (order, and the missing-image policy)


def _cache(tmp_path: Path) -> tuple[pd.DataFrame, Path]:
    rng = np.random.default_rng(0)
    paths = {}
    for i in range(3):
        paths[f"t/{i}"] = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(paths[f"t/{i}"])
    paths["t/missing"] = tmp_path / "missing.png"  # skipped by build_cache
    manifest = to_manifest(pd.DataFrame({"sample_id": list(paths), "source": "t", "modality": "clinical",
                                         "image_path": [str(p) for p in paths.values()], "label_raw": "nevus"}))
    build_cache(manifest, tmp_path / "cache", size=8)
    return manifest, tmp_path / "cache"


def test_cached_pixels_follow_the_rows_and_drop_or_raise(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    manifest, cache = _cache(tmp_path)
    images, index = load_cache(cache)
    wanted = manifest.iloc[[2, 0]].reset_index(drop=True)
    rows, pixels = cached_pixels(wanted, cache, missing="raise")
    assert list(rows["sample_id"]) == ["t/2", "t/0"] and np.array_equal(pixels, images[[2, 0]])
    with pytest.raises(ValueError, match="lacks 1 test images"):
        cached_pixels(manifest, cache, missing="raise", what="test")
    with caplog.at_level(logging.WARNING, logger="dermlib.data.preprocess"):
        rows, pixels = cached_pixels(manifest.iloc[::-1], cache, missing="drop", what="pool")
    assert list(rows["sample_id"]) == ["t/2", "t/1", "t/0"] and list(rows.index) == [0, 1, 2]
    assert np.array_equal(pixels, images[[2, 1, 0]])
    assert "pool: 1 rows have no cached image" in caplog.text
    with pytest.raises(ValueError, match="missing must be one of"):
        cached_pixels(manifest, cache, missing="ignore")
