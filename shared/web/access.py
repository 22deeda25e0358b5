"""Who is asking and what they may do: the access table and the gate, the audit table and its hook.

:func:`shared.web.auth.init_app` installs :func:`gate` before every request and :func:`audit` after
it, on all three servers.

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
token changes are recorded explicitly by their views (``main_server/accounts.py``, with
:func:`record`). Predictions are only counted per user (:data:`COUNTED`), never logged with their photos.

In templates, ``{% if is_admin %}...{% endif %}`` goes around admin-only actions (``is_admin`` is
live per request, :func:`is_admin`).
"""
from fnmatch import fnmatchcase
from urllib.parse import urlencode, urlsplit

from flask import current_app, redirect, request
from flask_login import current_user

from shared.web.replies import error_reply, wants_json
from shared.web.security import csrf

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


def _members_review():
    """The review queue's pages and answers are for members too while ``REVIEW_MEMBERS`` is on (adding a face
    to the pool stays an admin's: the view checks its ``add``)."""
    return bool(current_app.config.get("REVIEW_MEMBERS"))


#: Endpoints a ``member`` may use (admins may use everything).
MEMBER = (
    "main:home.index",
    "main:predict.*",            # single, batch, similar: forms, results, result files, pool photos
    "main:video.upload_video_page",
    "main:video.predict_video_result",
    "main:analysis.*",           # analyse videos on the queue, their results, the screen-time report (own ones)
    "video:*",                   # the whole video server: player, stream, status
    ("process:wizard.import_result", _pool_summary_only),
    "process:wizard.pool_chip",  # the photos of the pool summary
    "main:kols.index",           # the roster, read-only (its changes are admin POSTs)
    "main:kols.kol",
    *((f"main:review.{view}", _members_review)  # the review queue: list, one face, its photo, answers
      for view in ("index", "item", "face", "answer")),  # (review.add, a face into the pool, is an admin's)
    "main:unknowns.index",       # the inbox of unknown people, read-only (its changes are admin POSTs)
    "main:unknowns.group",
    "main:unknowns.chip",
    "main:library.*",            # the library: see, search, keep one's own results; deleting media or a face
                                 # is for whoever kept it and admins (the view checks, as results do)
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
    "main:unknowns.*": lambda: "unknown." + request.endpoint.split(".", 1)[1],
    "main:library.keep_*": lambda: "library." + request.endpoint.split(".", 1)[1],
    "main:library.delete_*": lambda: "library." + request.endpoint.split(".", 1)[1],
    "*:models.*": lambda: "model." + request.endpoint.split(".", 1)[1],
    "main:analysis.upload": "analysis.upload",
}
#: Form fields that name the object of an audited action (values kept, at most 20 per field).
OBJECT_FIELDS = ("job", "kol", "delete", "mode", "reset", "remove", "keep", "slug", "name", "into", "target", "merge",
                 "version", "video", "crop", "other", "face", "run")
#: Successful POSTs counted per user (never logged): endpoint -> kind.
COUNTED = {
    "main:predict.single_image": "single",
    "main:predict.batch_image": "batch",
    "main:predict.similar_result": "similar",
    "main:video.predict_video_result": "video",
}

UNSAFE = ("POST", "PUT", "PATCH", "DELETE")


# -- who is asking ------------------------------------------------------------------------------
def accounts():
    """The :class:`shared.web.accounts.Accounts` of the current app."""
    return current_app.extensions["accounts"]


def principal():
    """The current :class:`shared.web.auth.Principal` (a user or an API token), or ``None`` when
    nobody is signed in (Flask-Login's anonymous user is not authenticated)."""
    user = current_user._get_current_object() if current_user else None
    return user if user is not None and user.is_authenticated else None


def is_admin():
    """True when the current principal has the admin role (the template global ``is_admin``)."""
    p = principal()
    return bool(p and p.is_admin)


def bearer_request():
    """True when the request carries ``Authorization: Bearer ...`` (a script with an API token).
    Other schemes (a proxy's Basic auth) are left alone: such requests sign in as browsers do."""
    return request.headers.get("Authorization", "")[:7].lower() == "bearer "


def json_wanted():
    """True when the answer should be JSON: the client asked for it (:func:`shared.web.replies.wants_json`)
    or sends an API token."""
    return wants_json() or bearer_request()


# -- where to send people -------------------------------------------------------------------------
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


def main_url(path, **query):
    """The main server's public address of ``path`` (``"/login"``), with ``query`` as its query string."""
    return f"{current_app.config['MAIN_URL']}{path}" + (f"?{urlencode(query)}" if query else "")


def _here():
    """This request's address on this server's public base URL (what ``next`` must come back to)."""
    base = current_app.config[{"main": "MAIN_URL", "process": "PROCESS_URL", "video": "VIDEO_URL"}
                              [current_app.config["SECTION"]]]
    return base + request.full_path.rstrip("?")


def record(action, detail=None, actor=None, role=None, via=None):
    """Add an audit row for the current request (who defaults to the signed-in principal)."""
    p = principal()
    accounts().record(actor or (p.actor if p else "anonymous"), action, detail,
                      role=role or (p.role if p else None), via=via or (p.via if p else None),
                      remote=request.remote_addr or "", server=current_app.config["SECTION"])


# -- the gate -----------------------------------------------------------------------------------
def gate():
    """Before every request: sign-in, first run, CSRF and role, by the table above."""
    endpoint = request.endpoint
    if endpoint is None:  # no such route: the 404/405 handlers answer
        return None
    section = current_app.config["SECTION"]
    needed = rule(section, endpoint)
    who = principal()
    token_request = bearer_request()
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
            return _deny(401, message, main_url("/setup"))
        next_url = _here() if request.method in ("GET", "HEAD") else safe_next(request.referrer)
        return _deny(401, "Sign in first: this address needs a signed-in user or an API token.",
                     main_url("/login", **({"next": next_url} if next_url else {})))
    if request.method in UNSAFE and who.via == "session":
        csrf.protect()
    if needed == "admin" and not who.is_admin:
        return _deny(403, f"Your account ({who.name}) is a member: only an admin may do this. "
                          "Ask an admin if you need it done.")
    return None


def _deny(status, message, location=None):
    if location and status == 401 and not json_wanted():
        return redirect(location, 303 if request.method in UNSAFE else 302)
    return error_reply(message, status)


def audit(response):
    """After a successful POST: its audit row (:data:`AUDITED`) and its prediction count (:data:`COUNTED`)."""
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
    return response
