"""What every notebook does first (one display style, paths shown relative) and the numbers a notebook records for
its tests and for the README (one JSON file per notebook in `<work_dir>/records/`)."""

from __future__ import annotations

import html
import json
import logging
import re
from pathlib import Path
from typing import Any

import pandas as pd

from dermlib.config import shown  # noqa: F401 (notebooks import shown from here)
from dermlib.plotstyle import setup_style
from dermlib.workdir import REPO_ROOT, WorkDir


def setup() -> None:
    """Rounded numbers (3 decimals), full cell text (no silent truncation), the one plot style, quiet logging."""
    pd.set_option("display.precision", 3)
    pd.set_option("display.max_colwidth", None)
    pd.set_option("display.width", 160)
    setup_style()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _path(work_dir: str | Path, notebook: str) -> Path:
    return WorkDir(work_dir).records / f"{notebook}.json"


def record(work_dir: str | Path, notebook: str, **values: Any) -> dict[str, Any]:
    """Merge `values` into the notebook's record file and return the whole record."""
    path = _path(work_dir, notebook)
    path.parent.mkdir(parents=True, exist_ok=True)
    current = json.loads(path.read_text()) if path.exists() else {}
    current.update(values)
    path.write_text(json.dumps(current, indent=2, sort_keys=True, default=float))
    return current


def read_records(work_dir: str | Path, notebook: str) -> dict[str, Any]:
    """The values a notebook recorded ({} when it has not run)."""
    path = _path(work_dir, notebook)
    return json.loads(path.read_text()) if path.exists() else {}



_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")


def escape_markdown(text: str) -> str:
    """Text written by an LLM (a note, a class description) made safe to show inside Markdown or HTML: tags become
    text (`<img onerror=...>` is shown, never run), Markdown syntax is literal (no `[x](javascript:...)` link), and
    line breaks are spaces. Every LLM text a notebook or report displays goes through here."""
    flat = " ".join(str(text).split())
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", html.escape(flat, quote=False))

# ------------------------------------------------------------------------------------------------- self-checks
# A student checks their numbers against the committed demo run: the numbers below, recorded by the notebooks of the
# plain demo (`write_reference`, called by `dermlib.pipeline`), and the committed results table. The lab preset
# shares the demo's data, notes and runs (its seeds are a subset), so the same reference serves it.
REFERENCE_DIR = REPO_ROOT / "figures" / "demo"
REFERENCE_KEYS = {"01_data": ("per_partition", "per_split"), "02_notes": ("n_ok",),
                  "03_train": ("best_val_kappa", "best_epoch")}  # 03's values are of the first seed (0)


def write_reference(work_dir: str | Path, out: Path = REFERENCE_DIR) -> Path:
    """`<out>/reference.json`: the `REFERENCE_KEYS` values of the run's records (no paths, no timings)."""
    records = {nb: read_records(work_dir, nb) for nb in REFERENCE_KEYS}
    reference = {nb: {k: records[nb][k] for k in keys if k in records[nb]} for nb, keys in REFERENCE_KEYS.items()}
    path = Path(out) / "reference.json"
    path.write_text(json.dumps(reference, indent=2, sort_keys=True, default=float) + "\n")
    return path


def reference_value(notebook: str, key: str, folder: Path = REFERENCE_DIR) -> Any:
    """One committed reference value (`write_reference`); a clear error when the reference lacks it."""
    path = Path(folder) / "reference.json"
    reference = json.loads(path.read_text()) if path.exists() else {}
    if key not in reference.get(notebook, {}):
        raise KeyError(f"{path} has no {notebook}/{key}: run the plain demo (./run_all.sh) to write it")
    return reference[notebook][key]


def reference_kappa(cfg: dict[str, Any], partition: str, folder: Path = REFERENCE_DIR) -> pd.Series:
    """Per strategy, the committed demo's pooled test κ on `partition`, averaged over this run's seeds (the lab's
    two seeds are two of the demo's ten), for the strategies this run evaluates."""
    results = pd.read_csv(Path(folder) / "results.csv")
    rows = results[(results["metric"] == "kappa") & (results["source"] == "pooled")
                   & (results["partition"] == partition) & results["seed"].isin(cfg["eval"]["seeds"])
                   & results["strategy"].isin(cfg["eval"]["strategies"])]
    return rows.groupby("strategy")["value"].mean()


def reference_differs(cfg: dict[str, Any]) -> str | None:
    """Why the committed demo is not this run's reference (None when it is): data, notes or training settings
    other than the demo's, or seeds or strategies the demo did not run."""
    from dermlib.config import get_config, note_settings

    demo = get_config("demo")
    for section, read in (("data", lambda c: c["data"]), ("train", lambda c: c["train"]), ("notes", note_settings)):
        mine, theirs = read(cfg), read(demo)
        changed = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        if changed:
            return f"your {section} settings differ from the demo's ({', '.join(changed)})"
    extra = set(map(str, cfg["eval"]["seeds"])) - set(map(str, demo["eval"]["seeds"]))
    extra |= set(cfg["eval"]["strategies"]) - set(demo["eval"]["strategies"])
    return f"the demo has no runs for {', '.join(sorted(extra))}" if extra else None


def self_check(cfg: dict[str, Any], what: str, yours: dict[str, float] | float, reference: dict[str, float] | float,
               tolerance: float = 0.01) -> pd.DataFrame:
    """Your numbers beside the committed demo run's, item by item, and one line saying whether they agree within
    `tolerance` (floating point differs a little between CPUs; more than that means something changed). Only your
    items are compared; one the reference lacks does not agree."""
    mine = pd.Series(yours if isinstance(yours, dict) else {what: yours}, dtype=float)
    ref = pd.Series(reference if isinstance(reference, dict) else {what: reference}, dtype=float)
    table = pd.DataFrame({"yours": mine, "reference (committed demo)": ref.reindex(mine.index)})  # your items
    difference = (table["yours"] - table["reference (committed demo)"]).abs()
    table["difference"] = difference.round(4)
    table["agrees"] = difference <= tolerance
    why = reference_differs(cfg)
    if why:
        print(f"self-check of {what}: {why}, so your numbers may differ from the reference; that is expected")
    elif table["agrees"].all():
        print(f"self-check of {what}: all {len(table)} agree with the committed demo within ±{tolerance:g}")
    else:
        bad = ", ".join(map(str, table.index[~table["agrees"]]))
        print(f"self-check of {what}: {bad} differ by more than ±{tolerance:g}: something changed (a knob, a seed, "
              f"the data or the library versions)")
    table.index.name = what
    return table
