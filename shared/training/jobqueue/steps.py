"""THE table of queued work: for each kind of work, the job's step it does, its queue, its time limit
and the function that does it (:data:`WORK`); nothing else knows these facts.

A step of a training job is done by one piece of work, except align: one ``align`` piece per chunk
of photos (all workers take them at once), then one ``align-finish`` that puts the parts together.
Every ``run`` function is called in a worker as ``run(stores, job_id, options, progress)``:
``stores`` a :class:`Stores`, ``options`` the dict given when the work was queued, ``progress``
``progress(done, total)``. A piece that finishes its step returns ``(summary, total)``: the step's
summary for its record and the count its progress ends at; a part (an align chunk) returns its
own result, and the step goes on.
"""
from collections import namedtuple
from dataclasses import dataclass
from typing import Callable

from shared.training import wizard

#: Queue names, in the order a worker serves them (quick work first).
QUEUES = ("quick", "train", "align")

#: What a piece of work reads and writes: a :class:`shared.training.jobs.JobStore`, a
#: :class:`shared.training.pool.Pool` and a :class:`shared.recognition.store.ModelStore`.
Stores = namedtuple("Stores", "jobs pool models")


@dataclass(frozen=True)
class Work:
    """One kind of queued work.

    name: the kind (``"clean"``, ``"align-finish"``, ...); step: the job's step whose record it
    writes; queue: one of :data:`QUEUES`; timeout_s: seconds it may run before its worker stops it;
    run: the function that does it (module docstring); finishes: whether it ends its step
    (``False`` for an align chunk, one part among several).
    """

    name: str
    step: str
    queue: str
    timeout_s: int
    run: Callable
    finishes: bool = True


def _align_chunk(stores, job_id, options, progress):
    return wizard.align_chunk(stores.jobs, job_id, options["chunk"], options["items"], progress=progress)


def _align_finish(stores, job_id, options, progress):
    summary = wizard.align_finish(stores.jobs, job_id, options["chunks"])
    return summary, int(stores.jobs.state(job_id)["steps"]["align"].get("total", 0))


def _clean(stores, job_id, options, progress):
    out = wizard.clean(stores.jobs, job_id, options.get("remove", []), options.get("keep", []), progress)
    return out["summary"], out["total"]


def _import(stores, job_id, options, progress):
    summary = wizard.import_kols(stores.jobs, stores.pool, job_id, options, progress)
    return summary, len(summary["imported"])


def _train(stores, job_id, options, progress):
    return wizard.train_pool(stores.pool, stores.models, progress, keep=(options or {}).get("keep")), 3


#: Every kind of queued work, by name.
WORK = {work.name: work for work in (
    Work("align", "align", "align", 900, _align_chunk, finishes=False),
    Work("align-finish", "align", "quick", 300, _align_finish),
    Work("clean", "clean", "quick", 600, _clean),
    Work("import", "import", "quick", 1800, _import),
    Work("train", "train", "train", 3600, _train),
)}
