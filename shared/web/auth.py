"""Sign-in, roles, API tokens, CSRF, security headers and the audit trail, for all three servers.

:func:`init_app` is called once from :func:`shared.web.factory.make_app`, so the main, process and video
servers all get the same rules. The parts are the ecosystem's own: Flask-Login (sessions),
Flask-WTF's ``CSRFProtect`` (every form POST), ``werkzeug.security`` (password hashes, in
:mod:`shared.web.accounts`), Flask-Limiter (sign-in attempts) and ProxyFix (behind HTTPS).

Who may do what: ONE table, deny by default
-------------------------------------------
Every endpoint is one of ``open`` (no sign-in), ``member`` (any signed-in user or token) or
``admin``. :data:`OPEN` and :data:`MEMBER` list the first two as ``"<server>:<endpoint>"``
patterns (``fnmatch``: ``"main:predict.*"``, ``"video:*"``); an entry may be a pair
``(pattern, test)`` where ``test()`` says, for the current request, whether the entry applies.
**Anything not listed needs the admin role**, so a new route is safe before anyone thinks about it.
To let members use a new endpoint, add one line to :data:`MEMBER`, e.g.
``"main:kols.index",`` (server = ``main``/``process``/``video``, endpoint = ``blueprint.function``).

Audit: ONE table
----------------
:data:`AUDITED` maps endpoint patterns to an action name (or a function of the request giving
one, or ``None`` to skip); every successful (status < 400) POST to such an endpoint is recorded
after the request with who, when, from where and the form fields in :data:`OBJECT_FIELDS` (the
fields that name the object: ``job``, ``kol``, ``delete``, ...; never files or photos). To audit
a new action, add one line to :data:`AUDITED`. Sign-ins, failed sign-ins, sign-outs, user and
token changes are recorded explicitly by this module. Predictions are only counted per user
(:data:`COUNTED`), never logged with their photos.

Pages and forms (for every template)
------------------------------------
- ``{% if is_admin %}...{% endif %}`` around admin-only actions (``is_admin`` is live per request).
- ``{{ csrf_field() }}`` inside every ``<form method="post">``; ``fetch()`` POSTs send the form's
  ``FormData`` (which carries the field) or the header ``X-CSRFToken: {{ csrf_token() }}``.
- No inline event handlers (``onclick=``) or ``javascript:`` links: the Content-Security-Policy
  forbids them. Scripts go in ``static/`` or in ``<script nonce="{{ csp_nonce() }}">``; style
  attributes (``style="width: 40%"``) are allowed, ``<style>`` elements are not (use style.css).

Settings (in ``shared/core/config.py``'s ``DEFAULTS``, set from the environment as ``KOL_<NAME>``)
------------------------------------------------------------------------------------------
``SESSION_HOURS`` (12): a sign-in lasts this long at most, however much it is used;
``SESSION_IDLE_MINUTES`` (120): it ends after this long without a request (0: no idle limit).
Both are checked on the server (:meth:`shared.web.accounts.Accounts.session_user`), not only by the
cookie's expiry; signing out, a password or role change and removing the user end sessions there
too, so a copied cookie stops working. ``TOKEN_DAYS`` (90) / ``TOKEN_MAX_DAYS`` (365): how long a new
API token lasts unless its maker says (field ``days``, ``create-token --days``), and the most it
may. A token made on the Users page never acts with more rights than its maker has now, and is
revoked when the maker is removed; tokens cannot make tokens. ``PROXY_FIX`` (0): number of proxies in front
whose ``X-Forwarded-For/Proto/Host`` are trusted. ``SESSION_COOKIE_SECURE`` (Flask's own; on
anyway when ``MAIN_URL`` is https). ``RATELIMIT_STORAGE_URI`` (empty: the job queue's ``REDIS_URL``,
shared by every server process and machine, with this process's memory as the fallback while it
is down; ``memory://`` to count per process). Failed sign-ins are limited three ways, so that one
office behind one address is not locked out by one person's typos: ``LOGIN_LIMIT``
(``10 per minute``) per address and account together, ``LOGIN_ACCOUNT_LIMIT`` (``30 per hour``)
per account from anywhere, ``LOGIN_ADDRESS_LIMIT`` (``100 per minute``) per address for all
accounts; a wrong current password on the account page counts against ``LOGIN_LIMIT`` per account.
"""
import hashlib
import io
import secrets
from datetime import timedelta
from fnmatch import fnmatchcase
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import click
from flask import Blueprint, Response, abort, current_app, flash, g, jsonify, redirect, request, session, url_for
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from flask_wtf.csrf import CSRFError, CSRFProtect, generate_csrf
from markupsafe import Markup
from werkzeug.local import LocalProxy
from werkzeug.middleware.proxy_fix import ProxyFix

