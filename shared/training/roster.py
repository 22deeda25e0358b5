"""Looking after the roster of KOLs: rules behind the KOL pages (issue 12).

The pool changes themselves (rename, merge, remove one chip, delete) are
:class:`shared.training.pool.Pool` methods, each atomic under the pool lock; this module holds
the steps around them that involve faces or other stores:

- :func:`add_photos`: more photos for a KOL already taught (detect, align, embed,
  pick the KOL's face in each photo, then one atomic :meth:`Pool.add`);
- :func:`undo_merge`: a merge undone (:meth:`Pool.unmerge`), the photos that go back taken out of the
  merged-into KOL in every model version too, so that only a retraining names the KOL again;
- :func:`delete_kol`: a KOL (by slug) out of the pool, the job folders, every model version and the
  review queue's answers about them
  (the wizard's :func:`shared.training.wizard.delete_kol_named` finds the slug of a display name);
- :func:`import_warnings`: before an import, the job's KOLs that are already in the
  pool under a slightly different name, or whose faces the recognition model names as a pool KOL
  (:func:`matching_kols`, with the model's own calibrated confidence, in words).
"""
import shutil
import threading
from pathlib import Path

import numpy as np

from shared.core.errors import UserError
from shared.core.storage import file_identity
from shared.faces import engine
from shared.recognition import review
from shared.recognition.model import train
from shared.recognition.report import SURE, how_sure
from shared.training import sampling
from shared.training.pool import chip_embedding, kol_slug, name_key, save_chip


def pick_faces(crops, known):
    """Which crops of one photo are the KOL's: ``crops`` are the photo's crop records
    (largest face first, each with an ``"embedding"``), ``known`` ``(n, 128)`` the KOL's
    pool embeddings.

    One face: that face. Several: the one nearest to the KOL's faces when it is within
    :data:`shared.faces.engine.SAME_PERSON_DISTANCE` (embedding distance), else none (the photo
    is skipped and says why).
    Returns ``(chosen crops, reason or None)``.
    """
    if not crops:
        return [], "no face found"
    if len(crops) == 1:
        return crops, None
    if not len(known):
        return [], f"{len(crops)} faces and none to compare with: use photos with one face"
    nearest = [float(engine.distances(known, c["embedding"]).min()) for c in crops]
    best = int(np.argmin(nearest))
    if nearest[best] > engine.SAME_PERSON_DISTANCE:
        return [], f"{len(crops)} faces and none looks like this KOL"
    return [crops[best]], None


def add_photos(pool, slug, files, work, progress=None):
    """Add the faces in ``files`` to the KOL ``slug`` of ``pool``.

    files: ``[{"path": photo on disk, "name": name to show}]``. work: an empty scratch
    folder (chips are written to ``work/chips`` first). progress: ``progress(done, total)``.
    Every photo is decoded, its faces detected, aligned and embedded (on every core), the
    KOL's face picked (:func:`pick_faces`), and all the chosen chips are added to the pool
    in one atomic change (chips the KOL already has are not doubled).

    Returns ``{"name", "added": int, "skipped": [{"name", "reason"}], "count": chips now}``.
    Raises :class:`UserError` 404 for an unknown KOL, 422 when no photo gave a face.
    """
    info = pool.kols().get(slug)
    if not info:
        raise UserError("That KOL is not in the training pool.", 404)
    _, known = pool.kol_embeddings(slug)
    chips = Path(work) / "chips"
    chips.mkdir(parents=True, exist_ok=True)
    results = sampling.align_photos([(f["path"], str(chips)) for f in files], progress=progress)
    pngs, skipped = [], []
    for f, result in zip(files, results):
        if result.get("error"):
            skipped.append({"name": f["name"], "reason": result["error"]})
            continue
        chosen, reason = pick_faces(result["crops"], known)
        if reason:
            skipped.append({"name": f["name"], "reason": reason})
        pngs += [chips / f"{c['crop']}.png" for c in chosen]
    if not pngs:
        why = f" ({skipped[0]['name']}: {skipped[0]['reason']})" if skipped else ""
        raise UserError(f"No face could be taken from the photos{why}; nothing was added.", 422)
    added, count = add_chips(pool, slug, pngs)
    return {"name": info["name"], "added": added, "skipped": skipped, "count": count}


