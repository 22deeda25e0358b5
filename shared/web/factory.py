"""The one Flask app factory helper used by all three servers.

:func:`make_app` layers configuration (:data:`DEFAULTS`, then the environment:
``KOL_<NAME>`` for every setting and a few documented plain names, then the
``test_config`` a test passes), points every app at the one ``data/`` folder,
keeps the secret key out of the repository, and installs what the three servers
share: ``GET /healthz`` (what the pages need, tried: the data folder, the accounts database,
the process server's Redis), error pages that are JSON for scripts (a full disk: 507), and
:func:`reply`, which answers HTML or JSON from the same view.
"""
import json
import logging
import os
import re
import secrets
import threading
import unicodedata
from pathlib import Path

from flask import Flask, g, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from shared.core.errors import UserError
from shared.core.storage import DISK_FULL, atomic_write_bytes, create_once, is_disk_full, private_folder

ROOT = Path(__file__).resolve().parent.parent.parent

#: Every setting, with its default. Each one can be set from the environment as ``KOL_<NAME>``
#: (Flask's ``from_prefixed_env``: values are read as JSON when they parse, so
#: ``KOL_VIDEO_KEEP=5`` is the number 5), and the names in :data:`PLAIN_ENV` also without the
#: prefix. The README's settings table lists them all; ``tests/test_config.py`` keeps it true.
DEFAULTS = {
    "DATA_DIR": str(ROOT / "data"),
    "MAIN_URL": "http://127.0.0.1:5000",
    "PROCESS_URL": "http://127.0.0.1:5001",
    "VIDEO_URL": "http://127.0.0.1:5002",
    "SECRET_KEY": "",  # empty: generated into DATA_DIR/instance/secret_key on first start
    # Uploads: one zip or video up to 512 MiB; batches of a few hundred photos.
    "MAX_CONTENT_LENGTH": 512 * 1024 * 1024,
    "MAX_FORM_PARTS": 2000,
    "MAX_FORM_MEMORY_SIZE": 1024 * 1024,
    # Face work: worker processes per server process (0: one per CPU core this process may use).
    "FACE_WORKERS": 0,
    # Streamed video frames are scaled down to this longest side in pixels (0: as decoded).
    "VIDEO_STREAM_SIDE": 1280,
    # Housekeeping (shared/web/housekeeping.py; `flask housekeeping`, and every HOUSEKEEPING_EVERY_S
    # seconds from a background thread of the main server, 0 to turn that off).
    "VIDEO_KEEP": 20,
    "VIDEO_MAX_AGE_S": 24 * 3600,
    "PREDICTION_MAX_AGE_S": 24 * 3600,
    "JOB_INCOMPLETE_MAX_AGE_S": 6 * 3600,
    "JOB_MAX_AGE_DAYS": 30,
    "MODEL_VERSIONS_KEEP": 5,
    "HOUSEKEEPING_EVERY_S": 3600,
    # Photo batches (shared/recognition/batch.py): most batches one user (or API token) may have running at
    # once (0: no limit; one more gets a 429), and seconds without a heartbeat from the server
    # process running a batch after which it is shown as stopped (0: never; the heartbeat comes
    # every 5 s, or every quarter of this when that is shorter).
    "BATCH_CONCURRENT_PER_USER": 2,
    "BATCH_STALE_S": 60,
    # The job queue (shared/training/jobqueue.py): the Redis it lives in (empty: the one bin/redis starts,
    # redis://:PASSWORD@127.0.0.1:REDIS_PORT/0 with REDIS_PORT 6479 and the password generated
    # into DATA_DIR/instance/redis_password, see local_redis_url; a URL set by the user is used
    # as given, so it must carry its Redis's password), seconds a POST /clean or /import_result
    # waits for its queued work before answering with the progress page (202 in JSON), photos
    # per align chunk (a job is split so that every worker takes a part at once).
    "REDIS_URL": "",
    "STEP_WAIT_S": 120,
    "ALIGN_CHUNK": 12,
    # Sign-in (shared/web/auth.py): how long a sign-in lasts, proxies trusted for X-Forwarded-*,
    # failed sign-ins allowed (Flask-Limiter's "N per minute|hour|day") per address and account
    # together, per account from any address, and per address for all accounts (high, so an office
    # behind one address is not locked out by one person), and where the limiter counts them.
    "SESSION_HOURS": 12,  # a sign-in ends this many hours after it began, however much it is used
    "SESSION_IDLE_MINUTES": 120,  # ...and after this many minutes without a request (0: no idle limit)
    # API tokens: days a new one lasts unless its maker says, and the most it may (both >= 1).
    "TOKEN_DAYS": 90,
    "TOKEN_MAX_DAYS": 365,
    "PROXY_FIX": 0,
    "LOGIN_LIMIT": "10 per minute",
    "LOGIN_ACCOUNT_LIMIT": "30 per hour",
    "LOGIN_ADDRESS_LIMIT": "100 per minute",
    "RATELIMIT_STORAGE_URI": "",  # empty: REDIS_URL (one count for every process), memory while it is down
    "SESSION_COOKIE_SECURE": False,
    # Zips (shared/training/archive.py: training zips, and zips in a batch or a KOL's "add photos"): most
    # files one upload may unpack, and most bytes once uncompressed (counted while unzipping too).
    "UPLOAD_MAX_FILES": 5000,
    "UPLOAD_MAX_UNPACKED_BYTES": 4 * 1024 ** 3,
}
#: The documented names that also work without the ``KOL_`` prefix (the prefixed name wins).
PLAIN_ENV = ("DATA_DIR", "MAIN_URL", "PROCESS_URL", "VIDEO_URL", "MAX_CONTENT_LENGTH", "SECRET_KEY", "REDIS_URL")
ENV_PREFIX = "KOL"

