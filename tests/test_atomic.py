"""Writes a crash never leaves half-done, and damaged files named in one error (dermlib.atomic): a real writer
process killed with SIGKILL mid-write, two real processes saving one checkpoint at once, a writer that raises
halfway, a target that is a variant's symbolic link, and truncated results, manifest and notes tables read back."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dermlib.atomic import HOST, CorruptFileError, atomic_path, read_parquet, write_parquet
from dermlib.config import REPO_ROOT


def _temps(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if ".tmp" in p.name)


def _child(code: str) -> subprocess.Popen:
    """A Python process running `code` (dermlib importable), in its own process group."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def test_a_writer_killed_mid_write_leaves_the_previous_file_whole_and_the_next_write_clears_its_temp(
        tmp_path: Path) -> None:
    path = tmp_path / "results.parquet"
    before = pd.DataFrame({"metric": ["kappa", "map"], "value": [0.5, 0.25]})
    write_parquet(before, path, index=False)
    # a large table written again and again, so the kill lands inside a write
    writer = _child(f"""
        import numpy as np, pandas as pd
        from dermlib.atomic import write_parquet
        frame = pd.DataFrame(np.random.default_rng(0).random((1_500_000, 4)), columns=list("abcd"))
        while True:
            write_parquet(frame, {str(path)!r}, index=False)
    """)
    try:
        deadline = time.monotonic() + 120
        while not any(p.stat().st_size > 0 for p in _temps(tmp_path) if p.exists()):
            assert writer.poll() is None, writer.communicate()[1]
            assert time.monotonic() < deadline, "the writer never started a write"
            time.sleep(0.002)
    finally:
        os.killpg(writer.pid, signal.SIGKILL)
        writer.communicate()
    left = _temps(tmp_path)
    assert left and all(p.name.startswith(".results.") and p.name.endswith(".tmp.parquet") for p in left)
    pd.testing.assert_frame_equal(pd.read_parquet(path), before)  # the killed write never touched the file
    after = before.assign(value=[0.75, 0.5])
    write_parquet(after, path, index=False)
    pd.testing.assert_frame_equal(pd.read_parquet(path), after)
    assert _temps(tmp_path) == []  # the dead writer's leftover went with the next write


def test_a_writer_that_raises_halfway_leaves_the_previous_file_and_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "notes.parquet"
    write_parquet(pd.DataFrame({"note": ["old"]}), path)
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"PAR1 half a table")
            raise RuntimeError("disk full")
    assert pd.read_parquet(path)["note"].tolist() == ["old"] and _temps(tmp_path) == []
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()
    dead = path.with_name(f".notes.{HOST}.{gone}.0badf00d.tmp.parquet")  # a writer that died mid-write
    live = path.with_name(f".notes.{HOST}.{os.getppid()}.0badf00d.tmp.parquet")  # one still writing: kept
    dead.write_bytes(b"PAR1")
    live.write_bytes(b"PAR1")
    write_parquet(pd.DataFrame({"note": ["new"]}), path)
    assert pd.read_parquet(path)["note"].tolist() == ["new"] and _temps(tmp_path) == [live]


def test_two_processes_saving_one_checkpoint_never_share_a_temporary_file(tmp_path: Path) -> None:
    """The run folder's checkpoint.pt used to go through one fixed `checkpoint.pt.tmp`: two processes on one run
    renamed each other's half-written file, or failed on a temporary file already renamed away."""
    path = tmp_path / "checkpoint.pt"
    code = f"""
        import os, time, torch
        from pathlib import Path
        from dermlib.train.runs import _atomic_save
        folder = Path({str(tmp_path)!r})
        (folder / f"ready.{{os.getpid()}}").touch()
        while not (folder / "go").exists():  # both start saving at once
            time.sleep(0.001)
        for i in range(200):
            _atomic_save({{"epoch": i, "model": torch.full((20_000,), float(i))}}, folder / "checkpoint.pt")
        print("ok")
    """
    writers = [_child(code) for _ in range(2)]
    deadline = time.monotonic() + 240
    while len(list(tmp_path.glob("ready.*"))) < 2:
        assert all(w.poll() is None for w in writers), [w.communicate()[1][-2000:] for w in writers]
        assert time.monotonic() < deadline, "the writers never got ready"
        time.sleep(0.01)
    (tmp_path / "go").touch()
    outs = [w.communicate(timeout=240) for w in writers]
    assert [w.returncode for w in writers] == [0, 0], [err[-2000:] for _, err in outs]
    import torch

    saved = torch.load(path, weights_only=True)
    assert saved["epoch"] == 199 and torch.equal(saved["model"], torch.full((20_000,), 199.0))
    assert _temps(tmp_path) == []  # (with one fixed checkpoint.pt.tmp: FileNotFoundError in one of the two)


