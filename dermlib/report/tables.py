"""The paper's Tables 2-5 rebuilt from the tidy results table, written as CSV, Markdown and LaTeX; and the probe
tables (zero-shot, concept retrieval, linear probe: `dermlib.evaluate.probes`) beside the image-branch classifier, with
their chance levels.

Our numbers sit in columns named `ours: <strategy>`; the few numbers the paper reports (and only those, from
the paper summary) sit in separate columns named `paper: <strategy>`, in the rows of the datasets they were
measured on. The two are never mixed in one column. Demo tables are titled as SynthDerm (synthetic) results;
the paper's rows there are real datasets the demo does not use, so their `ours` cells stay empty.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dermlib.data.labels import config_classes
from dermlib.evaluate.results import permutation_chance
from dermlib.evaluate.stats import SOURCE_ONLY
from dermlib.grammar import IMG, PAPER_STRATEGIES
from dermlib.metrics import summarise_seeds

POOLED = "pooled"
PAPER = "Marini et al. 2025 (arXiv 2511.21827)"

# Every number the paper summary reports (/work/shared/paper/README.md); nothing else is known.
PAPER_KAPPA = {("external", "skinl2"): {IMG: 0.686, "M+P2": 0.743},
               ("external", "fitzpatrick17k"): {IMG: 0.418, "P3": 0.456}}
PAPER_MAP_BCN = {("internal", "bcn20000"): {"M+P1": 0.787, "M+P2": 0.782, "P3": 0.510}}
PAPER_COSINE_RANGE = {"M+P2": (0.689, 0.797), "P3": (0.204, 0.312)}
RANGE_ROW = ("all", "range across sources")
MAP_DIRECTION_NOTE = ("The paper summary reports BCN20000 retrieval mAP without saying which direction "
                      "(image->text or text->image); the same paper numbers are shown in Tables 3 and 4.")

TABLES = {
    "table2_kappa": ("kappa", "Table 2: Cohen's kappa (image branch) per source, internal and external"),
    "table3_map_i2t": ("map_i2t", "Table 3: class-level retrieval mAP, image -> text"),
    "table4_map_t2i": ("map_t2i", "Table 4: class-level retrieval mAP, text -> image"),
    "table5_paired_cosine": ("paired_cosine", "Table 5: mean cosine similarity of each image with its own note"),
}

# Tables of what the model knows beyond its classifier (no paper numbers: the paper reports none of these).
PROBE_TABLES = {
    "table_zero_shot": "Zero-shot classification from class prompts (text branch) beside the image-branch "
                       "classifier, pooled per partition",
    "table_concepts": "Concept retrieval: AUROC of the image-phrase cosine against the ground truth per attribute, "
                      "pooled per partition",
    "table_linear_probe": "Linear probe (logistic regression on frozen image embeddings) beside the image-branch "
                          "classifier, pooled per partition",
    "table_linear_probe_sources": "Linear probe (logistic regression on frozen image embeddings) beside the "
                                  "image-branch classifier, per test source",
}
PER_SOURCE = {"table_linear_probe_sources": "table_linear_probe"}  # per-source table -> its pooled table
MEASURES = {"kappa": "Cohen's kappa", "balanced_accuracy": "balanced accuracy"}
CLASSIFIER = "image-branch classifier"


def strategies(cfg: dict[str, Any], results: pd.DataFrame) -> list[str]:
    """Strategies in the configured order, keeping only those present in the results."""
    order = list(cfg.get("eval", {}).get("strategies") or PAPER_STRATEGIES)
    present = set(results["strategy"])
    return [s for s in order if s in present] + sorted(present - set(order))


def _row_key(row: tuple[str, str]) -> tuple[int, bool, str]:
    """Sort key of a (partition, source) row: internal before external, sources before the pooled row."""
    partition, source = row
    return {"internal": 0, "external": 1}.get(partition, 2), source == POOLED, source


def _row_order(index: pd.MultiIndex) -> list[tuple[str, str]]:
    """internal sources, internal pooled, external sources, external pooled."""
    return sorted(index, key=_row_key)


def ours_wide(results: pd.DataFrame, metric: str, order: list[str]) -> pd.DataFrame:
    """One row per (partition, source), per strategy: mean over seeds, sd, seeds, mean bootstrap CI and, where the
    results hold one (`chance_<metric>`: labels permuted or pairs shuffled within that source), its chance level."""
    rows = results[results["metric"] == metric]
    if rows.empty:
        return pd.DataFrame(index=pd.MultiIndex.from_tuples([], names=["partition", "source"]))
    summary = summarise_seeds(rows, keys=("strategy", "partition", "source"))
    cis = rows.groupby(["strategy", "partition", "source"])[["ci_low", "ci_high"]].mean().reset_index()
    summary = summary.merge(cis, on=["strategy", "partition", "source"], how="left")
    wide = summary.pivot(index=["partition", "source"], columns="strategy",
                         values=["mean", "sd", "n_seeds", "ci_low", "ci_high"])
    out = pd.DataFrame(index=wide.index)
    for strategy in order:
        if ("mean", strategy) not in wide.columns:
            continue
        out[f"ours: {strategy}"] = wide[("mean", strategy)].astype(float)
        out[f"ours: {strategy} sd"] = wide[("sd", strategy)].astype(float)
        out[f"ours: {strategy} seeds"] = wide[("n_seeds", strategy)].astype("Int64")
        out[f"ours: {strategy} ci_low"] = wide[("ci_low", strategy)].astype(float)
        out[f"ours: {strategy} ci_high"] = wide[("ci_high", strategy)].astype(float)
    if metric.startswith("map_"):  # pooled rows of a retrieval table: what a ranking by source alone gives
        _baseline_columns(out, results[results["metric"] == SOURCE_ONLY], order, "source-only")
    _baseline_columns(out, results[results["metric"] == f"chance_{metric}"], order, "chance")
    return out


def _baseline_columns(out: pd.DataFrame, rows: pd.DataFrame, order: list[str], name: str) -> None:
    """Add `ours: <strategy> <name>` to `out`: the mean of a baseline's `rows` per strategy and (partition, source)
    row of `out`, for the strategies `out` has and `rows` hold."""
    if rows.empty:
        return
    level = rows.groupby(["strategy", "partition", "source"])["value"].mean()
    for strategy in order:
        if f"ours: {strategy}" in out and strategy in level.index.get_level_values(0):
            out[f"ours: {strategy} {name}"] = [level.get((strategy, *row), np.nan) for row in out.index]


def _with_paper(ours: pd.DataFrame, paper: dict[tuple[str, str], dict[str, float]]) -> pd.DataFrame:
    """Append `paper: <strategy>` columns, adding the paper's dataset rows when our results lack them."""
    rows = list(ours.index) + [r for r in paper if r not in ours.index]
    if not rows:
        return ours
    table = ours.reindex(pd.MultiIndex.from_tuples(_row_order(pd.MultiIndex.from_tuples(rows)),
                                                   names=["partition", "source"]))
    for strategy in [s for s in PAPER_STRATEGIES if any(s in v for v in paper.values())]:
        table[f"paper: {strategy}"] = [paper.get(r, {}).get(strategy, np.nan) for r in table.index]
    return table


