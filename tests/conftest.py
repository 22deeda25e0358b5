"""Fixtures: each app on a temporary data directory, signing in, the real photos, live servers, a browser.

The real photos and clips live in ``../shared/data`` (override with the
environment variable ``KOL_SHARED_DATA``); tests that need them skip with the
reason when the folder is absent.

``app.test_client()`` is Flask's plain client: signed out. A test that acts as someone says so:
the ``admin_client`` fixture, or ``signed_in(app.test_client(), "admin" | "member")``.

Markers (pytest.ini): ``live`` for a test that starts the servers under gunicorn (``LiveServers``,
itself or through a fixture), ``browser`` for one that drives Chromium; the collection stops with
an error naming a test that does either without its marker, so ``pytest -m "not live and not browser"``
never starts them.
"""
import functools
import inspect
import itertools
import os
from pathlib import Path

import pytest

from .servers import REDIS_SERVER, ROOT, LiveServers, RedisServer, Workers

SHARED_DATA = Path(os.environ.get("KOL_SHARED_DATA", ROOT.parent / "shared" / "data")).resolve()
FACES = SHARED_DATA / "faces"
FIVE = FACES / "five_celebs"
KNN = FACES / "knn_examples"
VIDEO = SHARED_DATA / "video"

needs_data = pytest.mark.skipif(
    not FIVE.is_dir(), reason=f"real photos not found at {SHARED_DATA} (set KOL_SHARED_DATA)")
needs_video = pytest.mark.skipif(
    not VIDEO.is_dir(), reason=f"real clips not found at {VIDEO} (set KOL_SHARED_DATA)")


def five_celebs_photos(prefix="train_"):
    """``{person: [paths]}`` of the five_celebs photos whose names start with ``prefix``."""
    return {d.name: sorted(d.glob(f"{prefix}*.jpg")) for d in sorted(FIVE.iterdir()) if d.is_dir()}


def app_token(app, role):
    """An API token with ``role`` ("admin" or "member") in ``app``'s accounts database, made once per
    app and role (named ``tests-<role>``, as the audit trail and owner records then show it)."""
    tokens = app.extensions.setdefault("test_tokens", {})
    if role not in tokens:
        tokens[role], _ = app.extensions["accounts"].create_token(f"tests-{role}", role, created_by="tests")
    return tokens[role]


def signed_in(client, role):
    """``client`` (a Flask test client) signed in as ``role`` ("admin" or "member"): every request it
    sends from now on carries ``Authorization: Bearer`` with :func:`app_token` of its app. Returns it.

    As a script signs in (the API token route of docs/api.md); a browser's password sign-in with
    its session cookie is ``tests/test_auth.py``'s ``sign_in``."""
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {app_token(client.application, role)}"
    return client


# -- markers: a test that starts the servers or a browser says so -------------------------------------
@functools.lru_cache(maxsize=None)
def _source(obj):
    """The source text of a test or fixture function ("" where it has none)."""
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return ""


def pytest_collection_modifyitems(items):
    """Stop with an error naming every test that starts the servers (``LiveServers(`` in the test or in
    one of its fixtures) without ``@pytest.mark.live``, or uses the ``browser`` fixture without
    ``@pytest.mark.browser``: the fast subset (``-m "not live and not browser"``) must never start them."""
    unmarked = []
    for item in items:
        defs = getattr(item, "_fixtureinfo", None)
        fixtures = [d.func for ds in (defs.name2fixturedefs.values() if defs else ()) for d in ds]
        live = any("LiveServers(" in _source(f) for f in [getattr(item, "function", None), *fixtures])
        for marker, needed in (("live", live), ("browser", "browser" in item.fixturenames)):
            if needed and item.get_closest_marker(marker) is None:
                unmarked.append(f"{item.nodeid}: add @pytest.mark.{marker}")
    if unmarked:
        raise pytest.UsageError("tests without their marker (see pytest.ini):\n  " + "\n  ".join(unmarked))


@pytest.fixture(autouse=True, scope="session")
def _no_warm_up_threads_here():
    """Apps built inside the test process start no warm-up thread (``WARM_UP``; the servers that
    ``LiveServers`` starts still do). Such a thread reads arrays while the next app is built, and
    building an app parses its routes with the ast module, which CPython 3.11 cannot do in two
    threads at once (python/cpython#106905: "AST constructor recursion depth mismatch")."""
    from shared.core import config

    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(config.DEFAULTS, "WARM_UP", False)
        yield


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "data"


