"""The project's databases (accounts, the media library): one SQLAlchemy engine per URL per process.

A database's URL is its setting (``LIBRARY_DB_URL``) or, when that is empty (the default), SQLite in
a file under ``DATA_DIR/instance/`` (:func:`url`: ``accounts.sqlite3``, ``library.sqlite3``), so a
Postgres URL can replace it later without a change here. SQLite is opened in WAL mode (the three
servers and the queue workers read while one writes), with a 10 s busy timeout and foreign keys
on. No engine is made at import time: :func:`engine` builds it the first time a URL is asked for
and keeps it. :func:`write_transaction` is a transaction that takes the write lock first, for a
read that decides a write (on SQLite ``BEGIN IMMEDIATE``).

A write that fails because the disk is full (SQLite ``SQLITE_FULL``/``SQLITE_IOERR``, see
:func:`shared.core.storage.is_disk_full`) is raised as the 507 :class:`UserError`
:data:`shared.core.storage.DISK_FULL` by :func:`disk_full_as_507`.
"""
import contextlib
import threading
from pathlib import Path

from shared.core.errors import UserError
from shared.core.storage import DISK_FULL, is_disk_full, private_folder

#: The SQLite files (under ``DATA_DIR/instance/``) of the databases whose URL setting is empty.
ACCOUNTS_FILE, LIBRARY_FILE = "accounts.sqlite3", "library.sqlite3"

_engines = {}
_lock = threading.Lock()


def url(data_dir, setting="", file=LIBRARY_FILE):
    """The database URL: ``setting`` (e.g. ``LIBRARY_DB_URL``) when given, else SQLite in ``data_dir/instance/file``."""
    if setting:
        return setting
    return sqlite_url(private_folder(Path(data_dir) / "instance") / file)


def sqlite_url(path):
    """The SQLAlchemy URL of the SQLite file at ``path``."""
    return f"sqlite:///{Path(path)}"


def _sqlite_pragmas(dbapi_connection, _record):
    """Each new SQLite connection: WAL, a busy timeout, foreign keys (``ON DELETE CASCADE``)."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def engine(db_url):
    """The process's one engine for ``db_url`` (made on the first call; thread-safe). SQLite: every use opens
    its own connection (``NullPool``; opening one costs microseconds), so nothing is shared between threads,
    left open by the many data folders of the tests, or inherited by a forked worker."""
    with _lock:
        made = _engines.get(db_url)
        if made is None:
            import sqlalchemy

            if db_url.startswith("sqlite"):  # a short connection per use: none left open, none crossing a fork
                made = sqlalchemy.create_engine(db_url, poolclass=sqlalchemy.pool.NullPool)
                sqlalchemy.event.listen(made, "connect", _sqlite_pragmas)
            else:
                made = sqlalchemy.create_engine(db_url, pool_pre_ping=True)
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
def write_transaction(made):
    """A connection of engine ``made`` whose statements in the block are one transaction, committed at its
    end (rolled back on an error), holding the write lock from its start on SQLite (``BEGIN IMMEDIATE``:
    a read in it that decides a write sees what no other writer changes before the commit)."""
    with made.connect() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        conn.commit()


@contextlib.contextmanager
def disk_full_as_507():
    """Run the block; a database or file error of a full disk becomes the 507 :class:`UserError`."""
    from sqlalchemy.exc import DBAPIError

    try:
        yield
    except (DBAPIError, OSError) as exc:
        if is_disk_full(exc):
            raise UserError(DISK_FULL, 507) from exc
        raise
