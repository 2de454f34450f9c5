"""The paper's three questions answered in words, rendered from the comparison table (never typed by hand).

`answers(comparisons)` reads `figures/<profile>/comparisons.csv` (written by `dermlib.evaluate.write_comparisons`)
and turns each declared comparison into one sentence with its estimate, 95 % interval and paired p-value, and a
verdict that follows only from the interval: above, below, or not resolved (the interval contains 0).
"""

from __future__ import annotations

import pandas as pd

METRIC_WORDS = {"kappa": "Cohen's kappa", "map_i2t": "image -> text mAP", "map_t2i": "text -> image mAP",
                "paired_cosine": "paired cosine"}
QUESTIONS = {
    "kappa": "(a) do notes raise kappa over the image-only model, most under domain shift?",
    "map_i2t": "(b) do metadata-guided prompts retrieve better than free-form P3 notes?",
    "map_t2i": "(b) do metadata-guided prompts retrieve better than free-form P3 notes?",
    "paired_cosine": "(c) is P3's paired cosine far lower?",
}


def verdict(ci_low: float, ci_high: float) -> str:
    """'above' when the whole 95 % interval is > 0, 'below' when it is < 0, else 'not resolved'."""
    if ci_low > 0:
        return "above"
    if ci_high < 0:
        return "below"
    return "not resolved"


def sentence(row: pd.Series) -> str:
    """One comparison row in words: 'A - B, metric (partition): +0.031 (95 % CI -0.004 to +0.066, p = 0.08): ...'."""
    a, b = (part.strip() for part in str(row["comparison"]).split(" - ", 1))
    said = {"above": f"{a} is above {b}", "below": f"{a} is below {b}",
            "not resolved": f"no difference between {a} and {b} is resolved (the interval contains 0)"}
    found = verdict(float(row["ci_low"]), float(row["ci_high"]))
    return (f"{a} - {b}, {METRIC_WORDS.get(row['metric'], row['metric'])} ({row['partition']}): "
            f"{row['estimate']:+.3f} (95 % CI {row['ci_low']:+.3f} to {row['ci_high']:+.3f}, "
            f"p = {row['p_value']:.3f}, {int(row['n_seeds'])} seeds): {said[found]}.")


def answers(comparisons: pd.DataFrame) -> pd.DataFrame:
    """The declared comparisons (chance rows left out) with question, verdict, interval half-width and sentence."""
    rows = comparisons[~comparisons["comparison"].str.startswith("chance:")].copy()
    rows["question"] = rows["metric"].map(QUESTIONS).fillna("other")
    rows["verdict"] = [verdict(lo, hi) for lo, hi in zip(rows["ci_low"], rows["ci_high"])]
    rows["half_width"] = (rows["ci_high"] - rows["ci_low"]) / 2
    rows["sentence"] = [sentence(r) for _, r in rows.iterrows()]
    return rows.reset_index(drop=True)


def answers_markdown(comparisons: pd.DataFrame) -> str:
    """The answers as Markdown: one heading per question, one bullet per comparison."""
    found = answers(comparisons)
    lines: list[str] = []
    for question, group in found.groupby("question", sort=False):
        lines += [f"**{question}**", ""] + [f"- {s}" for s in group["sentence"]] + [""]
    return "\n".join(lines).strip() + "\n"
