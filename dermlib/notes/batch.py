"""OpenAI Batch API route for bulk synthesis (half the price, results within 24 h), into the same cache.

    settings = NoteSettings.from_config(cfg)                 # dermlib.notes.plan
    batch_id = submit_batch(manifest, "M+P1", settings)       # JSONL upload -> batch
    collect_batch(batch_id, manifest, "M+P1", settings)       # poll -> results -> cache
    notes = synthesize(manifest, "M+P1", settings)            # reads the cache

Both calls must get the same manifest and settings (they define the cache keys). Answers that fail validation
are stored as failures; `synthesize` with `retry_failed=True` re-asks them through the normal route.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import replace
from typing import Any

import openai
import pandas as pd
from openai.types.chat import ChatCompletion

from dermlib.notes.cache import NoteCache
from dermlib.notes.engine import estimate_cost, judge, scrub
from dermlib.notes.strategies import Strategy, get_strategy
from dermlib.notes.plan import NoteSettings, Planned, api_key, llm_backend, plan_jobs
from dermlib.notes.synth import synthesize
from dermlib.notes.wire import sent_params

TERMINAL = ("completed", "failed", "expired", "cancelled")


def _base_strategy(strategy: str) -> Strategy:
    strat = get_strategy(strategy)
    if not isinstance(strat, Strategy) or not strat.uses_llm:
        raise ValueError(f"the Batch route takes one LLM strategy (M+P1, M+P2 or P3), not {strategy!r}")
    return strat


def submit_batch(manifest: pd.DataFrame, strategy: str, settings: NoteSettings) -> str | None:
    """Upload the missing notes' requests as JSONL and create a batch; returns its id (None if nothing is missing)."""
    strat = _base_strategy(strategy)
    with NoteCache(settings.cache_path) as cache:
        plan = plan_jobs(manifest, strat, settings, cache)
    if not plan.jobs:
        return None
    lines = []
    for key, job in plan.jobs.items():
        body: dict[str, Any] = {"model": plan.model, "messages": job.messages, "seed": job.seed,
                                **sent_params(plan.backend, plan.params)}
        if job.response_format is not None:
            body["response_format"] = job.response_format
        lines.append(json.dumps({"custom_id": key, "method": "POST", "url": "/v1/chat/completions", "body": body}))
    secret = api_key(plan.backend, settings)
    client = openai.OpenAI(base_url=settings.base_url, api_key=secret, max_retries=3)
    try:
        upload = client.files.create(file=(f"dermlib-{strat.template}.jsonl", io.BytesIO("\n".join(lines).encode())),
                                     purpose="batch")
        batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h",
                                      metadata={"dermlib_strategy": strat.name, "template_version": strat.template_version})
    except openai.APIError as exc:
        raise RuntimeError(f"Batch submission failed: {scrub(str(exc), secret)}") from None
    finally:
        client.close()
    return batch.id


def collect_batch(batch_id: str, manifest: pd.DataFrame, strategy: str, settings: NoteSettings, *,
                  poll_interval: float = 30.0, timeout: float | None = None) -> dict[str, Any]:
    """Poll a batch until it ends, then store every answer (validated like the normal route) in the cache."""
    backend, model = llm_backend(settings)
    secret = api_key(backend, settings)
    client = openai.OpenAI(base_url=settings.base_url, api_key=secret, max_retries=3)
    start = time.monotonic()
    try:
        batch = client.batches.retrieve(batch_id)
        while batch.status not in TERMINAL:
            if timeout is not None and time.monotonic() - start > timeout:
                raise TimeoutError(f"batch {batch_id} still {batch.status} after {timeout:.0f} s; call collect_batch again later")
            time.sleep(poll_interval)
            batch = client.batches.retrieve(batch_id)
        if batch.status != "completed" or not batch.output_file_id:
            raise RuntimeError(f"batch {batch_id} ended with status {batch.status!r}; nothing was stored")
        text = client.files.content(batch.output_file_id).text
    except openai.APIError as exc:
        raise RuntimeError(f"Batch retrieval failed: {scrub(str(exc), secret)}") from None
    finally:
        client.close()
    stats = {"ok": 0, "failed": 0, "prompt_tokens": 0, "completion_tokens": 0}
    strat = _base_strategy(strategy)
    with NoteCache(settings.cache_path) as cache:
        plan: Planned = plan_jobs(manifest, strat, replace(settings, retry_failed=True), cache)
        for line in filter(None, (raw.strip() for raw in text.splitlines())):
            item = json.loads(line)
            job = plan.jobs.get(item["custom_id"])
            if job is None:
                continue  # already stored, or from other settings
            response = item.get("response") or {}
            note = raw = None
            usage, served = {}, {}
            if response.get("status_code") == 200:
                completion = ChatCompletion.model_validate(response["body"])
                usage = response["body"].get("usage") or {}
                served = {"served_model": completion.model or None,
                          "system_fingerprint": completion.system_fingerprint or None}
                note, raw, error = judge(job, completion)
            else:
                error = scrub(f"batch item failed: HTTP {response.get('status_code')} {item.get('error')}", secret)
            status = "ok" if error is None else "failed"
            stats[status] += 1
            stats["prompt_tokens"] += usage.get("prompt_tokens", 0)
            stats["completion_tokens"] += usage.get("completion_tokens", 0)
            cache.put({"key": job.key, "backend": backend, "model": model, "strategy": strat.name,
                       "template_version": strat.template_version, "seed": job.seed, "status": status, "note": note,
                       "raw": None if status == "ok" else raw, "error": error, "n_attempts": 1,
                       "prompt_tokens": usage.get("prompt_tokens", 0),
                       "completion_tokens": usage.get("completion_tokens", 0), **served})
    stats["cost_usd"] = estimate_cost(model, stats["prompt_tokens"], stats["completion_tokens"], batch=True)
    return stats


def synthesize_batch(manifest: pd.DataFrame, strategy: str, settings: NoteSettings, *, poll_interval: float = 30.0,
                     timeout: float | None = None) -> pd.DataFrame:
    """submit_batch + collect_batch + synthesize (which then only reads the cache)."""
    batch_id = submit_batch(manifest, strategy, settings)
    stats = None
    if batch_id is not None:
        stats = collect_batch(batch_id, manifest, strategy, settings, poll_interval=poll_interval, timeout=timeout)
    out = synthesize(manifest, strategy, replace(settings, max_retries=0, retry_failed=False))
    out.attrs["batch"] = {"batch_id": batch_id, **(stats or {})}
    return out
