"""What an LLM is asked for: the note settings of a profile (`NoteSettings`) and, per manifest row, its request
and cache key (`plan_jobs`). Shared by the normal route (`dermlib.notes.synth`) and the Batch route
(`dermlib.notes.batch`), so both fill and read the same cache keys."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd

from dermlib.config import REPO_ROOT
from dermlib.config_checks import config_problems, number
from dermlib.notes.cache import NoteCache
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
from dermlib.redact import host_of, redact_url, url_secrets, with_credentials

BACKENDS = ("openai", "vllm", "ollama", "llamacpp")
OPENAI_HOST = "api.openai.com"  # the one host OPENAI_API_KEY is sent to unless a setting names a key


def cache_path(cfg: dict[str, Any]) -> Path:
    """The profile's note cache: `notes.cache_path` with {work_dir} filled in; relative paths are under the repo."""
    path = Path(str(cfg["notes"]["cache_path"]).format(work_dir=cfg["work_dir"]))
    return path if path.is_absolute() else REPO_ROOT / path


@dataclass(frozen=True, repr=False)
class NoteSettings:
    """How notes are requested (the `notes` section of a config, see `dermlib.config`); the API key is never part
    of a config: it is given here, or read from the variable `api_key_env` names, or from OPENAI_API_KEY for
    OpenAI's own host only (`api_key`). `base_url` is the URL to connect to, credentials included; its repr shows
    neither them nor the key. Numbers are checked as the config checks them (`dermlib.config_checks`)."""

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
    api_key_env: str | None = None  # the environment variable whose key to send (to whatever host)

    def __post_init__(self) -> None:
        """The numbers in their ranges: one ValueError naming every bad one."""
        numbers = ("concurrency", "timeout", "max_retries", "outage_after", "temperature", "max_tokens", "limit",
                   "stop_after_permanent", "api_key_env")
        problems = config_problems({"notes": {name: getattr(self, name) for name in numbers}})
        needs = number(0)(self.backoff_base)
        if needs:
            problems.append(f"backoff_base={self.backoff_base!r}: must be {needs}")
        if problems:
            raise ValueError("\n".join(problems))

    def __repr__(self) -> str:
        """The settings without secrets: the URL's credentials and the key are masked."""
        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        shown["base_url"] = redact_url(self.base_url)
        shown["api_key"] = "***" if self.api_key else None
        return f"NoteSettings({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> NoteSettings:
        """The settings of a profile's config (cache path resolved with `cache_path`)."""
        n = cfg["notes"]
        return cls(backend=n["backend"], base_url=with_credentials(n["base_url"]), model=n["model"],
                   cache_path=cache_path(cfg), concurrency=n["concurrency"], timeout=n["timeout"],
                   max_retries=n["max_retries"], outage_after=n["outage_after"], temperature=n["temperature"],
                   max_tokens=n["max_tokens"], limit=n["limit"], stop_after_permanent=n.get("stop_after_permanent", 3),
                   api_key_env=n.get("api_key_env"))


@dataclass
class Planned:
    """The request for each row of an LLM strategy, and which keys the cache lacks."""

    frame: pd.DataFrame  # sample_id, key, status ("pending" or "skipped")
    jobs: dict[str, Job]  # key -> job, deduplicated; only those to ask for
    found: dict[str, dict[str, Any]]  # key -> cache row
    backend: str
    model: str
    params: dict[str, Any]  # temperature, max_tokens: sent with every request and part of every key
    fields: dict[str, dict[str, str]]  # key -> the metadata fields its note is rendered with (`render_answer`)


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


def to_openai(base_url: str | list[str] | None) -> bool:
    """Whether requests go to OpenAI's own API: every URL on api.openai.com (no base_url: the client's default,
    which $OPENAI_BASE_URL may point elsewhere)."""
    urls = base_url if isinstance(base_url, list) else [base_url]
    default = os.environ.get("OPENAI_BASE_URL") or f"https://{OPENAI_HOST}/v1"
    return all(host_of(url or default) == OPENAI_HOST for url in urls)


