"""Job folders and records (shared.training.jobs) and the wizard's work on the real queue (shared.training.jobqueue):
progress from the RQ job's meta, failures as sentences, one step at a time, lost work, isolation.

The queue is a real redis-server (session fixture, one database per test) and the
workers are real processes (``python -m process_server.worker``).
"""
import json
import shutil
import time
import zipfile

import pytest

from shared.training import roster, wizard
from shared.training.jobqueue import connection, enqueue, status
from shared.faces.archive import ArchiveError
from shared.core.errors import UserError
from shared.training.jobs import JobStore

from . import _synth
from .conftest import FIVE, five_celebs_photos, needs_data

KEYS = {"job", "stage", "state", "done", "total", "error"}


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
def store(data_dir):
    return JobStore(data_dir / "jobs")


@pytest.fixture
def conn(redis_url):
    return connection.connect(redis_url)


def new_job(store, zip_path):
    return store.create(lambda dest: shutil.copy(zip_path, dest), "image", "kols.zip")


def wait_end(conn, store, job, step, timeout=120):
    p = status.wait(conn, store, job, step, timeout)
    assert p["state"] in ("done", "failed"), p
    return p


# -- the job folder and its records ---------------------------------------------------------
def test_create_writes_state_and_removes_the_upload(store, zip_path, conn):
    job = new_job(store, zip_path)
    state = store.state(job)
    assert state["job"] == job and state["kind"] == "image" and state["upload"] == "kols.zip"
    assert [(k["name"], len(k["files"])) for k in state["kols"]] == [("ben_afflek", 2), ("madonna", 2)]
    folder = store.folder(job)
    assert not (folder / "upload.zip").exists()
    assert all((folder / f["path"]).is_file() for k in state["kols"] for f in k["files"])
    assert status.step_progress(conn, store, job) == {"job": job, "stage": "align", "state": "queued", "done": 0,
                                                     "total": 0, "error": None}


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


def test_pool_training_job_has_only_the_train_step_and_deletes_whole(store, conn):
    job = store.create_pool_training()
    state = store.state(job)
    assert state["kind"] == "pool" and state["kols"] == [] and wizard.steps_of(state) == ("train",)
    assert wizard.next_step(state) == "train"
    assert status.step_progress(conn, store, job)["stage"] == "train"
    with pytest.raises(UserError) as err:
        wizard.align_plan(store, job)
    assert err.value.status == 409
    store.delete(job)
    assert list(store.root.iterdir()) == [] and store.ids() == []


def test_purge_kol_deletes_its_files_in_every_job(store, zip_path):
    a, b = new_job(store, zip_path), new_job(store, zip_path)
    assert roster.purge_kol(store, lambda name: name == "madonna") == 2
    for job in (a, b):
        assert not (store.folder(job) / "input" / "1").exists()
        assert (store.folder(job) / "input" / "0").is_dir()
        assert store.state(job)["purged"] == ["madonna"]


# -- steps on the queue ---------------------------------------------------------------------------
def test_clean_runs_on_a_worker_and_its_record_holds_the_result(data_dir, store, conn, queue_workers):
    job = _synth.aligned_job(data_dir, kols=("Ann", "Bob"), per_kol=6)
    ids = enqueue.start_step(conn, store, job, "clean", wizard.check_clean(store, job))
    p = wait_end(conn, store, job, "clean")
    assert set(p) == KEYS and p["state"] == "done" and p["error"] is None and p["done"] == p["total"] == 12, p
    rec = store.state(job)["steps"]["clean"]
    assert rec["rq"] == ids and set(rec["summary"]) == {"Ann", "Bob"}
    assert store.read(job, "clean")["kols"][0]["name"] == "Ann"
    # the queue knows the job finished, and its result is the same summary
    from rq.job import Job

    rq_job = Job.fetch(ids[0], connection=conn)
    assert rq_job.get_status() == "finished" and rq_job.return_value() == {"summary": rec["summary"]}


