"""The three servers started for real under gunicorn (as the Procfile does), for tests and benchmarks.

No pytest here: ``bench/bench_load.py`` uses it too.
"""
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from shared.web.accounts import for_data_dir

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_tree(pid):
    """``pid`` and all its descendants (from /proc), parents first."""
    out = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids = [int(k) for k in (task / "children").read_text().split()]
        except OSError:
            continue
        for kid in kids:
            out += process_tree(kid)
    return out


def kill_tree(proc):
    """SIGKILL ``proc`` (a ``Popen``) and all its descendants at once, then reap it."""
    for pid in process_tree(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)


REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisServer:
    """A real ``redis-server`` on a free port of 127.0.0.1, its data in ``folder`` (for tests and benchmarks).

    Like the one ``bin/redis`` starts, it requires a password (:attr:`password`, random, given to
    redis-server on its stdin). :meth:`stop` shuts it down saving its data (like a stopped service),
    :meth:`start` brings it back on the same port with that data; ``url(db)`` is the URL of one of
    its databases, password included.
    """

    def __init__(self, folder, databases=4096):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.password = secrets.token_hex(16)
        self.databases = databases
        self.proc = None
        self.start()

    def url(self, db=0):
        return f"redis://:{self.password}@127.0.0.1:{self.port}/{db}"

    def start(self, timeout=20):
        if not Path(REDIS_SERVER).exists():
            raise FileNotFoundError(f"redis-server not found at {REDIS_SERVER} (bin/install apt-installs it)")
        with open(self.folder / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(
                [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.folder),
                 "--databases", str(self.databases), "--appendonly", "yes", "--appendfsync", "everysec",
                 "--save", "", "--daemonize", "no", "--logfile", "", "--loglevel", "warning", "-"],
                stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT)
        self.proc.stdin.write(f"requirepass {self.password}\n".encode())
        self.proc.stdin.close()
        wait_for_redis(self.url(0), self.proc, timeout, self.folder / "redis.log")

    def stop(self):
        """Shut down (SIGTERM: Redis writes its data first), waiting until it is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_for_redis(url, proc, timeout, log_path):
    """Wait until the Redis at ``url`` (started as ``proc``) answers PING; RuntimeError naming
    ``log_path`` when it exits or ``timeout`` seconds pass first."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                if client.ping():
                    return
            except redis.exceptions.AuthenticationError:  # a wrong password: waiting will not help
                raise
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):  # not up, or loading
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start (see {log_path})")
            time.sleep(0.05)
    finally:
        client.close()