SECTIONS = {"main": "MAIN_URL", "process": "PROCESS_URL", "video": "VIDEO_URL"}


def make_app(import_name, section, test_config=None, defaults=None):
    """Create a Flask app for one of the three servers.

    section: ``"main"``, ``"process"`` or ``"video"`` (used for the header and ``/healthz``).
    defaults: the server's own default settings, below environment and ``test_config``.
    """
    app = Flask(import_name, template_folder=str(ROOT / "templates"),
                static_folder=str(ROOT / "static"))
    app.config.from_mapping(DEFAULTS)
    app.config.update(defaults or {})
    for key in PLAIN_ENV:
        if os.environ.get(key):
            app.config[key] = _parse_env(os.environ[key])
    app.config.from_prefixed_env(ENV_PREFIX)
    if test_config:
        app.config.update(test_config)
    _check_types(app.config)
    for key in SECTIONS.values():
        app.config[key] = app.config[key].rstrip("/")
    app.config["SECTION"] = section

    data_dir = Path(app.config["DATA_DIR"]).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    app.config["DATA_DIR"] = str(data_dir)
    app.instance_path = str(private_folder(data_dir / "instance"))
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = _instance_secret(Path(app.instance_path))
    if not app.config["REDIS_URL"]:
        app.config["REDIS_URL"] = local_redis_url(data_dir)

    from shared.recognition.classifier import ModelStore
    from shared.training.pool import Pool

    from shared.faces import parallel

    parallel.limit(app.config["FACE_WORKERS"])
    app.extensions["pool"] = Pool(data_dir / "pool")
    app.extensions["models"] = ModelStore(data_dir / "models")
    _install_common(app, section)
    from shared.web import auth

    auth.init_app(app)  # sign-in, roles, tokens, CSRF, security headers, audit (shared/web/auth.py)
    return app


