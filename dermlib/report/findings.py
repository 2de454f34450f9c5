"""The paper's three questions answered in words, rendered from the comparison table (never typed by hand).

`answers(comparisons)` reads `figures/<profile>/comparisons.csv` (written by `dermlib.evaluate.results.write_comparisons`)
and turns each comparison (the declared ones, then the post-hoc ones) into one sentence with its estimate, 95 %
interval and paired p-value, and a verdict that follows only from the interval: above, below, or not resolved (the
interval contains 0).
`python -m dermlib.report.findings --readme README.md` writes them, with the headline table, into the README.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from dermlib.evaluate import stats
from dermlib.data import synthderm
from dermlib.config import IMG, add_cli_arguments, config_from_cli
from dermlib.evaluate.results import load_results

METRIC_WORDS = {"kappa": "Cohen's kappa", "map_i2t": "image -> text mAP", "map_t2i": "text -> image mAP",
                "paired_cosine": "paired cosine",
                "map_i2t_within_source": "image -> text mAP, each source's own gallery",
                "map_t2i_within_source": "text -> image mAP, each source's own gallery",
                "paired_cosine_above_chance": "paired cosine above its shuffled-pair chance"}
QUESTIONS = {
    "kappa": "(a) do notes raise kappa over the image-only model, most under domain shift?",
    "map_i2t": "(b) do metadata-guided prompts retrieve better than free-form P3 notes?",
    "map_t2i": "(b) do metadata-guided prompts retrieve better than free-form P3 notes?",
    "paired_cosine": "(c) is P3's paired cosine far lower?",
    # post hoc (eval.post_hoc_comparisons): asked after the pooled answers were seen, so not confirmatory
    **dict.fromkeys(["map_i2t_within_source", "map_t2i_within_source"],
                    "(b, post hoc) do metadata-guided prompts retrieve better than P3 when each query searches only "
                    "its own source's gallery, as in the paper's per-dataset tables?"),
    "paired_cosine_above_chance": "(c, post hoc) is P3's paired cosine lower once each strategy's shuffled-pair "
                                  "chance is subtracted?",
}


def verdict(ci_low: float, ci_high: float) -> str:
    """'above' when the whole 95 % interval is > 0, 'below' when it is < 0, else 'not resolved'."""
    if ci_low > 0:
        return "above"
    if ci_high < 0:
        return "below"
    return "not resolved"


def sentence(row: pd.Series) -> str:
    """One comparison row in words: 'A - B, metric (partition): +0.031 (95 % CI -0.004 to +0.066, p = 0.08): ...'
    (a post-hoc row keeps its 'post hoc: ' prefix)."""
    a, b = (part.strip() for part in str(row["comparison"]).removeprefix(stats.POST_HOC).split(" - ", 1))
    said = {"above": f"{a} is above {b}", "below": f"{a} is below {b}",
            "not resolved": f"no difference between {a} and {b} is resolved (the interval contains 0)"}
    found = verdict(float(row["ci_low"]), float(row["ci_high"]))
    return (f"{row['comparison']}, {METRIC_WORDS.get(row['metric'], row['metric'])} ({row['partition']}): "
            f"{row['estimate']:+.3f} (95 % CI {row['ci_low']:+.3f} to {row['ci_high']:+.3f}, "
            f"p = {row['p_value']:.3f}, {int(row['n_seeds'])} seeds): {said[found]}.")


def answers(comparisons: pd.DataFrame) -> pd.DataFrame:
    """The declared and post-hoc comparisons (chance rows left out) with question, verdict, interval half-width and
    sentence."""
    rows = comparisons[~comparisons["comparison"].str.startswith(stats.CHANCE)].copy()
    rows["question"] = rows["metric"].map(QUESTIONS).fillna("other")
    rows["verdict"] = [verdict(lo, hi) for lo, hi in zip(rows["ci_low"], rows["ci_high"])]
    rows["half_width"] = stats.half_width(rows)
    rows["sentence"] = [sentence(r) for _, r in rows.iterrows()]
    return rows.reset_index(drop=True)


def answers_markdown(comparisons: pd.DataFrame, metrics: list[str] | None = None) -> str:
    """The answers as Markdown: one heading per question, one bullet per comparison (only `metrics`, if given)."""
    found = answers(comparisons)
    if metrics is not None:
        found = found[found["metric"].isin(metrics)]
        if found.empty:
            return (f"No comparison of {', '.join(metrics)} in this table: its strategies are not both in the grid, "
                    "or comparisons.csv predates it (re-run notebook 04).\n")
    lines: list[str] = []
    for question, group in found.groupby("question", sort=False):
        lines += [f"**{question}**", ""] + [f"- {s}" for s in group["sentence"]] + [""]
    return "\n".join(lines).strip() + "\n"


README_START = "<!-- demo-findings:start (written by `python -m dermlib.report.findings --readme README.md`; not by hand) -->"
README_END = "<!-- demo-findings:end -->"
HEADLINE = [("kappa", "internal", "κ internal"), ("kappa", "external", "κ external"),
            ("map_i2t", "internal", "mAP image→text"), ("map_t2i", "internal", "mAP text→image"),
            ("paired_cosine", "internal", "paired cosine")]


def pooled_values(results: pd.DataFrame, strategy: str, metric: str, partition: str) -> pd.Series:
    """One strategy's pooled values of a metric on a partition, one per seed (missing values dropped)."""
    return results[(results["source"] == "pooled") & (results["strategy"] == strategy)
                   & (results["metric"] == metric) & (results["partition"] == partition)]["value"].dropna()


