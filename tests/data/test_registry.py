"""The registry of real datasets: twelve documented sources, one loader each."""

from __future__ import annotations

from dermlib.data import SOURCES, registry_table
from dermlib.data.sources import LOADERS


def test_registry_lists_twelve_documented_sources() -> None:
    names = ["ham10000", "bcn20000", "isic2019", "isic2020", "pad_ufes_20", "derm7pt_derm", "derm7pt_clinic", "ph2",
             "skinl2", "fitzpatrick17k", "ddi", "med_node"]
    assert sorted(SOURCES) == sorted(names) == sorted(LOADERS)
    for name, spec in SOURCES.items():
        assert spec.name == name and spec.modality in ("dermoscopic", "clinical")
        assert spec.licence_status in ("file", "repo", "unverified")
        assert spec.homepage and spec.download and spec.citation and spec.layout and spec.licence
    assert "isic image download --collections 249" in SOURCES["bcn20000"].download
    assert "isic-cli" in SOURCES["isic2020"].download
    assert SOURCES["ddi"].licence_status == "unverified" and SOURCES["pad_ufes_20"].licence == "CC BY 4.0"
    table = registry_table()
    assert table["name"].tolist() == list(SOURCES) and table["modality"].value_counts()["clinical"] == 5
