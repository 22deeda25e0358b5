"""The wizard's work on a real job queue: RQ on Redis, with workers on one machine or many.

The process server's views check a request (:mod:`shared.training.wizard`), then
:func:`start_step` records the step in the job's ``state.json`` and puts its work
on a queue; workers (:func:`work`, started by ``python -m process_server.worker``,
one process per core, on this machine or any other with the same ``REDIS_URL``,
password included (the local Redis's is in ``DATA_DIR/instance/redis_password``, see
:func:`shared.core.config.local_redis_url`), and the same ``DATA_DIR`` mounted) take it. Queues, in the order workers serve them:

- ``quick``: clean, import, and putting an alignment's parts together;
- ``train``: training (one at a time: a second one gets a 409 before it is queued);
- ``align``: alignment, split into chunks of photos (one video per chunk) that
  all workers take at once (:func:`shared.training.wizard.align_plan`).

Where things are:

- progress: the running queue job's ``meta`` (``{"done", "total"}``, saved at most
  4 times a second); :func:`step_progress` adds the chunks up;
- status: the queue jobs' status (queued, started, finished, failed...);
- result and failure sentences: written by the work into the job's record
  (``state.json``, kept after the queue forgets the job) and into ``meta["error"]``.

Faults. A worker killed in the middle (SIGKILL, out of memory) or stopped by its
time limit (:data:`TIMEOUTS`): when only its work horse dies the worker itself
sees it; when the whole worker dies, its heartbeat stops and another worker's
maintenance (every :data:`MAINTENANCE_S`) finds the job abandoned after
:data:`HEARTBEAT_GRACE_S`. Either way the job is retried once (:data:`RETRIES`),
on whichever worker is free, and after that reported failed with
:func:`failure_sentence`. Every step writes the pool and the model atomically,
so they are exactly as before or after it. Redis unreachable: every call here
raises ``redis.ConnectionError`` or ``redis.TimeoutError`` within
:data:`SOCKET_TIMEOUT_S`; the process server answers 503 with :data:`REDIS_DOWN`.
"""
import logging
import secrets
import time
from datetime import datetime, timezone
from pathlib import Path

import redis
from rq import Queue, Retry, get_current_job
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry
from rq.worker import Worker as RQWorker

from shared.core import config
from shared.core.errors import UserError
from shared.core.storage import DISK_FULL, is_disk_full
from shared.training import wizard
from shared.training.jobs import ACTIVE, JobStore, now_iso

log = logging.getLogger(__name__)

#: Queue names, in the order a worker serves them (quick work first).
QUEUES = ("quick", "train", "align")
#: Which queue does each step's work.
STEP_QUEUE = {"align": "align", "clean": "quick", "import": "quick", "train": "train"}
#: Seconds a piece of work may run before its worker stops it (an align chunk, a clean, ...).
TIMEOUTS = {"align": 900, "align-finish": 300, "clean": 600, "import": 1800, "train": 3600}
#: How many times work whose worker died (or that ran out of time) is tried again.
RETRIES = 1
#: Seconds the queue keeps a finished / failed queue job (the job's record in state.json stays).
RESULT_TTL_S = 24 * 3600
FAILURE_TTL_S = 7 * 24 * 3600
#: Seconds a web request waits for Redis to connect or answer before giving up (503).
SOCKET_TIMEOUT_S = 3
#: Worker timings (seconds): heartbeat while working, the grace after a missed one before its
#: job counts as abandoned, how often a worker looks for abandoned jobs, and its registration TTL.
JOB_MONITORING_S = 5
HEARTBEAT_GRACE_S = 10
MAINTENANCE_S = 10
WORKER_TTL_S = 20
#: A worker whose last heartbeat is older than this is shown as gone.
WORKER_ALIVE_S = 30
#: Progress is saved to the queue at most this often (seconds).
PROGRESS_EVERY_S = 0.25

