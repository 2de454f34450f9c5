"""The paper's protocol, per source: every declared comparison is a difference of one metric between two (sets of)
strategies computed within each source (dataset) of a partition, then averaged over the sources unweighted (macro),
as the paper's per-dataset tables are read; the pooled comparisons of `dermlib.evaluate.stats` stay as the
"earlier protocol" rows.

A declaration (`dermlib.config.check_protocol`; the demo's set is `dermlib.config.PAPER_PROTOCOL`, in
`eval.protocol`) names a question, a kind, a metric, A and B
(lists: a set means the mean of its strategies), and either partitions (one row each) or a contrast
"external - internal" (the macro difference on external minus the one on internal, the same seed draws for both).
Each row gets: the mean over paired seeds, a 95 % percentile interval from B bootstrap replicates (seeds x clusters
within each source, `dermlib.evaluate.macro`), a two-sided bootstrap p-value (floored at 1/B and flagged
`p_floor` when no replicate reaches 0), Holm's adjustment within each (question, kind) family, and an equivalence
test (TOST) against a declared margin per metric family: equivalent when the 90 % interval lies inside ±margin.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from dermlib.config import PROTOCOL_KINDS, check_protocol
from dermlib.evaluate.macro import MacroBootstrap
from dermlib.evaluate.stats import CHANCE, POST_HOC, SOURCE_ONLY  # the pooled table's prefixes; its source-only row

log = logging.getLogger(__name__)

# metric -> (per-image column of the samples table, None for κ from y and pred; margin family; words)
METRICS: dict[str, tuple[str | None, str, str]] = {
    "kappa": (None, "kappa", "Cohen's κ"),
    "map_i2t_within_source": ("ap_i2t_source", "map", "image→text mAP within each source"),
    "map_t2i_within_source": ("ap_t2i_source", "map", "text→image mAP within each source"),
    "map_i2t_within_source_at_k": ("ap_i2t_source_at_k", "map", "image→text mAP@k within each source"),
    "map_t2i_within_source_at_k": ("ap_t2i_source_at_k", "map", "text→image mAP@k within each source"),
    "paired_cosine": ("cosine", "cosine", "raw paired cosine"),
    "paired_cosine_above_source": ("cosine_lift_source", "cosine",
                                   "paired cosine above the image's cosine to its source's other notes"),
    "paired_cosine_last": ("cosine_last", "cosine", "raw paired cosine at each run's last epoch"),
    "paired_cosine_above_source_last": ("cosine_lift_source_last", "cosine",
                                        "paired cosine above its source's other notes, at each run's last epoch"),
}
# metric -> the results' chance row (`chance_<x>`, labels or pairs permuted within the source) that is its chance level
CHANCE_METRICS = {"map_i2t_within_source": "chance_map_i2t", "map_t2i_within_source": "chance_map_t2i",
                  "paired_cosine": "chance_paired_cosine"}
KINDS = PROTOCOL_KINDS
TABLE_KINDS = (*KINDS, "chance", "earlier-protocol")
MACRO, POOLED = "per-source macro", "pooled"
COLUMNS = ["question", "kind", "protocol", "comparison", "metric", "partition", "estimate", "ci_low", "ci_high",
           "p_value", "p_floor", "p_holm", "p_holm_floor", "ci90_low", "ci90_high", "tost_p", "tost_floor",
           "equivalent", "margin", "n_seeds", "n_sources", "n_images", "sources", "chance_a", "chance_b", "n_boot"]


def set_name(strategies: list[str]) -> str:
    """'M' for one strategy, 'mean(M+P1, M+P2)' for a set."""
    return strategies[0] if len(strategies) == 1 else f"mean({', '.join(strategies)})"


def summarise(estimate: float, boot: np.ndarray, margin: float) -> dict[str, Any]:
    """95 % and 90 % percentile intervals, two-sided p, TOST p and the equivalence verdict from replicates."""
    finite = boot[np.isfinite(boot)]
    nan = {"ci_low": np.nan, "ci_high": np.nan, "ci90_low": np.nan, "ci90_high": np.nan, "p_value": np.nan,
           "p_floor": False, "tost_p": np.nan, "tost_floor": False, "equivalent": False}
    if not len(finite) or not np.isfinite(estimate):
        return {"estimate": estimate, **nan}
    lo95, lo90, hi90, hi95 = np.percentile(finite, [2.5, 5, 95, 97.5])
    tail = min(np.mean(finite <= 0), np.mean(finite >= 0))
    tost = max(np.mean(finite <= -margin), np.mean(finite >= margin))
    floor = 1.0 / len(finite)
    return {"estimate": estimate, "ci_low": lo95, "ci_high": hi95, "ci90_low": lo90, "ci90_high": hi90,
            "p_value": floor if tail == 0 else min(1.0, 2 * tail), "p_floor": bool(tail == 0),
            "tost_p": floor if tost == 0 else tost, "tost_floor": bool(tost == 0),
            "equivalent": bool(-margin < lo90 and hi90 < margin)}


def holm(p: np.ndarray, floor: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Holm's step-down adjusted p-values (NaN ignored: m counts the finite ones) and, per row, whether the
    adjusted value comes from a floored p (then it is an upper bound too)."""
    p = np.asarray(p, dtype=np.float64)
    floor = np.zeros(len(p), bool) if floor is None else np.asarray(floor, bool)
    out, out_floor = np.full(len(p), np.nan), np.zeros(len(p), bool)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    best, best_floor = 0.0, False
    for rank, i in enumerate(order):
        term = min(1.0, (len(order) - rank) * p[i])
        if term > best or (term == best and not floor[i]):
            best, best_floor = term, bool(floor[i])
        out[i], out_floor[i] = best, best_floor
    return out, out_floor