def test_a_symbolic_link_is_written_through(tmp_path: Path) -> None:
    """A variant's manifest.parquet links to its home's (dermlib.workdir.link_shared): a write replaces the file
    the link points at, and the link stays a link."""
    home, scratch = tmp_path / "home", tmp_path / "scratch"
    home.mkdir()
    scratch.mkdir()
    (scratch / "manifest.parquet").symlink_to(home / "manifest.parquet")  # dangling until the first write
    write_parquet(pd.DataFrame({"sample_id": ["a"]}), scratch / "manifest.parquet")
    assert (scratch / "manifest.parquet").is_symlink()
    assert pd.read_parquet(home / "manifest.parquet")["sample_id"].tolist() == ["a"]
    assert _temps(home) == [] and _temps(scratch) == []


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_tables_are_one_error_naming_the_file_and_the_fix(tmp_path: Path) -> None:
    from dermlib.data.schema import read_manifest
    from dermlib.evaluate.results import RESULT_COLUMNS, load_results
    from dermlib.notes.store import load_notes_table, save_notes

    work = tmp_path / "work"
    cfg = {"work_dir": str(work), "figures_dir": str(tmp_path / "figures")}
    results = work / "results" / "results.parquet"
    write_parquet(pd.DataFrame({c: [1.0] * 50 for c in RESULT_COLUMNS}), results)
    save_notes(pd.DataFrame({"sample_id": [f"s{i}" for i in range(50)], "strategy": "M", "note": "n", "status": "ok"}),
               work)
    manifest = work / "manifest.parquet"
    write_parquet(pd.DataFrame({"sample_id": [f"s{i}" for i in range(50)]}), manifest)
    assert len(load_results(cfg)) == 50 and len(load_notes_table(work)) == 50
    cases = [(lambda: load_results(cfg), results, r"04_evaluate again \(\./run_all\.sh --only 04\)"),
             (lambda: load_notes_table(work), work / "notes" / "notes.parquet", r"02_notes .*note cache"),
             (lambda: read_manifest(manifest), manifest, r"01_data again \(\./run_all\.sh --only 01\)")]
    for read, path, fix in cases:
        _truncate(path)
        with pytest.raises(CorruptFileError, match=rf"^{re.escape(str(path))} cannot be read") as caught:
            read()
        message = str(caught.value)
        assert "truncated or corrupt" in message and "delete it and run notebook" in message
        assert re.search(fix, message), message
        # one error: no chained "During handling of the above exception" traceback
        assert caught.value.__cause__ is None and caught.value.__suppress_context__
    with pytest.raises(FileNotFoundError, match=r"nothing\.parquet does not exist: write it"):
        read_parquet(tmp_path / "nothing.parquet", fix="write it")


def test_a_damaged_evaluation_cache_is_evaluated_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run's cached result rows (results/runs/<run>.parquet) that cannot be read are no cache: the run is evaluated
    again, never a traceback."""
    from dermlib.evaluate import grid
    from dermlib.workdir import WorkDir

    run = tmp_path / "runs" / "M-seed0-abc"
    run.mkdir(parents=True)
    cfg = {"work_dir": str(tmp_path / "work")}
    work = WorkDir.of(cfg)
    write_parquet(pd.DataFrame({"x": np.arange(100)}), work.run_results(run.name))
    write_parquet(pd.DataFrame({"x": [1]}), work.samples(run.name))
    _truncate(work.run_results(run.name))
    monkeypatch.setattr(grid, "eval_key", lambda *a: "key")

    class Evaluated(Exception):
        pass

    def load_run(folder: Path) -> None:
        raise Evaluated(folder)

    monkeypatch.setattr(grid, "load_run", load_run)
    with pytest.raises(Evaluated):
        grid.evaluate_run(run, cfg, pd.DataFrame(), np.zeros(0))
