"""Worked examples for notebook 04's lesson on what the shared space knows beyond the classifier: one image's
zero-shot cosines beside the classifier's probabilities, and ROC curves of concept retrieval.

`lesson_inputs` gathers what both figures read for one trained text run with the pieces `dermlib.evaluate.probes.probe_rows`
uses (class_prompts, directions, zero_shot, concept_phrases, concept_truth, concept_auroc) on the evaluation pool,
so the figures show the numbers of the zero-shot and concept tables; LLM class descriptions are read from their
cache only (`missing="skip"`), never generated here. The figure functions take that
dict, so they run on any embeddings (the tests build it from small synthetic ones). torch is imported only by
`lesson_inputs`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy.special import softmax
from sklearn.metrics import roc_curve

from dermlib import metrics
from dermlib.evaluate import probes
from dermlib.data.labels import config_classes
from dermlib.evaluate.pools import evaluation_pool, pool_id
from dermlib.plotstyle import setup_style, source_title, strategy_colours
from dermlib.workdir import WorkDir

MARKERS = ("o", "s", "^", "D", "v", "P")
PICK_COLOURS = {"best": "#1b7837", "median": "#8c6d31", "worst": "#a50f15"}  # concept_roc's three concepts


def lesson_inputs(cfg: dict[str, Any], run: str | Path, emb: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """What `zero_shot_example` and `concept_roc` read for one text run (a run folder or a run id under
    `<work_dir>/runs`): the evaluation pool's labels, partitions, images and image embeddings (`emb`, the run's
    saved embeddings, else encoded now), the class directions per prompt source and the concept directions
    embedded by the run's text branch, and the concepts' ground truth."""
    # torch only here: notebook 05 imports this module's retrieval lessons without it
    from dermlib.train.inference import encode, encode_texts, load_run

    folder = Path(run) if Path(run).is_dir() else WorkDir.of(cfg).runs / str(run)
    model, run_cfg = load_run(folder)
    if model.text_encoder is None:
        raise ValueError(f"{folder.name}: the image-only (Img) model has no text branch to embed prompts with")
    pool, pixels = evaluation_pool(cfg)
    if emb is None:
        emb = encode(model, pixels, None, run_cfg, batch_size=int(cfg["eval"]["batch_size"]), pool_id=pool_id(pool))
    elif not np.array_equal(np.asarray(emb["sample_id"]).astype(str), pool["sample_id"].astype(str).to_numpy()):
        raise ValueError("the embeddings given are not of the evaluation pool in its order (re-run notebook 04's grid)")
    names = config_classes(cfg)
    present = probes.trained_classes(cfg)  # as probe_rows: zero-shot chooses among the classes seen in training
    embed = lambda texts: encode_texts(model, texts, run_cfg)  # noqa: E731
    prompts = probes.zero_shot_prompts(cfg, present, missing="skip")
    phrases = probes.concept_phrases()
    return {"strategy": run_cfg["train"]["strategy"], "sample_id": pool["sample_id"].astype(str).to_numpy(),
            "label": pool["label"].astype(str).to_numpy(), "partition": pool["partition"].astype(str).to_numpy(),
            "pixels": pixels, "image_emb": emb["image_emb"], "image_logits": emb["image_logits"],
            "all_classes": names, "classes": present,
            "class_dirs": {source: probes.directions(p, embed) for source, p in prompts.items()},
            "concept_names": list(phrases), "concept_dirs": probes.directions(phrases, embed),
            "truth": probes.concept_truth(pool)}


def zero_shot_labels(inputs: dict[str, Any], source: str = probes.M_TEMPLATE) -> np.ndarray:
    """The zero-shot class of every pool image from one prompt source (`probes.zero_shot`), as class codes."""
    return np.asarray(inputs["classes"])[probes.zero_shot(inputs["image_emb"], inputs["class_dirs"][source])]


def zero_shot_picks(inputs: dict[str, Any], partition: str = "internal", seed: int = 0,
                    source: str = probes.M_TEMPLATE) -> dict[str, int]:
    """Two pool images of one partition drawn on purpose (seeded): one that `source`'s zero-shot classifies
    correctly and one it gets wrong (a kind is left out when no image has it)."""
    rng = np.random.default_rng(seed)
    inside = inputs["partition"] == partition
    right = zero_shot_labels(inputs, source) == inputs["label"]
    picks = {}
    for kind, mask in (("correct", inside & right), ("incorrect", inside & ~right)):
        where = np.flatnonzero(mask)
        if len(where):
            picks[kind] = int(rng.choice(where))
    return picks


def zero_shot_example(inputs: dict[str, Any], cfg: dict[str, Any], *, partition: str = "internal",
                      seed: int = 0) -> plt.Figure:
    """For a zero-shot success and a failure (`zero_shot_picks`, M-template prompts): the image, its cosine to
    each class's text direction from every prompt source (M template, LLM descriptions per style; the chosen
    class ringed), and the image-branch classifier's probabilities."""
    picks = zero_shot_picks(inputs, partition, seed)
    if not picks:
        raise ValueError(f"no {partition} image in the pool")
    setup_style()
    sources, classes = list(inputs["class_dirs"]), list(inputs["classes"])
    # a prompt source is a strategy's style (the M template is M's): drawn in that strategy's colour
    by_strategy = strategy_colours("M" if s == probes.M_TEMPLATE else s for s in sources)
    colours = {s: by_strategy["M" if s == probes.M_TEMPLATE else s] for s in sources}
    unit = metrics.l2_normalise(inputs["image_emb"])
    fig, axes = plt.subplots(len(picks), 3, figsize=(15, 4.8 * len(picks)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 2.2, 1.5]})
    for (kind, i), (ax_img, ax_cos, ax_clf) in zip(picks.items(), axes):
        truth = str(inputs["label"][i])
        if inputs.get("pixels") is not None:
            ax_img.imshow(inputs["pixels"][i])
        ax_img.set_axis_off()
        ax_img.set_title(f"zero-shot {kind} (M template)\n{inputs['sample_id'][i]}\ntrue class {truth}", fontsize=9)
        y = np.arange(len(classes))
        for k, source in enumerate(sources):
            cos = inputs["class_dirs"][source] @ unit[i]
            offset = (k - (len(sources) - 1) / 2) * 0.18
            best = int(cos.argmax())
            ax_cos.scatter(cos, y + offset, marker=MARKERS[k % len(MARKERS)], color=colours[source], s=30,
                           label=f"{source}: picks {classes[best]}")
            ax_cos.scatter(cos[best], best + offset, s=150, facecolors="none", edgecolors="black", lw=1.3)
        if truth in classes:
            ax_cos.axhspan(classes.index(truth) - 0.45, classes.index(truth) + 0.45, color="#4c9a6a", alpha=0.15)
        ax_cos.set_yticks(y, classes)
        ax_cos.invert_yaxis()
        ax_cos.set(xlabel="cosine(image, class text direction)", title="zero-shot: cosine per class")
        ax_cos.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=len(sources), frameon=False,
                      title="prompt source (ringed: the class it picks; green band: the true class)",
                      title_fontsize=8)
        proba = softmax(np.asarray(inputs["image_logits"][i], dtype=np.float64))
        names = list(inputs["all_classes"])
        bars = ax_clf.barh(np.arange(len(names)), proba, color="0.7")
        bars[int(proba.argmax())].set_color("#3b6ea5")
        if truth in names:
            ax_clf.axhspan(names.index(truth) - 0.45, names.index(truth) + 0.45, color="#4c9a6a", alpha=0.15)
        ax_clf.set_yticks(np.arange(len(names)), names)
        ax_clf.invert_yaxis()
        ax_clf.set(xlim=(0, 1), xlabel="softmax probability",
                   title=f"classifier: {names[int(proba.argmax())]} (p = {proba.max():.2f})")
    fig.suptitle(source_title(cfg, f"zero-shot vs classifier, {inputs['strategy']} run"))
    fig.tight_layout()
    return fig


