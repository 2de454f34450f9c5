"""build_manifest: every configured source loaded, deduplicated across ISIC sources, limited per source, and every
row left out counted with its reason (hand-counted on the fakes of tests/fakes/layouts.py)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from dermlib.config import get_config
from dermlib.data import build_manifest
from dermlib.data.schema import validate_manifest
from tests.fakes.layouts import JPEG, raw_csv, write_files
from tests.fakes.manifests import EXCLUDED, MISSING, UNKNOWN, values


def test_build_manifest_on_fakes_counts_every_row(fake_root: Callable[[str], Path], fake_samples: Path,
                                                  tmp_path: Path) -> None:
    """Hand-counted: HAM 8 kept; BCN 5 of 8 (no label, Scar, unknown label); ISIC 2019 6 of 10 (UNK excluded, 3
    images already loaded from HAM10000 / BCN20000); PAD samples 5; MED-NODE 3."""
    write_files([str(tmp_path / "datasets" / "med_node" / "naevus" / f"{i}.jpg") for i in range(3)], JPEG)
    cfg = get_config("paper", {"data.sources": ["ham10000", "bcn20000", "isic2019", "pad_ufes_20", "med_node"],
                               "data.roots.ham10000": str(fake_root("ham10000")),
                               "data.roots.bcn20000": str(fake_root("bcn20000")),
                               "data.roots.isic2019": str(fake_root("isic2019")),
                               "data.roots.pad_ufes_20": str(fake_samples / "PAD-UFES-20"),
                               "work_dir": str(tmp_path)})
    manifest, report = build_manifest(cfg)
    validate_manifest(manifest)
    assert manifest["source"].value_counts().to_dict() == {"ham10000": 8, "bcn20000": 5, "isic2019": 6,
                                                           "pad_ufes_20": 5, "med_node": 3}
    assert not manifest["sample_id"].isin(["isic2019/ISIC_0024401", "isic2019/ISIC_0029400",
                                           "isic2019/ISIC_0090001"]).any()
    got = {(s, None if pd.isna(r) else r, why, int(n)) for s, r, why, n in report.itertuples(index=False)}
    dup = "same ISIC image already loaded from an earlier source"
    assert got == {("bcn20000", None, MISSING, 1), ("bcn20000", "Scar", EXCLUDED, 1),
                   ("bcn20000", "Atypical melanocytic neoplasm", UNKNOWN, 1), ("isic2019", "UNK", EXCLUDED, 1),
                   ("isic2019", "NV", dup, 2), ("isic2019", "MEL", dup, 1)}
    # data.limit_per_source takes one row of each class first (classes in sorted order: AK, BCC, ...), so the two
    # NV rows that open the HAM file are not what a limit of 2 keeps
    cfg["data"]["limit_per_source"] = 2
    limited, _ = build_manifest(cfg)
    ham = limited[limited["source"] == "ham10000"]
    assert values(ham["sample_id"]) == ["ham10000/ISIC_0029401", "ham10000/ISIC_0031000"]


def test_build_manifest_counts_absent_images_when_not_strict(fake_samples: Path, tmp_path: Path) -> None:
    root = tmp_path / "ham"
    shutil.copytree(fake_samples / "HAM10000", root)
    gone = sorted(root.rglob("ISIC_*.jpg"))[:2]
    labels = raw_csv(root / "HAM10000_metadata.csv").set_index("image_id").loc[[p.stem for p in gone], "dx"]
    for path in gone:
        path.unlink()
    cfg = get_config("paper", {"data.sources": ["ham10000"], "data.roots.ham10000": str(root),
                               "data.strict_images": False, "work_dir": str(tmp_path)})
    manifest, report = build_manifest(cfg)
    assert len(manifest) == 6 and not manifest["sample_id"].isin([f"ham10000/{p.stem}" for p in gone]).any()
    assert report["reason"].unique().tolist() == ["image file missing"] and report["n"].sum() == 2
    assert sorted(report["label_raw"].repeat(report["n"])) == sorted(labels)
    with pytest.raises(FileNotFoundError, match="images listed in"):
        build_manifest(get_config("paper", {"data.sources": ["ham10000"], "data.roots.ham10000": str(root)}))
    with pytest.raises(ValueError, match="not in the registry"):
        build_manifest(get_config("demo"))
