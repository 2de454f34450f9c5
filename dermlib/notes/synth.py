"""`synthesize`: one note per manifest row for one strategy, generated through the engine and the durable cache (M and
the controls D, M+G, M+Gs are templates: rendered here, no LLM, status "ok")."""

from __future__ import annotations

import os
from typing import Any

import pandas as pd

from dermlib.notes.cache import NoteCache
from dermlib.notes.controls import control_notes
from dermlib.notes.engine import (EngineStats, Job, LLMAuthError, LLMRejectedError, Outcome, estimate_cost, run_jobs,
                                  run_sync, scrub)
from dermlib.notes.models import stop_advice
from dermlib.notes.plan import NoteSettings, Planned, api_key, llm_backend, plan_jobs
from dermlib.notes.sanitize import clean_text
from dermlib.notes.strategies import Combo, Strategy, get_strategy, render_answer, render_m, stable_hash
from dermlib.notes.fields import metadata_fields
from dermlib.notes.wire import sent_params
from dermlib.redact import redact_url, url_secrets

RESULT_COLUMNS = ["sample_id", "strategy", "note", "status", "n_attempts", "prompt_tokens", "completion_tokens",
                  "cached", "template_version", "error", "raw"]  # raw: the LLM's answer as stored (None for M)


def _check_manifest(manifest: pd.DataFrame) -> None:
    if "sample_id" not in manifest:
        raise ValueError("manifest has no sample_id column; build it with dermlib.data.to_manifest")
    dup = manifest["sample_id"][manifest["sample_id"].duplicated()]
    if len(dup):
        raise ValueError(f"manifest has duplicate sample_id values (first: {list(dup.head(3))}); notes need unique ids")


