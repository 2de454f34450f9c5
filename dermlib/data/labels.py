"""Label taxonomies shared by every source. The raw-label -> class table lives in `label_map.csv` beside this file."""

from __future__ import annotations

# The 8 ISIC-2019 classes, in the fixed order used for logits everywhere in dermlib.
ISIC8: list[str] = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC"]
CLASS_NAMES: dict[str, str] = {
    "MEL": "melanoma", "NV": "melanocytic nevus", "BCC": "basal cell carcinoma", "AK": "actinic keratosis",
    "BKL": "benign keratosis", "DF": "dermatofibroma", "VASC": "vascular lesion", "SCC": "squamous cell carcinoma",
}
MALIGNANT: frozenset[str] = frozenset({"MEL", "BCC", "SCC", "AK"})  # AK counted with the malignant/pre-malignant group
BINARY: list[str] = ["benign", "malignant"]
TAXONOMIES: dict[str, list[str]] = {"isic8": ISIC8, "binary": BINARY}


def classes(taxonomy: str = "isic8") -> list[str]:
    """The ordered class list of a taxonomy ("isic8" or "binary")."""
    if taxonomy not in TAXONOMIES:
        raise ValueError(f"unknown taxonomy {taxonomy!r}; choose one of {sorted(TAXONOMIES)}")
    return list(TAXONOMIES[taxonomy])


def config_classes(cfg: dict) -> list[str]:
    """The ordered class list of a config's `data.taxonomy`."""
    return classes(cfg["data"]["taxonomy"])


def to_binary(label: str) -> str:
    """Collapse an isic8 class to benign/malignant."""
    return "malignant" if label in MALIGNANT else "benign"


def class_table() -> "pd.DataFrame":
    """The 8 ISIC-2019 class codes spelled out: code, name, group (malignant or pre-malignant vs benign)."""
    import pandas as pd

    return pd.DataFrame({"code": ISIC8, "name": [CLASS_NAMES[c] for c in ISIC8],
                         "group": ["malignant / pre-malignant" if c in MALIGNANT else "benign" for c in ISIC8]})
