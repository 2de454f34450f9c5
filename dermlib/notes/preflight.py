"""Pre-flight for a profile's notes, before any bulk work: `python -m dermlib.notes --profile paper --check`.

Per LLM strategy: one real request with the exact request (messages, schema as sent, parameters) through the same
engine as a run (not stored: the cache is only read), how many requests a run would make, and what they cost
(prompt tokens counted on a sample of the real prompts, with tiktoken when it is installed and has its encoding,
else at about 4 characters per token; answer tokens from the check's own answer; times the price in
`dermlib.notes.models`, synchronous and Batch API at half). Then when the configured model retires. `check_notes`
returns a `Preflight`; its `table()` is what the command prints and `failure()` the one message it exits 1 with.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

from dermlib.notes.cache import NoteCache
from dermlib.notes.engine import LLMOutageError, LLMRejectedError, Outcome, run_jobs, run_sync
from dermlib.notes.local_llm import model_fingerprint
from dermlib.notes.models import PRICES, retirement_notice, stop_advice
from dermlib.notes.plan import NoteSettings, Planned, api_key, build_job, llm_backend, note_params, plan_jobs
from dermlib.notes.profile import local_servers
from dermlib.notes.strategies import Combo, Strategy, get_strategy
from dermlib.notes.wire import sent_params
from dermlib.redact import redact_url

# stands in for a manifest row when there is none yet (a SynthDerm profile before notebook 01): the request's
# shape is exact, its metadata made up, and nothing is counted
STAND_IN = {"sample_id": "preflight/0", "label": "MEL", "label_raw": "melanoma", "age": 55, "sex": "female",
            "site": "posterior torso", "modality": "dermoscopic", "source": "preflight", "attributes": "{}"}
CHARS_PER_TOKEN = 4  # the fallback estimate without tiktoken (OpenAI's rule of thumb for English text)
MESSAGE_OVERHEAD = 4  # tokens each chat message adds around its content


@dataclass
class StrategyCheck:
    """One LLM strategy's check: the answer to its request, the requests a run would make and their cost."""

    strategy: str
    error: str | None = None  # None: the check request was answered with a valid note
    fix: str = ""  # how to fix what `error` says
    served_model: str | None = None
    system_fingerprint: str | None = None
    pending: int | None = None  # requests a run would make (None: no manifest to count on)
    prompt_tokens: float = 0.0  # per request, mean over the sampled prompts
    completion_tokens: float = 0.0  # per request: the check answer's, else the max tokens


@dataclass
class Preflight:
    """Everything `check_notes` found, for one profile."""

    backend: str
    model: str
    base_url: str
    token_method: str
    counted_on: str  # which manifest the counts come from
    notice: str | None = None  # when the model retires, and how to choose a successor
    checks: list[StrategyCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.error is None for c in self.checks)

    def cost(self, check: StrategyCheck, *, batch: bool = False) -> float | None:
        """USD for a strategy's pending requests (None: no price for a remote model, or nothing counted)."""
        if check.pending is None:
            return None
        if self.backend != "openai":
            return 0.0
        if self.model not in PRICES:
            return None
        price_in, price_out = PRICES[self.model]
        usd = check.pending * (check.prompt_tokens * price_in + check.completion_tokens * price_out) / 1e6
        return usd / 2 if batch else usd

    def frame(self) -> pd.DataFrame:
        """One row per strategy: the check, the served model, pending requests, tokens and cost."""
        rows = [{"strategy": c.strategy, "check": "ok" if c.error is None else "FAILED",
                 "served model (fingerprint)": f"{c.served_model or '-'} ({c.system_fingerprint or '-'})",
                 "pending": "-" if c.pending is None else f"{c.pending:,}",
                 "in tok/req": round(c.prompt_tokens), "out tok/req": round(c.completion_tokens),
                 "USD sync": _usd(self.cost(c)), "USD batch": _usd(self.cost(c, batch=True))} for c in self.checks]
        return pd.DataFrame(rows)

    def table(self) -> str:
        """The report the command prints."""
        lines = [f"notes pre-flight: backend {self.backend}, model {self.model!r} at {self.base_url}"]
        if self.notice:
            lines.append(f"  NOTE: {self.notice}")
        lines.append(self.frame().to_string(index=False))
        costs = [self.cost(c) for c in self.checks]
        if costs and all(c is not None for c in costs):
            total = sum(c for c in costs if c is not None)
            lines.append(f"total: about {_usd(total)} USD synchronous, {_usd(total / 2)} USD with the Batch API")
        elif self.backend == "openai" and self.model not in PRICES:
            lines.append(f"no price for {self.model!r} in dermlib.notes.models: cost not estimated")
        lines.append(f"pending counted on {self.counted_on}; prompt tokens: {self.token_method}; answer tokens: "
                     f"the check's own answer (its max tokens where it failed)")
        lines += [f"  {c.strategy}: {c.error}" for c in self.checks if c.error]
        return "\n".join(lines)

    def failure(self) -> str | None:
        """One message for the first failed check, with its fix (None when every check passed)."""
        failed = [c for c in self.checks if c.error]
        if not failed:
            return None
        first = failed[0]
        others = f" ({len(failed) - 1} more strategies failed too)" if len(failed) > 1 else ""
        fix = f" Fix: {first.fix}" if first.fix else ""
        return f"{first.strategy} with model {self.model!r} at {self.base_url}: {first.error}{others}.{fix}"


def _usd(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.2f}" if value >= 10 else f"{value:.4f}"


