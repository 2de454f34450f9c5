"""Training batches (dermlib.train.batches): epoch order and sharding, padding, augmentation, the prefetcher, and
batches of stored frozen-encoder features that give what the encoder gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.fakes.workdirs import tiny_cfg


def test_frozen_text_encoder_features_are_computed_once_and_match_the_encoder(work: Path) -> None:
    from dermlib.train.batches import make_batch
    from dermlib.train.loop import Trainer

    trainer = Trainer(tiny_cfg(work, train_last_n_text_layers=0))
    split = trainer.splits["train"]
    assert trainer.model.text_frozen() and split.note_features is not None
    idx = np.arange(8)
    common = {"with_text": True, "pad_id": trainer.pad_id, "cls_sep": trainer.cls_sep}
    fast = make_batch(split, idx, **common)
    features, split.note_features = split.note_features, None
    slow = make_batch(split, idx, **common)
    split.note_features = features
    assert "text_features" in fast and "input_ids" not in fast and "input_ids" in slow
    model = trainer.model.eval()
    x = torch.rand(8, 3, 32, 32)
    with torch.no_grad():
        a = model(x, text_features=fast["text_features"])
        b = model(x, slow["input_ids"], slow["attention_mask"])
    mask = fast["text_mask"]  # the stored features are kept at float16 precision
    torch.testing.assert_close(a.text_emb[mask], b.text_emb[mask], rtol=2e-3, atol=1e-3)
    assert (fast["text_mask"] == slow["text_mask"]).all()
    assert not any(p.requires_grad for p in model.text_encoder.parameters())


def test_epoch_order_is_seeded_and_shards_the_global_batch() -> None:
    from dermlib.train.batches import epoch_order

    one = epoch_order(50, 8, seed=3, epoch=2)
    assert [len(b) for b in one] == [8] * 6  # the last partial batch is dropped in training
    flat = np.concatenate(one).tolist()
    assert flat == np.concatenate(epoch_order(50, 8, seed=3, epoch=2)).tolist()
    assert flat != np.concatenate(epoch_order(50, 8, seed=3, epoch=3)).tolist()
    r0, r1 = (epoch_order(50, 8, seed=3, epoch=2, rank=r, world=2) for r in (0, 1))
    for glob, a, b in zip(one, r0, r1):  # each rank gets half of the same global batch
        assert sorted(np.concatenate([a, b])) == sorted(glob) and len(a) == len(b) == 4
    val = epoch_order(50, 8, 0, 0, shuffle=False, drop_last=False)
    assert np.concatenate(val).tolist() == list(range(50))


def test_pad_batch_pads_to_the_longest_in_the_batch() -> None:
    from dermlib.train.batches import pad_batch

    ids, mask = pad_batch([[101, 7, 102], [101, 102]], pad_id=0)
    assert ids.tolist() == [[101, 7, 102], [101, 102, 0]] and mask.tolist() == [[1, 1, 1], [1, 1, 0]]


def test_augment_is_reproducible_and_keeps_pixels_without_jitter() -> None:
    from dermlib.train.batches import augment, images_to_float

    x = images_to_float(torch.randint(0, 256, (6, 8, 8, 3), dtype=torch.uint8))
    assert x.is_contiguous(memory_format=torch.channels_last) and 0 <= x.min() and x.max() <= 1
    a = augment(x.clone(), torch.Generator().manual_seed(1))
    b = augment(x.clone(), torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)
    same = augment(x.clone(), torch.Generator().manual_seed(1), strength=0.0)  # flips/transposes only
    for img, out in zip(x, same):
        torch.testing.assert_close(img.flatten().sort().values, out.flatten().sort().values, rtol=0, atol=1e-6)
    assert not torch.equal(same, x)  # some of the six images were flipped


def test_prefetcher_keeps_order_and_surfaces_errors() -> None:
    from dermlib.train.batches import Prefetcher

    assert list(Prefetcher(list(range(10)), lambda j: j * j)) == [j * j for j in range(10)]

    def broken(j: int) -> int:
        if j == 3:
            raise RuntimeError("bad batch 3")
        return j

    with pytest.raises(RuntimeError, match="bad batch 3"):
        list(Prefetcher(list(range(5)), broken))