def build_table(results: pd.DataFrame, cfg: dict[str, Any], name: str) -> pd.DataFrame:
    """The numeric table `name` (a key of TABLES): rows (partition, source), `ours:` columns and, for a run on the
    real datasets, `paper:` columns in the rows of the datasets the paper's numbers come from (a synthetic run's
    tables hold none: its sources are not the paper's; `paper_reference` lists them apart)."""
    metric, _ = TABLES[name]
    order = strategies(cfg, results)
    ours = ours_wide(results, metric, order)
    paper = not cfg.get("synthetic")
    if name == "table2_kappa":
        return _with_paper(ours, PAPER_KAPPA if paper else {})
    if name in ("table3_map_i2t", "table4_map_t2i"):
        return _with_paper(ours, PAPER_MAP_BCN if paper else {})
    # Table 5: the paper gives a range across datasets; compare it with our range across (non-pooled) sources.
    table = ours.reindex(pd.MultiIndex.from_tuples(_row_order(ours.index), names=["partition", "source"]))
    per_source = table[[i[1] != POOLED for i in table.index]]
    table.loc[RANGE_ROW, :] = np.nan
    is_range = np.array([index == RANGE_ROW for index in table.index])
    for strategy in order:
        column = f"ours: {strategy}"
        if column in per_source and per_source[column].notna().any():
            table[f"{column} low"] = np.where(is_range, per_source[column].min(), np.nan)
            table[f"{column} high"] = np.where(is_range, per_source[column].max(), np.nan)
    for strategy, (low, high) in (PAPER_COSINE_RANGE if paper else {}).items():
        table[f"paper: {strategy} low"] = np.where(is_range, low, np.nan)
        table[f"paper: {strategy} high"] = np.where(is_range, high, np.nan)
    return table