class Workers:
    """Real queue worker processes (``python -m process_server.worker``) for one data folder and Redis."""

    def __init__(self, data_dir, redis_url, log_path, count=1, preload=False):
        self.data_dir, self.redis_url, self.log_path = Path(data_dir), redis_url, Path(log_path)
        self.preload = preload
        self.procs = []
        for _ in range(count):
            self.add()

    def add(self):
        """Start one more worker process; returns its ``Popen``."""
        env = dict(os.environ, DATA_DIR=str(self.data_dir), REDIS_URL=self.redis_url,
                   OPENBLAS_NUM_THREADS="1", WORKER_PRELOAD="1" if self.preload else "0")
        with open(self.log_path, "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "process_server.worker", "--workers", "1"],
                                    cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def kill(self, proc):
        """SIGKILL one worker and the job it is running (its whole process tree)."""
        kill_tree(proc)

    def stop(self):
        for proc in [p for p in self.procs if p.poll() is None]:
            kill_tree(proc)  # the job in progress too: no warm shutdown in tests


class LiveServers:
    """The servers started for real (gunicorn, like the Procfile) on free ports, sharing one data folder.

    ``names`` are started at once; the others can be started later with :meth:`start`
    (on their fixed port, so a killed server comes back at the same URL).
    """

    def __init__(self, data_dir, log_dir, names=("main", "process", "video"), redis_url=None, workers=1):
        self.data_dir, self.log_dir = Path(data_dir), Path(log_dir)
        self.urls = {name: f"http://127.0.0.1:{free_port()}" for name in ("main", "process", "video")}
        self.procs = {}
        #: The accounts database the servers will use (same DATA_DIR): tests make users and tokens in it.
        self.accounts = for_data_dir(self.data_dir)
        #: An admin API token made before the start; :attr:`http` sends it with every request.
        self.token, _ = self.accounts.create_token("tests", "admin", created_by="tests/servers.py")
        #: The job queue: ``redis_url`` (e.g. a test session's Redis), else a redis-server of their own;
        #: ``workers`` real worker processes (``self.workers``, see :class:`Workers`).
        self.redis = None if redis_url else RedisServer(self.log_dir / "redis")
        self.redis_url = redis_url or self.redis.url(0)
        self.workers = Workers(self.data_dir, self.redis_url, self.log_dir / "worker.log", count=workers)
        #: The HTTP session tests and benchmarks use to talk to these servers, signed in as an admin
        #: with a bearer token: ``live_servers.http.get(url)``.
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {self.token}"
        self._users = {}
        try:
            for name in names:
                self._launch(name)
            for name in names:
                self._wait_ready(name)
        except BaseException:
            self.stop()  # never leave servers running behind a failed start
            raise

    def user(self, role="admin"):
        """``(name, password)`` of a browser user with ``role`` in these servers' accounts (made once)."""
        if role not in self._users:
            name, password = f"test-{role}", secrets.token_urlsafe(12)
            self.accounts.create_user(name, password, role, created_by="tests/servers.py")
            self._users[role] = (name, password)
        return self._users[role]

    def sign_in(self, page, role="admin"):
        """Sign a Playwright ``page`` in through the main server's sign-in page (covers all three servers)."""
        name, password = self.user(role)
        page.goto(self.urls["main"] + "/login")
        page.fill("input[name=name]", name)
        page.fill("input[name=password]", password)
        with page.expect_navigation():
            page.click("form button[type=submit]")
        if "/login" in page.url:
            raise RuntimeError(f"signing in as {name} failed: {page.inner_text('main')[:300]}")

    def start(self, name, workers=1, threads=8):
        """Start (or restart) one server and wait until its /healthz answers."""
        self._launch(name, workers, threads)
        self._wait_ready(name)

    def _launch(self, name, workers=1, threads=8):
        env = dict(os.environ, DATA_DIR=str(self.data_dir), REDIS_URL=self.redis_url, MAIN_URL=self.urls["main"],
                   PROCESS_URL=self.urls["process"], VIDEO_URL=self.urls["video"])
        with open(self.log_dir / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "--workers", str(workers), "--threads", str(threads),
                 "--bind", self.urls[name].replace("http://", ""), f"{name}_server:create_app()"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def _wait_ready(self, name, timeout=60):
        deadline = time.monotonic() + timeout
        while True:
            if self.procs[name].poll() is not None:
                raise RuntimeError(f"{name} server exited with {self.procs[name].returncode}")
            try:
                if requests.get(self.urls[name] + "/healthz", timeout=5).status_code == 200:
                    return
            except requests.RequestException:  # not listening yet, or too busy to answer in time
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} server did not become ready")
            time.sleep(0.2)

    def health_ok(self, name):
        """True when the server answers ``/healthz`` with 200 now."""
        try:
            return requests.get(self.urls[name] + "/healthz", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def kill(self, name):
        """SIGKILL the server's whole process tree (a crash, a power cut of that process)."""
        kill_tree(self.procs[name])

    def stop(self):
        live = [proc for proc in self.procs.values() if proc.poll() is None]
        for proc in live:
            proc.terminate()
        for proc in live:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.workers.stop()
        if self.redis is not None:
            self.redis.stop()


def rss_mib(pid):
    """Resident memory of a process and all its descendants, in MiB."""
    total = 0
    for p in process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return round(total / 1024, 1)


def wait_for(what, check, timeout_s=300):
    """Poll ``check()`` every 0.1 s until it returns something true (returned), failing after ``timeout_s`` s
    (a guard against a hang, never a measure of speed)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(0.1)