def _parse_env(raw):
    """An environment value as ``from_prefixed_env`` reads it: JSON when it parses, else the text."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _check_types(config):
    """Give each setting the type of its default, or stop the start with a clear sentence.

    Text settings stay text even when the environment value looks like a number
    (``KOL_SECRET_KEY=1234``); number settings must be whole numbers >= 0.
    """
    for key, default in DEFAULTS.items():
        value = config.get(key)
        if isinstance(default, str):
            config[key] = "" if value is None else str(value)
        elif isinstance(default, int) and not isinstance(default, bool):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"Setting {key} must be a whole number >= 0 "
                                 f"(set {ENV_PREFIX}_{key}), not {value!r}.")


def warm_up(app):
    """Load the dlib networks and the current model in the background, unless testing.

    Called by the servers that predict, so the first request after a start does not pay
    the ~2 s of loading; requests that arrive earlier simply wait for the same load.
    """
    if app.testing:
        return

    def load():
        from shared.faces import engine

        try:
            engine.models()
            app.extensions["models"].current()
        except Exception:  # a broken model shows up on the first request, with its error page
            logging.getLogger(app.import_name).exception("warm-up failed")

    threading.Thread(target=load, name="warm-up", daemon=True).start()


def pool():
    """The training pool of the current app (:class:`shared.training.pool.Pool`)."""
    from flask import current_app

    return current_app.extensions["pool"]


def models():
    """The model store of the current app (:class:`shared.recognition.classifier.ModelStore`)."""
    from flask import current_app

    return current_app.extensions["models"]


def data_path(*parts):
    """A path under the current app's ``DATA_DIR``."""
    from flask import current_app

    return Path(current_app.config["DATA_DIR"]).joinpath(*parts)


def _instance_secret(folder):
    """The secret key kept in ``data/instance/secret_key`` (64 hex digits), generated on first start.

    The three servers often start at the same moment on an empty data folder: the file is
    created once (:func:`shared.core.storage.create_once`), so they all sign with the same key.
    """
    return _instance_token(private_folder(folder) / "secret_key")


def redis_password(data_dir):
    """The local Redis's password (64 hex digits), kept in ``DATA_DIR/instance/redis_password``
    (0600, in the 0700 instance folder) and generated by whichever of the servers, the workers and
    ``bin/redis`` needs it first."""
    return _instance_token(private_folder(Path(data_dir) / "instance") / "redis_password")


def local_redis_url(data_dir):
    """The URL of the Redis that ``bin/redis`` starts for ``data_dir``: 127.0.0.1, port ``REDIS_PORT``
    (environment, default 6479), database 0, with :func:`redis_password`. Never shown or logged."""
    return f"redis://:{redis_password(data_dir)}@127.0.0.1:{os.environ.get('REDIS_PORT') or 6479}/0"


def _instance_token(path):
    """A random 64-hex-digit text kept in the file ``path``, made once for every process that asks."""
    return create_once(path, lambda: secrets.token_hex(32).encode()).decode().strip()


def upload_name(raw, fallback):
    """An uploaded file's own name, for display only (never a path).

    Its last path component (``/`` or ``\\``), control and format characters dropped,
    at most 120 characters; ``fallback`` when nothing is left. Unlike ``secure_filename``
    it keeps names such as "周杰伦.zip" readable.
    """
    text = "".join(ch for ch in str(raw or "") if unicodedata.category(ch)[0] != "C")
    parts = [p.strip() for p in re.split(r"[/\\]", text) if p.strip()]
    return parts[-1][:120].strip() if parts else fallback


def human_size(n):
    """``n`` bytes as a short text: ``"512 MiB"``, ``"97 KiB"``, ``"800 bytes"``."""
    n = int(n or 0)
    for unit, size in (("GiB", 1024 ** 3), ("MiB", 1024 ** 2), ("KiB", 1024)):
        if n >= size:
            value = n / size
            return f"{value:.0f} {unit}" if value >= 10 or value == int(value) else f"{value:.1f} {unit}"
    return f"{n} bytes"


def _yours(size):
    """``"; yours is 1.2 GiB"`` for a size message (exact bytes when the rounded sizes would look equal)."""
    if not size:
        return ""
    from flask import current_app

    limit = current_app.config["MAX_CONTENT_LENGTH"]
    shown = human_size(size)
    if shown == human_size(limit):
        shown = f"{size:,} bytes, {size - limit:,} bytes too many"
    return f"; yours is {shown}"


def wants_json():
    """True when the client asked for JSON (``Accept: application/json`` preferred over HTML)."""
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json" and request.accept_mimetypes[best] > request.accept_mimetypes["text/html"]


def reply(template, payload, status=200, **context):
    """Answer ``payload`` as JSON for scripts, or render ``template`` with it for browsers.

    The template receives ``payload``'s keys plus ``context`` (page-only extras).
    """
    if wants_json():
        return jsonify(payload), status
    return render_template(template, **payload, **context), status


def error_reply(message, status):
    """The 4xx/5xx answer: ``{"error": message}`` or the error page."""
    if wants_json():
        return jsonify({"error": message}), status
    return render_template("error.html", message=message, status=status), status