from shared.core import csvsafe
from shared.core.errors import UserError
from shared.core.names import name_key
from shared.web.accounts import PASSWORD_MIN, ROLES, check_token_days, for_data_dir
from shared.web.replies import error_reply, reply, wants_json

#: Endpoints anyone may reach, signed in or not.
OPEN = (
    "*:healthz",
    "*:static",
    "main:auth.login",
    "main:auth.setup",
)


def _pool_summary_only():
    """The process server's ``/import_result`` is the pool summary when read without a job."""
    return request.method in ("GET", "HEAD") and not request.values.get("job")


#: Endpoints a ``member`` may use (admins may use everything).
MEMBER = (
    "main:home.index",
    "main:predict.*",            # single, batch, similar: forms, results, result files, pool photos
    "main:video.upload_video_page",
    "main:video.predict_video_result",
    "video:*",                   # the whole video server: player, stream, status
    ("process:wizard.import_result", _pool_summary_only),
    "process:wizard.pool_chip",  # the photos of the pool summary
    "main:kols.index",           # the roster, read-only (its changes are admin POSTs)
    "main:kols.kol",
    "main:auth.logout",
    "main:auth.account",
    "main:auth.change_password",
)


def _import_or_delete():
    return "kol.delete" if request.form.get("delete") else "pool.import"


#: Successful POSTs recorded in the audit trail: endpoint pattern -> action (or a function giving it).
AUDITED = {
    "main:training.train_by_image": "job.upload",
    "main:training.train_by_video": "job.upload",
    "process:wizard.align": "job.align",
    "process:wizard.clean": "job.clean",
    "process:wizard.import_result": _import_or_delete,
    "process:wizard.delete_kol": "kol.delete",
    "process:wizard.train_model": "model.train",
    "process:wizard.*": lambda: "job." + request.endpoint.split(".", 1)[1],
    "main:kols.*": lambda: "kol." + request.endpoint.split(".", 1)[1],
    "*:models.*": lambda: "model." + request.endpoint.split(".", 1)[1],
}
#: Form fields that name the object of an audited action (values kept, at most 20 per field).
OBJECT_FIELDS = ("job", "kol", "delete", "mode", "reset", "remove", "keep", "slug", "name", "into", "target",
                 "version", "video", "crop")
#: Successful POSTs counted per user (never logged): endpoint -> kind.
COUNTED = {
    "main:predict.single_image": "single",
    "main:predict.batch_image": "batch",
    "main:predict.similar_result": "similar",
    "main:video.predict_video_result": "video",
}

UNSAFE = ("POST", "PUT", "PATCH", "DELETE")
CSRF_SENTENCE = ("This form could not be accepted: it has expired or did not come from this site "
                 "(missing or wrong CSRF token). Reload the page and send it again.")


bp = Blueprint("auth", __name__)
csrf = CSRFProtect()


# -- who is asking ------------------------------------------------------------------------------
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


def accounts():
    """The :class:`shared.web.accounts.Accounts` of the current app."""
    return current_app.extensions["accounts"]


def principal():
    """The current :class:`Principal`, or ``None`` when nobody is signed in."""
    user = current_user._get_current_object() if current_user else None
    return user if isinstance(user, Principal) else None


def _is_admin():
    p = principal()
    return bool(p and p.is_admin)


def csrf_field():
    """The hidden CSRF input for a POST form (the template global ``csrf_field()``)."""
    return Markup('<input type="hidden" name="csrf_token" value="%s">') % generate_csrf()


def csp_nonce():
    """This response's script nonce (the template global ``csp_nonce()``)."""
    if "csp_nonce" not in g:
        g.csp_nonce = secrets.token_urlsafe(16)
    return g.csp_nonce


