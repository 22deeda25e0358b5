"""Users, API tokens, the audit trail and per-user prediction counts, in one database.

The database is SQLite in ``DATA_DIR/instance/accounts.sqlite3`` (WAL mode, so the three servers
and the command line read and write it at the same time), through the same SQLAlchemy layer as
the media library (:mod:`shared.core.db`; SQLAlchemy Core tables, :func:`tables`), so another
database's URL could replace it. Every call takes its own short connection from the process's
engine (a pool: nothing is shared between threads or processes while in use); a read that decides
a write runs in :func:`shared.core.db.write_transaction`.

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
from datetime import datetime, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from werkzeug.security import check_password_hash, generate_password_hash

from shared.core import db
from shared.core.errors import UserError
from shared.core.names import name_key
from shared.web.account_rules import TOKEN_DAYS, acts_as, check_name, check_password, check_role

TOKEN_PREFIX = "kol_"


def tables():
    """``(metadata, users, tokens, sessions, audit, prediction_counts, health)``: the accounts' tables
    (the same as databases made before SQLAlchemy, so those open unchanged)."""
    meta = sa.MetaData()
    text = sa.Text()
    users = sa.Table(
        "users", meta, sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", text.with_variant(sa.Text(collation="NOCASE"), "sqlite"), nullable=False, unique=True),
        sa.Column("password_hash", text, nullable=False), sa.Column("role", text, nullable=False),
        # unused since the sessions table (older databases have it NOT NULL)
        sa.Column("session_key", text, nullable=False),
        sa.Column("created_at", text, nullable=False), sa.Column("created_by", text))
    tokens = sa.Table(
        "tokens", meta, sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", text, nullable=False),
        sa.Column("role", text, nullable=False), sa.Column("token_hash", text, nullable=False, unique=True),
        sa.Column("created_at", text, nullable=False), sa.Column("created_by", text),
        sa.Column("last_used_at", text), sa.Column("revoked_at", text), sa.Column("expires_at", text),
        sa.Column("maker_id", sa.Integer))
    sessions = sa.Table(
        "sessions", meta, sa.Column("id", text, primary_key=True), sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("created_at", text, nullable=False), sa.Column("last_seen_at", text, nullable=False),
        sa.Column("ended_at", text), sa.Index("sessions_user", "user_id"))
    audit = sa.Table(
        "audit", meta, sa.Column("id", sa.Integer, primary_key=True), sa.Column("at", text, nullable=False),
        sa.Column("actor", text, nullable=False), sa.Column("role", text), sa.Column("via", text),
        sa.Column("action", text, nullable=False), sa.Column("detail", text, nullable=False, server_default="{}"),
        sa.Column("remote", text), sa.Column("server", text))
    sa.Index("audit_at", audit.c.id.desc())
    sa.Index("audit_actor", audit.c.actor, audit.c.id.desc())
    counts = sa.Table(
        "prediction_counts", meta, sa.Column("actor", text, primary_key=True), sa.Column("kind", text, primary_key=True),
        sa.Column("day", text, primary_key=True), sa.Column("count", sa.Integer, nullable=False))
    health = sa.Table("health", meta, sa.Column("id", sa.Integer, primary_key=True),
                      sa.Column("at", text, nullable=False))
    return meta, users, tokens, sessions, audit, counts, health


def now(shift=timedelta(0)):
    """The current UTC time plus ``shift`` (a ``timedelta``) as an ISO-8601 string with seconds."""
    return (datetime.now(timezone.utc) + shift).replace(microsecond=0).isoformat()


def token_hash(token):
    """The stored form of an API token: SHA-256 of its UTF-8 text, hex."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _name_free(conn, users, name):
    """Raise a :class:`UserError` (409) when a user (table ``users``, connection ``conn``) has ``name`` or a
    look-alike of it (the same :func:`shared.core.names.name_key`: case, accents, full-width letters, spacing)."""
    key = name_key(name)
    taken = next((n for n in conn.execute(sa.select(users.c.name)).scalars() if name_key(n) == key), None)
    if taken is not None:
        alike = "" if taken == name else " (names that differ only in case, accents or spacing are one name)"
        raise UserError(f"There is already a user named '{taken}'{alike}.", 409)


def for_data_dir(data_dir):
    """The accounts database of the servers that use ``data_dir`` (``DATA_DIR/instance/accounts.sqlite3``)."""
    return Accounts(Path(data_dir).resolve() / "instance" / db.ACCOUNTS_FILE)


