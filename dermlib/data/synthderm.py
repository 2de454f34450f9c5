"""SynthDerm: a procedural, seeded benchmark of SYNTHETIC lesion images with metadata and ground-truth attributes.

It stands in for the eleven real datasets when nothing can be downloaded. Each of the eleven simulated sources
(all named `synthderm_*`) has its own class prior, image size, colour cast, blur/noise, artefacts and
missing-metadata pattern; six are internal and five external (domain-shifted), mirroring the paper's partitions.
Each class has distributions over visual attributes (asymmetry, border, colours, dermoscopic structures,
diameter) and metadata (age, sex, site, Fitzpatrick type) that overlap, so the task is learnable but not trivial.
The drawn attributes are stored in `attributes` (with `synthetic: true`), so a note's claims can be checked;
`diameter_mm` is the lesion's mean diameter as drawn (the ruler ticks of dermoscopic sources are 1 mm apart).
Sources whose real counterpart annotates findings also *record* some of them, with annotation noise, under
`attributes["recorded"]` in that dataset's own terms (Derm7pt's seven-point criteria, PH2's colours and
structures, PAD-UFES-20's lesion diameters): that is metadata a note may use. The drawn ground truth stays
hidden from every note of the paper's strategies and serves the audit; only the labelled grounded controls (M+G,
M+Gs: `dermlib.notes.controls`) state it, through the same annotation noise (`present_call`).

Every image is a pure function of (seed, source, index): runs are reproducible and can be split across workers.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from dermlib.data.labels import CLASS_NAMES, ISIC8
from dermlib.data.schema import SITES, dump_attributes, save_manifest, to_manifest
from dermlib.data.synthderm_render import MAX_RADIUS, Lesion, render
from dermlib.progress import progress

# The band SynthDerm is calibrated to: image-only Cohen's kappa on the internal test set (learnable, not solved)
CALIBRATION_KAPPA = (0.45, 0.60)
COLORS = ["light brown", "dark brown", "black", "blue-gray", "red", "white"]
STRUCTURES = ["pigment network", "dots/globules", "streaks", "blue-whitish veil", "regression structures",
              "vascular structures"]

# P(colour present | class), columns in COLORS order.
COLOR_PROB: dict[str, list[float]] = {
    "MEL": [0.55, 0.85, 0.60, 0.50, 0.25, 0.30], "NV": [0.85, 0.55, 0.05, 0.05, 0.05, 0.03],
    "BCC": [0.35, 0.20, 0.15, 0.70, 0.55, 0.30], "AK": [0.45, 0.12, 0.03, 0.03, 0.80, 0.50],
    "BKL": [0.80, 0.55, 0.20, 0.08, 0.08, 0.35], "DF": [0.80, 0.30, 0.03, 0.03, 0.20, 0.70],
    "VASC": [0.05, 0.05, 0.12, 0.50, 0.92, 0.08], "SCC": [0.35, 0.12, 0.05, 0.05, 0.70, 0.60],
}
# P(structure present | class), columns in STRUCTURES order.
STRUCTURE_PROB: dict[str, list[float]] = {
    "MEL": [0.55, 0.50, 0.45, 0.45, 0.35, 0.15], "NV": [0.75, 0.40, 0.08, 0.03, 0.03, 0.03],
    "BCC": [0.03, 0.50, 0.05, 0.20, 0.12, 0.75], "AK": [0.10, 0.12, 0.02, 0.02, 0.10, 0.45],
    "BKL": [0.15, 0.45, 0.04, 0.04, 0.30, 0.08], "DF": [0.60, 0.10, 0.02, 0.02, 0.20, 0.10],
    "VASC": [0.02, 0.55, 0.02, 0.12, 0.04, 0.60], "SCC": [0.04, 0.30, 0.04, 0.04, 0.15, 0.70],
}
ASYMMETRY_PROB: dict[str, list[float]] = {  # P(0, 1, 2 axes of asymmetry | class)
    "MEL": [0.10, 0.35, 0.55], "NV": [0.65, 0.27, 0.08], "BCC": [0.30, 0.40, 0.30], "AK": [0.35, 0.40, 0.25],
    "BKL": [0.40, 0.40, 0.20], "DF": [0.65, 0.27, 0.08], "VASC": [0.60, 0.30, 0.10], "SCC": [0.20, 0.40, 0.40],
}
IRREGULAR_PROB = {"MEL": 0.75, "NV": 0.12, "BCC": 0.45, "AK": 0.5, "BKL": 0.3, "DF": 0.15, "VASC": 0.15, "SCC": 0.55}
DIAMETER_MEDIAN_MM = {"MEL": 8.5, "NV": 5.0, "BCC": 7.0, "AK": 5.0, "BKL": 7.5, "DF": 5.0, "VASC": 4.5, "SCC": 9.0}
AGE_MEAN_SD = {"MEL": (60, 15), "NV": (42, 16), "BCC": (66, 12), "AK": (68, 11), "BKL": (62, 14), "DF": (44, 15),
               "VASC": (50, 20), "SCC": (70, 11)}
MALE_PROB = {"MEL": 0.55, "NV": 0.5, "BCC": 0.55, "AK": 0.6, "BKL": 0.52, "DF": 0.35, "VASC": 0.5, "SCC": 0.62}
# P(site | class) over the harmonised SITES used here.
SITE_NAMES = [s for s in SITES if s not in ("lateral torso", "torso", "acral")]  # head/neck ... oral/genital
SITE_PROB: dict[str, list[float]] = {
    "MEL": [0.15, 0.15, 0.20, 0.15, 0.28, 0.05, 0.02], "NV": [0.07, 0.15, 0.20, 0.20, 0.32, 0.04, 0.02],
    "BCC": [0.45, 0.10, 0.08, 0.15, 0.20, 0.00, 0.02], "AK": [0.55, 0.28, 0.07, 0.05, 0.05, 0.00, 0.00],
    "BKL": [0.30, 0.12, 0.10, 0.20, 0.26, 0.00, 0.02], "DF": [0.03, 0.22, 0.55, 0.10, 0.10, 0.00, 0.00],
    "VASC": [0.15, 0.20, 0.25, 0.18, 0.14, 0.03, 0.05], "SCC": [0.45, 0.30, 0.12, 0.08, 0.05, 0.00, 0.00],
}
FITZ_LIGHT = [0.25, 0.45, 0.2, 0.07, 0.02, 0.01]
FITZ_MIXED = [0.1, 0.3, 0.3, 0.17, 0.09, 0.04]
FITZ_DARK = [0.05, 0.12, 0.18, 0.22, 0.23, 0.2]


# Annotation noise of recorded findings: a present/absent call flips, an asymmetry score moves by one axis.
RECORD_FLIP = 0.1
RECORD_ASYMMETRY_SLIP = 0.15
RECORD_DIAMETER_SD_MM = 0.8


def _source(role: str, modality: str, partition: str, prior: list[float], **look: Any) -> dict[str, Any]:
    """One simulated source: defaults for a dermoscopic/clinical look, overridden by `look`."""
    base = {
        "role": role, "modality": modality, "partition": partition, "synthetic": True,
        "class_prior": dict(zip(ISIC8, np.asarray(prior) / np.sum(prior))),
        "size": (0.75, 1.0), "field_mm": 24.0 if modality == "dermoscopic" else 40.0, "format": "jpg",
        "fov": 0.0, "fov_radius": (0.42, 0.56), "hair": 0.3, "ruler": 0.1, "vignette": 0.25, "background": 0.0,
        "bbox": False,
        "cast": (1.0, 1.0, 1.0), "blur": 0.5, "noise": 3.0, "images_per_lesion": 1, "lesions_per_patient": 0,
        "fitzpatrick": FITZ_LIGHT, "age_round": 1, "relative_size": 1.0 if partition == "internal" else 0.5,
        "missing": {"age": 0.02, "sex": 0.02, "site": 0.05, "fitzpatrick": 1.0},
        "records": None,  # which findings the source annotates: None | "derm7pt" | "ph2" | "pad_ufes"
    }
    if modality == "clinical":
        base.update(hair=0.0, ruler=0.0, vignette=0.0, background=0.5, blur=0.9, noise=4.0, fitzpatrick=FITZ_MIXED)
    base.update(look)
    return base


#                              MEL   NV   BCC   AK  BKL   DF  VASC  SCC
SYNTH_SOURCES: dict[str, dict[str, Any]] = {
    "synthderm_dermo_a": _source("HAM10000-like dermoscopy", "dermoscopic", "internal",
                                 [12, 40, 8, 6, 14, 6, 7, 7], images_per_lesion=2, age_round=5),
    "synthderm_dermo_b": _source("BCN20000-like dermoscopy with a circular field of view", "dermoscopic", "internal",
                                 [22, 24, 14, 7, 11, 6, 6, 10], size=(1.0, 1.0), fov=0.9, hair=0.5,
                                 fov_radius=(0.4, 0.5),
                                 cast=(1.03, 0.96, 0.97), noise=4.0, images_per_lesion=2,
                                 missing={"age": 0.06, "sex": 0.05, "site": 0.12, "fitzpatrick": 1.0}),
    "synthderm_dermo_c": _source("ISIC2020-like dermoscopy, patient-grouped", "dermoscopic", "internal",
                                 [18, 44, 6, 5, 13, 5, 4, 5], size=(1.0, 1.0), fov=0.3, lesions_per_patient=3,
                                 cast=(0.98, 1.0, 1.03), age_round=5,
                                 missing={"age": 0.03, "sex": 0.02, "site": 0.08, "fitzpatrick": 1.0}),
    "synthderm_dermo_d": _source("Derm7pt-like dermoscopy (no age)", "dermoscopic", "internal",
                                 [28, 32, 8, 3, 12, 6, 6, 5], fov=0.6, ruler=0.35, format="png",
                                 records="derm7pt", missing={"age": 1.0, "sex": 0.0, "site": 0.0, "fitzpatrick": 1.0}),
    "synthderm_clinic_a": _source("PAD-UFES-20-like smartphone photos", "clinical", "internal",
                                  [8, 14, 24, 18, 12, 3, 3, 18], size=(1.0, 1.0), field_mm=30.0, format="png",
                                  background=0.2, lesions_per_patient=2, noise=5.0,
                                  records="pad_ufes", missing={"age": 0.0, "sex": 0.3, "site": 0.0, "fitzpatrick": 0.3}),
    "synthderm_clinic_b": _source("Derm7pt-like clinical photos with boxes", "clinical", "internal",
                                  [28, 32, 8, 3, 12, 6, 6, 5], size=(1.125, 1.5), field_mm=50.0, bbox=True,
                                  background=0.7, records="derm7pt",
                                  missing={"age": 1.0, "sex": 0.0, "site": 0.0, "fitzpatrick": 1.0}),
    "synthderm_ext_dermo_a": _source("SKINL2-like light-field dermoscopy (external)", "dermoscopic", "external",
                                     [26, 34, 12, 4, 12, 6, 4, 2], size=(1.25, 1.25), fov=0.8, hair=0.15,
                                     cast=(0.9, 1.0, 1.1), blur=1.3, noise=6.0, vignette=0.4, format="png",
                                     missing={"age": 0.1, "sex": 0.1, "site": 0.3, "fitzpatrick": 1.0}),
    "synthderm_ext_dermo_b": _source("PH2-like dermoscopy, melanoma vs nevus (external)", "dermoscopic", "external",
                                     [25, 75, 0, 0, 0, 0, 0, 0], fov=1.0, fov_radius=(0.4, 0.48), hair=0.2, ruler=0.0,
                                     cast=(1.1, 0.94, 0.86), blur=0.8, format="png",
                                     records="ph2", missing={"age": 1.0, "sex": 1.0, "site": 1.0, "fitzpatrick": 1.0}),
    "synthderm_ext_clinic_a": _source("Fitzpatrick17k-like web photos (external)", "clinical", "external",
                                      [14, 14, 20, 10, 14, 6, 10, 12], field_mm=48.0, background=0.8,
                                      fitzpatrick=FITZ_DARK, blur=1.2, noise=8.0, cast=(1.06, 1.0, 0.92),
                                      missing={"age": 1.0, "sex": 1.0, "site": 1.0, "fitzpatrick": 0.08}),
    "synthderm_ext_clinic_b": _source("DDI-like photos of diverse skin tones (external)", "clinical", "external",
                                      [10, 26, 16, 5, 20, 10, 5, 8], size=(1.0, 1.0), field_mm=45.0,
                                      fitzpatrick=[0.0, 0.15, 0.2, 0.2, 0.25, 0.2], cast=(0.95, 1.02, 1.05),
                                      missing={"age": 1.0, "sex": 1.0, "site": 1.0, "fitzpatrick": 0.0}),
    "synthderm_ext_clinic_c": _source("MED-NODE-like clinical melanoma vs nevus (external)", "clinical", "external",
                                      [40, 60, 0, 0, 0, 0, 0, 0], field_mm=35.0, bbox=True, background=0.4,
                                      cast=(1.08, 0.98, 0.9), blur=1.0,
                                      missing={"age": 1.0, "sex": 1.0, "site": 1.0, "fitzpatrick": 1.0}),
}


def sources_table() -> pd.DataFrame:
    """SYNTH_SOURCES as a readable table (one row per simulated source)."""
    rows = []
    for name, spec in SYNTH_SOURCES.items():
        prior = {f"p_{k}": round(float(v), 2) for k, v in spec["class_prior"].items()}
        missing = [k for k, v in spec["missing"].items() if v >= 1.0]
        rows.append({"source": name, "role": spec["role"], "modality": spec["modality"],
                     "partition": spec["partition"], "format": spec["format"],
                     "always_missing": ", ".join(missing) or "-", "records": spec["records"] or "-", **prior})
    return pd.DataFrame(rows)


def _source_key(name: str) -> int:
    """A stable integer for a source name (seeds must not depend on dict order)."""
    return zlib.crc32(name.encode())


def sample_lesion(cls: str, fitzpatrick: int, rng: np.random.Generator) -> Lesion:
    """Draw the ground-truth visual attributes of one lesion of class `cls`."""
    colors = {c for c, p in zip(COLORS, COLOR_PROB[cls]) if rng.random() < p}
    structures = {s for s, p in zip(STRUCTURES, STRUCTURE_PROB[cls]) if rng.random() < p}
    # keep attributes coherent with what is drawn: a structure shows the colours it is made of
    if "blue-whitish veil" in structures:
        colors |= {"blue-gray", "white"}
    if "regression structures" in structures:
        colors |= {"white"}
    if "vascular structures" in structures:
        colors |= {"red"}
    if structures & {"streaks", "pigment network"} and not colors & {"dark brown", "black"}:
        colors |= {"dark brown"}
    if not colors - {"white", "black"}:  # a lesion needs a body colour
        colors |= {COLORS[int(np.argmax(COLOR_PROB[cls][:5]))]}
    return Lesion(
        asymmetry=int(rng.choice(3, p=ASYMMETRY_PROB[cls])),
        border="irregular" if rng.random() < IRREGULAR_PROB[cls] else "regular",
        colors=tuple(c for c in COLORS if c in colors),
        structures=tuple(s for s in STRUCTURES if s in structures),
        diameter_mm=round(float(DIAMETER_MEDIAN_MM[cls] * np.exp(rng.normal(0.0, 0.3))), 1),
        fitzpatrick=int(fitzpatrick),
        shape_seed=int(rng.integers(2**31)),
    )


def _metadata(cls: str, spec: dict[str, Any], lesion_rng: np.random.Generator,
              patient_rng: np.random.Generator) -> dict[str, Any]:
    """Age, sex, site and Fitzpatrick type of a lesion, with the source's missing-metadata pattern applied. In
    patient-grouped sources age and sex belong to the patient, so they do not depend on each lesion's class."""
    if spec["lesions_per_patient"]:
        mean, sd, p_male = 55.0, 17.0, 0.53
    else:
        (mean, sd), p_male = AGE_MEAN_SD[cls], MALE_PROB[cls]
    age = float(np.clip(mean + sd * patient_rng.normal(), 5, 90))
    age = float(spec["age_round"] * round(age / spec["age_round"]))
    sex = "male" if patient_rng.random() < p_male else "female"
    fitz = int(patient_rng.choice(6, p=spec["fitzpatrick"])) + 1
    site = SITE_NAMES[int(lesion_rng.choice(len(SITE_NAMES), p=np.asarray(SITE_PROB[cls]) / sum(SITE_PROB[cls])))]
    meta: dict[str, Any] = {"age": age, "sex": sex, "site": site, "fitzpatrick": fitz}
    shown = {k: (v if lesion_rng.random() >= spec["missing"][k] else None) for k, v in meta.items()}
    return {**shown, "_true_fitzpatrick": fitz}