def headline_markdown(results: pd.DataFrame, strategies: list[str]) -> str:
    """Pooled values per strategy as a Markdown table: mean ± sd over seeds (internal partition unless said)."""
    lines = ["| strategy | " + " | ".join(name for _, _, name in HEADLINE) + " |", "|---" * (len(HEADLINE) + 1) + "|"]
    for strategy in strategies:
        cells = []
        for metric, partition, _ in HEADLINE:
            v = pooled_values(results, strategy, metric, partition)
            cells.append(f"{v.mean():.3f} ± {v.std():.3f}" if len(v) > 1 else f"{v.mean():.3f}" if len(v) else "–")
        lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def chance_markdown(comparisons: pd.DataFrame) -> str:
    """The `chance:` rows as a Markdown table: one row per strategy, one column per metric and partition."""
    chance = comparisons[comparisons["comparison"].str.startswith(stats.CHANCE)].copy()
    if chance.empty:
        return ""
    chance["strategy"] = chance["comparison"].str.removeprefix(stats.CHANCE)
    chance["column"] = [f"{METRIC_WORDS.get(m, m)} ({p})" for m, p in zip(chance["metric"], chance["partition"])]
    wide = chance.pivot_table(index="strategy", columns="column", values="estimate", sort=False)
    lines = ["| strategy | " + " | ".join(wide.columns) + " |", "|---" * (len(wide.columns) + 1) + "|"]
    lines += [f"| {s} | " + " | ".join(f"{v:.3f}" for v in row) + " |" for s, row in wide.iterrows()]
    return "\n".join(lines) + "\n"


def calibration_sentence(results: pd.DataFrame, band: tuple[float, float]) -> str:
    """Where image-only kappa on the internal test set falls against the band a synthetic benchmark is calibrated
    to, in words ("" without image-only runs)."""
    pooled = pooled_values(results, IMG, "kappa", "internal")
    if pooled.empty:
        return ""
    low, high = band
    mean = pooled.mean()
    where = "below" if mean < low else "above" if mean > high else "inside"
    spread = f" ± {pooled.std():.3f}" if len(pooled) > 1 else ""
    return (f"SynthDerm calibration: image-only κ on the internal test set is {mean:.3f}{spread} over {len(pooled)} "
            f"seeds: {where} the target band {low:.2f}–{high:.2f} (learnable, not solved; "
            f"`dermlib.data.synthderm.CALIBRATION_KAPPA`).\n")


def readme_block(results: pd.DataFrame, comparisons: pd.DataFrame, strategies: list[str], where: str = "figures/demo",
                 calibration: tuple[float, float] | None = None) -> str:
    """What the README says about a run: the headline table, the calibration of a synthetic benchmark (`calibration`:
    its band), then every answer in words (`where`: its figures)."""
    n_seeds = results["seed"].nunique()
    calibrated = calibration_sentence(results, calibration) if calibration else ""
    chance = chance_markdown(comparisons)
    if chance:
        chance = ("\nChance levels on the same pools, mean over seeds (`chance:` rows: mAP with the gallery's labels "
                  "permuted, cosine of shuffled image–note pairs):\n\n" + chance)
    return (f"Pooled over sources, mean ± sd over {n_seeds} paired seeds (`{where}/results.csv`):\n\n"
            + headline_markdown(results, strategies) + (f"\n{calibrated}" if calibrated else "")
            + f"\nThe comparisons, declared before any result and then post hoc (`{where}/comparisons.csv`; "
              "estimate, 95 % CI over seeds × clusters of test images, paired p-value):\n\n"
            + answers_markdown(comparisons) + chance)


def update_readme(path: Path, block: str) -> bool:
    """Replace the text between the README's findings markers with `block`; True when the file changed."""
    text = path.read_text(encoding="utf-8")
    if README_START not in text or README_END not in text:
        raise ValueError(f"{path} has no findings markers: add the lines\n{README_START}\n{README_END}")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    new = f"{head}{README_START}\n{block}{README_END}{tail}"
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


def main(argv: list[str] | None = None) -> int:
    """Print the demo findings (or write them into the README between its markers)."""
    parser = argparse.ArgumentParser(description=__doc__)
    add_cli_arguments(parser)
    parser.add_argument("--readme", type=Path, default=None, help="README to update between the findings markers")
    args = parser.parse_args(argv)
    cfg, _ = config_from_cli(parser, args)
    results = load_results(cfg)
    comparisons = pd.read_csv(Path(cfg["figures_dir"]) / "comparisons.csv")
    order = [s for s in cfg["eval"]["strategies"] if s in set(results["strategy"])]
    band = synthderm.CALIBRATION_KAPPA if cfg["synthetic"] else None
    block = readme_block(results, comparisons, order, where=f"figures/{cfg['profile']}", calibration=band)
    if args.readme is None:
        print(block)
    else:
        print(f"{args.readme}: {'updated' if update_readme(args.readme, block) else 'already up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
