"""Shared helpers for the real-dataset loaders: finding files, reading metadata as text, matching image files, clear
errors that name the file/row and the fix, and turning a loader's table into the manifest schema.

Missing images: with `strict=True` (default) a metadata row whose image file is absent raises FileNotFoundError naming
the file and row; with `strict=False` such rows are skipped and returned in a `skipped` table (source, sample_id,
label_raw, reason), which `build_manifest` adds to its report, so no row ever disappears uncounted. An image file
that is there but empty or too small to be an image (under MIN_IMAGE_BYTES, an interrupted download or copy) is
unusable: strict raises ValueError naming the files, non-strict skips its row with REASON_EMPTY_IMAGE.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dermlib.data.harmonise import harmonise
from dermlib.data.registry import SOURCES, SourceSpec
from dermlib.data.schema import clean_missing, dump_attributes, to_manifest

SKIPPED_COLUMNS = ["source", "sample_id", "label_raw", "reason"]
REASON_NO_IMAGE = "image file missing"
REASON_EMPTY_IMAGE = "image file empty or too small to be an image"
MIN_IMAGE_BYTES = 32  # no PNG, JPEG, BMP or TIFF image is this small (the smallest valid ones have 50 bytes or more)
EMPTY_SHOWN = 5  # unusable files an error names
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
Loaded = tuple[pd.DataFrame, pd.DataFrame]  # what every loader returns: (manifest, skipped rows)


def spec_of(name: str) -> SourceSpec:
    """The registry entry of a source, with a clear error for unknown names."""
    if name not in SOURCES:
        raise ValueError(f"unknown source {name!r}; known sources: {sorted(SOURCES)}")
    return SOURCES[name]


def fix_hint(name: str) -> str:
    """The 'how to fix it' sentence shared by every loader error."""
    spec = spec_of(name)
    return f"Expected layout: {spec.layout}. To fix: {spec.how_to_get()}."


def require_root(name: str, root: str | Path) -> Path:
    """The dataset folder as a Path; FileNotFoundError with download instructions when it is not there."""
    path = Path(root).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{name}: dataset folder {path} does not exist. {fix_hint(name)} Then pass that folder as "
                                f"root (profile paper: override data.roots.{name}).")
    return path.resolve()


def find_file(name: str, root: Path, patterns: Sequence[str], what: str) -> Path:
    """The first file matching one of `patterns` (globs relative to root, tried in order; sorted within a glob)."""
    for pattern in patterns:
        hits = sorted(p for p in root.glob(pattern) if p.is_file())
        if hits:
            return hits[-1] if "*" in pattern else hits[0]  # newest dated export wins for globbed names
    raise FileNotFoundError(f"{name}: {what} not found in {root} (looked for {list(patterns)}). {fix_hint(name)}")


def read_text_table(path: Path, name: str) -> pd.DataFrame:
    """Read a CSV with every cell as text (no NA guessing: missing spellings are cleaned per column later)."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise ValueError(f"{name}: {path} is empty ({path.stat().st_size} bytes): the download was cut short. "
                         f"{fix_hint(name)}") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ValueError(f"{name}: cannot parse {path} as CSV ({err}). {fix_hint(name)}") from err
    if frame.empty:
        raise ValueError(f"{name}: {path} has a header but no rows: the download was cut short. {fix_hint(name)}")
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def require_columns(frame: pd.DataFrame, columns: Iterable[str], path: Path, name: str) -> None:
    """ValueError naming the file and the missing columns when a metadata table lacks required columns."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name}: {path} has no column(s) {missing} (found {list(frame.columns)}); is it the official "
                         f"metadata file, unedited? {fix_hint(name)}")


def index_files(root: Path, suffixes: Sequence[str] = IMAGE_SUFFIXES, *, any_suffix: bool = False) -> dict[str, str]:
    """Lower-case file name -> absolute path for every file below root (sorted walk, symlinked folders followed;
    the first copy of a name wins)."""
    found: dict[str, str] = {}
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs.sort()
        for file in sorted(files):
            if any_suffix or file.lower().endswith(tuple(suffixes)):
                found.setdefault(file.lower(), os.path.join(folder, file))
    return found


def index_relative(root: Path) -> dict[str, str]:
    """Lower-case path relative to root (with '/') -> absolute path, for case-insensitive path lookups."""
    found: dict[str, str] = {}
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs.sort()
        rel = os.path.relpath(folder, root).replace(os.sep, "/")
        prefix = "" if rel == "." else rel + "/"
        for file in sorted(files):
            found.setdefault((prefix + file).lower(), os.path.join(folder, file))
    return found


def match_images(candidates: Sequence[pd.Series], index: dict[str, str]) -> pd.Series:
    """Resolve each row's image: the first candidate name (looked up lower-case in `index`) that exists, else NA."""
    path = pd.Series(pd.NA, index=candidates[0].index, dtype="string")
    for names in candidates:
        found = names.astype("string").str.lower().map(index).astype("string")
        path = path.fillna(found)
    return path