PAPER_SOURCE = "as quoted in a summary of the paper (../shared/paper/), not read from its tables"


def paper_reference() -> pd.DataFrame:
    """Every number of the paper that dermlib knows, one per row, with what it measures: the numbers a summary of
    the paper quotes (its full tables are not available here), kept apart from any result of ours."""
    rows = [{"measure": "Cohen's kappa (external test)", "dataset": source, "strategy": strategy, "value": value,
             "note": ""} for (_, source), values in PAPER_KAPPA.items() for strategy, value in values.items()]
    rows += [{"measure": "class-level retrieval mAP", "dataset": source, "strategy": strategy, "value": value,
              "note": "direction (image->text or text->image) not stated"}
             for (_, source), values in PAPER_MAP_BCN.items() for strategy, value in values.items()]
    rows += [{"measure": "paired cosine, range across datasets", "dataset": "all", "strategy": strategy,
              "value": f"{low:.3f}-{high:.3f}", "note": ""} for strategy, (low, high) in PAPER_COSINE_RANGE.items()]
    return pd.DataFrame(rows)


def _cell(row: pd.Series, column: str, is_range: bool, seeds_said: bool = False) -> str:
    """One human-readable cell: value, then +- sd over seeds (with their number unless the table's notes say it:
    `seeds_said`) or a bootstrap CI; '-' when absent."""
    if is_range:
        low, high = row.get(f"{column} low", np.nan), row.get(f"{column} high", np.nan)
        return f"{low:.3f}-{high:.3f}" if pd.notna(low) else "-"
    value = row.get(column, np.nan)
    if pd.isna(value):
        return "-"
    value = 0.0 if abs(value) < 5e-4 else value  # never print "-0.000"
    seeds = row.get(f"{column} seeds", pd.NA)
    if not pd.isna(seeds) and seeds > 1:
        return f"{value:.3f} ± {row[f'{column} sd']:.3f}" + ("" if seeds_said else f" ({int(seeds)} seeds)")
    low, high = row.get(f"{column} ci_low", np.nan), row.get(f"{column} ci_high", np.nan)
    return f"{value:.3f} [{low:.3f}, {high:.3f}]" if pd.notna(low) and pd.notna(high) else f"{value:.3f}"


def _with_chance(text: str, row: pd.Series, column: str) -> str:
    """A cell followed by its chance level in its own brackets, `(chance 0.181)`, where the table holds one, and on
    a pooled retrieval row the source-only ranking's mAP, `(chance 0.181; source-only 0.352)`."""
    chance, only = row.get(f"{column} chance", np.nan), row.get(f"{column} source-only", np.nan)
    if text == "-" or pd.isna(chance):
        return text
    return f"{text} (chance {chance:.3f}; source-only {only:.3f})" if pd.notna(only) else f"{text} (chance {chance:.3f})"


def common_seeds(table: pd.DataFrame) -> int | None:
    """The number of seeds behind every `ours` cell when it is one number above 1 (the notes then say it once)."""
    counts = pd.concat([table[c] for c in table.columns if c.endswith(" seeds")] or [pd.Series(dtype="Int64")])
    counts = counts.dropna()
    counts = counts[counts > 0].unique()  # a strategy without the metric (Img's retrieval) counts no seed
    return int(counts[0]) if len(counts) == 1 and counts[0] > 1 else None


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """Strings for Markdown/LaTeX: one column per strategy for ours, one per strategy for the paper (a number of
    seeds common to every cell is left to the notes: `common_seeds`)."""
    said = common_seeds(table) is not None
    ours = [c for c in table.columns if c.startswith("ours: ") and len(c.split(" ")) == 2]
    paper_ranges = sorted({c.rsplit(" ", 1)[0] for c in table.columns if c.startswith("paper: ")
                           and c.endswith((" low", " high"))})
    paper = [c for c in table.columns if c.startswith("paper: ") and not c.endswith((" low", " high"))]
    out = pd.DataFrame(index=table.index)
    if "chance" in table.columns:
        out["chance"] = [f"{v:.3f}" if pd.notna(v) else "-" for v in table["chance"]]
    for column in ours:
        out[column] = [_with_chance(_cell(row, column, index == RANGE_ROW, said), row, column)
                       for index, row in table.iterrows()]
    for column in paper:
        out[column] = [f"{v:.3f}" if pd.notna(v) else "-" for v in table[column]]
    for column in paper_ranges:
        out[f"{column} (range)"] = [f"{lo:.3f}-{hi:.3f}" if pd.notna(lo) else "-"
                                    for lo, hi in zip(table[f"{column} low"], table[f"{column} high"])]
    return out.reset_index()


