"""Training end to end on tiny SynthDerm work dirs: learning, reuse, resume, load_run/encode, DDP on CPU, notebook 03."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import shutil
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dermlib.config import REPO_ROOT, get_config
from dermlib.data.labels import CLASS_NAMES
from dermlib.data.preprocess import build_cache
from dermlib.data.schema import save_manifest
from dermlib.synthderm import SYNTH_SOURCES, generate

INTERNAL = [n for n, s in SYNTH_SOURCES.items() if s["partition"] == "internal"]


def make_work_dir(root: Path, n_per_source: int = 40, size: int = 32, seed: int = 0) -> Path:
    """A work dir in the pipeline's layout from real SynthDerm images: manifest with splits, the real uint8 cache
    (dermlib.data.build_cache), and M notes.

    Notes are template notes built from the (synthetic) label and attributes, as strategy M would write them; one
    training note is marked failed so the run must cope with samples without a note.
    """
    work = root / "work"
    manifest = generate(root / "synthderm", n_per_source=n_per_source, seed=seed, image_size=64, sources=INTERNAL)
    rng = np.random.default_rng(seed)
    manifest["split"] = rng.choice(["train", "val", "test"], size=len(manifest), p=[0.6, 0.2, 0.2])
    manifest["partition"] = "internal"
    save_manifest(manifest, work / "manifest.parquet")
    build_cache(manifest, work / "cache", size=size)
    rows = []
    for i, r in manifest.iterrows():
        attrs = json.loads(r["attributes"])
        note = (f"A {r['age']:.0f} year old {r['sex']} patient with a {attrs['border']} lesion on the {r['site']}, "
                f"colours {', '.join(attrs['colors'])}. Clinical impression: {CLASS_NAMES[r['label']]}.")
        rows.append({"sample_id": r["sample_id"], "strategy": "M", "note": note,
                     "status": "failed" if i == 0 else "ok"})
    (work / "notes").mkdir()
    pd.DataFrame(rows).to_parquet(work / "notes" / "notes.parquet")
    return work


def tiny_cfg(work: Path, **train: object) -> dict:
    """The demo profile shrunk for a test: few epochs, small batches, the last MiniLM layer trained (token path)."""
    overrides = {"work_dir": str(work), "train.epochs": 2, "train.batch_size": 16, "train.max_text_len": 48,
                 "train.lr": 1e-3, "train.patience": 5, "train.train_last_n_text_layers": 1,
                 "train.note_features": None}  # the committed note store holds none of these notes
    overrides.update({f"train.{k}": v for k, v in train.items()})
    return get_config("demo", overrides)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 images per internal source at 32 px: enough to exercise every code path quickly."""
    torch.set_num_threads(1)
    return make_work_dir(tmp_path_factory.mktemp("train"))


@pytest.fixture(scope="module")
def work64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's size (80 images per internal source, 64 px): big enough for a learning signal above noise."""
    torch.set_num_threads(1)
    return make_work_dir(tmp_path_factory.mktemp("train64"), n_per_source=80, size=64)


def _history(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "history.csv").drop(columns=["seconds", "samples_per_s"])


@pytest.mark.slow
def test_image_only_fit_beats_chance_and_a_finished_run_is_reused(work64: Path) -> None:
    from dermlib.train import fit

    cfg = tiny_cfg(work64, strategy="Img", epochs=4, batch_size=32)
    folder = fit(cfg)
    hist = pd.read_csv(folder / "history.csv")
    assert list(hist["epoch"]) == [1, 2, 3, 4]
    assert {"train_ce_image", "val_kappa", "val_loss", "seconds"} <= set(hist.columns)
    assert "train_nt_xent" not in hist.columns  # no text branch
    assert hist["val_kappa"].max() > 0.1  # chance is 0
    assert hist["train_loss"].iloc[-1] < hist["train_loss"].iloc[0]
    assert (folder / "done").exists() and not (folder / "text_encoder").exists()
    stamp = (folder / "checkpoint.pt").stat().st_mtime_ns
    assert fit(cfg) == folder  # same config hash: reused, not retrained
    assert (folder / "checkpoint.pt").stat().st_mtime_ns == stamp


class Interrupt(Exception):
    pass


def _stop_after_first(row: dict) -> None:
    if row["epoch"] == 1:
        raise Interrupt


@pytest.fixture(scope="module")
def m_run(work: Path) -> Path:
    from dermlib.train import fit

    return fit(tiny_cfg(work, strategy="M", epochs=3))