def image_sizes(paths: pd.Series) -> pd.Series:
    """Each file's size in bytes (Int64): NA where the path is NA, -1 where the file cannot be stat'ed."""
    def size(path: object) -> int | None:
        if path is None or path is pd.NA:
            return None
        try:
            return os.stat(str(path)).st_size
        except OSError:
            return -1
    return pd.Series([size(p) for p in paths.astype(object)], index=paths.index, dtype="Int64")


def too_small_images(paths: pd.Series) -> pd.Series:
    """True where a found image file is empty, under MIN_IMAGE_BYTES or unreadable (a dangling link)."""
    return (image_sizes(paths) < MIN_IMAGE_BYTES).fillna(False).astype(bool)


def small_image_files(root: Path) -> list[tuple[str, int]]:
    """(path, size; -1: unreadable) of every image file below root that is too small to be an image, sorted."""
    paths = pd.Series(sorted(index_relative(root).values()), dtype="string")
    paths = paths[paths.str.lower().str.endswith(IMAGE_SUFFIXES)]
    sizes = image_sizes(paths)
    small = (sizes < MIN_IMAGE_BYTES).fillna(False)
    return [(str(p), int(n)) for p, n in zip(paths[small], sizes[small])]


def _empty_error(frame: pd.DataFrame, small: pd.Series, name: str, meta_path: Path, rows: pd.Series) -> ValueError:
    """The strict error for rows whose image file is empty or too small: count, then the first files with size."""
    sizes = image_sizes(frame["image_path"][small])
    shown = [f"{rows[i]}: {frame['image_path'][i]} ({'unreadable' if n < 0 else f'{n} bytes'})"
             for i, n in sizes.head(EMPTY_SHOWN).items()]
    more = f"; and {int(small.sum()) - EMPTY_SHOWN} more" if small.sum() > EMPTY_SHOWN else ""
    return ValueError(f"{name}: {int(small.sum())} of {len(frame)} image files listed in {meta_path} are empty or too "
                      f"small to be an image (under {MIN_IMAGE_BYTES} bytes; a download or copy cut short): "
                      f"{'; '.join(shown)}{more}. Replace them with the original files (download them again). Or "
                      f"load with strict=False to skip and count these rows (`python -m dermlib.data doctor` lists "
                      f"them all).")