def concept_table(inputs: dict[str, Any], partition: str = "internal") -> pd.DataFrame:
    """`probes.concept_auroc` of every concept on one partition, best first (concepts without both classes last)."""
    inside = inputs["partition"] == partition
    table = probes.concept_auroc(inputs["image_emb"][inside], inputs["concept_dirs"], list(inputs["concept_names"]),
                                 inputs["truth"][inside])
    return table.sort_values("auroc", ascending=False, na_position="last", kind="stable").reset_index(drop=True)


def concept_picks(table: pd.DataFrame) -> dict[str, str]:
    """The best, median and worst concept by AUROC (of those with one), from `concept_table`."""
    ranked = table[table["auroc"].notna()].reset_index(drop=True)
    if ranked.empty:
        return {}
    picks: dict[str, str] = {}
    for kind, at in (("best", 0), ("median", len(ranked) // 2), ("worst", len(ranked) - 1)):
        if ranked["concept"].iloc[at] not in picks.values():
            picks[kind] = str(ranked["concept"].iloc[at])
    return picks


def concept_roc(inputs: dict[str, Any], cfg: dict[str, Any], *, partition: str = "internal") -> plt.Figure:
    """Left: every concept's AUROC (image-to-phrase cosine vs ground truth, 0.5 = chance). Right: the ROC curves
    of the best, median and worst concept (`sklearn.metrics.roc_curve`), AUROC in the legend."""
    table = concept_table(inputs, partition)
    picks = concept_picks(table)
    if not picks:
        raise ValueError(f"no concept has both present and absent images in the {partition} partition")
    setup_style()
    inside = inputs["partition"] == partition
    scores = metrics.l2_normalise(inputs["image_emb"][inside]) @ inputs["concept_dirs"].T
    truth = inputs["truth"][inside]
    names = list(inputs["concept_names"])
    colours = {name: PICK_COLOURS[kind] for kind, name in picks.items()}  # not the strategies' colours
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, max(0.3 * len(table) + 2.2, 6.0)),
                                      gridspec_kw={"width_ratios": [1, 1.1]})
    shown = table[table["auroc"].notna()]
    left.barh(np.arange(len(shown)), shown["auroc"] - 0.5, left=0.5,
              color=[colours.get(c, "0.75") for c in shown["concept"]])
    left.axvline(0.5, color="0.2", lw=1, ls="--")
    left.set_yticks(np.arange(len(shown)), shown["concept"], fontsize=8)
    left.invert_yaxis()
    left.set(xlim=(0, 1), xlabel="AUROC (0.5 = chance)", title=f"every concept, {partition} images")
    for kind, name in picks.items():
        j, row = names.index(name), table.set_index("concept").loc[name]
        known = truth[name].notna().to_numpy()
        y = truth[name].to_numpy(dtype=object)[known].astype(bool)
        fpr, tpr, _ = roc_curve(y, scores[known, j])
        right.plot(fpr, tpr, color=colours[name], lw=1.8, gid=f"roc:{name}",
                   label=f"{kind}: {name}, AUROC {row['auroc']:.2f} ({int(row['n_positive'])} of {int(row['n'])} "
                         "images have it)")
    right.plot([0, 1], [0, 1], color="0.4", ls="--", lw=1, label="chance (AUROC 0.50)")
    right.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate",
              title="ROC: images ranked by cosine to the phrases")
    right.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False)
    fig.suptitle(source_title(cfg, f"concept retrieval, {inputs['strategy']} run"))
    fig.tight_layout()
    return fig