REDIS_DOWN = ("The job queue is not answering (its Redis server is stopped or unreachable), so this "
              "cannot be shown or started right now. Nothing was lost: work resumes when the queue is "
              "back; try again in a minute.")
LOST = ("This step was interrupted: the job queue lost its work (the queue's Redis was reset, "
        "or the step was started by an older version). Nothing was lost: run the step again.")

_connections = {}


# -- connections ------------------------------------------------------------------------------
def connect(url, timeout=SOCKET_TIMEOUT_S):
    """A Redis client for ``url`` (one connection pool per URL and process) that gives up after ``timeout`` s."""
    key = (url, timeout)
    if key not in _connections:
        _connections[key] = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout,
                                                 health_check_interval=30)
    return _connections[key]


def is_down(exc):
    """True for the errors a Redis client raises when the server is stopped or not answering."""
    return isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError))


def queue(conn, name):
    """The RQ queue ``name`` (one of :data:`QUEUES`)."""
    return Queue(name, connection=conn)


# -- starting a step ----------------------------------------------------------------------------
def _rq_id(job_id, step, part=""):
    return f"{job_id}-{step}{part}-{secrets.token_hex(3)}"


def _options(step, timeout_key=None):
    return {"job_timeout": TIMEOUTS[timeout_key or step], "retry": Retry(max=RETRIES),
            "result_ttl": RESULT_TTL_S, "failure_ttl": FAILURE_TTL_S}


def start_step(conn, store, job_id, step, options=None, plan=None):
    """Record ``step`` of the job as queued and put its work on the queue.

    options: the step's arguments (:func:`shared.training.wizard.check_clean` / ``check_import`` answers).
    plan: for align, :func:`shared.training.wizard.align_plan`'s answer (one queue job per chunk, plus one
    that puts the parts together once all are done).
    409 when a step of this job is still queued or running; 409 for a training while another
    training is queued or running anywhere. Returns the queue job ids.
    """
    if step == "train":
        busy = training_busy(conn)
        if busy:
            raise UserError("A training is already running (one at a time, so every model includes "
                            "the pool as it was): wait for it to finish, then train again.", 409)
    with store.locked(job_id):
        state = store.state(job_id)
        for name, rec in state["steps"].items():
            if rec.get("state") in ACTIVE and _live(conn, store, job_id, name, rec, persist=False)["state"] in ACTIVE:
                raise UserError(f"The {name} step of this job is still running; wait for it to finish.", 409)
        previous = state["steps"].get(step)
        record = {"state": "queued", "done": 0, "total": 0, "error": None, "status": None,
                  "started": now_iso(), "finished": None, "summary": {}}
        if step == "align":
            chunk_ids = [_rq_id(job_id, step, f"_{i}") for i in range(len(plan["chunks"]))]
            finish_id = _rq_id(job_id, step, "_finish")
            record.update(rq=chunk_ids + [finish_id], weights=plan["weights"], total=plan["total"])
        else:
            record.update(rq=[_rq_id(job_id, step)])
        state["steps"][step] = record
        state["stage"] = step
        store.write(job_id, "state", state)
        try:
            if step == "align":
                q = queue(conn, "align")
                with conn.pipeline() as pipe:
                    chunks = q.enqueue_many([
                        Queue.prepare_data(align_chunk_task, (job_id, i, items), job_id=rid,
                                           description=f"align {job_id} part {i + 1}/{len(chunk_ids)}",
                                           timeout=TIMEOUTS["align"], retry=Retry(max=RETRIES),
                                           result_ttl=RESULT_TTL_S, failure_ttl=FAILURE_TTL_S)
                        for i, (rid, items) in enumerate(zip(chunk_ids, plan["chunks"]))], pipeline=pipe)
                    pipe.execute()
                queue(conn, "quick").enqueue(step_task, job_id, "align", {"chunks": len(chunk_ids)},
                                             job_id=finish_id, depends_on=chunks,
                                             description=f"align {job_id}: put the parts together",
                                             **_options("align", "align-finish"))
            else:
                queue(conn, STEP_QUEUE[step]).enqueue(step_task, job_id, step, options or {},
                                                      job_id=record["rq"][0], description=f"{step} {job_id}",
                                                      **_options(step))
        except BaseException:
            if previous is None:
                state["steps"].pop(step, None)
            else:
                state["steps"][step] = previous
            store.write(job_id, "state", state)
            raise
    return record["rq"]


