"""Frozen-encoder features (dermlib.features): the note store serves the notes it knows and only those, stale or
broken stores are never used silently, and the demo's committed store is what MiniLM gives for the committed notes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dermlib import features
from dermlib.models import TextEncoder
from dermlib.training_data import tokenize

NOTES = ["A 54 year old female patient with a lesion on the back. Clinical impression: melanoma.",
         "Irregular border, colours dark brown and blue-gray; streaks at the rim.",
         "A 31 year old male patient with a lesion on the lower extremity. Clinical impression: nevus.",
         "blue-white veil",
         "Regular pigment network, symmetric, one colour: light brown. Clinical impression: benign keratosis."]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    torch.set_num_threads(1)
    return TextEncoder("minilm-l6", "mean", 0).eval()


class RowCounter:
    """A forward hook on the real encoder: how many notes it encoded."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.rows = 0
        self.handle = module.register_forward_hook(self)

    def __call__(self, module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
        self.rows += int(args[0].shape[0])


def _features(encoder: TextEncoder, ids: list[list[int]], folder: Path, store: Path | None = None,
              identity: str = "minilm-l6:mean") -> tuple[np.ndarray, int]:
    counter = RowCounter(encoder)
    try:
        out = features.text_features(encoder, ids, pad_id=int(encoder.tokenizer.pad_token_id), identity=identity,
                                     folder=folder, device=CPU, batch_size=2, store=store)
    finally:
        counter.handle.remove()
    return out, counter.rows


def test_note_store_serves_its_notes_and_the_encoder_only_the_others(encoder: TextEncoder, tmp_path: Path) -> None:
    ids = tokenize(encoder.tokenizer, NOTES, 64)
    reference, encoded = _features(encoder, ids, tmp_path / "plain")
    assert encoded == len(NOTES) and reference.dtype == np.float32
    np.testing.assert_array_equal(reference, reference.astype(np.float16).astype(np.float32))  # float16 precision
    with torch.no_grad():  # the encoder itself, one note at a time, no padding
        direct = np.concatenate([encoder(torch.tensor([i]), torch.ones(1, len(i), dtype=torch.long)).numpy()
                                 for i in ids])
    np.testing.assert_allclose(reference, direct, rtol=2e-3, atol=2e-4)

    store = features.write_note_store(tmp_path / "store.npz", [features.note_key("minilm-l6:mean", i) for i in
                                                               ids[:3] + ids[:1]], reference[[0, 1, 2, 0]])
    index, values = features.read_note_store(store)
    assert len(index) == 3 and values.dtype == np.float16  # a repeated note keeps one row
    served, encoded = _features(encoder, ids, tmp_path / "with-store", store)
    assert encoded == 2  # the two notes the store lacks
    np.testing.assert_array_equal(served[:3], reference[:3])
    np.testing.assert_allclose(served[3:], reference[3:], rtol=0, atol=1e-3)  # encoded in another batch

    stale, encoded = _features(encoder, ids, tmp_path / "other-encoder", store, identity="another-encoder:mean")
    assert encoded == len(NOTES)  # a store keyed by another encoder's identity serves nothing
    np.testing.assert_allclose(stale, reference, rtol=0, atol=1e-3)
    assert features.read_note_store(tmp_path / "absent.npz") is None
    _, encoded = _features(encoder, ids, tmp_path / "absent-store", tmp_path / "absent.npz")
    assert encoded == len(NOTES)


def test_a_broken_note_store_names_the_file_and_the_fix(encoder: TextEncoder, tmp_path: Path) -> None:
    broken = tmp_path / "note-features.npz"
    broken.write_bytes(b"not a numpy archive")
    ids = tokenize(encoder.tokenizer, NOTES[:2], 64)
    with pytest.raises(ValueError, match=r"note-features\.npz cannot be read .*git checkout"):
        _features(encoder, ids, tmp_path / "f", broken)
    np.savez(broken, keys=np.zeros((3, 8), np.uint8), features=np.zeros((3, 384), np.float16))
    with pytest.raises(ValueError, match=r"note-features\.npz: keys \(3, 8\) do not match"):
        _features(encoder, ids, tmp_path / "g", broken)


def test_note_store_path_is_resolved_under_the_repository() -> None:
    from dermlib.config import REPO_ROOT, get_config

    assert features.note_store_path(get_config("demo")) == REPO_ROOT / "data" / "note-features-demo.npz"
    assert features.note_store_path(get_config("paper")) is None
    assert features.note_store_path(get_config("demo", {"train.note_features": None})) is None
