"""The LLM engine: `openai.AsyncOpenAI` against any OpenAI-compatible server, bounded concurrency, timeouts,
retries with exponential backoff + jitter that honour `Retry-After`, a progress bar (`dermlib.progress`: off in stored notebooks and logs), token and cost totals.

The client's own retries are off (`max_retries=0`); retries happen here so every attempt is counted.
The API key (and a base URL's user:password) only travels in the client; every text that is stored or raised (note,
raw answer, error) passes through `scrub` first. Answers become notes only as clean text
(`dermlib.notes.sanitize.clean_text`); one that cannot be cleaned (a lone surrogate, bytes that are not UTF-8) is a
permanent failure with its reason, like an invalid one.

Failure policy:
- *transient* failures (connection errors, timeouts, HTTP 429 and 5xx) are retried with backoff; a job whose
  last attempt failed so is returned with status "transient", which the cache never treats as final (a re-run
  asks again). A run that sees `outage_after` transient outcomes in a row stops early with LLMOutageError (one
  clear message; everything stored so far is kept).
- *permanent* failures (schema violations and invalid answers after every retry, refusals, HTTP 400/404/422,
  a 200 that is not a chat completion, answers over the size bound) get status "failed" with their reason and are
  asked again only on request (`retry_failed`).
- *refused requests* (HTTP 401/403, and HTTP 400/404/422 `stop_after` times in a row: a wrong or retired model, a
  schema or parameter the server rejects) stop the run at once (LLMAuthError, LLMRejectedError); nothing is stored
  for those requests, so a fixed re-run asks them again. A lone 400/404/422 among good answers is a failed note.
- an exception raised by dermlib's own code (a bug) propagates: it is never stored as a failed note.
Every attempt has an overall deadline (`timeout`): a server that drips its answer byte by byte still times out.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import json
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import openai
from openai.types.chat import ChatCompletion

from dermlib.notes.models import PRICES  # USD per 1M tokens (input, output), standard API; Batch: half
from dermlib.notes.sanitize import clean_text, mask_credentials, not_a_note, storable
from dermlib.notes.wire import answer_token_limit
from dermlib.progress import progress
from dermlib.redact import url_secrets

T = TypeVar("T")


class LLMRejectedError(RuntimeError):
    """The server refuses the requests themselves (a model it does not serve, a schema or parameter it rejects):
    the run stops at once and nothing is stored for the refused requests. `last`: the server's last answer."""

    last: str = ""


class LLMAuthError(LLMRejectedError):
    """The server refused the credentials (HTTP 401/403): no note can succeed, so the run stops."""


class LLMOutageError(RuntimeError):
    """Too many transient failures in a row (server down, unreachable, overloaded): the run stops early."""


TRANSIENT = ("timeout", "connection error", "HTTP 429", "HTTP 5")  # error prefixes that a later re-run retries
REJECTED = ("HTTP 400 (not retried)", "HTTP 404 (not retried)", "HTTP 422 (not retried)")  # the request itself
ANSWER_CHARS_PER_TOKEN = 16  # answers longer than max_tokens x this are refused (no token is that long)


def is_transient(error: str | None) -> bool:
    """Whether an error text is a transient failure (never final in the cache)."""
    return bool(error) and error.startswith(TRANSIENT)


@dataclass
class Job:
    """One note to generate: its cache key, the request, and how to turn an answer into a note."""

    key: str
    messages: list[dict[str, str]]
    response_format: dict[str, Any] | None
    seed: int
    parse: Callable[[str | None, str | None], tuple[str | None, str | None]]


@dataclass
class Outcome:
    """The result of one job after all its attempts."""

    key: str
    status: str  # ok | failed (permanent) | transient (asked again by the next run)
    note: str | None
    raw: str | None
    error: str | None
    n_attempts: int
    prompt_tokens: int
    completion_tokens: int
    served_model: str | None = None  # the answer's `model` (e.g. the snapshot behind an alias)
    system_fingerprint: str | None = None  # the answer's `system_fingerprint` (the serving configuration)

    @property
    def rejected(self) -> bool:
        """The server refused the request itself (HTTP 400/404/422), whatever the note."""
        return self.status == "failed" and bool(self.error) and self.error.startswith(REJECTED)


