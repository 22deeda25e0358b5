"""The training step: the pool's embeddings into a new model version, one training at a time.

:func:`retrain` takes the store's training lock, reads the pool under the pool's lock (reusing the
current model's rows for chips it already holds), trains (:func:`shared.recognition.model.train`; or,
when the pool differs from the current model by one KOL's photos only, :func:`shared.recognition.model.add_kol`,
which fits only what that KOL changes and builds the same model: :func:`changed_kol`), adds the report's
roster part (:func:`shared.recognition.report.roster_report`), saves, and prunes old versions.
"""
import numpy as np

from shared.core.errors import UserError
from shared.core.storage import locked
from shared.recognition.model import add_kol, train
from shared.recognition.report import compare, roster_report
from shared.recognition.rule import RULE
from shared.recognition.store import KEEP_VERSIONS, training_lock
from shared.training.pool import chip_embedding


def changed_kol(model, kols):
    """The one KOL whose photos differ between ``model`` and the pool's ``kols`` (``Pool.kols()``), or ``None``.

    ``None`` also when more than one KOL differs, when a KOL of the model left the pool or has no photos left,
    when the model's rule is not today's :data:`shared.recognition.rule.RULE` (a full training would use
    today's), or when the model keeps no SVM negatives (:func:`shared.recognition.model.add_kol` cannot extend
    it): then the whole pool is trained."""
    if (model is None or model.svm_negs is None or model.svm_reach is None or model.svm_w is None
            or model.rule != {k: list(v) for k, v in RULE.items()} or set(model.classes) - set(kols)):
        return None
    chips = np.asarray(model.chips, dtype=str)
    changed = [slug for slug, info in kols.items() if slug not in model._index or
               chips[model.offsets[model._index[slug]]:model.offsets[model._index[slug] + 1]].tolist() != info["chips"]]
    return changed[0] if len(changed) == 1 and kols[changed[0]]["chips"] else None


def _known(model, slugs=None):
    """``{(slug, chip id): embedding}`` of ``model``'s rows (of the KOLs ``slugs`` only, when given); ``{}`` without a model."""
    if model is None:
        return {}
    ks = range(len(model.classes)) if slugs is None else [model._index[s] for s in slugs if s in model._index]
    return {(model.classes[k], c): model.X[r] for k in ks
            for c, r in zip(model.chips[model.offsets[k]:model.offsets[k + 1]], range(model.offsets[k], model.offsets[k + 1]))}


def retrain(pool, store, progress=None, full=False, keep=None):
    """The whole training step: lock, read the pool under its lock, train, save, prune.

    pool: :class:`shared.training.pool.Pool`; store: :class:`shared.recognition.store.ModelStore`;
    progress: optional ``progress(done, total)``; full: train the whole pool and re-read every embedding
    from it instead of reusing the current model's rows for chips it already holds (the default: only
    new chips are read, and when one KOL's photos are all that changed, :func:`changed_kol`, the current
    model is extended by :func:`shared.recognition.model.add_kol`; ``metrics["added"]`` then says so); keep: versions kept by ``store.prune`` (default
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
        with locked(pool.lock_path):
            kols = pool.kols()
            names = {slug: info["name"] for slug, info in kols.items()}
            slug = changed_kol(previous, kols)
            known = _known(previous, None if slug is None else [slug])
            if slug is None:
                X, slugs, chips = pool.embeddings(known)
            else:  # one KOL's photos changed: only its rows are read
                chips = kols[slug]["chips"]
                X = np.array([known.get((slug, c)) if (slug, c) in known else chip_embedding(pool.root / slug / f"{c}.png")
                              for c in chips], dtype=np.float32).reshape(-1, 128)
                slugs = [slug] * len(chips)
        progress(1, 3)
        if not slugs:
            raise UserError("The training pool is empty: import some KOLs first.", 409)
        read = sum((s, c) not in known for s, c in zip(slugs, chips))
        if slug is None:
            model = train(X.astype(np.float32), slugs, names, chips=chips)
        else:
            model = add_kol(previous, slug, X, chips)
            model.names = {s: names.get(s, s) for s in model.classes}
        roster_report(model)  # what to do and what to expect, on the report page
        model.meta["metrics"]["incremental"] = {"reused": int(len(model.X)) - read, "read": read}
        model.meta["metrics"]["compared"] = compare(store.meta(), model)
        progress(2, 3)
        version = store.save(model, allowed=lambda: set(pool.kols()))
        store.prune(keep)
        progress(3, 3)
        saved = store.meta(version) or model.meta
        return {"model_version": version, "identities": saved["identities"],
                "samples": saved["samples"], "metrics": saved["metrics"]}