def _chance(results: pd.DataFrame | None, metric: str, strategies: list[str], partition: str,
            sources: list[str]) -> float:
    """Mean over `strategies` of the macro over `sources` of the mean over seeds of the per-source chance row."""
    if results is None or metric not in CHANCE_METRICS or not sources:
        return np.nan
    rows = results[(results["metric"] == CHANCE_METRICS[metric]) & (results["partition"] == partition)]
    means = rows.groupby(["strategy", "source"])["value"].mean()
    try:
        return float(np.mean([[means.loc[(x, s)] for s in sources] for x in strategies]))
    except KeyError:
        return np.nan


def protocol_rows(samples: pd.DataFrame, declarations: list[dict[str, Any]], *, n_boot: int,
                  margins: dict[str, float], results: pd.DataFrame | None = None, seed: int = 0,
                  n_classes: int | None = None) -> pd.DataFrame:
    """One row per declared comparison and partition (or contrast), with Holm within (question, kind).

    A declaration naming a strategy absent from `samples` is left out (logged), as `stats.comparisons` does."""
    check_protocol(declarations)
    columns = sorted({c for c, _, _ in METRICS.values() if c is not None and c in samples.columns})
    engine = MacroBootstrap(samples, columns, n_boot=n_boot, seed=seed, n_classes=n_classes)
    have = set(samples["strategy"].astype(str))
    rows = []
    for d in declarations:
        if not {*d["a"], *d["b"]} <= have:
            log.info("comparison %s left out: strategies %s not all in the samples", d, sorted({*d["a"], *d["b"]}))
            continue
        column, family, _ = METRICS[d["metric"]]
        if column is not None and column not in samples.columns:
            log.info("comparison %s left out: the samples have no column %r", d, column)
            continue
        base = {"question": d["question"], "kind": d["kind"], "metric": d["metric"], "margin": margins[family],
                "protocol": MACRO if d.get("aggregate", "macro") == "macro" else POOLED, "n_boot": n_boot,
                "comparison": f"{set_name(d['a'])} - {set_name(d['b'])}"}
        parts = d.get("partitions") or [p.strip() for p in d["contrast"].split(" - ")]
        seeds = engine.seeds_of([*d["a"], *d["b"]], parts)
        found = {p: engine.replicates(column, d["a"], d["b"], p, aggregate=d.get("aggregate", "macro"), seeds=seeds)
                 for p in parts}
        if "contrast" in d:
            first, second = (found[p] for p in parts)
            per_seed = first.per_seed - second.per_seed
            extra = {"partition": d["contrast"], "n_sources": len(first.sources) + len(second.sources),
                     "n_images": first.n_images + second.n_images,
                     "sources": ";".join(first.sources) + " | " + ";".join(second.sources)}
            rows.append({**base, **extra, **summarise(*engine.boot(per_seed), margins[family]), "n_seeds": len(seeds),
                         "chance_a": np.nan, "chance_b": np.nan})
            continue
        for p, rep in found.items():
            chance = {f"chance_{k}": _chance(results, d["metric"], d[k], p, rep.sources) for k in ("a", "b")}
            rows.append({**base, "partition": p, **summarise(*engine.boot(rep.per_seed), margins[family]),
                         "n_seeds": len(seeds), "n_sources": len(rep.sources), "n_images": rep.n_images,
                         "sources": ";".join(rep.sources), **chance})
    return with_holm(pd.DataFrame(rows, columns=COLUMNS))


