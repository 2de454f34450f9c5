"""The committed demo numbers cannot drift: part of the demo is regenerated from nothing and compared with
`figures/demo/results.csv` (written by the last ./run_all.sh), within a stated tolerance.

Regenerated here: SynthDerm, the image cache, the M notes (a template: no LLM), and the Img and M runs of two
paired seeds, trained and evaluated exactly as the demo does. Same code, same seeds, pinned threads: on this
machine the numbers agree to rounding; on another machine of the same kind float differences may move a few
predictions, hence the tolerances.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from dermlib import evaluate, synthderm
from dermlib.config import REPO_ROOT, get_config
from dermlib.data import assign_partitions, build_cache, save_manifest
from dermlib.notes import save_notes, synthesize_profile
from dermlib.workdir import WorkDir

COMMITTED = REPO_ROOT / "figures" / "demo"  # what the last ./run_all.sh committed (not the tests' figures dir)
TOLERANCE = {"kappa": 0.02, "balanced_accuracy": 0.02, "map_i2t": 0.01, "map_t2i": 0.01, "paired_cosine": 0.01}
STRATEGIES, SEEDS = ["Img", "M"], [0, 1]


@pytest.mark.slow
def test_regenerated_demo_runs_match_the_committed_results(tmp_path: Path) -> None:
    committed_path = COMMITTED / "results.csv"
    committed = pd.read_csv(committed_path)
    cfg = get_config("demo", {"work_dir": str(tmp_path / "work"), "figures_dir": str(tmp_path / "figures"),
                              "eval.strategies": STRATEGIES, "eval.seeds": SEEDS, "notes.strategies": ["M"]})
    work, data = WorkDir.of(cfg), cfg["data"]
    raw = synthderm.generate(work.synthderm, n_per_source=data["n_per_source"], seed=data["seed"],
                             image_size=data["synth_image_size"], workers=data["workers"])
    manifest = assign_partitions(raw, data)
    save_manifest(manifest, work.manifest)
    build_cache(manifest, work.cache, size=data["image_size"], workers=data["workers"])
    save_notes(synthesize_profile(manifest, cfg), work.root)
    fresh = evaluate.run_grid(cfg)

    keys = ["strategy", "seed", "partition", "source", "metric"]
    pooled = fresh[(fresh["source"] == "pooled") & fresh["metric"].isin(TOLERANCE)]
    both = pooled.merge(committed[committed["source"] == "pooled"], on=keys, suffixes=("", "_committed"))
    assert len(both) == len(pooled) > 0, f"{committed_path} lacks some regenerated rows: re-run ./run_all.sh"
    both = both.dropna(subset=["value", "value_committed"])
    both["allowed"] = both["metric"].map(TOLERANCE)
    off = both[(both["value"] - both["value_committed"]).abs() > both["allowed"]]
    assert off.empty, ("the code no longer reproduces the committed demo numbers:\n"
                       + off[keys + ["value", "value_committed", "allowed"]].to_string(index=False))
    assert set(both["metric"]) >= {"kappa", "map_i2t", "paired_cosine"} and both["seed"].nunique() == 2
