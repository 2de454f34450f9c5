"""The committed demo numbers cannot drift: part of the demo is regenerated from nothing and compared with
`figures/demo/results.csv` (written by the last ./run_all.sh), within a stated tolerance.

Regenerated here: SynthDerm, the image cache, the notes (M and the controls from their templates, the others read from
the committed note cache), and the Img, M and M+G (the positive control) runs of two paired seeds, trained and
evaluated exactly as the demo does, compared pooled and per source (what the paper's per-source protocol averages,
chance levels and the authors' mAP@k included); and the
committed note store is checked against MiniLM. Same code, same seeds, pinned threads: on this
machine the numbers agree to rounding; on another machine of the same kind float differences may move a few
predictions, hence the tolerances.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dermlib.config import REPO_ROOT, get_config
from dermlib.data import assign_partitions, build_cache, save_manifest, synthderm
from dermlib.evaluate import grid as evaluate
from dermlib.notes import save_notes, synthesize_profile
from dermlib.notes.plan import NoteSettings
from dermlib.notes.synth import count_pending
from dermlib.workdir import WorkDir

COMMITTED = REPO_ROOT / "figures" / "demo"  # what the last ./run_all.sh committed (not the tests' figures dir)
TOLERANCE = {"kappa": 0.02, "balanced_accuracy": 0.02, "map_i2t": 0.01, "map_t2i": 0.01, "paired_cosine": 0.01,
             "map_i2t_at_k": 0.01, "map_t2i_at_k": 0.01, "chance_map_i2t": 0.01, "chance_paired_cosine": 0.01}
SOURCE_FACTOR = 3  # a source holds 40-120 test images: one changed prediction moves its kappa by ~0.02
STRATEGIES, SEEDS = ["Img", "M", "M+G"], [0, 1]


@pytest.fixture(scope="module")
def demo_work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's work dir regenerated from nothing: SynthDerm, manifest, image cache, and the notes of every
    strategy (M from its template, the LLM strategies read from the committed note cache: no LLM runs)."""
    cfg = get_config("demo", {"work_dir": str(tmp_path_factory.mktemp("demo") / "work")})
    work, data = WorkDir.of(cfg), cfg["data"]
    raw = synthderm.generate(work.synthderm, n_per_source=data["n_per_source"], seed=data["seed"],
                             image_size=data["synth_image_size"], workers=data["workers"])
    manifest = assign_partitions(raw, data)
    save_manifest(manifest, work.manifest)
    build_cache(manifest, work.cache, size=data["image_size"], workers=data["workers"])
    settings = NoteSettings.from_config(cfg)  # checked first: an incomplete cache would start hours of generation
    pending = {s: count_pending(manifest, s, settings) for s in cfg["notes"]["strategies"]}
    assert not any(pending.values()), f"the committed note cache lacks notes: {pending} (python -m dermlib.notes)"
    notes = synthesize_profile(manifest, cfg)
    save_notes(notes, work.root)
    return work.root


@pytest.mark.slow
def test_regenerated_demo_runs_match_the_committed_results(demo_work: Path, tmp_path: Path) -> None:
    committed_path = COMMITTED / "results.csv"
    committed = pd.read_csv(committed_path)
    cfg = get_config("demo", {"work_dir": str(demo_work), "figures_dir": str(tmp_path / "figures"),
                              "eval.strategies": STRATEGIES, "eval.seeds": SEEDS})
    fresh = evaluate.run_grid(cfg)

    keys = ["strategy", "seed", "partition", "source", "metric"]
    chosen = fresh[fresh["metric"].isin(TOLERANCE)]
    both = chosen.merge(committed, on=keys, suffixes=("", "_committed"))
    assert len(both) == len(chosen) > 0, f"{committed_path} lacks some regenerated rows: re-run ./run_all.sh"
    both = both.dropna(subset=["value", "value_committed"])
    both["allowed"] = both["metric"].map(TOLERANCE) * np.where(both["source"] == "pooled", 1, SOURCE_FACTOR)
    off = both[(both["value"] - both["value_committed"]).abs() > both["allowed"]]
    assert off.empty, ("the code no longer reproduces the committed demo numbers:\n"
                       + off[keys + ["value", "value_committed", "allowed"]].to_string(index=False))
    assert set(both["metric"]) >= {"kappa", "map_i2t", "paired_cosine", "map_i2t_at_k", "chance_map_i2t"}
    assert both["seed"].nunique() == 2 and both["source"].nunique() > 10 and set(both["strategy"]) == set(STRATEGIES)


@pytest.mark.slow
def test_committed_note_store_holds_what_minilm_gives_for_every_demo_note(demo_work: Path) -> None:
    """data/note-features-demo.npz (what the demo trains and evaluates on instead of encoding the notes) has every
    usable note of the regenerated notes table, and a sample of it, encoded again here, agrees to float16 precision."""
    from dermlib.notes.store import load_notes_table
    from dermlib.train.batches import tokenize
    from dermlib.train.features import note_key, note_store_path, read_note_store, text_features, text_identity
    from dermlib.train.model import TextEncoder

    cfg = get_config("demo", {"work_dir": str(demo_work)})
    path = note_store_path(cfg)
    stored = read_note_store(path)
    assert stored is not None, f"{path} is missing: write it with python -m dermlib.train.features --profile demo"
    index, values = stored.index, stored.values
    table = load_notes_table(demo_work)
    ok = table[(table["status"] == "ok") & table["note"].notna()]
    assert set(ok["strategy"]) == set(cfg["notes"]["strategies"]) and len(ok) > 7000
    encoder = TextEncoder(cfg["train"]["text_encoder"], cfg["train"]["pooling"], 0).eval()
    identity = text_identity(cfg)
    ids = tokenize(encoder.tokenizer, ok["note"].astype(str).tolist(), cfg["train"]["max_text_len"])
    rows = np.array([index.get(note_key(identity, i), -1) for i in ids])
    missing = ok.loc[rows < 0, ["sample_id", "strategy"]]
    assert missing.empty, (f"{path} lacks {len(missing)} notes (e.g. {missing.head(3).values.tolist()}): write it "
                           f"again with python -m dermlib.train.features --profile demo")
    sample = np.random.default_rng(0).choice(len(ids), size=48, replace=False)
    fresh = text_features(encoder, [ids[i] for i in sample], pad_id=int(encoder.tokenizer.pad_token_id),
                          identity=identity, folder=demo_work / "store-check", device=torch.device("cpu"))
    np.testing.assert_allclose(fresh, values[rows[sample]].astype(np.float32), rtol=0, atol=2e-3)