def rule(section, endpoint):
    """``"open"``, ``"member"`` or ``"admin"`` for ``endpoint`` of server ``section`` (this request)."""
    key = f"{section}:{endpoint}"

    def matches(entries):
        for entry in entries:
            pattern, test = entry if isinstance(entry, tuple) else (entry, None)
            if fnmatchcase(key, pattern) and (test is None or test()):
                return True
        return False

    if matches(OPEN):
        return "open"
    return "member" if matches(MEMBER) else "admin"


def _lookup(table, section, endpoint):
    key = f"{section}:{endpoint}"
    for pattern, value in table.items():
        if fnmatchcase(key, pattern):
            return value
    return None


def safe_next(url):
    """``url`` if it points at one of the three servers (or is a local path), else ``None``."""
    if not url or len(url) > 2000 or "\\" in url or any(ord(c) < 32 for c in url):
        return None
    parts = urlsplit(url)
    if not parts.scheme and not parts.netloc:
        return url if url.startswith("/") and not url.startswith("//") else None
    origins = {_origin(current_app.config[k]) for k in ("MAIN_URL", "PROCESS_URL", "VIDEO_URL")}
    return url if (parts.scheme, parts.netloc) in origins else None


def _origin(url):
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


def _wants_json():
    return wants_json() or _bearer_request()


def _bearer_request():
    """True when the request carries ``Authorization: Bearer ...`` (a script with an API token).
    Other schemes (a proxy's Basic auth) are left alone: such requests sign in as browsers do."""
    return request.headers.get("Authorization", "")[:7].lower() == "bearer "


def _main(path, **query):
    return f"{current_app.config['MAIN_URL']}{path}" + (f"?{urlencode(query)}" if query else "")


def _here():
    """This request's address on this server's public base URL (what ``next`` must come back to)."""
    base = current_app.config[{"main": "MAIN_URL", "process": "PROCESS_URL", "video": "VIDEO_URL"}
                              [current_app.config["SECTION"]]]
    return base + request.full_path.rstrip("?")


def _remote():
    return request.remote_addr or ""


def record(action, detail=None, actor=None, role=None, via=None):
    """Add an audit row for the current request (who defaults to the signed-in principal)."""
    p = principal()
    accounts().record(actor or (p.actor if p else "anonymous"), action, detail,
                      role=role or (p.role if p else None), via=via or (p.via if p else None),
                      remote=_remote(), server=current_app.config["SECTION"])


# -- the gate -----------------------------------------------------------------------------------
def _gate():
    """Before every request: sign-in, first run, CSRF and role, by the table above."""
    endpoint = request.endpoint
    if endpoint is None:  # no such route: the 404/405 handlers answer
        return None
    section = current_app.config["SECTION"]
    needed = rule(section, endpoint)
    who = principal()
    token_request = _bearer_request()
    if token_request and (who is None or who.via != "token"):
        if who is None:
            return _deny(401, "This API token is not valid: it was revoked, has expired or is mistyped. "
                              "Send 'Authorization: Bearer <token>' with a live token.")
    if needed == "open":
        if request.method in UNSAFE and not (who and who.via == "token"):
            csrf.protect()
        return None
    if who is None:
        if not accounts().has_accounts():
            message = ("No account exists yet: open the main server in a browser and create the first admin, "
                       "or make a token with 'flask --app main_server create-token NAME --role admin'.")
            return _deny(401, message, _main("/setup"))
        next_url = _here() if request.method in ("GET", "HEAD") else safe_next(request.referrer)
        return _deny(401, "Sign in first: this address needs a signed-in user or an API token.",
                     _main("/login", **({"next": next_url} if next_url else {})))
    if request.method in UNSAFE and who.via == "session":
        csrf.protect()
    if needed == "admin" and not who.is_admin:
        return _deny(403, f"Your account ({who.name}) is a member: only an admin may do this. "
                          "Ask an admin if you need it done.")
    return None


def _deny(status, message, location=None):
    if location and status == 401 and not _wants_json():
        return redirect(location, 303 if request.method in UNSAFE else 302)
    return error_reply(message, status)


def _after(response):
    endpoint = request.endpoint
    section = current_app.config["SECTION"]
    who = principal()
    if endpoint and request.method == "POST" and response.status_code < 400 and who is not None:
        action = _lookup(AUDITED, section, endpoint)
        if callable(action):
            action = action()
        if action:
            detail = {}
            for field in OBJECT_FIELDS:
                values = [v[:200] for v in request.form.getlist(field) if v][:20]
                if values:
                    detail[field] = values[0] if len(values) == 1 else values
            if response.location:
                detail["result"] = response.location[:300]
            record(action, detail)
        kind = COUNTED.get(f"{section}:{endpoint}")
        if kind:
            accounts().count_prediction(who.actor, kind, max(1, len([f for f in request.files.getlist("file")
                                                                     if f and f.filename])))
    _security_headers(response)
    return response


