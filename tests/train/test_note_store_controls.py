"""The note store with the controls: `write_profile_note_store` encodes only the notes its store lacks, and the
committed demo store holds MiniLM's features of every note of the regenerated demo notes table, controls included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dermlib.grammar import CONTROL_STRATEGIES
from dermlib.config import get_config
from dermlib.notes import save_notes, synthesize_profile
from dermlib.notes.plan import NoteSettings
from dermlib.notes.synth import count_pending
from dermlib.train import features
from dermlib.train.batches import tokenize
from dermlib.train.model import TextEncoder

ATOL = 2e-3  # float16 rounding of MiniLM's pooled features (|x| < 1)


def _table(notes: dict[str, list[str]]) -> pd.DataFrame:
    rows = [{"sample_id": f"s{i}", "strategy": strategy, "note": note, "status": "ok"}
            for strategy, texts in notes.items() for i, note in enumerate(texts)]
    return pd.DataFrame(rows)


def _encode(cfg: dict, texts: list[str], folder: Path) -> np.ndarray:
    """MiniLM's features of `texts`, computed here without any store."""
    encoder = TextEncoder(cfg["train"]["text_encoder"], cfg["train"]["pooling"], 0)
    ids = tokenize(encoder.tokenizer, texts, cfg["train"]["max_text_len"])
    return features.text_features(encoder, ids, pad_id=int(encoder.tokenizer.pad_token_id),
                                  identity=features.text_identity(cfg), folder=folder, device=torch.device("cpu"))


def _rows(cfg: dict, store: features.NoteStore, texts: list[str]) -> np.ndarray:
    encoder = TextEncoder(cfg["train"]["text_encoder"], cfg["train"]["pooling"], 0)
    ids = tokenize(encoder.tokenizer, texts, cfg["train"]["max_text_len"])
    identity = features.text_identity(cfg)
    return np.array([store.index.get(features.note_key(identity, i), -1) for i in ids])


def test_writing_a_store_again_encodes_only_the_notes_it_lacks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store_path = tmp_path / "store.npz"
    cfg = get_config("demo", {"work_dir": str(tmp_path / "work"), "train.note_features": str(store_path),
                              "notes.strategies": ["M", "D"]})
    first = {"M": ["A 60-year-old man presents with a skin lesion. Diagnosis: melanoma.",
                   "A patient presents with a skin lesion. Diagnosis: dermatofibroma."],
             "D": ["Diagnosis: melanoma.", "Diagnosis: dermatofibroma."]}
    save_notes(_table(first), cfg["work_dir"])
    encoded: list[int] = []
    original = features.text_features

    def counting(encoder, token_lists, **kwargs):  # type: ignore[no-untyped-def]
        encoded.append(len(token_lists))
        return original(encoder, token_lists, **kwargs)

    monkeypatch.setattr(features, "text_features", counting)
    features.write_profile_note_store(cfg)
    assert encoded == [4]
    old = features.read_note_store(store_path)
    assert old is not None and old.values.shape == (4, 384)
    # mark one stored row: a note found in the store must be copied from it, not encoded again
    keys = np.load(store_path)["keys"]
    marked = old.values.astype(np.float32)
    kept = int(_rows(cfg, old, ["Diagnosis: melanoma."])[0])
    marked[kept] = 0.25
    features.write_note_store(store_path, [bytes(k) for k in keys], marked)

    second = {"M": first["M"][:1] + ["A woman presents with a skin lesion. Diagnosis: vascular lesion."],
              "D": ["Diagnosis: melanoma.", "Diagnosis: vascular lesion."]}
    save_notes(_table(second), cfg["work_dir"])
    features.write_profile_note_store(cfg)
    assert encoded == [4, 2]  # the two new notes only
    new = features.read_note_store(store_path)
    assert new is not None and len(new.index) == 4  # the two notes no longer in the table are gone
    texts = [*second["M"], *second["D"]]
    rows = _rows(cfg, new, texts)
    assert (rows >= 0).all()
    assert np.all(new.values[rows[2]] == np.float16(0.25))  # "Diagnosis: melanoma." copied as stored
    fresh = _encode(cfg, texts, tmp_path / "check")
    for i in (0, 1, 3):
        np.testing.assert_allclose(new.values[rows[i]].astype(np.float32), fresh[i], rtol=0, atol=ATOL)


@pytest.mark.slow
def test_committed_demo_store_holds_every_note_of_the_regenerated_demo_table(tmp_path_factory: pytest.TempPathFactory
                                                                            ) -> None:
    """SynthDerm and the demo's notes regenerated from nothing (templates rendered, LLM notes read from the committed
    cache: no LLM runs): every usable note, each control's included, is in data/note-features-demo.npz, and a sample
    of the control notes encoded again here agrees with it to float16 precision."""
    from dermlib.data import assign_partitions, synthderm

    work = tmp_path_factory.mktemp("demo") / "work"
    cfg = get_config("demo", {"work_dir": str(work)})
    data = cfg["data"]
    raw = synthderm.generate(work / "synthderm", n_per_source=data["n_per_source"], seed=data["seed"],
                             image_size=data["synth_image_size"], workers=data["workers"])
    manifest = assign_partitions(raw, data)
    settings = NoteSettings.from_config(cfg)
    pending = {s: count_pending(manifest, s, settings) for s in cfg["notes"]["strategies"]}
    assert not any(pending.values()), f"the committed note cache lacks notes: {pending}"
    table = synthesize_profile(manifest, cfg)
    ok = table[(table["status"] == "ok") & table["note"].notna()]
    assert set(CONTROL_STRATEGIES) <= set(ok["strategy"]) and set(ok["strategy"]) == set(cfg["notes"]["strategies"])
    store = features.read_note_store(features.note_store_path(cfg))
    assert store is not None
    rows = _rows(cfg, store, ok["note"].astype(str).tolist())
    missing = ok.loc[rows < 0, ["sample_id", "strategy"]]
    assert missing.empty, (f"the committed store lacks {len(missing)} notes, e.g. {missing.head(3).values.tolist()}: "
                           f"python -m dermlib.train.features --profile demo (after notebook 02)")
    controls = np.flatnonzero(ok["strategy"].isin(CONTROL_STRATEGIES).to_numpy())
    sample = np.random.default_rng(0).choice(controls, size=48, replace=False)
    fresh = _encode(cfg, ok["note"].astype(str).iloc[sample].tolist(), work / "check")
    np.testing.assert_allclose(fresh, store.values[rows[sample]].astype(np.float32), rtol=0, atol=ATOL)
