"""Partitions: which sources are internal (split train/val/test) and which external (test only, domain shift).

Internal sources are split source by source, stratified by label and grouped so that no lesion and no patient
ever appears in two splits: rows that share a `lesion_id` or a `patient_id` form one group; rows with neither
are their own group. A group that spans two internal sources (one lesion, two views) keeps one split. The split
is a pure function of the manifest and the seed.
"""

from __future__ import annotations

import warnings
from fractions import Fraction
from typing import Any

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.model_selection import StratifiedGroupKFold

from dermlib.data.schema import to_manifest
from dermlib.data.synthderm import SYNTH_SOURCES


def split_groups(frame: pd.DataFrame) -> np.ndarray:
    """Group number per row: connected components of rows linked by a shared lesion_id or patient_id."""
    n = len(frame)
    rows, cols = [np.arange(n)], [np.arange(n)]
    offset = n
    for col in ("lesion_id", "patient_id"):
        ids = frame[col].astype("string")
        has = ids.notna().to_numpy()
        codes, _ = pd.factorize(ids[has], sort=True)
        rows.append(np.nonzero(has)[0])
        cols.append(offset + codes)
        offset += int(codes.max()) + 1 if len(codes) else 0
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r)), (r, c)), shape=(offset, offset))
    _, labels = connected_components(graph, directed=False)
    return pd.factorize(labels[:n])[0]


def _fold_plan(fractions: list[float]) -> tuple[int, int, int]:
    """Number of folds K and how many of them go to val and to test, so that the split matches `fractions`."""
    if len(fractions) != 3 or min(fractions) < 0 or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"split_fractions must be three non-negative numbers summing to 1, got {fractions}")
    k = 1
    for f in fractions:
        k = np.lcm(k, Fraction(f).limit_denominator(20).denominator)
    k = int(min(k, 20))
    n_val, n_test = round(fractions[1] * k), round(fractions[2] * k)
    return k, n_val, n_test


def split_source(frame: pd.DataFrame, fractions: list[float], seed: int) -> pd.Series:
    """train/val/test for the rows of one internal source: StratifiedGroupKFold folds (by label, grouped by
    lesion/patient) handed out to val and test by the fractions; tiny sources fall back to a seeded shuffle of
    whole groups."""
    k, n_val, n_test = _fold_plan(fractions)
    groups = split_groups(frame)
    labels = frame["label"].astype("string").fillna("<unlabelled>").to_numpy()
    fold = np.empty(len(frame), int)
    if len(np.unique(groups)) >= k and pd.Series(labels).value_counts().max() >= k:
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        with warnings.catch_warnings():  # rare classes have fewer members than folds: expected, not an error
            warnings.simplefilter("ignore", UserWarning)
            for i, (_, test_idx) in enumerate(splitter.split(np.zeros(len(frame)), labels, groups)):
                fold[test_idx] = i
        share = fold / k
    else:
        order = np.random.default_rng(seed).permutation(groups.max() + 1)
        rank = np.argsort(order)[groups]  # position of each row's group in the shuffled group list
        share = rank / (groups.max() + 1)
    names = np.where(share < n_test / k, "test", np.where(share < (n_test + n_val) / k, "val", "train"))
    return pd.Series(names, index=frame.index, dtype="string")


def resolve_partitions(sources: list[str], internal: list[str] | None, external: list[str] | None
                       ) -> dict[str, str]:
    """source -> "internal"/"external": listed sources as listed; unlisted SynthDerm sources use their own default;
    any other unlisted source is an error (add it to data.internal or data.external)."""
    internal, external = list(internal or []), list(external or [])
    both = sorted(set(internal) & set(external))
    if both:
        raise ValueError(f"sources {both} are listed as both internal and external; keep each in one list")
    out: dict[str, str] = {}
    for source in sources:
        if source in internal:
            out[source] = "internal"
        elif source in external:
            out[source] = "external"
        elif source in SYNTH_SOURCES:
            out[source] = SYNTH_SOURCES[source]["partition"]
        else:
            raise ValueError(f"source {source!r} is in neither data.internal {internal} nor data.external "
                             f"{external}; add it to one of them in the profile (or an override)")
    return out


def assign_partitions(manifest: pd.DataFrame, config: dict[str, Any]) -> pd.DataFrame:
    """Fill `partition` and `split` from the data section of a profile (`internal`, `external`,
    `split_fractions`, `seed`): internal sources are split train/val/test, external sources are all test."""
    out = to_manifest(manifest)
    fractions = list(config.get("split_fractions", [0.6, 0.2, 0.2]))
    seed = int(config.get("seed", 0))
    sources = sorted(out["source"].dropna().unique())
    if out["source"].isna().any():
        row = int(np.argmax(out["source"].isna()))
        raise ValueError(f"manifest row {row} ({out.at[row, 'sample_id']}) has no source; every row needs the name "
                         "of the dataset it comes from (build the manifest with load_source or synthderm.generate)")
    partition = resolve_partitions(sources, config.get("internal"), config.get("external"))
    out["partition"] = out["source"].map(partition).astype("string")
    out["split"] = pd.Series("test", index=out.index, dtype="string")
    for source in sources:
        if partition[source] == "internal":
            rows = out.index[out["source"] == source]
            out.loc[rows, "split"] = split_source(out.loc[rows], fractions, seed)
    return _unify_cross_source_groups(out)


def _unify_cross_source_groups(manifest: pd.DataFrame) -> pd.DataFrame:
    """A lesion or patient seen by two internal sources (e.g. Derm7pt's dermoscopic and clinical views) takes the
    split of its first row, so that no group crosses splits even across sources."""
    internal = manifest.index[manifest["partition"] == "internal"]
    if len(internal) == 0:
        return manifest
    groups = pd.Series(split_groups(manifest.loc[internal]), index=internal)
    first_split = manifest.loc[internal, "split"].groupby(groups.to_numpy()).transform("first")
    manifest.loc[internal, "split"] = first_split.to_numpy()
    return manifest


def split_summary(manifest: pd.DataFrame) -> pd.DataFrame:
    """Counts per source x (partition, split), for notebooks and reports."""
    table = manifest.groupby(["source", "partition", "split"], observed=True).size().unstack("split", fill_value=0)
    return table.reindex(columns=[c for c in ("train", "val", "test") if c in table.columns]).reset_index()