def _security_headers(response):
    servers = " ".join(sorted({current_app.config[k] for k in ("MAIN_URL", "PROCESS_URL", "VIDEO_URL")}))
    nonce = g.get("csp_nonce")
    scripts = f"'self' 'nonce-{nonce}'" if nonce else "'self'"
    response.headers.setdefault("Content-Security-Policy", "; ".join([
        "default-src 'self'", f"script-src {scripts}", "style-src 'self'", "style-src-attr 'unsafe-inline'",
        f"img-src 'self' data: {servers}", "connect-src 'self'", "object-src 'none'", "base-uri 'self'",
        f"form-action 'self' {servers}", "frame-ancestors 'none'"]))
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "strict-origin-when-cross-origin")
    if request.is_secure:
        response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    if principal() is not None:  # what a signed-in user sees is theirs: no shared cache may keep it
        if response.cache_control.public:
            response.cache_control.public = False
        if not response.cache_control.no_store:
            response.cache_control.private = True
    return response


# -- setup --------------------------------------------------------------------------------------
def init_app(app):
    """Install sign-in, roles, tokens, CSRF, headers, audit and (main server) the pages and CLI."""
    app.config["SESSION_COOKIE_SECURE"] = (bool(app.config.get("SESSION_COOKIE_SECURE"))
                                           or app.config["MAIN_URL"].startswith("https://"))
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=float(app.config["SESSION_HOURS"])),
        # The gate calls csrf.protect() itself: bearer-token requests need no CSRF token.
        WTF_CSRF_CHECK_DEFAULT=False,
        # A token lives as long as the sign-in (not one hour), so a long form session is not lost.
        WTF_CSRF_TIME_LIMIT=None,
        # The three servers post to each other (other ports = other origins), which the strict
        # HTTPS Referer check refuses; the token plus SameSite=Lax cookies guard cross-site posts.
        WTF_CSRF_SSL_STRICT=False,
    )
    if not 1 <= app.config["TOKEN_DAYS"] <= app.config["TOKEN_MAX_DAYS"]:
        raise ValueError("Setting TOKEN_DAYS must be 1 to TOKEN_MAX_DAYS (set KOL_TOKEN_DAYS, KOL_TOKEN_MAX_DAYS), "
                         f"not {app.config['TOKEN_DAYS']} and {app.config['TOKEN_MAX_DAYS']}.")
    if app.config["PROXY_FIX"]:
        n = int(app.config["PROXY_FIX"])
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n, x_port=n)

    app.extensions["accounts"] = for_data_dir(app.config["DATA_DIR"])
    csrf.init_app(app)

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

    app.before_request(_gate)
    app.after_request(_after)

    @app.errorhandler(CSRFError)
    def csrf_error(exc):
        return error_reply(CSRF_SENTENCE, 400)

    app.jinja_env.globals.update(is_admin=LocalProxy(_is_admin), csrf_field=csrf_field, csp_nonce=csp_nonce,
                                 csrf_token=generate_csrf)

    @app.context_processor
    def who_is_signed_in():
        return {"signed_in": principal()}

    if app.config["SECTION"] == "main":
        # Counted in the job queue's Redis unless told otherwise, so that every server process and
        # machine shares one count (in this process's memory while that Redis cannot be reached);
        # the prefix keeps installations that share a Redis apart.
        storage = app.config["RATELIMIT_STORAGE_URI"] or app.config["REDIS_URL"]
        prefix = "kol-sign-in:" + hashlib.sha1(str(Path(app.config["DATA_DIR"]).resolve()).encode()).hexdigest()[:12]
        limiter = Limiter(get_remote_address, app=app, storage_uri=storage, default_limits=[], headers_enabled=False,
                          in_memory_fallback_enabled=True, key_prefix=prefix,
                          storage_options={"socket_connect_timeout": 1, "socket_timeout": 1})
        app.register_blueprint(bp)
        view = app.view_functions["auth.login"]
        for setting, key, whom in _SIGN_IN_LIMITS:
            view = limiter.limit(app.config[setting], key_func=key,
                                 **_failed_sign_ins(f"{whom} (at most {app.config[setting]})"))(view)
        app.view_functions["auth.login"] = view
        # Guessing the current password on the account page is limited as sign-ins are, per account.
        app.view_functions["auth.change_password"] = limiter.limit(
            app.config["LOGIN_LIMIT"], key_func=lambda: _account_key(principal().name if principal() else ""),
            **_failed_sign_ins(f"for this account (at most {app.config['LOGIN_LIMIT']})"))(
            app.view_functions["auth.change_password"])
        _install_cli(app)