def _local(host: str) -> bool:
    """A loopback host (localhost, 127.0.0.0/8, ::1): nothing sent there crosses a network."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def api_key(backend: str, settings: NoteSettings) -> str:
    """The key to send: the settings' own; else the variable `api_key_env` names; else OPENAI_API_KEY, sent to
    OpenAI's own host only, never to another server (a local llama.cpp/vLLM/Ollama one gets a placeholder). Warns when
    a key or a URL's credentials would cross a network in plain http."""
    env = settings.api_key_env
    if settings.api_key:
        key = settings.api_key
    elif env:
        key = os.environ.get(env) or ""
        if not key:
            raise ValueError(f"no API key: notes.api_key_env names the environment variable {env}, which is not set")
    elif to_openai(settings.base_url):
        key = os.environ.get("OPENAI_API_KEY") or ""
        if not key and backend == "openai":
            raise ValueError("no API key: set the OPENAI_API_KEY environment variable (or pass api_key=...)")
    else:
        key = ""  # OPENAI_API_KEY is OpenAI's: another server gets it only where notes.api_key_env names it
    urls = settings.base_url if isinstance(settings.base_url, list) else [settings.base_url]
    for url in urls:
        exposed = bool(key) or bool(url_secrets(url))
        if exposed and url and url.lower().startswith("http://") and not _local(host_of(url)):
            warnings.warn(f"notes.base_url {redact_url(url)} is plain http to a host that is not this machine: the "
                          f"API key or the URL's credentials cross the network unencrypted (use https://)",
                          UserWarning, stacklevel=2)
    return key or "not-needed"  # local servers ignore the key, the client just needs a value


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
    key = request_key(backend=backend, model=model, model_fingerprint=identity["model_fingerprint"],
                      messages=messages, response_format=fmt, params=params, seed=seed)
    return Job(key, messages, sent_format(backend, fmt), seed,
               lambda content, finish: parse_response(strategy, fields, content, finish))


def request_key(*, backend: str, model: str, model_fingerprint: str, messages: Any, response_format: Any,
                params: dict[str, Any], seed: int) -> str:
    """A note's cache key: the sha256 of its request as the LLM receives it (backend, model and the local model
    file's hash, messages, schema, sampling parameters, seed) and of nothing rendered locally. A comment in a
    template, its [render] section or the M template change no key: the stored answers are rendered again when
    read (`dermlib.notes.synth`, `render_answer`), and nothing is bought twice."""
    payload = {"backend": backend, "model": model, "model_fingerprint": model_fingerprint, "messages": messages,
               "response_format": response_format, "params": params, "seed": seed}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def plan_jobs(manifest: pd.DataFrame, strategy: Strategy, settings: NoteSettings, cache: NoteCache) -> Planned:
    """One job per selected row: its own option order (structured prompts) and its own seed (one generation per
    image); the key covers everything the note depends on (see `cache_key`)."""
    backend, model = llm_backend(settings)
    params = note_params(settings, strategy)
    rows, jobs = [], {}
    chosen = selected(manifest, settings.limit)
    identity = {"model_fingerprint": model_fingerprint(backend, model)}
    rendered_with: dict[str, dict[str, str]] = {}
    for row, take in zip(manifest.to_dict("records"), chosen):  # plain dicts: iterrows is 10x slower
        sample_id = str(row["sample_id"])
        if not take:
            rows.append({"sample_id": sample_id, "key": None, "status": "skipped"})
            continue
        job = build_job(row, strategy, backend, model, params, identity)
        rows.append({"sample_id": sample_id, "key": job.key, "status": "pending"})
        jobs.setdefault(job.key, job)
        if strategy.output == "json" and job.key not in rendered_with:
            rendered_with[job.key] = metadata_fields(row)
    frame = pd.DataFrame(rows, columns=["sample_id", "key", "status"])
    found = cache.get_many(list(jobs))
    # transient failures are never final; permanent ones are asked again only on request
    todo = {k: j for k, j in jobs.items() if k not in found or found[k]["status"] == "transient"
            or (settings.retry_failed and found[k]["status"] != "ok")}
    return Planned(frame, todo, found, backend, model, params, rendered_with)
