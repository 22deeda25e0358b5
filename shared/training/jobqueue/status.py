"""Where a step stands, as the queue says now, and the queue at a glance: what the servers read.

A step's record in ``state.json`` says what its work last wrote; while it says queued or running,
whether that is still true is the queue's to say: :func:`live` asks the step's RQ jobs, and
records the step as failed when they failed for good or were lost
(:func:`shared.training.jobqueue.faults.fail`).
"""
import math
import time
from datetime import datetime, timezone

from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry
from rq.worker import Worker as RQWorker

from shared.training import wizard
from shared.training.jobqueue.connection import queue
from shared.training.jobqueue.faults import LOST, fail, failure_sentence, sweep_abandoned
from shared.training.jobqueue.steps import QUEUES
from shared.training.jobs import ACTIVE

#: A worker whose last heartbeat is older than this (seconds) is shown as gone.
WORKER_ALIVE_S = 30


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
        out.update(live(conn, store, job_id, stage, rec))
    return out


def live_state(conn, store, state):
    """The job's record with every queued/running step's state, counts and error as the queue says now;
    a running step also gets ``"began"``: when a worker first took its work (:func:`began_s`)."""
    for name, rec in state["steps"].items():
        if rec.get("state") in ACTIVE:
            now, rq_jobs = _live(conn, store, state["job"], name, rec, True)
            rec.update(now)
            if rec["state"] == "running":
                rec["began"] = began_s(rq_jobs)
    return state


def began_s(rq_jobs):
    """When a worker first took a step's work (Unix seconds): the earliest start of its RQ jobs
    (``rq.job.Job`` or ``None`` each, as fetched), ``None`` while none has started. Unlike the record's
    ``started`` (when it was queued), this leaves out the time spent waiting for a worker."""
    starts = []
    for rq_job in rq_jobs:
        at = rq_job.started_at if rq_job is not None else None
        if at is not None:
            starts.append((at if at.tzinfo else at.replace(tzinfo=timezone.utc)).timestamp())
    return min(starts) if starts else None


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


def live(conn, store, job_id, step, rec, persist=True):
    """``{"state", "done", "total", "error"}`` of an active step, from its RQ jobs.

    A step whose RQ jobs failed for good (or vanished) is recorded as failed
    in ``state.json`` (when ``persist``) and its remaining RQ jobs are cancelled.
    An align's progress adds up its chunks (each weighted by the plan); other steps'
    is their one RQ job's ``meta``.
    """
    return _live(conn, store, job_id, step, rec, persist)[0]


def _live(conn, store, job_id, step, rec, persist):
    """:func:`live`'s answer and the RQ jobs it read (``rq.job.Job`` or ``None`` each), fetched once."""
    ids = rec.get("rq") or []
    total = int(rec.get("total", 0))
    rq_jobs = Job.fetch_many(ids, connection=conn) if ids else []
    if not ids or any(rq_job is None for rq_job in rq_jobs):
        # the finishing RQ job of an align is created up front: it exists unless the queue lost it
        return fail(conn, store, job_id, step, rec, LOST, rq_jobs, persist), rq_jobs
    statuses = [rq_job.get_status(refresh=False) for rq_job in rq_jobs]
    if JobStatus.STARTED in statuses and sweep_abandoned(conn, {rq_job.origin for rq_job in rq_jobs}):
        rq_jobs = Job.fetch_many(ids, connection=conn)
        if any(rq_job is None for rq_job in rq_jobs):
            return fail(conn, store, job_id, step, rec, LOST, rq_jobs, persist), rq_jobs
        statuses = [rq_job.get_status(refresh=False) for rq_job in rq_jobs]
    for rq_job, status in zip(rq_jobs, statuses):
        if status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
            why = failure_sentence(step, rq_job, conn)
            return fail(conn, store, job_id, step, rec, why, rq_jobs, persist), rq_jobs
    if all(s == JobStatus.FINISHED for s in statuses):
        # the work wrote its outcome into the record before the queue marked it finished
        now = (store.state(job_id)["steps"].get(step) or {})
        if now.get("state") not in ACTIVE:
            return {k: now.get(k) for k in ("state", "done", "total", "error")}, rq_jobs
        return fail(conn, store, job_id, step, rec, LOST, rq_jobs, persist), rq_jobs
    if step == "align":
        weights = rec.get("weights") or [0] * (len(rq_jobs) - 1)
        done = sum(w if s == JobStatus.FINISHED else min(w, int((rq_job.meta or {}).get("done", 0)))
                   for rq_job, s, w in zip(rq_jobs[:-1], statuses[:-1], weights))
    else:
        meta = rq_jobs[0].meta or {}
        done, total = int(meta.get("done", 0)), int(meta.get("total") or total)
    running = any(s in (JobStatus.STARTED, JobStatus.FINISHED) for s in statuses)
    return {"state": "running" if running else "queued", "done": done, "total": total, "error": None}, rq_jobs