def present_call(truth: bool, rng: np.random.Generator) -> bool:
    """An annotator's present/absent call: the truth, flipped with probability RECORD_FLIP."""
    return bool(truth) != bool(rng.random() < RECORD_FLIP)


def record_findings(lesion: Lesion, kind: str | None, rng: np.random.Generator) -> dict[str, Any]:
    """What a source of this kind annotates about a lesion, in the real dataset's terms, with annotation noise."""
    if kind is None:
        return {}
    has = {s: present_call(s in lesion.structures, rng) for s in STRUCTURES}
    typical = "atypical" if lesion.border == "irregular" else "typical"
    if kind == "derm7pt":  # the seven-point checklist's criteria (pigmentation left out)
        regular = "irregular" if lesion.border == "irregular" else "regular"
        return {"pigment_network": typical if has["pigment network"] else "absent",
                "streaks": regular if has["streaks"] else "absent",
                "dots_and_globules": regular if has["dots/globules"] else "absent",
                "blue_whitish_veil": "present" if has["blue-whitish veil"] else "absent",
                "regression_structures": "present" if has["regression structures"] else "absent",
                "vascular_structures": "present" if has["vascular structures"] else "absent"}
    if kind == "ph2":  # PH2's clinical diagnosis sheet: asymmetry, colours, five structures
        slip = int(rng.choice([-1, 1])) if rng.random() < RECORD_ASYMMETRY_SLIP else 0
        colours = [c for c in COLORS if present_call(c in lesion.colors, rng)]
        return {"asymmetry": int(np.clip(lesion.asymmetry + slip, 0, 2)), "colors": colours,
                "pigment_network": typical if has["pigment network"] else "absent",
                "dots_globules": typical if has["dots/globules"] else "absent",
                "streaks": "present" if has["streaks"] else "absent",
                "regression_areas": "present" if has["regression structures"] else "absent",
                "blue_whitish_veil": "present" if has["blue-whitish veil"] else "absent"}
    if kind == "pad_ufes":  # two measured diameters, as PAD-UFES-20's diameter_1 / diameter_2
        d1, d2 = lesion.diameter_mm * np.exp(rng.normal(0, 0.12, 2)) + rng.normal(0, RECORD_DIAMETER_SD_MM, 2)
        return {"diameter_1_mm": round(float(max(d1, d2, 1.0))), "diameter_2_mm": round(float(max(min(d1, d2), 1.0)))}
    raise ValueError(f"unknown findings kind {kind!r}; use None, 'derm7pt', 'ph2' or 'pad_ufes'")


