"""What an LLM is asked for: the note settings of a profile (`NoteSettings`) and, per manifest row, its request
and cache key (`plan_jobs`). Shared by the normal route (`dermlib.notes.synth`) and the Batch route
(`dermlib.notes.batch`), so both fill and read the same cache keys."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from dermlib.config import REPO_ROOT
from dermlib.notes.cache import NoteCache, cache_key
from dermlib.notes.engine import Job
from dermlib.notes.local_llm import model_fingerprint
from dermlib.notes.strategies import (
    Strategy,
    build_messages,
    option_order,
    parse_response,
    response_format,
    stable_hash,
)
from dermlib.notes.fields import metadata_fields
from dermlib.notes.wire import sent_format

BACKENDS = ("openai", "vllm", "ollama", "llamacpp")


def cache_path(cfg: dict[str, Any]) -> Path:
    """The profile's note cache: `notes.cache_path` with {work_dir} filled in; relative paths are under the repo."""
    path = Path(str(cfg["notes"]["cache_path"]).format(work_dir=cfg["work_dir"]))
    return path if path.is_absolute() else REPO_ROOT / path


@dataclass(frozen=True)
class NoteSettings:
    """How notes are requested (the `notes` section of a config, see `dermlib.config`); the API key is never part
    of a config and is read from OPENAI_API_KEY unless given here."""

    backend: str | None  # openai | vllm | ollama | llamacpp; None: openai without base_url, else vllm
    base_url: str | list[str] | None  # None: OpenAI; a list spreads requests over several servers
    model: str | None
    cache_path: str | Path | None  # the SQLite note cache (needed by every LLM strategy)
    concurrency: int
    timeout: float  # seconds per attempt
    max_retries: int
    outage_after: int  # this many transient failures in a row stop a run (LLMOutageError)
    temperature: float
    max_tokens: int | dict[str, int]  # one number, or one per LLM strategy
    limit: int | None  # LLM strategies cover only this many rows; the rest are "skipped"
    retry_failed: bool = False  # ask again for notes stored as permanent failures
    api_key: str | None = None
    backoff_base: float = 0.5  # seconds before the first retry of an HTTP error (doubles each time)
    stop_after_permanent: int = 3  # this many refused requests (HTTP 400/404/422) in a row stop a run

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> NoteSettings:
        """The settings of a profile's config (cache path resolved with `cache_path`)."""
        n = cfg["notes"]
        return cls(backend=n["backend"], base_url=n["base_url"], model=n["model"], cache_path=cache_path(cfg),
                   concurrency=n["concurrency"], timeout=n["timeout"], max_retries=n["max_retries"],
                   outage_after=n["outage_after"], temperature=n["temperature"], max_tokens=n["max_tokens"],
                   limit=n["limit"], stop_after_permanent=n.get("stop_after_permanent", 3))


@dataclass
class Planned:
    """The request for each row of an LLM strategy, and which keys the cache lacks."""

    frame: pd.DataFrame  # sample_id, key, status ("pending" or "skipped")
    jobs: dict[str, Job]  # key -> job, deduplicated; only those to ask for
    found: dict[str, dict[str, Any]]  # key -> cache row
    backend: str
    model: str
    params: dict[str, Any]  # temperature, max_tokens: sent with every request and part of every key


def max_tokens_for(max_tokens: int | dict[str, int], strategy: str) -> int:
    """`notes.max_tokens` is one number or a per-strategy mapping (`{"M+P1": 128, "P3": 160, ...}`)."""
    if isinstance(max_tokens, dict):
        if strategy not in max_tokens:
            raise ValueError(f"notes.max_tokens has no entry for {strategy!r} (has {sorted(max_tokens)})")
        return int(max_tokens[strategy])
    return int(max_tokens)


