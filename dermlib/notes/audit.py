"""Hallucination audit of synthetic notes: what each note states, checked against what is known about its image.

Per note (lexical rules, documented here so the numbers can be read critically):
- age / sex / site / diagnosis: "correct", "contradicted" (a different value is stated), "absent" (not stated),
  "invented" (stated although the metadata has no value), "n/a" (neither known nor stated).
- colours and dermoscopic structures: the vocabulary terms a note states (synonyms mapped, e.g. "bluish-grey" ->
  blue-gray; mentions after "no"/"without"/"absence of" in the same clause are ignored) compared with the ground
  truth (SynthDerm `attributes.colors/structures`, or Derm7pt/PH2-style criteria in `attributes`).
- vocabulary adherence: colour/structure mentions inside the constrained vocabulary vs outside it ("pink", "tan",
  "milia-like cysts", ...).
- length in words; the per-strategy summary adds diversity (distinct 1-/2-grams over all notes).
- non_english (per note only, not in the summary): True when a note of at least 20 letters is mostly in another
  script (over 30% of its letters outside A-Z), or has 8 words or more of which under 5% are common English words
  (ENGLISH_STOPWORDS); the demo's English notes have 10% or more, whole notes in French, Spanish, German,
  Portuguese or Italian about 0%. Notes in another language are kept (the paper's subject), and flagged here.
"""

from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dermlib.atomic import atomic_path
from dermlib.data.labels import ISIC8
from dermlib.data.schema import load_attributes

_SITE_TERMS: dict[str, str] = {
    r"posterior torso|upper back|lower back|(?:the|his|her|their|mid) back": "posterior torso",
    r"anterior torso|chest|abdomen|abdominal wall|breast": "anterior torso",
    r"lateral torso|flank": "lateral torso",
    r"head/neck|head|neck|face|facial|scalp|cheek|nose|forehead|ear|chin|temple": "head/neck",
    r"upper extremity|upper limb|forearm|arm|hand|finger|shoulder|elbow|wrist": "upper extremity",
    r"lower extremity|lower limb|thigh|leg|knee|calf|shin|ankle": "lower extremity",
    r"palms/soles|palms?|soles?": "palms/soles",
    r"oral/genital|genital|oral|mouth|lip": "oral/genital",
    r"acral|foot|feet|toe|nail": "acral",
    r"torso|trunk": "torso",
}
_DIAGNOSIS_TERMS: dict[str, str] = {
    "MEL": r"(?<!non-)melanomas?",
    "NV": r"(?:melanocytic )?na?evus|na?evi|moles?",
    "BCC": r"basal cell carcinoma|basal cell|bcc",
    "AK": r"actinic keratos[ie]s|solar keratos[ie]s",
    "BKL": r"benign keratos[ie]s|seborrh?o?eic keratos[ie]s|(?:solar )?lentig(?:o|ines)|lichen planus-like keratosis",
    "DF": r"dermatofibromas?",
    "VASC": r"vascular lesions?|(?:h[a]?em)?angiomas?|angiokeratomas?|pyogenic granulomas?",
    "SCC": r"squamous cell carcinoma|squamous cell|scc|bowen'?s disease",
}
_STRUCTURE_TERMS: dict[str, str] = {
    r"blue[- ]whit(?:e|ish) veil|whitish veil|veil": "blue-whitish veil",
    r"pigment(?:ed)? network|reticular (?:pattern|network)|network": "pigment network",
    r"dots?(?:/| and | or )globules?|globules?|dots": "dots/globules",
    r"streaks?|pseudopods?|radial streaming": "streaks",
    r"regression (?:structures?|areas?)|regression|scar-like areas?": "regression structures",
    r"vascular structures?|vascular pattern|vessels|telangiectas(?:ia|es)|arborizing": "vascular structures",
}
_COLOUR_TERMS: dict[str, str] = {
    r"light[- ]brown": "light brown", r"dark[- ]brown": "dark brown",
    r"blu(?:e|ish)[- ]gr[ae]y|gr[ae]y[- ]blue": "blue-gray",
    r"black(?:ish)?": "black", r"red(?:dish)?": "red", r"white|whitish": "white",
}
_OFF_COLOURS = r"pink(?:ish)?|purple|violet|yellow(?:ish)?|orange|green|tan|gr[ae]y|brown(?:ish)?|blue|skin[- ]colou?red|flesh[- ]colou?red"
_OFF_STRUCTURES = r"milia-like cysts?|comedo-like openings?|leaf-like areas?|spoke[- ]wheel|blotch(?:es)?|crystalline structures?|fissures?|ridges?"
_NEGATION = re.compile(r"\b(?:no|without|absent|absence of|not|lack of|negative for|nor)\b[^.;:\n]*$")
_NEGATION_AFTER = re.compile(r"^\s*:?\s*(?:absent|no|not seen)\b")  # recorded findings: "streaks absent"
_TRUTH_KEYS: dict[str, str] = {
    "pigment_network": "pigment network", "streaks": "streaks", "dots_and_globules": "dots/globules",
    "dots_globules": "dots/globules", "blue_whitish_veil": "blue-whitish veil",
    "regression_structures": "regression structures", "regression_areas": "regression structures",
    "vascular_structures": "vascular structures",
}
_ABSENT_VALUES = {"absent", "no", "none", "false", "0", "", "a"}
_SEX_TERMS = {"male": r"male|man|gentleman|boy|he|his|him", "female": r"female|woman|lady|girl|she|her|hers"}
_AGE_PHRASES = {  # what `stated_ages` reads, as the spans `marked_phrases` marks -> (low, high) of the stated age
    r"\d{1,3}[- ](?:years?|yrs?)[- ]old": lambda m: (float(re.match(r"\d+", m).group(0)),) * 2,
    r"aged?\s*:?\s*\d{1,3}": lambda m: (float(re.search(r"\d+", m).group(0)),) * 2,
    r"(?<=in his )\d0s|(?<=in her )\d0s|(?<=in their )\d0s": lambda m: (float(m[0]) * 10, float(m[0]) * 10 + 9),
}


