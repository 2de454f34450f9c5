"""The dataset doctor: which sources of a profile are in place, which are missing or broken, and how to fix it.

    python -m dermlib.data doctor --profile paper [--set data.roots.ham10000=/data/HAM10000 ...]

Per source: its folder, whether its metadata was read, how many of its rows have their image (found / missing: an
image file that is empty or too small to be an image counts as missing, and each such file is named with its path),
its label counts after harmonisation, and for a missing or broken source the official page, licence and the
exact layout to create. Exit status 1 when any source of the profile is missing or broken. `./run_all.sh
--profile paper` runs it first and stops with this report instead of a traceback.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from dermlib.data.labels import ISIC8
from dermlib.data.loading import MIN_IMAGE_BYTES, REASON_EMPTY_IMAGE, REASON_NO_IMAGE, small_image_files
from dermlib.data.registry import SOURCES
from dermlib.data.sources import load_with_skipped
from dermlib.workdir import WorkDir


SMALL_SHOWN = 20  # image files too small to be an image the report names, per source


@dataclass
class SourceCheck:
    """What the doctor found for one source."""

    name: str
    root: Path
    status: str  # ok | missing | broken | partial (some images absent, empty or too small)
    n_rows: int = 0
    n_images: int = 0
    n_missing_images: int = 0
    labels: dict[str, int] = field(default_factory=dict)
    problem: str = ""
    small_files: list[tuple[str, int]] = field(default_factory=list)  # (path, bytes; -1: unreadable) too small


def source_roots(cfg: dict[str, Any]) -> dict[str, Path]:
    """Each real source of a profile and the folder it is read from (`data.roots`, else <work_dir>/datasets/<name>)."""
    sources = cfg["data"]["sources"]
    names = [] if sources == "synthderm" else ([sources] if isinstance(sources, str) else list(sources))
    roots = cfg["data"]["roots"]
    return {n: Path(roots.get(n, WorkDir.of(cfg).datasets / n)).expanduser() for n in names}


def check_source(name: str, root: Path) -> SourceCheck:
    """Load one source without stopping at absent images, and say what is there."""
    if not root.is_dir():
        return SourceCheck(name, root, "missing", problem=f"folder {root} does not exist")
    try:
        manifest, skipped = load_with_skipped(name, root, strict=False)
    except (FileNotFoundError, ValueError, KeyError, OSError) as err:
        return SourceCheck(name, root, "broken", problem=str(err))
    # only absent and unusable files count: rows a dataset itself leaves without an image (Derm7pt's clinical view)
    # do not
    absent = int((skipped["reason"] == REASON_NO_IMAGE).sum()) if len(skipped) else 0
    unusable = int((skipped["reason"] == REASON_EMPTY_IMAGE).sum()) if len(skipped) else 0
    small = small_image_files(root) if unusable else []  # the loader's skipped rows carry no path: look them up
    labels = manifest["label"].value_counts().reindex(ISIC8).dropna().astype(int).to_dict()
    bad = absent + unusable
    status = "ok" if bad == 0 and len(manifest) else ("partial" if len(manifest) else "broken")
    problems = [f"{absent} metadata rows have no image file under {root}"] if absent or not unusable else []
    if unusable:
        problems.append(f"{unusable} image files are empty or too small to be an image (under {MIN_IMAGE_BYTES} "
                        f"bytes): replace them with the original files")
    return SourceCheck(name, root, status, len(manifest) + len(skipped), len(manifest), bad, labels,
                       "" if status == "ok" else "; ".join(problems), small)


def diagnose(cfg: dict[str, Any]) -> list[SourceCheck]:
    """Check every real source of the profile."""
    return [check_source(name, root) for name, root in source_roots(cfg).items()]


def _small_lines(files: list[tuple[str, int]]) -> list[str]:
    """The report's lines naming image files too small to be an image (the first SMALL_SHOWN, then a count)."""
    lines = [f"  {'unreadable' if n < 0 else f'{n} bytes'}: {path}" for path, n in files[:SMALL_SHOWN]]
    return lines + ([f"  and {len(files) - SMALL_SHOWN} more"] if len(files) > SMALL_SHOWN else [])


def report(checks: list[SourceCheck]) -> str:
    """The doctor's report: a table, then how to fix each source that is not ok."""
    table = pd.DataFrame([{"source": c.name, "status": c.status, "rows": c.n_rows, "images found": c.n_images,
                           "images missing": c.n_missing_images,
                           **{k: c.labels.get(k, 0) for k in ISIC8}} for c in checks])
    lines = [table.to_string(index=False)] if len(table) else ["this profile reads no real dataset"]
    for c in checks:
        if c.status == "ok":
            continue
        spec = SOURCES[c.name]
        lines += ["", f"{c.name} ({spec.title}): {c.status}: {c.problem}",
                  *_small_lines(c.small_files),
                  *textwrap.wrap(f"get it: {spec.homepage}; {spec.download}", 110, initial_indent="  ",
                                 subsequent_indent="    "),
                  *textwrap.wrap(f"licence: {spec.licence}", 110, initial_indent="  ", subsequent_indent="    "),
                  *textwrap.wrap(f"layout under {c.root}: {spec.layout}", 110, initial_indent="  ",
                                 subsequent_indent="    "),
                  f"  or point dermlib at your copy: --set data.roots.{c.name}=/path/to/{c.name}"]
    bad = [c.name for c in checks if c.status != "ok"]
    lines += ["", f"{len(checks) - len(bad)} of {len(checks)} sources ready" + (f"; not ready: {', '.join(bad)}"
                                                                               if bad else "")]
    return "\n".join(lines)
