"""What the queue's workers run: the one task of every RQ job (:func:`run_work`), and the worker itself (:func:`work`).

:func:`run_work` looks the work up in :data:`shared.training.jobqueue.steps.WORK`, checks that the
job's record still names this RQ job, does it with its progress saved into the RQ job's ``meta``,
and writes the outcome into the job's record: done with its summary, or failed with a sentence
(:func:`shared.training.jobqueue.faults.record_failure`). :class:`Worker` is an RQ worker with short
heartbeats, so a dead worker's RQ job is found and retried within seconds.
"""
import time
from pathlib import Path

from rq import get_current_job
from rq.worker import Worker as RQWorker
from threadpoolctl import threadpool_limits

from shared.core import config
from shared.core.errors import UserError
from shared.faces import engine
from shared.recognition.store import ModelStore
from shared.training.jobqueue.connection import DOWN_ERRORS, queue, worker_connection
from shared.training.jobqueue.faults import record_failure
from shared.training.jobqueue.steps import QUEUES, WORK, Stores
from shared.training.jobs import ACTIVE, JobStore, now_iso
from shared.training.pool import Pool

#: Worker timings (seconds): heartbeat while working, the grace after a missed one before its
#: RQ job counts as abandoned, how often a worker looks for abandoned RQ jobs, and its registration TTL.
JOB_MONITORING_S = 5
HEARTBEAT_GRACE_S = 10
MAINTENANCE_S = 10
WORKER_TTL_S = 20
#: Progress is saved to the queue at most this often (seconds).
PROGRESS_EVERY_S = 0.25

_context = {}


def configure(data_dir):
    """Tell this worker process where the data folder is (the queue's tasks read and write there)."""
    _context["data_dir"] = str(Path(data_dir).resolve())


def data_dir():
    """This worker's data folder (:func:`configure`; else the settings' ``DATA_DIR``), also for the work that
    higher layers queue by RQ's dotted path on queues of their own (``work(queues=...)``)."""
    return _context.get("data_dir") or config.load()["DATA_DIR"]


def _stores():
    """The :class:`shared.training.jobqueue.steps.Stores` of this worker's data folder."""
    root = Path(data_dir())
    return Stores(JobStore(root / "jobs"), Pool(root / "pool"), ModelStore(root / "models"))


class _Progress:
    """``progress(done, total)`` for a task: into the RQ job's meta, at most every :data:`PROGRESS_EVERY_S`."""

    def __init__(self, rq_job):
        self.rq_job, self.last = rq_job, 0.0

    def __call__(self, done, total=None):
        if self.rq_job is None:
            return
        t = time.monotonic()
        self.rq_job.meta["done"] = int(done)
        if total is not None:
            self.rq_job.meta["total"] = int(total)
        if t - self.last >= PROGRESS_EVERY_S or (total is not None and done >= total):
            self.last = t
            try:
                self.rq_job.save_meta()
            except DOWN_ERRORS:
                pass  # progress is only shown; the outcome is written to the record


def _mine(store, job_id, step, rq_id):
    """True while the job's record for ``step`` still names this RQ job (not superseded, not deleted)."""
    try:
        rec = store.state(job_id)["steps"].get(step) or {}
    except UserError:
        return False
    return rq_id in (rec.get("rq") or []) and rec.get("state") in ACTIVE


def _running(store, job_id, step):
    def change(state):
        rec = state["steps"].get(step) or {}
        if rec.get("state") == "queued":
            rec["state"] = "running"
    store.update(job_id, change)


def run_work(job_id, name, options):
    """Queue task: the work ``name`` of :data:`shared.training.jobqueue.steps.WORK` for the job.

    Work that finishes its step (clean, import, train, align-finish) writes the outcome into the
    job's record: done with its summary, or failed with a sentence (a :class:`UserError`'s own,
    :data:`shared.core.storage.DISK_FULL`, or "failed unexpectedly") and returns ``{"summary": ...}`` or
    ``{"error": sentence, "status": int}``. An align chunk returns its own result
    (:func:`shared.training.wizard.align_chunk`) or the same failure. ``{"error": "superseded"}``
    when the record no longer names this RQ job.
    """
    work = WORK.get(name)
    step = work.step if work else name
    stores = _stores()
    rq_job = get_current_job()
    if rq_job is not None and not _mine(stores.jobs, job_id, step, rq_job.id):
        return {"error": "superseded"}
    progress = _Progress(rq_job)
    try:
        _running(stores.jobs, job_id, step)
        if work is None:
            raise UserError(f"There is no step called {name!r}.", 400)
        out = work.run(stores, job_id, options, progress)
    except Exception as exc:  # noqa: BLE001 - every failure becomes the step's sentence
        return record_failure(stores.jobs, job_id, step, rq_job, exc)
    if not work.finishes:
        return out
    summary, total = out
    stores.jobs.set_step(job_id, step, state="done", done=total, total=total, finished=now_iso(), error=None,
                         status=None, summary=summary)
    return {"summary": summary}


class Worker(RQWorker):
    """An RQ worker with short heartbeats, so a dead worker's RQ job is found and retried within seconds.

    RQ adds a fixed 60 s to every heartbeat; here an RQ job counts as abandoned
    :data:`HEARTBEAT_GRACE_S` after its worker's last heartbeat (every :data:`JOB_MONITORING_S`).
    """

    def get_heartbeat_ttl(self, rq_job, working_time=0.0):
        if rq_job.timeout and rq_job.timeout > 0:
            return int(min(rq_job.timeout - working_time, self.job_monitoring_interval)) + HEARTBEAT_GRACE_S
        return self.job_monitoring_interval + HEARTBEAT_GRACE_S


def work(redis_url, data_dir, burst=False, preload=True, name=None, queues=QUEUES):
    """Run one worker in this process until it is stopped (or, with ``burst``, until the queues are empty).

    data_dir: this machine's mount of the shared data folder. queues: the queue names it serves, in order
    (default :data:`shared.training.jobqueue.steps.QUEUES`; the worker command adds the queues of higher
    layers, whose RQ jobs name their function by dotted path, so this package never imports them).
    preload: load dlib once
    before taking work (each RQ job runs in a child process forked from this one, which then
    starts with the networks loaded).
    """
    configure(data_dir)
    if preload:
        engine.networks()
    threadpool_limits(limits=1)  # one worker per core: BLAS must not start a thread per core in each
    conn = worker_connection(redis_url)
    worker = Worker([queue(conn, n) for n in queues], connection=conn, name=name, worker_ttl=WORKER_TTL_S,
                    job_monitoring_interval=JOB_MONITORING_S, maintenance_interval=MAINTENANCE_S)
    worker.max_connection_wait_time = 5.0  # come back within seconds once Redis is back
    return worker.work(burst=burst, with_scheduler=False, logging_level="INFO")
