"""Findings in words: every sentence follows from its row of comparisons.csv, and the verdict from the interval."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dermlib.report import findings


def _table() -> pd.DataFrame:
    return pd.DataFrame([
        {"comparison": "M - Img", "metric": "kappa", "partition": "external", "estimate": 0.05, "ci_low": 0.01,
         "ci_high": 0.09, "p_value": 0.012, "n_seeds": 10, "n": 600},
        {"comparison": "P3 - M+P1", "metric": "map_i2t", "partition": "internal", "estimate": -0.2, "ci_low": -0.25,
         "ci_high": -0.15, "p_value": 0.001, "n_seeds": 10, "n": 438},
        {"comparison": "P3 - M+P2", "metric": "paired_cosine", "partition": "internal", "estimate": -0.01,
         "ci_low": -0.03, "ci_high": 0.02, "p_value": 0.41, "n_seeds": 10, "n": 438},
        {"comparison": "post hoc: P3 - M+P1", "metric": "map_i2t_within_source", "partition": "internal",
         "estimate": -0.06, "ci_low": -0.08, "ci_high": -0.04, "p_value": 0.001, "n_seeds": 10, "n": 438},
        {"comparison": "chance: M", "metric": "map_i2t", "partition": "internal", "estimate": 0.2, "ci_low": 0.19,
         "ci_high": 0.21, "p_value": np.nan, "n_seeds": 10, "n": 438},
    ])


@pytest.mark.parametrize(("low", "high", "want"), [(0.01, 0.2, "above"), (-0.2, -0.001, "below"),
                                                   (-0.1, 0.1, "not resolved"), (0.0, 0.1, "not resolved")])
def test_verdict_follows_the_interval(low: float, high: float, want: str) -> None:
    assert findings.verdict(low, high) == want


def test_answers_render_each_row_and_leave_chance_out() -> None:
    found = findings.answers(_table())
    assert list(found["comparison"]) == ["M - Img", "P3 - M+P1", "P3 - M+P2", "post hoc: P3 - M+P1"]
    assert list(found["verdict"]) == ["above", "below", "not resolved", "below"]
    assert found["half_width"].tolist() == pytest.approx([0.04, 0.05, 0.025, 0.02])
    assert found["sentence"][0] == ("M - Img, Cohen's kappa (external): +0.050 (95 % CI +0.010 to +0.090, "
                                    "p = 0.012, 10 seeds): M is above Img.")
    assert "no difference between P3 and M+P2 is resolved" in found["sentence"][2]
    assert found["sentence"][3].startswith("post hoc: P3 - M+P1, image -> text mAP, each source's own gallery "
                                           "(internal): -0.060") and found["sentence"][3].endswith("P3 is below M+P1.")
    text = findings.answers_markdown(_table())
    assert text.index("**(a)") < text.index("**(b)") < text.index("**(c)") < text.index("**(b, post hoc)")
    assert text.count("\n- ") == 4
    only_b = findings.answers_markdown(_table(), metrics=["map_i2t", "map_t2i"])
    assert only_b.startswith("**(b)") and only_b.count("\n- ") == 1 and found["sentence"][1] in only_b
    assert "No comparison of recall@1_i2t in this table" in findings.answers_markdown(_table(), metrics=["recall@1_i2t"])


def test_readme_block_is_written_between_the_markers_only(tmp_path) -> None:
    results = pd.DataFrame({"strategy": ["Img", "Img", "M", "M"], "seed": [0, 1, 0, 1], "source": "pooled",
                            "partition": "internal", "metric": "kappa", "value": [0.4, 0.5, 0.45, 0.55]})
    block = findings.readme_block(results, _table(), ["Img", "M"])
    assert "| Img | 0.450 ± 0.071 | – |" in block and "2 paired seeds" in block and "calibration" not in block
    calibrated = findings.readme_block(results, _table(), ["Img", "M"], calibration=(0.46, 0.6))
    assert ("SynthDerm calibration: image-only κ on the internal test set is 0.450 ± 0.071 over 2 seeds: below the "
            "target band 0.46–0.60") in calibrated
    assert "inside the target band 0.45–0.60" in findings.calibration_sentence(results, (0.45, 0.6))
    assert "above the target band 0.30–0.40" in findings.calibration_sentence(results, (0.3, 0.4))
    assert findings.calibration_sentence(results[results["strategy"] == "M"], (0.45, 0.6)) == ""
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{findings.README_START}\nold numbers\n{findings.README_END}\noutro\n")
    assert findings.update_readme(readme, block) is True
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "old numbers" not in text
    assert findings.answers(_table())["sentence"][0] in text
    assert findings.update_readme(readme, block) is False  # idempotent
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="no findings markers"):
        findings.update_readme(readme, block)


def test_chance_levels_are_a_table_of_the_chance_rows() -> None:
    table = pd.concat([_table(), pd.DataFrame([
        {"comparison": "chance: P3", "metric": "map_i2t", "partition": "internal", "estimate": 0.3, "ci_low": 0.29,
         "ci_high": 0.31, "p_value": np.nan, "n_seeds": 10, "n": 438}])], ignore_index=True)
    lines = findings.chance_markdown(table).splitlines()
    assert lines[0] == "| strategy | image -> text mAP (internal) |"
    assert lines[2:] == ["| M | 0.200 |", "| P3 | 0.300 |"]
    assert findings.chance_markdown(_table().iloc[:1]) == ""