def with_holm(table: pd.DataFrame) -> pd.DataFrame:
    """`p_holm` (and `p_holm_floor`) within each (question, kind) family of the declared kinds."""
    table = table.copy()
    table["p_holm"], table["p_holm_floor"] = np.nan, False
    for _, family in table[table["kind"].isin(KINDS)].groupby(["question", "kind"], sort=False):
        adjusted, floored = holm(family["p_value"].to_numpy(), family["p_floor"].to_numpy(bool))
        table.loc[family.index, "p_holm"], table.loc[family.index, "p_holm_floor"] = adjusted, floored
    return table


def earlier_protocol_rows(earlier: pd.DataFrame, n_boot: int) -> pd.DataFrame:
    """`stats.comparisons` rows (pooled galleries, B = `n_boot`) in this table's columns: kind "earlier-protocol",
    or "chance" for its chance rows; no Holm, no equivalence test."""
    metric = earlier["metric"].astype(str)
    question = np.where(metric.str.startswith("kappa"), "a", np.where(metric.str.startswith("map"), "b", "c"))
    out = pd.DataFrame({"question": question, "protocol": POOLED, "comparison": earlier["comparison"],
                        "kind": np.where(earlier["comparison"].str.startswith(CHANCE), "chance", "earlier-protocol"),
                        "metric": metric, "partition": earlier["partition"], "estimate": earlier["estimate"],
                        "ci_low": earlier["ci_low"], "ci_high": earlier["ci_high"], "p_value": earlier["p_value"],
                        "p_floor": earlier["p_value"] <= 1.0 / n_boot + 1e-12, "n_seeds": earlier["n_seeds"],
                        "n_images": earlier["n"], "n_boot": n_boot, "p_holm_floor": False, "tost_floor": False,
                        "equivalent": False})
    return out.reindex(columns=COLUMNS)


def paper_comparisons(samples: pd.DataFrame, cfg: dict[str, Any], n_classes: int,
                      results: pd.DataFrame | None = None, earlier: pd.DataFrame | None = None) -> pd.DataFrame:
    """The config's declared protocol (`eval.protocol`; B = `eval.comparison_bootstrap`; margins
    `eval.equivalence_margins`) on the strategies of eval.strategies, then `earlier` (`stats.comparisons`' table) as
    earlier-protocol rows."""
    e = cfg["eval"]
    declared = [d for d in e["protocol"] if {*d["a"], *d["b"]} <= set(e["strategies"])]
    table = protocol_rows(samples, declared, n_boot=int(e["comparison_bootstrap"]),
                          margins=dict(e["equivalence_margins"]), results=results, n_classes=n_classes)
    if earlier is not None:
        table = pd.concat([table, earlier_protocol_rows(earlier, int(e["bootstrap"]))], ignore_index=True)
    return table


# ------------------------------------------------------------------------------------------------------ in words
EARLIER_WORDS = {"map_i2t": "image→text mAP, one gallery per partition",
                 "map_t2i": "text→image mAP, one gallery per partition",
                 "paired_cosine_above_chance": "paired cosine above its cosine to the partition's other notes",
                 SOURCE_ONLY: "mAP of a ranking by source alone (either direction), one gallery per partition"}


