"""Starting a step of a training job on the queue, and deleting a job with its RQ jobs: what the servers change.

:func:`start_step` records the step as queued in the job's ``state.json`` (with the ids of the
RQ jobs that will do it, ``rec["rq"]``) and puts the work of :data:`shared.training.jobqueue.steps.WORK`
on its queue, each RQ job running :func:`shared.training.jobqueue.worker.run_work`.
"""
import secrets

from rq import Queue, Retry
from rq.job import Job

from shared.core.errors import UserError
from shared.training.jobqueue.connection import queue
from shared.training.jobqueue.faults import RETRIES
from shared.training.jobqueue.status import active_step, training_busy
from shared.training.jobqueue.steps import WORK
from shared.training.jobqueue.worker import run_work
from shared.training.jobs import now_iso

#: Seconds the queue keeps a finished / failed RQ job (the job's record in state.json stays).
RESULT_TTL_S = 24 * 3600
FAILURE_TTL_S = 7 * 24 * 3600


def _rq_id(job_id, step, part=""):
    """A new RQ job id: ``<job id>-<step><part>-<6 hex>`` (``part``: ``"_0"``, ``"_finish"``, ...)."""
    return f"{job_id}-{step}{part}-{secrets.token_hex(3)}"


def _options(work):
    """RQ's options for a piece of ``work`` (a :class:`shared.training.jobqueue.steps.Work`)."""
    return {"job_timeout": work.timeout_s, "retry": Retry(max=RETRIES),
            "result_ttl": RESULT_TTL_S, "failure_ttl": FAILURE_TTL_S}


def start_step(conn, store, job_id, step, options=None, plan=None):
    """Record ``step`` of the job as queued and put its work on the queue.

    options: the step's arguments (:func:`shared.training.wizard.check_clean` / ``check_import`` answers).
    plan: for align, :func:`shared.training.wizard.align_plan`'s answer (one RQ job per chunk, plus one
    that puts the parts together once all are done).
    409 when a step of this job is still queued or running; 409 for a training while another
    training is queued or running anywhere. Returns the RQ job ids.
    """
    if step == "train":
        busy = training_busy(conn)
        if busy:
            raise UserError("A training is already running (one at a time, so every model includes "
                            "the pool as it was): wait for it to finish, then train again.", 409)
    with store.locked(job_id):
        state = store.state(job_id)
        running = active_step(conn, store, job_id, state)
        if running:
            raise UserError(f"The {running} step of this job is still running; wait for it to finish.", 409)
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
                _enqueue_align(conn, job_id, plan, chunk_ids, finish_id)
            else:
                work = WORK[step]
                queue(conn, work.queue).enqueue(run_work, job_id, work.name, options or {},
                                                job_id=record["rq"][0], description=f"{step} {job_id}",
                                                **_options(work))
        except BaseException:
            if previous is None:
                state["steps"].pop(step, None)
            else:
                state["steps"][step] = previous
            store.write(job_id, "state", state)
            raise
    return record["rq"]


def _enqueue_align(conn, job_id, plan, chunk_ids, finish_id):
    """Queue an align: one RQ job per chunk (all at once, in one round trip), then the one that puts the
    parts together, which waits for them all (``depends_on``)."""
    chunk, finish = WORK["align"], WORK["align-finish"]
    with conn.pipeline() as pipe:
        parts = queue(conn, chunk.queue).enqueue_many([
            Queue.prepare_data(run_work, (job_id, chunk.name, {"chunk": i, "items": items}), job_id=rq_id,
                               description=f"align {job_id} part {i + 1}/{len(chunk_ids)}",
                               timeout=chunk.timeout_s, retry=Retry(max=RETRIES),
                               result_ttl=RESULT_TTL_S, failure_ttl=FAILURE_TTL_S)
            for i, (rq_id, items) in enumerate(zip(chunk_ids, plan["chunks"]))], pipeline=pipe)
        pipe.execute()
    queue(conn, finish.queue).enqueue(run_work, job_id, finish.name, {"chunks": len(chunk_ids)},
                                      job_id=finish_id, depends_on=parts,
                                      description=f"align {job_id}: put the parts together", **_options(finish))


def delete_job(conn, store, job_id):
    """Delete a job whose steps are all over: its folder and its RQ jobs. 409 while a step is active."""
    with store.locked(job_id):
        state = store.state(job_id)
        running = active_step(conn, store, job_id, state)
        if running:
            raise UserError(f"The {running} step of this job is still running; wait for it to finish "
                            "before deleting the job.", 409)
        ids = [i for rec in state["steps"].values() for i in rec.get("rq") or []]
        for rq_job in Job.fetch_many(ids, connection=conn) if ids else []:
            if rq_job is not None:
                rq_job.delete()
        store.delete(job_id)
