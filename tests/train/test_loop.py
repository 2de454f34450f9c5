"""The training loop (dermlib.train.loop): the Trainer's public step, what a checkpoint holds, optimiser and model
selection, and the global-batch NT-Xent of DDP (gather_global) on two CPU processes."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.fakes.processes import torchrun
from tests.fakes.workdirs import tiny_cfg


def test_trainable_state_is_the_state_dict_without_frozen_encoders(work: Path) -> None:
    from dermlib.train.loop import trainable_state
    from dermlib.train.model import build_model
    from dermlib.train.settings import TrainSettings

    for layers in (0, 1):  # text encoder frozen, then its last layer trained
        model = build_model(TrainSettings.from_config(tiny_cfg(work, train_last_n_text_layers=layers)), 8)
        frozen = model.frozen_prefixes()
        full = model.state_dict()
        expected = {k: v for k, v in full.items() if not k.startswith(frozen)}
        got = trainable_state(model)
        assert list(got) == list(expected) and all(torch.equal(got[k], expected[k]) for k in expected)
        assert ("text_encoder." in frozen) == (layers == 0)
        assert any(k.startswith("text_encoder.") for k in got) == (layers == 1)


def test_public_trainer_step_is_one_optimiser_step_of_the_loss(work: Path) -> None:
    """Trainer.step: forward, the run's loss, backward and one optimiser step, as a script would write them."""
    from dermlib.train.loop import Trainer

    cfg = tiny_cfg(work, strategy="M")
    a, b = Trainer(cfg), Trainer(cfg)
    batch = a.device_batch(a.splits["train"], np.arange(16), np.random.default_rng(0))
    assert set(batch) >= {"labels"} and len(batch["labels"]) == 16
    a.model.train(), b.model.train()
    torch.manual_seed(0)
    total, terms = a.step(batch)
    torch.manual_seed(0)
    out = b.net(None, batch.get("input_ids"), batch.get("attention_mask"), batch.get("text_features"),
                batch.get("image_features"))
    reference, _ = b.loss(out, batch["labels"], batch.get("text_mask"))
    b.optimizer.zero_grad(set_to_none=True)
    reference.backward()
    b.optimizer.step()
    assert not total.requires_grad and {"ce_image", "nt_xent"} <= set(terms)
    assert float(total) == pytest.approx(float(reference.detach()), rel=1e-6)
    params = dict(b.model.named_parameters())
    trained = [n for n, p in a.model.named_parameters() if p.requires_grad]
    assert trained and all(torch.allclose(dict(a.model.named_parameters())[n], params[n]) for n in trained)


def test_optimiser_switch_and_model_selection(work: Path) -> None:
    from dermlib.train.runs import fit
    from dermlib.train.loop import make_optimizer, selection_score

    params = [torch.nn.Parameter(torch.zeros(3))]
    adam = make_optimizer(params, "adam_amsgrad_l2", 1e-3, 1e-4, fused=False)
    assert type(adam) is torch.optim.Adam and adam.defaults["amsgrad"] and adam.defaults["weight_decay"] == 1e-4
    assert type(make_optimizer(params, "adamw", 1e-3, 1e-4, False)) \
        is torch.optim.AdamW
    with pytest.raises(ValueError, match="train.optimizer"):
        make_optimizer(params, "sgd", 1, 0, False)
    for select_on in ("val_kappa", "val_image_loss"):
        folder = fit(tiny_cfg(work, strategy="Img", epochs=4, patience=10, select_on=select_on))
        hist = pd.read_csv(folder / "history.csv")
        best = int(torch.load(folder / "checkpoint.pt", weights_only=False)["best_epoch"])
        expected = hist["val_kappa"].idxmax() if select_on == "val_kappa" else hist["val_image_loss"].idxmin()
        assert best == int(hist.loc[expected, "epoch"]), select_on
        assert selection_score(hist.loc[expected].to_dict(), select_on) == max(
            selection_score(r, select_on) for r in hist.to_dict("records"))

GLOBAL_NT_XENT_CHECK = """
import torch, torch.distributed as dist
from dermlib.train.losses import nt_xent
from dermlib.train.loop import gather_global
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
g = torch.Generator().manual_seed(0)
img, txt = torch.randn(world * 3, 16, generator=g), torch.randn(world * 3, 16, generator=g)
mask = torch.ones(world * 3, dtype=torch.bool)
mask[4] = False
full = img.clone().requires_grad_(True)
ref = nt_xent(full[mask], txt[mask], 0.1)
ref.backward()
mine = img[rank * 3:(rank + 1) * 3].clone().requires_grad_(True)
gi, gt, gm = gather_global(mine, txt[rank * 3:(rank + 1) * 3], mask[rank * 3:(rank + 1) * 3])
loss = nt_xent(gi[gm], gt[gm], 0.1)
loss.backward()
assert torch.allclose(loss, ref, atol=1e-6), (loss, ref)
# every rank back-propagates the same global loss: DDP's gradient average recovers the single-process gradient
assert torch.allclose(mine.grad / world, full.grad[rank * 3:(rank + 1) * 3], atol=1e-6)
print("RANK", rank, "OK", float(loss.detach()))
dist.barrier()  # both ranks done before gloo tears down its connections (else a rank can abort at exit)
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_global_batch_nt_xent_equals_single_process_loss(tmp_path: Path) -> None:
    script = tmp_path / "check.py"
    script.write_text(textwrap.dedent(GLOBAL_NT_XENT_CHECK))
    done = torchrun([str(script)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("OK") == 2
