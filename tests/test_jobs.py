"""Job state on disk and the background runner: progress, errors, restarts, isolation."""
import json
import shutil
import subprocess
import sys
import threading
import time
import zipfile

import pytest

from shared.archive import ArchiveError
from shared.errors import UserError
from shared.jobs import INTERRUPTED, JobStore

from .conftest import FIVE, needs_data


@pytest.fixture
def zip_path(tmp_path):
    if not FIVE.is_dir():
        pytest.skip("real photos not found")
    zp = tmp_path / "kols.zip"
    with zipfile.ZipFile(zp, "w") as zf:
        for person in ("ben_afflek", "madonna"):
            for p in sorted((FIVE / person).glob("train_*.jpg"))[:2]:
                zf.write(p, f"{person}/{p.name}")
    return zp


@pytest.fixture
def store(tmp_path):
    return JobStore(tmp_path / "jobs")


def new_job(store, zip_path):
    return store.create(lambda dest: shutil.copy(zip_path, dest), "image", "kols.zip")


def test_create_writes_state_and_removes_the_upload(store, zip_path):
    job = new_job(store, zip_path)
    state = store.state(job)
    assert state["job"] == job and state["kind"] == "image" and state["upload"] == "kols.zip"
    assert [(k["name"], len(k["files"])) for k in state["kols"]] == [("ben_afflek", 2), ("madonna", 2)]
    folder = store.folder(job)
    assert not (folder / "upload.zip").exists()
    assert all((folder / f["path"]).is_file() for k in state["kols"] for f in k["files"])
    assert store.progress(job) == {"job": job, "stage": "align", "state": "queued", "done": 0, "total": 0,
                                   "error": None}


def test_create_failure_leaves_nothing(store, tmp_path):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"no zip here")
    with pytest.raises(ArchiveError):
        store.create(lambda dest: shutil.copy(bad, dest), "image", "bad.zip")
    assert list(store.root.iterdir()) == []


@pytest.mark.parametrize("job", ["", "abc", "0123456789ABCDEF", "../../etc/passwd", "0123456789abcdef", None, 5])
def test_bad_or_unknown_ids_are_404(store, job):
    with pytest.raises(UserError) as err:
        store.state(job)
    assert err.value.status == 404


def test_background_step_reports_progress_and_summary(store, zip_path):
    job = new_job(store, zip_path)
    gate = threading.Event()

    def work(progress):
        progress(1, 4)
        gate.wait(5)
        progress(4, 4)
        return {"found": 3}

    thread = store.start(job, "align", work)
    time.sleep(0.1)
    p = store.progress(job)
    assert p["stage"] == "align" and p["state"] == "running" and p["done"] == 1 and p["total"] == 4
    with pytest.raises(UserError) as err:  # one step at a time per job
        store.start(job, "clean", lambda progress: None)
    assert err.value.status == 409
    gate.set()
    thread.join(5)
    assert store.progress(job) == {"job": job, "stage": "align", "state": "done", "done": 4, "total": 4,
                                   "error": None}
    assert store.state(job)["steps"]["align"]["summary"] == {"found": 3}


def test_failures_are_sentences(store, zip_path):
    job = new_job(store, zip_path)

    def user_problem(progress):
        raise UserError("The pool is empty: import some KOLs first.", 409)

    store.start(job, "train", user_problem).join(5)
    p = store.progress(job)
    assert p["state"] == "failed" and p["error"] == "The pool is empty: import some KOLs first."

    def bug(progress):
        raise ZeroDivisionError("division by zero")

    store.start(job, "train", bug).join(5)
    p = store.progress(job)
    assert p["state"] == "failed" and "ZeroDivisionError" in p["error"] and "run the step again" in p["error"]


def _mark_running(store, job):
    def mark(state):
        state["steps"]["align"] = {"state": "running", "done": 2, "total": 4, "error": None, "pid": 1}
        state["stage"] = "align"
    store.update(job, mark)


def test_running_step_without_a_live_worker_is_interrupted_and_can_rerun(store, zip_path):
    job = new_job(store, zip_path)
    _mark_running(store, job)  # what a crash mid-step leaves behind
    p = store.progress(job)
    assert p["state"] == "failed" and p["error"] == INTERRUPTED and p["done"] == 2
    # the file itself still says running (nothing rewritten behind the user's back), and a rerun is allowed
    assert json.loads((store.folder(job) / "state.json").read_text())["steps"]["align"]["state"] == "running"
    store.start(job, "align", lambda progress: {"ok": True}).join(5)
    assert store.progress(job)["state"] == "done"


def test_worker_in_another_process_counts_until_it_dies(store, zip_path):
    """A step worked on by another live process is running; once that process is killed it is interrupted."""
    job = new_job(store, zip_path)
    _mark_running(store, job)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a+b'); "
         "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)",
         str(store.folder(job) / ".running")], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"locked"
        assert store.progress(job)["state"] == "running"
        with pytest.raises(UserError) as err:
            store.start(job, "align", lambda progress: None)
        assert err.value.status == 409
    finally:
        holder.kill()
        holder.wait()
    assert store.progress(job)["error"] == INTERRUPTED


def test_two_jobs_do_not_mix(store, zip_path):
    a, b = new_job(store, zip_path), new_job(store, zip_path)
    assert a != b
    store.start(a, "align", lambda progress: (progress(3, 3), {"job": "a"})[1]).join(5)
    assert store.progress(b)["state"] == "queued"
    store.start(b, "align", lambda progress: (progress(1, 1), {"job": "b"})[1]).join(5)
    assert store.state(a)["steps"]["align"]["summary"] == {"job": "a"}
    assert store.state(b)["steps"]["align"]["summary"] == {"job": "b"}
    assert {s["job"] for s in store.list()} == {a, b}


def test_purge_kol_deletes_its_files_in_every_job(store, zip_path):
    a, b = new_job(store, zip_path), new_job(store, zip_path)
    store.purge_kol(lambda name: name == "madonna")
    for job in (a, b):
        assert not (store.folder(job) / "input" / "1").exists()
        assert (store.folder(job) / "input" / "0").is_dir()
        assert store.state(job)["purged"] == ["madonna"]


@needs_data
def test_concurrent_progress_writes_never_corrupt_state(store, zip_path):
    job = new_job(store, zip_path)

    def work(progress):
        for i in range(200):
            progress(i + 1, 200)
        return {}

    thread = store.start(job, "align", work)
    while thread.is_alive():
        json.loads((store.folder(job) / "state.json").read_text())  # always a whole file
    assert store.progress(job)["done"] == 200
