"""Dataset folders in each real dataset's own layout: the real metadata files from ../shared (copied, never
committed) with the same tiny placeholder image hard-linked under every file name the metadata names."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pandas as pd
from PIL import Image


def encoded(fmt: str, size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), (150, 90, 70)).save(buf, fmt)
    return buf.getvalue()


JPEG, PNG, BMP = encoded("JPEG"), encoded("PNG"), encoded("BMP")


def write_files(paths: list[str], data: bytes) -> None:
    """Put the same small encoded image under every path: written once, then hard-linked (no data blocks per file,
    so tens of thousands of files are created and removed in about a second)."""
    for parent in sorted({os.path.dirname(p) for p in paths}):
        os.makedirs(parent, exist_ok=True)
    with open(paths[0], "wb") as fh:
        fh.write(data)
    for path in paths[1:]:
        os.link(paths[0], path)


def raw_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _copy(meta: Path, root: Path, *files: str) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for rel in files:
        shutil.copy(meta / rel, root)


def build(name: str, meta: Path, root: Path) -> Path:
    """`root` laid out as dataset `name` is downloaded (metadata from `meta` = ../shared/datasets/metadata)."""
    if name == "ham10000":
        _copy(meta, root, "HAM10000/HAM10000_metadata.csv")
        ids = raw_csv(root / "HAM10000_metadata.csv")["image_id"]
        part = (ids.str[5:].astype(int) >= 29306).map({False: "HAM10000_images_part_1", True: "HAM10000_images_part_2"})
        write_files([str(root / p / f"{i}.jpg") for p, i in zip(part, ids)], JPEG)
    elif name == "bcn20000":
        _copy(meta, root, "BCN20000/bcn20000_metadata_2025-05-22.csv")
        write_files([str(root / f"{i}.jpg") for i in raw_csv(root / "bcn20000_metadata_2025-05-22.csv")["isic_id"]],
                    JPEG)
    elif name == "isic2019":
        _copy(meta, root, "ISIC2019/ISIC_2019_Training_GroundTruth.csv", "ISIC2019/ISIC_2019_Training_Metadata.csv")
        ids = raw_csv(root / "ISIC_2019_Training_GroundTruth.csv")["image"]
        write_files([str(root / "ISIC_2019_Training_Input" / f"{i}.jpg") for i in ids], JPEG)
    elif name == "pad_ufes_20":
        _copy(meta, root, "PAD-UFES-20/metadata.csv")
        names = raw_csv(root / "metadata.csv")["img_id"]
        write_files([str(root / "images" / f"imgs_part_{i % 3 + 1}" / n) for i, n in enumerate(names)], PNG)
    elif name in ("derm7pt_derm", "derm7pt_clinic"):
        shutil.copytree(meta / "Derm7pt" / "meta", root / "release_v0" / "meta", dirs_exist_ok=True)
        raw = raw_csv(root / "release_v0" / "meta" / "meta.csv")
        paths = pd.concat([raw["derm"], raw["clinic"]]).drop_duplicates()
        folders = paths.str.split("/").str[0]
        on_disk = folders.groupby(folders.str.lower()).agg(lambda f: f.value_counts().index[0])  # FCl/ is FCL/
        files = folders.str.lower().map(on_disk) + "/" + paths.str.split("/").str[1]
        write_files([str(root / "release_v0" / "images" / f) for f in files], JPEG)
    elif name == "fitzpatrick17k":
        _copy(meta, root, "Fitzpatrick17k/fitzpatrick17k.csv")
        hashes = raw_csv(root / "fitzpatrick17k.csv")["md5hash"]
        write_files([str(root / "data" / "finalfitz17k" / f"{h}.jpg") for h in hashes], JPEG)
    elif name == "ddi":
        _copy(meta, root, "DDI/ddi_metadata.csv")
        write_files([str(root / f) for f in raw_csv(root / "ddi_metadata.csv")["DDI_file"]], PNG)
    else:
        raise ValueError(f"no layout builder for {name!r}")
    return root