def training_busy(conn):
    """True while a training is queued or running on any worker."""
    q = queue(conn, "train")
    return bool(q.count or StartedJobRegistry(queue=q).count)


def wait(conn, store, job_id, step, timeout):
    """Wait up to ``timeout`` s for ``step`` of the job to end; its :func:`step_progress` at that moment."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        progress = step_progress(conn, store, job_id, step=step)
        if progress["state"] not in ACTIVE or time.monotonic() > deadline:
            return progress
        time.sleep(delay)
        delay = min(0.25, delay * 1.5)


# -- where a step stands --------------------------------------------------------------------------
def step_progress(conn, store, job_id, step=None):
    """The contract's progress object for the job's current stage (or for ``step``).

    ``{"job", "stage", "state": "queued|running|done|failed", "done", "total", "error"}``;
    a job where no step was started yet reports its first step, state ``"queued"``.
    While the record says queued or running, the queue says whether that is still true.
    """
    state = store.state(job_id)
    stage = step or state.get("stage") or wizard.steps_of(state)[0]
    rec = state["steps"].get(stage) or {}
    out = {"job": job_id, "stage": stage, "state": rec.get("state", "queued"), "done": int(rec.get("done", 0)),
           "total": int(rec.get("total", 0)), "error": rec.get("error")}
    if rec.get("state") in ACTIVE:
        out.update(_live(conn, store, job_id, stage, rec))
    return out


def live_state(conn, store, state):
    """The job's record with every queued/running step's state, counts and error as the queue says now."""
    for name, rec in state["steps"].items():
        if rec.get("state") in ACTIVE:
            rec.update(_live(conn, store, state["job"], name, rec))
    return state


def _live(conn, store, job_id, step, rec, persist=True):
    """``{"state", "done", "total", "error"}`` of an active step, from its queue jobs.

    A step whose queue jobs failed for good (or vanished) is recorded as failed
    in ``state.json`` (when ``persist``) and its remaining queue jobs are cancelled.
    """
    ids = rec.get("rq") or []
    total = int(rec.get("total", 0))
    jobs = Job.fetch_many(ids, connection=conn) if ids else []
    if not ids or any(j is None for j in jobs):
        # the finishing job of an align is created up front: it exists unless the queue lost it
        return _fail(conn, store, job_id, step, rec, LOST, jobs, persist)
    statuses = [j.get_status(refresh=False) for j in jobs]
    if JobStatus.STARTED in statuses and _sweep_abandoned(conn, {j.origin for j in jobs}):
        jobs = Job.fetch_many(ids, connection=conn)
        if any(j is None for j in jobs):
            return _fail(conn, store, job_id, step, rec, LOST, jobs, persist)
        statuses = [j.get_status(refresh=False) for j in jobs]
    for j, status in zip(jobs, statuses):
        if status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
            return _fail(conn, store, job_id, step, rec, failure_sentence(step, j, conn), jobs, persist)
    if all(s == JobStatus.FINISHED for s in statuses):
        # the work wrote its outcome into the record before the queue marked it finished
        now = (store.state(job_id)["steps"].get(step) or {})
        if now.get("state") not in ACTIVE:
            return {k: now.get(k) for k in ("state", "done", "total", "error")}
        return _fail(conn, store, job_id, step, rec, LOST, jobs, persist)
    if step == "align":
        weights = rec.get("weights") or [0] * (len(jobs) - 1)
        done = sum(w if s == JobStatus.FINISHED else min(w, int((j.meta or {}).get("done", 0)))
                   for j, s, w in zip(jobs[:-1], statuses[:-1], weights))
    else:
        meta = jobs[0].meta or {}
        done, total = int(meta.get("done", 0)), int(meta.get("total") or total)
    running = any(s in (JobStatus.STARTED, JobStatus.FINISHED) for s in statuses)
    return {"state": "running" if running else "queued", "done": done, "total": total, "error": None}


_last_sweep = {}


def _sweep_abandoned(conn, names, every_s=2.0):
    """Retry (or fail, when no try is left) the work of workers that died, as a worker's maintenance would.

    The workers do this every :data:`MAINTENANCE_S`; the process server does it too while
    someone watches a step, so a step whose every worker died ends as failed instead of
    waiting forever. At most once per ``every_s`` per queue and process. True when it ran.
    """
    ran = False
    for name in names:
        t, key = time.monotonic(), (repr(conn.connection_pool), name)
        if t - _last_sweep.get(key, 0.0) < every_s:
            continue
        _last_sweep[key] = t
        StartedJobRegistry(queue=queue(conn, name)).cleanup()
        ran = True
    return ran


def _fail(conn, store, job_id, step, rec, sentence, jobs, persist):
    if persist:
        ids = rec.get("rq")

        def change(state):
            now = state["steps"].get(step) or {}
            if now.get("rq") == ids and now.get("state") in ACTIVE:
                now.update(state="failed", error=sentence, status=500, finished=now_iso())
        store.update(job_id, change)
        for j in jobs:
            if j is not None and j.get_status(refresh=False) in (JobStatus.QUEUED, JobStatus.DEFERRED,
                                                                  JobStatus.SCHEDULED):
                try:
                    j.cancel()
                except Exception:  # noqa: BLE001 - best effort: the task checks its record anyway
                    log.warning("could not cancel %s", j.id)
    return {"state": "failed", "done": int(rec.get("done", 0)), "total": int(rec.get("total", 0)), "error": sentence}


def failure_sentence(step, job, conn=None):
    """The sentence for a queue job that failed for good: its own ``meta["error"]``, a time limit, or a dead worker."""
    meta = job.meta or {}
    if meta.get("error"):
        return meta["error"]
    text = ""
    try:
        result = job.latest_result()
        text = (result.exc_string or "") if result is not None else ""
    except Exception:  # noqa: BLE001 - only used to choose the sentence
        text = ""
    if "JobTimeoutException" in text or "timeout" in text.lower():
        return (f"The {step} step was interrupted: it ran longer than its limit of {job.timeout} seconds "
                f"(tried {RETRIES + 1} times). Nothing was lost: run it again, or upload fewer photos at once.")
    if job.get_status(refresh=False) in (JobStatus.STOPPED, JobStatus.CANCELED):
        return f"The {step} step was interrupted: it was stopped on the queue. Nothing was lost: run it again."
    return (f"The {step} step was interrupted: the worker doing it stopped in the middle (killed, or out of "
            f"memory), also when it was tried again on another worker. Nothing was lost: run the step again.")


# -- the work (runs in the workers) ---------------------------------------------------------------
_context = {}


def configure(data_dir):
    """Tell this worker process where the data folder is (the queue's tasks read and write there)."""
    _context["data_dir"] = str(Path(data_dir).resolve())


def _stores():
    from shared.recognition.store import ModelStore
    from shared.training.pool import Pool

    root = Path(_context.get("data_dir") or config.load()["DATA_DIR"])
    return JobStore(root / "jobs"), Pool(root / "pool"), ModelStore(root / "models")


class _Progress:
    """``progress(done, total)`` for a task: into the queue job's meta, at most every :data:`PROGRESS_EVERY_S`."""

    def __init__(self, rq_job):
        self.job, self.last = rq_job, 0.0

    def __call__(self, done, total=None):
        if self.job is None:
            return
        t = time.monotonic()
        self.job.meta["done"] = int(done)
        if total is not None:
            self.job.meta["total"] = int(total)
        if t - self.last >= PROGRESS_EVERY_S or (total is not None and done >= total):
            self.last = t
            try:
                self.job.save_meta()
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                pass  # progress is only shown; the outcome is written to the record


def _mine(store, job_id, step, rq_id):
    """True while the job's record for ``step`` still names this queue job (not superseded, not deleted)."""
    try:
        rec = store.state(job_id)["steps"].get(step) or {}
    except UserError:
        return False
    return rq_id in (rec.get("rq") or []) and rec.get("state") in ACTIVE


def _sentence(step, exc):
    """``(sentence, status)`` for an exception raised by a step's work."""
    if isinstance(exc, UserError):
        return exc.message, exc.status
    if is_disk_full(exc):
        log.error("%s step: disk full: %s", step, exc)
        return DISK_FULL, 507
    log.exception("%s step failed", step)
    return (f"The {step} step failed unexpectedly ({type(exc).__name__}: {exc}). "
            "The error was logged; you can run the step again.", 500)


def _record_failure(store, job_id, step, rq_job, exc):
    sentence, status = _sentence(step, exc)
    if rq_job is not None:
        rq_job.meta["error"] = sentence
        try:
            rq_job.save_meta()
        except Exception:  # noqa: BLE001 - the record below is what the pages read
            pass
    try:
        store.set_step(job_id, step, state="failed", finished=now_iso(), error=sentence, status=status)
    except OSError:  # the disk is still full
        log.error("job %s step %s: could not record the failure", job_id, step)
    return {"error": sentence, "status": status}


def _running(store, job_id, step):
    def change(state):
        rec = state["steps"].get(step) or {}
        if rec.get("state") == "queued":
            rec["state"] = "running"
    store.update(job_id, change)


def step_task(job_id, step, options):
    """Queue task: one whole step (clean, import, train) or the end of an align (put the parts together).

    Writes the outcome into the job's record: done with its summary, or failed with
    a sentence (a :class:`UserError`'s own, :data:`DISK_FULL`, or "failed unexpectedly").
    Returns ``{"summary": ...}`` or ``{"error": sentence, "status": int}``.
    """
    store, pool, models = _stores()
    rq_job = get_current_job()
    rq_id = rq_job.id if rq_job else None
    if rq_id is not None and not _mine(store, job_id, step, rq_id):
        return {"error": "superseded"}
    progress = _Progress(rq_job)
    try:
        _running(store, job_id, step)
        if step == "clean":
            out = wizard.clean(store, job_id, options.get("remove", []), options.get("keep", []), progress)
            summary, total = out["summary"], out["total"]
        elif step == "import":
            summary = wizard.import_kols(store, pool, job_id, options, progress)
            total = len(summary["imported"])
        elif step == "train":
            summary = wizard.train_pool(pool, models, progress, keep=(options or {}).get("keep"))
            total = 3
        elif step == "align":
            summary = wizard.align_finish(store, job_id, options["chunks"])
            total = int(store.state(job_id)["steps"]["align"].get("total", 0))
        else:
            raise UserError(f"There is no step called {step!r}.", 400)
    except Exception as exc:  # noqa: BLE001 - every failure becomes the step's sentence
        return _record_failure(store, job_id, step, rq_job, exc)
    store.set_step(job_id, step, state="done", done=total, total=total, finished=now_iso(), error=None,
                   status=None, summary=summary)
    return {"summary": summary}


def align_chunk_task(job_id, chunk, items):
    """Queue task: align one chunk of a job's photos (or one video); see :func:`shared.training.wizard.align_chunk`."""
    store, _, _ = _stores()
    rq_job = get_current_job()
    if rq_job is not None and not _mine(store, job_id, "align", rq_job.id):
        return {"error": "superseded"}
    try:
        _running(store, job_id, "align")
        return wizard.align_chunk(store, job_id, chunk, items, progress=_Progress(rq_job))
    except Exception as exc:  # noqa: BLE001
        return _record_failure(store, job_id, "align", rq_job, exc)


# -- the jobs list: delete, monitor ---------------------------------------------------------------------
def delete_job(conn, store, job_id):
    """Delete a job whose steps are all over: its folder and its queue jobs. 409 while a step is active."""
    with store.locked(job_id):
        state = store.state(job_id)
        for name, rec in state["steps"].items():
            if rec.get("state") in ACTIVE and _live(conn, store, job_id, name, rec, persist=False)["state"] in ACTIVE:
                raise UserError(f"The {name} step of this job is still running; wait for it to finish "
                                "before deleting the job.", 409)
        ids = [i for rec in state["steps"].values() for i in rec.get("rq") or []]
        for j in Job.fetch_many(ids, connection=conn) if ids else []:
            if j is not None:
                j.delete()
        store.delete(job_id)


def overview(conn):
    """The queue at a glance: ``{"queues": [{"name", "queued", "running", "failed", "finished"}],
    "workers": [{"name", "host", "pid", "state", "job", "alive", "last_heartbeat"}]}``."""
    out = {"queues": [], "workers": []}
    for name in QUEUES:
        q = queue(conn, name)
        out["queues"].append({"name": name, "queued": q.count, "running": StartedJobRegistry(queue=q).count,
                              "failed": FailedJobRegistry(queue=q).count,
                              "finished": FinishedJobRegistry(queue=q).count})
    now = datetime.now(timezone.utc)
    for w in RQWorker.all(connection=conn):
        beat = w.last_heartbeat
        if beat is not None and beat.tzinfo is None:
            beat = beat.replace(tzinfo=timezone.utc)
        alive = beat is not None and (now - beat).total_seconds() < WORKER_ALIVE_S
        try:
            current = w.get_current_job_id()
        except Exception:  # noqa: BLE001 - shown as no job
            current = None
        out["workers"].append({"name": w.name, "host": w.hostname, "pid": w.pid, "state": str(w.get_state()),
                               "job": current, "alive": alive,
                               "last_heartbeat": beat.isoformat(timespec="seconds") if beat else None})
    out["workers"].sort(key=lambda w: (not w["alive"], w["host"] or "", w["pid"] or 0))
    return out


# -- the worker -------------------------------------------------------------------------------------------
class Worker(RQWorker):
    """An RQ worker with short heartbeats, so a dead worker's job is found and retried within seconds.

    RQ adds a fixed 60 s to every heartbeat; here a job counts as abandoned
    :data:`HEARTBEAT_GRACE_S` after its worker's last heartbeat (every :data:`JOB_MONITORING_S`).
    """

    def get_heartbeat_ttl(self, job, working_time=0.0):
        if job.timeout and job.timeout > 0:
            return int(min(job.timeout - working_time, self.job_monitoring_interval)) + HEARTBEAT_GRACE_S
        return self.job_monitoring_interval + HEARTBEAT_GRACE_S


def work(redis_url, data_dir, burst=False, preload=True, name=None):
    """Run one worker in this process until it is stopped (or, with ``burst``, until the queues are empty).

    data_dir: this machine's mount of the shared data folder. preload: load dlib once
    before taking work (each job runs in a child process forked from this one, which then
    starts with the networks loaded).
    """
    from threadpoolctl import threadpool_limits

    configure(data_dir)
    if preload:
        from shared.faces import engine

        engine.networks()
    threadpool_limits(limits=1)  # one worker per core: BLAS must not start a thread per core in each
    conn = redis.Redis.from_url(redis_url, socket_connect_timeout=SOCKET_TIMEOUT_S)
    worker = Worker([queue(conn, n) for n in QUEUES], connection=conn, name=name, worker_ttl=WORKER_TTL_S,
                    job_monitoring_interval=JOB_MONITORING_S, maintenance_interval=MAINTENANCE_S)
    worker.max_connection_wait_time = 5.0  # come back within seconds once Redis is back
    return worker.work(burst=burst, with_scheduler=False, logging_level="INFO")
