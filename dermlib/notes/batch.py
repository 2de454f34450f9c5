"""OpenAI Batch API route for bulk synthesis (half the price, results within 24 h), into the same cache.

    settings = NoteSettings.from_config(cfg)                       # dermlib.notes.plan
    submitted = submit_batches(manifest, "M+P1", settings)          # JSONL chunks -> one batch each, ids recorded
    report = collect_batches(manifest, settings, timeout=0)        # any session later: poll -> results -> cache
    notes = synthesize(manifest, "M+P1", settings)                  # reads the cache

or from the command line: `python -m dermlib.notes --profile paper --batch submit`, later `--batch collect`
(`dermlib.notes.batch_cli`). Both must get the same manifest and settings (they define the cache keys).

- The requests are cut into input files under OpenAI's limits (`MAX_REQUESTS` requests, `MAX_BYTES` bytes each), one
  batch per file. Every batch id and the note keys it asks for are recorded in the cache file (`NoteCache.add_batch`)
  as soon as the batch exists, so a crashed or closed session loses none; notes in a pending batch are never
  submitted again.
- Collecting stores every answer a batch holds, whatever its end: completed, expired or cancelled batches (whose
  answers are billed) alike. Answers from the output file and failures from the error file go through the normal
  route's validation (`judge`, with its size bound) and `scrub`; a failed request is stored with its reason
  (bounded): HTTP 429/5xx as "transient" (asked again by the next run), others as "failed". Requests a batch never
  ran (expired, cancelled) are stored as nothing and counted as unanswered: the next submit asks them again.
"""

from __future__ import annotations

import io
import json
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import openai
import pandas as pd
import pydantic
from openai.types.chat import ChatCompletion

from dermlib.notes.cache import NoteCache
from dermlib.notes.engine import ANSWER_CHARS_PER_TOKEN, Job, estimate_cost, is_transient, judge, scrub
from dermlib.notes.plan import NoteSettings, Planned, api_key, llm_backend, plan_jobs
from dermlib.notes.strategies import Strategy, get_strategy
from dermlib.notes.synth import synthesize
from dermlib.notes.wire import answer_token_limit, sent_params

MAX_REQUESTS = 50_000  # OpenAI: "The file can contain up to 50,000 requests, and can be up to 200 MB in size."
MAX_BYTES = 200_000_000
RUNNING = ("validating", "in_progress", "finalizing", "cancelling")
NOT_RUN = ("batch_expired", "batch_cancelled")  # error-file codes of requests a batch ended before running
ERROR_CHARS = 500  # a stored failure's reason is cut to this many characters (after scrubbing)


class BatchError(RuntimeError):
    """A Batch API call failed; the message names the batch or chunk, what is recorded and what to do."""


@dataclass
class Submitted:
    """What `submit_batches` did for one strategy."""

    strategy: str
    batch_ids: list[str] = field(default_factory=list)
    n_requests: int = 0
    n_bytes: int = 0
    held: dict[str, int] = field(default_factory=dict)  # pending batch id -> its notes not submitted again


@dataclass
class Collected:
    """What `collect_batches` did: the batches ended and stored, those still running, counts over the stored ones."""

    collected: dict[str, str] = field(default_factory=dict)  # batch id -> its final status
    running: dict[str, str] = field(default_factory=dict)  # batch id -> its status now
    ok: int = 0
    failed: int = 0  # failed or transient: stored with the reason
    unanswered: int = 0  # never run (expired / cancelled batch, failed batch): nothing stored
    already: int = 0  # answers for notes another route stored ok meanwhile
    unmatched: int = 0  # answers matching no note of this manifest and settings
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    errors: Counter = field(default_factory=Counter)  # failure reason (up to its first ':') -> count
    problems: list[str] = field(default_factory=list)  # batch-level messages (a failed batch, unmatched answers)


def _base_strategy(strategy: str) -> Strategy:
    """The named LLM base strategy (the Batch route takes no templates and no combinations)."""
    strat = get_strategy(strategy)
    if not isinstance(strat, Strategy) or not strat.uses_llm:
        raise ValueError(f"the Batch route takes one LLM strategy (M+P1, M+P2 or P3), not {strategy!r}")
    return strat


