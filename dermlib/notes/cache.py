"""Durable note cache: one SQLite file (WAL), one row per generated note, committed as each note arrives.

A note's key (`dermlib.notes.plan.request_key`) is a sha256 over what the LLM receives and who answers: backend,
model alias and (for the local model) the model file's hash, the rendered prompt and schema, generation parameters
and the sample's seed. So another prompt, model file or parameter never reuses an old note, while what is rendered
locally (the M note, a [render] section, comments) changes no key: the raw answer is kept beside every note and
rendered again when read. (Class descriptions keep `cache_key`, which also covers their template files' digests.) No API key or header is ever stored.

Beside each answer: the `model` and `system_fingerprint` the server reported (`ANSWER_COLUMNS`, NULL for rows
written before they were kept, and for servers that send none). They are added to an older file by the first
write, never by opening it, so a committed cache that is only read stays byte for byte as it is; no key changes.

The OpenAI Batch route (`dermlib.notes.batch`) records its batches beside the notes: `batches` (one row per batch:
what it holds, its files, its last status, when it was collected) and `batch_requests` (which note keys each batch
asks for). Both are made by the first batch written (IF NOT EXISTS), never by opening a file; no note row changes.

A cache this process cannot write (a read-only file or folder, a read-only file system, another user's clone) is
opened read-only (`NoteCache.read_only`): every read works, every write raises `ReadOnlyCacheError` naming the file
and the fix, and nothing beside the file is made (no -wal, no -shm), so a run whose notes are all cached needs no
write access.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

_SCHEMA = """
CREATE TABLE IF NOT EXISTS notes (
    key TEXT PRIMARY KEY,
    backend TEXT NOT NULL,
    model TEXT NOT NULL,
    strategy TEXT NOT NULL,
    template_version TEXT NOT NULL,
    seed INTEGER NOT NULL,
    status TEXT NOT NULL,              -- ok | failed (permanent) | transient (asked again by the next run)
    note TEXT,                          -- the rendered note (NULL when failed)
    raw TEXT,                           -- the model's last answer, as returned
    error TEXT,
    n_attempts INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    created REAL NOT NULL
)
"""
_CLAIMS = """
CREATE TABLE IF NOT EXISTS claims (
    key TEXT PRIMARY KEY,               -- a note some process is generating right now
    owner TEXT NOT NULL,                -- host:pid:tag of that process
    since REAL NOT NULL
)
"""
_BATCHES = """
CREATE TABLE IF NOT EXISTS batches (
    batch_id TEXT PRIMARY KEY,          -- the OpenAI batch id
    strategy TEXT NOT NULL,
    template_version TEXT NOT NULL,
    model TEXT NOT NULL,
    created REAL NOT NULL,
    status TEXT NOT NULL,               -- the batch's last status seen (validating ... completed | expired | ...)
    n_requests INTEGER NOT NULL,
    input_file_id TEXT NOT NULL,
    output_file_id TEXT,
    error_file_id TEXT,
    collected REAL,                     -- when its results were stored (NULL: pending)
    summary TEXT                        -- JSON counts of the collection (ok, failed, unanswered, tokens)
)
"""
_BATCH_REQUESTS = """
CREATE TABLE IF NOT EXISTS batch_requests (
    batch_id TEXT NOT NULL,
    key TEXT NOT NULL,                  -- a note key (notes.key) the batch asks for
    PRIMARY KEY (batch_id, key)
)
"""
BATCH_COLUMNS = ["batch_id", "strategy", "template_version", "model", "created", "status", "n_requests",
                 "input_file_id", "output_file_id", "error_file_id", "collected", "summary"]
COLUMNS = ["key", "backend", "model", "strategy", "template_version", "seed", "status", "note", "raw", "error",
           "n_attempts", "prompt_tokens", "completion_tokens", "created"]
# what the server said it answered with (added later: a migration adds them to older files on their first write)
ANSWER_COLUMNS = ["served_model", "system_fingerprint"]


def cache_key(*, backend: str, model: str, strategy: str, template_version: str, messages: Any,
              response_format: Any, params: dict[str, Any], seed: int, identity: dict[str, Any] | None = None) -> str:
    """The sha256 hex digest identifying one generation request (`identity`: model fingerprint, template hashes)."""
    payload = {"backend": backend, "model": model, "strategy": strategy, "template_version": template_version,
               "messages": messages, "response_format": response_format, "params": params, "seed": seed,
               "identity": identity or {}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _alive(owner: str) -> bool:
    """Whether the process named host:pid:tag still runs (a claim from another host is trusted until stale)."""
    host, pid, _ = (owner.rsplit(":", 2) + ["", ""])[:3]
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ReadOnlyCacheError(PermissionError):
    """A write to a cache opened read-only (`NoteCache.read_only`): the message names the file and the fix."""


def _write_denied(path: Path) -> str | None:
    """Why this process cannot write the cache at `path`, or None when it can. The folder is tried (a probe file
    made and removed at once: a read-only file system or folder fails it, for root too); the file and its -wal/-shm
    are checked with os.access, which is exact for them (root may write any file of a writable file system) and,
    unlike opening them, never closes a descriptor of the database (that would drop this process's SQLite locks)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        return f"its folder {path.parent} cannot be written: {err.strerror or err}"
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if name.exists() and not os.access(name, os.W_OK):
            return f"{name.name} is not writable by this user"
    return None


class NoteCache:
    """A SQLite note store; use as a context manager or call close(). Read-only where it cannot be written."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.denied = _write_denied(self.path)
        self.read_only = self.denied is not None
        if self.denied is not None:
            self.conn = self._open_read_only(self.denied)
            self._migrated = True
            return
        self.conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self._use_wal()
        self.conn.execute("PRAGMA synchronous=NORMAL")
        existing = self.conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name='notes'").fetchone()
        if existing is None:
            self.conn.execute(_SCHEMA)
            self._add_answer_columns()
        self.conn.execute(_CLAIMS)
        self._migrated = existing is None

    def _open_read_only(self, why: str) -> sqlite3.Connection:
        """A read-only connection (immutable: no lock, no -shm, unless a non-empty -wal holds pages still to read),
        checked to hold the notes table; else ReadOnlyCacheError naming the file."""
        if not self.path.is_file():
            raise ReadOnlyCacheError(f"note cache {self.path} does not exist and cannot be made here ({why}): point "
                                     f"the run at a writable place (--set notes.cache_path=...) or make it writable")
        wal = Path(f"{self.path}-wal")
        pending = wal.exists() and wal.stat().st_size > 0
        uri = f"file:{quote(str(self.path.absolute()))}?mode=ro{'' if pending else '&immutable=1'}"
        conn = sqlite3.connect(uri, uri=True, timeout=30.0, isolation_level=None, check_same_thread=False)
        try:
            found = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='notes'").fetchone()
        except sqlite3.Error as err:
            conn.close()
            raise ReadOnlyCacheError(f"note cache {self.path} cannot be written here ({why}) and cannot be read "
                                     f"read-only either ({err}{'; its -wal is not empty' if pending else ''}): "
                                     f"{self._fix(pending)}") from err
        if found is None:
            conn.close()
            raise ReadOnlyCacheError(f"{self.path} is not a note cache (no notes table) and cannot be written here "
                                     f"({why})")
        return conn

    def _fix(self, wal: bool = False) -> str:
        """The way out for a read-only cache (`wal`: its -wal holds notes too, copied with it)."""
        files = f"{self.path} {self.path}-wal" if wal else str(self.path)
        return (f"copy it somewhere writable (cp {files} DIR/) and --set notes.cache_path=DIR/{self.path.name} "
                f"(eval.class_descriptions_cache=... for class descriptions), or make it and its folder writable")

    def require_writable(self, what: str) -> None:
        """Raise ReadOnlyCacheError (naming the file, why and the fix) when this cache was opened read-only."""
        if self.read_only:
            raise ReadOnlyCacheError(f"cannot {what}: note cache {self.path} is read-only here ({self.denied}); "
                                     f"every note it holds is read, but nothing can be stored: {self._fix()}")

    def _use_wal(self) -> None:
        """Switch the file to WAL; a second process opening a new cache at the same moment finds it switched
        (changing the journal mode needs a lock that the busy timeout does not wait for, so wait here)."""
        for _ in range(100):
            if self.conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
                return
            try:
                self.conn.execute("PRAGMA journal_mode=WAL")
            except sqlite3.OperationalError as err:
                if "locked" not in str(err):
                    raise
                time.sleep(0.05)
        raise sqlite3.OperationalError(f"{self.path}: could not switch the note cache to WAL (locked by another process)")

    def _columns(self) -> list[str]:
        """The notes table's columns that this file has (older files lack ANSWER_COLUMNS)."""
        have = {row[1] for row in self.conn.execute("PRAGMA table_info(notes)")}
        return COLUMNS + [c for c in ANSWER_COLUMNS if c in have]

    def _add_answer_columns(self) -> None:
        """The migration: add ANSWER_COLUMNS (NULL in every existing row); keys and other columns are untouched."""
        have = {row[1] for row in self.conn.execute("PRAGMA table_info(notes)")}
        for column in ANSWER_COLUMNS:
            if column not in have:
                try:
                    self.conn.execute(f"ALTER TABLE notes ADD COLUMN {column} TEXT")
                except sqlite3.OperationalError as err:  # another process added it a moment ago
                    if "duplicate column" not in str(err):
                        raise

    def __enter__(self) -> NoteCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Drop this connection's claims (an interrupted run leaves none behind) and close it (SQLite folds the
        WAL back into the file when the last connection closes). Read-only: only closes."""
        if self.read_only:
            self.conn.close()
            return
        try:
            self.conn.execute("DELETE FROM claims WHERE owner = ?", (self.owner,))
        finally:
            self.conn.close()

    def get_many(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        """The stored rows for the keys that are present (ANSWER_COLUMNS None where the file has none yet)."""
        found: dict[str, dict[str, Any]] = {}
        unique = list(dict.fromkeys(keys))
        columns = self._columns()
        for start in range(0, len(unique), 500):
            chunk = unique[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self.conn.execute(f"SELECT {', '.join(columns)} FROM notes WHERE key IN ({marks})", chunk):
                found[row[0]] = {**dict.fromkeys(ANSWER_COLUMNS), **dict(zip(columns, row))}
        return found

    def put(self, row: dict[str, Any]) -> None:
        """Store one result and commit it at once (an `ok` row is never replaced by a failure); the first write to
        an older file adds ANSWER_COLUMNS."""
        self.require_writable("store a note")
        if not self._migrated:
            self._add_answer_columns()
            self._migrated = True
        columns = COLUMNS + ANSWER_COLUMNS
        values = {**row, "created": row.get("created", time.time())}
        updated = ["status", "note", "raw", "error", "n_attempts", "prompt_tokens", "completion_tokens", "created",
                   *ANSWER_COLUMNS]
        self.conn.execute(
            f"INSERT INTO notes ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
            f"ON CONFLICT(key) DO UPDATE SET {', '.join(f'{c}=excluded.{c}' for c in updated)} "
            "WHERE notes.status != 'ok'",
            [values.get(c) for c in columns],
        )

    def claim(self, key: str, stale_after: float) -> bool:
        """Take the right to generate `key`: False when another live process holds a claim younger than
        `stale_after` seconds or the note is already stored ok (two processes on one cache never pay twice)."""
        self.require_writable("claim a note to ask for")
        now = time.time()
        with self.conn:  # one transaction: check and take atomically
            self.conn.execute("BEGIN IMMEDIATE")
            if self.conn.execute("SELECT 1 FROM notes WHERE key = ? AND status = 'ok'", (key,)).fetchone():
                return False
            held = self.conn.execute("SELECT owner, since FROM claims WHERE key = ?", (key,)).fetchone()
            if held and held[0] != self.owner and now - held[1] < stale_after and _alive(held[0]):
                return False
            self.conn.execute("INSERT OR REPLACE INTO claims (key, owner, since) VALUES (?, ?, ?)",
                              (key, self.owner, now))
        return True

    def release(self, key: str) -> None:
        """Drop this process's claim on `key` (after its result is stored)."""
        self.require_writable("release a claim")
        self.conn.execute("DELETE FROM claims WHERE key = ? AND owner = ?", (key, self.owner))

    def count(self, status: str | None = None) -> int:
        """Number of stored notes (optionally with one status)."""
        if status is None:
            return self.conn.execute("SELECT COUNT(*) FROM notes").fetchone()[0]
        return self.conn.execute("SELECT COUNT(*) FROM notes WHERE status = ?", (status,)).fetchone()[0]

    def usage(self, strategy: str, model: str, exclude: set[str]) -> tuple[int, int, int]:
        """(notes, prompt tokens, completion tokens) of the ok notes of `strategy` from `model` whose key is not
        in `exclude`: notes no current request asks for any more (an edited template, another setting)."""
        rows = self.conn.execute("SELECT key, prompt_tokens, completion_tokens FROM notes WHERE strategy = ? AND "
                                 "model = ? AND status = 'ok'", (strategy, model)).fetchall()
        kept = [(p, c) for key, p, c in rows if key not in exclude]
        return len(kept), sum(p for p, _ in kept), sum(c for _, c in kept)

    def _has_batches(self) -> bool:
        """Whether this file has the batch tables (made by the first batch written)."""
        found = self.conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='batches'").fetchone()
        return found is not None

    def add_batch(self, row: dict[str, Any], keys: list[str]) -> None:
        """Record a submitted batch (`BATCH_COLUMNS`) and the note keys it asks for, in one transaction."""
        self.require_writable("record a batch")
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute(_BATCHES)
            self.conn.execute(_BATCH_REQUESTS)
            values = {"created": time.time(), **row}
            marks = ", ".join("?" * len(BATCH_COLUMNS))
            self.conn.execute(f"INSERT INTO batches ({', '.join(BATCH_COLUMNS)}) VALUES ({marks})",
                              [values.get(c) for c in BATCH_COLUMNS])
            self.conn.executemany("INSERT OR IGNORE INTO batch_requests (batch_id, key) VALUES (?, ?)",
                                  [(row["batch_id"], k) for k in keys])

    def update_batch(self, batch_id: str, **fields: Any) -> None:
        """Set some columns of a recorded batch (status, output_file_id, error_file_id, collected, summary)."""
        self.require_writable("update a batch")
        unknown = set(fields) - {"status", "output_file_id", "error_file_id", "collected", "summary"}
        if unknown:
            raise ValueError(f"not a batch column that changes: {sorted(unknown)}")
        sets = ", ".join(f"{c} = ?" for c in fields)
        self.conn.execute(f"UPDATE batches SET {sets} WHERE batch_id = ?", [*fields.values(), batch_id])

    def batches(self, *, pending: bool = False) -> list[dict[str, Any]]:
        """The recorded batches, oldest first (`pending`: only those not collected yet); [] for a file without any."""
        if not self._has_batches():
            return []
        where = " WHERE collected IS NULL" if pending else ""
        rows = self.conn.execute(f"SELECT {', '.join(BATCH_COLUMNS)} FROM batches{where} ORDER BY created, batch_id")
        return [dict(zip(BATCH_COLUMNS, row)) for row in rows]

    def batch_keys(self, batch_ids: list[str]) -> dict[str, str]:
        """note key -> batch id, for the keys the given batches ask for."""
        found: dict[str, str] = {}
        if not batch_ids or not self._has_batches():
            return found
        marks = ",".join("?" * len(batch_ids))
        for batch_id, key in self.conn.execute(
                f"SELECT batch_id, key FROM batch_requests WHERE batch_id IN ({marks})", batch_ids):
            found[key] = batch_id
        return found

    def compact(self) -> None:
        """Fold the WAL into the file and VACUUM it (before committing a cache file to git). Only this process's
        claims and those of processes that are gone are dropped: another live process keeps what it is asking."""
        self.require_writable("compact it")
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        gone = [owner for (owner,) in self.conn.execute("SELECT DISTINCT owner FROM claims")
                if owner == self.owner or not _alive(owner)]
        self.conn.executemany("DELETE FROM claims WHERE owner = ?", [(owner,) for owner in gone])
        self.conn.execute("VACUUM")
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
