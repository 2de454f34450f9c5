"""The notes table on disk: `<work_dir>/notes/notes.parquet`, long format (sample_id, strategy, note, status, ...),
written by notebook 02 and read by training, evaluation, export and the audit. Nothing else opens the file."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import pandas as pd

from dermlib.atomic import read_parquet, write_parquet
from dermlib.notes.strategies import get_strategy
from dermlib.workdir import WorkDir
from dermlib.grammar import parse_strategy

REQUIRED = {"sample_id", "strategy", "note", "status"}
# what to do about a damaged table
REWRITE = ("run notebook 02_notes again (./run_all.sh --only 02): it writes the table again from the note cache, "
           "asking the LLM nothing already cached")


def save_notes(notes: pd.DataFrame, work_dir: str | Path) -> Path:
    """Write the long-format notes table to `<work_dir>/notes/notes.parquet` (atomically: `dermlib.atomic`)."""
    path = WorkDir(work_dir).notes
    frame = notes.copy()
    frame.attrs = {}
    write_parquet(frame, path, index=False)
    return path


def load_notes_table(work_dir_or_path: str | Path, hint: str = "") -> pd.DataFrame:
    """The whole notes table, from a work dir or a notes.parquet path; a clear error when it is absent, damaged or
    lacks columns (`hint` is added to the not-found message)."""
    path = Path(work_dir_or_path)
    path = path if path.suffix == ".parquet" else WorkDir(path).notes
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run notebook 02_notes (./run_all.sh --only 02) first{hint}")
    notes = read_parquet(path, fix=REWRITE)
    missing = REQUIRED - set(notes.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)}")
    notes.attrs["path"] = str(path)
    return notes


def load_notes(work_dir_or_path: str | Path, strategy: str) -> dict[str, str]:
    """`{sample_id: note}` for one strategy's successful notes, from a work dir or a notes.parquet path."""
    get_strategy(strategy)
    notes = load_notes_table(work_dir_or_path)
    chosen = notes[(notes["strategy"] == strategy) & (notes["status"] == "ok")]
    if chosen.empty and strategy not in set(notes["strategy"]):
        raise KeyError(f"{notes.attrs['path']} has no notes for strategy {strategy!r}; it has "
                       f"{sorted(set(notes['strategy']))}")
    return dict(zip(chosen["sample_id"].astype(str), chosen["note"].astype(str)))


def notes_by_sample(work_dir: str | Path, strategies: list[str]) -> dict[str, list[str]]:
    """sample_id -> its usable notes (status "ok") for the given note strategies, in strategy order."""
    notes = load_notes_table(work_dir, hint=", or train the image-only baseline (train.strategy = 'Img')")
    unknown = set(strategies) - set(notes["strategy"].astype(str))
    if unknown:
        raise ValueError(f"{notes.attrs['path']} has no notes for strategies {sorted(unknown)}; it has "
                         f"{sorted(notes['strategy'].astype(str).unique())}")
    ok = notes[(notes["status"] == "ok") & notes["strategy"].isin(strategies) & notes["note"].notna()]
    ok = ok.assign(order=ok["strategy"].map({s: i for i, s in enumerate(strategies)})).sort_values(
        ["sample_id", "order"], kind="stable")
    return ok.assign(sample_id=ok["sample_id"].astype(str), note=ok["note"].astype(str)).groupby(
        "sample_id", sort=True)["note"].agg(list).to_dict()


def first_notes(work_dir: str | Path, strategy: str, sample_ids: pd.Series) -> list[str | None]:
    """The note each sample has for a training strategy (its first usable one; None when it has none)."""
    notes = notes_by_sample(work_dir, parse_strategy(strategy))
    return [notes[s][0] if notes.get(s) else None for s in sample_ids.astype(str)]


def notes_digest(path: Path, strategy: str) -> str:
    """16 hex digits over one strategy's usable notes (sample id and text, sorted) in a notes table; "absent"
    when the table or the strategy is not there. Read once per version of the file; a run's id holds it
    (`dermlib.train.runs.run_inputs`)."""
    try:
        stat = path.stat()
    except OSError:
        return "absent"
    return _notes_digest(str(path), stat.st_mtime_ns, stat.st_size, strategy)


@functools.lru_cache(maxsize=64)
def _notes_digest(path: str, mtime_ns: int, size: int, strategy: str) -> str:
    notes = read_parquet(path, fix=REWRITE, columns=["sample_id", "strategy", "note", "status"])
    ok = notes[(notes["strategy"] == strategy) & (notes["status"] == "ok") & notes["note"].notna()]
    if ok.empty and strategy not in set(notes["strategy"]):
        return "absent"
    pairs = sorted(zip(ok["sample_id"].astype(str), ok["note"].astype(str)))
    digest = hashlib.sha256()
    for sample_id, note in pairs:
        digest.update(f"{sample_id}\x1f{note}\x1e".encode())
    return digest.hexdigest()[:16]