def _num(x: float) -> str:
    return f"{x:+.3f}".replace("-", "−")


def _p(value: float, floor: bool, name: str = "p") -> str:
    """'p = 0.61', 'p = 0.004', or 'p < 0.0001' when the value is a floor (no replicate crossed)."""
    if floor:
        return f"{name} < {value:.2g}"
    return f"{name} = {value:.2f}" if value >= 0.01 else f"{name} = {value:.1g}"


def verdict(row: pd.Series | dict[str, Any]) -> str:
    """'above' / 'below' when the 95 % interval excludes 0, 'equivalent' when the 90 % interval lies inside the
    declared margin (TOST), else 'not resolved'."""
    if row["ci_low"] > 0:
        return "above"
    if row["ci_high"] < 0:
        return "below"
    return "equivalent" if bool(row.get("equivalent", False)) else "not resolved"


def sentence(row: pd.Series | dict[str, Any]) -> str:
    """One row in words; the verdict follows from the numbers only: above / below when the 95 % interval excludes
    0, equivalent when the 90 % interval lies inside ±margin (TOST), else not resolved."""
    row = dict(row)
    words = METRICS.get(row["metric"], (None, "", EARLIER_WORDS.get(row["metric"], str(row["metric"]))))[2]
    partition = str(row["partition"])
    if str(row["comparison"]).startswith(CHANCE):
        return (f"Chance level of {str(row['comparison']).removeprefix(CHANCE)}, {words}, pooled {partition} "
                f"partition: {row['estimate']:.3f} (mean over {int(row['n_seeds'])} seeds).")
    post_hoc = str(row["comparison"]).startswith(POST_HOC)
    a, _, b = str(row["comparison"]).removeprefix(POST_HOC).partition(" - ")
    if post_hoc:
        partition = f"{partition}, post hoc"
    if " - " in partition:
        first, second = partition.split(" - ")
        scope = (f"{'macro over sources' if row['protocol'] == MACRO else 'pooled'}, {first} minus {second} "
                 f"({int(row['n_sources'])} sources)") if pd.notna(row.get("n_sources")) else f"{first} minus {second}"
    elif row["protocol"] == MACRO:
        scope = f"macro over {int(row['n_sources'])} {partition} sources"
    else:
        scope = f"pooled {partition} partition" if not post_hoc else f"pooled {partition}"
    head = f"{a} − {b}, {words}, {scope}"
    if not np.isfinite(row["estimate"]):
        return f"{head}: not estimable (no seed or source with both strategies)."
    tests = _p(row["p_value"], bool(row["p_floor"])) if np.isfinite(row["p_value"]) else ""
    if pd.notna(row.get("p_holm")):
        tests += ", " + _p(row["p_holm"], bool(row["p_holm_floor"]), "Holm p")
    stats_text = "; ".join(t for t in (tests, f"{int(row['n_seeds'])} seeds") if t)
    found = (f"{head}: {_num(row['estimate'])} (95 % CI {_num(row['ci_low'])} to {_num(row['ci_high'])}; "
             f"{stats_text})")
    margin = row.get("margin")
    has_margin = margin is not None and pd.notna(margin) and pd.notna(row.get("tost_p"))
    tost = f"TOST p {'<' if row.get('tost_floor') else '='} {row['tost_p']:.2g}" if has_margin else ""
    side = verdict(row)
    if side in ("above", "below"):
        if " - " in partition:
            said = f"the difference is {'larger' if side == 'above' else 'smaller'} on {first} than on {second}"
        else:
            said = f"{a} is {side} {b}"
        if has_margin and row["equivalent"]:
            said += f", by less than {margin:.2g} (equivalent within ±{margin:.2g}; {tost})"
        return f"{found}: {said}."
    if has_margin and row["equivalent"]:
        return f"{found}: equivalent within ±{margin:.2g} ({tost})."
    if has_margin:
        return f"{found}: not resolved — the interval still holds effects of ±{margin:.2g} ({tost})."
    return f"{found}: not resolved (the interval contains 0)."
