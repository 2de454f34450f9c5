"""Loading a finished run and encoding with it (dermlib.train.inference): the best epoch's weights, images and
notes, and texts through stored frozen features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.fakes.workdirs import tiny_cfg


def test_load_run_and_encode_reproduce_the_best_epoch(work: Path, m_run: Path) -> None:
    from dermlib.train.batches import load_splits
    from dermlib.train.inference import encode, load_run

    model, cfg = load_run(m_run)
    assert not model.training and cfg["train"]["strategy"] == "M"
    val = load_splits(cfg, model.text_encoder.tokenizer)["val"]
    images = val.images[val.rows]
    notes = ["a dark irregular lesion"] * len(images)
    notes[1] = None
    out = encode(model, images, notes, cfg, batch_size=7)
    n = len(images)
    assert out["image_emb"].shape == (n, 128) and out["image_logits"].shape == (n, 8)
    assert out["text_emb"].shape == (n, 128) and np.isnan(out["text_emb"][1]).all()
    assert np.isfinite(np.delete(out["text_emb"], 1, axis=0)).all()
    hist = pd.read_csv(m_run / "history.csv")
    best = hist.loc[hist["val_kappa"].idxmax()]
    accuracy = float((out["image_logits"].argmax(1) == val.labels).mean())
    assert accuracy == pytest.approx(best["val_accuracy"], abs=1e-9)  # the best epoch's weights, image branch
    img_only = encode(model, images[:3], None, cfg)
    assert set(img_only) == {"image_emb", "image_logits"}
    np.testing.assert_allclose(img_only["image_emb"], out["image_emb"][:3], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        encode(model, images.astype(np.float32), None, cfg)


def test_encode_texts_reads_the_frozen_features_once_and_matches_the_encoder(work: Path) -> None:
    from dermlib.train.inference import encode_texts
    from dermlib.train.model import build_model
    from dermlib.train.settings import TrainSettings
    from dermlib.train.batches import pad_batch, tokenize
    from dermlib.workdir import WorkDir

    cfg = tiny_cfg(work, train_last_n_text_layers=0)
    model = build_model(TrainSettings.from_config(cfg), 8).eval()
    texts = ["blue-white veil", "a dark irregular lesion with dots and globules", "regular pigment network"]
    folder = WorkDir.of(cfg).features
    before = set(folder.glob("text-*.npy")) if folder.exists() else set()
    cached = encode_texts(model, texts, cfg)
    made = set(folder.glob("text-*.npy")) - before
    assert len(made) == 1  # the trunk's pooled outputs of these texts, stored once
    again = encode_texts(model, texts, cfg)
    assert set(folder.glob("text-*.npy")) - before == made
    tok = model.text_encoder.tokenizer
    ids, mask = pad_batch(tokenize(tok, texts, cfg["train"]["max_text_len"]), int(tok.pad_token_id))
    with torch.no_grad():
        direct = model.encode_text(ids, mask).numpy()
    np.testing.assert_allclose(cached, direct, rtol=2e-3, atol=1e-3)  # stored features: float16 precision
    np.testing.assert_array_equal(again, cached)
    assert encode_texts(model, [], cfg).shape == (0, direct.shape[1])


class _Payload:
    """What a tampered checkpoint carries: unpickling it would run a shell command (touch a marker file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_a_tampered_checkpoint_is_refused_and_runs_nothing(m_run: Path, tmp_path: Path) -> None:
    """A run folder is data: loading it (evaluation, export, resume, a run's summary) never unpickles code."""
    import shutil
    import subprocess
    import sys

    from dermlib.train.inference import checkpoint_state, load_run
    from dermlib.train.loop import read_checkpoint
    from dermlib.train.runs import run_summary

    run = tmp_path / m_run.name
    shutil.copytree(m_run, run)
    marker = tmp_path / "ran"
    saved = read_checkpoint(run / "checkpoint.pt")  # the genuine one reads fine
    torch.save({**saved, "history": [_Payload(marker)]}, run / "checkpoint.pt")
    for load in (lambda: load_run(run), lambda: checkpoint_state(run, "last"), lambda: run_summary({"M": run})):
        with pytest.raises(ValueError, match=r"checkpoint\.pt: refused.*delete this run folder"):
            load()
    done = subprocess.run([sys.executable, "-m", "dermlib.evaluate.export", str(run), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "refused" in done.stderr and "Traceback" not in done.stderr
    assert not marker.exists()  # nothing ran
    (run / "checkpoint.pt").write_bytes((run / "checkpoint.pt").read_bytes()[:100])  # truncated
    with pytest.raises(ValueError, match="truncated or corrupt"):
        read_checkpoint(run / "checkpoint.pt")