def add_chips(pool, slug, pngs):
    """Add chip PNGs (written by :func:`shared.training.pool.save_chip`, embeddings beside them) to the KOL
    ``slug`` in one atomic :meth:`Pool.add` (chips it has already are not doubled): the last step of
    :func:`add_photos`, and "this is X" of the review queue. Returns ``(chips added, chips now)``.
    404 for a KOL not in the pool."""
    info = pool.kols().get(slug)
    if not info:
        raise UserError("That KOL is not in the training pool.", 404)
    pool.add(info["name"], pngs)
    count = len(pool.kols()[slug]["chips"])
    return count - len(info["chips"]), count


def add_face(pool, slug, chip, embedding, work):
    """Add one aligned face (``chip`` ``(150, 150, 3)`` RGB ``uint8`` and its ``(128,)`` embedding) to the KOL
    ``slug``'s photos, staged in the scratch folder ``work`` (:func:`add_chips`). Returns its chip id."""
    cid = save_chip(work, chip, embedding)
    add_chips(pool, slug, [Path(work) / f"{cid}.png"])
    return cid


def delete_kol(pool, slug, models=None, jobs=None):
    """Delete the KOL ``slug`` for good: from the pool, from the job folders of ``jobs`` (a
    :class:`shared.training.jobs.JobStore`; their copies of the photos) and from every model version of
    ``models`` (a :class:`shared.recognition.store.ModelStore`), so the next prediction cannot name them.

    Returns the KOL's display name. :class:`UserError` 404 for an unknown KOL.
    """
    info = pool.kols().get(str(slug))
    if info is None:
        raise UserError("That KOL is not in the training pool.", 404)
    name = pool.remove(slug)
    if jobs is not None:
        key = name_key(name)
        purge_kol(jobs, lambda n: kol_slug(n) == slug or name_key(n) == key)
    if models is not None:
        models.forget(slug)
    review.Queue(review.beside(pool.root)).forget_kol(slug)  # its "not X" faces and reviewed faces go too
    return name


def undo_merge(pool, mid, models=None):
    """Undo the merge ``mid`` of ``pool`` (:meth:`shared.training.pool.Pool.unmerge`) and take the photos
    that go back out of the merged-into KOL in every model version of ``models`` (a
    :class:`shared.recognition.store.ModelStore`), so no model names them as that KOL any more; the
    KOL that comes back is named again after a retraining. Returns the merge record (with
    ``"moved_back"``: the chip ids). Raises the :class:`UserError` of :meth:`Pool.unmerge`."""
    record = pool.unmerge(mid)
    if models is not None:
        models.forget(record["target"], chips=record["moved_back"])
    return record


def remove_photo(pool, slug, cid, models=None):
    """Take one photo (chip ``cid``) out of the KOL ``slug``: from the pool and from every model
    version of ``models`` (a :class:`shared.recognition.store.ModelStore`), so it no longer counts at once.

    Returns the number of photos the KOL has left. 404 unknown photo, 409 the KOL's last photo.
    """
    left = pool.remove_chip(slug, cid)
    if models is not None:
        models.forget(slug, chips=[cid])
    review.Queue(review.beside(pool.root)).forget_photo(slug, cid)  # the reviewed face it came from, if any
    return left


def purge_kol(store, matches):
    """Delete, in every job of ``store`` (:class:`shared.training.jobs.JobStore`), the photos/videos and crops
    of the KOLs whose display name ``matches(name)`` (a deletion request covers those copies too).

    The job remembers the names in ``state["purged"]`` so they cannot be imported
    again from it. Returns how many KOL folders were deleted.
    """
    count = 0
    for state in store.list():
        hits = [(k, kol["name"]) for k, kol in enumerate(state["kols"]) if matches(kol["name"])]
        if not hits:
            continue
        folder = Path(store.root) / state["job"]
        for k, _ in hits:
            for sub in ("input", "chips"):
                shutil.rmtree(folder / sub / str(k), ignore_errors=True)
            count += 1
        names = [name for _, name in hits]
        store.update(state["job"], lambda s: s.__setitem__("purged", sorted(set(s.get("purged", [])) | set(names))))
    return count


#: A new KOL is asked about ("the same person as ...?") when the recognition model names at least
#: this share of its photos as one pool KOL, with an average confidence that the model would show as
#: sure (:data:`shared.recognition.report.SURE`): never from one unsure photo. bench/bench_duplicates.py
#: (README, Benchmarks): strangers' photos asked about, and real duplicates found, on lfw_dev and asian_dev.
MATCH_SHARE = 0.5


def pool_model(pool_X, pool_slugs, names=None):
    """The recognition model of the pool as it is now (:func:`shared.recognition.model.train`: the
    shipped rule with this roster's spread and SVMs, as a training would make it). pool_X ``(N, 128)``,
    pool_slugs ``N`` slugs (as :meth:`Pool.embeddings` returns them), names ``{slug: display name}``."""
    return train(np.asarray(pool_X, dtype=np.float32).reshape(-1, engine.EMBEDDING_SIZE),
                 [str(s) for s in pool_slugs], {str(s): (names or {}).get(s, s) for s in set(pool_slugs)})


