"""What an image file holds, cheaply: a content key per file (BLAKE2b of its bytes), re-read only when the file's
size or modification time changed since the last look.

The image cache (`dermlib.data.preprocess.build_cache`) keys its entries by these, so a corrected or replaced image
is preprocessed again (and a run trained on the old pixels is not reused), while an untouched one costs a `stat`.
The keys hold no path or time, so two machines with the same files agree on them.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

MISSING = "missing"  # the content key of a path that is not a readable file
STAT_COLUMNS = ["image_path", "size", "mtime_ns", "content"]


def content_key(path: str | Path) -> str:
    """32 hex digits of BLAKE2b over the file's bytes (`MISSING` when it cannot be read)."""
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, lambda: hashlib.blake2b(digest_size=16)).hexdigest()
    except OSError:
        return MISSING


def file_keys(paths: pd.Series, known: pd.DataFrame | None) -> pd.DataFrame:
    """One row per distinct path of `paths` (STAT_COLUMNS): the file's size, mtime and content key, the key taken
    from `known` (an earlier result) where size and mtime are unchanged, else read from the file."""
    previous: dict[str, tuple[int, int, str]] = {}
    if known is not None and set(STAT_COLUMNS) <= set(known.columns):
        previous = {str(r.image_path): (int(r.size), int(r.mtime_ns), str(r.content))
                    for r in known.itertuples(index=False)}
    rows = []
    for path in dict.fromkeys(paths.astype(str)):
        try:
            stat = os.stat(path)
            size, mtime = int(stat.st_size), int(stat.st_mtime_ns)
        except OSError:
            rows.append((path, -1, -1, MISSING))
            continue
        old = previous.get(path)
        rows.append((path, size, mtime, old[2] if old and old[:2] == (size, mtime) and old[2] != MISSING
                     else content_key(path)))
    return pd.DataFrame(rows, columns=STAT_COLUMNS)


@contextmanager
def exclusive(folder: Path) -> Iterator[None]:
    """Hold `folder/.lock` exclusively (waiting for another holder): one builder of a cache at a time."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