def make_sample(name: str, index: int, seed: int, image_size: int, out_dir: str) -> dict[str, Any]:
    """Create image `index` of source `name`: draw it, write it, and return its manifest row."""
    spec = SYNTH_SOURCES[name]
    key = _source_key(name)
    lesion_index = index // spec["images_per_lesion"]
    patient_index = lesion_index // max(spec["lesions_per_patient"], 1)
    lesion_rng = np.random.default_rng([seed, key, lesion_index, 1])
    patient_rng = np.random.default_rng([seed, key, patient_index, 2])
    image_rng = np.random.default_rng([seed, key, index, 0])
    prior = spec["class_prior"]
    cls = ISIC8[int(lesion_rng.choice(len(ISIC8), p=[prior[c] for c in ISIC8]))]
    meta = _metadata(cls, spec, lesion_rng, patient_rng)
    lesion = sample_lesion(cls, meta["_true_fitzpatrick"], lesion_rng)
    shape = (2 * round(spec["size"][0] * image_size / 2), 2 * round(spec["size"][1] * image_size / 2))
    largest = round(2 * MAX_RADIUS * min(shape) * spec["field_mm"] / shape[1] - 0.05, 1)  # mm that fit the frame
    lesion = replace(lesion, diameter_mm=min(lesion.diameter_mm, largest))
    pixels, box = render(lesion, spec, shape, image_rng)
    path = Path(out_dir) / name / f"img_{index:05d}.{spec['format']}"
    if spec["format"] == "jpg":
        Image.fromarray(pixels).save(path, quality=92)
    else:
        Image.fromarray(pixels).save(path, optimize=False, compress_level=1)
    attributes: dict[str, Any] = {
        "asymmetry": lesion.asymmetry, "border": lesion.border, "colors": list(lesion.colors),
        "structures": list(lesion.structures), "diameter_mm": lesion.diameter_mm, "synthetic": True,
    }
    recorded = record_findings(lesion, spec["records"], np.random.default_rng([seed, key, lesion_index, 3]))
    if recorded:
        attributes["recorded"] = recorded
    if spec["bbox"]:  # a "manual" box: the lesion's extent plus a little slack, as an annotator would draw it
        h, w = shape
        pad = image_rng.uniform(0.1, 0.35, 4) * (box[2] - box[0] + box[3] - box[1]) / 2
        attributes["bbox"] = [max(0, int(box[0] - pad[0])), max(0, int(box[1] - pad[1])),
                              min(w, int(box[2] + pad[2])), min(h, int(box[3] + pad[3]))]
    return {
        "sample_id": f"{name}/img_{index:05d}", "source": name, "image_path": str(path), "modality": spec["modality"],
        "label": cls, "label_raw": CLASS_NAMES[cls],
        "lesion_id": f"{name}_les{lesion_index:05d}" if spec["images_per_lesion"] > 1 else None,
        "patient_id": f"{name}_pat{patient_index:05d}" if spec["lesions_per_patient"] else None,
        "age": meta["age"], "sex": meta["sex"], "site": meta["site"], "fitzpatrick": meta["fitzpatrick"],
        "attributes": dump_attributes(attributes),
    }