def health_checks(app):
    """What every page of ``app`` needs, tried now: ``{"data", "accounts"[, "redis"]: "ok" or a sentence}``.

    data: a small file is written (atomically) in ``DATA_DIR`` and removed; accounts: the accounts
    database reads and writes (:meth:`shared.web.accounts.Accounts.check_health`); redis (process server
    only): the job queue's Redis answers a ping within its timeout.
    """
    checks = {"data": _try(app, "data", lambda: _write_and_remove(Path(app.config["DATA_DIR"]) / ".healthz")),
              "accounts": _try(app, "accounts", app.extensions["accounts"].check_health)}
    if app.config["SECTION"] == "process":
        from shared.training import jobqueue

        checks["redis"] = _try(app, "redis", lambda: jobqueue.connect(app.config["REDIS_URL"]).ping())
    return checks


#: What :func:`health_checks` says when a check fails for another reason than a full disk.
HEALTH_SENTENCES = {
    "data": "The data folder cannot be written.",
    "accounts": "The accounts database cannot be read or written.",
    "redis": "The job queue's Redis is not answering.",
}


def _try(app, name, check):
    """``"ok"`` when ``check()`` succeeds, else the sentence of its failure (the error is logged)."""
    try:
        check()
        return "ok"
    except Exception as exc:
        logging.getLogger(app.import_name).error("health check %s failed: %r", name, exc)
        return DISK_FULL if is_disk_full(exc) else HEALTH_SENTENCES[name]


def _write_and_remove(path):
    """Write a 2-byte file at ``path`` (atomically) and remove it: the folder takes new files."""
    atomic_write_bytes(path, b"ok")
    try:
        os.unlink(path)
    except FileNotFoundError:  # another health check removed it first
        pass


def _as_nobody(app):
    """When finding out who is asking is what failed (the accounts database on a full disk), let the
    error page and the rest of this request see nobody signed in instead of failing again."""
    if "_login_user" not in g:
        g._login_user = app.login_manager.anonymous_user()


def _install_common(app, section):
    from shared.web import housekeeping

    housekeeping.install(app)  # the `flask housekeeping` command

    @app.get("/healthz")
    def healthz():
        """200 when what the pages need works now (:func:`health_checks`), else 503 naming what failed."""
        checks = health_checks(app)
        if all(result == "ok" for result in checks.values()):
            return jsonify({"status": "ok", "server": section})
        return jsonify({"status": "error", "server": section, "checks": checks}), 503

    @app.context_processor
    def server_links():
        return {"section": section, "server_urls": {s: app.config[k] for s, k in SECTIONS.items()}}

    # Templates wrap admin-only actions in ``{% if is_admin %}`` and put ``{{ csrf_field() }}``
    # inside every POST form: both globals come from shared/web/auth.py (installed by make_app).

    @app.errorhandler(UserError)
    def user_error(exc):
        return error_reply(exc.message, exc.status)

    @app.errorhandler(HTTPException)
    def http_error(exc):
        messages = {
            404: "There is no page at this address.",
            405: f"This address does not accept {request.method} requests.",
            413: "The upload is larger than this server accepts "
                 f"({human_size(app.config['MAX_CONTENT_LENGTH'])} at most){_yours(request.content_length)}.",
        }
        if exc.code == 413 and (request.content_length or 0) <= app.config["MAX_CONTENT_LENGTH"]:
            # Werkzeug answers 413 too when a form has more parts than MAX_FORM_PARTS
            messages[413] = (f"The upload holds too many files or fields "
                             f"({app.config['MAX_FORM_PARTS']} at most in one request): send fewer at a time.")
        return error_reply(messages.get(exc.code, exc.description or exc.name), exc.code or 500)

    @app.errorhandler(Exception)
    def unexpected(exc):
        _as_nobody(app)
        if is_disk_full(exc):
            logging.getLogger(app.import_name).error("disk full on %s %s: %s", request.method, request.path, exc)
            return error_reply(DISK_FULL, 507)
        logging.getLogger(app.import_name).exception("unhandled error on %s %s", request.method, request.path)
        return error_reply("Something went wrong on the server; the error was logged. "
                           "Nothing you uploaded was lost: please try again.", 500)