def llm_backend(settings: NoteSettings) -> tuple[str, str]:
    """(backend, model) of the settings, checked: an unknown backend or a missing model is an error."""
    backend = settings.backend or ("openai" if settings.base_url is None else "vllm")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if not settings.model:
        raise ValueError("LLM strategies need a model name (model='gpt-4o-mini', or the alias your server serves)")
    return backend, settings.model


def api_key(backend: str, settings: NoteSettings) -> str:
    """The key to send: the settings' own, else OPENAI_API_KEY; local servers get a placeholder."""
    key = settings.api_key or os.environ.get("OPENAI_API_KEY")
    if key:
        return key
    if backend == "openai":
        raise ValueError("no API key: set the OPENAI_API_KEY environment variable (or pass api_key=...)")
    return "not-needed"  # local servers ignore the key, the client just needs a value


def selected(manifest: pd.DataFrame, limit: int | None) -> pd.Series:
    """Rows an LLM strategy covers: all, or the first `limit` in a stable pseudo-random order (tests, demos)."""
    if limit is None or limit >= len(manifest):
        return pd.Series(True, index=manifest.index)
    order = manifest["sample_id"].map(lambda s: stable_hash(str(s))).sort_values(kind="stable")
    return manifest.index.isin(order.index[:limit])


def note_params(settings: NoteSettings, strategy: Strategy) -> dict[str, Any]:
    """The sampling parameters of a strategy's requests, as hashed into every key (`dermlib.notes.wire.sent_params`
    says how each backend is sent them)."""
    return {"temperature": settings.temperature, "max_tokens": max_tokens_for(settings.max_tokens, strategy.name)}


def build_job(row: dict[str, Any], strategy: Strategy, backend: str, model: str, params: dict[str, Any],
              identity: dict[str, Any]) -> Job:
    """The request for one manifest row: its key covers the planned request; the job carries what is sent (for
    OpenAI the schema cut to its strict subset, `dermlib.notes.wire`), so no key depends on the wire."""
    sample_id = str(row["sample_id"])
    fields = metadata_fields(row)
    options = option_order(sample_id) if strategy.output == "json" else None
    messages = build_messages(strategy, fields, options)
    fmt = response_format(strategy, backend, options)
    seed = stable_hash(sample_id) % (2 ** 31)
    key = cache_key(backend=backend, model=model, strategy=strategy.name, template_version=strategy.template_version,
                    messages=messages, response_format=fmt, params=params, seed=seed, identity=identity)
    return Job(key, messages, sent_format(backend, fmt), seed,
               lambda content, finish: parse_response(strategy, fields, content, finish))


def plan_jobs(manifest: pd.DataFrame, strategy: Strategy, settings: NoteSettings, cache: NoteCache) -> Planned:
    """One job per selected row: its own option order (structured prompts) and its own seed (one generation per
    image); the key covers everything the note depends on (see `cache_key`)."""
    backend, model = llm_backend(settings)
    params = note_params(settings, strategy)
    rows, jobs = [], {}
    chosen = selected(manifest, settings.limit)
    identity = {"model_fingerprint": model_fingerprint(backend, model), "templates": strategy.digest}
    for row, take in zip(manifest.to_dict("records"), chosen):  # plain dicts: iterrows is 10x slower
        sample_id = str(row["sample_id"])
        if not take:
            rows.append({"sample_id": sample_id, "key": None, "status": "skipped"})
            continue
        job = build_job(row, strategy, backend, model, params, identity)
        rows.append({"sample_id": sample_id, "key": job.key, "status": "pending"})
        jobs.setdefault(job.key, job)
    frame = pd.DataFrame(rows, columns=["sample_id", "key", "status"])
    found = cache.get_many(list(jobs))
    # transient failures are never final; permanent ones are asked again only on request
    todo = {k: j for k, j in jobs.items() if k not in found or found[k]["status"] == "transient"
            or (settings.retry_failed and found[k]["status"] != "ok")}
    return Planned(frame, todo, found, backend, model, params)
