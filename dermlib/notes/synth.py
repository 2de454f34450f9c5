"""`synthesize`: one note per manifest row for one strategy, generated through the engine and the durable cache."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from dermlib.notes.cache import NoteCache, cache_key
from dermlib.notes.engine import Job, LLMAuthError, Outcome, estimate_cost, run_jobs, run_sync, scrub
from dermlib.notes.local_llm import model_fingerprint
from dermlib.notes.strategies import (
    Combo, Strategy, build_messages, get_strategy, metadata_fields, option_order, parse_response, render_m,
    response_format, stable_hash,
)

RESULT_COLUMNS = ["sample_id", "strategy", "note", "status", "n_attempts", "prompt_tokens", "completion_tokens",
                  "cached", "template_version", "error"]
BACKENDS = ("openai", "vllm", "ollama", "llamacpp")


@dataclass
class _Planned:
    """The request for each row of an LLM strategy, and which keys the cache lacks."""

    frame: pd.DataFrame  # sample_id, key, status ("pending" or "skipped")
    jobs: dict[str, Job]  # key -> job, deduplicated
    found: dict[str, dict[str, Any]]  # key -> cache row


def _check_manifest(manifest: pd.DataFrame) -> None:
    if "sample_id" not in manifest:
        raise ValueError("manifest has no sample_id column; build it with dermlib.data.to_manifest")
    dup = manifest["sample_id"][manifest["sample_id"].duplicated()]
    if len(dup):
        raise ValueError(f"manifest has duplicate sample_id values (first: {list(dup.head(3))}); notes need unique ids")


def _selected(manifest: pd.DataFrame, limit: int | None) -> pd.Series:
    """Rows an LLM strategy covers: all, or the first `limit` in a stable pseudo-random order (tests, demos)."""
    if limit is None or limit >= len(manifest):
        return pd.Series(True, index=manifest.index)
    order = manifest["sample_id"].map(lambda s: stable_hash(str(s))).sort_values(kind="stable")
    return manifest.index.isin(order.index[:limit])


def max_tokens_for(max_tokens: int | dict[str, int], strategy: str) -> int:
    """`notes.max_tokens` is one number or a per-strategy mapping (`{"M+P1": 128, "P3": 160, ...}`)."""
    if isinstance(max_tokens, dict):
        if strategy not in max_tokens:
            raise ValueError(f"notes.max_tokens has no entry for {strategy!r} (has {sorted(max_tokens)})")
        return int(max_tokens[strategy])
    return int(max_tokens)


def _plan(manifest: pd.DataFrame, strategy: Strategy, *, backend: str, model: str, params: dict[str, Any],
          limit: int | None, cache: NoteCache, retry_failed: bool) -> _Planned:
    """One job per selected row: its own option order (structured prompts) and its own seed (one generation per
    image); the key covers everything the note depends on (see `cache_key`)."""
    rows, jobs = [], {}
    chosen = _selected(manifest, limit)
    identity = {"model_fingerprint": model_fingerprint(backend, model), "templates": strategy.digest}
    for (_, row), take in zip(manifest.iterrows(), chosen):
        sample_id = str(row["sample_id"])
        if not take:
            rows.append({"sample_id": sample_id, "key": None, "status": "skipped"})
            continue
        fields = metadata_fields(row)
        options = option_order(sample_id) if strategy.output == "json" else None
        messages = build_messages(strategy, fields, options)
        fmt = response_format(strategy, backend, options)
        seed = stable_hash(sample_id) % (2 ** 31)
        key = cache_key(backend=backend, model=model, strategy=strategy.name,
                        template_version=strategy.template_version, messages=messages, response_format=fmt,
                        params=params, seed=seed, identity=identity)
        rows.append({"sample_id": sample_id, "key": key, "status": "pending"})
        if key not in jobs:
            jobs[key] = Job(key, messages, fmt, seed,
                            lambda content, finish, f=fields: parse_response(strategy, f, content, finish))
    frame = pd.DataFrame(rows, columns=["sample_id", "key", "status"])
    found = cache.get_many(list(jobs))
    # transient failures are never final; permanent ones are asked again only on request
    todo = {k: j for k, j in jobs.items() if k not in found or found[k]["status"] == "transient"
            or (retry_failed and found[k]["status"] != "ok")}
    return _Planned(frame, todo, found)


def _llm_settings(backend: str | None, base_url: str | None, model: str | None) -> tuple[str, str]:
    backend = backend or ("openai" if base_url is None else "vllm")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if not model:
        raise ValueError("LLM strategies need a model name (model='gpt-4o-mini', or the alias your server serves)")
    return backend, model


def _api_key(backend: str, api_key: str | None) -> str:
    key = api_key or os.environ.get("OPENAI_API_KEY")
    if key:
        return key
    if backend == "openai":
        raise ValueError("no API key: set the OPENAI_API_KEY environment variable (or pass api_key=...)")
    return "not-needed"  # local servers ignore the key, the client just needs a value


def synthesize(manifest: pd.DataFrame, strategy: str, *, base_url: str | None = None, model: str | None = None,
               api_key: str | None = None, cache_path: str | Path | None = None, concurrency: int = 8,
               timeout: float = 60.0, max_retries: int = 3, backend: str | None = None, temperature: float = 0.7,
               max_tokens: int | dict[str, int] = 160, limit: int | None = None, retry_failed: bool = False,
               backoff_base: float = 0.5, outage_after: int = 10) -> pd.DataFrame:
    """One note per manifest row with `strategy`; columns RESULT_COLUMNS. Stats are in `result.attrs["stats"]`.

    LLM strategies read `cache_path` first and request only missing notes (failed ones too with
    `retry_failed=True`); each note is committed as it arrives. Every row is its own generation (own seed).
    `limit` covers only that many rows (stable pseudo-random choice); the rest get status "skipped".
    Failure policy (transient / permanent / bugs): see `dermlib.notes.engine`; `outage_after` transient failures
    in a row stop the run with LLMOutageError, keeping everything stored.
    """
    _check_manifest(manifest)
    strat = get_strategy(strategy)
    common = dict(base_url=base_url, model=model, api_key=api_key, cache_path=cache_path, concurrency=concurrency,
                  timeout=timeout, max_retries=max_retries, backend=backend, temperature=temperature,
                  max_tokens=max_tokens, limit=limit, retry_failed=retry_failed, backoff_base=backoff_base,
                  outage_after=outage_after)
    if isinstance(strat, Combo):
        return _combine(manifest, strat, common)
    if not strat.uses_llm:
        notes = [render_m(metadata_fields(row)) for _, row in manifest.iterrows()]
        out = pd.DataFrame({"sample_id": manifest["sample_id"].astype(str).to_numpy(), "strategy": strat.name,
                            "note": notes, "status": "ok", "n_attempts": 0, "prompt_tokens": 0,
                            "completion_tokens": 0, "cached": False, "template_version": strat.template_version,
                            "error": None})
        out.attrs["stats"] = {"llm_calls": 0, "n_cached": 0, "n_generated": 0, "seconds": 0.0, "notes_per_s": 0.0,
                              "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0, "errors": {}}
        return _typed(out)
    if cache_path is None:
        raise ValueError(f"strategy {strat.name} calls an LLM: pass cache_path (e.g. <work_dir>/notes/cache.sqlite)")
    backend, model = _llm_settings(backend, base_url, model)
    params = {"temperature": temperature, "max_tokens": max_tokens_for(max_tokens, strat.name)}
    with NoteCache(cache_path) as cache:
        plan = _plan(manifest, strat, backend=backend, model=model, params=params, limit=limit, cache=cache,
                     retry_failed=retry_failed)
        stats = None
        if plan.jobs:
            key = _api_key(backend, api_key)

            def store(outcome: Outcome) -> None:  # every text scrubbed of the key, whatever the server echoed
                cache.put({"key": outcome.key, "backend": backend, "model": model, "strategy": strat.name,
                           "template_version": strat.template_version, "seed": plan.jobs[outcome.key].seed,
                           "status": outcome.status, "note": scrub(outcome.note, key) if outcome.note else None,
                           "raw": scrub(outcome.raw, key) if outcome.raw else outcome.raw,
                           "error": scrub(outcome.error, key) if outcome.error else None,
                           "n_attempts": outcome.n_attempts, "prompt_tokens": outcome.prompt_tokens,
                           "completion_tokens": outcome.completion_tokens})
                cache.release(outcome.key)

            n_cached = int(plan.frame["key"].isin(set(plan.found) - set(plan.jobs)).sum())
            try:
                stats = run_sync(lambda: run_jobs(
                    list(plan.jobs.values()), base_url=base_url, api_key=key, model=model, params=params,
                    concurrency=concurrency, timeout=timeout, max_retries=max_retries, on_outcome=store,
                    n_cached=n_cached, desc=f"{strat.name} notes", backoff_base=backoff_base,
                    outage_after=outage_after,
                    claim=lambda k: cache.claim(k, stale_after=timeout * (max_retries + 1) + 60.0)))
            except LLMAuthError as exc:
                raise LLMAuthError(f"{exc} at {base_url or 'https://api.openai.com/v1'} (check OPENAI_API_KEY); "
                                   f"notes stored so far are kept in {cache_path}") from None
        stored = cache.get_many([k for k in plan.frame["key"] if k])
    return _result(plan, stored, strat, model, stats)


def _result(plan: _Planned, stored: dict[str, dict[str, Any]], strat: Strategy, model: str, stats: Any) -> pd.DataFrame:
    """Assemble the per-row result from the cache rows (the cache is the single source of truth)."""
    generated = set(plan.jobs)
    rows = []
    for sample_id, key, status in plan.frame.itertuples(index=False):
        hit = stored.get(key) if key else None
        if hit is None:
            rows.append({"sample_id": sample_id, "status": "skipped" if status == "skipped" else "failed",
                         "note": None, "n_attempts": 0, "prompt_tokens": 0, "completion_tokens": 0, "cached": False,
                         "error": "outside notes.limit" if status == "skipped" else "no result stored"})
            continue
        if hit["status"] == "transient" and key not in generated:
            hit = {**hit, "error": f"{hit['error']} (from an earlier run; asked again next time)"}
        rows.append({"sample_id": sample_id, "status": "failed" if hit["status"] == "transient" else hit["status"],
                     "note": hit["note"],
                     "n_attempts": hit["n_attempts"], "prompt_tokens": hit["prompt_tokens"],
                     "completion_tokens": hit["completion_tokens"], "cached": key not in generated,
                     "error": hit["error"]})
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


def _combine(manifest: pd.DataFrame, combo: Combo, common: dict[str, Any]) -> pd.DataFrame:
    """Concatenate (`A&B`) or mix (`A|B`) base strategies' notes per sample."""
    ids = manifest["sample_id"].astype(str)
    if combo.mode == "mix":
        choice = ids.map(lambda s: combo.parts[stable_hash("mix:" + s) % len(combo.parts)])
        pieces = [synthesize(manifest[choice == p], p, **common) for p in combo.parts if (choice == p).any()]
        out = pd.concat(pieces).set_index("sample_id").loc[ids.to_list()].reset_index()
        out["strategy"] = combo.name
    else:
        parts = [synthesize(manifest, p, **common).set_index("sample_id").loc[ids.to_list()] for p in combo.parts]
        ok = pd.concat([p["status"] == "ok" for p in parts], axis=1).all(axis=1)
        out = pd.DataFrame({
            "sample_id": ids.to_list(), "strategy": combo.name,
            "note": ["\n\n".join(str(p.at[s, "note"]) for p in parts) if ok[s] else None for s in ids],
            "status": ["ok" if ok[s] else "failed" for s in ids],
            "n_attempts": sum(p["n_attempts"].to_numpy() for p in parts),
            "prompt_tokens": sum(p["prompt_tokens"].to_numpy() for p in parts),
            "completion_tokens": sum(p["completion_tokens"].to_numpy() for p in parts),
            "cached": pd.concat([p["cached"] for p, name in zip(parts, combo.parts) if get_strategy(name).uses_llm],
                                axis=1).all(axis=1).to_numpy(),
            "error": ["; ".join(str(p.at[s, "error"]) for p in parts if p.at[s, "status"] != "ok") or None
                      for s in ids],
        })
    out["template_version"] = combo.template_version
    out.attrs["stats"] = {}
    return _typed(out[RESULT_COLUMNS])


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame[RESULT_COLUMNS].reset_index(drop=True)
    for col in ("sample_id", "strategy", "note", "status", "template_version", "error"):
        out[col] = out[col].astype("string")
    for col in ("n_attempts", "prompt_tokens", "completion_tokens"):
        out[col] = out[col].astype("int64")
    out["cached"] = out["cached"].astype(bool)
    out.attrs = dict(frame.attrs)
    return out


def count_pending(manifest: pd.DataFrame, strategy: str, *, cache_path: str | Path, backend: str | None = None,
                  base_url: str | None = None, model: str | None = None, temperature: float = 0.7,
                  max_tokens: int | dict[str, int] = 160, limit: int | None = None, retry_failed: bool = False,
                  **_: Any) -> int:
    """How many LLM requests `synthesize` would make with these settings (0 when everything is cached)."""
    strat = get_strategy(strategy)
    if not strat.uses_llm:
        return 0
    if isinstance(strat, Combo):
        return sum(count_pending(manifest, p, cache_path=cache_path, backend=backend, base_url=base_url, model=model,
                                 temperature=temperature, max_tokens=max_tokens, limit=limit,
                                 retry_failed=retry_failed)
                   for p in strat.parts)
    backend, model = _llm_settings(backend, base_url, model)
    with NoteCache(cache_path) as cache:
        plan = _plan(manifest, strat, backend=backend, model=model,
                     params={"temperature": temperature, "max_tokens": max_tokens_for(max_tokens, strat.name)},
                     limit=limit, cache=cache, retry_failed=retry_failed)
    return len(plan.jobs)