def drop_missing_images(frame: pd.DataFrame, name: str, meta_path: Path, root: Path, strict: bool,
                        expected: pd.Series, rows: pd.Series) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Raise (strict) or split off (counted) rows whose `image_path` is NA, or whose file is empty or too small to
    be an image (`too_small_images`); `expected`/`rows` describe each row."""
    missing = frame["image_path"].isna()
    small = too_small_images(frame["image_path"])
    if not missing.any() and not small.any():
        return frame, skipped_rows(frame.iloc[:0], name, REASON_NO_IMAGE)
    if strict and missing.any():
        first = missing.idxmax()
        raise FileNotFoundError(
            f"{name}: {int(missing.sum())} of {len(frame)} images listed in {meta_path} are missing below {root}; "
            f"first: {rows[first]} expects {expected[first]!r}. {fix_hint(name)} Or load with strict=False to skip and "
            f"count the rows whose image is absent.")
    if strict:
        raise _empty_error(frame, small, name, meta_path, rows)
    skipped = skipped_rows(frame[missing], name, REASON_NO_IMAGE)
    if small.any():
        skipped = pd.concat([skipped, skipped_rows(frame[small], name, REASON_EMPTY_IMAGE)], ignore_index=True)
    return frame[~missing & ~small], skipped


def skipped_rows(frame: pd.DataFrame, name: str, reason: str) -> pd.DataFrame:
    """Rows a loader leaves out, in the shared `skipped` format (they are counted, never silently dropped)."""
    return pd.DataFrame({
        "source": pd.Series([name] * len(frame), dtype="string"),
        "sample_id": (name + "/" + frame["id"].astype("string")).reset_index(drop=True),
        "label_raw": frame["label_raw"].astype("string").reset_index(drop=True),
        "reason": pd.Series([reason] * len(frame), dtype="string"),
    })


def to_bool(series: pd.Series) -> pd.Series:
    """Parse True/TRUE/true/False/... to Python bools (object dtype); anything else (UNK, empty) becomes None."""
    key = series.astype("string").str.strip().str.lower()
    return key.map({"true": True, "false": False}).astype(object).where(key.isin(["true", "false"]), None)


def to_number(series: pd.Series) -> pd.Series:
    """Parse numeric text to floats; empty and non-numeric cells become NA."""
    return pd.to_numeric(series.astype("string").str.strip().replace("", pd.NA), errors="coerce").astype("Float64")


def attributes_json(frame: pd.DataFrame, columns: dict[str, str]) -> pd.Series:
    """Per-row JSON attributes from `columns` (attribute key -> frame column); NA entries are left out."""
    sub = frame[list(columns.values())].astype(object)
    sub = sub.where(sub.notna(), None)
    sub.columns = list(columns.keys())
    return pd.Series([dump_attributes(r) for r in sub.to_dict("records")], index=frame.index, dtype="string")


def finish(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    """Turn a loader's table (id, image_path, label_raw, optional manifest columns) into the manifest schema."""
    out = frame.copy()
    out["sample_id"] = name + "/" + out["id"].astype("string")
    out["source"] = name
    out["modality"] = spec_of(name).modality
    out["label"] = harmonise(name, out["label_raw"])
    manifest = to_manifest(out)
    dup = manifest["sample_id"].duplicated()
    if dup.any():
        raise ValueError(f"{name}: duplicate sample ids in the metadata, first {manifest['sample_id'][dup].iloc[0]!r}")
    return manifest


def require_ids(raw: pd.Series, path: Path, name: str, column: str) -> pd.Series:
    """A required, unique id column, cleaned; ValueError naming the lines of the first empty or repeated id."""
    ids = clean_missing(raw)
    if ids.isna().any():
        line = int(ids.isna().to_numpy().argmax()) + 2
        raise ValueError(f"{name}: {path} line {line} has an empty {column}; every row needs one "
                         f"(re-download the file)")
    repeated = ids.duplicated(keep=False).to_numpy()
    if repeated.any():
        first = ids.iloc[int(repeated.argmax())]
        lines = [str(i + 2) for i in np.flatnonzero((ids == first).to_numpy())[:5]]
        raise ValueError(f"{name}: {path} lines {', '.join(lines)} repeat {column} {first!r}; each image must appear "
                         f"once: delete the extra rows or re-download the file")
    return ids


def row_labels(frame: pd.DataFrame, path: Path, id_column: str) -> pd.Series:
    """Human-readable row descriptions for errors: 'HAM10000_metadata.csv line 7 (image_id ISIC_0027419)'."""
    return path.name + " line " + (frame.index + 2).astype(str) + f" ({id_column} " + frame["id"].astype(str) + ")"


def attach_images(frame: pd.DataFrame, name: str, meta: Path, root: Path, strict: bool, id_column: str,
                  file_names: pd.Series) -> Loaded:
    """Attach image paths found by file name below root, then raise on or count absent images."""
    frame["image_path"] = match_images([file_names], index_files(root))
    kept, skipped = drop_missing_images(frame, name, meta, root, strict, file_names, row_labels(frame, meta, id_column))
    return finish(name, kept), skipped