def _client(settings: NoteSettings, secret: str) -> openai.OpenAI:
    """The SDK client of the settings (its own retries on for these few calls; uploads may take minutes)."""
    base_url = settings.base_url[0] if isinstance(settings.base_url, list) else settings.base_url
    return openai.OpenAI(base_url=base_url, api_key=secret, max_retries=3)


def _bounded(text: str, secret: str | None, limit: int = ERROR_CHARS) -> str:
    """A text scrubbed of the key, then cut to `limit` characters (in that order: no half key survives the cut)."""
    text = scrub(text, secret)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def request_line(job: Job, plan: Planned) -> str:
    """One JSONL line of a batch input file: the very request the normal route sends (first attempt's seed)."""
    body: dict[str, Any] = {"model": plan.model, "messages": job.messages, "seed": job.seed,
                            **sent_params(plan.backend, plan.params)}
    if job.response_format is not None:
        body["response_format"] = job.response_format
    return json.dumps({"custom_id": job.key, "method": "POST", "url": "/v1/chat/completions", "body": body},
                      ensure_ascii=False)


def chunk_requests(sizes: list[int], max_requests: int = MAX_REQUESTS, max_bytes: int = MAX_BYTES) -> list[range]:
    """Cut lines of these byte sizes (each written with a newline) into consecutive chunks of at most `max_requests`
    lines and `max_bytes` bytes; a single line over `max_bytes` is an error."""
    if max_requests < 1 or max_bytes < 1:
        raise ValueError(f"batch limits must be positive (max_requests={max_requests}, max_bytes={max_bytes})")
    chunks: list[range] = []
    start, used = 0, 0
    for i, size in enumerate(sizes):
        if size + 1 > max_bytes:
            raise ValueError(f"request {i} alone is {size + 1:,} bytes, over the input file limit of {max_bytes:,}")
        if i > start and (i - start >= max_requests or used + size + 1 > max_bytes):
            chunks.append(range(start, i))
            start, used = i, 0
        used += size + 1
    if start < len(sizes):
        chunks.append(range(start, len(sizes)))
    return chunks


def submit_batches(manifest: pd.DataFrame, strategy: str, settings: NoteSettings, *,
                   max_requests: int = MAX_REQUESTS, max_bytes: int = MAX_BYTES) -> Submitted:
    """Submit the strategy's missing notes (failed ones too with `retry_failed`) as batches of at most
    `max_requests` requests and `max_bytes` bytes, recording each in the cache; notes already in a pending batch
    are left out (`Submitted.held`)."""
    strat = _base_strategy(strategy)
    backend, _ = llm_backend(settings)
    secret = api_key(backend, settings)
    out = Submitted(strat.name)
    with NoteCache(settings.cache_path) as cache:
        plan = plan_jobs(manifest, strat, settings, cache)
        pending = cache.batch_keys([b["batch_id"] for b in cache.batches(pending=True)])
        out.held = dict(Counter(pending[k] for k in plan.jobs if k in pending))
        jobs = [job for key, job in plan.jobs.items() if key not in pending]
        if not jobs:
            return out
        cache.require_writable("submit a batch")  # before anything is uploaded or billed
        lines = [request_line(job, plan).encode() for job in jobs]
        chunks = chunk_requests([len(line) for line in lines], max_requests, max_bytes)
        client = _client(settings, secret)
        try:
            for n, chunk in enumerate(chunks, 1):
                data = b"".join(lines[i] + b"\n" for i in chunk)
                try:
                    upload = client.files.create(file=(f"dermlib-{strat.template}-{n}.jsonl", io.BytesIO(data)),
                                                 purpose="batch")
                    batch = client.batches.create(
                        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h",
                        metadata={"dermlib_strategy": strat.name, "template_version": strat.template_version})
                except openai.APIError as exc:
                    raise BatchError(
                        f"{strat.name}: submitting batch {n} of {len(chunks)} failed: {_bounded(str(exc), secret)}. "
                        f"The {len(out.batch_ids)} submitted before it are recorded in {cache.path}; run submit again "
                        "to submit the rest (notes in pending batches are never submitted twice)") from None
                try:
                    cache.add_batch({"batch_id": batch.id, "strategy": strat.name, "template_version":
                                     strat.template_version, "model": plan.model, "status": batch.status,
                                     "n_requests": len(chunk), "input_file_id": upload.id}, [jobs[i].key for i in chunk])
                except Exception as exc:
                    raise BatchError(f"{strat.name}: batch {batch.id} was created but could not be recorded in "
                                     f"{cache.path} ({exc}): cancel it (client.batches.cancel) before submitting "
                                     "again, or its notes are paid twice") from exc
                out.batch_ids.append(batch.id)
                out.n_requests += len(chunk)
                out.n_bytes += len(data)
        finally:
            client.close()
    return out


