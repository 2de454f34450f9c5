"""Class descriptions for zero-shot evaluation: per LLM strategy's style and class, a few descriptions the notes LLM
writes from the diagnosis alone (template `prompts/class_descriptions.v1.json`), keyed and cached like notes (in
`eval.class_descriptions_cache`) and asked through the same engine and local servers. The notes step writes them
(`generate_descriptions`); evaluation only reads them (`class_descriptions`), and stops on a class with no usable
one, naming it, its stored errors and the way out: a permanent failure is asked again only on request
(`python -m dermlib.notes.descriptions_cli --retry-failed`, which asks for descriptions alone)."""

from __future__ import annotations

import hashlib
import json
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

from dermlib.config import REPO_ROOT
from dermlib.data.labels import CLASS_NAMES, config_classes
from dermlib.grammar import base_strategies
from dermlib.notes.cache import NoteCache, cache_key
from dermlib.notes.engine import Job
from dermlib.notes.local_llm import model_fingerprint
from dermlib.notes.plan import NoteSettings, cache_path, llm_backend, max_tokens_for
from dermlib.notes.profile import DESCRIPTIONS_PER_SECOND, check_ask_limit, local_servers
from dermlib.notes.strategies import PROMPT_DIR, render_m, stable_hash, vocabulary
from dermlib.notes.synth import ask

DESCRIPTIONS_FILE = "class_descriptions.v1.json"
DESCRIPTION_FILES = (DESCRIPTIONS_FILE, "vocabulary.v1.json", "m.v2.txt")  # what a description is rendered from


def description_template() -> dict[str, Any]:
    """The class-description prompt template: a system line and, per strategy style, its user prompt."""
    return json.loads((PROMPT_DIR / DESCRIPTIONS_FILE).read_text())


def description_styles(cfg: dict[str, Any]) -> list[str]:
    """The styles described: the LLM strategies (or parts of combinations) of `eval.strategies`, in template
    order; none when `eval.class_descriptions` is 0."""
    if int(cfg["eval"]["class_descriptions"]) <= 0:
        return []
    used = {base for name in cfg["eval"]["strategies"] for base in base_strategies(name)}
    return [style for style in description_template()["styles"] if style in used]


def descriptions_cache_path(cfg: dict[str, Any]) -> Path:
    """`eval.class_descriptions_cache` with {work_dir} and {notes_dir} (the note cache's folder) filled in."""

    path = Path(str(cfg["eval"]["class_descriptions_cache"]).format(work_dir=cfg["work_dir"],
                                                                     notes_dir=cache_path(cfg).parent))
    return path if path.is_absolute() else REPO_ROOT / path


def _description_parser(prefix: str) -> Any:
    """An answer -> (description, None) or (None, error): whole sentences only, after the M prefix if any."""
    def parse(content: str | None, finish: str | None) -> tuple[str | None, str | None]:
        text = " ".join((content or "").split())
        if finish == "length":  # cut at max_tokens: keep whole sentences
            text = text[: text.rfind(".") + 1] if "." in text else ""
        if len(text.split()) < 3:
            return None, f"answer too short for a description (finish_reason={finish})"
        return (f"{prefix} {text}" if prefix else text), None
    return parse


def description_jobs(cfg: dict[str, Any], codes: list[str], styles: list[str]) -> dict[tuple[str, str, int], Job]:
    """One generation job per (style, class, k < eval.class_descriptions), keyed like notes (template digest,
    model fingerprint, messages, parameters, seed)."""

    n, template = cfg["notes"], description_template()
    options = {f"options_{k}": ", ".join(v) for k, v in vocabulary().items()}
    digest = {f: hashlib.sha256((PROMPT_DIR / f).read_bytes()).hexdigest()[:16] for f in DESCRIPTION_FILES}
    identity = {"model_fingerprint": model_fingerprint(n["backend"], n["model"]), "templates": digest}
    jobs = {}
    for style in styles:
        spec = template["styles"][style]
        params = {"temperature": n["temperature"], "max_tokens": max_tokens_for(n["max_tokens"], style)}
        for code in codes:
            name = CLASS_NAMES.get(code, code)
            messages = [{"role": "system", "content": template["system"]},
                        {"role": "user", "content": spec["user"].format(diagnosis=name, **options)}]
            prefix = render_m({"diagnosis": name}) if spec["prefix_m"] else ""
            for k in range(int(cfg["eval"]["class_descriptions"])):
                seed = stable_hash(f"{style}|{code}|{k}") % (2 ** 31)
                key = cache_key(backend=n["backend"], model=n["model"], strategy=f"class-description:{style}",
                                template_version=template["version"], messages=messages, response_format=None,
                                params=params, seed=seed, identity=identity)
                jobs[(style, code, k)] = Job(key, messages, None, seed, _description_parser(prefix))
    return jobs