ENGLISH_STOPWORDS = frozenset(
    "a about after an and are as at be been but by can for from had has have he her his in into is it its may not "
    "of on or she such than that the their there these they this those to was were which who with".split())
_LETTER_WORD = re.compile(r"[^\W\d_]+")  # a run of letters, any script


def non_english(text: str) -> bool:
    """Whether a note reads as another language: see the module's docs (non_english)."""
    letters = [c for c in text if c.isalpha()]
    if len(letters) < 20:
        return False  # too short to tell
    if sum(not ("a" <= c.lower() <= "z") for c in letters) > 0.3 * len(letters):
        return True
    words = _LETTER_WORD.findall(text.lower())
    return len(words) >= 8 and sum(w in ENGLISH_STOPWORDS for w in words) < 0.05 * len(words)


@functools.lru_cache(maxsize=256)
def _word_regex(pattern: str) -> re.Pattern[str]:
    """`pattern` as whole words, case-insensitive (compiled once)."""
    return re.compile(rf"\b(?:{pattern})\b", re.IGNORECASE)


def _find(text: str, terms: dict[str, str], *, negation: bool = True) -> tuple[set[str], str]:
    """Canonical terms stated in `text` (longest patterns first) and the text with those mentions blanked out."""
    stated: set[str] = set()
    for pattern, canonical in terms.items():
        regex = _word_regex(pattern)
        matches = list(regex.finditer(text))
        for match in matches:
            clause = text[max(0, match.start() - 40): match.start()]
            negated = _NEGATION.search(clause) or _NEGATION_AFTER.match(text[match.end(): match.end() + 12])
            if not (negation and negated):
                stated.add(canonical)
        if matches:
            text = regex.sub(lambda m: " " * len(m.group(0)), text)
    return stated, text


def _count(pattern: str, text: str) -> int:
    return len(_word_regex(pattern).findall(text))


def stated_ages(text: str) -> list[tuple[float, float]]:
    """Ages a note states, as (low, high) ranges: "54-year-old" -> (54, 54); "in his 50s" -> (50, 59)."""
    return [to_range(match.group(0)) for pattern, to_range in _AGE_PHRASES.items()
            for match in re.finditer(rf"\b(?:{pattern})\b", text, re.IGNORECASE)]


def _field_flag(truth_known: bool, stated: bool, agrees: bool) -> str:
    if not stated:
        return "absent" if truth_known else "n/a"
    if not truth_known:
        return "invented"
    return "correct" if agrees else "contradicted"


def _sites_agree(stated: set[str], truth: str) -> bool:
    torso = {"anterior torso", "posterior torso", "lateral torso", "torso"}
    acral = {"acral", "palms/soles"}
    return any(s == truth or (s in torso and truth in torso and "torso" in (s, truth))
               or (s in acral and truth in acral) for s in stated)


