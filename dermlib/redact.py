"""Credentials in a URL (`http://user:pass@host/v1`) stay in memory: every URL that is shown or stored (a config, a
run's config.json, an executed notebook, an error message) goes through `redact_url`, which writes `***` in place
of the user and password.

`dermlib.config.get_config` keeps only the redacted `notes.base_url` in the config (`hold_url`); the full URL is
held in this process's environment (`CREDENTIALS_ENV`, inherited by the notebook kernels a pipeline starts, never
written to a file) and put back only where a client connects (`with_credentials`, used by
`dermlib.notes.plan.NoteSettings.from_config`). This module imports nothing of dermlib's.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any
from urllib.parse import unquote, urlsplit

CREDENTIALS_ENV = "DERMLIB_URL_CREDENTIALS"  # JSON {redacted URL: full URL}, this process and its children only
MASK = "***"
# scheme://userinfo@ (the userinfo may hold a percent-encoded or even a bare '@': the last '@' before the path ends it)
_USERINFO = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)([^/?#\s]*)@")


def redact_text(text: str) -> str:
    """`text` with the userinfo of every URL in it replaced by `***` (`http://***@host/v1`)."""
    return _USERINFO.sub(lambda m: m.group(0) if m.group(2) in ("", MASK) else f"{m.group(1)}{MASK}@", text)


def redact_url(url: Any) -> Any:
    """A URL (or a list of them, or None) as it may be shown or stored: without user and password."""
    if isinstance(url, list):
        return [redact_url(u) for u in url]
    return redact_text(url) if isinstance(url, str) else url


def redact_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """Config overrides as they may be shown or stored (a notebook's parameters, a scratch folder's name)."""
    return {key: redact_url(value) for key, value in overrides.items()}


def url_secrets(url: Any) -> list[str]:
    """The user:password, password and their decoded forms in a URL (or list of URLs): what `scrub` removes."""
    found: list[str] = []
    for one in url if isinstance(url, list) else [url]:
        if not isinstance(one, str):
            continue
        for match in _USERINFO.finditer(one):
            userinfo = match.group(2)
            if not userinfo or userinfo == MASK:
                continue
            password = userinfo.partition(":")[2]
            found += [userinfo, unquote(userinfo), password, unquote(password)]
    return [s for s in dict.fromkeys(found) if s]


def _held() -> dict[str, str]:
    try:
        held = json.loads(os.environ.get(CREDENTIALS_ENV) or "{}")
    except json.JSONDecodeError:
        return {}
    return held if isinstance(held, dict) else {}


def hold_url(url: Any) -> Any:
    """The redacted URL to keep in a config; a URL with credentials is held in memory (this process's environment,
    inherited by its children) under its redacted form, for `with_credentials`."""
    if not isinstance(url, str):
        return url
    redacted = redact_text(url)
    if redacted != url:
        os.environ[CREDENTIALS_ENV] = json.dumps({**_held(), redacted: url})
    return redacted


def with_credentials(url: Any) -> Any:
    """The URL to connect to: a redacted URL held by `hold_url` gets its credentials back; a `***@` whose credentials
    are not held (another process's) is dropped, so no made-up user is sent."""
    if isinstance(url, list):
        return [with_credentials(u) for u in url]
    if not isinstance(url, str) or f"{MASK}@" not in url:
        return url
    return _held().get(url) or url.replace(f"{MASK}@", "", 1)


def host_of(url: str) -> str:
    """The host name of a URL, lower case ('' when it has none)."""
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""