def query_aps(emb: dict[str, np.ndarray], partition: str = "internal") -> pd.DataFrame:
    """Image -> text AP of every query of one partition (gallery: that partition's notes), sorted by AP."""
    ok = np.flatnonzero(metrics.finite_rows(emb["text_emb"]) & (emb["partition"] == partition))
    labels = emb["label"][ok].astype(str)
    ap = metrics.retrieval_ap(emb["image_emb"][ok], labels, emb["text_emb"][ok], labels)
    frame = pd.DataFrame({"index": ok, "sample_id": emb["sample_id"][ok].astype(str), "label": labels, "ap": ap})
    return frame.sort_values(["ap", "sample_id"], kind="stable").reset_index(drop=True)


def chosen_queries(emb: dict[str, np.ndarray], partition: str = "internal") -> dict[str, int]:
    """Two queries picked on purpose: the one with the median AP (a typical query) and the lowest (a failure)."""
    aps = query_aps(emb, partition)
    return {"median AP": int(aps["index"].iloc[len(aps) // 2]), "lowest AP": int(aps["index"].iloc[0])}


def ranking(emb: dict[str, np.ndarray], query: int, partition: str = "internal") -> pd.DataFrame:
    """The ranked notes of one image query within its partition (`dermlib.metrics.ranked_list`), with the notes."""
    ok = np.flatnonzero(metrics.finite_rows(emb["text_emb"]) & (emb["partition"] == partition))
    ranked = metrics.ranked_list(emb["image_emb"][query], str(emb["label"][query]), emb["text_emb"][ok],
                                 emb["label"][ok].astype(str))
    ranked["note"] = emb["note"][ok][ranked["gallery_index"].to_numpy()].astype(str)
    return ranked


def query_example(emb: dict[str, np.ndarray], query: int, k: int = 5, partition: str = "internal") -> dict[str, Any]:
    """One image query, its AP and its k closest notes, for `dermlib.report.plots.retrieval_gallery`."""
    ranked = ranking(emb, query, partition)
    ap = float(ranked.loc[ranked["relevant"], "precision"].mean()) if ranked["relevant"].any() else 0.0
    top = ranked.head(k)
    return {"sample_id": str(emb["sample_id"][query]), "label": str(emb["label"][query]), "ap": ap,
            "notes": [str(n) for n in top["note"]], "note_labels": [str(c) for c in top["label"]],
            "scores": [float(v) for v in top["cosine"]]}


def ranking_summary(ranking: pd.DataFrame, top: int | None = None) -> dict[str, Any]:
    """Where a query's relevant items lie in its `ranking` (columns relevant, rank, precision): how many of how
    many, the rank by which half are found, the last one, how many lie beyond `top` (and their ranks), and AP =
    the mean precision at the relevant items."""
    ranked = ranking.reset_index(drop=True)
    hits = ranked.loc[ranked["relevant"].astype(bool), ["rank", "precision"]]
    ranks = hits["rank"].to_numpy()
    beyond = ranks[ranks > top] if top is not None else ranks[:0]
    return {"n": len(ranked), "relevant": len(ranks), "ap": float(hits["precision"].mean()) if len(ranks) else 0.0,
            "half_by": int(ranks[(len(ranks) - 1) // 2]) if len(ranks) else None,
            "last": int(ranks[-1]) if len(ranks) else None, "beyond": len(beyond),
            "beyond_ranks": (int(beyond[0]), int(beyond[-1])) if len(beyond) else None}


def ranking_strips(rankings: dict[str, pd.DataFrame], cfg: dict[str, Any], top: int | None = None) -> plt.Figure:
    """For each named query, its whole ranking (or the first `top` items, counting those left beyond) as a strip,
    relevant items green, and under it the precision at each rank with a dot per relevant item: AP is the mean
    of the dots, drawn as a line."""
    setup_style()
    strip_colours = plt.matplotlib.colors.ListedColormap(["0.85", "#4c9a6a"])
    fig, axes = plt.subplots(2 * len(rankings), 1, figsize=(11, 3.0 * len(rankings) + 0.6), squeeze=False,
                             gridspec_kw={"height_ratios": [0.3, 1.2] * len(rankings)}, layout="constrained")
    for k, (name, ranking) in enumerate(rankings.items()):
        strip, curve = axes[2 * k, 0], axes[2 * k + 1, 0]
        ranked, about = ranking.reset_index(drop=True), ranking_summary(ranking, top)
        shown = ranked if top is None else ranked.head(top)
        hits = shown["relevant"].to_numpy().astype(float)
        strip.imshow(hits[None, :], cmap=strip_colours, vmin=0, vmax=1, aspect="auto", interpolation="nearest",
                     extent=(0.5, len(hits) + 0.5, 0, 1))
        strip.set_yticks([])
        strip.set_xlim(0.5, len(hits) + 0.5)
        strip.tick_params(labelbottom=False)
        strip.grid(False)
        where = (f"{about['relevant']} relevant of {about['n']} notes; half found by rank {about['half_by']}, "
                 f"the last at rank {about['last']}" if about["relevant"] else f"no relevant note among {about['n']}")
        if about["beyond"]:
            lo, hi = about["beyond_ranks"]
            where += f"; {about['beyond']} relevant beyond rank {top} (ranks {lo}-{hi}), not drawn"
        strip.set_title(f"{name}\n{where}", fontsize=9, loc="left")
        curve.plot(shown["rank"], shown["precision"], color="0.6", lw=0.8, label="precision at rank (all items)")
        dots = shown[shown["relevant"].astype(bool)]
        curve.scatter(dots["rank"], dots["precision"], s=12, color="#4c9a6a", zorder=3,
                      label="precision at each relevant item")
        curve.axhline(about["ap"], color="black", ls="--", lw=1,
                      label=f"AP = mean over all {about['relevant']} relevant items = {about['ap']:.2f}")
        curve.set(xlim=(0.5, len(hits) + 0.5), ylim=(0, 1.05), ylabel="precision", yticks=[0, 0.5, 1])
        curve.legend(fontsize=7, loc="upper right", frameon=True)
    axes[-1, 0].set_xlabel("rank (strip: green = a note of the query's class)")
    fig.suptitle(source_title(cfg, "average precision of two queries"), fontsize=11)
    return fig
