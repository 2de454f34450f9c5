"""What an LLM's answer may hold once it is a note, and what no stored or raised text may hold.

`clean_text` is the normalisation of every answer (`dermlib.notes.engine.judge`), decided once:
- line breaks become `\\n` (`\\r\\n` and a lone `\\r` too); tab and newline are the only control characters kept:
  every other one (C0, DEL, C1: a NUL, a terminal escape `\\x1b[31m`, a bell) is removed;
- the bidirectional formatting characters (U+202A-U+202E embeddings and overrides, U+2066-U+2069 isolates,
  U+200E/U+200F/U+061C marks) and the byte-order mark U+FEFF are removed: a note reads in the order it is stored;
- the text is put in Unicode NFC (a decomposed `e` + U+0301 becomes `é`), so equal notes are equal strings;
- a lone surrogate (U+D800-U+DFFF, which a JSON escape can carry but no UTF-8 text can) cannot be cleaned: the
  answer is a failure with that reason, never a note.

`not_a_note` turns down a free-text answer (P3, class descriptions: JSON answers are checked by their schema) that
is a refusal or carries instruction-like text, by a short list of patterns (NOT_A_NOTE), each a phrase no clinical
note needs: "I'm sorry, but I can't help", "As an AI language model", "I cannot assist with that", "ignore (all)
previous instructions", "system prompt". The list is kept small on purpose: every ok note and class description
of the committed demo caches passes it (tests/notes/test_refusals_content.py). A note in another language or one
naming another diagnosis is not turned down (that is what the audit measures, `dermlib.notes.audit`).

`storable` makes any text writable as UTF-8 (a lone surrogate becomes the visible escape `\\ud800`), and
`mask_credentials` removes credentials a server echoes (HTTP Basic and Bearer values, a URL's user:password):
`dermlib.notes.engine.scrub` applies both to every text it passes.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata

from dermlib.redact import redact_text

BIDI_AND_BOM = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c\ufeff"
_REMOVED = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f" + BIDI_AND_BOM + "]")  # \t (09) and \n (0a) are kept
_SURROGATE = re.compile("[\ud800-\udfff]")
_BASIC = re.compile(r"\b(Basic)(\s+)([A-Za-z0-9+/]{4,}={0,2})(?![A-Za-z0-9+/=])")
_BEARER = re.compile(r"\b(Bearer)(\s+)([A-Za-z0-9._~+/=-]{8,})")


def clean_text(text: str) -> tuple[str, str | None]:
    """(the cleaned text, None), or (the text made storable, why it cannot be a note) for a lone surrogate. See the
    module's docs for the rules."""
    bad = _SURROGATE.search(text)
    if bad:
        return storable(text), (f"answer is not valid Unicode text: a lone surrogate U+{ord(bad.group()):04X} at "
                                f"character {bad.start()}")
    text = _REMOVED.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    return unicodedata.normalize("NFC", text), None


_APOS = "['\u2019]"  # a straight or a typographic apostrophe
_CANT = rf"(?:can(?:not|{_APOS}t)|am unable to|{_APOS}m unable to|won{_APOS}t|will not)"
NOT_A_NOTE: tuple[tuple[str, str], ...] = (  # (kind, pattern): matched case-insensitively, as whole words
    ("a refusal", rf"(?:I{_APOS}m|I am) sorry,? (?:but )?I {_CANT} (?:help|assist|provide|comply|create|generate|write"
                  rf"|fulfil+|complete|do)"),
    ("a refusal", r"as an (?:AI|artificial intelligence)(?: language)? (?:model|assistant)"),
    ("a refusal", rf"I(?:{_APOS}m| am) (?:just |only )?an AI(?: language model| assistant| model)?"),
    ("a refusal", rf"I {_CANT} (?:help|assist|comply) with (?:that|this|your request)"),
    ("a refusal", rf"I {_CANT} (?:fulfil+|complete) (?:that|this|your) request"),
    ("instruction-like text", r"(?:ignore|disregard|forget) (?:all |any )?(?:of )?(?:the |your |my )?(?:previous|prior"
                              r"|above|earlier|preceding) (?:instructions?|prompts?|messages?|directions?)"),
    ("instruction-like text", r"system prompt"),
)
_NOT_A_NOTE = [(kind, re.compile(rf"\b(?:{pattern})\b", re.IGNORECASE)) for kind, pattern in NOT_A_NOTE]


def not_a_note(text: str) -> str | None:
    """Why a free-text answer is no note (a refusal, instruction-like text: NOT_A_NOTE), quoting what matched;
    None for any other text."""
    for kind, regex in _NOT_A_NOTE:
        found = regex.search(text)
        if found:
            quoted = repr(found.group(0)[:80])
            return (f"refused: the answer is a refusal, not a note ({quoted})" if kind == "a refusal" else
                    f"not a note: the answer carries {kind} ({quoted})")
    return None


def storable(text: str) -> str:
    """`text` with any lone surrogate written as its escape (`\\ud800`): always encodable as UTF-8."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8") if _SURROGATE.search(text) else text


def _basic(match: re.Match[str]) -> str:
    """`Basic <base64 of user:password>` -> `Basic ***`; a word after "Basic" that is not such a value stays."""
    try:
        decoded = base64.b64decode(match.group(3), validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    looks_encoded = len(match.group(3)) >= 12 and not match.group(3).isalpha()  # cut short, yet no word of a note
    return f"{match.group(1)}{match.group(2)}***" if b":" in decoded or looks_encoded else match.group(0)


def _bearer(match: re.Match[str]) -> str:
    """`Bearer <token>` -> `Bearer ***` when the token looks like one (a digit or punctuation in it), not a word."""
    token = match.group(3)
    return f"{match.group(1)}{match.group(2)}***" if not token.isalpha() else match.group(0)


def mask_credentials(text: str) -> str:
    """`text` without the credentials an echoing server may return: HTTP Basic values (base64 of user:password),
    Bearer tokens and the user:password of any URL."""
    return redact_text(_BEARER.sub(_bearer, _BASIC.sub(_basic, text)))