def _account_key(name):
    """The sign-in limiter's key for the account ``name`` as typed: look-alike spellings of one
    name (case, accents, spacing: :func:`shared.core.names.name_key`) are one account."""
    return "account:" + name_key(name or "")


def _pair_key():
    """The sign-in limiter's key for this address and the account named in the form, together."""
    return f"pair:{get_remote_address()}:{_account_key(request.form.get('name'))}"


#: The limits on failed sign-ins: (setting, limiter key, whom the sentence names). An office
#: behind one address shares only the address's own, much higher, limit.
_SIGN_IN_LIMITS = (
    ("LOGIN_LIMIT", _pair_key, "for this account from this address"),
    ("LOGIN_ACCOUNT_LIMIT", lambda: _account_key(request.form.get("name")), "for this account"),
    ("LOGIN_ADDRESS_LIMIT", get_remote_address, "from this address"),
)


def _failed_sign_ins(whom):
    """The limiter options that count only failed attempts (401) of a POST, and the sentence of the 429."""
    return {"deduct_when": lambda response: response.status_code == 401, "methods": ["POST"],
            "error_message": f"Too many failed sign-ins {whom}: wait a while and try again."}


# -- pages (main server) --------------------------------------------------------------------------
def _sign_in(row):
    """Sign the user ``row`` in: a fresh cookie holding a new server-side session (nothing carries over)."""
    session.clear()
    session.permanent = True
    key = accounts().start_session(row["id"], current_app.config["SESSION_HOURS"])
    login_user(Principal({**row, "session_key": key}, "session"))


@bp.route("/login", methods=["GET", "POST"])
def login():
    """Sign in with name and password; ``next`` (one of the three servers) is where to go afterwards."""
    if not accounts().has_accounts():
        return redirect(url_for("auth.setup"))
    next_url = safe_next(request.values.get("next")) or _main("/")
    if request.method == "GET":
        if principal() is not None and principal().via == "session":
            return redirect(next_url)
        return reply("auth/login.html", {"signed_in": False}, next_url=next_url, no_users=not accounts().has_users())
    name = (request.form.get("name") or "").strip()
    row = accounts().authenticate(name, request.form.get("password") or "")
    if row is None:
        record("sign-in.failed", {"name": name[:64]}, actor=name[:64] or "?")
        return reply("auth/login.html", {"error": "The name or the password is wrong."}, 401,
                      next_url=next_url, name=name)
    _sign_in(row)
    record("sign-in", actor=row["name"], role=row["role"], via="session")
    if _wants_json():
        return jsonify({"signed_in": row["name"], "role": row["role"]})
    return redirect(next_url, 303)


@bp.post("/logout")
def logout():
    """Sign out (of all three servers: they share the session cookie). This session ends on the server,
    so a copy of the cookie stops working too; the user's other sign-ins go on."""
    record("sign-out")
    if principal() is not None and principal().via == "session":
        accounts().end_session(principal().row["session_key"])
    logout_user()
    session.clear()
    return redirect(url_for("auth.login"), 303)


@bp.route("/setup", methods=["GET", "POST"])
def setup():
    """First run only: create the first admin. Gone (404) once any user or API token exists."""
    if accounts().has_accounts():
        abort(404)
    if request.method == "GET":
        return reply("auth/setup.html", {"setup": True})
    name, password = request.form.get("name") or "", request.form.get("password") or ""
    if password != (request.form.get("password2") or ""):
        raise UserError("The two passwords differ: type the same password twice.", 400)
    row = accounts().create_user(name, password, "admin", created_by="first run", first_admin=True)
    _sign_in(row)
    record("user.create", {"name": row["name"], "role": "admin", "first_run": True}, actor=row["name"],
           role="admin", via="session")
    return redirect(url_for("auth.users"), 303)