def test_multimodal_fit_trains_the_text_branch_and_aligns(m_run: Path) -> None:
    hist = pd.read_csv(m_run / "history.csv")
    for term in ("ce_image", "ce_text", "l1", "cosine", "nt_xent"):
        assert hist[f"train_{term}"].iloc[-1] < hist[f"train_{term}"].iloc[0], term
    cfg = json.loads((m_run / "config.json").read_text())
    res = cfg["resolved"]
    assert m_run.name == f"M-seed0-{res['config_hash']}" and res["classes"][0] == "MEL"
    # the one failed note (first manifest row) is excluded from the text loss, not crashed on
    manifest = pd.read_parquet(Path(cfg["work_dir"]) / "manifest.parquet")
    failed_in_train = int(manifest["split"].iloc[0] == "train")
    assert res["n_train_with_note"] == res["n_train"] - failed_in_train
    assert (m_run / "text_encoder" / "config.json").exists()


@pytest.mark.slow  # trains whole runs (twice): the full lane
def test_interrupted_run_resumes_to_the_same_result(work: Path, m_run: Path, tmp_path: Path) -> None:
    import shutil

    from dermlib.train import fit

    other = tmp_path / "work"
    shutil.copytree(work, other, ignore=shutil.ignore_patterns("runs"))
    cfg = tiny_cfg(other, strategy="M", epochs=3)
    with pytest.raises(Interrupt):
        fit(cfg, on_epoch_end=_stop_after_first)
    folder = other / "runs" / m_run.name  # same config hash in another work dir
    assert not (folder / "done").exists() and len(pd.read_csv(folder / "history.csv")) == 1
    assert fit(cfg) == folder
    pd.testing.assert_frame_equal(_history(folder), _history(m_run))
    a = torch.load(folder / "checkpoint.pt", weights_only=False)
    b = torch.load(m_run / "checkpoint.pt", weights_only=False)
    assert a["best_epoch"] == b["best_epoch"]
    for key in ("model", "best_model"):
        for name, value in b[key].items():
            torch.testing.assert_close(a[key][name], value, rtol=0, atol=0, msg=f"{key}.{name}")


def test_load_run_and_encode_reproduce_the_best_epoch(work: Path, m_run: Path) -> None:
    from dermlib.training_data import load_splits
    from dermlib.embed import encode, load_run

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


def test_frozen_text_encoder_features_are_computed_once_and_match_the_encoder(work: Path) -> None:
    from dermlib.training_data import make_batch
    from dermlib.trainer import Trainer

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


def test_encode_texts_reads_the_frozen_features_once_and_matches_the_encoder(work: Path) -> None:
    from dermlib.embed import encode_texts
    from dermlib.models import build_model
    from dermlib.train_settings import TrainSettings
    from dermlib.training_data import pad_batch, tokenize
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


def test_image_feature_views_do_not_depend_on_the_batch_size(work: Path, tmp_path: Path) -> None:
    """View 0 is the trunk on the cached image; view 1 is the trunk on `augment` with that view's draws for every
    image at once: the same numbers in batches of 3 as of 16 (one cache layout, channels_last or not)."""
    from dermlib import features
    from dermlib.data.preprocess import load_cache
    from dermlib.models import build_model
    from dermlib.train_settings import TrainSettings
    from dermlib.training_data import augment, augment_draws, images_to_float

    model = build_model(TrainSettings.from_config(tiny_cfg(work)), 8).eval()
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


class FakeTerminal(io.StringIO):
    """A stderr that says it is a terminal, as a console does: `dermlib.progress` then draws its bars into it."""

    def isatty(self) -> bool:
        return True