def _make_sample_args(args: tuple[str, int, int, int, str]) -> dict[str, Any]:
    """make_sample on one argument tuple (for ProcessPoolExecutor.map)."""
    return make_sample(*args)


def generate(out_dir: str | Path, n_per_source: int | dict[str, int] = 100, seed: int = 0, image_size: int = 128,
             sources: list[str] | None = None, workers: int = 1) -> pd.DataFrame:
    """Generate SynthDerm into `out_dir/<source>/` and write `out_dir/manifest.parquet`; return the manifest. A folder
    generated from the same counts, seed, size and generator code (`generated.json`) with every image present is
    reused as it is
    (split/partition still NA: use dermlib.data.assign_partitions). An int `n_per_source` is the count for each
    internal source; external (test-only) sources get half of it (`relative_size`), so most images train.
    A dict gives the exact count per source (and, without `sources`, which sources to make)."""
    if sources is not None:
        names = list(sources)
    else:
        names = list(n_per_source) if isinstance(n_per_source, dict) else list(SYNTH_SOURCES)
    unknown = [n for n in names if n not in SYNTH_SOURCES]
    if unknown:
        raise ValueError(f"unknown SynthDerm sources {unknown}; choose from {list(SYNTH_SOURCES)}")
    if image_size < 16:
        raise ValueError(f"image_size={image_size} is too small to draw a lesion; use 16 or more")
    out = Path(out_dir).resolve()
    counts = n_per_source if isinstance(n_per_source, dict) else {
        n: max(1, round(n_per_source * SYNTH_SOURCES[n]["relative_size"])) for n in names}
    stamp = _stamp(counts, int(seed), int(image_size))
    reused = _reuse(out, stamp)
    if reused is not None:
        return reused
    (out / STAMP).unlink(missing_ok=True)  # a run stopped halfway must not leave a stamp behind
    tasks = []
    for name in names:
        (out / name).mkdir(parents=True, exist_ok=True)
        tasks += [(name, i, int(seed), int(image_size), str(out)) for i in range(counts.get(name, 0))]
    pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 else None
    rows = []
    with progress(len(tasks), "SynthDerm", unit="img") as bar:
        try:
            for row in pool.map(_make_sample_args, tasks, chunksize=16) if pool else map(_make_sample_args, tasks):
                rows.append(row)
                bar.update(1)
        finally:
            if pool:
                pool.shutdown()
    manifest = to_manifest(pd.DataFrame(rows, columns=None if rows else ["sample_id", "source", "image_path",
                                                                         "modality", "label_raw"]))
    save_manifest(manifest, out / "manifest.parquet")
    (out / STAMP).write_text(json.dumps(stamp, sort_keys=True))
    return manifest


STAMP = "generated.json"  # what the images of a SynthDerm folder were generated from (`generate` reuses them)


def _stamp(counts: dict[str, int], seed: int, image_size: int) -> dict[str, Any]:
    """What decides a generated folder: the counts per source, seed, size and the generator's code itself."""
    code = hashlib.sha256(Path(__file__).read_bytes() + Path(render.__code__.co_filename).read_bytes()).hexdigest()
    return {"counts": counts, "seed": seed, "image_size": image_size, "code": code[:16]}


def _reuse(out: Path, stamp: dict[str, Any]) -> pd.DataFrame | None:
    """The manifest of a folder generated from exactly `stamp` whose every image is still there, else None."""
    try:
        if json.loads((out / STAMP).read_text()) != stamp:
            return None
        manifest = to_manifest(pd.read_parquet(out / "manifest.parquet"))
    except (OSError, ValueError):
        return None
    paths = [Path(p) if Path(p).is_absolute() else out / p for p in manifest["image_path"].astype(str)]
    return manifest if all(p.exists() for p in paths) else None
