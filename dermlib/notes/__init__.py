"""Synthetic clinical notes: the paper's four strategies (M, M+P1, M+P2, P3) and their combinations, generated
through any OpenAI-compatible server with a durable SQLite cache, plus a hallucination audit; and dermlib's
controls (D, M+G, M+Gs: templates, never paper strategies; `dermlib.notes.controls`).

Public API: STRATEGIES, CONTROLS, NoteSettings, synthesize, synthesize_profile, generate_descriptions (the class descriptions
of zero-shot evaluation), audit, audit_cached, audit_summary, load_notes, save_notes.
Failure policy (transient failures are never final, an outage stops the run early, permanent failures are asked
again only on request, bugs are raised and never stored): see `dermlib.notes.engine`.
"""

from dermlib.notes.audit import audit, audit_cached, audit_summary
from dermlib.notes.descriptions import generate_descriptions
from dermlib.notes.plan import NoteSettings
from dermlib.notes.profile import synthesize_profile
from dermlib.notes.store import load_notes, save_notes
from dermlib.notes.strategies import CONTROLS, STRATEGIES, get_strategy
from dermlib.notes.synth import synthesize

__all__ = ["CONTROLS", "STRATEGIES", "NoteSettings", "audit", "audit_cached", "audit_summary", "generate_descriptions",
           "get_strategy", "load_notes", "save_notes", "synthesize", "synthesize_profile"]
