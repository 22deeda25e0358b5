"""Sign-in for all three servers: who a request's session cookie or API token is, and the set-up of it all.

:func:`init_app` is called once from :func:`shared.web.factory.make_app`, so the main, process and video
servers all get the same rules: Flask-Login's loaders (a session cookie -> a :class:`Principal` of
``via`` session, ``Authorization: Bearer <token>`` -> one of ``via`` token), the gate and the audit
hook (:mod:`shared.web.access`), cookie flags, CSRF and the security headers (:mod:`shared.web.security`).
The pages to sign in and manage users, tokens and the audit trail are the main server's
(``main_server/accounts.py``, endpoints ``auth.*``), its command line ``main_server/cli.py``.

Settings (in ``shared/core/config.py``'s ``DEFAULTS``, set from the environment as ``KOL_<NAME>``)
------------------------------------------------------------------------------------------
``SESSION_HOURS`` (12): a sign-in lasts this long at most, however much it is used;
``SESSION_IDLE_MINUTES`` (120): it ends after this long without a request (0: no idle limit).
Both are checked on the server (:meth:`shared.web.accounts.Accounts.session_user`), not only by the
cookie's expiry; signing out, a password or role change and removing the user end sessions there
too, so a copied cookie stops working. ``TOKEN_DAYS`` (90) / ``TOKEN_MAX_DAYS`` (365): how long a new
API token lasts unless its maker says (field ``days``, ``create-token --days``), and the most it
may. A token made on the Users page never acts with more rights than its maker has now, and is
revoked when the maker is removed; tokens cannot make tokens.
"""
from datetime import timedelta

from flask import current_app, session
from flask_login import LoginManager, UserMixin, login_user
from werkzeug.local import LocalProxy

from shared.web import access, security
from shared.web.access import accounts, principal
from shared.web.account_rules import PASSWORD_HINT
from shared.web.accounts import for_data_dir


class Principal(UserMixin):
    """The user or API token behind a request: ``name``, ``role`` (admin|member), ``via`` (session|token)."""

    def __init__(self, row, via):
        self.row, self.via = row, via
        self.name, self.role = row["name"], row["role"]

    def get_id(self):  # the cookie holds the user AND the session's id (a row of the sessions table)
        return f"{self.row['id']}:{self.row['session_key']}"

    @property
    def actor(self):
        """How the audit trail names this principal: ``alice``, or ``token:7:deploy-script`` (token id
        and name: two tokens may share a name)."""
        return self.name if self.via == "session" else f"token:{self.row['id']}:{self.name}"

    @property
    def is_admin(self):
        return self.role == "admin"


def sign_in(row):
    """Sign the user ``row`` in: a fresh cookie holding a new server-side session (nothing carries over)."""
    session.clear()
    session.permanent = True
    key = accounts().start_session(row["id"], current_app.config["SESSION_HOURS"])
    login_user(Principal({**row, "session_key": key}, "session"))


def _after(response):
    """After every request: the audit row and count, then the security headers."""
    access.audit(response)
    return security.add_headers(response)


def init_app(app):
    """Install sign-in, roles, tokens, CSRF, headers and the audit hook on ``app`` (any of the three servers)."""
    security.init_app(app)
    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(hours=float(app.config["SESSION_HOURS"]))
    if not 1 <= app.config["TOKEN_DAYS"] <= app.config["TOKEN_MAX_DAYS"]:
        raise ValueError("Setting TOKEN_DAYS must be 1 to TOKEN_MAX_DAYS (set KOL_TOKEN_DAYS, KOL_TOKEN_MAX_DAYS), "
                         f"not {app.config['TOKEN_DAYS']} and {app.config['TOKEN_MAX_DAYS']}.")
    app.extensions["accounts"] = for_data_dir(app.config["DATA_DIR"])

    login = LoginManager(app)
    login.session_protection = "basic"

    @login.user_loader
    def load_user(user_id):
        ident, _, key = str(user_id).partition(":")
        if not ident.isdigit() or not key:
            return None
        row = accounts().session_user(int(ident), key, app.config["SESSION_HOURS"], app.config["SESSION_IDLE_MINUTES"])
        return Principal(row, "session") if row else None

    @login.request_loader
    def load_token(req):
        header = req.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        row = accounts().check_token(token.strip())
        return Principal({**row, "session_key": ""}, "token") if row else None

    app.before_request(access.gate)
    app.after_request(_after)
    app.jinja_env.globals.update(is_admin=LocalProxy(access.is_admin), password_hint=PASSWORD_HINT)

    @app.context_processor
    def who_is_signed_in():
        return {"signed_in": principal()}