def _canonical(value: Any, terms: dict[str, str]) -> str:
    """A ground-truth value in the vocabulary's spelling (unchanged when it is not a known term)."""
    found, _ = _find(str(value), terms, negation=False)
    return next(iter(found)) if len(found) == 1 else str(value).strip().lower()


def truth_attributes(attrs: dict[str, Any]) -> tuple[set[str] | None, set[str] | None]:
    """Ground-truth colours and structures from an `attributes` dict (None where the source does not say)."""
    colours = structures = None
    raw_colours = attrs.get("colors", attrs.get("colours"))
    if isinstance(raw_colours, list):
        colours = {_canonical(c, _COLOUR_TERMS) for c in raw_colours}
    if isinstance(attrs.get("structures"), list):
        structures = {_canonical(s, _STRUCTURE_TERMS) for s in attrs["structures"]}
    elif any(k in attrs for k in _TRUTH_KEYS):
        structures = {name for k, name in _TRUTH_KEYS.items()
                      if k in attrs and str(attrs[k]).strip().lower() not in _ABSENT_VALUES}
    return colours, structures


def recorded_structures(attrs: dict[str, Any]) -> set[str] | None:
    """The structures a source records at all (present or absent): all of them with a `structures` list
    (SynthDerm), else those its criteria keys name (Derm7pt's, PH2's); None when it records none. A structure
    outside this set is unknown for the image, not absent."""
    if isinstance(attrs.get("structures"), list):
        return set(_STRUCTURE_TERMS.values())
    found = {name for key, name in _TRUTH_KEYS.items() if key in attrs}
    return found or None


def audit_note(note: str, row: pd.Series | dict[str, Any]) -> dict[str, Any]:
    """The audit flags of one note against its manifest row."""
    text = str(note)
    out: dict[str, Any] = {"n_words": len(text.split())}
    ages = stated_ages(text)
    age = row.get("age")
    age_known = age is not None and not pd.isna(age)
    out["age"] = _field_flag(age_known, bool(ages),
                             age_known and any(lo - 2 <= float(age) <= hi + 2 for lo, hi in ages))
    male, female = (_count(_SEX_TERMS[s], text) > 0 for s in ("male", "female"))
    sex = row.get("sex")
    sex_known = sex is not None and not pd.isna(sex)
    out["sex"] = _field_flag(sex_known, male or female,
                             sex_known and (male, female) == (sex == "male", sex == "female"))
    sites, _ = _find(text, _SITE_TERMS, negation=False)
    site = row.get("site")
    site_known = site is not None and not pd.isna(site)
    out["site"] = _field_flag(site_known, bool(sites), site_known and _sites_agree(sites, str(site)))
    diagnoses = {c for c, pattern in _DIAGNOSIS_TERMS.items() if _count(pattern, text)}
    label = row.get("label")
    label_known = label is not None and not pd.isna(label) and label in ISIC8
    out["diagnosis"] = _field_flag(label_known, bool(diagnoses), label_known and diagnoses == {label})
    if label_known and label in diagnoses and len(diagnoses) > 1:
        out["diagnosis"] = "mixed"  # the true class and another one are both named
    structures, rest = _find(text, _STRUCTURE_TERMS)
    colours, rest = _find(rest, _COLOUR_TERMS)
    out["vocab_in"] = len(structures) + len(colours)
    out["vocab_off"] = _count(_OFF_COLOURS, rest) + _count(_OFF_STRUCTURES, rest)
    true_colours, true_structures = truth_attributes(load_attributes(row.get("attributes")))
    for name, stated, truth in (("colors", colours, true_colours), ("structures", structures, true_structures)):
        out[f"{name}_stated"] = ", ".join(sorted(stated))
        out[f"{name}_n_stated"] = len(stated)
        out[f"{name}_n_true"] = len(truth) if truth is not None else pd.NA
        out[f"{name}_tp"] = len(stated & truth) if truth is not None else pd.NA
    out["any_contradiction"] = any(out[f] == "contradicted" for f in ("age", "sex", "site", "diagnosis"))
    unsupported = [(stated - truth) for stated, truth in ((colours, true_colours), (structures, true_structures))
                   if truth is not None]
    out["any_unsupported_attribute"] = any(len(u) > 0 for u in unsupported) if unsupported else pd.NA
    out["non_english"] = non_english(text)
    return out


