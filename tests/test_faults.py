"""Faults: queue workers killed (SIGKILL) in the middle of align, import and train, the job queue's
Redis stopped and started again, the process server restarted during a job, a full disk during
upload and import, and the main server switching models while it predicts.

The servers run for real under gunicorn (like the Procfile), the queue in a real
redis-server and the work in real worker processes (``python -m process_server.worker``),
on free ports and a temporary data folder; a kill takes a worker's whole process tree
(the worker and the child running the job). Promises checked:

- the pool (``data/pool/manifest.json`` and the files it lists) and the current model
  (``data/models/current`` and its version folder) are, at any moment, exactly as before
  the interrupted step or exactly as after it;
- the killed worker's job is retried on another worker and finishes; killed on every try,
  the step ends as failed with a sentence (nothing waits forever), and runs again later;
- Redis stopped: pages answer 503 with a sentence within seconds (``/healthz`` too, naming Redis);
  work resumes when it is back;
- a process server restart does not touch a running job;
- a full disk gives a clear 507 sentence on every page (the accounts database included) and
  leaves nothing half-written; ``/healthz`` answers 503 naming what failed;
- predictions keep answering with the old model while a new one trains, then
  switch to the new one (never a failed request, never back to the old one).
"""
import hashlib
import io
import os
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from shared.core.storage import DISK_FULL

from . import _synth
from ._synth import JSON
from .conftest import FIVE, LiveServers, five_celebs_photos, needs_data, signed_in
from .servers import wait_for


@pytest.fixture
def servers(tmp_path, redis_url):
    """Nothing started yet but one queue worker (on a fresh database of the session's Redis)."""
    s = LiveServers(tmp_path / "data", tmp_path, names=(), redis_url=redis_url)
    yield s
    s.stop()


# -- what "the pool" and "the model" are, byte for byte -----------------------------------------
def pool_state(data_dir):
    """The pool as its users see it: ``{slug: (name, [(chip id, png sha1, npy sha1)])}``.

    Every file the manifest lists must exist and be complete (the PNG decodes, the
    embedding loads with the right shape); a half-written pool fails here.
    """
    from shared.faces import images
    from shared.training.pool import Pool

    out = {}
    pool = Pool(Path(data_dir) / "pool")
    for slug, info in pool.kols().items():
        chips = []
        for cid in info["chips"]:
            png, npy = pool.root / slug / f"{cid}.png", pool.root / slug / f"{cid}.npy"
            assert images.load_image(png, max_side=None).shape == (150, 150, 3), png
            assert np.load(npy, allow_pickle=False).shape == (128,), npy
            chips.append((cid, hashlib.sha1(png.read_bytes()).hexdigest(), hashlib.sha1(npy.read_bytes()).hexdigest()))
        out[slug] = (info["name"], chips)
    return out


def model_state(data_dir):
    """``(current version, identities)`` after loading the current model completely (``(None, 0)`` if none)."""
    from shared.recognition.store import ModelStore

    store = ModelStore(Path(data_dir) / "models")
    version = store.current_version()
    if version is None:
        assert not (Path(data_dir) / "models" / "current").exists()
        return None, 0
    model = store.load(version)  # model.npz and meta.json complete
    assert model.meta["version"] == version
    return version, len(model.classes)


def get(servers, path, timeout=30, **params):
    """GET a process server route as JSON; ``timeout``: seconds before a hang raises."""
    return servers.http.get(servers.urls["process"] + path, params=params, headers=JSON, timeout=timeout)


def post(servers, path, timeout=300, **data):
    """POST to a process server route as JSON; ``timeout``: seconds before a hang raises."""
    return servers.http.post(servers.urls["process"] + path, data=data, headers=JSON, timeout=timeout)


def wait_state(servers, job, stage, states, timeout=300):
    deadline = time.monotonic() + timeout
    while True:
        p = get(servers, "/processingProgress", job=job).json()
        if p["stage"] == stage and p["state"] in states:
            return p
        assert time.monotonic() < deadline, p
        time.sleep(0.02)