def _upsert(conn, table, values, keys, update):
    """Insert the row ``values`` into ``table``; where a row with the same ``keys`` exists, set its columns
    ``update`` (``{column: expression}``, ``table.excluded`` the new row's) instead: one statement on
    SQLite and Postgres (``INSERT ... ON CONFLICT DO UPDATE``)."""
    insert = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}[conn.dialect.name](table).values(**values)
    conn.execute(insert.on_conflict_do_update(index_elements=keys,
                                              set_={k: f(insert.excluded) for k, f in update.items()}))


class Accounts:
    """The accounts database at ``path`` (a SQLite file, created with its tables on first use)."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.engine = db.engine(db.sqlite_url(self.path))
        (self.meta, self.users_table, self.tokens_table, self.sessions_table, self.audit_table,
         self.counts_table, self.health_table) = tables()
        with db.write_transaction(self.engine) as conn:
            self.meta.create_all(conn)
            dated = _has_token_expiry(conn)
        if not dated:
            self._add_token_columns()

    def _add_token_columns(self):
        """Give a database made before tokens expired their ``expires_at`` and ``maker_id``: an old
        token lasts :data:`TOKEN_DAYS` from now, and its maker is the user its ``created_by`` names."""
        with db.write_transaction(self.engine) as conn:
            if _has_token_expiry(conn):  # another process did it meanwhile
                return
            conn.exec_driver_sql("ALTER TABLE tokens ADD COLUMN expires_at TEXT")
            conn.exec_driver_sql("ALTER TABLE tokens ADD COLUMN maker_id INTEGER")
            t, u = self.tokens_table, self.users_table
            maker = sa.select(u.c.id).where(u.c.name == t.c.created_by).scalar_subquery()
            conn.execute(t.update().values(expires_at=now(timedelta(days=TOKEN_DAYS)), maker_id=maker))

    def _run(self, statement):
        """Execute one writing ``statement`` in a transaction of its own; returns its result."""
        with self.engine.begin() as conn:
            return conn.execute(statement)

    def _all(self, statement):
        """The rows of the query ``statement``, as dicts."""
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(statement).mappings()]

    def _one(self, statement):
        rows = self._all(statement)
        return rows[0] if rows else None

    def _user_columns(self):
        u = self.users_table
        return u.c.id, u.c.name, u.c.role, u.c.created_at, u.c.created_by

    def _any_account(self):
        """A query with a row once there is any user or API token (even a revoked one): the first run is over."""
        return sa.union_all(sa.select(sa.literal(1)).select_from(self.users_table),
                            sa.select(sa.literal(1)).select_from(self.tokens_table)).limit(1)

    # -- users ------------------------------------------------------------------------------
    def has_users(self):
        return self._one(sa.select(sa.literal(1).label("x")).select_from(self.users_table).limit(1)) is not None

    def has_accounts(self):
        """True once any user or API token (even a revoked one) exists: the first run is over."""
        return self._one(self._any_account()) is not None

    def create_user(self, name, password, role, created_by=None, first_admin=False):
        """Add a user; returns its row (without the hash). 409 if the name is taken.

        ``first_admin``: only succeed while there are no users and no tokens at all (the first-run
        page; the check and the insert are one transaction, so two racing first visits make one admin).
        """
        name, role = check_name(name, "user name"), check_role(role)
        check_password(password, name)
        pw_hash = generate_password_hash(password)
        with db.write_transaction(self.engine) as conn:
            if first_admin and conn.execute(self._any_account()).first():
                raise UserError("The first admin already exists: sign in instead.", 409)
            _name_free(conn, self.users_table, name)
            done = conn.execute(self.users_table.insert().values(
                name=name, password_hash=pw_hash, role=role, session_key=secrets.token_hex(8), created_at=now(),
                created_by=created_by))
        return self.user(done.inserted_primary_key[0])

    def user(self, user_id):
        return self._one(sa.select(*self._user_columns()).where(self.users_table.c.id == user_id))

    def users(self):
        return self._all(sa.select(*self._user_columns()).order_by(self.users_table.c.name))

    def authenticate(self, name, password):
        """The user row if ``name`` and ``password`` match, else ``None`` (same work either way)."""
        u = self.users_table
        row = self._one(sa.select(u).where(sa.func.lower(u.c.name) == sa.func.lower((name or "").strip())))
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
        with db.write_transaction(self.engine) as conn:
            if role != "admin":
                self._keep_an_admin(conn, user_id)
            conn.execute(self.users_table.update().where(self.users_table.c.id == user_id).values(role=role))
            self._end_sessions(conn, user_id)

    def set_password(self, user_id, password, keep_session=None):
        """Set a new password; the user's sessions end, except ``keep_session`` (a session id)."""
        check_password(password, (self.user(user_id) or {}).get("name"))
        with db.write_transaction(self.engine) as conn:
            conn.execute(self.users_table.update().where(self.users_table.c.id == user_id)
                         .values(password_hash=generate_password_hash(password)))
            self._end_sessions(conn, user_id, keep_session)

    def delete_user(self, user_id):
        """Remove a user: their sessions end and the tokens they made are revoked. The last admin stays."""
        t = self.tokens_table
        with db.write_transaction(self.engine) as conn:
            self._keep_an_admin(conn, user_id)
            conn.execute(self.users_table.delete().where(self.users_table.c.id == user_id))
            self._end_sessions(conn, user_id)
            conn.execute(t.update().where(t.c.maker_id == user_id, t.c.revoked_at.is_(None)).values(revoked_at=now()))

    def _keep_an_admin(self, conn, user_id):
        """Raise a 409 when ``user_id`` is the only admin (on connection ``conn``, in the change's transaction)."""
        u = self.users_table
        admins = list(conn.execute(sa.select(u.c.id).where(u.c.role == "admin")).scalars())
        if admins == [user_id]:
            raise UserError("This is the last admin: make another user admin first.", 409)

    def _end_sessions(self, conn, user_id, keep=None):
        """End every session of ``user_id`` but ``keep`` (a session id or ``None``), on connection ``conn``."""
        s = self.sessions_table
        conn.execute(s.update().where(s.c.user_id == user_id, s.c.ended_at.is_(None), s.c.id.is_distinct_from(keep))
                     .values(ended_at=now()))

    # -- sessions (browser sign-ins) ----------------------------------------------------------
    def start_session(self, user_id, hours):
        """A new session of the user; returns its id (random, kept in the signed cookie).

        Sessions begun more than ``hours`` ago (the absolute lifetime) are forgotten here."""
        key, stamp, s = secrets.token_urlsafe(24), now(), self.sessions_table
        with self.engine.begin() as conn:
            conn.execute(s.delete().where(s.c.created_at < now(-timedelta(hours=hours))))
            conn.execute(s.insert().values(id=key, user_id=user_id, created_at=stamp, last_seen_at=stamp))
        return key

    def session_user(self, user_id, key, hours, idle_minutes):
        """The user row (with ``session_key`` = ``key``) if session ``key`` of ``user_id`` is live, else ``None``.

        Live: not ended, begun less than ``hours`` ago and used less than ``idle_minutes`` ago
        (0: no idle limit). Using it counts, to the minute (at most one write a minute)."""
        idle = now(-timedelta(minutes=idle_minutes)) if idle_minutes else ""
        s = self.sessions_table
        row = self._one(
            sa.select(*self._user_columns(), s.c.id.label("session_key"), s.c.last_seen_at)
            .select_from(s.join(self.users_table, self.users_table.c.id == s.c.user_id))
            .where(s.c.id == key, s.c.user_id == user_id, s.c.ended_at.is_(None),
                   s.c.created_at > now(-timedelta(hours=hours)), s.c.last_seen_at > idle))
        if row is not None:
            self._touch(s, s.c.last_seen_at, row.pop("last_seen_at"), key)
        return row

    def end_session(self, key):
        """End the session ``key`` (signing out): its cookie, copied or not, no longer signs in."""
        s = self.sessions_table
        self._run(s.update().where(s.c.id == key, s.c.ended_at.is_(None)).values(ended_at=now()))

    def _touch(self, table, column, last, row_id):
        """Set ``column`` of ``table``'s row ``row_id`` to now, unless ``last`` is already this minute (one
        write a minute)."""
        stamp = now()
        if (last or "")[:16] != stamp[:16]:
            self._run(table.update().where(table.c.id == row_id).values({column: stamp}))

    # -- tokens -----------------------------------------------------------------------------
    def create_token(self, name, role, created_by=None, days=TOKEN_DAYS, maker_id=None):
        """A new API token lasting ``days`` days: returns ``(token, row)``; the token text is not stored anywhere.

        ``maker_id``: the user who made it (its rights never exceed theirs; removing them revokes it);
        ``None`` for the command line."""
        name, role = check_name(name, "token name"), check_role(role)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        done = self._run(self.tokens_table.insert().values(
            name=name, role=role, token_hash=token_hash(token), created_at=now(), created_by=created_by,
            expires_at=now(timedelta(days=int(days))), maker_id=maker_id))
        return token, self.token(done.inserted_primary_key[0])

    def token(self, token_id):
        rows = self._tokens(lambda q, t: q.where(t.c.id == token_id))
        return rows[0] if rows else None

    def tokens(self):
        """Every token, live ones first, newest first; ``acts_as``: the role it has now (see :func:`acts_as`)."""
        return self._tokens(lambda q, t: q.order_by(t.c.revoked_at.is_not(None), t.c.id.desc()))

    def _tokens(self, narrow):
        """Token rows with their maker's role folded into ``acts_as``; ``narrow(query, tokens)`` adds the
        where/order clauses."""
        t, u = self.tokens_table, self.users_table
        query = sa.select(t.c.id, t.c.name, t.c.role, t.c.created_at, t.c.created_by, t.c.last_used_at,
                          t.c.revoked_at, t.c.expires_at, t.c.maker_id, u.c.role.label("maker_role")) \
            .select_from(t.outerjoin(u, u.c.id == t.c.maker_id))
        rows = self._all(narrow(query, t))
        for row in rows:
            row["acts_as"] = acts_as(row["role"], row.pop("maker_role"))
        return rows

    def check_token(self, token):
        """The token's row if ``token`` is live (not revoked, not expired, its maker still a user), else ``None``.

        ``role`` is the role it acts with now (see :func:`acts_as`)."""
        if not token or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        t, u = self.tokens_table, self.users_table
        row = self._one(
            sa.select(t.c.id, t.c.name, t.c.role, t.c.last_used_at, u.c.role.label("maker_role"))
            .select_from(t.outerjoin(u, u.c.id == t.c.maker_id))
            .where(t.c.token_hash == token_hash(token), t.c.revoked_at.is_(None), t.c.expires_at > now(),
                   sa.or_(t.c.maker_id.is_(None), u.c.id.is_not(None))))
        if row is not None:
            row["role"] = acts_as(row["role"], row.pop("maker_role"))
            self._touch(t, t.c.last_used_at, row["last_used_at"], row["id"])
        return row

    def revoke_token(self, token_id):
        """Revoke a token (it stops working at once); 404 if there is no such live token."""
        t = self.tokens_table
        done = self._run(t.update().where(t.c.id == token_id, t.c.revoked_at.is_(None)).values(revoked_at=now()))
        if not done.rowcount:
            raise UserError("There is no such live token.", 404)

    # -- audit trail ------------------------------------------------------------------------
    def record(self, actor, action, detail=None, role=None, via=None, remote=None, server=None):
        """Append one row to the audit trail. ``detail``: a small dict naming the object (no photos)."""
        self._run(self.audit_table.insert().values(
            at=now(), actor=actor, role=role, via=via, action=action,
            detail=json.dumps(detail or {}, ensure_ascii=False, sort_keys=True), remote=remote, server=server))

    def audit(self, offset=0, limit=50, actor=None):
        """Audit rows, newest first: ``(rows, total)``; each row's ``detail`` is a dict.

        actor: only the rows of this actor (``alice``, ``token:7:deploy-script``); ``None``: everyone's.
        """
        a = self.audit_table
        where = [a.c.actor == actor] if actor is not None else []
        rows = self._all(sa.select(a).where(*where).order_by(a.c.id.desc()).limit(int(limit)).offset(int(offset)))
        for row in rows:
            row["detail"] = json.loads(row["detail"] or "{}")
        total = self._one(sa.select(sa.func.count().label("n")).select_from(a).where(*where))["n"]
        return rows, total

    # -- health -----------------------------------------------------------------------------
    def check_health(self):
        """Read the users and write one row of a table of its own (``health``), as the pages need;
        raises what fails (``sqlalchemy.exc.OperationalError`` "disk I/O error" on a full disk)."""
        with self.engine.begin() as conn:
            conn.execute(sa.select(sa.func.count()).select_from(self.users_table)).scalar()
            _upsert(conn, self.health_table, {"id": 1, "at": now()}, ["id"], {"at": lambda new: new.at})

    # -- prediction counts ------------------------------------------------------------------
    def count_prediction(self, actor, kind, n=1):
        """Add ``n`` predictions of ``kind`` (single, batch, similar, video) for ``actor`` today (UTC)."""
        c = self.counts_table
        with self.engine.begin() as conn:
            _upsert(conn, c, {"actor": actor, "kind": kind, "day": now()[:10], "count": int(n)},
                    ["actor", "kind", "day"], {"count": lambda new: c.c.count + new.count})

    def prediction_counts(self):
        """Totals per actor and kind: ``[{"actor", "kind", "count", "last_day"}]``, busiest first."""
        c = self.counts_table
        total = sa.func.sum(c.c.count).label("count")
        return self._all(sa.select(c.c.actor, c.c.kind, total, sa.func.max(c.c.day).label("last_day"))
                         .group_by(c.c.actor, c.c.kind).order_by(total.desc(), c.c.actor, c.c.kind))


def _has_token_expiry(conn):
    """True when the tokens table (on connection ``conn``) has its ``expires_at`` column."""
    return "expires_at" in {c["name"] for c in sa.inspect(conn).get_columns("tokens")}


_DUMMY_HASH = generate_password_hash(secrets.token_hex(8))