def test_failures_are_sentences_with_their_status(data_dir, store, conn, queue_workers):
    job = _synth.aligned_job(data_dir, kols=("Ann",), per_kol=3)
    enqueue.start_step(conn, store, job, "train")  # the pool is empty: the training itself says so
    p = wait_end(conn, store, job, "train")
    assert p["state"] == "failed" and p["error"] == "The training pool is empty: import some KOLs first.", p
    assert store.state(job)["steps"]["train"]["status"] == 409
    # a bug (a broken align result) is a sentence too, never a traceback
    store.write(job, "align", {"kind": "image", "kols": "broken"})
    enqueue.start_step(conn, store, job, "clean", {"remove": [], "keep": []})
    p = wait_end(conn, store, job, "clean")
    assert p["state"] == "failed" and "failed unexpectedly" in p["error"] and "run the step again" in p["error"], p
    assert "Traceback" not in p["error"] and store.state(job)["steps"]["clean"]["status"] == 500


def test_one_step_at_a_time_and_queued_until_a_worker_comes(data_dir, store, conn, redis_url, tmp_path):
    from .servers import Workers

    job = _synth.aligned_job(data_dir, kols=("Ann", "Bob"), per_kol=4)
    enqueue.start_step(conn, store, job, "clean", {"remove": [], "keep": []})  # no worker yet
    assert status.step_progress(conn, store, job)["state"] == "queued"  # and it stays so: nothing can take it
    for step in ("clean", "align"):
        with pytest.raises(UserError) as err:
            enqueue.start_step(conn, store, job, step, {"remove": [], "keep": []},
                             plan={"chunks": [[[0, 0]]], "weights": [1], "total": 1})
        assert err.value.status == 409 and "still running" in err.value.message
    with pytest.raises(UserError) as err:
        enqueue.delete_job(conn, store, job)
    assert err.value.status == 409 and store.folder(job).is_dir()
    workers = Workers(data_dir, redis_url, tmp_path / "w.log")
    try:
        assert wait_end(conn, store, job, "clean")["state"] == "done"
    finally:
        workers.stop()
    enqueue.delete_job(conn, store, job)
    assert store.ids() == []


def test_one_training_at_a_time_across_jobs(data_dir, store, conn):
    a = _synth.aligned_job(data_dir, kols=("Ann",), per_kol=3)
    b = store.create_pool_training()
    enqueue.start_step(conn, store, a, "train")  # no worker: it stays queued
    with pytest.raises(UserError) as err:
        enqueue.start_step(conn, store, b, "train")
    assert err.value.status == 409 and "already running" in err.value.message
    assert "train" not in store.state(b)["steps"]


def test_work_the_queue_lost_is_reported_interrupted_and_can_run_again(data_dir, store, conn, queue_workers):
    job = _synth.aligned_job(data_dir, kols=("Ann", "Bob"), per_kol=4)
    store.set_step(job, "clean", state="running", done=2, total=8, rq=["no-such-queue-job"])  # e.g. Redis reset
    p = status.step_progress(conn, store, job)
    assert p["state"] == "failed" and "interrupted" in p["error"] and p["done"] == 2, p
    assert store.state(job)["steps"]["clean"]["state"] == "failed"  # recorded: it stays failed
    enqueue.start_step(conn, store, job, "clean", {"remove": [], "keep": []})
    assert wait_end(conn, store, job, "clean")["state"] == "done"


def test_two_jobs_do_not_mix(data_dir, store, conn, queue_workers):
    a = _synth.aligned_job(data_dir, kols=("Ann", "Bob"), per_kol=4)
    b = _synth.aligned_job(data_dir, kols=("Cid",), per_kol=5, seed=1)
    enqueue.start_step(conn, store, a, "clean", {"remove": [], "keep": []})
    enqueue.start_step(conn, store, b, "clean", {"remove": [], "keep": []})
    assert wait_end(conn, store, a, "clean")["total"] == 8
    assert wait_end(conn, store, b, "clean")["total"] == 5
    assert set(store.state(a)["steps"]["clean"]["summary"]) == {"Ann", "Bob"}
    assert set(store.state(b)["steps"]["clean"]["summary"]) == {"Cid"}


