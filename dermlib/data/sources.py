"""Loading real datasets: `load_source(name, root)` for one dataset, `build_manifest(cfg)` for every source of a
profile (the `paper` profile), with a report that counts every row left out and why.

Partitions are not assigned here (split/partition stay NA): `dermlib.data.assign_partitions` does that.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dermlib.data.harmonise import REPORT_COLUMNS, count_reasons, label_report
from dermlib.data.loaders_external import load_ddi, load_fitzpatrick17k, load_med_node, load_skinl2
from dermlib.data.loaders_isic import load_bcn20000, load_ham10000, load_isic2019, load_isic2020
from dermlib.data.loaders_other import load_derm7pt_clinic, load_derm7pt_derm, load_pad_ufes_20, load_ph2
from dermlib.data.loading import SKIPPED_COLUMNS, Loaded, spec_of
from dermlib.data.registry import SOURCES
from dermlib.data.schema import validate_manifest
from dermlib.workdir import WorkDir

log = logging.getLogger(__name__)

LOADERS: dict[str, Callable[[str | Path, bool], Loaded]] = {
    "ham10000": load_ham10000, "bcn20000": load_bcn20000, "isic2019": load_isic2019, "isic2020": load_isic2020,
    "pad_ufes_20": load_pad_ufes_20, "derm7pt_derm": load_derm7pt_derm, "derm7pt_clinic": load_derm7pt_clinic,
    "ph2": load_ph2, "skinl2": load_skinl2, "fitzpatrick17k": load_fitzpatrick17k, "ddi": load_ddi,
    "med_node": load_med_node,
}
REASON_DUPLICATE = "same ISIC image already loaded from an earlier source"
REASON_LIMIT = "over data.limit_per_source"


def limit_rows(frame: pd.DataFrame, limit: int) -> pd.Series:
    """Which rows to keep so that each source has at most `limit`, taking its classes in turn (row order kept
    within a class), so a small rehearsal still sees every class a source has."""
    rank = frame.groupby(["source", "label"], sort=False).cumcount()
    order = frame.assign(_rank=rank, _row=np.arange(len(frame))).sort_values(["source", "_rank", "label", "_row"],
                                                                              kind="stable")
    chosen = order.groupby("source", sort=False).head(limit).index
    return frame.index.isin(chosen)


def load_with_skipped(name: str, root: str | Path, strict: bool = True) -> Loaded:
    """(manifest of every metadata row with its image, rows skipped and why) for one source."""
    spec_of(name)
    return LOADERS[name](root, strict)


def load_source(name: str, root: str | Path, *, strict: bool = True) -> pd.DataFrame:
    """One real dataset as a manifest (split/partition NA; `label` NA where the raw label has no ISIC8 class).

    strict=True: a metadata row whose image is absent raises FileNotFoundError naming file and row.
    strict=False: such rows are skipped with a logged count; `load_with_skipped` returns them with the reason.
    """
    manifest, skipped = load_with_skipped(name, root, strict)
    if len(skipped):
        log.warning("%s: %d metadata rows skipped (%s); load_with_skipped lists them", name, len(skipped),
                    ", ".join(f"{n} {r}" for r, n in skipped["reason"].value_counts().items()))
    return manifest


def _isic_ids(manifest: pd.DataFrame) -> pd.Series:
    """attributes.isic_id per row (NA for non-ISIC sources)."""
    ids = [json.loads(text).get("isic_id") for text in manifest["attributes"]]
    return pd.Series(ids, index=manifest.index, dtype="string")


def build_manifest(cfg: dict[str, Any], *, dedupe: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Load every source in cfg["data"]["sources"] and keep the rows with a harmonised label.

    Roots come from cfg["data"]["roots"][name], default <work_dir>/datasets/<name>; cfg["data"]["strict_images"]
    (default True) is passed to the loaders. With `dedupe`, an ISIC image present in several sources (HAM10000 and
    BCN20000 are inside ISIC 2019) is kept once, in the first source of the list. Returns (manifest, report): the
    report counts every row left out (label excluded/unknown/missing, image missing, duplicate) per source.
    """
    data = cfg["data"]
    sources = [data["sources"]] if isinstance(data["sources"], str) else list(data["sources"])
    unknown = [s for s in sources if s not in SOURCES]
    if unknown:
        raise ValueError(f"build_manifest reads real datasets; {unknown} are not in the registry {sorted(SOURCES)} "
                         f"(the demo profile's SynthDerm is made by dermlib.data.synthderm.generate)")
    roots = data.get("roots") or {}
    strict = bool(data.get("strict_images", True))
    manifests, skipped = [], []
    for name in sources:
        root = Path(roots.get(name, WorkDir.of(cfg).datasets / name))
        manifest, skip = load_with_skipped(name, root, strict)
        log.info("%s: %d rows loaded from %s (%d skipped)", name, len(manifest), root, len(skip))
        manifests.append(manifest)
        skipped.append(skip)
    full = pd.concat(manifests, ignore_index=True)
    report_parts = [label_report(full), count_reasons(pd.concat(skipped, ignore_index=True)[SKIPPED_COLUMNS])]
    kept = full[full["label"].notna()]
    if dedupe:
        isic_ids = _isic_ids(kept)
        dup = isic_ids.duplicated() & isic_ids.notna()
        report_parts.append(count_reasons(kept[dup].assign(reason=REASON_DUPLICATE)[["source", "label_raw", "reason"]]))
        kept = kept[~dup]
    limit = data.get("limit_per_source")
    if limit is not None:
        keep = limit_rows(kept, int(limit))
        report_parts.append(count_reasons(kept[~keep].assign(reason=REASON_LIMIT)[["source", "label_raw", "reason"]]))
        kept = kept[keep]
    parts = [p for p in report_parts if not p.empty]
    report = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=REPORT_COLUMNS)
    report = report.astype({"source": "string", "label_raw": "string", "reason": "string", "n": "Int64"})
    report = report.sort_values(["source", "reason", "label_raw"], kind="stable", ignore_index=True)
    manifest = validate_manifest(kept.reset_index(drop=True), where="build_manifest")
    log.info("manifest: %d rows kept, %d left out (see report)", len(manifest), int(report["n"].sum()))
    return manifest, report
