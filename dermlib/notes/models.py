"""Facts about the OpenAI models dermlib may be pointed at: announced shutdown date, a suggested successor and the
price per million tokens, kept here by hand so a run can say, before it starts, when its model goes away and what
it costs (`dermlib.notes.preflight`). Local models (llama.cpp, vLLM, Ollama) are not listed and cost 0.

Sources, checked on 2026-12-07:
- shutdown dates: the pinned openai SDK (3.57.0), `openai/types/shared/chat_model.py`, "Deprecated values":
  "gpt-4.1", "gpt-4.1-mini", "gpt-4o", "gpt-4o-2024-11-20", "gpt-4o-2024-08-06", "gpt-4o-mini",
  "gpt-4o-mini-2024-07-18": "Announced shutdown date: 2027-01-14"; "gpt-5", "gpt-5-mini", "gpt-5-nano" (and their
  snapshots): 2026-12-11; "gpt-5.1", "gpt-5.4-nano": 2027-04-01; "gpt-4.1-nano", "gpt-4o-2024-05-13",
  "gpt-3.5-turbo", "gpt-4-turbo", "o4-mini", "o3-mini", "o1": 2026-10-23 (already shut down). The SDK points to
  https://developers.openai.com/api/docs/deprecations for the recommended replacements.
- successors: OpenAI's deprecations page as quoted in October 2026 (gpt-4o-mini, gpt-4.1-mini -> gpt-6-luna;
  gpt-4o, gpt-4.1 -> gpt-6.1-sol). Neither name is in the pinned SDK's model list: confirm on that page, and run
  `python -m dermlib.notes --profile paper --set notes.model=<successor> --check` before any bulk run.
- prices (USD per 1M input / output tokens, standard tier; the Batch API costs half): OpenAI's pricing page as
  quoted in 2026 (gpt-4o-mini 0.15 / 0.60, gpt-4o 2.50 / 10.00, gpt-4.1 2.00 / 8.00, gpt-4.1-mini 0.40 / 1.60,
  gpt-5.4-mini 0.75 / 4.50, gpt-5.4 2.50 / 15.00). A model without a price here gets no estimate: the pre-flight says "cost not estimated".
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

DEPRECATIONS_URL = "https://developers.openai.com/api/docs/deprecations"


@dataclass(frozen=True)
class ModelFacts:
    """One model: its announced shutdown (None: none announced), a suggested successor and its price."""

    shutdown: dt.date | None
    successor: str | None
    price_in: float | None  # USD per 1M input tokens (standard API)
    price_out: float | None  # USD per 1M output tokens


_JAN_2027 = dt.date(2027, 1, 14)
MODELS: dict[str, ModelFacts] = {
    "gpt-4o-mini": ModelFacts(_JAN_2027, "gpt-6-luna", 0.15, 0.60),
    "gpt-4o-mini-2024-07-18": ModelFacts(_JAN_2027, "gpt-6-luna", 0.15, 0.60),  # the paper's model, pinned
    "gpt-4o": ModelFacts(_JAN_2027, "gpt-6.1-sol", 2.50, 10.00),
    "gpt-4o-2024-08-06": ModelFacts(_JAN_2027, "gpt-6.1-sol", 2.50, 10.00),
    "gpt-4o-2024-11-20": ModelFacts(_JAN_2027, "gpt-6.1-sol", 2.50, 10.00),
    "gpt-4.1": ModelFacts(_JAN_2027, "gpt-6.1-sol", 2.00, 8.00),
    "gpt-4.1-mini": ModelFacts(_JAN_2027, "gpt-6-luna", 0.40, 1.60),
    "gpt-4.1-mini-2025-04-14": ModelFacts(_JAN_2027, "gpt-6-luna", 0.40, 1.60),
    "gpt-5.4-mini": ModelFacts(None, None, 0.75, 4.50),
    "gpt-5.4-mini-2026-03-17": ModelFacts(None, None, 0.75, 4.50),
    "gpt-5.4": ModelFacts(None, None, 2.50, 15.00),
    # shutting down within days of this table: listed for the warning, not priced
    **{name: ModelFacts(dt.date(2026, 12, 11), None, None, None)
       for name in ("gpt-5", "gpt-5-mini", "gpt-5-nano", "gpt-5-2025-08-07", "gpt-5-mini-2025-08-07",
                    "gpt-5-nano-2025-08-07")},
}
# Shut down before today: no price (never estimated as if usable), only the date, for a clear message.
RETIRED: dict[str, dt.date] = {
    name: dt.date(2026, 10, 23) for name in ("gpt-4.1-nano", "gpt-4.1-nano-2025-04-14", "gpt-4o-2024-05-13",
                                             "gpt-3.5-turbo", "gpt-4-turbo", "gpt-4", "o1", "o3-mini", "o4-mini")
}
PAPER_MODEL = "gpt-4o-mini-2024-07-18"  # the snapshot behind the alias the paper used ("gpt-4o-mini")

PRICES: dict[str, tuple[float, float]] = {name: (f.price_in, f.price_out) for name, f in MODELS.items()
                                          if f.price_in is not None and f.price_out is not None}


def shutdown_date(model: str) -> dt.date | None:
    """The announced shutdown of a model (None: none known here)."""
    facts = MODELS.get(model)
    return facts.shutdown if facts else RETIRED.get(model)


def _successor(model: str) -> str:
    facts = MODELS.get(model)
    return f"OpenAI suggests {facts.successor}; see {DEPRECATIONS_URL}" if facts and facts.successor else \
        f"see {DEPRECATIONS_URL}"


def retirement_notice(model: str, today: dt.date | None = None) -> str | None:
    """One sentence on when `model` goes away and what to do, or None when no shutdown is known."""
    today = today or dt.date.today()
    when = shutdown_date(model)
    if when is None:
        return None
    how = (f"choose a successor with --set notes.model=<name> ({_successor(model)}): its notes differ from the "
           f"paper's, so every note is asked anew and the results are no longer the paper's")
    if when <= today:
        return f"{model} was shut down by OpenAI on {when.isoformat()}: {how}."
    left = (when - today).days
    return f"{model} shuts down on {when.isoformat()} ({left} days from {today.isoformat()}); then {how}."


def stop_advice(error: str, model: str) -> str:
    """How to fix a run stopped by requests the server refuses (HTTP 400/401/403/404/422), from the error text."""
    code = re.search(r"HTTP (\d{3})", error)
    status = code.group(1) if code else ""
    if status == "404" or ("model" in error.lower() and "not exist" in error.lower()):
        when = shutdown_date(model)
        shut = f" ({model} has an announced shutdown on {when.isoformat()})" if when else ""
        return (f"the server does not serve model {model!r}{shut}: check the name (notes.model) and your account's "
                f"access to it, or choose another with --set notes.model=<name> ({_successor(model)}); another "
                f"model's notes differ from the paper's.")
    if status in ("401", "403"):
        return "check OPENAI_API_KEY (and that the key's project may use this model)."
    return ("the server rejects the request itself (its schema, or a parameter such as temperature or the token "
            "limit that some models refuse): `python -m dermlib.notes --profile <profile> --check` shows the exact "
            "answer; then change the model (--set notes.model=...) or the parameter.")