def active_step(conn, store, job_id, state):
    """The name of a step of the job that is queued or running as the queue says now, or ``None``
    (nothing is recorded: the caller holds the job's lock and decides)."""
    for name, rec in state["steps"].items():
        if rec.get("state") in ACTIVE and live(conn, store, job_id, name, rec, persist=False)["state"] in ACTIVE:
            return name
    return None


def training_busy(conn):
    """True while a training is queued or running on any worker."""
    q = queue(conn, "train")
    return bool(q.count or StartedJobRegistry(queue=q).count)


def overview(conn, queues=QUEUES):
    """The queues ``queues`` (names; default the training's, the worker command adds the video analyses')
    at a glance: ``{"queues": [{"name", "queued", "running", "failed", "finished"}],
    "workers": [{"name", "host", "pid", "state", "job", "alive", "last_heartbeat"}]}`` (a worker's
    ``"job"``: the id of the RQ job it is doing, or ``None``; alive workers first)."""
    out = {"queues": [], "workers": []}
    for name in queues:
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
        except Exception:  # noqa: BLE001 - shown as no RQ job
            current = None
        out["workers"].append({"name": w.name, "host": w.hostname, "pid": w.pid, "state": str(w.get_state()),
                               "job": current, "alive": alive,
                               "last_heartbeat": beat.isoformat(timespec="seconds") if beat else None})
    out["workers"].sort(key=lambda w: (not w["alive"], w["host"] or "", w["pid"] or 0))
    return out


def _started_s(rec):
    """When a step's work started (Unix seconds), from its record's ISO ``started``, or ``None``."""
    try:
        return datetime.fromisoformat(rec["started"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return None


def time_left_s(rec, now=None):
    """Seconds a running step still needs, guessed from its pace so far: the time since its work
    began (``"began"`` of :func:`live_state`, else since it was queued) times the share of its work
    not done yet over the share done. ``None`` before anything is done (no pace yet) or when the
    record has no start time."""
    now = time.time() if now is None else now
    started = rec.get("began") or _started_s(rec)
    done, total = int(rec.get("done") or 0), int(rec.get("total") or 0)
    if started is None or done <= 0 or total <= 0:
        return None
    return max(0.0, (now - started) * max(0, total - done) / done)


def _minutes(seconds):
    """``seconds`` in plain words: "about 1 min", "about 12 min", "about 3 h"."""
    minutes = max(1, math.ceil(seconds / 60))
    return f"about {minutes} min" if minutes < 120 else f"about {round(minutes / 60)} h"


def at_a_glance(states, workers_alive, now=None):
    """The jobs page's first line, for people: how many jobs are running or waiting and when
    the running ones will be ready.

    states: the jobs' records as the queue says now (:func:`live_state`); workers_alive: how many
    queue workers are alive. Returns ``{"running": int, "waiting": int, "ready_in_s": int|None,
    "sentence": str}``: ``ready_in_s`` is the longest :func:`time_left_s` of the running steps
    (``None`` while one of them has no pace yet, or when nothing runs), e.g. "2 jobs running, ready
    in about 1 min."
    """
    running, waiting = [], 0
    for state in states:
        active = [rec for rec in state["steps"].values() if rec.get("state") in ACTIVE]
        if any(rec["state"] == "running" for rec in active):
            running += [rec for rec in active if rec["state"] == "running"][:1]
        elif active:
            waiting += 1
    lefts = [time_left_s(rec, now) for rec in running]
    ready = None if not running or None in lefts else round(max(lefts))
    parts = []
    if running:
        jobs = f"{len(running)} job{'' if len(running) == 1 else 's'} running"
        parts.append(f"{jobs}, ready in {_minutes(ready)}" if ready is not None else
                     f"{jobs}; the time left shows once the first part is done")
    if waiting:
        parts.append(f"{waiting} waiting for a worker" if running else
                     f"{waiting} job{'' if waiting == 1 else 's'} waiting for a worker")
    if waiting and not workers_alive:
        parts.append("no worker is running, so nothing will start until one is started")
    sentence = "; ".join(parts) + "." if parts else "No training work is running."
    return {"running": len(running), "waiting": waiting, "ready_in_s": ready, "sentence": sentence[0].upper() + sentence[1:]}