def token_counter(model: str) -> tuple[Callable[[str], int], str]:
    """(count tokens of a text, how): tiktoken's encoding for the model when installed and loadable (it downloads
    encodings once), else about CHARS_PER_TOKEN characters per token."""
    try:
        import tiktoken

        try:
            encoding = tiktoken.encoding_for_model(model)
        except KeyError:
            encoding = tiktoken.get_encoding("o200k_base")
        return (lambda text: len(encoding.encode(text))), f"tiktoken {encoding.name}"
    except Exception:  # not installed, or its encoding cannot be fetched offline: the documented fallback
        return (lambda text: math.ceil(len(text) / CHARS_PER_TOKEN)), \
            f"about {CHARS_PER_TOKEN} characters per token (tiktoken is not installed or has no encoding here)"


def request_tokens(job: Any, count: Callable[[str], int]) -> int:
    """The prompt tokens of one request: its messages, plus its schema (OpenAI counts it as input)."""
    tokens = sum(count(m["content"]) + MESSAGE_OVERHEAD for m in job.messages)
    if job.response_format is not None:
        tokens += count(json.dumps(job.response_format, ensure_ascii=False))
    return tokens


def llm_strategies(names: list[str]) -> list[Strategy]:
    """The base LLM strategies behind a list of note strategies (a combination's parts), each once, in order."""
    out: dict[str, Strategy] = {}
    for name in names:
        strat = get_strategy(name)
        for part in (strat.parts if isinstance(strat, Combo) else (name,)):
            base = get_strategy(part)
            if isinstance(base, Strategy) and base.uses_llm:
                out.setdefault(base.name, base)
    return list(out.values())


def check_manifest(cfg: dict[str, Any]) -> tuple[pd.DataFrame | None, str]:
    """The manifest to count on: `<work_dir>/manifest.parquet` when notebook 01 made it, else (real data) one
    built from the sources' metadata, else None (SynthDerm before its first run)."""
    from dermlib.workdir import WorkDir

    path = WorkDir.of(cfg).manifest
    if path.exists():
        from dermlib.data.schema import read_manifest

        return read_manifest(path), str(path)
    if cfg["data"]["sources"] == "synthderm":
        return None, "nothing (no manifest yet: counts and cost come after notebook 01)"
    from dermlib.data.sources import build_manifest

    manifest, _ = build_manifest(cfg)
    return manifest, f"the sources' metadata ({len(manifest):,} labelled rows; {path} is not made yet)"


def _check_one(job: Any, settings: NoteSettings, backend: str, model: str, params: dict[str, Any],
               key: str, what: str) -> Outcome | tuple[str, str]:
    """Send one request through the engine (retrying only what a run would retry); the outcome, or (why it
    stopped, the fix). Nothing is stored."""
    outcomes: list[Outcome] = []
    try:
        run_sync(lambda: run_jobs([job], base_url=settings.base_url, api_key=key, model=model,
                                  params=sent_params(backend, params), concurrency=1, timeout=settings.timeout,
                                  max_retries=min(settings.max_retries, 2), on_outcome=outcomes.append,
                                  desc=f"{what} check", backoff_base=settings.backoff_base, outage_after=1,
                                  stop_after=1))
    except LLMRejectedError as exc:
        error = exc.last or str(exc)
        return f"refused: {error}", stop_advice(error, model)
    except LLMOutageError as exc:
        return f"no answer: {exc}", "check notes.base_url and the server (or try again later)"
    return outcomes[0]


def check_notes(cfg: dict[str, Any], manifest: pd.DataFrame | None = None, *, sample: int = 200,
                today: dt.date | None = None) -> Preflight:
    """The pre-flight of a profile's notes (see the module's docs); raises ValueError for settings that cannot work
    at all (an unknown backend, no model, no API key)."""
    settings = NoteSettings.from_config(cfg)
    backend, model = llm_backend(settings)
    key = api_key(backend, settings)
    counted_on = "the given manifest"
    if manifest is None:
        manifest, counted_on = check_manifest(cfg)
    rows = manifest if manifest is not None and len(manifest) else pd.DataFrame([STAND_IN])  # none: a stand-in row
    count, method = token_counter(model)
    where = str(redact_url(settings.base_url) or "https://api.openai.com/v1")  # never the URL's credentials
    report = Preflight(backend, model, where, method, counted_on,
                       retirement_notice(model, today) if backend == "openai" else None)
    strategies = llm_strategies(list(cfg["notes"]["strategies"]))
    with local_servers(cfg, settings, len(strategies), "notes are to be checked") as asking:
        for strat in strategies:
            params = note_params(settings, strat)
            identity = {"model_fingerprint": model_fingerprint(backend, model), "templates": strat.digest}
            records = rows.head(max(1, sample)).to_dict("records")
            jobs = [build_job(r, strat, backend, model, params, identity) for r in records]
            pending = None
            if manifest is not None:
                with NoteCache(settings.cache_path) as cache:
                    plan: Planned = plan_jobs(manifest, strat, settings, cache)
                pending = len(plan.jobs)
                jobs = list(plan.jobs.values())[:sample] or jobs
            check = StrategyCheck(strat.name, pending=pending,
                                  prompt_tokens=sum(request_tokens(j, count) for j in jobs) / len(jobs))
            answer = _check_one(jobs[0], replace(asking, concurrency=1), backend, model, params, key, strat.name)
            if isinstance(answer, tuple):
                check.error, check.fix = answer
            else:
                check.served_model, check.system_fingerprint = answer.served_model, answer.system_fingerprint
                check.error = None if answer.status == "ok" else f"the check request failed: {answer.error}"
            if not isinstance(answer, tuple) and answer.status == "ok" and answer.completion_tokens:
                check.completion_tokens = answer.completion_tokens / answer.n_attempts
            else:
                check.completion_tokens = float(params["max_tokens"])
            report.checks.append(check)
    return report
