"""Issue 27, item 9: a cache this process cannot write (a read-only clone, a shared read-only mount, another user's
files) is read read-only: every read works, every write raises one clear error, nothing is made beside the file.

The committed caches are only ever copied (plain reads, or `mode=ro` URIs), never opened in place."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from dermlib.config import REPO_ROOT
from dermlib.notes import cache as cache_module
from dermlib.notes.cache import NoteCache, ReadOnlyCacheError

DATA = REPO_ROOT / "data"
NOBODY = 65534


def _committed(name: str) -> Path:
    source = DATA / name
    if not source.exists():
        pytest.skip(f"{source} is not here")
    return source


def _read(path: Path, sql: str) -> list[tuple]:
    """Rows of a copy nothing writes, read through a read-only URI (nothing opened for writing, nothing made)."""
    with sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True) as db:
        return db.execute(sql).fetchall()


KNOWN = ("SELECT key, note, (SELECT COUNT(*) FROM notes) FROM notes WHERE status = 'ok' AND note IS NOT NULL "
         "ORDER BY key LIMIT 1")  # a known note, and how many there are


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _writes(cache: NoteCache) -> dict[str, object]:
    """Every write of NoteCache, as a call to try."""
    return {"put": lambda: cache.put({"key": "new", "backend": "b", "model": "m", "strategy": "s",
                                      "template_version": "v", "seed": 0, "status": "ok", "note": "n", "raw": "r",
                                      "error": None, "n_attempts": 1, "prompt_tokens": 1, "completion_tokens": 1}),
            "claim": lambda: cache.claim("new", stale_after=60), "release": lambda: cache.release("new"),
            "add_batch": lambda: cache.add_batch({"batch_id": "b", "strategy": "s", "template_version": "v",
                                                  "model": "m", "status": "validating", "n_requests": 1,
                                                  "input_file_id": "f"}, ["new"]),
            "update_batch": lambda: cache.update_batch("b", status="completed"), "compact": cache.compact}


def test_a_cache_it_cannot_write_serves_every_read_and_refuses_every_write(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Read-only mode in this process (write access denied by a stand-in for the probe: root's permission bits do
    not bind): the reads of the demo cache, one clear error per write, no byte changed and no -wal/-shm made."""
    path = tmp_path / "notes.sqlite"
    shutil.copyfile(_committed("notes-cache-demo.sqlite"), path)
    (key, note, n), = _read(path, KNOWN)
    (strategy, model, n_ok), = _read(path, "SELECT strategy, model, COUNT(*) FROM notes WHERE status = 'ok' "
                                           "GROUP BY strategy, model ORDER BY strategy LIMIT 1")
    before = _sha(path)
    monkeypatch.setattr(cache_module, "_write_denied", lambda p: "simulated: no write access")
    with NoteCache(path) as cache:
        assert cache.read_only
        assert cache.get_many([key, "absent"])[key]["note"] == note and cache.count() == n
        assert cache.usage(strategy, model, exclude=set())[0] == n_ok
        assert cache.batches() == [] and cache.batch_keys(["b"]) == {}
        for name, write in _writes(cache).items():
            with pytest.raises(ReadOnlyCacheError, match="read-only") as err:
                write()
            assert str(path) in str(err.value) and "notes.cache_path" in str(err.value), name
            assert "make it and its folder writable" in str(err.value)
    assert _sha(path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["notes.sqlite"]


def test_a_read_only_cache_reads_the_notes_still_in_its_wal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A non-empty -wal (a writer still at work) is read too: mode=ro, not immutable, for that file."""
    path = tmp_path / "c.sqlite"
    with NoteCache(path) as cache:
        _writes(cache)["put"]()
    writer = sqlite3.connect(path, isolation_level=None)
    try:
        writer.execute("PRAGMA wal_autocheckpoint=0")
        writer.execute("UPDATE notes SET note = 'from the wal'")
        assert Path(f"{path}-wal").stat().st_size > 0
        monkeypatch.setattr(cache_module, "_write_denied", lambda p: "simulated")
        with NoteCache(path) as cache:
            assert cache.read_only and cache.get_many(["new"])["new"]["note"] == "from the wal"
    finally:
        writer.close()


def test_a_cache_that_can_neither_be_made_nor_read_names_the_file(tmp_path: Path) -> None:
    """A cache whose folder cannot be made (here a file stands in its way: true for root too)."""
    (tmp_path / "afile").write_text("")
    where = tmp_path / "afile" / "c.sqlite"
    with pytest.raises(ReadOnlyCacheError, match="does not exist and cannot be made here") as err:
        NoteCache(where)
    assert str(where) in str(err.value)


def test_a_writable_cache_is_opened_as_before(tmp_path: Path) -> None:
    """Write access (the folder probe leaves nothing behind): WAL, tables, writes as ever."""
    with NoteCache(tmp_path / "c.sqlite") as cache:
        assert not cache.read_only and cache.claim("new", stale_after=60)
        _writes(cache)["put"]()
        assert cache.count() == 1
        assert cache.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".probe")]


CHILD = textwrap.dedent("""
    import encodings.cp437, encodings.idna, json, os, sqlite3, sys  # codecs looked up later (zip names, host names)
    from pathlib import Path
    from dermlib.config import get_config
    from dermlib.data.schema import read_manifest
    from dermlib.notes import synthesize
    from dermlib.notes.cache import NoteCache, ReadOnlyCacheError
    from dermlib.notes.descriptions import class_descriptions, config_classes, generate_descriptions
    from dermlib.notes.local_llm import model_fingerprint
    from dermlib.notes.plan import NoteSettings, llm_backend
    from dermlib.notes.synth import count_pending
    from dermlib.train.features import read_note_store
    from tests.fakes.fake_openai import FakeOpenAI
    from tests.fakes.notes import llm_args, make_manifest

    a = json.loads(sys.argv[1])
    folder = Path(a["folder"])
    notes, described, store, walled = (folder / n for n in ("notes.sqlite", "descriptions.sqlite", "store.npz",
                                                             "walled.sqlite"))
    cfg = get_config("demo", {"notes.cache_path": str(notes), "eval.class_descriptions_cache": str(described)})
    settings = NoteSettings.from_config(cfg)
    manifest = read_manifest(a["manifest"]).head(6) if a["manifest"] else None
    strategies = ("M+P1", "P3")
    if manifest is not None:  # what a writable copy gives (read by root, before dropping)
        writable = NoteSettings.from_config(get_config("demo", {"notes.cache_path": a["writable"]}))
        reference = {s: synthesize(manifest, s, writable) for s in strategies}
    model_fingerprint(*llm_backend(settings))  # the model file's hash: read (and kept) before dropping privileges
    fake = FakeOpenAI().__enter__()  # the lazy imports of asking (the interpreter's files may be out of reach later)
    synthesize(make_manifest(2), "M+P1", llm_args(fake, Path(a["scratch"]) / "warm.sqlite"))
    asked = fake.counts["chat"]
    if os.getuid() == 0:  # drop root first: from here on permissions bind
        os.setgroups([])
        os.setgid(a["uid"])
        os.setuid(a["uid"])
    assert os.getuid() != 0 and os.geteuid() != 0
    for path in (notes, folder / "new-file"):
        try:
            open(path, "ab").close()
        except PermissionError:
            pass
        else:
            raise AssertionError(f"{path} is writable by uid {os.getuid()}: permissions do not bind")
    out = {"uid": os.getuid()}
    with NoteCache(notes) as cache:
        assert cache.read_only, cache.denied
        out["note"], out["count"] = cache.get_many([a["key"]])[a["key"]]["note"], cache.count()
        out["batches"] = cache.batches(pending=True)
        try:
            cache.put({**cache.get_many([a["key"]])[a["key"]], "key": "new"})
        except ReadOnlyCacheError as err:
            out["put_error"] = str(err)
    if manifest is not None:  # everything cached: the notes a writable copy gives, asking and writing nothing
        out["pending"] = {s: count_pending(manifest, s, settings) for s in strategies}
        out["synth"] = {}
        for s in strategies:
            got, want = synthesize(manifest, s, settings), reference[s]
            out["synth"][s] = {"ok": bool((got["status"] == "ok").all()), "cached": bool(got["cached"].all()),
                               "same": got.equals(want),
                               "rows": len(got)}
    try:  # a note it lacks: the error comes before any request (nothing paid for that could not be kept)
        synthesize(make_manifest(2), "M+P1", llm_args(fake, notes))
    except ReadOnlyCacheError as err:
        out["missing_error"], out["requests"] = str(err), fake.counts["chat"] - asked
    fake.__exit__(None, None, None)
    found = class_descriptions(cfg, config_classes(cfg), missing="skip")
    out["descriptions"] = sum(len(d) for by_class in found.values() for d in by_class.values())
    out["generated"] = generate_descriptions(cfg)
    out["store_rows"] = len(read_note_store(store).index)
    try:
        with NoteCache(walled) as cache:
            out["walled"] = cache.get_many(["new"])["new"]["note"]
    except ReadOnlyCacheError as err:
        out["walled_error"] = str(err)
    print("RESULT " + json.dumps(out))
""")


@pytest.fixture
def read_only_folder() -> Iterator[Path]:
    """A folder under /tmp (0o755 parents) that the test fills, then makes read-only (0o555, files 0o444); removed
    afterwards."""
    top = Path(tempfile.mkdtemp(prefix="dermlib-ro-", dir="/tmp"))
    top.chmod(0o755)
    folder = top / "ro"
    folder.mkdir()
    try:
        yield folder
    finally:
        folder.chmod(0o755)
        shutil.rmtree(top)


@pytest.mark.skipif(sys.platform != "linux", reason="uid switching and permission bits as on Linux")
def test_an_unprivileged_user_reads_a_read_only_clone_end_to_end(read_only_folder: Path, tmp_path: Path) -> None:
    """The real case: a child process that is not root (as root, it drops to uid/gid 65534 right after its imports:
    the interpreter may live where that user cannot reach, e.g. /root/.pyenv) reads read-only copies of the
    committed caches and note store: a known note, count(), the clear error of put, synthesize of cached demo rows
    (no request, no write), a missing note refused before any request, the class descriptions and the note store."""
    folder = read_only_folder
    for name, copy in (("notes-cache-demo.sqlite", "notes.sqlite"), ("class-descriptions-demo.sqlite",
                                                                    "descriptions.sqlite"),
                       ("note-features-demo.npz", "store.npz")):
        shutil.copyfile(_committed(name), folder / copy)
    (key, note, n), = _read(folder / "notes.sqlite", KNOWN)
    writable = tmp_path / "walled.sqlite"  # a cache with a writer still at work: its -wal is not empty
    with NoteCache(writable) as cache:
        _writes(cache)["put"]()
    writer = sqlite3.connect(writable, isolation_level=None)
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("UPDATE notes SET note = 'from the wal'")
    for suffix in ("", "-wal"):
        shutil.copyfile(f"{writable}{suffix}", folder / f"walled.sqlite{suffix}")
    writer.close()
    hashes = {p.name: _sha(p) for p in folder.iterdir()}
    for path in folder.iterdir():
        path.chmod(0o444)
    folder.chmod(0o555)
    if os.getuid() != 0 and os.access(folder / "notes.sqlite", os.W_OK):
        pytest.skip("not root, and chmod does not make the copies read-only for this user (a file system "
                    "without permission bits?)")
    manifest = REPO_ROOT / "work" / "demo" / "manifest.parquet"
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}  # no coverage file to write
    env.update(PYTHONPATH=str(REPO_ROOT), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HOME=str(folder))
    shutil.copyfile(folder / "notes.sqlite", tmp_path / "notes-rw.sqlite")  # the same bytes, left writable
    args = {"folder": str(folder), "key": key, "uid": NOBODY, "scratch": str(tmp_path),
            "writable": str(tmp_path / "notes-rw.sqlite"),
            "manifest": str(manifest) if manifest.exists() else None}
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True,
                          env=env, cwd=str(folder), timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert out["uid"] == (NOBODY if os.getuid() == 0 else os.getuid())
    assert out["note"] == note and out["count"] == n and out["batches"] == []
    assert "cannot store a note" in out["put_error"] and str(folder / "notes.sqlite") in out["put_error"]
    assert "notes.cache_path" in out["put_error"]
    assert "cannot claim" in out["missing_error"] and out["requests"] == 0
    assert out["descriptions"] > 0 and out["generated"]["asked"] == 0 and out["store_rows"] > 0
    walled = str(folder / "walled.sqlite")  # its -wal needs a -shm that cannot be made: an error naming the file
    assert "walled" not in out and f"{walled} cannot be written here" in out["walled_error"]
    assert "its -wal is not empty" in out["walled_error"] and f"cp {walled} {walled}-wal DIR/" in out["walled_error"]
    if manifest.exists():
        assert out["pending"] == {"M+P1": 0, "P3": 0}
        assert out["synth"] == {s: {"ok": True, "cached": True, "same": True, "rows": 6} for s in ("M+P1", "P3")}
    assert {p.name: _sha(p) for p in folder.iterdir()} == hashes  # not a byte changed, nothing made beside them
    if not manifest.exists():
        pytest.skip("synthesize not checked: no demo manifest in work/demo (run notebook 01 of the demo); "
                    "every other read was")
