"""The model and loss as notebook 03 shows them (dermlib.train.method): counts read from the model, a diagram with
its sizes, and the loss inputs of a real batch that reproduce the run's own losses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dermlib.train import lessons, losses, method
from dermlib.train.model import ImageEncoder, MultimodalModel, TextEncoder
from tests.fakes.workdirs import tiny_cfg


def test_parameter_table_counts_every_parameter_once_and_what_trains() -> None:
    text = TextEncoder("minilm-l6", pooling="mean", train_last_n_layers=0)
    model = MultimodalModel(ImageEncoder("efficientnet_lite0", False, adapter_rank=4), text, embed_dim=16,
                            projection="shared", n_classes=8)
    model.freeze_image_encoder()
    table = method.parameter_table(model)
    assert table.loc["total", "parameters"] == sum(p.numel() for p in model.parameters())  # shared head once
    assert table.loc["total", "trainable"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert table.loc["image trunk (EfficientNet-Lite0)", "trainable"] == 0 and table.loc["text encoder", "trainable"] == 0
    assert table.loc["trunk adapter (LoRA + batch-norm affine)", "parameters"] == 4 * (320 + 1280) + 2 * 1280
    assert table.loc["shared classifier", "parameters"] == 16 * 8 + 8
    assert "text projection head" in table.index and 0 < table.loc["total", "share trainable"] < 0.05


def test_model_diagram_reads_the_sizes_from_the_model() -> None:
    image_only = MultimodalModel(ImageEncoder("efficientnet_lite0", False), None, embed_dim=32, n_classes=5)
    drawn = method.model_diagram(image_only, 96)
    assert "3x96x96" in drawn and "1280 -> 32" in drawn and "32 -> 5" in drawn and "note (tokens)" not in drawn
    assert drawn.startswith("```text") and "LoRA" not in drawn and "EfficientNet-Lite0 (trains)" in drawn  # not frozen


def test_loss_inputs_reproduce_the_runs_losses(work: Path, m_run: Path) -> None:
    cfg = tiny_cfg(work, strategy="M", epochs=3)
    batch = lessons.training_batch(cfg, m_run, n=8)
    x = method.loss_inputs(batch, m_run)
    assert x["u"].shape == x["v"].shape == (8, 128) and list(x["y"]) == [x["classes"].index(c) for c in batch["label"]]
    u, v = torch.from_numpy(x["u"]), torch.from_numpy(x["v"])
    out = x["model"].classifier(u).detach().numpy()
    assert np.allclose(out, x["logits_image"], atol=1e-6)
    assert np.isclose(float(losses.cosine_loss(u, v)), 1 - np.mean(np.sum(batch["image"] * batch["text"], axis=1)),
                      atol=1e-5)
    assert x["temperature"] == cfg["train"]["temperature"] and set(x["weights"]) <= set(losses.TERMS)
