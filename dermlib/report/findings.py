"""The paper's three questions answered in words, rendered from the comparison table (never typed by hand).

`answers(comparisons)` reads `figures/<profile>/comparisons.csv` (written by `dermlib.evaluate.results.write_comparisons`)
and turns each comparison into one sentence (`dermlib.evaluate.protocol.sentence`: estimate, 95 % interval, p, Holm p
and a verdict that follows from the numbers only: above, below, equivalent within the declared margin, or not
resolved). `claims_markdown` sets each question's declared primary answer beside the paper's claim.
`python -m dermlib.report.findings --readme README.md` writes them, with the headline table, into the README.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from dermlib.atomic import CorruptFileError, write_text
from dermlib.config import add_cli_arguments, config_from_cli
from dermlib.data import synthderm
from dermlib.evaluate import protocol, stats
from dermlib.evaluate.results import load_results
from dermlib.grammar import IMG, NOTE_STRATEGIES

QUESTIONS = {"a": "(a) do notes raise κ over the image-only model, most under domain shift?",
             "b": "(b) do metadata-guided prompts retrieve better than free-form P3 notes?",
             "c": "(c) is P3's paired cosine far lower?"}
KINDS = {"primary": "declared primary comparisons (per source, macro over sources; Holm within the question)",
         "secondary": "secondary", "sensitivity": "sensitivity", "control": "controls (labelled controls, not paper "
         "strategies)", "earlier-protocol": "earlier protocol (one gallery pooling every source of a partition)"}
# What the paper claims and the numbers its summary quotes (../shared/paper: a summary of the paper, not its tables).
PAPER_CLAIMS = {
    "a": ("notes raise κ over image-only, most under domain shift",
          "external κ: SKINL2 0.686 → 0.743 (M+P2), Fitzpatrick17k 0.418 → 0.456 (P3)"),
    "b": ("M+P1 and M+P2 notes retrieve better than P3",
          "BCN20000 mAP: M+P1 0.787, M+P2 0.782, P3 0.510 (direction not stated)"),
    "c": ("P3's paired cosine is far lower", "paired cosine: P3 0.204–0.312, M+P2 0.689–0.797 across datasets"),
}
PAPER_SIGN = {"a": 1, "b": -1, "c": -1}  # the direction each primary difference takes in the paper
# Why a synthetic run may differ from the paper where it does: typed, so they state no number (the numbers are the
# table's), and shown only beside a claim the run does not reproduce. Hypotheses to test, not findings.
REASONS = {
    "a": "SynthDerm's images are drawn from the very attributes the notes could name, so text adds little the image "
         "lacks; only a rank-16 adapter of the trunk trains; compare the positive control M+G − Img",
    "b": "a 135M local LLM writes the notes, not gpt-4o-mini, and SynthDerm's metadata is thin; the per-source "
         "galleries remove the source signature that pooled galleries rewarded",
    "c": "runs are read at their best epoch (lowest validation image loss), early in training: the last-epoch "
         "sensitivity rows show the gap later on; notes that all look alike score high with any image (the "
         "secondary rows subtract that)",
}
ALL_MM = protocol.set_name(list(NOTE_STRATEGIES))
# How to read the demo's answers: typed, so it states no number (every number is in the rendered tables); shown in
# the README's findings block and in notebook 05 (`reading_markdown`).
READING = """1. **(a) and the controls.** Part of the image trunk now trains before the pooling (a rank-16 adapter on
   EfficientNet-Lite0's last convolution and its batch norm, the same for Img and every strategy), so the notes *can*
   change what the trunk extracts. Where a Δκ is not resolved, the equivalence test says whether the interval still
   holds an effect of the paper's size. Read (a) beside the positive control M+G, whose notes name each image's drawn
   border, colours and structures: if M+G − Img is not above 0 either, this design cannot detect the mechanism the
   paper proposes, and a null for the paper's strategies says nothing about it. Likely reasons, to test rather than
   believe: the adapter is a small part of the trunk; SynthDerm's images are drawn from the very attributes the
   grounded text names, so the text adds little the image lacks; and the text branch's cross-entropy repeats the
   label the image branch already learns from. The control D (the diagnosis alone) separates a note's content from
   the extra loss terms.
2. **(b)** is asked one source at a time, as the paper's per-dataset tables are. Under the earlier protocol (one
   gallery pooling every source of a partition) the M-family notes carry a source signature (what their source
   records), which P3's notes, written from the diagnosis alone, lack; pooling rewarded P3 for it. The per-source
   galleries take that effect out, and every per-source cell of Tables 3 and 4 shows its chance level beside it; the
   pooled rows also show the mAP of a ranking by source alone (`source-only`), what a pooled gallery gives for
   recognising the source without any class information.