@dataclass
class EngineStats:
    """What a run did: HTTP calls, failures by kind, tokens, wall time."""

    calls: int = 0
    ok: int = 0
    failed: int = 0
    transient: int = 0
    elsewhere: int = 0  # jobs another process was generating at the same time (not asked twice)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    errors: Counter = field(default_factory=Counter)

    @property
    def notes_per_s(self) -> float:
        return (self.ok + self.failed + self.transient) / self.seconds if self.seconds > 0 else 0.0


def scrub(text: str, secret: str | Sequence[str] | None) -> str:
    """Remove secrets (the API key, a URL's password) from a text by exact match, mask any `sk-...` token, HTTP Basic
    and Bearer value and URL user:password (`dermlib.notes.sanitize.mask_credentials`), and make it storable (a
    lone surrogate becomes its escape). A short secret (a local server's "EMPTY" or "ollama") is replaced only where
    it stands as a whole word, so other words are never mangled."""
    for one in [secret] if isinstance(secret, str) or secret is None else secret:
        if not one:
            continue
        if len(one) >= 8:
            text = text.replace(one, "***")
        else:
            text = re.sub(rf"(?<![\w-]){re.escape(one)}(?![\w-])", "***", text)
    return storable(mask_credentials(re.sub(r"\bsk-[\w-]{4,}", "sk-***", text)))


def estimate_cost(model: str, prompt_tokens: int, completion_tokens: int, *, batch: bool = False) -> float:
    """Estimated USD for a model's token usage (0 for models without a known price, e.g. local ones)."""
    price_in, price_out = PRICES.get(model, (0.0, 0.0))
    cost = (prompt_tokens * price_in + completion_tokens * price_out) / 1e6
    return cost / 2 if batch else cost


def retry_after_seconds(exc: openai.APIStatusError) -> float | None:
    """The server's requested wait from `Retry-After` / `retry-after-ms` headers, if any."""
    headers = exc.response.headers
    if headers.get("retry-after-ms"):
        try:
            return float(headers["retry-after-ms"]) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time()) if when else None


def backoff_seconds(attempt: int, base: float, cap: float = 30.0) -> float:
    """Exponential backoff with jitter for retry number `attempt` (1, 2, ...)."""
    delay = min(cap, base * 2 ** (attempt - 1))
    return delay + random.uniform(0, delay)


async def _attempt(client: openai.AsyncOpenAI, job: Job, model: str, params: dict[str, Any],
                   attempt: int, deadline: float) -> tuple[Any, str | None, float | None]:
    """One HTTP call with an overall deadline; returns (completion or None, error, wait before the next try).
    Only protocol errors are caught: anything else is a bug in dermlib and propagates."""
    kwargs: dict[str, Any] = {"model": model, "messages": job.messages, "seed": job.seed + attempt, **params}
    if job.response_format is not None:
        kwargs["response_format"] = job.response_format
    try:
        completion = await asyncio.wait_for(client.chat.completions.create(**kwargs), deadline)
        if not isinstance(completion, ChatCompletion):  # a 200 whose body is not JSON: a wrong base_url or a proxy
            shown = str(completion)[:80].replace("\n", " ")
            return None, f"not a chat completion (HTTP 200 with {type(completion).__name__} {shown!r}): check base_url", -1.0
        return completion, None, None
    except asyncio.TimeoutError:
        return None, f"timeout: no complete answer within {deadline:g} s", None
    except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
        raise LLMAuthError(f"HTTP {exc.status_code}: the server rejected the API key") from None
    except openai.RateLimitError as exc:
        return None, "HTTP 429 rate limited", retry_after_seconds(exc)
    except openai.APITimeoutError:
        return None, "timeout", None
    except openai.APIConnectionError as exc:
        return None, f"connection error: {type(exc).__name__}", None
    except (openai.BadRequestError, openai.NotFoundError, openai.UnprocessableEntityError) as exc:
        return None, f"HTTP {exc.status_code} (not retried): {exc.message[:300]}", -1.0
    except openai.APIStatusError as exc:
        return None, f"HTTP {exc.status_code}: {exc.message[:200]}", retry_after_seconds(exc)
    except (json.JSONDecodeError, openai.APIResponseValidationError) as exc:  # a malformed body: retried
        return None, f"bad response: {type(exc).__name__}: {str(exc)[:200]}", None
    except UnicodeDecodeError as exc:  # bytes that are not UTF-8: retried, then a failed note (never a crash)
        return None, f"bad response: the answer is not valid UTF-8 ({exc.reason} at byte {exc.start})", None