def title(cfg: dict[str, Any], name: str) -> str:
    """A table title that says whose data it is."""
    text = TABLES[name][1] if name in TABLES else PROBE_TABLES[name]
    return f"SynthDerm (synthetic) results - {text}" if cfg.get("synthetic") else f"{text} ({cfg.get('profile')})"


def footnotes(cfg: dict[str, Any], name: str) -> list[str]:
    """The notes printed under a table."""
    notes = [f"'ours' columns: this pipeline (profile {cfg.get('profile')!r}); mean over seeds, then "
             "+- sd when there are several seeds, else a bootstrap 95% CI in brackets."]
    if name in PROBE_TABLES:
        notes += probe_footnotes(cfg, name)
    else:
        notes.append(f"'paper' columns: the few numbers of {PAPER} {PAPER_SOURCE}, on real datasets; never "
                     "mixed with ours." if not cfg.get("synthetic") else
                     f"SynthDerm's sources are not the paper's datasets, so this table holds no number of {PAPER}: "
                     f"the few {PAPER_SOURCE} are in table_paper_reference.")
    if cfg.get("synthetic"):
        notes.append("Ours are on SynthDerm, a synthetic benchmark: they are not comparable with the paper's.")
    if name in ("table3_map_i2t", "table4_map_t2i"):
        if not cfg.get("synthetic"):  # a synthetic table holds no paper number
            notes.append(MAP_DIRECTION_NOTE)
        notes.append("Pooled rows search one gallery mixing every source of the partition; beside chance they show "
                     "'source-only': the mAP of a ranking that puts the query's own source first (tied) and knows "
                     "nothing else, what a pooled gallery rewards for recognising the source alone. The per-source "
                     "rows (one gallery per source, as the paper) are the declared ones.")
    if name == "table5_paired_cosine" and not cfg.get("synthetic"):
        notes.append("The paper gives paired cosine only as a range across datasets; compare it with the "
                     "'range across sources' row.")
    return notes


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of a string DataFrame."""
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(str(v).replace("|", "/") for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def write_table(table: pd.DataFrame, cfg: dict[str, Any], name: str) -> dict[str, Path]:
    """Write `<figures_dir>/<name>.csv` (numbers), `.md` and `.tex` (formatted, titled, with notes)."""
    out = Path(cfg["figures_dir"])
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / f"{name}.csv", "md": out / f"{name}.md", "tex": out / f"{name}.tex"}
    table.reset_index().to_csv(paths["csv"], index=False, float_format="%.4f")
    shown = display_table(table)
    notes = footnotes(cfg, name)
    if common_seeds(table):
        notes.insert(0, f"Every 'ours' cell: mean ± sd over {common_seeds(table)} paired seeds.")
    paths["md"].write_text(f"### {title(cfg, name)}\n\n{to_markdown(shown)}\n\n"
                           + "\n".join(f"- {n}" for n in notes) + "\n")
    paths["tex"].write_text(_latex(shown, title(cfg, name), f"tab:{name}", notes))
    return paths


def write_paper_reference(cfg: dict[str, Any]) -> pd.DataFrame:
    """Write `<figures_dir>/table_paper_reference.{csv,md,tex}`: `paper_reference`, titled with its provenance."""
    table = paper_reference()
    out = Path(cfg["figures_dir"])
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "table_paper_reference.csv", index=False)
    caption = f"The numbers of {PAPER} that dermlib knows, {PAPER_SOURCE}"
    notes = ["Measured by the paper's authors on real datasets with gpt-4o-mini notes, DenseNet121 and PubMedBERT; "
             "no number here comes from dermlib."]
    shown = table.assign(value=[v if isinstance(v, str) else f"{v:.3f}" for v in table["value"]])
    (out / "table_paper_reference.md").write_text(f"### {caption}\n\n{to_markdown(shown)}\n\n- {notes[0]}\n")
    (out / "table_paper_reference.tex").write_text(_latex(shown, caption, "tab:paper_reference", notes))
    return table


def _latex(shown: pd.DataFrame, caption: str, label: str, notes: list[str]) -> str:
    """A LaTeX table whose notes are printed under it, inside the table environment (not hidden in comments)."""
    latex = shown.to_latex(index=False, caption=caption, label=label, escape=True)
    block = "\\par\\smallskip\\footnotesize\n" + " \\\\\n".join(_tex_escape(n) for n in notes) + "\n"
    return latex.replace("\\end{table}", block + "\\end{table}")


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _tex_escape(text: str) -> str:
    """`text` with LaTeX's special characters escaped, in one pass (as pandas escapes table cells)."""
    return re.sub(r"[\\&%$#_{}~^]", lambda m: _TEX[m.group(0)], text)