#: The pool model last made per pool folder in this process: ``{pool root: (manifest identity, model)}``
#: (:func:`current_pool_model`); a page that checks an import for duplicates is opened again and again.
_POOL_MODELS = {}
_POOL_MODELS_LOCK = threading.Lock()


def current_pool_model(pool):
    """:func:`pool_model` of ``pool`` (:class:`shared.training.pool.Pool`) as it is now, trained once per
    version of its manifest in this process (every change of the pool rewrites the manifest atomically,
    so its :func:`shared.core.storage.file_identity` changes). ``None`` for an empty pool."""
    key = file_identity(pool.manifest_path)
    root = str(Path(pool.root).resolve())
    with _POOL_MODELS_LOCK:
        cached = _POOL_MODELS.get(root)
        if cached is not None and key is not None and cached[0] == key:
            return cached[1]
        pool_kols = pool.kols()
        if not pool_kols:
            return None
        pool_X, pool_slugs, _ = pool.embeddings()
        model = pool_model(pool_X, pool_slugs, {slug: info["name"] for slug, info in pool_kols.items()})
        _POOL_MODELS[root] = (key, model)
        return model


def matching_kols(X, model, share=MATCH_SHARE, sure=SURE):
    """The pool KOLs that the faces ``X`` of a KOL about to be imported may be, by the recognition
    model's own calibrated answers.

    X: ``(n, 128)`` embeddings of the new KOL's faces, each from its own photo (each is one
    :meth:`Model.predict` call). model: the pool's :class:`shared.recognition.model.Model`.
    A pool KOL matches when the model names at least ``share`` of the faces as that KOL with a
    confidence of ``sure`` or more each (what the model shows as a sure answer; one unsure photo
    among sure ones does not hide a duplicate).
    Returns ``[{"slug", "share": sure answers / n (0-1), "faces": faces named so, "photos": n, "confidence":
    those faces' mean confidence (0-1), "sure": that confidence in words
    (:func:`shared.recognition.report.how_sure`)}]``, best match first (an empty list when nothing
    matches or either side is empty).
    """
    X = np.asarray(X, dtype=np.float64).reshape(-1, engine.EMBEDDING_SIZE)
    if not len(X) or not len(model.classes):
        return []
    named = {}
    for e in X:
        p = model.predict(e[None, :])[0]
        if p.known and p.confidence >= sure:
            named.setdefault(p.slug, []).append(p.confidence)
    out = []
    for slug, confidences in named.items():
        frac, mean = len(confidences) / len(X), float(np.mean(confidences))
        if frac >= share:
            out.append({"slug": slug, "share": round(frac, 3), "faces": len(confidences), "photos": len(X),
                        "confidence": round(mean, 4), "sure": how_sure(mean)})
    return sorted(out, key=lambda m: (-m["share"], -m["confidence"]))


def import_warnings(pool, kols, chip_folder):
    """Duplicates a job would bring into the pool, found before import.

    kols: the job's cleaned KOLs ``[{"name", "kept": [{"crop": chip id}]}]`` (index = folder
    under ``chip_folder``, whose chips carry cached embeddings).
    Returns ``{kol index: {"same_name": slug or None, "looks_like": [{"slug", "name", "share", "faces",
    "photos", "confidence", "sure", "chips": [pool chip ids]}]}}`` for the KOLs with a warning only:
    ``same_name`` when a pool KOL has the same name up to case, spaces, underscores and
    accents (:func:`shared.training.pool.name_key`); ``looks_like`` when, under a *different* name,
    the recognition model of the pool names this KOL's faces as a pool KOL (:func:`matching_kols`).
    """
    out = {}
    pool_kols = pool.kols()
    if not pool_kols:
        return out
    model = current_pool_model(pool)
    for i, kol in enumerate(kols):
        same = pool.same_name(kol["name"])
        X = [chip_embedding(Path(chip_folder) / str(i) / f"{c['crop']}.png") for c in kol["kept"]]
        looks = []
        for m in matching_kols(np.array(X).reshape(-1, engine.EMBEDDING_SIZE), model):
            if m["slug"] != same:
                info = pool_kols[m["slug"]]
                looks.append({**m, "name": info["name"], "chips": info["chips"][:6]})
        if same or looks:
            out[i] = {"same_name": same, "looks_like": looks}
    return out