def test_frozen_feature_passes_draw_a_progress_bar_on_a_terminal_only(work: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The trunk passes of dermlib.features draw a bar (first 0/N, last N/N) on a terminal; none in a pipe or log,
    none in a worker (DERMLIB_NO_PROGRESS=1), none for a single batch or features read back from disk."""
    from dermlib import features
    from dermlib.data.preprocess import load_cache
    from dermlib.models import build_model
    from dermlib.train_settings import TrainSettings
    from dermlib.training_data import tokenize

    model = build_model(TrainSettings.from_config(tiny_cfg(work, train_last_n_text_layers=0)), 8).eval()
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
    monkeypatch.setenv("DERMLIB_NO_PROGRESS", "1")  # what dermlib.parallel sets in its workers
    assert passes(FakeTerminal(), tmp_path / "worker")[2] == ""


def test_trainable_state_is_the_state_dict_without_frozen_encoders(work: Path) -> None:
    from dermlib.embed import trainable_state
    from dermlib.models import build_model
    from dermlib.train_settings import TrainSettings

    for layers in (0, 1):  # text encoder frozen, then its last layer trained
        model = build_model(TrainSettings.from_config(tiny_cfg(work, train_last_n_text_layers=layers)), 8)
        frozen = model.frozen_prefixes()
        full = model.state_dict()
        expected = {k: v for k, v in full.items() if not k.startswith(frozen)}
        got = trainable_state(model)
        assert list(got) == list(expected) and all(torch.equal(got[k], expected[k]) for k in expected)
        assert ("text_encoder." in frozen) == (layers == 0)
        assert any(k.startswith("text_encoder.") for k in got) == (layers == 1)


def test_run_folder_depends_on_what_is_computed_only(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dermlib import train
    from dermlib.train import run_dir

    base = run_dir(tiny_cfg(work))
    assert run_dir(tiny_cfg(work, device="cpu")) == base
    assert run_dir(tiny_cfg(work, note_features="data/note-features-demo.npz")) == base  # time, not results
    with monkeypatch.context() as patch:  # features made another way: new runs
        patch.setattr(train, "FEATURE_VERSION", train.FEATURE_VERSION + 1)
        assert run_dir(tiny_cfg(work)) != base
    assert run_dir(tiny_cfg(work, seed=1)).name.startswith("M-seed1-")
    assert run_dir(tiny_cfg(work, lr=0.1)).name != base.name
    assert run_dir(tiny_cfg(work, strategy="M,P3")).name.startswith("M_P3-seed0-")


def test_missing_notes_strategy_fails_with_a_clear_message(work: Path) -> None:
    from dermlib.train import fit

    with pytest.raises(ValueError, match="no notes for strategies \\['P3'\\]"):
        fit(tiny_cfg(work, strategy="P3"))


GLOBAL_NT_XENT_CHECK = """
import torch, torch.distributed as dist
from dermlib.losses import nt_xent
from dermlib.trainer import _gather_global
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
gi, gt, gm = _gather_global(mine, txt[rank * 3:(rank + 1) * 3], mask[rank * 3:(rank + 1) * 3])
loss = nt_xent(gi[gm], gt[gm], 0.1)
loss.backward()
assert torch.allclose(loss, ref, atol=1e-6), (loss, ref)
# every rank back-propagates the same global loss: DDP's gradient average recovers the single-process gradient
assert torch.allclose(mine.grad / world, full.grad[rank * 3:(rank + 1) * 3], atol=1e-6)
print("RANK", rank, "OK", float(loss.detach()))
dist.barrier()  # both ranks done before gloo tears down its connections (else a rank can abort at exit)
dist.destroy_process_group()
"""


def _torchrun(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run `torchrun --standalone --nproc_per_node 2 ARGS` in its own process group (killed whole on timeout)."""
    import signal

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"torchrun did not finish in {timeout} s: {err[-2000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.mark.slow
def test_global_batch_nt_xent_equals_single_process_loss(tmp_path: Path) -> None:
    script = tmp_path / "check.py"
    script.write_text(textwrap.dedent(GLOBAL_NT_XENT_CHECK))
    done = _torchrun([str(script)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("OK") == 2


@pytest.mark.slow
def test_ddp_training_with_two_cpu_processes(work: Path, tmp_path: Path) -> None:
    import shutil

    other = tmp_path / "work"
    shutil.copytree(work, other, ignore=shutil.ignore_patterns("runs"))
    done = _torchrun(["-m", "dermlib.train", "--profile", "demo", "--set", f"work_dir={other}",
                      "--set", "train.epochs=1", "--set", "train.batch_size=16", "--set", "train.max_text_len=48",
                      "--set", "train.train_last_n_text_layers=1"],
                     tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    folder = Path(done.stdout.strip().splitlines()[-1])
    assert (folder / "done").exists()
    hist = pd.read_csv(folder / "history.csv")
    assert len(hist) == 1 and np.isfinite(hist["train_nt_xent"]).all()
    assert json.loads((folder / "config.json").read_text())["resolved"]["world_size"] == 2


NOTEBOOKS = REPO_ROOT / "notebooks"


@pytest.mark.slow
@pytest.mark.skipif(not (list(NOTEBOOKS.glob("01_*.ipynb")) and list(NOTEBOOKS.glob("02_*.ipynb"))),
                    reason="notebook 03 needs notebooks 01_data and 02_notes to run first (not written yet)")
def test_notebook_03_trains_every_strategy(tiny_pipeline) -> None:
    from conftest import TINY_OVERRIDES
    from dermlib.records import read_records

    tiny_pipeline.run("03")
    rec = read_records(tiny_pipeline.work_dir, "03_train")
    assert set(rec["best_val_kappa"]) == set(TINY_OVERRIDES["eval.strategies"])
    for strategy, run in rec["run_dirs"].items():
        assert (Path(run) / "done").exists(), strategy
    assert rec["train_samples_per_s"] > 0 and rec["n_train"] > 0
    assert Path(rec["learning_curves"]).exists()


def test_epoch_order_is_seeded_and_shards_the_global_batch() -> None:
    from dermlib.training_data import epoch_order

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
    from dermlib.training_data import pad_batch

    ids, mask = pad_batch([[101, 7, 102], [101, 102]], pad_id=0)
    assert ids.tolist() == [[101, 7, 102], [101, 102, 0]] and mask.tolist() == [[1, 1, 1], [1, 1, 0]]


def test_augment_is_reproducible_and_keeps_pixels_without_jitter() -> None:
    from dermlib.training_data import augment, images_to_float

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
    from dermlib.training_data import Prefetcher

    assert list(Prefetcher(list(range(10)), lambda j: j * j)) == [j * j for j in range(10)]

    def broken(j: int) -> int:
        if j == 3:
            raise RuntimeError("bad batch 3")
        return j

    with pytest.raises(RuntimeError, match="bad batch 3"):
        list(Prefetcher(list(range(5)), broken))


def test_optimiser_switch_and_model_selection(work: Path) -> None:
    from dermlib.train import fit
    from dermlib.trainer import make_optimizer, selection_score

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


@pytest.mark.slow  # trains whole runs (twice): the full lane
def test_tensorboard_scalars_match_history_and_stay_out_of_the_run_hash(work: Path) -> None:
    """train.tensorboard writes every history column (and the lr) per epoch; it does not change what is computed."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from dermlib.progress import tensorboard_scalars
    from dermlib.train import fit, run_dir

    cfg = tiny_cfg(work, strategy="M", epochs=2, tensorboard=True, seed=7)
    assert run_dir(cfg) == run_dir(tiny_cfg(work, strategy="M", epochs=2, seed=7))
    folder = fit(cfg)
    events = EventAccumulator(str(folder / "tensorboard"))
    events.Reload()
    hist = pd.read_csv(folder / "history.csv")
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/nt_xent", "val/kappa", "val/image_loss", "run/samples_per_s", "run/lr"} <= tags
    assert len(tags) == len(hist.columns)  # every column but epoch, and the lr
    for column in hist.columns.drop("epoch"):
        (tag,) = set(tensorboard_scalars({column: 0.0}, 0.0)) - {"run/lr"}
        logged = events.Scalars(tag)
        assert [e.step for e in logged] == hist["epoch"].tolist(), column
        np.testing.assert_allclose([e.value for e in logged], hist[column].to_numpy(), rtol=1e-6, err_msg=column)
    assert [e.value for e in events.Scalars("run/lr")] == pytest.approx([cfg["train"]["lr"]] * len(hist))
    assert get_config("demo")["train"]["tensorboard"] is False and get_config("paper")["train"]["tensorboard"] is False


def test_public_trainer_step_is_one_optimiser_step_of_the_loss(work: Path) -> None:
    """Trainer.step: forward, the run's loss, backward and one optimiser step, as a script would write them."""
    from dermlib.trainer import Trainer

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


def test_train_settings_name_every_train_key_and_refuse_unknown_ones() -> None:
    from dermlib.config import BASE
    from dermlib.train_settings import TrainSettings

    for profile in ("demo", "paper"):
        cfg = get_config(profile)
        settings = TrainSettings.from_config(cfg)
        assert {f: getattr(settings, f) for f in cfg["train"]} == cfg["train"]  # a view of the section, nothing added
    assert set(BASE["train"]) == set(TrainSettings.__dataclass_fields__)
    demo = get_config("demo")["train"]
    with pytest.raises(KeyError, match=r"missing \['patience'\]"):
        TrainSettings.from_section({k: v for k, v in demo.items() if k != "patience"})
    with pytest.raises(KeyError, match=r"unknown \['warmup'\]"):
        TrainSettings.from_section({**demo, "warmup": 3})
    assert TrainSettings.from_section(demo).replace(strategy="Img").text is False
    # a run saved before an execution-only key existed loads with that key from BASE; a computed key stays required
    old_run = {k: v for k, v in demo.items() if k != "parallel_runs"}
    assert TrainSettings.from_section(old_run).parallel_runs == BASE["train"]["parallel_runs"]
    with pytest.raises(ValueError, match="needs train.threads > 0"):
        get_config("demo", {"train.threads": 0})  # two runs at once must train on the same threads as one
    assert get_config("demo", {"train.threads": 0, "train.parallel_runs": 1})["train"]["threads"] == 0


@pytest.mark.slow
def test_parallel_runs_train_the_same_weights_as_one_after_another(work: Path) -> None:
    from dermlib.train import fit_many, run_dir

    pairs = [("Img", 3), ("M", 3), ("M", 4), ("M", 5), ("Img", 4)]  # Img 3 and M 3 warm up here, three go to workers
    assert fit_many([]) == []

    def configs(parallel: int) -> list[dict]:
        return [tiny_cfg(work, strategy=s, seed=k, epochs=2, parallel_runs=parallel) for s, k in pairs]

    assert [run_dir(c) for c in configs(1)] == [run_dir(c) for c in configs(2)]  # how runs execute is not hashed
    for c in configs(2):
        shutil.rmtree(run_dir(c), ignore_errors=True)
    parallel = fit_many(configs(2))
    assert [p.name.split("-")[:2] for p in parallel] == [[s, f"seed{k}"] for s, k in pairs]
    saved = {p.name: torch.load(p / "checkpoint.pt", map_location="cpu", weights_only=False) for p in parallel}
    for p in parallel:
        shutil.rmtree(p)
    sequential = fit_many(configs(1))
    assert [p.name for p in sequential] == list(saved)
    for p in sequential:
        again = torch.load(p / "checkpoint.pt", map_location="cpu", weights_only=False)
        assert again["best_epoch"] == saved[p.name]["best_epoch"]
        for name, value in saved[p.name]["model"].items():
            torch.testing.assert_close(again["model"][name], value, rtol=0, atol=0, msg=f"{p.name} {name}")
    for p in sequential[1:4]:
        shutil.rmtree(p)
    m3, m4 = configs(2)[1], configs(2)[2]
    again = fit_many([m3, m4, m4, m4])  # M 3 here; M 4 asked three times is one folder, trained once
    assert again == [sequential[1]] + [sequential[2]] * 3
    for p in again[:2]:
        weights = torch.load(p / "checkpoint.pt", map_location="cpu", weights_only=False)["model"]
        assert all(torch.equal(weights[k], v) for k, v in saved[p.name]["model"].items())


def _square(x: int) -> int:
    if x < 0:
        raise ValueError(f"negative input {x}")
    return x * x


def _pid(_: object) -> int:
    import os

    return os.getpid()


@pytest.mark.slow  # spawns worker processes, each importing torch
def test_map_jobs_keeps_order_warms_each_key_here_and_raises_job_errors() -> None:
    import os

    from dermlib.parallel import map_jobs

    items = [3, 1, 4, 1, 5, 9, 2, 6]
    assert map_jobs(_square, items, 1, desc="t") == [x * x for x in items]
    assert map_jobs(_square, items, 2, desc="t", warm_key=lambda x: x % 2) == [x * x for x in items]
    assert map_jobs(_pid, [0], 2, desc="t") == [os.getpid()]  # one job: no worker is started
    pids = map_jobs(_pid, [0, 1, 2], 2, desc="t", warm_key=lambda x: 0)
    assert pids[0] == os.getpid() and os.getpid() not in pids[1:]  # the first of its key here, the rest in workers
    with pytest.raises(ValueError, match="negative input -2"):
        map_jobs(_square, [1, 2, -2, 3], 2, desc="t")


def test_grid_configs_one_config_per_strategy_and_seed() -> None:
    from dermlib.train import grid_configs

    cfg = get_config("demo", {"eval.strategies": ["Img", "M"], "eval.seeds": [0, 3]})
    runs = grid_configs(cfg)
    assert [(r["train"]["strategy"], r["train"]["seed"]) for r in runs] == [("Img", 0), ("Img", 3), ("M", 0),
                                                                             ("M", 3)]
    assert [(r["train"]["strategy"], r["train"]["seed"]) for r in grid_configs(cfg, ["P3"], [7])] == [("P3", 7)]
    runs[0]["train"]["epochs"] = -1  # each run's config is its own copy: the input is not mutated
    assert cfg["train"]["strategy"] == get_config("demo")["train"]["strategy"] and cfg["train"]["epochs"] > 0
    assert {k: v for k, v in runs[1]["train"].items() if k not in ("strategy", "seed")} == \
        {k: v for k, v in cfg["train"].items() if k not in ("strategy", "seed")}