def judge(job: Job, completion: ChatCompletion, max_chars: int | None = None) -> tuple[str | None, str | None, str | None]:
    """Turn a chat completion into (note, raw answer, error): refusals, non-text, oversized and invalid answers
    are errors. The answer and the note are cleaned text (`dermlib.notes.sanitize.clean_text`: NFC, no control
    characters but newline and tab, no bidi controls); one that cannot be cleaned (a lone surrogate) is an error.
    A free-text note (no response_format) that is a refusal or carries instruction-like text is an error too
    (`dermlib.notes.sanitize.not_a_note`); JSON answers are held to their schema instead."""
    if not completion.choices:
        return None, None, "answer without choices"
    choice = completion.choices[0]
    raw = choice.message.content
    refusal = getattr(choice.message, "refusal", None)
    if refusal:
        return None, None if raw is None else str(raw)[:2000], f"refused: {str(refusal)[:200]}"
    if raw is not None and not isinstance(raw, str):
        return None, None, f"answer content is {type(raw).__name__}, not text"
    if raw is not None and max_chars is not None and len(raw) > max_chars:
        return None, raw[:2000], f"answer of {len(raw)} characters is over the bound of {max_chars} (max_tokens x {ANSWER_CHARS_PER_TOKEN})"
    if raw is not None:
        raw, problem = clean_text(raw)
        if problem:
            return None, raw[:2000], problem
    note, error = job.parse(raw, choice.finish_reason)
    if note is not None and error is None:
        note, problem = clean_text(note)
        if problem:
            return None, raw, problem.replace("answer", "note", 1)
        problem = not_a_note(note) if job.response_format is None else None
        if problem:
            return None, raw, problem
    return note, raw, error


async def run_job(client: openai.AsyncOpenAI, job: Job, *, model: str, params: dict[str, Any], max_retries: int,
                  backoff_base: float, secret: str | Sequence[str] | None, stats: EngineStats,
                  timeout: float = 60.0) -> Outcome:
    """All attempts of one job: HTTP errors back off; invalid answers are re-asked at once with a new seed."""
    prompt_tokens = completion_tokens = 0
    error: str | None = None
    raw: str | None = None
    attempt = 0
    deadline = float(timeout)
    limit = answer_token_limit(params)
    max_chars = limit * ANSWER_CHARS_PER_TOKEN if limit else None
    served: dict[str, str | None] = {"served_model": None, "system_fingerprint": None}
    for attempt in range(max_retries + 1):
        stats.calls += 1
        completion, error, wait = await _attempt(client, job, model, params, attempt, deadline)
        if completion is not None:
            usage = completion.usage
            prompt_tokens += getattr(usage, "prompt_tokens", 0) or 0
            completion_tokens += getattr(usage, "completion_tokens", 0) or 0
            served = {"served_model": _text(completion.model),
                      "system_fingerprint": _text(completion.system_fingerprint)}
            note, raw, error = judge(job, completion, max_chars)
            if error is None:
                return Outcome(job.key, "ok", scrub(note, secret), scrub(raw or "", secret), None, attempt + 1,
                               prompt_tokens, completion_tokens, **served)
        error = scrub(error or "unknown error", secret)
        stats.errors[error.split(":")[0]] += 1
        if wait is not None and wait < 0:  # a request the server will never accept
            break
        if attempt < max_retries and completion is None:
            await asyncio.sleep(min(wait, 120.0) + random.uniform(0, 0.1) if wait is not None
                                else backoff_seconds(attempt + 1, backoff_base))
    raw = scrub(raw, secret) if raw else raw
    status = "transient" if is_transient(error) else "failed"
    return Outcome(job.key, status, None, raw, error, attempt + 1, prompt_tokens, completion_tokens, **served)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("s" if n != 1 else "")


def _text(value: Any) -> str | None:
    """A short identifier from an answer (None when absent or not text)."""
    return storable(value[:200]) if isinstance(value, str) and value else None