@needs_data
def test_align_progress_comes_from_the_queue_and_parts_are_put_together(data_dir, store, conn, queue_workers):
    """A 20-photo job in chunks of 4: the progress climbs chunk by chunk (from the RQ jobs' meta),
    and the finished align.json lists every photo in zip order."""
    members = {f"{person}/{p.name}": p for person, paths in list(five_celebs_photos().items())[:2]
               for p in paths[:10]}
    zp = data_dir.parent / "k.zip"
    zp.write_bytes(_synth.build_zip({n: p.read_bytes() for n, p in members.items()}))
    job = store.create(lambda dest: shutil.copy(zp, dest), "image", "k.zip")
    plan = wizard.align_plan(store, job, chunk_size=4)
    assert [len(c) for c in plan["chunks"]] == [4, 4, 4, 4, 4] and plan["total"] == 20
    enqueue.start_step(conn, store, job, "align", plan=plan)
    seen = []
    deadline = time.monotonic() + 300
    while True:
        p = status.step_progress(conn, store, job)
        assert set(p) == KEYS and p["stage"] == "align" and p["total"] == 20, p
        seen.append(p["done"])
        if p["state"] in ("done", "failed"):
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert p["state"] == "done" and p["done"] == 20, p
    assert seen == sorted(seen) and len({d for d in seen if 0 < d < 20}) >= 2, seen  # it climbed in steps
    assert any(d % 4 for d in seen), seen  # within a chunk too: the running RQ job's meta
    result = store.read(job, "align")
    state = store.state(job)
    assert [[s["name"] for s in k["sources"]] for k in result["kols"]] == \
        [[f["name"] for f in k["files"]] for k in state["kols"]]
    assert sum(len(s["crops"]) for k in result["kols"] for s in k["sources"]) >= 18
    assert not (store.folder(job) / "parts").exists()


def test_concurrent_record_writes_never_corrupt_state(data_dir, store):
    """Many writers (as workers of several chunks are) and a reader: the record is always a whole file."""
    import threading

    job = _synth.aligned_job(data_dir, kols=("Ann",), per_kol=2)
    stop, errors = threading.Event(), []

    def writer(n):
        for i in range(60):
            store.set_step(job, f"s{n}", state="running", done=i, total=60)

    def reader():
        while not stop.is_set():
            try:
                json.loads((store.folder(job) / "state.json").read_text())
            except ValueError as exc:  # noqa: PERF203
                errors.append(exc)

    r = threading.Thread(target=reader)
    r.start()
    writers = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    stop.set()
    r.join()
    assert errors == []
    assert {n: store.state(job)["steps"][f"s{n}"]["done"] for n in range(3)} == {0: 59, 1: 59, 2: 59}


def test_a_worker_on_another_machines_mount_of_the_data_folder(data_dir, store, conn, redis_url, tmp_path):
    """A worker that shares nothing with the server but Redis and the data folder, reached by another
    path (as an NFS mount on a second machine would be): it does the work, and nothing it writes
    names its own path."""
    from .servers import Workers

    mount = tmp_path / "mnt" / "kol-data"
    mount.parent.mkdir()
    job = _synth.aligned_job(data_dir, kols=("Ann", "Bob"), per_kol=4)
    mount.symlink_to(data_dir.resolve(), target_is_directory=True)
    workers = Workers(mount, redis_url, tmp_path / "remote.log")
    try:
        enqueue.start_step(conn, store, job, "clean", {"remove": [], "keep": []})
        assert wait_end(conn, store, job, "clean")["state"] == "done"
        from rq.job import Job

        rq_id = store.state(job)["steps"]["clean"]["rq"][0]
        worker = Job.fetch(rq_id, connection=conn).worker_name
        assert worker and all(w["name"] != worker or w["pid"] == workers.procs[0].pid
                              for w in status.overview(conn)["workers"])
    finally:
        workers.stop()
    written = (store.folder(job) / "state.json").read_text() + (store.folder(job) / "clean.json").read_text()
    assert "mnt" not in written and str(data_dir) not in written