def marked_phrases(note: str, row: pd.Series | dict[str, Any]) -> list[tuple[int, int, str, str]]:
    """The checkable phrases of one note as (start, end, kind, verdict), in text order, for display.

    kind: age, sex, site, diagnosis, colour or structure (what `audit_note` checks; border and symmetry are not
    audited, so not marked); verdict: "supported" (agrees with the metadata or ground truth), "contradicted"
    (metadata says otherwise), "unsupported" (an attribute the image does not have) or "unchecked" (nothing known
    to check it against). Ages within 2 years count as agreeing, as in `audit_note`; each sex word ("he", "woman")
    is marked, and one of the other sex makes `audit_note` call the note's sex contradicted. Negated mentions
    ("no streaks") are not marked.
    """
    text = str(note)
    taken = [False] * len(text)
    spans: list[tuple[int, int, str, str]] = []

    def claim(regex: str, kind: str, verdict_of: Any, negation: bool) -> None:
        for match in re.finditer(rf"\b(?:{regex})\b", text, re.IGNORECASE):
            if any(taken[match.start():match.end()]):
                continue
            clause = text[max(0, match.start() - 40): match.start()]
            if negation and (_NEGATION.search(clause) or _NEGATION_AFTER.match(text[match.end(): match.end() + 12])):
                continue
            taken[match.start():match.end()] = [True] * (match.end() - match.start())
            spans.append((match.start(), match.end(), kind, verdict_of(match.group(0))))

    def known(value: Any) -> bool:
        return value is not None and not pd.isna(value)

    age, sex, site, label = row.get("age"), row.get("sex"), row.get("site"), row.get("label")
    true_colours, true_structures = truth_attributes(load_attributes(row.get("attributes")))
    for pattern, stated in _AGE_PHRASES.items():
        claim(pattern, "age", lambda m, r=stated: "unchecked" if not known(age) else
              "supported" if r(m)[0] - 2 <= float(age) <= r(m)[1] + 2 else "contradicted", False)
    for pattern, canonical in _SITE_TERMS.items():  # before sex words: "his back" is a site
        claim(pattern, "site", lambda m, c=canonical: "unchecked" if not known(site) else
              "supported" if _sites_agree({c}, str(site)) else "contradicted", False)
    for which, pattern in _SEX_TERMS.items():
        claim(pattern, "sex", lambda m, w=which: "unchecked" if sex not in _SEX_TERMS else
              "supported" if w == sex else "contradicted", False)
    for code, pattern in _DIAGNOSIS_TERMS.items():
        claim(pattern, "diagnosis", lambda m, c=code: "unchecked" if not known(label) else
              "supported" if c == label else "contradicted", False)
    for kind, terms, truth in (("structure", _STRUCTURE_TERMS, true_structures), ("colour", _COLOUR_TERMS, true_colours)):
        for pattern, canonical in terms.items():
            claim(pattern, kind, lambda m, c=canonical, t=truth: "unchecked" if t is None else
                  "supported" if c in t else "unsupported", True)
    return sorted(spans)


def audit(manifest: pd.DataFrame, notes: pd.DataFrame) -> pd.DataFrame:
    """Per-note audit flags for a long notes table (sample_id, strategy, note, status); only `ok` notes."""
    missing = [c for c in ("sample_id", "strategy", "note") if c not in notes]
    if missing:
        raise ValueError(f"notes table lacks columns {missing}; pass the output of dermlib.notes.synthesize")
    rows = dict(zip(manifest["sample_id"].astype(str), manifest.to_dict("records")))  # one dict per row, read once
    ok = notes if "status" not in notes else notes[notes["status"] == "ok"]
    unknown = set(ok["sample_id"].astype(str)) - set(rows)
    if unknown:
        raise ValueError(f"{len(unknown)} notes have sample_ids not in the manifest, e.g. {sorted(unknown)[:3]}")
    records = [{"sample_id": sid, "strategy": strategy, **audit_note(note, rows[sid])}
               for sid, strategy, note in zip(ok["sample_id"].astype(str), ok["strategy"], ok["note"])]
    return pd.DataFrame(records)


