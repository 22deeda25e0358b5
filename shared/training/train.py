"""The training step: the pool's embeddings into a new model version, one training at a time.

:func:`retrain` takes the store's training lock, reads the pool under the pool's lock (reusing the
current model's rows for chips it already holds), trains
(:func:`shared.recognition.model.train`), adds the report's roster part
(:func:`shared.recognition.report.roster_report`), saves, and prunes old versions.
"""
import numpy as np

from shared.core.errors import UserError
from shared.core.storage import locked
from shared.recognition.model import train
from shared.recognition.report import compare, roster_report
from shared.recognition.store import KEEP_VERSIONS, training_lock


def retrain(pool, store, progress=None, full=False, keep=None):
    """The whole training step: lock, read the pool under its lock, train, save, prune.

    pool: :class:`shared.training.pool.Pool`; store: :class:`shared.recognition.store.ModelStore`;
    progress: optional ``progress(done, total)``; full: re-read every embedding from the pool instead
    of reusing the current model's rows for chips it already holds (the default, incremental: only
    new chips are read); keep: versions kept by ``store.prune`` (default
    :data:`shared.recognition.store.KEEP_VERSIONS`; the servers pass their
    ``MODEL_VERSIONS_KEEP`` setting).

    Returns ``{"model_version", "identities", "samples", "metrics"}``.
    Raises :class:`UserError` 409 when another training is running or the pool is empty.
    """
    progress = progress or (lambda done, total: None)
    keep = KEEP_VERSIONS if keep is None else keep
    with training_lock(store.root):
        progress(0, 3)
        previous = None if full else store.current()
        known = {}
        if previous is not None:
            known = {(s, c): previous.X[r] for s, lo, hi in zip(previous.classes, previous.offsets[:-1], previous.offsets[1:])
                     for c, r in zip(previous.chips[lo:hi], range(lo, hi))}
        with locked(pool.lock_path):
            names = {slug: info["name"] for slug, info in pool.kols().items()}
            X, slugs, chips = pool.embeddings(known)
        progress(1, 3)
        if not slugs:
            raise UserError("The training pool is empty: import some KOLs first.", 409)
        reused = sum((s, c) in known for s, c in zip(slugs, chips))
        model = train(X.astype(np.float32), slugs, names, chips=chips)
        roster_report(model)  # what to do and what to expect, on the report page
        model.meta["metrics"]["incremental"] = {"reused": reused, "read": len(slugs) - reused}
        model.meta["metrics"]["compared"] = compare(store.meta(), model)
        progress(2, 3)
        version = store.save(model, allowed=lambda: set(pool.kols()))
        store.prune(keep)
        progress(3, 3)
        saved = store.meta(version) or model.meta
        return {"model_version": version, "identities": saved["identities"],
                "samples": saved["samples"], "metrics": saved["metrics"]}
