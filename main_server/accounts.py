"""The main server's account pages: sign in and out, first run, one's account, users, API tokens, the audit trail.

A blueprint named ``auth`` (its endpoints ``auth.login``, ``auth.users``, ... are what the access
table of :mod:`shared.web.access`, the templates' ``url_for`` and the audit trail name); the sign-in
machinery itself is :mod:`shared.web.auth`, the database :mod:`shared.web.accounts`.

Failed sign-ins are limited (Flask-Limiter, on the views themselves) three ways, so that one office
behind one address is not locked out by one person's typos: ``LOGIN_LIMIT`` (``10 per minute``) per
address and account together, ``LOGIN_ACCOUNT_LIMIT`` (``30 per hour``) per account from anywhere,
``LOGIN_ADDRESS_LIMIT`` (``100 per minute``) per address for all accounts; a wrong current password
on the account page counts against ``LOGIN_LIMIT`` per account. Only failed attempts (401) count.
They are counted in ``RATELIMIT_STORAGE_URI`` (empty: the job queue's ``REDIS_URL``, shared by
every server process and machine, with this process's memory as the fallback while it is down;
``memory://`` to count per process). The views say which limits they have (:func:`_failed_sign_ins`);
:func:`init_limiter` gives each app its own Flask-Limiter, with that app's storage, and binds them
there, so two apps in one process (tests) never share a count or a dead storage.
"""
import hashlib
import io
from pathlib import Path

from flask import Blueprint, Response, abort, current_app, flash, jsonify, redirect, request, session, url_for
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import logout_user

from shared.core import csvsafe
from shared.core.errors import UserError
from shared.core.names import name_key
from shared.web.access import accounts, json_wanted, main_url, principal, record, safe_next
from shared.web.account_rules import PASSWORD_MIN, ROLES, check_token_days
from shared.web.auth import sign_in
from shared.web.replies import reply

bp = Blueprint("auth", __name__)

#: Where an app keeps its installation's prefix of the limiter's keys.
_PREFIX = "sign-in-limit-prefix"
#: The attribute of a view function listing its sign-in limits (``(setting, key, whom)``, innermost first).
_LIMITS = "sign_in_limits"

#: How many of one's own audit rows the account page shows.
ACTIVITY_ROWS = 20
#: Rows a page of the audit trail.
PAGE_SIZE = 50


def init_limiter(app):
    """Count ``app``'s failed sign-ins in its storage, apart from other installations sharing a Redis."""
    # Counted in the job queue's Redis unless told otherwise, so that every server process and
    # machine shares one count (in this process's memory while that Redis cannot be reached);
    # the prefix keeps installations that share a Redis apart.
    app.config["RATELIMIT_STORAGE_URI"] = app.config["RATELIMIT_STORAGE_URI"] or app.config["REDIS_URL"]
    app.extensions[_PREFIX] = ("kol-sign-in:"
                               + hashlib.sha1(str(Path(app.config["DATA_DIR"]).resolve()).encode()).hexdigest()[:12])
    limiter = Limiter(get_remote_address, app=app, default_limits=[], headers_enabled=False,
                      in_memory_fallback_enabled=True,
                      storage_options={"socket_connect_timeout": 1, "socket_timeout": 1})
    for endpoint, view in list(app.view_functions.items()):
        for setting, key, whom in getattr(view, _LIMITS, ()):
            view = limiter.limit(
                lambda setting=setting: current_app.config[setting], key_func=key, methods=["POST"],
                deduct_when=lambda response: response.status_code == 401,
                error_message=lambda setting=setting, whom=whom: (
                    f"Too many failed sign-ins {whom} (at most {current_app.config[setting]}): "
                    "wait a while and try again."))(view)
        app.view_functions[endpoint] = view


def _key(text):
    """The limiter's key ``text`` of this installation (its data folder's prefix first)."""
    return f"{current_app.extensions[_PREFIX]}/{text}"


def _account_key(name):
    """The sign-in limiter's key for the account ``name`` as typed: look-alike spellings of one
    name (case, accents, spacing: :func:`shared.core.names.name_key`) are one account."""
    return _key("account:" + name_key(name or ""))


def _pair_key():
    """The sign-in limiter's key for this address and the account named in the form, together."""
    return _key(f"pair:{get_remote_address()}:account:{name_key(request.form.get('name') or '')}")


def _address_key():
    """The sign-in limiter's key for this address, whatever account is tried."""
    return _key(get_remote_address())


def _failed_sign_ins(setting, key, whom):
    """Mark a view as limited by setting ``setting`` (``"10 per minute"``) per ``key()`` on failed
    attempts (401) of a POST, the 429's sentence naming ``whom``; :func:`init_limiter` applies the
    marks with each app's own limiter. An office behind one address shares only the address's own,
    much higher, limit."""
    def mark(view):
        view.__dict__.setdefault(_LIMITS, []).append((setting, key, whom))
        return view
    return mark


# -- pages ------------------------------------------------------------------------------------------
@bp.route("/login", methods=["GET", "POST"])
@_failed_sign_ins("LOGIN_ADDRESS_LIMIT", _address_key, "from this address")
@_failed_sign_ins("LOGIN_ACCOUNT_LIMIT", lambda: _account_key(request.form.get("name")), "for this account")
@_failed_sign_ins("LOGIN_LIMIT", _pair_key, "for this account from this address")
def login():
    """Sign in with name and password; ``next`` (one of the three servers) is where to go afterwards."""
    if not accounts().has_accounts():
        return redirect(url_for("auth.setup"))
    next_url = safe_next(request.values.get("next")) or main_url("/")
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
    sign_in(row)
    record("sign-in", actor=row["name"], role=row["role"], via="session")
    if json_wanted():
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
    sign_in(row)
    record("user.create", {"name": row["name"], "role": "admin", "first_run": True}, actor=row["name"],
           role="admin", via="session")
    flash(f"Your admin account {row['name']} is ready. Now teach the tool your first KOLs: upload a zip with one "
          "folder of photos per KOL. Add users and API tokens later, under Users.")
    return redirect(url_for("training.train_model"), 303)


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
# Guessing the current password on the account page is limited as sign-ins are, per account.
@_failed_sign_ins("LOGIN_LIMIT", lambda: _account_key(principal().name if principal() else ""), "for this account")
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
    if json_wanted():
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
        said = f"The user {row['name']} ({row['role']}) was added: they can sign in now."
    else:
        user_id = _int_field("user")
        row = accounts().user(user_id)
        if row is None:
            raise UserError("There is no such user.", 404)
        if action == "role":
            role = request.form.get("role")
            accounts().set_role(user_id, role)
            record("user.role", {"name": row["name"], "role": role})
            said = f"{row['name']} is {'an' if role == 'admin' else 'a'} {role} now."
        elif action == "password":
            accounts().set_password(user_id, request.form.get("password"))
            record("user.password", {"name": row["name"]})
            said = f"The password of {row['name']} was changed."
        elif action == "delete":
            accounts().delete_user(user_id)
            record("user.delete", {"name": row["name"]})
            said = f"The user {row['name']} was removed and signed out."
        else:
            raise UserError("The action must be create, role, password or delete.", 400)
    if json_wanted():
        return jsonify({"users": accounts().users()})
    flash(said)
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
        if json_wanted():
            return jsonify({"revoked": token_id})
        return redirect(url_for("auth.users"), 303)
    raise UserError("The action must be create or revoke.", 400)


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