def generate_descriptions(cfg: dict[str, Any], codes: list[str] | None = None, *,
                          retry_failed: bool = False) -> dict[str, int]:
    """Ask the notes LLM for every class description the cache lacks (`description_jobs` for `description_styles` and
    the taxonomy's classes, or `codes`), through the same engine, cache and local servers as the notes; failed ones
    again with `retry_failed`. Returns how many were asked, and how many are usable and failed afterwards."""
    codes = config_classes(cfg) if codes is None else codes
    jobs = description_jobs(cfg, codes, description_styles(cfg))
    if not jobs:
        return {"asked": 0, "ok": 0, "failed": 0}
    settings = NoteSettings.from_config(cfg)
    backend, model = llm_backend(settings)
    where = descriptions_cache_path(cfg)
    asked = 0
    with NoteCache(where) as cache:
        found = cache.get_many([job.key for job in jobs.values()])
        again = ("transient", "failed") if retry_failed else ("transient",)
        todo = {k: job for k, job in jobs.items() if found.get(job.key, {}).get("status", "transient") in again}
        if todo:
            styles = Counter(s for s, _, _ in todo)
            check_ask_limit(cfg, dict(styles), "class descriptions", rates=dict.fromkeys(styles, DESCRIPTIONS_PER_SECOND))
            with local_servers(cfg, settings, len(todo), f"class descriptions are not in {where}") as asking:
                for style in dict.fromkeys(s for s, _, _ in todo):
                    chosen = [job for (s, _, _), job in todo.items() if s == style]
                    params = {"temperature": settings.temperature,
                              "max_tokens": max_tokens_for(settings.max_tokens, style)}
                    ask(chosen, cache, asking, backend=backend, model=model, params=params,
                        strategy=f"class-description:{style}", template_version=description_template()["version"],
                        desc=f"{style}-style class descriptions")
                    asked += len(chosen)
        found = cache.get_many([job.key for job in jobs.values()])
    ok = sum(found.get(job.key, {}).get("status") == "ok" for job in jobs.values())
    return {"asked": asked, "ok": ok, "failed": len(jobs) - ok}


def class_descriptions(cfg: dict[str, Any], codes: list[str], styles: list[str] | None = None, *,
                       missing: str = "raise") -> dict[str, dict[str, list[str]]]:
    """Per style (default `description_styles`) and class, its LLM-written descriptions, read from their cache (never
    asked for here: `generate_descriptions` writes them, in notebook 02 or `python -m dermlib.notes`). Every (style,
    class) needs one usable description: else an error naming each such (style, class) with its stored errors and
    the way out (`missing="raise"`), or that style is left out with a warning (`missing="skip"`)."""
    if missing not in ("raise", "skip"):
        raise ValueError(f"missing must be 'raise' or 'skip', not {missing!r}")
    styles = description_styles(cfg) if styles is None else styles
    jobs = description_jobs(cfg, codes, styles)
    if not jobs:
        return {}
    where = descriptions_cache_path(cfg)
    if not where.exists():
        found: dict[str, dict[str, Any]] = {}
    else:
        with NoteCache(where) as cache:
            found = cache.get_many([job.key for job in jobs.values()])
    out: dict[str, dict[str, list[str]]] = {style: {code: [] for code in codes} for style in styles}
    problems: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for (style, code, _), job in jobs.items():
        row = found.get(job.key) or {"status": "missing", "error": "not generated"}
        if row["status"] == "ok":
            out[style][code].append(str(row["note"]))
        else:
            problems.setdefault((style, code), []).append(row)
    empty = [(style, code) for style in styles for code in codes if not out[style][code]]
    if not empty:
        return out
    fix = descriptions_fix(cfg, {row["status"] for key in empty for row in problems[key]})
    if missing == "skip":
        lacking = sorted({style for style, _ in empty}, key=styles.index)
        warnings.warn(f"class descriptions of {lacking} are not all in {where}: those styles are left out ({fix})",
                      stacklevel=2)
        return {style: by_class for style, by_class in out.items() if style not in lacking}
    shown = [f"{style} {code} ({_why(problems[style, code])})" for style, code in empty[:5]]
    more = f" and {len(empty) - 5} more" if len(empty) > 5 else ""
    raise RuntimeError(f"no usable class description for {', '.join(shown)}{more} in {where}: {fix}")


def _why(rows: list[dict[str, Any]]) -> str:
    """What became of one (style, class)'s descriptions: count per status and each distinct stored error."""
    statuses = Counter(str(row["status"]) for row in rows)
    errors = dict.fromkeys(" ".join(str(row.get("error") or "no error stored").split())[:160] for row in rows)
    return f"{', '.join(f'{n} {status}' for status, n in statuses.items())}: {'; '.join(errors)}"


def descriptions_fix(cfg: dict[str, Any], statuses: set[str]) -> str:
    """The way out for class descriptions in these states: failed ones (permanent failures, never asked again
    by notebook 02) with `--retry-failed`; missing or transient ones by notebook 02 or the same command."""
    command = f"python -m dermlib.notes.descriptions_cli --profile {cfg['profile']}"
    ways = []
    if "failed" in statuses:
        ways.append(f"ask again for the failed ones with `{command} --retry-failed` (notebook 02 never asks "
                    f"again for a failed one)")
    if statuses - {"failed"}:
        ways.append(f"write the missing ones with notebook 02_notes (./run_all.sh --only 02) or `{command}`")
    return "; ".join(ways + ["or set eval.class_descriptions=0 to leave them out (each command takes the run's "
                             "--set options)"])