def _import_pool(data_dir, job, names=None):
    """Put a synthetic job's chips into the pool with the project's own Pool (setup, not under test)."""
    from shared.training.jobs import JobStore
    from shared.training.pool import Pool

    store = JobStore(Path(data_dir) / "jobs")
    state = store.state(job)
    batch = [(kol["name"], sorted((store.folder(job) / "chips" / str(k)).glob("*.png")), False)
             for k, kol in enumerate(state["kols"]) if names is None or kol["name"] in names]
    Pool(Path(data_dir) / "pool").add_many(batch)


def _photo_job(data_dir, count=24):
    """A job of real photos (align needs faces)."""
    from shared.training.jobs import JobStore

    members = {}
    for person, paths in list(five_celebs_photos().items())[:2]:
        for path in paths[: count // 2]:
            members[f"{person}/{path.name}"] = path.read_bytes()
    data = _synth.build_zip(members)
    return JobStore(Path(data_dir) / "jobs").create(lambda p: Path(p).write_bytes(data), "image", "real.zip")


# -- SIGKILL in the middle of each step ------------------------------------------------------------
KOLS = tuple(f"KOL {i}" for i in range(6))


def _prepare(data_dir, step):
    """A job ready for ``step``, plus the pool and model it starts from."""
    if step == "align":
        if not FIVE.is_dir():
            pytest.skip("real photos not found (set KOL_SHARED_DATA)")
        return _photo_job(data_dir)
    job = _synth.aligned_job(data_dir, kols=KOLS, per_kol=100 if step != "clean" else 150)
    if step in ("import", "train"):
        from shared.training import cleaning
        from shared.training.jobs import JobStore

        store = JobStore(Path(data_dir) / "jobs")
        store.write(job, "clean", cleaning.clean(store.read(job, "align")))
        store.finish_sync(job, "clean", summary={}, total=1)
        # the pool already holds two of the KOLs (an import merges into it), and a model exists
        _import_pool(data_dir, job, names=KOLS[:2])
        _synth.synthetic_model(data_dir)
    if step == "train":
        _import_pool(data_dir, job)
    return job


def _rq_ids(servers, job, step):
    from shared.training.jobs import JobStore

    return (JobStore(servers.data_dir / "jobs").state(job)["steps"].get(step) or {}).get("rq") or []


def _worker_running(servers, job, step, timeout=180):
    """The worker process (``Popen``) running work of this step now (its RQ job started), and the
    RQ job's id. (A kill between a worker taking an RQ job and starting it is RQ's own case: it
    waits in RQ's intermediate queue and is retried after a minute; not what these tests look at.)"""
    from rq.job import Job

    from shared.training.jobqueue import connection, status

    conn = connection.connect(servers.redis_url)
    deadline = time.monotonic() + timeout
    while True:
        ids = set(_rq_ids(servers, job, step))
        for w in status.overview(conn)["workers"]:
            if w["alive"] and w["job"] in ids and Job.fetch(w["job"], connection=conn).get_status() == "started":
                proc = next((p for p in servers.workers.procs if p.pid == w["pid"] and p.poll() is None), None)
                if proc is not None:
                    return proc, w["job"]
        assert time.monotonic() < deadline, "no worker took the step"
        time.sleep(0.02)


def _retries_left(servers, rq_id):
    from rq.job import Job

    from shared.training.jobqueue import connection

    return Job.fetch(rq_id, connection=connection.connect(servers.redis_url)).retries_left


STEP_PATH = {"align": "/align", "clean": "/clean", "import": "/import_result", "train": "/train_model"}


@pytest.mark.parametrize("step", ["align", "import", "train"])
@pytest.mark.live
def test_sigkill_worker_mid_step_is_retried_on_another(servers, step):
    data_dir = servers.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    job = _prepare(data_dir, step)
    pool_before, model_before = pool_state(data_dir), model_state(data_dir)
    servers.workers.add()  # two workers: one to kill, one to take the retry
    servers.start("process")
    # start the step (import waits for its work inside the request: send it from a thread)
    answer = {}
    thread = threading.Thread(target=lambda: answer.setdefault("r", _quiet_post(servers, STEP_PATH[step], job=job)))
    thread.start()
    victim, rq_id = _worker_running(servers, job, step)
    if step == "align":  # let some photos be aligned (chips written) first
        deadline = time.monotonic() + 120
        while get(servers, "/processingProgress", job=job).json()["done"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
    servers.workers.kill(victim)
    pool_mid, model_mid = pool_state(data_dir), model_state(data_dir)

    # the surviving worker takes the work again and finishes it; the request that waited answers
    p = wait_state(servers, job, step, ("done", "failed"), timeout=240)
    assert p["state"] == "done" and p["done"] == p["total"], p
    thread.join(timeout=240)
    assert _retries_left(servers, rq_id) == 0, "the killed work was not retried: the kill came too late"
    if step == "import":
        assert answer["r"].status_code == 200 and sorted(answer["r"].json()["imported"]) == sorted(KOLS)
    pool_after, model_after = pool_state(data_dir), model_state(data_dir)
    if step == "import":
        assert pool_mid in (pool_before, pool_after), "the pool was left half-imported"
        assert pool_after != pool_before and len(pool_after) == len(KOLS)
    else:
        assert pool_mid == pool_before == pool_after
    if step == "train":
        assert model_mid == model_before or (model_mid[0] in _versions(data_dir) and model_mid[1] == len(KOLS))
        assert model_after[0] != model_before[0] and model_after[1] == len(KOLS)
    else:
        assert model_mid == model_before == model_after
    if step == "align":
        aligned = get(servers, "/align", job=job).json()
        assert sum(k["sources"] for k in aligned["kols"].values()) == 24
    # the killed run left nothing the pool would show: files not in the manifest are swept
    listed = {f"{slug}/{cid}{ext}" for slug, (_, chips) in pool_after.items() for cid, _, _ in chips
              for ext in (".png", ".npy")}
    on_disk = {p.relative_to(data_dir / "pool").as_posix() for p in (data_dir / "pool").rglob("*")
               if p.is_file() and not p.name.startswith(".") and p.name != "manifest.json"} \
        if (data_dir / "pool").is_dir() else set()
    assert on_disk == listed


@pytest.mark.live
def test_sigkill_of_the_job_process_alone_is_seen_by_its_worker_and_retried(servers):
    """Only the child process running the job dies (out of memory, a crash in native code): its own
    worker sees it at once and the job is tried again; the training then finishes."""
    from .servers import process_tree

    data_dir = servers.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    job = _prepare(data_dir, "train")
    model_before = model_state(data_dir)
    servers.start("process")
    assert post(servers, "/train_model", job=job).status_code == 202
    worker, rq_id = _worker_running(servers, job, "train")
    children = process_tree(worker.pid)[1:]
    assert children, "the worker runs its job in a child process"
    for pid in children:
        os.kill(pid, 9)
    p = wait_state(servers, job, "train", ("done", "failed"), timeout=180)
    assert p["state"] == "done", p
    assert worker.poll() is None and _retries_left(servers, rq_id) == 0
    assert model_state(data_dir)[0] != model_before[0] and model_state(data_dir)[1] == len(KOLS)


@pytest.mark.live
def test_worker_killed_on_every_try_ends_failed_with_a_sentence(servers):
    """Both tries of a training die with their workers: the step is reported failed with a sentence
    within seconds (the process server finds the abandoned work itself when no worker is left),
    the model is untouched, and a new worker trains when asked again."""
    data_dir = servers.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    job = _prepare(data_dir, "train")
    model_before = model_state(data_dir)
    servers.workers.add()
    servers.start("process")
    assert post(servers, "/train_model", job=job).status_code == 202
    first, rq_id = _worker_running(servers, job, "train")
    servers.workers.kill(first)
    second, again = _worker_running(servers, job, "train")  # the retry, on the other worker
    assert second is not first and again == rq_id
    servers.workers.kill(second)
    # 120 s: a hang guard on this wait, not a speed. The sweep needs the heartbeat grace (JOB_MONITORING_S +
    # HEARTBEAT_GRACE_S, 15 s); without it the step would wait for its time limit (TIMEOUTS["train"], 1 h)
    p = wait_state(servers, job, "train", ("done", "failed"), timeout=120)
    assert p["state"] == "failed" and "interrupted" in p["error"] and "tried again" in p["error"], p
    assert model_state(data_dir) == model_before
    page = servers.http.get(servers.urls["process"] + "/", params={"job": job}, timeout=30).text
    assert "interrupted" in page and "failed" in page
    servers.workers.add()
    assert post(servers, "/train_model", job=job).status_code == 202
    assert wait_state(servers, job, "train", ("done", "failed"), timeout=180)["state"] == "done"
    assert model_state(data_dir)[0] != model_before[0]


def _outages_met(servers):
    """How many times the queue workers have logged that Redis did not answer (rq's own line)."""
    path = servers.workers.log_path
    return path.read_text(errors="replace").count("could not connect to Redis") if path.exists() else 0


@pytest.mark.live
def test_redis_stopped_pages_answer_503_and_work_resumes(tmp_path, monkeypatch):
    """The queue's Redis stops: every page that needs it answers 503 with a sentence at once (no hang);
    the worker waits; Redis back with its data: the pages answer and the same worker does new work."""
    from .servers import RedisServer

    redis_dir = tmp_path / "redis"
    try:
        own = RedisServer(redis_dir)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    servers = LiveServers(tmp_path / "data", tmp_path, names=(), redis_url=own.url(0))
    try:
        data_dir = servers.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        a = _synth.aligned_job(data_dir, kols=("Ann", "Bob"), per_kol=4)
        b = _synth.aligned_job(data_dir, kols=("Cid",), per_kol=4, seed=1)
        servers.start("process")
        assert post(servers, "/clean", job=a).status_code == 200
        outages = _outages_met(servers)
        own.stop()
        # what the job records answer alone still answers (a finished step needs no queue)
        assert get(servers, "/processingProgress", job=a).json()["state"] == "done"
        for method, path, data in (("get", "/", {}), ("post", "/clean", {"job": b}), ("post", "/align", {"job": b}),
                                   ("post", "/delete_job", {"job": a})):
            # timeout 10 s: a deadline on the answer (a hang raises), over three times the queue's
            # SOCKET_TIMEOUT_S of 3 s; not a speed
            if method == "get":
                r = get(servers, path, timeout=10, **data)
            else:
                r = post(servers, path, timeout=10, **data)
            assert r.status_code == 503 and "queue is not answering" in r.json()["error"], (path, r.text[:300])
            page = getattr(servers.http, method)(servers.urls["process"] + path, params=data if method == "get" else None,
                                             data=data if method == "post" else None, timeout=30)
            assert page.status_code == 503 and "<html" in page.text and "Nothing was lost" in page.text
        health = get(servers, "/healthz")  # the process server is alive, but not able to do its work
        assert health.status_code == 503 and health.json()["checks"]["redis"] != "ok", health.text
        # a hang guard: the worker meets the outage at its next Redis call
        wait_for("the worker to notice that Redis stopped", lambda: _outages_met(servers) != outages, 60)
        own.start()
        p = get(servers, "/processingProgress", job=a).json()
        assert p["state"] == "done" and p["stage"] == "clean", p
        r = post(servers, "/clean", job=b)  # the worker that lived through the outage does it
        assert r.status_code == 200 and set(r.json()["kols"]) == {"Cid"}, r.text
        assert all(p.poll() is None for p in servers.workers.procs)
    finally:
        servers.stop()
        own.stop()


@needs_data
@pytest.mark.live
def test_process_server_restart_does_not_touch_a_running_job(servers):
    data_dir = servers.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    job = _photo_job(data_dir, count=24)
    servers.start("process")
    assert post(servers, "/align", job=job).status_code == 202
    wait_state(servers, job, "align", ("running", "done"))
    servers.kill("process")  # SIGKILL: gunicorn and its worker
    servers.start("process")
    p = get(servers, "/processingProgress", job=job).json()
    assert p["state"] in ("running", "done") and p["error"] is None, p
    p = wait_state(servers, job, "align", ("done", "failed"))
    assert p["state"] == "done" and p["done"] == p["total"] == 24, p
    assert sum(k["sources"] for k in get(servers, "/align", job=job).json()["kols"].values()) == 24


def _versions(data_dir):
    return sorted(p.name for p in (Path(data_dir) / "models").iterdir() if p.is_dir())


def _quiet_post(servers, path, **data):
    try:
        return post(servers, path, **data)
    except requests.ConnectionError as exc:  # the server was killed while answering
        return exc


# -- a full disk ---------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A 6 MiB tmpfs as the data folder (needs root and mount); skipped with the reason otherwise."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount_point)],
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a small tmpfs to simulate a full disk: {exc}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to simulate a full disk: {done.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, timeout=30)


def _fill(folder, leave):
    """Fill the disk of ``folder`` until only about ``leave`` bytes are free; returns the filler path."""
    filler = Path(folder) / "filler.bin"
    free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    with open(filler, "wb") as fh:
        fh.write(b"\0" * max(0, free - leave))
    return filler


def _photos_zip(n, side=400):
    return _synth.build_zip({f"Ann/{i}.jpg": _synth.jpeg(side, side, seed=i) for i in range(n)},
                            method=__import__("zipfile").ZIP_STORED)


def _files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in Path(folder).rglob("*") if p.is_file())


def test_full_disk_during_upload(small_disk):
    from main_server import create_app

    data_dir = small_disk / "data"
    client = signed_in(create_app({"DATA_DIR": str(data_dir), "SECRET_KEY": "t"}).test_client(), "admin")
    files_before = _files(data_dir)
    # (1) the upload itself does not fit; (2) it fits, but the extracted photos do not
    big, medium = _photos_zip(60), _photos_zip(35)
    assert len(big) > 6 * 2 ** 20 and 3 * 2 ** 20 < len(medium) < 5 * 2 ** 20
    for data in (big, medium):
        for json_mode in (True, False):
            r = client.post("/trainByImage", data={"zip": (io.BytesIO(data), "kols.zip")},
                            content_type="multipart/form-data", headers=JSON if json_mode else {})
            assert r.status_code == 507, r.get_data(as_text=True)[:300]
            assert b"disk is full" in r.data and b"Traceback" not in r.data
            assert _files(data_dir) == files_before
            assert not list((data_dir / "jobs").iterdir())
    # with room, an upload works
    r = client.post("/trainByImage", data={"zip": (io.BytesIO(_photos_zip(5)), "kols.zip")},
                    content_type="multipart/form-data")
    assert r.status_code == 303


def test_full_disk_during_import(small_disk, redis_url, tmp_path):
    from process_server import create_app

    from .servers import Workers

    data_dir = small_disk / "data"
    workers = Workers(data_dir, redis_url, tmp_path / "worker.log")  # the import runs in a worker process
    app = create_app({"DATA_DIR": str(data_dir), "SECRET_KEY": "t", "REDIS_URL": redis_url})
    client = signed_in(app.test_client(), "admin")
    job = _synth.aligned_job(data_dir, kols=("Ann", "Bob"), per_kol=8)
    assert client.post("/clean", data={"job": job}, headers=JSON).status_code == 200
    pool_before = pool_state(data_dir)
    filler = _fill(small_disk, leave=400 * 1024)  # room for a few chips, not for 16 (~67 KiB each)
    for json_mode in (True, False):
        r = client.post("/import_result", data={"job": job}, headers=JSON if json_mode else {})
        assert r.status_code == 507, r.get_data(as_text=True)[:300]
        assert b"disk is full" in r.data and b"Traceback" not in r.data
        assert pool_state(data_dir) == pool_before
        pool_files = [p for p in (data_dir / "pool").rglob("*") if p.is_file() and p.name != ".lock"] \
            if (data_dir / "pool").is_dir() else []
        assert pool_files == [], pool_files  # nothing half-copied left behind
    page = client.get("/", query_string={"job": job}).get_data(as_text=True)
    assert "disk is full" in page
    filler.unlink()
    r = client.post("/import_result", data={"job": job}, headers=JSON)
    assert r.status_code == 200 and sorted(r.get_json()["imported"]) == ["Ann", "Bob"]
    assert sum(len(chips) for _, chips in pool_state(data_dir).values()) == 16
    workers.stop()


def test_full_disk_answers_507_on_every_page_and_healthz_says_so(small_disk):
    """A full disk: the accounts database cannot even be opened (SQLite: "disk I/O error") before any view
    runs, for a token and for a signed-in browser alike: 507 with the sentence; /healthz 503 names what failed."""
    from main_server import create_app

    from .test_auth import PASSWORD, csrf_token

    app = create_app({"DATA_DIR": str(small_disk / "data"), "SECRET_KEY": "t"})
    app.extensions["accounts"].create_user("ann", PASSWORD, "member")
    script = signed_in(app.test_client(), "admin")  # an admin API token
    browser = app.test_client()
    token = csrf_token(browser.get("/login").get_data(as_text=True))
    assert browser.post("/login", data={"name": "ann", "password": PASSWORD, "csrf_token": token}).status_code == 303
    monitor = app.test_client()  # a load balancer's health check: no token, no cookie
    assert monitor.get("/healthz").status_code == 200
    filler = _fill(small_disk, leave=0)
    for client in (script, browser):
        r = client.get("/", headers=JSON)
        assert r.status_code == 507 and r.get_json() == {"error": DISK_FULL}, r.get_data(as_text=True)[:300]
        r = client.get("/predictSinglePage")
        assert r.status_code == 507 and b"disk is full" in r.data and b"Traceback" not in r.data
    r = monitor.get("/healthz")
    assert r.status_code == 503, r.get_data(as_text=True)
    assert r.get_json() == {"status": "error", "server": "main", "checks": {"data": DISK_FULL, "accounts": DISK_FULL}}
    filler.unlink()
    assert monitor.get("/healthz").get_json() == {"status": "ok", "server": "main"}
    assert script.get("/", headers=JSON).status_code == 200 and browser.get("/", headers=JSON).status_code == 200


def test_process_server_healthz_names_a_redis_that_does_not_answer(data_dir, redis_url):
    from process_server import create_app

    for url, expected in ((redis_url, 200), ("redis://127.0.0.1:9/0", 503)):  # port 9: nothing listens
        app = create_app({"DATA_DIR": str(data_dir), "SECRET_KEY": "t", "REDIS_URL": url})
        r = signed_in(app.test_client(), "admin").get("/healthz")
        assert r.status_code == expected, r.get_data(as_text=True)
        if expected == 503:
            assert r.get_json()["checks"] == {"data": "ok", "accounts": "ok",
                                              "redis": "The job queue's Redis is not answering."}


# -- the main server switches models atomically while it predicts -----------------------------------------
def test_model_store_switches_atomically(tmp_path):
    """Readers calling ModelStore.current() while versions are saved never see no model, a broken one,
    or an older one than they saw before."""
    from shared.recognition.store import ModelStore

    first = _synth.synthetic_model(tmp_path, n_kols=2)
    store = ModelStore(tmp_path / "models")
    errors, seen, stop = [], [], threading.Event()

    def reader():
        reader_store, history = ModelStore(tmp_path / "models"), []
        while not stop.is_set():
            try:
                model = reader_store.current()
                assert model is not None and len(model.classes) in (2, 3, 4)
                assert model.predict(np.zeros((1, 128)))  # a whole, usable model
                if not history or history[-1] != model.version:
                    assert model.version not in history, "went back to an older model"
                    history.append(model.version)
                seen.append(model.version)
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(repr(exc)[:300])

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    versions = [first] + [_synth.synthetic_model(tmp_path, n_kols=n, seed=n) for n in (3, 4, 3)]
    stop.set()
    for t in threads:
        t.join()
    assert errors == []
    assert store.current_version() == versions[-1] and set(seen) <= set(versions) and len(set(seen)) >= 2


@needs_data
@pytest.mark.live
def test_main_predicts_with_old_model_while_new_one_trains(servers):
    data_dir = servers.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    job = _synth.aligned_job(data_dir, kols=KOLS, per_kol=100)
    from shared.training import cleaning
    from shared.training.jobs import JobStore

    store = JobStore(data_dir / "jobs")
    store.write(job, "clean", cleaning.clean(store.read(job, "align")))
    store.finish_sync(job, "clean", summary={}, total=1)
    _import_pool(data_dir, job)
    old = _synth.synthetic_model(data_dir)
    servers.start("process")
    servers.start("main", workers=2, threads=4)  # as in the Procfile
    photo = (FIVE / "ben_afflek" / "train_1.jpg").read_bytes()
    main = servers.urls["main"]
    assert servers.http.get(main + "/", headers=JSON, timeout=30).json()["model"]["version"] == old

    log, stop = [], threading.Event()

    def client():
        session = requests.Session()
        session.headers.update(servers.http.headers)  # signed in like servers.http
        while not stop.is_set():
            try:
                r = session.post(main + "/predictSingleImage", files={"file": ("ben.jpg", photo)}, headers=JSON,
                                 timeout=60)
                home = session.get(main + "/", headers=JSON, timeout=30)
                log.append((threading.get_ident(), r.status_code, r.json().get("model_version"),
                            home.json()["model"]["version"]))
            except requests.RequestException as exc:
                log.append((threading.get_ident(), repr(exc)[:200], None, None))

    for _ in range(4):  # warm both workers up (dlib loads on the first photo)
        r = servers.http.post(main + "/predictSingleImage", files={"file": ("ben.jpg", photo)}, headers=JSON, timeout=120)
        assert r.status_code == 200 and r.json()["model_version"] == old, r.text
    clients = [threading.Thread(target=client) for _ in range(3)]
    for c in clients:
        c.start()
    deadline = time.monotonic() + 60
    while len(log) < 6 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert post(servers, "/train_model", job=job).status_code == 202
    p = wait_state(servers, job, "train", ("done", "failed"))
    assert p["state"] == "done", p
    new = get(servers, "/train_model", job=job).json()["model_version"]
    wait_for("every client to get an answer from the new model",  # a hang guard
             lambda: all(any(i == c.ident and v == h == new for i, _, v, h in list(log)) for c in clients), 60)
    stop.set()
    for c in clients:
        c.join()
    assert new != old
    assert log and all(status == 200 for _, status, _, _ in log), [e for e in log if e[1] != 200][:3]
    main_log = (servers.log_dir / "main.log").read_text(errors="replace")
    assert "SIGSEGV" not in main_log and "SIGABRT" not in main_log
    assert {v for _, _, v, _ in log} == {old, new} and {h for _, _, _, h in log} == {old, new}
    for ident in {e[0] for e in log}:  # each client sees old ... old, new ... new: one switch, never back
        versions = [v for i, _, v, _ in log if i == ident]
        assert versions == sorted(versions, key=lambda v: v == new), versions


# -- many predictions at once -------------------------------------------------------------------------
@needs_data
@pytest.mark.live
def test_concurrent_predictions_do_not_crash_a_worker(servers):
    """Eight clients at once on one main worker with the Procfile's 4 threads: every answer is a 200
    (or a 422 'no face'), and the worker never dies."""
    data_dir = servers.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    _synth.synthetic_model(data_dir)
    servers.start("main", workers=1)
    main = servers.urls["main"]
    photos = [p.read_bytes() for p in sorted(FIVE.rglob("val_*.jpg"))[:16]]
    statuses, lock = [], threading.Lock()

    def client(n):
        session = requests.Session()
        session.headers.update(servers.http.headers)  # signed in like servers.http
        for i in range(6):
            try:
                r = session.post(main + "/predictSingleImage", files={"file": ("p.jpg", photos[(n + i) % 16])},
                                 headers=JSON, timeout=120)
                code = r.status_code
            except requests.ConnectionError:
                code = "connection dropped"
            with lock:
                statuses.append(code)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log = (servers.log_dir / "main.log").read_text(errors="replace")
    assert "SIGSEGV" not in log and "SIGABRT" not in log and "double free" not in log, log[-2000:]
    assert set(statuses) <= {200, 422} and len(statuses) == 48, statuses


def test_leftovers_of_killed_writes_are_swept(tmp_path):
    """A main server killed mid-upload leaves a job folder without state.json, and a kill mid-import
    a temporary manifest: the next upload / import removes them (a fresh upload in progress is kept)."""
    from shared.training.jobs import JobStore
    from shared.training.pool import Pool

    jobs = tmp_path / "jobs"
    old, fresh = jobs / ("a" * 16), jobs / ("b" * 16)
    for folder in (old, fresh):
        (folder / "input" / "0").mkdir(parents=True)
        (folder / "upload.zip").write_bytes(b"PK half an upload")
    os.utime(old, (time.time() - 7 * 3600, time.time() - 7 * 3600))
    job = _synth.aligned_job(tmp_path, kols=("Ann",), per_kol=2)
    assert not old.exists() and fresh.exists()
    assert [s["job"] for s in JobStore(jobs).list()] == [job]
    (tmp_path / "pool").mkdir()
    stale = tmp_path / "pool" / ".tmp-abcdef"
    stale.write_bytes(b'{"kols": {"half')
    _import_pool(tmp_path, job)
    assert not stale.exists() and len(Pool(tmp_path / "pool").kols()) == 1
