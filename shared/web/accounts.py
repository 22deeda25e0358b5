"""Users, API tokens, the audit trail and per-user prediction counts, in one SQLite file.

The file is ``DATA_DIR/instance/accounts.sqlite3`` (WAL mode, so the three servers and the
command line read and write it at the same time). Every call opens its own short connection:
nothing is shared between threads or processes.

- Passwords are stored only as ``werkzeug.security`` hashes.
- API tokens are ``kol_`` + 32 random bytes (URL-safe base64); only their SHA-256 is stored,
  so a token is shown once, when it is made, and never again.
- A browser sign-in is a row of ``sessions`` (its random id is in the signed session cookie):
  signing out, a password or role change and removing the user end it here, on the server, so
  a copied cookie stops working too; it also ends after an absolute lifetime from the sign-in
  and after a time without use (both given by the caller, from ``SESSION_HOURS`` and
  ``SESSION_IDLE_MINUTES``).
- API tokens expire (``expires_at``) and follow their maker (``maker_id``, the user who made
  one on the Users page; ``NULL`` from the command line): removing the maker revokes them, and a
  token never acts with more rights than its maker has now.
- Times are UTC ISO-8601 strings with seconds (``2026-11-24T01:02:03+00:00``), so comparing
  the strings compares the times.
- User and token names follow the rule of KOL names (:mod:`shared.core.names`,
  :func:`shared.web.account_rules.check_name`); passwords the rule of
  :func:`shared.web.account_rules.check_password`; roles, token days and a token's role too
  (:mod:`shared.web.account_rules`).
"""
import hashlib
import json
import secrets
import sqlite3
from contextlib import closing, contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

from werkzeug.security import check_password_hash, generate_password_hash

from shared.core.errors import UserError
from shared.core.names import name_key
from shared.web.account_rules import TOKEN_DAYS, acts_as, check_name, check_password, check_role

TOKEN_PREFIX = "kol_"

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    session_key TEXT NOT NULL,  -- unused since the sessions table (older databases have it NOT NULL)
    created_at TEXT NOT NULL,
    created_by TEXT
);
CREATE TABLE IF NOT EXISTS tokens (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    created_by TEXT,
    last_used_at TEXT,
    revoked_at TEXT,
    expires_at TEXT,
    maker_id INTEGER
);
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    last_seen_at TEXT NOT NULL,
    ended_at TEXT
);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions (user_id);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    role TEXT,
    via TEXT,
    action TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}',
    remote TEXT,
    server TEXT
);
CREATE INDEX IF NOT EXISTS audit_at ON audit (id DESC);
CREATE INDEX IF NOT EXISTS audit_actor ON audit (actor, id DESC);
CREATE TABLE IF NOT EXISTS prediction_counts (
    actor TEXT NOT NULL,
    kind TEXT NOT NULL,
    day TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (actor, kind, day)
);
"""


def now(shift=timedelta(0)):
    """The current UTC time plus ``shift`` (a ``timedelta``) as an ISO-8601 string with seconds."""
    return (datetime.now(timezone.utc) + shift).replace(microsecond=0).isoformat()


def token_hash(token):
    """The stored form of an API token: SHA-256 of its UTF-8 text, hex."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _name_free(db, name):
    """Raise a :class:`UserError` (409) when a user of database ``db`` has ``name`` or a look-alike
    of it (the same :func:`shared.core.names.name_key`: case, accents, full-width letters, spacing)."""
    key = name_key(name)
    taken = next((row[0] for row in db.execute("SELECT name FROM users") if name_key(row[0]) == key), None)
    if taken is not None:
        alike = "" if taken == name else " (names that differ only in case, accents or spacing are one name)"
        raise UserError(f"There is already a user named '{taken}'{alike}.", 409)


def for_data_dir(data_dir):
    """The accounts database of the servers that use ``data_dir`` (``DATA_DIR/instance/accounts.sqlite3``)."""
    return Accounts(Path(data_dir).resolve() / "instance" / "accounts.sqlite3")


