"""Every setting, its default, and how it is read: usable with or without a Flask app.

:func:`load` layers :data:`DEFAULTS`, then a server's own defaults, then the environment
(``KOL_<NAME>`` for every setting, read as JSON when it parses, as Flask's
``from_prefixed_env`` does, and the names in :data:`PLAIN_ENV` also without the prefix), then
the overrides a test passes; checks each setting's type; and fills the secrets kept in
``DATA_DIR/instance/`` (the session key, the local Redis's password) on first use. The app
factory (:func:`shared.web.factory.make_app`) and the queue workers both read their settings
here, so a worker needs no app to know its Redis and data folder.
"""
import json
import os
import secrets
from pathlib import Path

from shared.core.storage import create_once, private_folder

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
    # Load dlib and the current model in a background thread at start (the main and video servers), so
    # the first request does not wait for them. Tests that build several apps in one process turn it
    # off: building an app parses its routes with the ast module while that thread reads arrays.
    "WARM_UP": True,
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
    # The review queue (shared/recognition/review.py, main_server/review.py): members may see it and answer
    # (true), or only admins (false). Adding a reviewed face to the pool is an admin's in either case.
    "REVIEW_MEMBERS": True,
    # The job queue (shared/training/jobqueue/): the Redis it lives in (empty: the one bin/redis starts,
    # redis://:PASSWORD@127.0.0.1:REDIS_PORT/0 with REDIS_PORT 6479 and the password generated
    # into DATA_DIR/instance/redis_password, see local_redis_url; a URL set by the user is used
    # as given, so it must carry its Redis's password), seconds a POST /clean or /import_result
    # waits for its queued work before answering with the progress page (202 in JSON), photos
    # per align chunk (a job is split so that every worker takes a part at once).
    "REDIS_URL": "",
    "STEP_WAIT_S": 120,
    "ALIGN_CHUNK": 12,
    # Sign-in (shared/web/auth.py; the limits: main_server/accounts.py): how long a sign-in lasts,
    # proxies trusted for X-Forwarded-*,
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
    # Zips (shared/faces/archive.py: training zips, and zips in a batch or a KOL's "add photos"): most
    # files one upload may unpack, and most bytes once uncompressed (counted while unzipping too).
    "UPLOAD_MAX_FILES": 5000,
    "UPLOAD_MAX_UNPACKED_BYTES": 4 * 1024 ** 3,
    # Video analysis on the queue (shared/library/analysis.py, /analysis): seconds of video per chunk (one RQ
    # job each, all workers take them at once), the longest video analysed (seconds), the most pixels a
    # frame may have (width x height: 4K is 8,294,400), the most videos one upload may hold (0: no limit).
    "ANALYSIS_CHUNK_S": 60,
    "ANALYSIS_MAX_VIDEO_S": 2 * 3600,
    "ANALYSIS_MAX_PIXELS": 3840 * 2160,
    "ANALYSIS_MAX_VIDEOS": 100,
    # The media library (shared/library/): its database (empty: SQLite in DATA_DIR/instance/library.sqlite3;
    # any SQLAlchemy URL, e.g. postgresql://...), and days kept media stay before housekeeping deletes
    # them (0: kept until someone deletes them). Results not kept still go after PREDICTION_MAX_AGE_S.
    "LIBRARY_DB_URL": "",
    "LIBRARY_RETENTION_DAYS": 0,
}

#: The documented names that also work without the ``KOL_`` prefix (the prefixed name wins).
PLAIN_ENV = ("DATA_DIR", "MAIN_URL", "PROCESS_URL", "VIDEO_URL", "MAX_CONTENT_LENGTH", "SECRET_KEY", "REDIS_URL")

ENV_PREFIX = "KOL"


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


#: The settings that name the three servers' public base URLs (kept without a trailing slash).
URL_SETTINGS = ("MAIN_URL", "PROCESS_URL", "VIDEO_URL")


def load(overrides=None, defaults=None, environ=None):
    """Every setting as a dict: :data:`DEFAULTS`, then ``defaults`` (a server's own), then the
    environment ``environ`` (default ``os.environ``: plain names of :data:`PLAIN_ENV`, then
    ``KOL_<NAME>``, which wins), then ``overrides`` (a test's ``test_config``; keys not in
    :data:`DEFAULTS`, such as ``TESTING``, pass through).

    Types are checked (:func:`_check_types`: a clear ``ValueError`` naming the setting); the
    public URLs lose their trailing ``/``; ``DATA_DIR`` is made absolute and created; an empty
    ``SECRET_KEY`` or ``REDIS_URL`` is filled from ``DATA_DIR/instance/`` (0700).
    """
    environ = os.environ if environ is None else environ
    config = dict(DEFAULTS)
    config.update(defaults or {})
    for key in PLAIN_ENV:
        if environ.get(key):
            config[key] = _parse_env(environ[key])
    prefix = ENV_PREFIX + "_"
    for key in sorted(environ):
        if key.startswith(prefix) and key != prefix:
            config[key[len(prefix):]] = _parse_env(environ[key])
    config.update(overrides or {})
    _check_types(config)
    for key in URL_SETTINGS:
        config[key] = config[key].rstrip("/")
    data_dir = Path(config["DATA_DIR"]).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    config["DATA_DIR"] = str(data_dir)
    instance = private_folder(data_dir / "instance")
    if not config.get("SECRET_KEY"):
        config["SECRET_KEY"] = _instance_secret(instance)
    if not config["REDIS_URL"]:
        config["REDIS_URL"] = local_redis_url(data_dir)
    return config
