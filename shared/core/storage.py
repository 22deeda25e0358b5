"""Atomic writes and cross-process locks for everything under ``data/``.

Every file the servers write goes through :func:`atomic_write_bytes` (temp file in
the same folder, fsync, ``os.replace``), so a crash leaves either the old file or
the new one, never half of one. A writer killed mid-write (SIGKILL, power cut) leaves its
temporary file, named ``.tmp-<8 letters><suffix>`` (:data:`TEMP_PREFIX`), which housekeeping
deletes once it is an hour old (:func:`sweep_temp_files`).
Files made once and then only read (the instance's secret
key, the local Redis's password) go through :func:`create_once`, which is safe when several
processes start at the same moment.
"""
import contextlib
import errno
import fcntl
import json
import os
import sqlite3
import tempfile
import threading
import time
from pathlib import Path

#: The name of every temporary file :func:`atomic_write` makes starts with this.
TEMP_PREFIX = ".tmp-"
#: The sentence shown when the data folder's disk is full (HTTP 507).
DISK_FULL = ("The server's disk is full, so this could not be saved. Nothing was half-written: "
             "free some space (or ask the administrator to) and try again.")


#: Held while any thread of this process reads an array file (:func:`read_arrays`). numpy reads
#: every ``.npy`` header with ``ast.literal_eval``, and CPython 3.11 keeps the ast module's
#: recursion count in one global (python/cpython#106905): two threads parsing at once can fail
#: with "SystemError: AST constructor recursion depth mismatch". The servers run threads
#: (gunicorn ``--threads``), so their array reads take turns.
ARRAY_READ_LOCK = threading.Lock()


#: SQLite's primary result codes (the low byte of ``sqlite_errorcode``) for "database or disk
#: is full" (SQLITE_FULL) and "disk I/O error" (SQLITE_IOERR: what SQLite says when it cannot
#: create or grow its write-ahead log or shared-memory file on a full disk).
SQLITE_DISK_CODES = (13, 10)


def is_disk_full(exc):
    """True for the error a write gets when the disk or the user's quota is full: an ``OSError``
    ENOSPC, EDQUOT or EFBIG, or a ``sqlite3`` error with one of :data:`SQLITE_DISK_CODES` (also as the
    ``orig`` of the SQLAlchemy error that wraps it)."""
    exc = exc.orig if isinstance(getattr(exc, "orig", None), sqlite3.Error) else exc
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return code is not None and code & 0xFF in SQLITE_DISK_CODES
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _publish(path, write, put, suffix=""):
    """Fill a temporary file beside ``path`` with ``write(fh)`` (binary mode, mode 0600), flush and
    fsync it, then ``put(tmp, path)``; the temporary file is always removed afterwards (``put``
    renames or links it). On any error ``path`` is left as it was. The folder must exist."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        put(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def atomic_write(path, write, suffix=""):
    """Write ``path`` atomically: ``write(fh)`` fills a temporary file beside it (binary mode),
    which is flushed, fsynced and renamed over ``path``; on any error it is removed and
    ``path`` is left as it was. The folder must exist."""
    _publish(path, write, os.replace, suffix)


def atomic_write_bytes(path, data):
    """Write ``data`` (bytes) to ``path`` atomically; the folder must exist."""
    atomic_write(path, lambda fh: fh.write(data))


def atomic_write_json(path, obj):
    """Write ``obj`` as UTF-8 JSON to ``path`` atomically."""
    atomic_write_bytes(path, json.dumps(obj, ensure_ascii=False, indent=1).encode("utf-8"))


def create_once(path, make_bytes):
    """The contents of ``path``, which is created with ``make_bytes()`` (non-empty bytes) if it is missing.

    Any number of processes may call this at the same moment (three servers starting on an
    empty data folder): each writes its candidate to a temporary file beside ``path`` and
    publishes it with ``os.link``, which fails when ``path`` exists, so ``path`` appears once,
    complete (mode 0600), and every caller returns the same bytes, the winner's. An empty
    ``path`` (left by a crash of an older version, which created the file before writing it) is
    replaced under a lock, so that callers meeting it at once agree too. The folder must exist.
    """
    path = Path(path)
    while True:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            data = None
        if data:
            return data
        if data is None:
            with contextlib.suppress(FileExistsError):  # another process won: read its file
                _publish(path, lambda fh: fh.write(_non_empty(make_bytes())), os.link)
            continue
        with locked(path.parent / f".{path.name}.lock"):  # empty: repaired by one caller at a time
            if path.exists() and not path.read_bytes():
                atomic_write_bytes(path, _non_empty(make_bytes()))


def _non_empty(data):
    """``data`` (bytes), refusing empty bytes, which :func:`create_once` reads as "not written yet"."""
    if not data:
        raise ValueError("create_once: make_bytes() returned nothing")
    return data


def private_folder(path):
    """Create the folder ``path`` (and its parents) if needed and make it 0700 (its owner only); returns it."""
    path = Path(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o777 != 0o700:
        path.chmod(0o700)
    return path


def read_json(path, default=None):
    """Read a JSON file; ``default`` when it does not exist."""
    try:
        with open(path, "rb") as fh:
            return json.loads(fh.read().decode("utf-8"))
    except FileNotFoundError:
        return default


@contextlib.contextmanager
def locked(lock_path):
    """Hold an exclusive ``flock`` on ``lock_path`` (created if missing) for the block.

    Serialises read-modify-write cycles between threads and between the three
    server processes; the kernel drops the lock if the holder dies.
    """
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


#: A temporary file of an atomic write older than this (seconds) was left by a killed writer.
TEMP_MAX_AGE_S = 3600


def changed_at(path):
    """When ``path`` last changed (seconds since the epoch), or ``None`` when it cannot be read."""
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def sweep_temp_files(root, max_age_s=TEMP_MAX_AGE_S, now=None):
    """Delete the temporary files of atomic writes killed mid-write anywhere under ``root``: files
    named ``.tmp-*`` (:data:`TEMP_PREFIX`) last changed more than ``max_age_s``
    seconds ago (a write in progress is newer). Returns their paths relative to ``root``, sorted."""
    root, now = Path(root), time.time() if now is None else now
    deleted = []
    for folder, _dirs, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            mtime = changed_at(path) if name.startswith(TEMP_PREFIX) else None
            if mtime is not None and now - mtime > max_age_s and path.is_file():
                path.unlink(missing_ok=True)
                deleted.append(str(path.relative_to(root)))
    return sorted(deleted)


def file_identity(path):
    """What identifies the content of the file at ``path`` right now: ``(st_ino, st_mtime_ns, st_size)``,
    or ``None`` when there is none. Every write here is a new file renamed over the old one
    (:func:`atomic_write`), so a rewrite always changes it: the key of a per-process cache of a file."""
    try:
        st = Path(path).stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def read_arrays(path):
    """Read the array file at ``path`` whole, without pickles, one thread at a time (:data:`ARRAY_READ_LOCK`).

    Returns a ``{name: ndarray}`` dict for a ``.npz`` file, the one ndarray of a ``.npy`` file.
    Raises what ``numpy.load`` raises: ``OSError`` (missing, unreadable), ``ValueError`` (not an array file).
    """
    import numpy as np

    with ARRAY_READ_LOCK:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            return loaded
        with loaded:
            return {name: loaded[name] for name in loaded.files}
