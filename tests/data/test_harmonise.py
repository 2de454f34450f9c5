"""Label harmonisation: every source's raw labels onto ISIC8 (label_map.csv), and the report of what is left out."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from dermlib.data import ISIC8, SOURCES, harmonise, label_report, label_table, load_source
from tests.fakes.layouts import raw_csv


def test_bowen_and_scc_in_situ_are_ak_in_every_source() -> None:
    """One rule (ISIC 2019: AK includes intraepithelial carcinoma), whatever the source calls it."""
    table = label_table()
    in_situ = table["label_raw"].str.contains(r"bowen|^bow$|akiec|intraepi|squamous.cell.carcinoma.in.situ",
                                              case=False, regex=True)
    assert set(table.loc[in_situ, "source"]) >= {"ham10000", "pad_ufes_20", "ddi"}
    assert (table.loc[in_situ, "label"] == "AK").all(), table[in_situ]
    assert harmonise("pad_ufes_20", pd.Series(["BOW"])).tolist() == harmonise("ham10000", pd.Series(["akiec"])).tolist()


def test_label_table_covers_every_source_with_isic8_classes() -> None:
    table = label_table()
    assert set(table["source"]) == set(SOURCES)
    assert table["label"].dropna().isin(ISIC8).all()
    for source in SOURCES:  # every source can produce at least two classes
        assert table.loc[table["source"] == source, "label"].dropna().nunique() >= 2
    out = harmonise("pad_ufes_20", pd.Series([" nev ", "MEL", "not-a-label", None]))
    assert out.iloc[:2].tolist() == ["NV", "MEL"] and out.iloc[2:].isna().all()


def test_unknown_label_is_excluded_and_reported(fake_samples: Path, tmp_path: Path) -> None:
    root = tmp_path / "pad"
    shutil.copytree(fake_samples / "PAD-UFES-20", root)
    meta = raw_csv(root / "metadata.csv")
    meta.loc[0, "diagnostic"] = "XYZ"
    meta.to_csv(root / "metadata.csv", index=False)
    m = load_source("pad_ufes_20", root)
    assert m["label"].isna().sum() == 1 and m.loc[m["label"].isna(), "label_raw"].tolist() == ["XYZ"]
    report = label_report(m)
    assert report.to_dict("records") == [{"source": "pad_ufes_20", "label_raw": "XYZ",
                                          "reason": "label not in label_map.csv", "n": 1}]
