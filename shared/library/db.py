"""The library's database: one SQLAlchemy engine per URL per process, made on first use.

The URL is the ``LIBRARY_DB_URL`` setting; empty (the default) means SQLite in
``DATA_DIR/instance/library.sqlite3`` (:func:`url`), so a Postgres URL can replace it later
without a change here. SQLite is opened in WAL mode (the three servers and the queue workers
read while one writes), with a 10 s busy timeout and foreign keys on. No engine is made at
import time: :func:`engine` builds it the first time a URL is asked for and keeps it.

A write that fails because the disk is full (SQLite ``SQLITE_FULL``/``SQLITE_IOERR``, see
:func:`shared.core.storage.is_disk_full`) is raised as the 507 :class:`UserError`
:data:`shared.core.storage.DISK_FULL` by :func:`disk_full_as_507`.
"""
import contextlib
import threading
from pathlib import Path

from shared.core.errors import UserError
from shared.core.storage import DISK_FULL, is_disk_full, private_folder

#: The SQLite file of the library (under ``DATA_DIR/instance/``) when ``LIBRARY_DB_URL`` is empty.
SQLITE_FILE = "library.sqlite3"

_engines = {}
_lock = threading.Lock()


def url(data_dir, setting=""):
    """The database URL: ``setting`` (``LIBRARY_DB_URL``) when given, else SQLite under ``data_dir/instance``."""
    if setting:
        return setting
    return f"sqlite:///{private_folder(Path(data_dir) / 'instance') / SQLITE_FILE}"


def _sqlite_pragmas(dbapi_connection, _record):
    """Each new SQLite connection: WAL, a busy timeout, foreign keys (``ON DELETE CASCADE``)."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def engine(db_url):
    """The process's one engine for ``db_url`` (made on the first call; thread-safe)."""
    with _lock:
        made = _engines.get(db_url)
        if made is None:
            import sqlalchemy

            made = sqlalchemy.create_engine(db_url, future=True)
            if made.dialect.name == "sqlite":
                sqlalchemy.event.listen(made, "connect", _sqlite_pragmas)
            _engines[db_url] = made
    return made


def forget(db_url=None):
    """Dispose of the engine for ``db_url`` (all engines when ``None``): tests that remove a data folder."""
    with _lock:
        for key in [db_url] if db_url else list(_engines):
            made = _engines.pop(key, None)
            if made is not None:
                made.dispose()


@contextlib.contextmanager
def disk_full_as_507():
    """Run the block; a database or file error of a full disk becomes the 507 :class:`UserError`."""
    from sqlalchemy.exc import DBAPIError

    try:
        yield
    except DBAPIError as exc:
        if is_disk_full(exc.orig):
            raise UserError(DISK_FULL, 507) from exc
        raise
    except OSError as exc:
        if is_disk_full(exc):
            raise UserError(DISK_FULL, 507) from exc
        raise
