"""SynthDerm (synthetic data, dermlib.data.synthderm): determinism, schema, class-conditional ground truth that is
visible in the pixels, per-source missing-metadata patterns."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermlib.data.labels import ISIC8
from dermlib.data.schema import SITES, load_attributes, read_manifest, validate_manifest
from dermlib.data.synthderm import (
    COLORS,
    STRUCTURES,
    SYNTH_SOURCES,
    generate,
    sample_lesion,
    sources_table,
)

SMALL = 24  # per internal source; external sources get half


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    return generate(tmp_path_factory.mktemp("synth") / "sd", n_per_source=SMALL, seed=3, image_size=64)


def _digest(paths: pd.Series) -> list[str]:
    return [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths]


def test_same_seed_same_bytes_and_manifest(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", n_per_source=4, seed=7, image_size=48)
    b = generate(tmp_path / "b", n_per_source=4, seed=7, image_size=48, workers=2)  # parallel == serial
    c = generate(tmp_path / "c", n_per_source=4, seed=8, image_size=48)
    cols = [col for col in a.columns if col != "image_path"]
    pd.testing.assert_frame_equal(a[cols], b[cols])
    assert _digest(a["image_path"]) == _digest(b["image_path"])
    assert _digest(a["image_path"]) != _digest(c["image_path"])
    assert not a["attributes"].equals(c["attributes"])


def test_a_folder_generated_from_the_same_settings_is_reused(tmp_path: Path) -> None:
    """A second call with the same counts, seed and size reads the folder back (no image rewritten); another seed,
    or a missing image, generates again."""
    first = generate(tmp_path, n_per_source=3, seed=2, image_size=32)
    times, pixels = {p: Path(p).stat().st_mtime_ns for p in first["image_path"]}, _digest(first["image_path"])
    again = generate(tmp_path, n_per_source=3, seed=2, image_size=32)
    pd.testing.assert_frame_equal(again, first)
    assert {p: Path(p).stat().st_mtime_ns for p in again["image_path"]} == times
    Path(first["image_path"].iloc[0]).unlink()
    assert _digest(generate(tmp_path, n_per_source=3, seed=2, image_size=32)["image_path"]) == pixels
    assert _digest(generate(tmp_path, n_per_source=3, seed=3, image_size=32)["image_path"]) != pixels


def test_one_image_does_not_depend_on_how_many_are_made(tmp_path: Path) -> None:
    few = generate(tmp_path / "few", n_per_source={"synthderm_dermo_a": 3}, seed=1, image_size=48)
    many = generate(tmp_path / "many", n_per_source={"synthderm_dermo_a": 9}, seed=1, image_size=48)
    assert _digest(few["image_path"]) == _digest(many["image_path"].head(3))


def test_manifest_schema_and_files(small: pd.DataFrame) -> None:
    validate_manifest(small)
    stored = read_manifest(Path(small["image_path"].iloc[0]).parents[1] / "manifest.parquet")
    pd.testing.assert_frame_equal(stored, small)
    assert small["source"].str.startswith("synthderm_").all()  # labelled synthetic in the source name
    assert set(small["source"]) == set(SYNTH_SOURCES) and len(SYNTH_SOURCES) == 11
    counts = small.groupby("source").size()
    for name, spec in SYNTH_SOURCES.items():
        assert counts[name] == (SMALL if spec["partition"] == "internal" else SMALL // 2)
    assert small["label"].isin(ISIC8).all()
    assert small["split"].isna().all() and small["partition"].isna().all()
    assert small["site"].dropna().isin(SITES).all()
    assert small["fitzpatrick"].dropna().between(1, 6).all()
    for path, modality in zip(small["image_path"], small["modality"]):
        with Image.open(path) as im:
            assert im.mode == "RGB" and min(im.size) >= 48
        assert modality == SYNTH_SOURCES[Path(path).parent.name]["modality"]
    table = sources_table()
    assert (table["partition"] == "internal").sum() == 6 and (table["partition"] == "external").sum() == 5


def test_attributes_are_ground_truth_and_coherent(small: pd.DataFrame) -> None:
    for text in small["attributes"]:
        attrs = load_attributes(text)
        assert attrs["synthetic"] is True
        assert attrs["asymmetry"] in (0, 1, 2) and attrs["border"] in ("regular", "irregular")
        assert attrs["colors"] and set(attrs["colors"]) <= set(COLORS)
        assert set(attrs["structures"]) <= set(STRUCTURES)
        assert 0.5 < attrs["diameter_mm"] < 40
        if "blue-whitish veil" in attrs["structures"]:
            assert {"blue-gray", "white"} <= set(attrs["colors"])
        if "vascular structures" in attrs["structures"]:
            assert "red" in attrs["colors"]
    boxed = small[small["source"].map(lambda s: SYNTH_SOURCES[s]["bbox"])]
    assert len(boxed) and all("bbox" in load_attributes(t) for t in boxed["attributes"])


def test_images_of_one_lesion_share_label_and_attributes(small: pd.DataFrame) -> None:
    grouped = small.dropna(subset=["lesion_id"]).groupby("lesion_id")
    assert (grouped.size() == 2).all()
    assert (grouped["label"].nunique() == 1).all() and (grouped["attributes"].nunique() == 1).all()
    pats = small.dropna(subset=["patient_id"]).groupby("patient_id")
    assert (pats.size() > 1).any()
    assert (pats["sex"].nunique(dropna=True) <= 1).all() and (pats["age"].nunique(dropna=True) <= 1).all()


def test_class_conditional_attributes_differ() -> None:
    rng = np.random.default_rng(0)
    draws = {c: [sample_lesion(c, 2, rng) for _ in range(400)] for c in ISIC8}

    def rate(cls: str, pred) -> float:
        return float(np.mean([pred(lesion) for lesion in draws[cls]]))

    assert rate("MEL", lambda l: "black" in l.colors) > rate("NV", lambda l: "black" in l.colors) + 0.3
    assert rate("MEL", lambda l: l.asymmetry == 2) > rate("NV", lambda l: l.asymmetry == 2) + 0.3
    assert rate("MEL", lambda l: l.border == "irregular") > rate("NV", lambda l: l.border == "irregular") + 0.4
    assert rate("NV", lambda l: "pigment network" in l.structures) > rate("BCC", lambda l: "pigment network" in
                                                                         l.structures) + 0.5
    assert rate("VASC", lambda l: "red" in l.colors) > 0.85
    sizes = {c: np.median([l.diameter_mm for l in draws[c]]) for c in ISIC8}
    assert sizes["MEL"] > sizes["NV"] + 2
    # ... but not separable: every class shares attributes with others
    assert 0.05 < rate("NV", lambda l: l.asymmetry >= 1) and rate("MEL", lambda l: l.asymmetry == 0) > 0.03
    assert rate("BKL", lambda l: "pigment network" in l.structures) > 0.05


def test_declared_colours_visible_across_the_dataset(small: pd.DataFrame) -> None:
    dermo = small[small["modality"] == "dermoscopic"]
    reds, others = [], []
    for path, text in zip(dermo["image_path"], dermo["attributes"]):
        img = np.asarray(Image.open(path).convert("RGB")).astype(int)
        red = ((img[..., 0] > img[..., 1] + 90) & (img[..., 0] > img[..., 2] + 80)).mean()
        (reds if "red" in load_attributes(text)["colors"] else others).append(red)
    assert np.median(reds) > 3 * max(np.median(others), 1e-4)


def test_missing_metadata_patterns_per_source(small: pd.DataFrame) -> None:
    by_source = {name: frame for name, frame in small.groupby("source")}
    for name, spec in SYNTH_SOURCES.items():
        for column, p_missing in spec["missing"].items():
            values = by_source[name][column]
            if p_missing >= 1.0:
                assert values.isna().all(), (name, column)
            elif p_missing == 0.0:
                assert values.notna().all(), (name, column)
    # the patterns differ between sources, as in the real collections
    assert by_source["synthderm_dermo_d"]["age"].isna().all() and by_source["synthderm_dermo_d"]["site"].notna().all()
    assert by_source["synthderm_ext_clinic_b"]["fitzpatrick"].notna().all()
    assert by_source["synthderm_ext_clinic_b"]["fitzpatrick"].mean() > by_source["synthderm_clinic_a"][
        "fitzpatrick"].mean()


def test_bad_arguments_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown SynthDerm sources.*ham10000"):
        generate(tmp_path, n_per_source=2, sources=["ham10000"])
    with pytest.raises(ValueError, match="image_size=8 is too small"):
        generate(tmp_path, n_per_source=2, image_size=8)