async def run_jobs(jobs: list[Job], *, base_url: str | list[str] | None, api_key: str, model: str,
                   params: dict[str, Any], concurrency: int, timeout: float, max_retries: int,
                   on_outcome: Callable[[Outcome], None], n_cached: int = 0, desc: str = "notes",
                   backoff_base: float = 0.5, outage_after: int = 10, stop_after: int = 3,
                   claim: Callable[[str], bool] | None = None) -> EngineStats:
    """Run jobs with at most `concurrency` in flight; `on_outcome` is called (and may commit) as each finishes.
    A list of base URLs (several local servers) spreads the jobs over them in turn. `claim(key)` returning False
    skips a job that another process is generating. `outage_after` transient outcomes in a row stop the run
    (LLMOutageError); `stop_after` refused requests (HTTP 400/404/422) in a row stop it too (LLMRejectedError),
    and those are never passed to `on_outcome`: refused requests are held back until a good answer shows that
    they were the notes' own failures."""
    stats = EngineStats()
    if not jobs:
        return stats
    semaphore = asyncio.Semaphore(max(1, concurrency))
    urls = base_url if isinstance(base_url, list) else [base_url]
    secrets = (api_key, *url_secrets(base_url))  # what a server may echo: scrubbed from every stored or raised text
    clients = [openai.AsyncOpenAI(base_url=url, api_key=api_key, timeout=timeout, max_retries=0) for url in urls]
    bar = progress(len(jobs) + n_cached, desc, initial=n_cached, unit="note", file=sys.stderr, ascii=True)
    start = time.perf_counter()

    in_a_row: dict[str, Any] = {"transient": 0, "last": "", "stopped": False}
    held: list[Outcome] = []  # refused requests in a row, not yet passed on

    def pass_on(outcome: Outcome) -> None:
        stats.ok += outcome.status == "ok"
        stats.failed += outcome.status == "failed"
        stats.transient += outcome.status == "transient"
        on_outcome(outcome)

    async def one(index: int, job: Job) -> None:
        async with semaphore:
            if in_a_row["stopped"]:  # woken by the slot of a task that just stopped the run: ask nothing more
                return
            if claim is not None and not claim(job.key):
                stats.elsewhere += 1
                bar.update(1)
                return
            try:
                outcome = await run_job(clients[index % len(clients)], job, model=model, params=params,
                                        max_retries=max_retries, backoff_base=backoff_base, secret=secrets,
                                        stats=stats, timeout=timeout)
            except LLMAuthError:
                in_a_row["stopped"] = True
                raise
            settle(outcome)

    def settle(outcome: Outcome) -> None:
        """Count an outcome, pass it on (or hold it back while refusals come in a row), and stop the run when
        refusals or transient failures in a row reach their bound."""
        in_a_row["transient"] = in_a_row["transient"] + 1 if outcome.status == "transient" else 0
        in_a_row["last"] = outcome.error or ""
        stats.prompt_tokens += outcome.prompt_tokens
        stats.completion_tokens += outcome.completion_tokens
        if outcome.rejected:
            held.append(outcome)
            if len(held) >= stop_after:
                in_a_row["stopped"] = True
                error = LLMRejectedError(f"{_count(len(held), 'request')} in a row refused by the server "
                                         f"(last: {outcome.error}); nothing was stored for them")
                error.last = outcome.error or ""
                raise error
        else:
            while held:
                pass_on(held.pop(0))
            pass_on(outcome)
        elapsed = time.perf_counter() - start
        bar.set_postfix(done=stats.ok, cached=n_cached, failed=stats.failed + stats.transient,
                        rate=f"{(stats.ok + stats.failed + stats.transient) / max(elapsed, 1e-9):.2f}/s",
                        refresh=False)
        bar.update(1)
        if in_a_row["transient"] >= outage_after:
            in_a_row["stopped"] = True
            raise LLMOutageError(f"{in_a_row['transient']} notes in a row failed with transient errors (last: "
                                 f"{in_a_row['last']}): the server looks down or overloaded. The {stats.ok} notes "
                                 f"made so far are stored; re-run when it is back to resume (transient failures "
                                 f"are asked again)")

    try:
        tasks = [asyncio.ensure_future(one(i, job)) for i, job in enumerate(jobs)]
        try:
            await asyncio.gather(*tasks)
        except BaseException as exc:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if isinstance(exc, LLMRejectedError):
                held.clear()  # a run refused as a whole stores nothing for the refused requests
            raise
        finally:
            while held:  # fewer than stop_after refused requests at the end: those notes' own failures
                pass_on(held.pop(0))
    finally:
        stats.seconds = time.perf_counter() - start
        bar.close()
        for client in clients:
            await client.close()
    return stats


def run_sync(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from sync code, also inside Jupyter (whose loop is already running)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())  # type: ignore[arg-type]
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()  # type: ignore[arg-type]
