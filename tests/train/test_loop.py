"""The training loop (dermlib.train.loop): the Trainer's public step, what a checkpoint holds, optimiser and model
selection, and the global-batch NT-Xent of DDP (gather_global) on two CPU processes."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dermlib.train.loop import read_checkpoint
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
        fixed = {k for k, p in model.named_parameters() if not p.requires_grad}  # frozen layers of a trained encoder
        expected = {k: v for k, v in full.items() if not k.startswith(frozen) and k not in fixed}
        got = trainable_state(model)
        assert list(got) == list(expected) and all(torch.equal(got[k], expected[k]) for k in expected)
        assert ("text_encoder." in frozen) == (layers == 0)
        assert any(k.startswith("text_encoder.") for k in got) == (layers == 1)
        # a partly trained encoder: its last layer only, never its frozen embeddings or earlier layers
        assert not any(k.startswith(("text_encoder.encoder.embeddings.", "text_encoder.encoder.encoder.layer.0."))
                       for k in got)


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
        best = int(read_checkpoint(folder / "checkpoint.pt")["best_epoch"])
        expected = hist["val_kappa"].idxmax() if select_on == "val_kappa" else hist["val_image_loss"].idxmin()
        assert best == int(hist.loc[expected, "epoch"]), select_on
        assert selection_score(hist.loc[expected].to_dict(), select_on) == max(
            selection_score(r, select_on) for r in hist.to_dict("records"))

def test_fused_adam_amsgrad_and_adamw_on_request() -> None:
    """Adam(amsgrad) takes `fused` as AdamW does (the Trainer asks for it on CUDA); fused kernels step on a CPU too."""
    from dermlib.train.loop import make_optimizer

    for name in ("adam_amsgrad_l2", "adamw"):
        params = [torch.nn.Parameter(torch.ones(3))]
        opt = make_optimizer(params, name, 1e-3, 1e-4, fused=True)
        assert opt.defaults["fused"], name
        params[0].grad = torch.ones(3)
        opt.step()
        assert not torch.equal(params[0].detach(), torch.ones(3))
    assert not make_optimizer([torch.nn.Parameter(torch.ones(3))], "adam_amsgrad_l2", 1e-3, 0, False).defaults["fused"]


def test_settings_reach_the_trainer(work: Path) -> None:
    """train.compile wraps the training forward; train.num_workers threads build the same batches in the same order
    as the loop's own thread; a GradScaler step (fp16 GPUs) is the plain step when nothing overflows."""
    from dermlib.train.loop import Trainer

    compiled = Trainer(tiny_cfg(work, strategy="Img", compile=True))
    assert isinstance(compiled.net, torch._dynamo.eval_frame.OptimizedModule) and compiled.scaler is None
    inline, threaded = Trainer(tiny_cfg(work, strategy="M")), Trainer(tiny_cfg(work, strategy="M", num_workers=3))
    assert type(inline.net) is type(inline.model)
    a = list(inline._batches(inline.splits["train"], 2, train=True))
    b = list(threaded._batches(threaded.splits["train"], 2, train=True))
    assert [k for k, _ in a] == [k for k, _ in b] and len(a) > 2
    for (_, x), (_, y) in zip(a, b):
        assert x.keys() == y.keys() and all(torch.equal(x[key], y[key]) for key in x)
    batch = a[0][1]
    threaded.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    for trainer in (inline, threaded):
        trainer.model.train()
        torch.manual_seed(0)
        trainer.step(batch)
    scaled, plain = dict(threaded.model.named_parameters()), dict(inline.model.named_parameters())
    assert all(torch.equal(scaled[n], p) for n, p in plain.items() if p.requires_grad)
    assert threaded.scaler.get_scale() == 2.0**10  # no overflow: the scale stays until its growth interval


def test_checkpoint_holds_only_what_trains_and_old_full_checkpoints_load(m_run: Path, tmp_path: Path) -> None:
    """checkpoint.pt (last and best) holds the trained parameters only: no frozen MiniLM layer, no embeddings; a
    checkpoint of the older format (every text-encoder weight) loads to the same model."""
    import shutil

    from dermlib.train.inference import encode, load_run
    from dermlib.train.loop import trainable_state

    saved = read_checkpoint(m_run / "checkpoint.pt")
    model, cfg = load_run(m_run)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    for key in ("model", "best_model"):
        assert set(saved[key]) == trained, key  # (this model has no batch norm outside its frozen trunk)
    frozen_text = [n for n, p in model.text_encoder.named_parameters() if not p.requires_grad]
    assert frozen_text and not any(f"text_encoder.{n}" in saved["model"] for n in frozen_text)
    # the older format: the whole text encoder (as full state dicts were), loaded offline from the saved config
    old = tmp_path / m_run.name
    shutil.copytree(m_run, old)
    full = {k: v for k, v in model.state_dict().items() if k in trainable_state(model) or k.startswith("text_enc")}
    torch.save({**saved, "model": full, "best_model": full}, old / "checkpoint.pt")
    old_model, _ = load_run(old)
    images = np.zeros((2, 32, 32, 3), np.uint8)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(old_model.state_dict()[name], value, rtol=0, atol=0, msg=name)
    np.testing.assert_array_equal(encode(old_model, images, ["a note", "another"], cfg)["text_emb"],
                                  encode(model, images, ["a note", "another"], cfg)["text_emb"])


DEMO_RUN = Path(__file__).resolve().parents[2] / "work" / "demo" / "runs"


@pytest.mark.skipif(not DEMO_RUN.exists(), reason="no trained demo runs in work/demo (run ./run_all.sh)")
def test_the_demo_runs_trained_before_still_load() -> None:
    from dermlib.train.inference import load_run

    folder = next(p for p in sorted(DEMO_RUN.glob("M+P1-seed0-*")) if (p / "done").exists())
    model, cfg = load_run(folder)
    assert cfg["resolved"]["run_name"] == folder.name and model.image_encoder.adapter is not None


GLOBAL_NT_XENT_CHECK = """
import os, sys, traceback
import torch, torch.distributed as dist
from dermlib.train.losses import nt_xent
from dermlib.train.loop import gather_global
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
ok = False
try:
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
    print("RANK", rank, "OK", float(loss.detach()), flush=True)
    ok = True
except Exception:
    traceback.print_exc()  # the failure itself, not an abort at exit, is what the test reports
finally:
    dist.barrier()  # both ranks done before the group goes
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    # leave without the interpreter's teardown: a gloo worker thread still being joined while C++ statics are
    # destroyed is what aborted a rank once ("terminate called without an active exception")
    os._exit(0 if ok else 1)
"""


@pytest.mark.slow
def test_global_batch_nt_xent_equals_single_process_loss(tmp_path: Path) -> None:
    script = tmp_path / "check.py"
    script.write_text(textwrap.dedent(GLOBAL_NT_XENT_CHECK))
    done = torchrun([str(script)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("OK") == 2