def _error_text(item: dict[str, Any]) -> str:
    """Why a batch request failed, as the error file (or a non-200 output line) says it."""
    response = item.get("response") or {}
    body = response.get("body") if isinstance(response.get("body"), dict) else {}
    error = body.get("error") if isinstance(body.get("error"), dict) else (item.get("error") or {})
    message = error.get("message") or error.get("code") or "no reason given"
    code = response.get("status_code")
    return f"HTTP {code} (batch request): {message}" if code else f"batch request failed: {error.get('code')}: {message}"


def item_row(item: dict[str, Any], job: Job, secret: str | None, max_chars: int | None) -> dict[str, Any]:
    """The cache columns for one line of a batch's output or error file (one the batch ran), validated and scrubbed
    as the normal route does (`judge`, `scrub`)."""
    response = item.get("response") or {}
    note = raw = None
    usage: dict[str, Any] = {}
    served: dict[str, str | None] = {"served_model": None, "system_fingerprint": None}
    if response.get("status_code") == 200:
        body = response.get("body")
        try:
            completion = ChatCompletion.model_validate(body)
        except pydantic.ValidationError as exc:
            error: str | None = f"bad response: not a chat completion ({exc.error_count()} problems)"
        else:
            usage = (body or {}).get("usage") or {}
            served = {"served_model": _short(completion.model),
                      "system_fingerprint": _short(completion.system_fingerprint)}
            note, raw, error = judge(job, completion, max_chars)
    else:
        error = _error_text(item)
    status = "ok" if error is None else ("transient" if is_transient(error) else "failed")
    return {"status": status, "note": scrub(note, secret) if note else None, "raw": scrub(raw, secret) if raw else raw,
            "error": _bounded(error, secret) if error else None, "n_attempts": 1,
            "prompt_tokens": int(usage.get("prompt_tokens") or 0),
            "completion_tokens": int(usage.get("completion_tokens") or 0),
            **{k: scrub(v, secret) if v else None for k, v in served.items()}}


def _short(value: Any) -> str | None:
    """A short identifier from an answer (None when absent or not text)."""
    return value[:200] if isinstance(value, str) and value else None


def _store(client: openai.OpenAI, batch: Any, record: dict[str, Any], plan: Planned, cache: NoteCache,
           secret: str, report: Collected) -> None:
    """Store every answer and failure of an ended batch, then mark it collected (not when answers match no note)."""
    batch_id = batch.id
    asked = set(cache.batch_keys([batch_id]))
    limit = answer_token_limit(plan.params)
    max_chars = limit * ANSWER_CHARS_PER_TOKEN if limit else None
    counts: Counter = Counter()
    answered: set[str] = set()
    for file_id in (batch.output_file_id, batch.error_file_id):
        if not file_id:
            continue
        for line in filter(None, (raw.strip() for raw in client.files.content(file_id).text.splitlines())):
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                counts["unmatched"] += 1
                continue
            key = str(item.get("custom_id"))
            if not item.get("response") and (item.get("error") or {}).get("code") in NOT_RUN:
                continue  # never run: unanswered
            job = plan.jobs.get(key)
            answered.add(key)
            if job is None:
                counts["already" if plan.found.get(key, {}).get("status") == "ok" else "unmatched"] += 1
                continue
            row = item_row(item, job, secret, max_chars)
            counts["ok" if row["status"] == "ok" else "failed"] += 1
            counts["prompt_tokens"] += row["prompt_tokens"]
            counts["completion_tokens"] += row["completion_tokens"]
            if row["error"]:
                report.errors[row["error"].split(":")[0]] += 1
            cache.put({"key": key, "backend": plan.backend, "model": plan.model, "strategy": record["strategy"],
                       "template_version": record["template_version"], "seed": job.seed, **row})
    counts["unanswered"] = len(asked - answered)
    for name in ("ok", "failed", "unanswered", "already", "unmatched", "prompt_tokens", "completion_tokens"):
        setattr(report, name, getattr(report, name) + counts[name])
    report.cost_usd += estimate_cost(record["model"], counts["prompt_tokens"], counts["completion_tokens"], batch=True)
    if batch.status == "failed":
        errors = "; ".join(f"{e.code}: {e.message}" + (f" (line {e.line})" if e.line else "")
                           for e in ((batch.errors.data or []) if batch.errors else [])[:3]) or "no reason given"
        report.problems.append(f"batch {batch_id} failed as a whole ({_bounded(errors, secret)}); its "
                               f"{record['n_requests']} requests were not run: fix that and run submit again")
    fields = {"status": batch.status, "output_file_id": batch.output_file_id, "error_file_id": batch.error_file_id,
              "summary": json.dumps(dict(counts))}
    if counts["unmatched"]:
        report.problems.append(
            f"batch {batch_id} ({record['strategy']}): {counts['unmatched']} of its answers are unreadable or match "
            "no note of this manifest and these settings, so they were not stored and the batch stays pending: run "
            "collect with the --manifest, --profile and --set values it was submitted with")
        cache.update_batch(batch_id, **fields)
        return
    cache.update_batch(batch_id, **fields, collected=time.time())
    report.collected[batch_id] = batch.status