def audit_key(manifest: pd.DataFrame, notes: pd.DataFrame) -> str:
    """What `audit`'s flags depend on, as 16 hex digits: these rules (this module's source), the ok notes and the
    manifest fields a note is checked against."""
    digest = hashlib.sha256(Path(__file__).read_bytes() + repr(ISIC8).encode())
    ok = notes if "status" not in notes else notes[notes["status"] == "ok"]
    for column in ("sample_id", "strategy", "note"):
        digest.update(pd.util.hash_pandas_object(ok[column].astype(str), index=False).to_numpy().tobytes())
    known = manifest[[c for c in ("sample_id", "age", "sex", "site", "label", "attributes") if c in manifest]]
    digest.update(pd.util.hash_pandas_object(known.astype(str), index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def audit_cached(manifest: pd.DataFrame, notes: pd.DataFrame, path: str | Path) -> pd.DataFrame:
    """`audit`, kept in `path` (parquet) with its `audit_key`: read back when the notes, the manifest and the rules
    are the ones it was made from (a re-run, the lab on the demo's notes), made and written again otherwise."""
    path, key = Path(path), audit_key(manifest, notes)
    if path.exists():
        try:
            table = pq.read_table(path)
            if (table.schema.metadata or {}).get(b"dermlib_audit_key") == key.encode():
                return table.to_pandas()
        except (OSError, ValueError):  # damaged: made again below
            pass
    flags = audit(manifest, notes)
    table = pa.Table.from_pandas(flags, preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(table.replace_schema_metadata({**(table.schema.metadata or {}),
                                                      b"dermlib_audit_key": key.encode()}), tmp)
    return flags


COUNT_COLUMNS = ["n_notes", "age_invented", "sex_invented", "site_invented", "diagnosis_invented",
                 "n_diagnosis_mixed", "mean_words"]
FLAGS = {"age": ("correct", "contradicted", "absent"), "sex": ("correct", "contradicted", "absent"),
         "site": ("correct", "contradicted", "absent"), "diagnosis": ("correct", "contradicted", "absent", "mixed")}


def rates_and_counts(summary: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The audit summary as two tables: shares (0-1, strategies in columns) and counts (notes, invented values,
    notes with a mixed diagnosis, mean words; one row per strategy, so whole numbers stay whole)."""
    wide = summary.set_index("strategy")
    counts = [c for c in COUNT_COLUMNS if c in wide.columns]
    return wide.drop(columns=counts).T, wide[counts].round({"mean_words": 1})


def distinct_ngrams(notes: list[str], n: int) -> float:
    """Distinct n-grams / all n-grams over a set of notes (1.0 = no repetition; lower = more templated)."""
    grams = [tuple(words[i:i + n]) for note in notes for words in [re.findall(r"\w+", note.lower())]
             for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def _ratio(num: pd.Series, den: pd.Series) -> float:
    num, den = pd.to_numeric(num, errors="coerce"), pd.to_numeric(den, errors="coerce")
    total = den[num.notna()].sum()
    return float(num.sum() / total) if total else float("nan")


def audit_summary(flags: pd.DataFrame, notes: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per strategy: consistency rates per field, attribute precision/recall (micro), adherence, length,
    diversity (when `notes` is given) and the share of notes with a contradiction or an unsupported attribute."""
    rows = []
    for strategy, group in flags.groupby("strategy", sort=False):
        row: dict[str, Any] = {"strategy": strategy, "n_notes": len(group)}
        for field, flags_of in FLAGS.items():  # only the diagnosis can be mixed (the true class and another)
            known = group[group[field].isin(flags_of)]
            for flag in flags_of:
                row[f"{field}_{flag}"] = float((known[field] == flag).mean()) if len(known) else float("nan")
            row[f"{field}_invented"] = int((group[field] == "invented").sum())
        row["n_diagnosis_mixed"] = int((group["diagnosis"] == "mixed").sum())
        for name in ("colors", "structures"):
            row[f"{name}_precision"] = _ratio(group[f"{name}_tp"], group[f"{name}_n_stated"])
            row[f"{name}_recall"] = _ratio(group[f"{name}_tp"], group[f"{name}_n_true"])
        mentions = group["vocab_in"].sum() + group["vocab_off"].sum()
        row["vocab_adherence"] = float(group["vocab_in"].sum() / mentions) if mentions else float("nan")
        row["contradiction_rate"] = float(group["any_contradiction"].mean())
        unsupported = pd.to_numeric(group["any_unsupported_attribute"], errors="coerce").dropna()
        row["unsupported_attribute_rate"] = float(unsupported.mean()) if len(unsupported) else float("nan")
        row["mean_words"] = float(group["n_words"].mean())
        if notes is not None:
            texts = notes[(notes["strategy"] == strategy) & (notes.get("status", "ok") == "ok")]["note"].astype(str).tolist()
            row["distinct_1"], row["distinct_2"] = distinct_ngrams(texts, 1), distinct_ngrams(texts, 2)
            row["unique_notes"] = len(set(texts)) / len(texts) if texts else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)