HEADLINE = ["kappa", "map_i2t", "map_t2i", "paired_cosine", "recall@1_i2t"]


def headline(results: pd.DataFrame, cfg: dict[str, Any]) -> pd.DataFrame:
    """One row per strategy: the pooled internal and external value of each headline metric (mean over seeds)."""
    pooled = results[(results["source"] == POOLED) & results["metric"].isin(HEADLINE)]
    wide = pooled.groupby(["strategy", "metric", "partition"])["value"].mean().unstack(["metric", "partition"])
    columns = [(m, p) for m in HEADLINE for p in ("internal", "external") if (m, p) in wide.columns]
    out = wide[columns]
    out.columns = [f"{m} {p}" for m, p in columns]
    return out.reindex(strategies(cfg, results))


def per_strategy(summary: pd.DataFrame, column: str) -> dict[str, float]:
    """{strategy: value} of one `headline` column, leaving out strategies where it is undefined (NaN)."""
    return {str(s): float(v) for s, v in summary[column].items() if pd.notna(v)}


def build_all(results: pd.DataFrame, cfg: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """Build and write Tables 2-5; returns the numeric tables by name."""
    if results.empty:
        raise ValueError("the results table is empty: run dermlib.evaluate.grid.run_grid(cfg) (notebook 04) first")
    tables = {}
    for name in TABLES:
        tables[name] = build_table(results, cfg, name)
        write_table(tables[name], cfg, name)
    tables["table_paper_reference"] = write_paper_reference(cfg)
    for name in PROBE_TABLES:  # only when the evaluation wrote probe rows
        table = build_probe_table(results, cfg, name)
        if len(table):
            tables[name] = table
            write_table(table, cfg, name)
    return tables


def chance_level(results: pd.DataFrame, metric: str, partition: str, n_classes: int, source: str = POOLED) -> float:
    """Chance of a metric on a partition's source (default: the pooled partition): the mean `chance_<metric>` of the
    results where they hold one (a permutation baseline), else kappa 0, balanced accuracy 1/n_classes, AUROC 0.5."""
    held = permutation_chance(results, metric, partition, source=source)
    if np.isfinite(held):
        return held
    if metric.startswith("concept_auroc") or "auroc" in metric:
        return 0.5
    return 1.0 / n_classes if "balanced_accuracy" in metric else 0.0


def _probe_specs(results: pd.DataFrame, name: str) -> tuple[list[str], list[tuple[tuple[str, ...], str]]]:
    """(index level names, [(row labels, metric)]) of a probe table, in row order within a partition."""
    metrics = list(dict.fromkeys(results["metric"]))
    if name == "table_concepts":
        concepts = [m.split(":", 1)[1] for m in metrics if m.startswith("concept_auroc:")]
        return ["partition", "concept"], [((c,), f"concept_auroc:{c}") for c in concepts]
    specs = []
    probe = PER_SOURCE.get(name, name) == "table_linear_probe"
    for measure, label in MEASURES.items():
        specs.append(((label, CLASSIFIER), measure))
        if probe:
            specs.append(((label, "linear probe"), f"probe_{measure}"))
            continue
        styles = [m.split(":", 1)[1] for m in metrics if m.startswith(f"zeroshot_{measure}:")]
        styles = [s for s in PAPER_STRATEGIES if s in styles] + [s for s in styles if s not in PAPER_STRATEGIES]
        specs.append(((label, "zero-shot, M-template prompts"), f"zeroshot_{measure}"))
        specs += [((label, f"zero-shot, LLM descriptions ({s} style)"), f"zeroshot_{measure}:{s}") for s in styles]
    return ["partition", *(["source"] if name in PER_SOURCE else []), "measure",
            "classifier" if probe else "prompts"], specs


def build_probe_table(results: pd.DataFrame, cfg: dict[str, Any], name: str) -> pd.DataFrame:
    """The numeric probe table `name` (a key of PROBE_TABLES): rows (partition, measure, method) or (partition,
    concept) on the pooled partitions, or (partition, source, measure, method) per test source then pooled for a
    PER_SOURCE table; a `chance` column, then `ours: <strategy>` with sd, seeds and CI columns. Empty when the
    results hold none of its probe metrics."""
    levels, specs = _probe_specs(results, name)
    probe_metrics = {m for _, m in specs if m not in MEASURES}
    by_source = name in PER_SOURCE
    chosen = results[results["metric"].isin({m for _, m in specs})
                     & (results["source"].notna() if by_source else results["source"] == POOLED)]
    if not probe_metrics & set(chosen["metric"]):
        return pd.DataFrame(index=pd.MultiIndex.from_tuples([], names=levels))
    order = strategies(cfg, chosen)
    n_classes = len(config_classes(cfg))
    wides = {metric: ours_wide(chosen, metric, order) for _, metric in specs}
    groups = sorted(set(zip(chosen["partition"], chosen["source"])), key=_row_key)
    keys, rows = [], []
    for partition, source in groups:
        for labels, metric in specs:
            if (partition, source) not in wides[metric].index:
                continue
            keys.append((partition, *([source] if by_source else []), *labels))
            rows.append({"chance": chance_level(results, metric, partition, n_classes, source),
                         **wides[metric].loc[(partition, source)].to_dict()})
    table = pd.DataFrame(rows, index=pd.MultiIndex.from_tuples(keys, names=levels))
    columns = ["chance"] + [f"ours: {s}{x}" for s in order for x in ("", " sd", " seeds", " ci_low", " ci_high")
                            if f"ours: {s}{x}" in table.columns]
    table = table[columns]
    for column in columns:
        table[column] = table[column].astype("Int64" if column.endswith(" seeds") else float)
    return table


def probe_footnotes(cfg: dict[str, Any], name: str) -> list[str]:
    """The notes under a probe table: chance levels, what each row means, where the prompts are."""
    n_classes = len(config_classes(cfg))
    notes = [f"chance: a permutation baseline where the results hold one, else kappa 0, balanced accuracy "
             f"1/{n_classes} ({n_classes} classes), AUROC 0.5.",
             f"The paper ({PAPER}) reports no {'concept' if name == 'table_concepts' else 'probe or zero-shot'} "
             "numbers, so this table has no paper columns."]
    if name == "table_zero_shot":
        notes.append("Zero-shot: each image takes the class whose mean prompt embedding (text branch) is closest; "
                     "every prompt (M template, LLM descriptions per strategy style) is in prompts.json beside "
                     "this table (also <work_dir>/results/prompts.json). "
                     "Img has no text branch, so only its classifier rows are filled.")
    if PER_SOURCE.get(name, name) == "table_linear_probe":
        notes.append("Linear probe: logistic regression fitted on the internal training split's image embeddings, "
                     "applied to every test image.")
    if name in PER_SOURCE:
        notes.append(f"One block of rows per test source, then each partition pooled (the rows of "
                     f"{PER_SOURCE[name]}); each source's chance follows the rule above.")
    if name == "table_concepts":
        notes.append("Scored on the images whose source records the attribute"
                     + (" (SynthDerm: every drawn attribute)." if cfg.get("synthetic") else
                        " (Derm7pt's seven-point criteria, PH2's colours and structures)."))
    return notes
