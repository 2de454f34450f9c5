"""The notebooks' self-checks (dermlib.notebook): a student's numbers beside the committed demo run's."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from dermlib.config import get_config
from dermlib.notebook import (REFERENCE_DIR, record, reference_differs, reference_kappa, reference_value,
                              self_check, write_reference)


def test_the_reference_keeps_the_chosen_numbers_and_no_paths(tmp_path) -> None:
    record(tmp_path, "03_train", best_val_kappa={"Img": 0.42, "M": 0.45}, best_epoch={"Img": 3, "M": 6},
           run_dirs={"Img": str(tmp_path / "runs" / "Img-seed0")}, train_seconds=12.5)
    record(tmp_path, "01_data", per_split={"test": 10, "train": 20}, per_partition={"internal": 30})
    path = write_reference(tmp_path, tmp_path)
    written = json.loads(path.read_text())
    assert written["03_train"] == {"best_val_kappa": {"Img": 0.42, "M": 0.45}, "best_epoch": {"Img": 3, "M": 6}}
    assert str(tmp_path) not in path.read_text() and written["02_notes"] == {}
    assert reference_value("01_data", "per_split", tmp_path) == {"test": 10, "train": 20}
    with pytest.raises(KeyError, match="02_notes/n_ok.*run_all"):
        reference_value("02_notes", "n_ok", tmp_path)


def test_the_lab_is_checked_against_the_demo_but_a_variant_is_told_why_not() -> None:
    assert reference_differs(get_config("demo")) is None and reference_differs(get_config("lab")) is None
    assert "lr" in reference_differs(get_config("lab", {"train.lr": 0.5}))
    assert "temperature" in reference_differs(get_config("demo", {"notes.temperature": 1.2}))
    assert "99" in reference_differs(get_config("demo", {"eval.seeds": [0, 99]}))
    assert reference_differs(get_config("lab", {"notes.ask_limit": None})) is None  # never changes a note


def test_reference_kappa_averages_the_runs_seeds_only(tmp_path) -> None:
    rows = [("Img", 0, 0.40), ("Img", 1, 0.50), ("Img", 2, 0.90), ("M", 0, 0.30), ("M", 1, 0.70), ("P3", 0, 0.1)]
    table = pd.DataFrame([{"strategy": s, "seed": k, "partition": "internal", "source": "pooled", "metric": "kappa",
                           "value": v, "n": 10} for s, k, v in rows])
    other = table.assign(source="synthderm_dermo_a", value=0.0)  # a per-source row is not the pooled one
    pd.concat([table, other]).to_csv(tmp_path / "results.csv", index=False)
    cfg = get_config("lab")
    cfg["eval"]["seeds"], cfg["eval"]["strategies"] = [0, 1], ["Img", "M"]
    assert reference_kappa(cfg, "internal", tmp_path).round(6).to_dict() == {"Img": 0.45, "M": 0.5}


def test_self_check_says_which_items_differ(capsys) -> None:
    cfg = get_config("lab")
    table = self_check(cfg, "kappa", {"Img": 0.431, "M": 0.50}, {"Img": 0.432, "M": 0.41}, tolerance=0.01)
    assert table["agrees"].to_dict() == {"Img": True, "M": False}
    assert "M differ by more than" in capsys.readouterr().out
    self_check(cfg, "kappa", 0.4, 0.4)
    assert "all 1 agree" in capsys.readouterr().out
    self_check(get_config("lab", {"train.lr": 0.5}), "kappa", 0.1, 0.4)
    assert "that is expected" in capsys.readouterr().out


def test_the_committed_reference_matches_the_committed_results() -> None:
    """The committed reference and results table come from one demo run: the demo's counts agree with the
    results' test-set sizes (a stale reference.json would not)."""
    split = reference_value("01_data", "per_split")
    results = pd.read_csv(REFERENCE_DIR / "results.csv")
    pooled = results[(results["metric"] == "kappa") & (results["source"] == "pooled") & (results["seed"] == 0)
                     & (results["strategy"] == "Img")]
    assert int(pooled["n"].sum()) == split["test"]
    assert set(reference_value("03_train", "best_val_kappa")) == set(get_config("demo")["eval"]["strategies"])


def test_self_check_compares_your_items_only() -> None:
    table = self_check(get_config("lab"), "kappa", {"Img": 0.4, "X": 0.3}, {"Img": 0.4, "D": 0.2})
    assert list(table.index) == ["Img", "X"] and table["agrees"].to_dict() == {"Img": True, "X": False}


def test_llm_text_is_shown_as_text_never_as_markup() -> None:
    """What an LLM wrote is escaped before a notebook shows it as Markdown: rendered (mistune, as nbconvert renders
    Markdown outputs), a tag stays text and a link is not made; ordinary punctuation reads as it was written."""
    import mistune

    from dermlib.notebook import escape_markdown

    evil = 'Melanoma. <img src=x onerror="alert(1)"> [click](javascript:alert(1)) <script>alert(2)</script>'
    shown = mistune.html(escape_markdown(evil))
    assert "<img" not in shown and "<script" not in shown and "<a " not in shown and "href" not in shown
    assert "&lt;img src=x onerror=" in shown and "[click](javascript:alert(1))" in shown
    plain = "Asymmetric, 5-10 mm; *dark brown* #1 (typical)\nsecond line"
    assert mistune.html(escape_markdown(plain)) == f"<p>{' '.join(plain.split())}</p>\n"