# -- the job queue: one real redis-server per test session, one database per test ----------------------
_databases = itertools.count(1)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real ``redis-server`` for the whole session (its own port and folder); skipped where not installed."""
    if not Path(REDIS_SERVER).exists():
        pytest.skip(f"redis-server not found at {REDIS_SERVER} (bin/install apt-installs the 'redis-server' package)")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server):
    """The URL of a fresh, empty database of the session's Redis (nothing shared with other tests)."""
    return redis_server.url(next(_databases))


@pytest.fixture
def queue_workers(data_dir, redis_url, tmp_path_factory):
    """One real worker process (``python -m process_server.worker``) for this test's data folder and Redis
    (its log in a folder of its own, outside the test's ``tmp_path``)."""
    workers = Workers(data_dir, redis_url, tmp_path_factory.mktemp("worker") / "worker.log", count=1)
    yield workers
    workers.stop()


def _config(data_dir, redis_url=None):
    config = {"TESTING": True, "DATA_DIR": str(data_dir), "SECRET_KEY": "test"}
    if redis_url:
        config["REDIS_URL"] = redis_url
    return config


@pytest.fixture
def main_app(data_dir):
    from main_server import create_app

    return create_app(_config(data_dir))


@pytest.fixture
def process_app_no_worker(data_dir):
    """The process server's app on this test's data folder with no Redis and no worker behind its queue
    (its default, the Redis of ``bin/redis``, which the tests never start): for what queues nothing,
    such as its ``url_map``."""
    from process_server import create_app

    return create_app(_config(data_dir))


@pytest.fixture
def process_app(data_dir, redis_url, queue_workers):
    """The process server's app on this test's data folder, its queue in a fresh Redis database,
    with a real worker process taking its work."""
    from process_server import create_app

    return create_app(_config(data_dir, redis_url))


@pytest.fixture
def video_app(data_dir):
    from video_server import create_app

    return create_app(_config(data_dir))


@pytest.fixture
def admin_client(main_app):
    """The main app's test client, signed in as an admin (an API token, :func:`signed_in`)."""
    return signed_in(main_app.test_client(), "admin")


@pytest.fixture(scope="session")
def celeb_faces():
    """Faces of the five_celebs training photos with exactly one detected face.

    ``{person: [(path, shared.faces.engine.Face), ...]}``, computed once per test session.
    """
    if not FIVE.is_dir():
        pytest.skip(f"real photos not found at {SHARED_DATA}")
    from shared.faces import engine, images

    out = {}
    for person, paths in five_celebs_photos().items():
        for path in paths:
            found = engine.analyze(images.load_image(path))
            if len(found) == 1:
                out.setdefault(person, []).append((path, found[0]))
    return out


@pytest.fixture(scope="module")
def live_servers(tmp_path_factory, redis_server):
    """The three servers under gunicorn, with a real queue worker process, on a fresh Redis database."""
    base = tmp_path_factory.mktemp("live")
    servers = LiveServers(base / "data", base, redis_url=redis_server.url(next(_databases)))
    yield servers
    servers.stop()


# -- a real headless browser (Debian's Chromium driven by Playwright) --------------------
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = ROOT / "tests" / "artifacts"


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"Chromium not found at {CHROMIUM} (bin/install apt-installs the 'chromium' package)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser, request):
    """A fresh browser page at laptop size; console errors are collected in ``page.errors``.

    When the test also uses live servers (a fixture whose name ends in ``servers``, such as
    ``live_servers``), the page is signed in as an admin through the real sign-in page first.
    """
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    pg.errors = []
    pg.on("console", lambda msg: msg.type == "error" and pg.errors.append(msg.text))
    pg.on("pageerror", lambda exc: pg.errors.append(str(exc)))
    for name in request.fixturenames:
        if name.endswith("servers"):
            servers = request.getfixturevalue(name)
            if isinstance(servers, LiveServers):
                servers.sign_in(pg)
                break
    yield pg
    context.close()


def screenshot(pg, name):
    """Save a full-page screenshot under tests/artifacts/ (git-ignored, kept by CI's log folder)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    pg.screenshot(path=str(path), full_page=True)
    return path
