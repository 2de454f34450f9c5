"""Exporting a trained run (dermlib.evaluate.export): a self-contained Hub model folder (dermlib.predict.DermModel,
tested in tests/predict/) that reloads to the same embeddings, the model card's metrics with their intervals read back
from a real evaluation, and the command line with its errors and progress bars, on a tiny real SynthDerm work dir
(internal and external sources, M notes)."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from sklearn.metrics import cohen_kappa_score

from dermlib.config import REPO_ROOT, get_config
from dermlib.evaluate.export import export_embeddings, export_run, load_exported, main, split_rows
from tests.fakes.processes import FakeTerminal
from tests.fakes.workdirs import make_grid_work_dir, tiny_cfg  # 2 internal sources + 1 external, template M notes

CARD_METRICS = ["kappa", "balanced_accuracy", "map_i2t", "map_t2i", "paired_cosine"]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    return make_grid_work_dir(tmp_path_factory.mktemp("export"), n_per_source=20)


@pytest.fixture(scope="module")
def m_run(work: Path) -> Path:
    """An M run with the last MiniLM layer trained (so the export must carry the text encoder's weights)."""
    from dermlib.train.runs import fit

    return fit(tiny_cfg(work, strategy="M", epochs=2))


def test_command_line_argument_errors_are_one_line_with_exit_status_2(tmp_path: Path, capsys: pytest.CaptureFixture
                                                                       ) -> None:
    missing = tmp_path / "runs" / "nope"
    done = subprocess.run([sys.executable, "-m", "dermlib.evaluate.export", str(missing), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=180, cwd=REPO_ROOT)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == (f"python -m dermlib.evaluate.export: error: RUN_DIR {missing} does not "
                                            "exist: pass a folder of <work_dir>/runs/ (dermlib.train prints it)")
    unfinished = tmp_path / "runs" / "half"
    unfinished.mkdir(parents=True)
    finished = tmp_path / "runs" / "whole"
    finished.mkdir()
    (finished / "done").touch()
    cases = [([str(unfinished), str(tmp_path / "out")], f"RUN_DIR {unfinished} is not a finished run (no `done` "
              "marker): finish it with `python -m dermlib.train` (or notebook 03_train) first"),
             ([str(finished), str(finished)], "OUT_DIR must differ from RUN_DIR"),
             ([str(finished), str(tmp_path / "out"), "--embeddings", "holdout"], "argument --embeddings: invalid "
              "choice: 'holdout' (choose from 'train', 'val', 'test', 'external')"),
             ([str(finished)], "the following arguments are required: out_dir")]
    for argv, message in cases:
        with pytest.raises(SystemExit) as stopped:
            main(argv)
        assert stopped.value.code == 2, argv
        assert capsys.readouterr().err.splitlines()[-1] == f"python -m dermlib.evaluate.export: error: {message}"
    assert not (tmp_path / "out").exists()  # nothing written on a refused command line


def test_export_is_self_contained_and_reloads_to_the_same_embeddings(work: Path, m_run: Path, tmp_path: Path) -> None:
    from dermlib.data.preprocess import load_cache
    from dermlib.train.inference import encode, load_run

    out = export_run(m_run, tmp_path / "export")
    assert {p.name for p in out.iterdir()} == {"model.safetensors", "config.json", "text_encoder", "README.md",
                                               "preprocessor_config.json", "prompts.json"}
    card = (out / "README.md").read_text()
    assert "Trained on synthetic data (SynthDerm)" in card and "Limitations" in card and m_run.name in card
    shutil.rmtree(m_run.parent.parent / "features", ignore_errors=True)  # the export must not need the run's caches
    exported, config = load_exported(out)
    original, cfg = load_run(m_run)
    assert config["run"] == m_run.name and "work_dir" not in config
    images, _ = load_cache(work / "cache")
    pixels, notes = np.asarray(images[:6]), ["a dark irregular lesion"] * 6
    a, b = encode(exported, pixels, notes, cfg), encode(original, pixels, notes, cfg)
    for key in ("image_emb", "image_logits", "text_emb"):
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-5)
    path = export_embeddings(out, "test", m_run)
    frame = pd.read_parquet(path)
    assert json.loads(pq.read_schema(path).metadata[b"dermlib"])["run"] == m_run.name  # a gallery names its model
    assert len(frame) > 0 and len(frame["image_emb"].iloc[0]) == cfg["train"]["embed_dim"]
    assert {"sample_id", "label", "note", "text_emb"} <= set(frame.columns)


def card_rows(card: str) -> dict[tuple[str, str], list[str]]:
    """The metrics table of a model card: (partition, metric) -> [value, CI, n] as printed."""
    section = card.split("## Evaluation", 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines()
            if line.startswith("| ") and not line.startswith("| partition")]
    return {(r[0], r[1]): r[2:] for r in rows}


@pytest.mark.slow  # evaluates a trained run (the probes included): the full lane
def test_model_card_reports_the_evaluated_metrics_with_their_intervals(work: Path, m_run: Path,
                                                                       tmp_path: Path) -> None:
    """The card of an evaluated run prints exactly the pooled rows the evaluation wrote; kappa and n are also
    recomputed here with scikit-learn from the embeddings that evaluation saved."""
    from dermlib.data.labels import config_classes
    from dermlib.evaluate.grid import evaluate_run
    from dermlib.evaluate.pools import evaluation_pool
    from dermlib.evaluate.results import load_embeddings
    from dermlib.workdir import WorkDir

    before = (export_run(m_run, tmp_path / "before") / "README.md").read_text()
    assert "Not evaluated yet" in before and not card_rows(before)
    cfg = get_config("demo", {"work_dir": str(work), "figures_dir": str(tmp_path / "figures"),
                              "eval.strategies": ["M"], "eval.class_descriptions": 0, "eval.bootstrap": 30})
    pool, pixels = evaluation_pool(cfg)
    results = evaluate_run(m_run, cfg, pool, pixels)
    card = (export_run(m_run, tmp_path / "after") / "README.md").read_text()
    shown = card_rows(card)
    pooled = results[(results["source"] == "pooled") & results["metric"].isin(CARD_METRICS)]
    assert set(shown) == {(p, m) for p in ("internal", "external") for m in CARD_METRICS} == \
        set(zip(pooled["partition"], pooled["metric"]))
    for r in pooled.itertuples():
        value, interval, n = shown[(r.partition, r.metric)]
        assert value == f"{r.value:.3f}" and n == str(r.n), (r.partition, r.metric)
        if r.metric == "balanced_accuracy":  # reported without an interval
            assert np.isnan(r.ci_low) and interval == "–"
        else:
            assert interval == f"{r.ci_low:.3f}–{r.ci_high:.3f}" and r.ci_low <= r.value <= r.ci_high
    saved = load_embeddings(WorkDir(work).embeddings(m_run.name))
    predicted = np.asarray(config_classes(cfg))[saved["image_logits"].argmax(axis=1)]
    for partition in ("internal", "external"):
        mask = saved["partition"] == partition
        kappa = cohen_kappa_score(saved["label"][mask], predicted[mask])
        assert shown[(partition, "kappa")][0] == f"{kappa:.3f}"
        assert shown[(partition, "kappa")][2] == str(int((pool["partition"] == partition).sum()))


def test_command_line_exports_embeddings_and_draws_progress_on_a_terminal(work: Path, m_run: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch,
                                                                          capsys: pytest.CaptureFixture) -> None:
    terminal = FakeTerminal()
    monkeypatch.delenv("DERMLIB_NO_PROGRESS", raising=False)
    monkeypatch.setattr(sys, "stderr", terminal)
    out = tmp_path / "cli"
    assert main([str(m_run), str(out), "--embeddings", "test", "external"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == [str(out / "embeddings_test.parquet"), str(out / "embeddings_external.parquet"), str(out)]
    cfg = json.loads((m_run / "config.json").read_text())
    drawn = terminal.getvalue()
    assert re.search(r"export embeddings: 100%.*\| 2/2 \[", drawn), drawn[-500:]
    for split in ("test", "external"):
        frame = pd.read_parquet(out / f"embeddings_{split}.parquet")
        assert frame["sample_id"].tolist() == split_rows(cfg, split)["sample_id"].tolist()
        images, notes = len(frame), int(frame["note"].notna().sum())  # the external failed note has none
        # the inner bars are drawn (then cleared: leave=False, the outer bar remains)
        assert re.search(rf"encode images:   0%.*\| 0/{images} \[", drawn), (split, drawn[-800:])
        assert re.search(rf"encode notes:   0%.*\| 0/{notes} \[", drawn), (split, drawn[-800:])
    capsys.readouterr()
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a log file or pipe: no bar at all
    quiet = sys.stderr
    main([str(m_run), str(tmp_path / "quiet"), "--embeddings", "test"])
    assert quiet.getvalue() == ""


def test_an_out_dir_holding_something_else_is_refused_naming_the_file(m_run: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    """An OUT_DIR with other files, or an export of another format version, is left as it is (exit status 1, one
    line naming it and the fix); a model folder of this format is exported over."""
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "thesis.tex").write_text("mine")
    older = tmp_path / "older"
    older.mkdir()
    (older / "config.json").write_text(json.dumps({"train": {}, "resolved": {}, "work_dir": "/somewhere"}))
    for out, message in [(busy, f"OUT_DIR {busy} is not empty and not a dermlib model folder: choose a new or "
                                "empty folder"),
                         (older, f"{older / 'config.json'}: an export of an older dermlib (a whole pipeline config, "
                                 f"format 0; this dermlib reads format 1): export the run again with `dermlib export "
                                 f"RUN_DIR {older}` (into a new or emptied folder); or delete {older} first")]:
        with pytest.raises(SystemExit) as stopped:
            main([str(m_run), str(out)])
        assert stopped.value.code == 1
        assert capsys.readouterr().err.splitlines() == [f"python -m dermlib.evaluate.export: {message}"]
    assert [p.name for p in busy.iterdir()] == ["thesis.tex"] and [p.name for p in older.iterdir()] == ["config.json"]
    again = tmp_path / "again"
    assert main([str(m_run), str(again)]) == 0 and main([str(m_run), str(again)]) == 0