class Accounts:
    """The accounts database at ``path`` (created with its tables on first use)."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
            dated = _has_token_expiry(db)
        if not dated:
            self._add_token_columns()

    def _add_token_columns(self):
        """Give a database made before tokens expired their ``expires_at`` and ``maker_id``: an old
        token lasts :data:`TOKEN_DAYS` from now, and its maker is the user its ``created_by`` names."""
        with self._transaction() as db:
            if _has_token_expiry(db):  # another process did it meanwhile
                return
            db.execute("ALTER TABLE tokens ADD COLUMN expires_at TEXT")
            db.execute("ALTER TABLE tokens ADD COLUMN maker_id INTEGER")
            db.execute("UPDATE tokens SET expires_at = ?, maker_id = "
                       "(SELECT users.id FROM users WHERE users.name = tokens.created_by)",
                       (now(timedelta(days=TOKEN_DAYS)),))

    def _connect(self):
        db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA busy_timeout=10000")
        return db

    def _run(self, sql, args=()):
        with closing(self._connect()) as db:
            cur = db.execute(sql, args)
            return cur.lastrowid, cur.rowcount

    def _all(self, sql, args=()):
        with closing(self._connect()) as db:
            return [dict(r) for r in db.execute(sql, args).fetchall()]

    def _one(self, sql, args=()):
        rows = self._all(sql, args)
        return rows[0] if rows else None

    @contextmanager
    def _transaction(self):
        """A connection whose statements in the block are one transaction (all or none)."""
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    # -- users ------------------------------------------------------------------------------
    def has_users(self):
        return self._one("SELECT 1 AS x FROM users LIMIT 1") is not None

    def has_accounts(self):
        """True once any user or API token (even a revoked one) exists: the first run is over."""
        return self._one(ANY_ACCOUNT) is not None

    def create_user(self, name, password, role, created_by=None, first_admin=False):
        """Add a user; returns its row (without the hash). 409 if the name is taken.

        ``first_admin``: only succeed while there are no users and no tokens at all (the first-run
        page; the check and the insert are one transaction, so two racing first visits make one admin).
        """
        name, role = check_name(name, "user name"), check_role(role)
        check_password(password, name)
        pw_hash = generate_password_hash(password)
        with self._transaction() as db:
            if first_admin and db.execute(ANY_ACCOUNT).fetchone():
                raise UserError("The first admin already exists: sign in instead.", 409)
            _name_free(db, name)
            cur = db.execute(
                "INSERT INTO users (name, password_hash, role, session_key, created_at, created_by) "
                "VALUES (?, ?, ?, ?, ?, ?)", (name, pw_hash, role, secrets.token_hex(8), now(), created_by))
        return self.user(cur.lastrowid)

    def user(self, user_id):
        return self._one("SELECT id, name, role, created_at, created_by FROM users WHERE id = ?", (user_id,))

    def users(self):
        return self._all("SELECT id, name, role, created_at, created_by FROM users ORDER BY name")

    def authenticate(self, name, password):
        """The user row if ``name`` and ``password`` match, else ``None`` (same work either way)."""
        row = self._one("SELECT * FROM users WHERE name = ?", ((name or "").strip(),))
        if row is None:
            check_password_hash(_DUMMY_HASH, password or "")  # the same time as a real check
            return None
        if not check_password_hash(row["password_hash"], password or ""):
            return None
        row.pop("password_hash")
        return row

    def set_role(self, user_id, role):
        """Change a user's role; their sessions end. The last admin stays admin.

        Their tokens act with the new role at most (see :func:`acts_as`)."""
        check_role(role)
        if role != "admin":
            self._keep_an_admin(user_id)
        with self._transaction() as db:
            db.execute("UPDATE users SET role = ? WHERE id = ?", (role, user_id))
            _end_sessions(db, user_id)

    def set_password(self, user_id, password, keep_session=None):
        """Set a new password; the user's sessions end, except ``keep_session`` (a session id)."""
        check_password(password, (self.user(user_id) or {}).get("name"))
        with self._transaction() as db:
            db.execute("UPDATE users SET password_hash = ? WHERE id = ?", (generate_password_hash(password), user_id))
            _end_sessions(db, user_id, keep_session)

    def delete_user(self, user_id):
        """Remove a user: their sessions end and the tokens they made are revoked. The last admin stays."""
        self._keep_an_admin(user_id)
        with self._transaction() as db:
            db.execute("DELETE FROM users WHERE id = ?", (user_id,))
            _end_sessions(db, user_id)
            db.execute("UPDATE tokens SET revoked_at = ? WHERE maker_id = ? AND revoked_at IS NULL", (now(), user_id))

    def _keep_an_admin(self, user_id):
        admins = [u["id"] for u in self._all("SELECT id FROM users WHERE role = 'admin'")]
        if admins == [user_id]:
            raise UserError("This is the last admin: make another user admin first.", 409)

    # -- sessions (browser sign-ins) ----------------------------------------------------------
    def start_session(self, user_id, hours):
        """A new session of the user; returns its id (random, kept in the signed cookie).

        Sessions begun more than ``hours`` ago (the absolute lifetime) are forgotten here."""
        key, stamp = secrets.token_urlsafe(24), now()
        with self._transaction() as db:
            db.execute("DELETE FROM sessions WHERE created_at < ?", (now(-timedelta(hours=hours)),))
            db.execute("INSERT INTO sessions (id, user_id, created_at, last_seen_at) VALUES (?, ?, ?, ?)",
                       (key, user_id, stamp, stamp))
        return key

    def session_user(self, user_id, key, hours, idle_minutes):
        """The user row (with ``session_key`` = ``key``) if session ``key`` of ``user_id`` is live, else ``None``.

        Live: not ended, begun less than ``hours`` ago and used less than ``idle_minutes`` ago
        (0: no idle limit). Using it counts, to the minute (at most one write a minute)."""
        idle = now(-timedelta(minutes=idle_minutes)) if idle_minutes else ""
        row = self._one(
            "SELECT u.id, u.name, u.role, u.created_at, u.created_by, s.id AS session_key, s.last_seen_at "
            "FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = ? AND s.user_id = ? "
            "AND s.ended_at IS NULL AND s.created_at > ? AND s.last_seen_at > ?",
            (key, user_id, now(-timedelta(hours=hours)), idle))
        if row is not None:
            self._touch("sessions", "last_seen_at", row.pop("last_seen_at"), key)
        return row

    def end_session(self, key):
        """End the session ``key`` (signing out): its cookie, copied or not, no longer signs in."""
        self._run("UPDATE sessions SET ended_at = ? WHERE id = ? AND ended_at IS NULL", (now(), key))

    def _touch(self, table, column, last, row_id):
        """Set ``column`` of row ``row_id`` to now, unless ``last`` is already this minute (one write a minute)."""
        stamp = now()
        if (last or "")[:16] != stamp[:16]:
            self._run(f"UPDATE {table} SET {column} = ? WHERE id = ?", (stamp, row_id))

    # -- tokens -----------------------------------------------------------------------------
    def create_token(self, name, role, created_by=None, days=TOKEN_DAYS, maker_id=None):
        """A new API token lasting ``days`` days: returns ``(token, row)``; the token text is not stored anywhere.

        ``maker_id``: the user who made it (its rights never exceed theirs; removing them revokes it);
        ``None`` for the command line."""
        name, role = check_name(name, "token name"), check_role(role)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token_id, _ = self._run(
            "INSERT INTO tokens (name, role, token_hash, created_at, created_by, expires_at, maker_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (name, role, token_hash(token), now(), created_by, now(timedelta(days=int(days))), maker_id))
        return token, self.token(token_id)

    def token(self, token_id):
        rows = self._tokens("WHERE t.id = ?", (token_id,))
        return rows[0] if rows else None

    def tokens(self):
        """Every token, live ones first, newest first; ``acts_as``: the role it has now (see :func:`acts_as`)."""
        return self._tokens("ORDER BY t.revoked_at IS NOT NULL, t.id DESC")

    def _tokens(self, where, args=()):
        rows = self._all("SELECT t.id, t.name, t.role, t.created_at, t.created_by, t.last_used_at, t.revoked_at, "
                         "t.expires_at, t.maker_id, u.role AS maker_role "
                         f"FROM tokens t LEFT JOIN users u ON u.id = t.maker_id {where}", args)
        for row in rows:
            row["acts_as"] = acts_as(row["role"], row.pop("maker_role"))
        return rows

    def check_token(self, token):
        """The token's row if ``token`` is live (not revoked, not expired, its maker still a user), else ``None``.

        ``role`` is the role it acts with now (see :func:`acts_as`)."""
        if not token or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        row = self._one("SELECT t.id, t.name, t.role, t.last_used_at, u.role AS maker_role "
                        "FROM tokens t LEFT JOIN users u ON u.id = t.maker_id "
                        "WHERE t.token_hash = ? AND t.revoked_at IS NULL AND t.expires_at > ? "
                        "AND (t.maker_id IS NULL OR u.id IS NOT NULL)", (token_hash(token), now()))
        if row is not None:
            row["role"] = acts_as(row["role"], row.pop("maker_role"))
            self._touch("tokens", "last_used_at", row["last_used_at"], row["id"])
        return row

    def revoke_token(self, token_id):
        """Revoke a token (it stops working at once); 404 if there is no such live token."""
        _, changed = self._run("UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                               (now(), token_id))
        if not changed:
            raise UserError("There is no such live token.", 404)

    # -- audit trail ------------------------------------------------------------------------
    def record(self, actor, action, detail=None, role=None, via=None, remote=None, server=None):
        """Append one row to the audit trail. ``detail``: a small dict naming the object (no photos)."""
        self._run("INSERT INTO audit (at, actor, role, via, action, detail, remote, server) "
                  "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                  (now(), actor, role, via, action, json.dumps(detail or {}, ensure_ascii=False, sort_keys=True),
                   remote, server))

    def audit(self, offset=0, limit=50, actor=None):
        """Audit rows, newest first: ``(rows, total)``; each row's ``detail`` is a dict.

        actor: only the rows of this actor (``alice``, ``token:7:deploy-script``); ``None``: everyone's.
        """
        where, args = ("WHERE actor = ?", (actor,)) if actor is not None else ("", ())
        rows = self._all(f"SELECT * FROM audit {where} ORDER BY id DESC LIMIT ? OFFSET ?",
                         args + (int(limit), int(offset)))
        for row in rows:
            row["detail"] = json.loads(row["detail"] or "{}")
        total = self._one(f"SELECT COUNT(*) AS n FROM audit {where}", args)["n"]
        return rows, total

    # -- health -----------------------------------------------------------------------------
    def check_health(self):
        """Read the users and write one row of a table of its own (``health``), as the pages need;
        raises what fails (``sqlite3.OperationalError`` "disk I/O error" on a full disk)."""
        with closing(self._connect()) as db:
            db.execute("SELECT COUNT(*) FROM users").fetchone()
            db.execute("CREATE TABLE IF NOT EXISTS health (id INTEGER PRIMARY KEY, at TEXT NOT NULL)")
            db.execute("INSERT OR REPLACE INTO health (id, at) VALUES (1, ?)", (now(),))

    # -- prediction counts ------------------------------------------------------------------
    def count_prediction(self, actor, kind, n=1):
        """Add ``n`` predictions of ``kind`` (single, batch, similar, video) for ``actor`` today (UTC)."""
        self._run("INSERT INTO prediction_counts (actor, kind, day, count) VALUES (?, ?, ?, ?) "
                  "ON CONFLICT (actor, kind, day) DO UPDATE SET count = count + excluded.count",
                  (actor, kind, now()[:10], int(n)))

    def prediction_counts(self):
        """Totals per actor and kind: ``[{"actor", "kind", "count", "last_day"}]``, busiest first."""
        return self._all("SELECT actor, kind, SUM(count) AS count, MAX(day) AS last_day FROM prediction_counts "
                         "GROUP BY actor, kind ORDER BY count DESC, actor, kind")


def _has_token_expiry(db):
    """True when the tokens table of connection ``db`` has its ``expires_at`` column."""
    return "expires_at" in {r["name"] for r in db.execute("PRAGMA table_info(tokens)")}


def _end_sessions(db, user_id, keep=None):
    """End every session of ``user_id`` but ``keep`` (a session id or ``None``), on connection ``db``."""
    db.execute("UPDATE sessions SET ended_at = ? WHERE user_id = ? AND ended_at IS NULL AND id IS NOT ?",
               (now(), user_id, keep))


#: A row exists once there is any user or token (the first run is over).
ANY_ACCOUNT = "SELECT 1 FROM users UNION ALL SELECT 1 FROM tokens LIMIT 1"

_DUMMY_HASH = generate_password_hash(secrets.token_hex(8))
