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

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> NoteSettings:
        """The settings of a profile's config (cache path resolved with `cache_path`)."""
        n = cfg["notes"]
        return cls(backend=n["backend"], base_url=n["base_url"], model=n["model"], cache_path=cache_path(cfg),
                   concurrency=n["concurrency"], timeout=n["timeout"], max_retries=n["max_retries"],
                   outage_after=n["outage_after"], temperature=n["temperature"], max_tokens=n["max_tokens"],
                   limit=n["limit"])


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


def plan_jobs(manifest: pd.DataFrame, strategy: Strategy, settings: NoteSettings, cache: NoteCache) -> Planned:
    """One job per selected row: its own option order (structured prompts) and its own seed (one generation per
    image); the key covers everything the note depends on (see `cache_key`)."""
    backend, model = llm_backend(settings)
    params = {"temperature": settings.temperature, "max_tokens": max_tokens_for(settings.max_tokens, strategy.name)}
    rows, jobs = [], {}
    chosen = selected(manifest, settings.limit)
    identity = {"model_fingerprint": model_fingerprint(backend, model), "templates": strategy.digest}
    for row, take in zip(manifest.to_dict("records"), chosen):  # plain dicts: iterrows is 10x slower
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
            or (settings.retry_failed and found[k]["status"] != "ok")}
    return Planned(frame, todo, found, backend, model, params)
