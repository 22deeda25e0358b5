"""The three app factories, /healthz, / and the shared error handling; the instance's secret key
and the local Redis's password (made once, however many processes start at the same moment)."""
import multiprocessing
import os
import re
import subprocess

import pytest
import redis
import requests

from .conftest import REDIS_SERVER, ROOT, LiveServers, signed_in
from .servers import free_port, kill_tree, wait_for_redis

APPS = ["main_app", "process_app", "video_app"]


@pytest.mark.parametrize("name", APPS)
def test_healthz_and_home(name, request):
    app = request.getfixturevalue(name)
    client = signed_in(app.test_client(), "admin")
    r = client.get("/healthz")
    assert r.status_code == 200 and r.get_json()["status"] == "ok"
    r = client.get("/")
    assert r.status_code == 200 and b"KOL" in r.data and b"<html" in r.data


@pytest.mark.parametrize("name", APPS)
def test_unknown_route_is_a_404_page_or_json(name, request):
    client = signed_in(request.getfixturevalue(name).test_client(), "admin")
    r = client.get("/no/such/page")
    assert r.status_code == 404 and b"There is no page at this address" in r.data
    r = client.get("/no/such/page", headers={"Accept": "application/json"})
    assert r.status_code == 404 and r.get_json() == {"error": "There is no page at this address."}


def test_home_json_reports_pool_and_no_model(admin_client):
    r = admin_client.get("/", headers={"Accept": "application/json"})
    assert r.get_json() == {"pool": {"kols": 0, "chips": 0}, "model": None}
    assert b"No model is trained yet" in admin_client.get("/").data


def test_config_layers_and_secret_key(tmp_path, monkeypatch):
    from main_server import create_app

    monkeypatch.setenv("PROCESS_URL", "http://proc.example:9/")
    monkeypatch.delenv("SECRET_KEY", raising=False)
    app = create_app({"DATA_DIR": str(tmp_path / "d")})
    assert app.config["PROCESS_URL"] == "http://proc.example:9"
    key_file = tmp_path / "d" / "instance" / "secret_key"
    assert key_file.read_text() == app.config["SECRET_KEY"] and len(app.config["SECRET_KEY"]) == 64
    assert create_app({"DATA_DIR": str(tmp_path / "d")}).config["SECRET_KEY"] == app.config["SECRET_KEY"]
    home = signed_in(app.test_client(), "admin").get("/")
    # the link to the training wizard comes from PROCESS_URL, without the slash given at its end
    assert home.status_code == 200 and 'href="http://proc.example:9/"' in home.get_data(as_text=True)
    assert create_app({"DATA_DIR": str(tmp_path / "d"), "PROCESS_URL": "http://x"}).config["PROCESS_URL"] == "http://x"


def test_no_secret_in_repository():
    import subprocess

    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert not [f for f in tracked if "secret" in f.lower() or f.startswith("data/") and f != "data/.gitkeep"]


@pytest.mark.live
def test_live_servers_answer_over_http(live_servers):
    for name, url in live_servers.urls.items():
        assert live_servers.http.get(url + "/healthz", timeout=5).json() == {"status": "ok", "server": name}
        page = live_servers.http.get(url + "/", timeout=5)
        assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]
    # cross-server links come from config, not a hard-coded localhost:5000
    home = live_servers.http.get(live_servers.urls["process"] + "/", timeout=5).text
    assert live_servers.urls["main"] + "/trainModel" in home


def test_too_many_parts_says_so_not_too_large(tmp_path):
    import io

    from main_server import create_app

    app = create_app({"TESTING": True, "DATA_DIR": str(tmp_path), "MAX_FORM_PARTS": 10})
    data = {"file": [(io.BytesIO(b"x"), f"{i}.jpg") for i in range(20)]}
    r = signed_in(app.test_client(), "admin").post("/predictBatchImage", data=data, content_type="multipart/form-data",
                                                   headers={"Accept": "application/json"})
    assert r.status_code == 413
    assert "too many files" in r.get_json()["error"] and "10 at most" in r.get_json()["error"]


# -- made once: the secret key, with many processes starting at once ---------------------------------
PROCESSES, ROUNDS = 8, 20


def _secret_in_child(folder, barrier, answers):
    """One "server start": wait until all are ready, then read or make the instance's secret key."""
    from shared.core.config import _instance_secret

    barrier.wait(timeout=60)
    answers.put(_instance_secret(folder))


