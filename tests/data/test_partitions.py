"""Partitions (dermlib.data.partitions): internal sources split by lesion and patient groups, stratified and
seeded; external sources are test only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dermlib.data import assign_partitions, split_summary, to_manifest
from dermlib.data.partitions import split_groups


def _partition_frame(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """Two internal-like sources with lesion and patient ids (some rows have neither) and one external."""
    rng = np.random.default_rng(seed)
    rows = []
    for source in ("real_a", "real_b", "real_ext"):
        for i in range(n):
            lesion = i // 2
            rows.append({
                "sample_id": f"{source}/{i}", "source": source, "image_path": f"/x/{source}/{i}.jpg",
                "modality": "dermoscopic", "label_raw": "x", "label": ["NV", "MEL", "BKL", "BCC"][lesion % 4],
                "lesion_id": f"L{lesion}" if i % 10 else None,
                "patient_id": f"P{lesion // 3}" if source == "real_b" else None,
            })
    frame = to_manifest(pd.DataFrame(rows))
    return frame.sample(frac=1.0, random_state=int(rng.integers(1000))).reset_index(drop=True)


CONFIG = {"internal": ["real_a", "real_b"], "external": ["real_ext"], "split_fractions": [0.6, 0.2, 0.2], "seed": 0}


def test_partitions_keep_groups_whole_and_match_fractions() -> None:
    out = assign_partitions(_partition_frame(), CONFIG)
    internal = out[out["partition"] == "internal"]
    for col in ("lesion_id", "patient_id"):
        per_group = internal.dropna(subset=[col]).groupby(["source", col])["split"].nunique()
        assert per_group.max() == 1, col
    for _, frame in internal.groupby("source"):
        shares = frame["split"].value_counts(normalize=True)
        assert abs(shares["train"] - 0.6) < 0.05 and abs(shares["val"] - 0.2) < 0.05
        assert abs(shares["test"] - 0.2) < 0.05
        by_class = frame.groupby("label")["split"].apply(lambda s: (s == "test").mean())
        assert by_class.between(0.1, 0.3).all()  # stratified
    assert (out.loc[out["source"] == "real_ext", "split"] == "test").all()
    assert set(out.loc[out["source"] == "real_ext", "partition"]) == {"external"}
    table = split_summary(out)
    assert table.set_index("source").loc["real_ext", "test"] == 600


def test_partitions_are_deterministic_and_seeded() -> None:
    frame = _partition_frame()
    a = assign_partitions(frame, CONFIG)
    b = assign_partitions(frame, CONFIG)
    c = assign_partitions(frame, {**CONFIG, "seed": 1})
    assert a["split"].equals(b["split"]) and not a["split"].equals(c["split"])
    paper = assign_partitions(frame, {**CONFIG, "split_fractions": [0.7, 0.1, 0.2]})
    shares = paper.loc[paper["source"] == "real_a", "split"].value_counts(normalize=True)
    assert abs(shares["train"] - 0.7) < 0.05 and abs(shares["val"] - 0.1) < 0.04


def test_groups_link_lesions_through_patients() -> None:
    frame = to_manifest(pd.DataFrame({
        "sample_id": list("abcde"), "source": "s", "image_path": "p", "modality": "clinical", "label_raw": "x",
        "lesion_id": ["L1", "L2", "L2", None, None], "patient_id": ["P1", "P1", None, None, "P9"]}))
    groups = split_groups(frame)
    assert groups[0] == groups[1] == groups[2] and len({groups[0], groups[3], groups[4]}) == 3


def test_tiny_sources_still_split() -> None:
    frame = _partition_frame(n=8)
    out = assign_partitions(frame, {**CONFIG, "split_fractions": [0.7, 0.1, 0.2]})
    assert out["split"].notna().all()
    internal = out[out["partition"] == "internal"]
    assert internal.dropna(subset=["lesion_id"]).groupby(["source", "lesion_id"])["split"].nunique().max() == 1


def test_synthderm_sources_default_to_their_own_partition_and_errors_name_the_source() -> None:
    frame = _partition_frame(n=20)
    synth = frame.assign(source=frame["source"].map({"real_a": "synthderm_dermo_a", "real_b": "synthderm_clinic_a",
                                                     "real_ext": "synthderm_ext_dermo_b"}))
    out = assign_partitions(synth, {"internal": None, "external": None, "split_fractions": [0.6, 0.2, 0.2]})
    assert out.groupby("source")["partition"].first().to_dict() == {
        "synthderm_clinic_a": "internal", "synthderm_dermo_a": "internal", "synthderm_ext_dermo_b": "external"}
    with pytest.raises(ValueError, match=r"source 'real_ext' is in neither data.internal \['real_a', 'real_b'\]"):
        assign_partitions(frame, {**CONFIG, "external": []})
    with pytest.raises(ValueError, match=r"\['real_a'\] are listed as both internal and external"):
        assign_partitions(frame, {**CONFIG, "external": ["real_ext", "real_a"]})
    with pytest.raises(ValueError, match="split_fractions must be three non-negative numbers summing to 1"):
        assign_partitions(frame, {**CONFIG, "split_fractions": [0.5, 0.2]})


def test_a_lesion_seen_by_two_internal_sources_stays_in_one_split() -> None:
    """Derm7pt's dermoscopic and clinical views share a lesion_id: both views must land in the same split."""
    rows = [{"sample_id": f"{view}/{i}", "source": view, "image_path": f"/x/{view}/{i}.jpg",
             "modality": "dermoscopic" if view == "derm" else "clinical", "label_raw": "x",
             "label": ["NV", "MEL", "BKL", "BCC"][i % 4], "lesion_id": f"derm7pt/{i}"}
            for view in ("derm", "clinic") for i in range(200)]
    out = assign_partitions(to_manifest(pd.DataFrame(rows)), {**CONFIG, "internal": ["derm", "clinic"], "external": []})
    assert out.groupby("lesion_id")["split"].nunique().max() == 1
    shares = out["split"].value_counts(normalize=True)
    assert abs(shares["train"] - 0.6) < 0.06 and abs(shares["test"] - 0.2) < 0.06
