"""How varied and how class-bound the demo's notes are (the close-out numbers of the notes issue).

    python benchmarks/note_stats.py [--profile demo]

Reads the notes table notebook 02 wrote (`<work_dir>/notes/notes.parquet`) and the manifest. Prints, per strategy:
images, distinct notes / images; for M+P1 the share of the most common (morphology, symmetry, border, surface)
tuple and Cramér's V of each chosen attribute with the class, beside Cramér's V of SynthDerm's drawn ground truth
(border, asymmetry) with the class. SynthDerm is synthetic: these numbers describe the demo, not the paper.
"""

from __future__ import annotations

import argparse
import re

import pandas as pd
from scipy.stats.contingency import association

from dermlib.config import get_config
from dermlib.data.schema import load_attributes, read_manifest
from dermlib.notes.store import load_notes_table
from dermlib.workdir import WorkDir

M_P1_EXAM = re.compile(r"the lesion is an? (?P<morphology>[\w -]+?), (?P<symmetry>[\w -]+?), with (?P<border>[\w -]+?) "
                       r"borders?; surface (?P<surface>[\w -]+?)\.", re.IGNORECASE)


def cramers_v(a: pd.Series, b: pd.Series) -> float:
    """Cramér's V of two categorical series (0: independent, 1: one determines the other)."""
    table = pd.crosstab(a, b)
    return float(association(table.to_numpy(), method="cramer")) if min(table.shape) > 1 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="demo")
    args = parser.parse_args()
    work = WorkDir.of(get_config(args.profile))
    manifest = read_manifest(work.manifest).set_index("sample_id")
    notes = load_notes_table(work.root)
    ok = notes[notes["status"] == "ok"]
    rows = [{"strategy": s, "images": len(g), "distinct / images": round(g["note"].nunique() / len(g), 4)}
            for s, g in ok.groupby("strategy", sort=False)]
    print(pd.DataFrame(rows).to_string(index=False))
    p1 = ok[ok["strategy"] == "M+P1"]
    if len(p1):
        parsed = p1["note"].str.extract(M_P1_EXAM)
        parsed["label"] = manifest.loc[p1["sample_id"], "label"].to_numpy()
        parsed = parsed.dropna()
        tuples = parsed[["morphology", "symmetry", "border", "surface"]].astype(str).agg(" | ".join, axis=1)
        print(f"\nM+P1: {len(parsed)} of {len(p1)} notes parsed; most common tuple {tuples.value_counts().index[0]!r} "
              f"in {tuples.value_counts(normalize=True).iloc[0]:.1%} of them "
              f"({tuples.nunique()} distinct tuples)")
        for column in ("morphology", "symmetry", "border", "surface"):
            print(f"  Cramér's V (M+P1 {column} vs class): {cramers_v(parsed[column], parsed['label']):.3f}")
    truth = pd.DataFrame([load_attributes(a) for a in manifest["attributes"]], index=manifest.index)
    for column in ("border", "asymmetry"):
        if column in truth:
            print(f"  Cramér's V (SynthDerm drawn {column} vs class): {cramers_v(truth[column], manifest['label']):.3f}")


if __name__ == "__main__":
    main()
