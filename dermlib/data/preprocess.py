"""Preprocessing: decode any image safely, crop it (Otsu field-of-view crop for dermoscopy, the annotated box for
clinical photos), resize it, and keep the result in a cache so training never decodes the originals twice.

Cache layout (`cache_dir/`): `images.npy` uint8 [N, S, S, 3] (row i = index row i), `index.parquet` (sample_id,
row, crop box, original size, what was converted, entry key), `skipped.csv` (sample_id, reason, entry key),
`files.parquet` (each file's size, mtime and content key: `dermlib.data.file_keys`) and `cache_meta.json` (the
fingerprint of the whole content, so an identical request reuses it; runs and features are keyed by it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageOps
from skimage.color import rgb2gray
from skimage.filters import threshold_otsu
from skimage.transform import resize

from dermlib.atomic import write_csv, write_parquet, write_text
from dermlib.data.file_keys import exclusive, file_keys
from dermlib.data.schema import load_attributes
from dermlib.progress import progress

log = logging.getLogger(__name__)
CACHE_VERSION = 1  # bump when the preprocessing changes what pixels come out
INDEX_COLUMNS = ["sample_id", "row", "crop_method", "crop_x0", "crop_y0", "crop_x1", "crop_y1", "orig_width",
                 "orig_height", "converted"]


class ImageError(ValueError):
    """An image that cannot be used; the message is the reason logged in skipped.csv."""


def _sixteen_bit(arr: np.ndarray, mode: str) -> tuple[np.ndarray, str]:
    """16-bit / integer / float grey to 8 bits over the range the values use (8-, 12- or 16-bit content alike):
    the top is the smallest power of two above the maximum (at least 255), so a 16-bit file holding 8-bit values
    is not made black and a 12-bit one fills the 8-bit range."""
    peak = float(arr.max()) if arr.size else 0.0
    top = float(max(255, 2 ** int(np.ceil(np.log2(peak + 1))) - 1)) if peak > 0 else 255.0
    grey = np.clip(arr.astype(np.float64) / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2), f"{mode} (16-bit, values up to {int(arr.max())}) -> 8-bit RGB"


def decode(path: str | Path, min_side: int | None = None) -> tuple[np.ndarray, str | None, float]:
    """Decode an image file to uint8 RGB, upright (EXIF orientation applied); return (pixels, what was converted
    or None, scale of the pixels relative to the file's upright size). With `min_side`, a JPEG is decoded at a
    reduced size (libjpeg's DCT scaling, never below `min_side` on the short side): a 6000x4000 original costs a
    fraction of a second and of the memory. Grayscale, palette, RGBA, CMYK and 16-bit images are converted;
    unreadable or truncated files raise ImageError with the reason."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"missing file: {path}")
    try:
        with Image.open(path) as im:
            full = im.size
            if min_side and im.format == "JPEG" and min(full) > 2 * min_side:
                ratio = min_side / min(full)
                im.draft("RGB", (int(np.ceil(full[0] * ratio)), int(np.ceil(full[1] * ratio))))
            im.load()  # decode now: truncated files fail here rather than later
            scale = im.size[0] / full[0]
            turned = im.getexif().get(0x0112, 1) not in (1, None)  # EXIF Orientation: 1 is upright
            im = ImageOps.exif_transpose(im) if turned else im
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                pixels, note = _sixteen_bit(np.asarray(im), mode)
            else:
                if mode == "RGB":
                    rgb, note = im, None
                elif mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
                    rgba = im.convert("RGBA")
                    opaque = np.asarray(rgba)[..., 3].min() == 255
                    flat = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
                    rgb = Image.alpha_composite(flat, rgba).convert("RGB")
                    note = f"{mode} -> RGB" + ("" if opaque else " (transparent pixels composited on black)")
                else:  # L, 1, P, CMYK, YCbCr, ...
                    rgb = im.convert("RGB")
                    note = {"L": "grayscale", "1": "1-bit", "P": "palette"}.get(mode, mode) + " -> RGB"
                pixels = np.asarray(rgb, dtype=np.uint8)
            if turned:
                note = "; ".join(filter(None, [note, "EXIF orientation applied"]))
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ImageError(f"unreadable or truncated image: {type(err).__name__}: {err}") from None
    if pixels.ndim != 3 or pixels.shape[0] < 8 or pixels.shape[1] < 8:
        raise ImageError(f"image too small to use: {pixels.shape[1]}x{pixels.shape[0]} px")
    return pixels, note, scale


def load_rgb(path: str | Path) -> tuple[np.ndarray, str | None]:
    """The whole image at full resolution, upright, as uint8 RGB, and what was converted (see `decode`)."""
    pixels, note, _ = decode(path)
    return pixels, note


def shrink(pixels: np.ndarray, longest: int) -> np.ndarray:
    """A fast box-filtered copy whose longer side is at least `longest` (PIL's reduce by an integer factor);
    the image itself when it is already that small."""
    factor = max(pixels.shape[:2]) // max(longest, 1)
    if factor < 2:
        return pixels
    return np.asarray(Image.fromarray(pixels).reduce(int(factor)))


def otsu_box(pixels: np.ndarray, margin: float = 0.02, work_size: int = 128) -> tuple[list[int], bool]:
    """Bounding box [x0, y0, x1, y1] of the bright field of view of a dermoscopic image (Otsu threshold on a
    downscaled grey image, rows/columns that are at least 5% bright; a side is cut only where the part cut away
    is dark), grown by `margin`. Returns (box, found); found is False and the box is the whole image when there is
    no dark surround or the mask is degenerate."""
    h, w = pixels.shape[:2]
    whole = [0, 0, w, h]
    reduced = shrink(pixels, 4 * work_size)  # the threshold needs no detail: filter a small copy, not the original
    scale = work_size / max(h, w)
    small = resize(reduced, (max(2, round(h * scale)), max(2, round(w * scale))), anti_aliasing=True,
                   preserve_range=True)
    grey = rgb2gray(small.astype(np.float32) / 255.0)
    if float(grey.max() - grey.min()) < 0.05:
        return whole, False  # flat image: nothing to threshold
    mask = grey > threshold_otsu(grey)
    rows = np.nonzero(mask.mean(axis=1) >= 0.05)[0]
    cols = np.nonzero(mask.mean(axis=0) >= 0.05)[0]
    if len(rows) == 0 or len(cols) == 0:
        return whole, False
    sh, sw = mask.shape
    y0, y1, x0, x1 = rows[0] / sh, (rows[-1] + 1) / sh, cols[0] / sw, (cols[-1] + 1) / sw
    if (y1 - y0) < 0.3 or (x1 - x0) < 0.3 or mask.mean() < 0.1:
        return whole, False  # too small to be a field of view: do not crop
    # only cut a side when what is cut away is dark (the scope's black surround), not merely vignetted skin
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    dark = min(0.3, 0.5 * float(np.median(grey[r0:r1, c0:c1])))
    if r0 and grey[:r0].mean() > dark:
        y0 = 0.0
    if r1 < sh and grey[r1:].mean() > dark:
        y1 = 1.0
    if c0 and grey[:, :c0].mean() > dark:
        x0 = 0.0
    if c1 < sw and grey[:, c1:].mean() > dark:
        x1 = 1.0
    if (x0, y0, x1, y1) == (0.0, 0.0, 1.0, 1.0):
        return whole, False
    box = [max(0, int((x0 - margin) * w)), max(0, int((y0 - margin) * h)),
           min(w, int(np.ceil((x1 + margin) * w))), min(h, int(np.ceil((y1 + margin) * h)))]
    return box, True


def bbox_crop(pixels: np.ndarray, bbox: list[float]) -> tuple[np.ndarray, list[int]]:
    """Crop to an annotated box [x0, y0, x1, y1] (clipped to the image); raises ImageError when it is empty."""
    h, w = pixels.shape[:2]
    x0, y0, x1, y1 = (int(round(v)) for v in bbox)
    x0, x1, y0, y1 = max(0, x0), min(w, x1), max(0, y0), min(h, y1)
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise ImageError(f"bounding box {list(bbox)} is empty inside a {w}x{h} image")
    box = [x0, y0, x1, y1]
    return pixels[y0:y1, x0:x1], box


def square_resize(pixels: np.ndarray, size: int) -> np.ndarray:
    """Resize to size x size (anti-aliased, bilinear), uint8, as the paper's fixed 224x224 input; a crop many
    times larger is first box-reduced to about 4 x size (fast, and the same anti-aliasing in effect)."""
    out = resize(shrink(pixels, 4 * size), (size, size), order=1, anti_aliasing=True, preserve_range=True)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def preprocess_image(path: str | Path, modality: str, attributes: dict[str, Any] | None, size: int
                     ) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode, crop (Otsu for dermoscopic, `attributes["bbox"]` for clinical when given) and resize one image;
    returns (uint8 [size, size, 3], info for the cache index). Raises ImageError for unusable files."""
    bbox = (attributes or {}).get("bbox")
    pixels, converted, scale = decode(path, min_side=4 * size if bbox is None else None)
    h, w = pixels.shape[:2]
    if bbox is not None:
        cropped, box = bbox_crop(pixels, bbox)
        method = "bbox"
    elif modality == "dermoscopic":
        box, found = otsu_box(pixels)
        cropped = pixels[box[1]:box[3], box[0]:box[2]]
        method = "otsu" if found else "otsu_fallback_full"
    else:
        cropped, box, method = pixels, [0, 0, w, h], "none"
    box = [int(round(v / scale)) for v in box]  # in the file's (upright) pixels, whatever size was decoded
    info = {"crop_method": method, "crop_x0": box[0], "crop_y0": box[1], "crop_x1": box[2], "crop_y1": box[3],
            "orig_width": int(round(w / scale)), "orig_height": int(round(h / scale)), "converted": converted}
    return square_resize(cropped, size), info


def _work(args: tuple[str, str, str, str, int]) -> tuple[str, np.ndarray | None, dict[str, Any] | str]:
    """One manifest row -> (sample_id, pixels or None, info or skip reason); never raises."""
    sample_id, path, modality, attributes, size = args
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pixels, info = preprocess_image(path, modality, load_attributes(attributes), size)
        return sample_id, pixels, info
    except ImageError as err:
        return sample_id, None, str(err)
    except Exception as err:  # a decoder bug in one file must not stop the whole cache
        return sample_id, None, f"failed to preprocess: {type(err).__name__}: {err}"


def _entries(manifest: pd.DataFrame, contents: pd.Series, size: int) -> pd.Series:
    """One key per manifest row naming what decides its cached pixels: the file's content, modality, attributes,
    size and CACHE_VERSION (not its path: a moved dataset keeps its entries)."""
    cols = manifest[["modality", "attributes"]].astype("string").fillna("<NA>")
    return pd.Series([hashlib.sha256(f"v{CACHE_VERSION}|{size}|{c}|{m}|{a}".encode()).hexdigest()[:32]
                      for c, m, a in zip(contents, cols["modality"], cols["attributes"])], index=manifest.index)


def _fingerprint(sample_ids: pd.Series, entries: pd.Series) -> str:
    """Hash of the whole cache's content: row order, sample ids and each row's entry key."""
    digest = hashlib.sha256(f"v{CACHE_VERSION}|".encode())
    for sample_id, entry in zip(sample_ids.astype(str), entries):
        digest.update(f"{sample_id}\x1f{entry}\x1e".encode())
    return digest.hexdigest()


def _previous(cache: Path) -> tuple[pd.DataFrame | None, np.ndarray | None, pd.DataFrame | None]:
    """The earlier build's file table, images and index (None where absent or from before entry keys)."""
    files = pd.read_parquet(cache / "files.parquet") if (cache / "files.parquet").exists() else None
    try:
        images, index = load_cache(cache)
    except (FileNotFoundError, ValueError, OSError):
        return files, None, None
    return files, images, index if "entry" in index.columns else None


def build_cache(manifest: pd.DataFrame, cache_dir: str | Path, size: int = 224, workers: int = 1,
                force: bool = False) -> pd.DataFrame:
    """Preprocess every manifest row into `cache_dir` (see module doc) and return the index DataFrame. Unusable
    images are skipped, logged and listed with their reason in skipped.csv.

    Entries are keyed by the image file's content (`dermlib.data.file_keys`): an unchanged cache is reused, and
    after a file is replaced or corrected only that row is preprocessed again (a skipped file that changed is
    tried again); `force` redoes every row. One builder at a time holds the cache's lock; a second waits and then
    finds the cache built."""
    cache = Path(cache_dir)
    with exclusive(cache):
        known, old_images, old_index = _previous(cache)
        files = file_keys(manifest["image_path"], None if force else known)
        contents = manifest["image_path"].astype(str).map(files.set_index("image_path")["content"])
        entries = _entries(manifest, contents, size)
        fingerprint = _fingerprint(manifest["sample_id"], entries)
        meta_path = cache / "cache_meta.json"
        if not force and meta_path.exists() and old_index is not None:
            meta = json.loads(meta_path.read_text())
            if meta.get("fingerprint") == fingerprint and old_images is not None \
                    and old_images.shape == (meta["n_images"], size, size, 3):
                if known is None or not files.equals(known):  # newer mtimes: no re-read next time
                    write_parquet(files, cache / "files.parquet", index=False)
                log.info("reusing preprocessed cache %s (%d images)", cache, len(old_index))
                return old_index
        meta_path.unlink(missing_ok=True)  # invalid until the new cache is complete
        reuse = {} if force or old_index is None else dict(zip(old_index["entry"], range(len(old_index))))
        known_skips = {} if force or not (cache / "skipped.csv").exists() else _skip_reasons(cache)
        index, skipped = _build(manifest, entries, cache, size, workers, old_images, old_index, reuse, known_skips)
        write_parquet(index, cache / "index.parquet", index=False)
        write_csv(skipped, cache / "skipped.csv", index=False)
        write_parquet(files, cache / "files.parquet", index=False)
        write_text(meta_path, json.dumps({"fingerprint": fingerprint, "size": size, "n_images": len(index),
                                          "n_skipped": len(skipped), "n_manifest": len(manifest),
                                          "n_reused": int(index.attrs.get("n_reused", 0))}, indent=2))
        return index


def _skip_reasons(cache: Path) -> dict[str, str]:
    """entry key -> the reason an earlier build skipped it (an unchanged file fails the same way again)."""
    skipped = pd.read_csv(cache / "skipped.csv", dtype="string")
    return dict(zip(skipped["entry"], skipped["reason"])) if "entry" in skipped.columns else {}


def _build(manifest: pd.DataFrame, entries: pd.Series, cache: Path, size: int, workers: int,
           old_images: np.ndarray | None, old_index: pd.DataFrame | None, reuse: dict[str, int],
           known_skips: dict[str, str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write images.npy for `manifest` (old rows copied where their entry is unchanged, the others preprocessed)
    through a temporary file of this process; return (index, skipped)."""
    todo = [(str(r.sample_id), str(r.image_path), str(r.modality), r.attributes, int(size))
            for r, entry in zip(manifest.itertuples(index=False), entries)
            if entry not in reuse and entry not in known_skips]
    tmp_path = cache / f"images.{os.getpid()}.tmp.npy"
    tmp = np.lib.format.open_memmap(tmp_path, mode="w+", dtype=np.uint8, shape=(len(manifest), size, size, 3))
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 and len(todo) > 1 else None
    fresh = iter(pool.map(_work, todo, chunksize=16) if pool else map(_work, todo))
    bar = progress(len(todo), "preprocess", unit="img")
    try:
        for r, entry in zip(manifest.itertuples(index=False), entries):
            sample_id = str(r.sample_id)
            if entry in reuse:
                old = old_index.iloc[reuse[entry]]  # type: ignore[union-attr]
                tmp[len(rows)] = old_images[reuse[entry]]  # type: ignore[index]
                rows.append({**{c: old[c] for c in INDEX_COLUMNS}, "sample_id": sample_id, "row": len(rows),
                             "entry": entry})
                continue
            if entry in known_skips:
                skipped.append({"sample_id": sample_id, "reason": known_skips[entry], "entry": entry})
                continue
            _, pixels, info = next(fresh)
            bar.update(1)
            if pixels is None:
                log.warning("skipped %s: %s", sample_id, info)
                skipped.append({"sample_id": sample_id, "reason": str(info), "entry": entry})
                continue
            tmp[len(rows)] = pixels
            rows.append({"sample_id": sample_id, "row": len(rows), **info, "entry": entry})  # type: ignore[dict-item]
    finally:
        bar.close()
        if pool:
            pool.shutdown()
    tmp.flush()
    if len(rows) == len(manifest):
        del tmp
        tmp_path.replace(cache / "images.npy")
    else:  # drop the unused rows left by skipped images
        final = cache / f"images.{os.getpid()}.final.npy"
        out = np.lib.format.open_memmap(final, mode="w+", dtype=np.uint8, shape=(len(rows), size, size, 3))
        for start in range(0, len(rows), 512):
            out[start:start + 512] = tmp[start:min(start + 512, len(rows))]
        out.flush()
        del tmp, out
        tmp_path.unlink()
        final.replace(cache / "images.npy")
    index = pd.DataFrame(rows, columns=[*INDEX_COLUMNS, "entry"]).astype(
        {"sample_id": "string", "crop_method": "string", "converted": "string", "entry": "string"})
    index.attrs["n_reused"] = sum(e in reuse for e in entries)
    return index, pd.DataFrame(skipped, columns=["sample_id", "reason", "entry"])


def load_cache(cache_dir: str | Path) -> tuple[np.ndarray, pd.DataFrame]:
    """(images uint8 [N, S, S, 3] memory-mapped, index DataFrame in row order) of a cache built by build_cache."""
    cache = Path(cache_dir)
    missing = [f for f in ("images.npy", "index.parquet") if not (cache / f).exists()]
    if missing:
        raise FileNotFoundError(f"{cache} has no {missing}: build it with dermlib.data.build_cache "
                                "(notebook 01_data, ./run_all.sh --only 01)")
    images = np.load(cache / "images.npy", mmap_mode="r")
    index = pd.read_parquet(cache / "index.parquet")
    if len(index) != len(images):
        raise ValueError(f"{cache}: index.parquet has {len(index)} rows but images.npy {len(images)}; rebuild it "
                         "with build_cache(..., force=True)")
    return images, index


def read_skipped(cache_dir: str | Path) -> pd.DataFrame:
    """The images build_cache skipped, with the reason (sample_id, reason)."""
    return pd.read_csv(Path(cache_dir) / "skipped.csv", dtype="string")


MISSING_POLICIES = ("raise", "drop")


def cache_rows(frame: pd.DataFrame, index: pd.DataFrame, cache_dir: str | Path, *, missing: str,
               what: str = "selected") -> tuple[pd.DataFrame, np.ndarray]:
    """The rows of `frame` that have a cached image (renumbered from 0) and their int64 row in the cache `index`.

    A sample without a cached image (build_cache skipped it) is an error with `missing="raise"`; with "drop" it is
    left out and a warning is logged (`what` names the rows in both messages; reasons are in skipped.csv).
    """
    if missing not in MISSING_POLICIES:
        raise ValueError(f"missing must be one of {MISSING_POLICIES}, not {missing!r}")
    row_of = pd.Series(np.arange(len(index)), index=index["sample_id"].astype(str))
    ids = frame["sample_id"].astype(str)
    absent = ~ids.isin(row_of.index)
    if absent.any() and missing == "raise":
        raise ValueError(f"{cache_dir} lacks {int(absent.sum())} {what} images (first: {ids[absent].tolist()[:3]}); "
                         f"rebuild the cache in notebook 01_data")
    if absent.any():
        log.warning("%s: %d rows have no cached image (see %s)", what, int(absent.sum()),
                    Path(cache_dir) / "skipped.csv")
        frame, ids = frame[~absent].reset_index(drop=True), ids[~absent]
    return frame, row_of.loc[ids].to_numpy().astype(np.int64)


def gather_rows(images: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """A copy of the cache rows `rows` (in that order), reading the memory map in file order."""
    order = np.argsort(rows, kind="stable")
    pixels = np.empty((len(rows), *images.shape[1:]), dtype=np.uint8)
    pixels[order] = images[rows[order]]
    return pixels


def cached_pixels(frame: pd.DataFrame, cache_dir: str | Path, *, missing: str,
                  what: str = "selected") -> tuple[pd.DataFrame, np.ndarray]:
    """Manifest rows -> (the rows that have a cached image, their uint8 pixels [N, S, S, 3]); see `cache_rows`
    for the missing-image policy."""
    images, index = load_cache(cache_dir)
    frame, rows = cache_rows(frame, index, cache_dir, missing=missing, what=what)
    return frame, gather_rows(images, rows)