3. **(c)** is measured at each run's best epoch (lowest validation image cross-entropy, as the authors' code
   selects) and, as a declared sensitivity, at its last epoch: runs stop early, and a strategy's paired cosine can
   keep moving after its best epoch (the learning curves of notebook 03 show the validation paired cosine per
   epoch; compare the primary and the last-epoch rows).
   Notes that look alike sit close to *any* image, so the secondary row subtracts each image's cosine to the other
   notes of its own source.
4. A 135M local model, not gpt-4o-mini, writes the LLM notes: fluent, long and varied (notebook 02 measures how
   varied, and its audit how often they contradict the image's record), so how far P3 drifts from the image is a
   property of this LLM as much as of the strategy. The paper profile changes the model, the LLM and the data.
"""


def reading_markdown() -> str:
    """The demo's "Reading these results" section (typed, no numbers), as the README and notebook 05 show it."""
    return "#### Reading these results\n\n" + READING.strip() + "\n"


def answers(comparisons: pd.DataFrame) -> pd.DataFrame:
    """Every comparison but the chance rows, with its question, verdict, interval half-width and sentence."""
    rows = comparisons[comparisons["kind"] != "chance"].copy()
    rows["verdict"] = [protocol.verdict(r) for _, r in rows.iterrows()]
    rows["half_width"] = stats.half_width(rows)
    rows["sentence"] = [protocol.sentence(r) for _, r in rows.iterrows()]
    return rows.reset_index(drop=True)


def answers_markdown(comparisons: pd.DataFrame, metrics: list[str] | None = None,
                     kinds: tuple[str, ...] = ("primary", "secondary", "sensitivity", "control")) -> str:
    """The answers as Markdown: per question, per kind, one bullet per comparison (only `metrics` and `kinds`)."""
    found = answers(comparisons)
    found = found[found["kind"].isin(kinds)]
    if metrics is not None:
        found = found[found["metric"].isin(metrics)]
    if found.empty:
        return (f"No comparison of {', '.join(metrics or ['any metric'])} ({', '.join(kinds)}) in this table: its "
                "strategies are not all in the grid, or comparisons.csv predates it (re-run notebook 04).\n")
    lines: list[str] = []
    for question, by_question in found.groupby("question", sort=True):
        lines += [f"**{QUESTIONS.get(question, question)}**", ""]
        for kind in kinds:
            group = by_question[by_question["kind"] == kind]
            if len(group):
                lines += [f"*{KINDS[kind]}*", ""] + [f"- {s}" for s in group["sentence"]] + [""]
    return "\n".join(lines).strip() + "\n"


def claim_verdict(rows: pd.DataFrame, sign: int) -> str:
    """A question's primary rows against the paper's direction `sign`: how many resolve its way, the other way, are
    equivalent within the margin, or stay unresolved."""
    said = [protocol.verdict(r) for _, r in rows.iterrows()]
    paper_way, other_way = ("above", "below") if sign > 0 else ("below", "above")
    counts = {word: said.count(word) for word in (paper_way, other_way, "equivalent", "not resolved")}
    if counts[paper_way] == len(said):
        return f"reproduced ({len(said)} of {len(said)} rows {paper_way} 0)"
    if counts[other_way] == len(said):
        return f"opposite ({len(said)} of {len(said)} rows {other_way} 0)"
    parts = [f"{n} {word}" for word, n in counts.items() if n]
    return f"{'partly reproduced' if counts[paper_way] else 'not reproduced'} ({', '.join(parts)} of {len(said)})"


def claims(comparisons: pd.DataFrame, synthetic: bool = True) -> pd.DataFrame:
    """One row per question: the paper's claim and numbers, and this run's verdict from its declared primary rows
    (its column says "SynthDerm" only for a `synthetic` run):
    (a) the external Δκ of the paper strategies' mean and the external − internal interaction; (b) P3 − mean(M+P1,
    M+P2) within each source, both directions and partitions; (c) P3 − M+P2 raw paired cosine, both partitions."""
    primary = comparisons[comparisons["kind"] == "primary"]
    pick = {"a": primary[(primary["question"] == "a") & (primary["comparison"] == f"{ALL_MM} - {IMG}")],
            "b": primary[primary["question"] == "b"], "c": primary[primary["question"] == "c"]}
    out = []
    for question, rows in pick.items():
        claim, numbers = PAPER_CLAIMS[question]
        demo = claim_verdict(rows, PAPER_SIGN[question]) if len(rows) else "not in this grid"
        ours = "demo (SynthDerm, declared primaries)" if synthetic else "this run (declared primaries)"
        reason = REASONS[question] if synthetic and not demo.startswith("reproduced") and len(rows) else "–"
        out.append({"question": QUESTIONS[question], "paper claims": claim, "paper (quoted in a summary of it)": numbers,
                    ours: demo, "possible reasons (to test, not findings)": reason, "rows": len(rows)})
    return pd.DataFrame(out)


def claims_markdown(comparisons: pd.DataFrame, synthetic: bool = True) -> str:
    """`claims` as a Markdown table."""
    table = claims(comparisons, synthetic).drop(columns="rows")
    lines = ["| " + " | ".join(table.columns) + " |", "|---" * len(table.columns) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def earlier_summary(comparisons: pd.DataFrame) -> str:
    """One sentence on the earlier protocol's rows (pooled galleries): how many resolve above, below, or not."""
    rows = comparisons[comparisons["kind"] == "earlier-protocol"]
    if rows.empty:
        return ""
    said = pd.Series([protocol.verdict(r) for _, r in rows.iterrows()]).value_counts()
    parts = ", ".join(f"{n} {word}" for word, n in said.items())
    return (f"The earlier protocol (one gallery pooling every source of a partition, and its post-hoc rows) is kept in "
            f"`comparisons.csv` as {len(rows)} rows of kind `earlier-protocol`: {parts}.\n")


README_START = "<!-- demo-findings:start (written by `python -m dermlib.report.findings --readme README.md`; not by hand) -->"
README_END = "<!-- demo-findings:end -->"
HEADLINE = [("kappa", "internal", "κ internal"), ("kappa", "external", "κ external"),
            ("map_i2t", "internal", "mAP image→text, internal (pooled gallery)"),
            ("map_t2i", "internal", "mAP text→image, internal (pooled gallery)"),
            ("paired_cosine", "internal", "paired cosine, internal")]


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
    words = {"map_i2t": "image → text mAP", "map_t2i": "text → image mAP", "paired_cosine": "paired cosine",
             stats.SOURCE_ONLY: "source-only ranking mAP"}
    chance["column"] = [f"{words.get(m, m)} ({p})" for m, p in zip(chance["metric"], chance["partition"])]
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
                 calibration: tuple[float, float] | None = None, synthetic: bool = True) -> str:
    """What the README says about a run: the headline table, the calibration of a synthetic benchmark (`calibration`:
    its band), the claims beside the paper's, then every declared answer in words (`where`: its figures)."""
    n_seeds = results["seed"].nunique()
    calibrated = calibration_sentence(results, calibration) if calibration else ""
    chance = chance_markdown(comparisons)
    if chance:
        chance = ("\nChance levels of the pooled galleries, mean over seeds (`chance:` rows: mAP with the gallery's labels "
                  "permuted, cosine of shuffled image–note pairs; and the mAP of a ranking that puts every item of the "
                  "query's own source first, tied, the rest after: what a pooled gallery gives for recognising the "
                  "source alone):\n\n" + chance)
    return (f"Pooled over sources, mean ± sd over {n_seeds} paired seeds (`{where}/results.csv`):\n\n"
            + headline_markdown(results, strategies) + (f"\n{calibrated}" if calibrated else "")
            + "\nThe paper's claims beside the demo's declared primary comparisons (`" + where + "/comparisons.csv`):\n\n"
            + claims_markdown(comparisons, synthetic)
            + "\nEvery declared comparison (estimate, 95 % CI over seeds × clusters within each source, bootstrap p with "
              "Holm's adjustment within the question, and an equivalence test against the declared margin where a "
              "difference is not resolved):\n\n"
            + answers_markdown(comparisons) + "\n" + earlier_summary(comparisons) + chance
            + ("\n" + reading_markdown() if synthetic else ""))


def update_readme(path: Path, block: str) -> bool:
    """Replace the text between the README's findings markers with `block`; True when the file changed."""
    text = path.read_text(encoding="utf-8")
    if README_START not in text or README_END not in text:
        raise ValueError(f"{path} has no findings markers: add the lines\n{README_START}\n{README_END}")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    new = f"{head}{README_START}\n{block}{README_END}{tail}"
    if new != text:
        write_text(path, new)  # atomically: a crash never leaves half a README
    return new != text


def main(argv: list[str] | None = None) -> int:
    """Print the demo findings (or write them into the README between its markers); a work dir without results
    ends in one line naming the missing file and the notebook that writes it, exit status 2."""
    parser = argparse.ArgumentParser(description=__doc__)
    add_cli_arguments(parser)
    parser.add_argument("--readme", type=Path, default=None, help="README to update between the findings markers")
    args = parser.parse_args(argv)
    cfg, _ = config_from_cli(parser, args)
    try:
        results = load_results(cfg)
        compared = Path(cfg["figures_dir"]) / "comparisons.csv"
        if not compared.exists():
            raise FileNotFoundError(f"{compared} does not exist: run notebook 04_evaluate (./run_all.sh --only 04)")
    except (FileNotFoundError, CorruptFileError) as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    comparisons = pd.read_csv(compared)
    order = [s for s in cfg["eval"]["strategies"] if s in set(results["strategy"])]
    band = synthderm.CALIBRATION_KAPPA if cfg["synthetic"] else None
    block = readme_block(results, comparisons, order, where=f"figures/{cfg['profile']}", calibration=band,
                         synthetic=bool(cfg["synthetic"]))
    if args.readme is None:
        print(block)
    else:
        print(f"{args.readme}: {'updated' if update_readme(args.readme, block) else 'already up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
