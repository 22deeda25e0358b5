"""Retries and failures of queued work: what happens when work fails, dies or is lost, and the sentence a person reads.

A worker killed in the middle (SIGKILL, out of memory) or stopped by its time limit
(:attr:`shared.training.jobqueue.steps.Work.timeout_s`): when only its work horse dies the worker
itself sees it; when the whole worker dies, its heartbeat stops and another worker's maintenance
(every :data:`shared.training.jobqueue.worker.MAINTENANCE_S`) finds the RQ job abandoned after
:data:`shared.training.jobqueue.worker.HEARTBEAT_GRACE_S`; the process server also looks
(:func:`sweep_abandoned`) while someone watches the step. Either way the work is tried again
:data:`RETRIES` times, on whichever worker is free, and after that reported failed with
:func:`failure_sentence` (:func:`fail`). Work whose RQ jobs the queue lost is failed with
:data:`LOST`. Every step writes the pool and the model atomically, so they are exactly as before or
after it. An exception raised by the work itself becomes its step's sentence (:func:`record_failure`).
"""
import logging
import time

from rq.job import JobStatus
from rq.registry import StartedJobRegistry

from shared.core.errors import UserError
from shared.core.storage import DISK_FULL, is_disk_full
from shared.training.jobqueue.connection import queue
from shared.training.jobs import ACTIVE, now_iso

log = logging.getLogger(__name__)

#: How many times work whose worker died (or that ran out of time) is tried again.
RETRIES = 1

LOST = ("This step was interrupted: the job queue lost its work (the queue's Redis was reset, "
        "or the step was started by an older version). Nothing was lost: run the step again.")

_last_sweep = {}


def sweep_abandoned(conn, names, every_s=2.0):
    """Retry (or fail, when no try is left) the work of workers that died, as a worker's maintenance would.

    names: the queues to look at. The workers do this every
    :data:`shared.training.jobqueue.worker.MAINTENANCE_S`; the process server does it too while
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


def fail(conn, store, job_id, step, rec, sentence, rq_jobs, persist):
    """A step that ended for good without finishing: ``{"state": "failed", "done", "total", "error": sentence}``.

    rec: the step's record as read; rq_jobs: its RQ jobs (``None`` for those the queue lost).
    With ``persist``, the record is marked failed in ``state.json`` (unless another start has
    replaced it meanwhile) and the RQ jobs still waiting are cancelled.
    """
    if persist:
        ids = rec.get("rq")

        def change(state):
            now = state["steps"].get(step) or {}
            if now.get("rq") == ids and now.get("state") in ACTIVE:
                now.update(state="failed", error=sentence, status=500, finished=now_iso())
        store.update(job_id, change)
        for rq_job in rq_jobs:
            if rq_job is not None and rq_job.get_status(refresh=False) in (JobStatus.QUEUED, JobStatus.DEFERRED,
                                                                            JobStatus.SCHEDULED):
                try:
                    rq_job.cancel()
                except Exception:  # noqa: BLE001 - best effort: the task checks its record anyway
                    log.warning("could not cancel %s", rq_job.id)
    return {"state": "failed", "done": int(rec.get("done", 0)), "total": int(rec.get("total", 0)), "error": sentence}


def failure_sentence(step, rq_job, conn=None):
    """The sentence for an RQ job that failed for good: its own ``meta["error"]``, a time limit, or a dead worker."""
    meta = rq_job.meta or {}
    if meta.get("error"):
        return meta["error"]
    text = ""
    try:
        result = rq_job.latest_result()
        text = (result.exc_string or "") if result is not None else ""
    except Exception:  # noqa: BLE001 - only used to choose the sentence
        text = ""
    if "JobTimeoutException" in text or "timeout" in text.lower():
        return (f"The {step} step was interrupted: it ran longer than its limit of {rq_job.timeout} seconds "
                f"(tried {RETRIES + 1} times). Nothing was lost: run it again, or upload fewer photos at once.")
    if rq_job.get_status(refresh=False) in (JobStatus.STOPPED, JobStatus.CANCELED):
        return f"The {step} step was interrupted: it was stopped on the queue. Nothing was lost: run it again."
    return (f"The {step} step was interrupted: the worker doing it stopped in the middle (killed, or out of "
            f"memory), also when it was tried again on another worker. Nothing was lost: run the step again.")


def exception_sentence(step, exc):
    """``(sentence, status)`` for an exception raised by a step's work: a :class:`UserError`'s own,
    :data:`shared.core.storage.DISK_FULL` (507), or "failed unexpectedly" (500, logged with its traceback)."""
    if isinstance(exc, UserError):
        return exc.message, exc.status
    if is_disk_full(exc):
        log.error("%s step: disk full: %s", step, exc)
        return DISK_FULL, 507
    log.exception("%s step failed", step)
    return (f"The {step} step failed unexpectedly ({type(exc).__name__}: {exc}). "
            "The error was logged; you can run the step again.", 500)


def record_failure(store, job_id, step, rq_job, exc):
    """Write the failure of a step's work (:func:`exception_sentence`) into the RQ job's ``meta["error"]``
    and the job's record. Returns the RQ job's result ``{"error": sentence, "status": int}``."""
    sentence, status = exception_sentence(step, exc)
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