@bp.get("/account")
def account():
    """Who am I (name, role); JSON for scripts to check their token. The form to change one's password,
    and one's own latest :data:`ACTIVITY_ROWS` rows of the audit trail (everyone's is for admins)."""
    return _account_page(principal())


def _account_page(p, status=200, error=None):
    """The account page of the principal ``p`` (with ``error`` above the password form, if any)."""
    rows, total = accounts().audit(0, ACTIVITY_ROWS, actor=p.actor)
    activity = [{k: r[k] for k in ("at", "action", "detail", "remote", "server")} for r in rows]
    payload = {"name": p.name, "role": p.role, "via": p.via, "activity": activity, "activity_total": total}
    if error:
        payload["error"] = error
    return reply("auth/account.html", payload, status, password_min=PASSWORD_MIN)


@bp.post("/account")
def change_password():
    """Change one's own password: fields ``password`` (the current one), ``new_password``, ``new_password2``.

    Wrong current password: 401 (counted like a failed sign-in); the two new ones differ: 400.
    Every other session of the user ends; this one stays signed in."""
    p = principal()
    if p.via != "session":
        raise UserError("An API token has no password: sign in with a name and password to change it.", 400)
    form = request.form
    if accounts().authenticate(p.name, form.get("password") or "") is None:
        record("password.failed")
        return _account_page(p, 401, "The current password is wrong.")
    if (form.get("new_password") or "") != (form.get("new_password2") or ""):
        raise UserError("The two new passwords differ.", 400)
    accounts().set_password(p.row["id"], form.get("new_password"), keep_session=p.row["session_key"])
    record("password.change")
    if _wants_json():
        return jsonify({"name": p.name, "password_changed": True})
    flash("Your password was changed; your other sign-ins have ended.")
    return redirect(url_for("auth.account"), 303)


@bp.get("/admin/users")
def users():
    """Users and API tokens, with the forms to add, change and revoke them."""
    return _users_page()


def _users_page(made=None, new_token=None):
    """The Users page (JSON: ``users`` and ``tokens``); ``made``: the new token's fields, shown once."""
    config = current_app.config
    return reply("auth/users.html", {**(made or {}), "users": accounts().users(), "tokens": accounts().tokens()},
                  roles=ROLES, new_token=new_token, me=principal().row["id"] if principal().via == "session" else None,
                  token_days=config["TOKEN_DAYS"], token_max_days=config["TOKEN_MAX_DAYS"])


def _int_field(name):
    raw = request.form.get(name) or ""
    if not raw.isdigit():
        raise UserError(f"Which one? The form field '{name}' must be a number.", 400)
    return int(raw)


@bp.post("/admin/users")
def user_action():
    """``action`` = create (name, password, role) | role (user, role) | password (user, password) | delete (user)."""
    action = request.form.get("action", "create")
    if action == "create":
        row = accounts().create_user(request.form.get("name"), request.form.get("password"),
                                     request.form.get("role"), created_by=principal().actor)
        record("user.create", {"name": row["name"], "role": row["role"]})
    else:
        user_id = _int_field("user")
        row = accounts().user(user_id)
        if row is None:
            raise UserError("There is no such user.", 404)
        if action == "role":
            role = request.form.get("role")
            accounts().set_role(user_id, role)
            record("user.role", {"name": row["name"], "role": role})
        elif action == "password":
            accounts().set_password(user_id, request.form.get("password"))
            record("user.password", {"name": row["name"]})
        elif action == "delete":
            accounts().delete_user(user_id)
            record("user.delete", {"name": row["name"]})
        else:
            raise UserError("The action must be create, role, password or delete.", 400)
    if _wants_json():
        return jsonify({"users": accounts().users()})
    return redirect(url_for("auth.users"), 303)


