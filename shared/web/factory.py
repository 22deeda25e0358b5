"""The one Flask app factory helper used by all three servers.

:func:`make_app` takes its settings from :func:`shared.core.config.load` (defaults, the
environment, the ``test_config`` a test passes), points every app at the one ``data/``
folder and installs what the three servers share: ``GET /healthz`` (what the pages need,
tried: the data folder, the accounts database, the process server's Redis), error pages that
are JSON for scripts (a full disk: 507; :mod:`shared.web.replies`), sign-in
(:mod:`shared.web.auth`), and the current app's pool, model store and data folder for the views.
"""
import logging
import os
import threading
from pathlib import Path

from flask import Flask, g, jsonify, request
from werkzeug.exceptions import HTTPException

from shared.core import config
from shared.core.config import ROOT
from shared.core.errors import UserError
from shared.core.names import human_size
from shared.core.storage import DISK_FULL, atomic_write_bytes, is_disk_full
from shared.web.replies import error_reply

SECTIONS = dict(zip(("main", "process", "video"), config.URL_SETTINGS))


def make_app(import_name, section, test_config=None, defaults=None):
    """Create a Flask app for one of the three servers.

    section: ``"main"``, ``"process"`` or ``"video"`` (used for the header and ``/healthz``).
    defaults: the server's own default settings, below environment and ``test_config``.
    """
    app = Flask(import_name, template_folder=str(ROOT / "templates"),
                static_folder=str(ROOT / "static"))
    app.config.update(config.load(test_config, defaults))
    app.config["SECTION"] = section
    data_dir = Path(app.config["DATA_DIR"])
    app.instance_path = str(data_dir / "instance")

    from shared.faces import parallel
    from shared.recognition.store import ModelStore
    from shared.training.pool import Pool

    parallel.limit(app.config["FACE_WORKERS"])
    app.extensions["pool"] = Pool(data_dir / "pool")
    app.extensions["models"] = ModelStore(data_dir / "models")
    _install_common(app, section)
    from shared.web import auth

    auth.init_app(app)  # sign-in, roles, tokens, CSRF, security headers, audit (shared/web/auth.py)
    return app


def warm_up(app):
    """Load the dlib networks and the current model in the background, unless testing or ``WARM_UP`` is off.

    Called by the servers that predict, so the first request after a start does not pay
    the ~2 s of loading; requests that arrive earlier simply wait for the same load.
    """
    if app.testing or not app.config["WARM_UP"]:
        return

    def load():
        from shared.faces import engine

        try:
            engine.networks()
            app.extensions["models"].current()
        except Exception:  # a broken model shows up on the first request, with its error page
            logging.getLogger(app.import_name).exception("warm-up failed")

    threading.Thread(target=load, name="warm-up", daemon=True).start()


def pool():
    """The training pool of the current app (:class:`shared.training.pool.Pool`)."""
    from flask import current_app

    return current_app.extensions["pool"]


def models():
    """The model store of the current app (:class:`shared.recognition.store.ModelStore`)."""
    from flask import current_app

    return current_app.extensions["models"]


def review_queue():
    """The review queue of the current app's data folder (:class:`shared.recognition.review.Queue`)."""
    from shared.recognition import review

    return review.Queue(data_path(review.FOLDER))


def inbox():
    """The unknown inbox of the current app's data folder (:class:`shared.library.unknowns.Inbox`: it keeps its
    file read per process and reads it again when it changes)."""
    from flask import current_app

    from shared.library.unknowns import Inbox

    return Inbox(current_app.config["DATA_DIR"])


def library():
    """The media library of the current app (:class:`shared.library.store.Library`), opened on first use."""
    from flask import current_app

    from shared.library.store import Library

    made = current_app.extensions.get("library")
    if made is None:
        made = current_app.extensions["library"] = Library(current_app.config["DATA_DIR"],
                                                           current_app.config["LIBRARY_DB_URL"])
    return made


def data_path(*parts):
    """A path under the current app's ``DATA_DIR``."""
    from flask import current_app

    return Path(current_app.config["DATA_DIR"]).joinpath(*parts)


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


def health_checks(app):
    """What every page of ``app`` needs, tried now: ``{"data", "accounts"[, "redis"]: "ok" or a sentence}``.

    data: a small file is written (atomically) in ``DATA_DIR`` and removed; accounts: the accounts
    database reads and writes (:meth:`shared.web.accounts.Accounts.check_health`); redis (process server
    only): the job queue's Redis answers a ping within its timeout.
    """
    checks = {"data": _try(app, "data", lambda: _write_and_remove(Path(app.config["DATA_DIR"]) / ".healthz")),
              "accounts": _try(app, "accounts", app.extensions["accounts"].check_health)}
    if app.config["SECTION"] == "process":
        from shared.training.jobqueue import connection

        checks["redis"] = _try(app, "redis", lambda: connection.connect(app.config["REDIS_URL"]).ping())
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
    # inside every POST form: both globals come from shared/web/access.py and security.py
    # (installed by auth.init_app, from make_app).

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
