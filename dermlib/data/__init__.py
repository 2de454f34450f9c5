"""Data layer: one manifest schema for every source, real dataset loaders, label harmonisation, partitions,
preprocessing. See notebooks/01_data.ipynb for a guided tour."""

from dermlib.data.labels import ISIC8, classes, to_binary
from dermlib.data.schema import (
    MANIFEST_COLUMNS,
    clean_missing,
    dump_attributes,
    load_attributes,
    read_manifest,
    save_manifest,
    to_manifest,
    validate_manifest,
)

# registry / loaders (real datasets)
from dermlib.data.harmonise import harmonise, label_report, label_table
from dermlib.data.registry import SOURCES, SourceSpec, registry_table
from dermlib.data.sources import build_manifest, load_source

# partitions / preprocessing
from dermlib.data.partitions import assign_partitions, split_summary
from dermlib.data.preprocess import (
    ImageError,
    bbox_crop,
    build_cache,
    load_cache,
    load_rgb,
    otsu_box,
    preprocess_image,
    read_skipped,
)