def synthesize(manifest: pd.DataFrame, strategy: str, settings: NoteSettings | None = None) -> pd.DataFrame:
    """One note per manifest row with `strategy`; columns RESULT_COLUMNS. Stats are in `result.attrs["stats"]`.

    LLM strategies need `settings` (`NoteSettings.from_config(cfg)`): they read its cache first and request only
    missing notes (failed ones too with `retry_failed`); each note is committed as it arrives. Every row is its
    own generation (own seed). `limit` covers only that many rows (stable pseudo-random choice); the rest get
    status "skipped". Failure policy (transient / permanent / bugs): see `dermlib.notes.engine`; `outage_after`
    transient failures in a row stop the run with LLMOutageError, keeping everything stored.
    """
    _check_manifest(manifest)
    strat = get_strategy(strategy)
    if isinstance(strat, Combo):
        return _combine(manifest, strat, settings)
    if not strat.uses_llm:  # M and the controls: templates, no LLM, nothing cached
        notes = (control_notes(manifest, strat.name) if strat.control
                 else [render_m(metadata_fields(row)) for row in manifest.to_dict("records")])
        out = pd.DataFrame({"sample_id": manifest["sample_id"].astype(str).to_numpy(), "strategy": strat.name,
                            "note": [n or None for n in notes], "status": ["ok" if n else "failed" for n in notes],
                            "n_attempts": 0, "prompt_tokens": 0,
                            "completion_tokens": 0, "cached": False, "template_version": strat.template_version,
                            "error": [None if n else "the template renders nothing for this row" for n in notes],
                            "raw": None})
        out.attrs["stats"] = {"llm_calls": 0, "n_cached": 0, "n_generated": 0, "seconds": 0.0, "notes_per_s": 0.0,
                              "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0, "errors": {}}
        return _typed(out)
    if settings is None or settings.cache_path is None:
        raise ValueError(f"strategy {strat.name} calls an LLM: pass settings with a cache_path "
                         "(NoteSettings.from_config(cfg), e.g. <work_dir>/notes/cache.sqlite)")
    s = settings
    llm_backend(s)  # a bad backend or a missing model is an error before the cache file is made
    with NoteCache(s.cache_path) as cache:
        plan = plan_jobs(manifest, strat, s, cache)
        stats = None
        if plan.jobs:
            n_cached = int(plan.frame["key"].isin(set(plan.found) - set(plan.jobs)).sum())
            stats = ask(list(plan.jobs.values()), cache, s, backend=plan.backend, model=plan.model,
                        params=plan.params, strategy=strat.name, template_version=strat.template_version,
                        desc=f"{strat.name} notes", n_cached=n_cached)
        stored = cache.get_many([k for k in plan.frame["key"] if k])
    return _result(plan, stored, strat, plan.model, stats)


def ask(jobs: list[Job], cache: NoteCache, settings: NoteSettings, *, backend: str, model: str,
        params: dict[str, Any], strategy: str, template_version: str, desc: str, n_cached: int = 0) -> EngineStats:
    """Ask the LLM of `settings` for `jobs` (`dermlib.notes.engine.run_jobs`), claiming each in `cache` first (two
    processes never ask twice) and storing each outcome as it arrives, every text scrubbed of the key: the one way
    dermlib asks an LLM, for notes and for class descriptions alike. `params` are the hashed ones; each backend is
    sent them under its own names (`dermlib.notes.wire.sent_params`). Refused requests stop the run with one
    message naming the model, the strategy and the fix (LLMAuthError, LLMRejectedError), storing nothing for them."""
    key = api_key(backend, settings)
    secrets = (key, *url_secrets(settings.base_url))
    seeds = {job.key: job.seed for job in jobs}

    def clean(text: str | None) -> str | None:  # every text scrubbed of the key, whatever the server echoed
        return scrub(text, secrets) if text else text

    def store(outcome: Outcome) -> None:
        cache.put({"key": outcome.key, "backend": backend, "model": model, "strategy": strategy,
                   "template_version": template_version, "seed": seeds[outcome.key],
                   "status": outcome.status, "note": clean(outcome.note) or None, "raw": clean(outcome.raw),
                   "error": clean(outcome.error) or None,
                   "n_attempts": outcome.n_attempts, "prompt_tokens": outcome.prompt_tokens,
                   "completion_tokens": outcome.completion_tokens, "served_model": clean(outcome.served_model),
                   "system_fingerprint": clean(outcome.system_fingerprint)})
        cache.release(outcome.key)

    s = settings
    where = redact_url(s.base_url) or "https://api.openai.com/v1"
    try:
        return run_sync(lambda: run_jobs(
            jobs, base_url=s.base_url, api_key=key, model=model, params=sent_params(backend, params),
            concurrency=s.concurrency, timeout=s.timeout, max_retries=s.max_retries, on_outcome=store,
            n_cached=n_cached, desc=desc, backoff_base=s.backoff_base, outage_after=s.outage_after,
            stop_after=s.stop_after_permanent,
            claim=lambda k: cache.claim(k, stale_after=s.timeout * (s.max_retries + 1) + 60.0)))
    except LLMRejectedError as exc:
        kind = LLMAuthError if isinstance(exc, LLMAuthError) else LLMRejectedError
        withheld = kind is LLMAuthError and key == "not-needed" and bool(os.environ.get("OPENAI_API_KEY"))
        hint = (" OPENAI_API_KEY is sent to api.openai.com only: name the key this server needs with "
                "--set notes.api_key_env=OPENAI_API_KEY." if withheld else "")
        raise kind(scrub(f"{strategy} with model {model!r} at {where}: {exc}. Fix: {stop_advice(str(exc), model)}"
                         f"{hint} Everything stored so far is kept in {cache.path}.", secrets)) from None


def _result(plan: Planned, stored: dict[str, dict[str, Any]], strat: Strategy, model: str, stats: Any) -> pd.DataFrame:
    """Assemble the per-row result from the cache rows (the cache is the single source of truth)."""
    generated = set(plan.jobs)
    rows = []
    for sample_id, key, status in plan.frame.itertuples(index=False):
        hit = stored.get(key) if key else None
        if hit is None:
            rows.append({"sample_id": sample_id, "status": "skipped" if status == "skipped" else "failed",
                         "note": None, "n_attempts": 0, "prompt_tokens": 0, "completion_tokens": 0, "cached": False,
                         "error": "outside notes.limit" if status == "skipped" else "no result stored",
                         "raw": None})
            continue
        if hit["status"] == "transient" and key not in generated:
            hit = {**hit, "error": f"{hit['error']} (from an earlier run; asked again next time)"}
        if hit["status"] == "ok" and key in plan.fields and hit.get("raw"):
            hit = _rendered(strat, plan.fields[key], hit)
        rows.append({"sample_id": sample_id, "status": "failed" if hit["status"] == "transient" else hit["status"],
                     "note": hit["note"],
                     "n_attempts": hit["n_attempts"], "prompt_tokens": hit["prompt_tokens"],
                     "completion_tokens": hit["completion_tokens"], "cached": key not in generated,
                     "error": hit["error"], "raw": hit.get("raw")})
    out = pd.DataFrame(rows)
    out.insert(1, "strategy", strat.name)
    out["template_version"] = strat.template_version
    new = out[~out["cached"] & (out["status"] != "skipped")].drop_duplicates("sample_id")
    out.attrs["stats"] = {
        "llm_calls": stats.calls if stats else 0, "n_cached": int(out["cached"].sum()),
        "n_generated": len(generated), "seconds": round(stats.seconds, 2) if stats else 0.0,
        "notes_per_s": round(stats.notes_per_s, 3) if stats else 0.0,
        "prompt_tokens": stats.prompt_tokens if stats else 0, "completion_tokens": stats.completion_tokens if stats else 0,
        "cost_usd": estimate_cost(model, stats.prompt_tokens, stats.completion_tokens) if stats else 0.0,
        "errors": dict(stats.errors) if stats else {}, "model": model, "n_rows_generated": len(new),
    }
    return _typed(out)


def _rendered(strat: Strategy, fields: dict[str, str], hit: dict[str, Any]) -> dict[str, Any]:
    """A stored structured answer rendered with today's templates (its key covers only what was sent, so an edited
    [render] section or M template reaches stored notes without asking again); the cleaned note, or a failure that
    says why it no longer renders."""
    note, error = render_answer(strat, fields, hit["raw"])
    if note is not None:
        note, error = clean_text(note)
        if error is None:
            return {**hit, "note": note}
    return {**hit, "status": "failed", "note": None, "error": f"the stored answer no longer renders: {error}"}


def _combine(manifest: pd.DataFrame, combo: Combo, settings: NoteSettings | None) -> pd.DataFrame:
    """Concatenate (`A&B`) or mix (`A|B`) base strategies' notes per sample."""
    ids = manifest["sample_id"].astype(str)
    if combo.mode == "mix":
        choice = ids.map(lambda s: combo.parts[stable_hash("mix:" + s) % len(combo.parts)])
        pieces = [synthesize(manifest[choice == p], p, settings) for p in combo.parts if (choice == p).any()]
        out = pd.concat(pieces).set_index("sample_id").loc[ids.to_list()].reset_index()
        out["strategy"] = combo.name
    else:
        parts = [synthesize(manifest, p, settings).set_index("sample_id").loc[ids.to_list()] for p in combo.parts]
        ok = pd.concat([p["status"] == "ok" for p in parts], axis=1).all(axis=1)
        llm_parts = [p for p, name in zip(parts, combo.parts) if get_strategy(name).uses_llm]
        out = pd.DataFrame({
            "sample_id": ids.to_list(), "strategy": combo.name,
            "note": ["\n\n".join(str(p.at[s, "note"]) for p in parts) if ok[s] else None for s in ids],
            "status": ["ok" if ok[s] else "failed" for s in ids],
            "n_attempts": sum(p["n_attempts"].to_numpy() for p in parts),
            "prompt_tokens": sum(p["prompt_tokens"].to_numpy() for p in parts),
            "completion_tokens": sum(p["completion_tokens"].to_numpy() for p in parts),
            "cached": pd.concat([p["cached"] for p in llm_parts], axis=1).all(axis=1).to_numpy() if llm_parts
            else False,  # only templates (e.g. "D&M+G"): nothing cached
            "error": ["; ".join(str(p.at[s, "error"]) for p in parts if p.at[s, "status"] != "ok") or None
                      for s in ids],
            "raw": None,  # a combination's parts keep their own raw answers
        })
    out["template_version"] = combo.template_version
    out.attrs["stats"] = {}
    return _typed(out[RESULT_COLUMNS])


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame[RESULT_COLUMNS].reset_index(drop=True)
    for col in ("sample_id", "strategy", "note", "status", "template_version", "error", "raw"):
        out[col] = out[col].astype("string")
    for col in ("n_attempts", "prompt_tokens", "completion_tokens"):
        out[col] = out[col].astype("int64")
    out["cached"] = out["cached"].astype(bool)
    out.attrs = dict(frame.attrs)
    return out


def count_pending(manifest: pd.DataFrame, strategy: str, settings: NoteSettings) -> int:
    """How many LLM requests `synthesize` would make with these settings (0 when everything is cached)."""
    strat = get_strategy(strategy)
    if not strat.uses_llm:
        return 0
    if isinstance(strat, Combo):
        return sum(count_pending(manifest, p, settings) for p in strat.parts)
    llm_backend(settings)
    with NoteCache(settings.cache_path) as cache:
        return len(plan_jobs(manifest, strat, settings, cache).jobs)