def _keys_made_at_once(folder):
    """The secret keys that :data:`PROCESSES` processes, released together, got from ``folder``."""
    ctx = multiprocessing.get_context("fork")
    barrier, answers = ctx.Barrier(PROCESSES), ctx.Queue()
    procs = [ctx.Process(target=_secret_in_child, args=(folder, barrier, answers)) for _ in range(PROCESSES)]
    for proc in procs:
        proc.start()
    keys = [answers.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    return keys


@pytest.mark.parametrize("left_empty", [False, True], ids=["missing", "left-empty-by-a-crash"])
def test_processes_starting_at_once_all_get_the_same_secret_key(tmp_path, left_empty):
    for round_ in range(ROUNDS):
        folder = tmp_path / f"r{round_}" / "instance"
        if left_empty:
            folder.mkdir(parents=True)
            (folder / "secret_key").write_bytes(b"")
        keys = _keys_made_at_once(folder)
        assert len(set(keys)) == 1, f"round {round_}: {len(set(keys))} different keys"
        assert re.fullmatch(r"[0-9a-f]{64}", keys[0]) and (folder / "secret_key").read_text() == keys[0]
        assert (folder / "secret_key").stat().st_mode & 0o777 == 0o600
        assert sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock")) == ["secret_key"]


@pytest.mark.live
def test_the_three_servers_started_together_on_an_empty_folder_accept_one_sign_in(tmp_path, redis_url,
                                                                                monkeypatch):
    """Issue 20: on a fresh start the three servers raced to create the secret key, and the training
    wizard then bounced every signed-in browser back to the sign-in page."""
    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.delenv("KOL_SECRET_KEY", raising=False)
    for round_ in range(5):
        base = tmp_path / f"r{round_}"
        servers = LiveServers(base / "data", base, redis_url=redis_url, workers=0)
        try:
            name, password = servers.user("admin")
            browser = requests.Session()
            page = browser.get(servers.urls["main"] + "/login", timeout=30).text
            token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
            r = browser.post(servers.urls["main"] + "/login", timeout=30, allow_redirects=False,
                             data={"name": name, "password": password, "csrf_token": token})
            assert r.status_code in (302, 303) and "/login" not in r.headers["Location"]
            for section in ("main", "process", "video"):
                r = browser.get(servers.urls[section] + "/", timeout=30, allow_redirects=False)
                assert r.status_code == 200, f"round {round_}: {section} answered {r.status_code} " \
                                             f"{r.headers.get('Location')}"
        finally:
            servers.stop()
        key = (base / "data" / "instance" / "secret_key").read_text()
        assert re.fullmatch(r"[0-9a-f]{64}", key)


# -- the local Redis: nobody without its password (queue jobs are pickles a worker runs) ------------
@pytest.mark.skipif(not os.path.exists(REDIS_SERVER), reason="redis-server not installed (bin/install)")
def test_bin_redis_requires_the_generated_password_and_the_apps_carry_it(tmp_path, monkeypatch):
    from main_server import create_app
    from shared.core.config import redis_password

    data = tmp_path / "data"
    port = free_port()
    for name in ("REDIS_URL", "KOL_REDIS_URL", "KOL_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REDIS_PORT", str(port))
    env = dict(os.environ, DATA_DIR=str(data))
    with open(tmp_path / "redis.log", "wb") as log:
        proc = subprocess.Popen([str(ROOT / "bin" / "redis")], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        password = redis_password(data)  # made by bin/redis, or here first: the same file either way
        wait_for_redis(f"redis://:{password}@127.0.0.1:{port}/0", proc, 30, tmp_path / "redis.log")
        for url in (f"redis://127.0.0.1:{port}/0", f"redis://:wrong@127.0.0.1:{port}/0",
                    f"unix://{data / 'redis' / 'redis.sock'}"):
            with pytest.raises(redis.exceptions.AuthenticationError):
                redis.Redis.from_url(url, socket_timeout=5).set("x", "1")
        url = create_app({"TESTING": True, "DATA_DIR": str(data)}).config["REDIS_URL"]
        assert url == f"redis://:{password}@127.0.0.1:{port}/0"
        assert redis.Redis.from_url(url, socket_timeout=5).ping()
        for folder, mode in ((data / "instance", 0o700), (data / "redis", 0o700),
                             (data / "instance" / "redis_password", 0o600)):
            assert folder.stat().st_mode & 0o777 == mode, folder
        with open(f"/proc/{proc.pid}/cmdline", "rb") as fh:
            assert password.encode() not in fh.read()  # what `ps` shows every user
        assert password.encode() not in (tmp_path / "redis.log").read_bytes()
    finally:
        kill_tree(proc)