@bp.post("/admin/tokens")
def token_action():
    """``action`` = create (name, role, days): shows the new token once | revoke (token id).

    A token made here belongs to the signed-in admin who made it (``maker_id``); a token cannot make tokens."""
    action = request.form.get("action", "create")
    if action == "create":
        if principal().via != "session":
            raise UserError("An API token cannot make tokens: sign in as an admin, "
                            "or use 'flask --app main_server create-token'.", 403)
        days = check_token_days(request.form.get("days") or current_app.config["TOKEN_DAYS"],
                                current_app.config["TOKEN_MAX_DAYS"])
        token, row = accounts().create_token(request.form.get("name"), request.form.get("role"),
                                             created_by=principal().actor, days=days, maker_id=principal().row["id"])
        record("token.create", {"name": row["name"], "role": row["role"], "token_id": row["id"],
                                "expires_at": row["expires_at"]})
        made = {"token": token, **{k: row[k] for k in ("id", "name", "role", "expires_at")}}
        return _users_page(made, new_token=token)
    if action == "revoke":
        token_id = _int_field("token")
        row = accounts().token(token_id)
        accounts().revoke_token(token_id)
        record("token.revoke", {"name": row["name"], "token_id": token_id})
        if _wants_json():
            return jsonify({"revoked": token_id})
        return redirect(url_for("auth.users"), 303)
    raise UserError("The action must be create or revoke.", 400)


PAGE_SIZE = 50


#: How many of one's own audit rows the account page shows.
ACTIVITY_ROWS = 20


@bp.get("/admin/audit")
def audit():
    """The audit trail, newest first, ``PAGE_SIZE`` rows a page (``?page=N``, from 1)."""
    raw = request.args.get("page", "1")
    page = int(raw) if raw.isdigit() and 0 < int(raw) < 10 ** 6 else 1
    rows, total = accounts().audit((page - 1) * PAGE_SIZE, PAGE_SIZE)
    pages = max(1, -(-total // PAGE_SIZE))
    return reply("auth/audit.html", {"rows": rows, "total": total, "page": page, "pages": pages},
                  counts=accounts().prediction_counts())


@bp.get("/admin/audit.csv")
def audit_csv():
    """The whole audit trail as CSV (UTF-8), oldest first."""
    out = io.StringIO()
    writer = csvsafe.writer(out)  # text cells never read as formulas
    writer.writerow(["id", "at", "actor", "role", "via", "action", "detail", "remote", "server"])
    offset, total = 0, None
    chunks = []
    while total is None or offset < total:
        rows, total = accounts().audit(offset, 1000)
        chunks.extend(rows)
        offset += 1000
        if not rows:
            break
    for row in reversed(chunks):
        detail = "; ".join(f"{k}={v}" for k, v in row["detail"].items())
        writer.writerow([row["id"], row["at"], row["actor"], row["role"], row["via"], row["action"], detail,
                         row["remote"], row["server"]])
    return Response("\ufeff" + out.getvalue(), mimetype="text/csv",
                    headers={"Content-Disposition": "attachment; filename=audit.csv"})


# -- command line (main server) ---------------------------------------------------------------------
def _install_cli(app):
    role_option = click.option("--role", type=click.Choice(ROLES), default="member", show_default=True)

    @app.cli.command("create-token")
    @click.argument("name")
    @role_option
    @click.option("--days", default=app.config["TOKEN_DAYS"], show_default=True,
                  help=f"how long it lasts (1 to TOKEN_MAX_DAYS, {app.config['TOKEN_MAX_DAYS']})")
    def create_token(name, role, days):
        """Make an API token NAME with ROLE lasting DAYS; prints the token alone on the last line."""
        store = app.extensions["accounts"]
        try:
            days = check_token_days(days, app.config["TOKEN_MAX_DAYS"])
            token, row = store.create_token(name, role, created_by="command line", days=days)
        except UserError as exc:
            raise click.ClickException(exc.message)
        store.record("command line", "token.create", {"name": row["name"], "role": role, "token_id": row["id"],
                                                      "expires_at": row["expires_at"]}, via="cli", server="main")
        click.echo(f"Token {row['id']} '{row['name']}' ({role}, until {row['expires_at']}); it is shown only now:",
                   err=True)
        click.echo(token)

    @app.cli.command("create-user")
    @click.argument("name")
    @role_option
    def create_user(name, role):
        """Make a user NAME with ROLE; the password is read from stdin (one line)."""
        import sys

        if sys.stdin.isatty():
            password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
        else:
            password = sys.stdin.readline().rstrip("\r\n")
        store = app.extensions["accounts"]
        try:
            row = store.create_user(name, password, role, created_by="command line")
        except UserError as exc:
            raise click.ClickException(exc.message)
        store.record("command line", "user.create", {"name": row["name"], "role": role}, via="cli", server="main")
        click.echo(f"User '{row['name']}' ({role}) created.")
