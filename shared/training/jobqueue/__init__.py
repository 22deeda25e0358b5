"""The wizard's work on a real job queue: RQ on Redis, with workers on one machine or many.

The process server's views check a request (:mod:`shared.training.wizard`), then
:func:`shared.training.jobqueue.enqueue.start_step` records the step in the job's ``state.json``
and puts its work on a queue; workers (:func:`shared.training.jobqueue.worker.work`, started by
``python -m process_server.worker``, one process per core, on this machine or any other with the
same ``REDIS_URL``, password included (the local Redis's is in ``DATA_DIR/instance/redis_password``,
see :func:`shared.core.config.local_redis_url`), and the same ``DATA_DIR`` mounted) take it.
Queues, in the order workers serve them (:data:`shared.training.jobqueue.steps.QUEUES`):

- ``quick``: clean, import, and putting an alignment's parts together;
- ``train``: training (one at a time: a second one gets a 409 before it is queued);
- ``align``: alignment, split into chunks of photos (one video per chunk) that
  all workers take at once (:func:`shared.training.wizard.align_plan`).

Where things are:

- progress: the running RQ job's ``meta`` (``{"done", "total"}``, saved at most
  4 times a second); :func:`shared.training.jobqueue.status.step_progress` adds the chunks up;
- status: the RQ jobs' status (queued, started, finished, failed...);
- result and failure sentences: written by the work into the job's record
  (``state.json``, kept after the queue forgets the RQ job) and into ``meta["error"]``.

Words: a *job* is a training job (a folder of :class:`shared.training.jobs.JobStore`, its id
``job_id``); an *RQ job* (``rq_job``, its id ``rq_id``) is one piece of queued work doing (part
of) one of its steps.

The modules, lowest first (each imports only the ones before it):

- :mod:`~shared.training.jobqueue.connection`: Redis clients and queues, what "Redis is down" is;
- :mod:`~shared.training.jobqueue.steps`: THE table of queued work: per kind, its step, queue,
  time limit and the function that does it;
- :mod:`~shared.training.jobqueue.faults`: retries, failures and their sentences, work lost;
- :mod:`~shared.training.jobqueue.status`: where a step stands, the queue at a glance (read by the servers);
- :mod:`~shared.training.jobqueue.enqueue`: starting a step, deleting a job (called by the servers);
- :mod:`~shared.training.jobqueue.worker`: what the workers run.
"""