def collect_batches(manifest: pd.DataFrame, settings: NoteSettings, *, strategies: list[str] | None = None,
                    poll_interval: float = 30.0, timeout: float | None = None) -> Collected:
    """Poll the cache's pending batches (of `strategies`, default all) every `poll_interval` s for up to `timeout` s
    (None: until all end; 0: look once), store each as it ends and mark it collected; `running` lists the rest."""
    backend, _ = llm_backend(settings)
    secret = api_key(backend, settings)
    report = Collected()
    with NoteCache(settings.cache_path) as cache:
        pending = [b for b in cache.batches(pending=True) if strategies is None or b["strategy"] in strategies]
        plans: dict[str, Planned] = {}
        start = time.monotonic()
        client = _client(settings, secret)
        try:
            while pending:
                waiting = []
                for record in pending:
                    batch_id = record["batch_id"]
                    try:
                        batch = client.batches.retrieve(batch_id)
                        if batch.status in RUNNING:
                            cache.update_batch(batch_id, status=batch.status)
                            waiting.append(record)
                            report.running[batch_id] = batch.status
                            continue
                        report.running.pop(batch_id, None)
                        if record["strategy"] not in plans:
                            plans[record["strategy"]] = plan_jobs(manifest, _base_strategy(record["strategy"]),
                                                                  replace(settings, retry_failed=True), cache)
                        _store(client, batch, record, plans[record["strategy"]], cache, secret, report)
                    except openai.APIError as exc:
                        raise BatchError(f"collecting batch {batch_id} failed: {_bounded(str(exc), secret)}. What was "
                                         f"stored is kept in {cache.path}; run collect again (with the notes.base_url "
                                         "and key the batch was submitted with)") from None
                pending = waiting
                if not pending or (timeout is not None and time.monotonic() - start + poll_interval > timeout):
                    break
                time.sleep(poll_interval)
        finally:
            client.close()
    return report


def synthesize_batch(manifest: pd.DataFrame, strategy: str, settings: NoteSettings, *, poll_interval: float = 30.0,
                     timeout: float | None = None) -> pd.DataFrame:
    """submit_batches + collect_batches + synthesize (which then asks only what no batch answered, at full price)."""
    submitted = submit_batches(manifest, strategy, settings)
    report = collect_batches(manifest, settings, strategies=[submitted.strategy], poll_interval=poll_interval,
                             timeout=timeout)
    if report.running:
        raise TimeoutError(f"batches {sorted(report.running)} still running after {timeout} s; they are recorded in "
                           f"{settings.cache_path}: collect them later with collect_batches or --batch collect")
    out = synthesize(manifest, strategy, replace(settings, max_retries=0, retry_failed=False))
    out.attrs["batch"] = {"batch_ids": submitted.batch_ids, "ok": report.ok, "failed": report.failed,
                          "unanswered": report.unanswered, "prompt_tokens": report.prompt_tokens,
                          "completion_tokens": report.completion_tokens, "cost_usd": report.cost_usd}
    return out
