"""The training wizard's rules: what each step checks, does and writes (no Flask, no queue).

The process server's views parse a request, call a ``check_*`` function here
(fast: a bad request gets its 4xx :class:`UserError` before any work is
queued), hand the work to :mod:`shared.training.jobqueue`, and render. The work functions
(``align_chunk``, ``align_finish``, ``clean``, ``import_kols``, ``train_pool``)
run inside the queue's workers, on any machine that mounts the same data folder.

Stores: ``store`` is a :class:`shared.training.jobs.JobStore`, ``pool`` a
:class:`shared.training.pool.Pool`, ``models`` a :class:`shared.recognition.store.ModelStore`.
``progress`` is ``progress(done, total)`` or ``None``.
"""
import shutil
from concurrent.futures import Future

import cv2
import numpy as np

from shared.core import config
from shared.core.errors import UserError
from shared.core.ids import CROP_ID_RE
from shared.core.names import display_name
from shared.core.storage import atomic_write_bytes, read_json
from shared.faces import engine, images
from shared.training import cleaning, roster, sampling
from shared.training.jobs import KIND_STEPS
from shared.training.pool import SLUG_RE, save_chip
from shared.training.train import retrain

#: Photos per align chunk: a job of more photos is split so that every worker takes a part at once.
ALIGN_CHUNK = config.DEFAULTS["ALIGN_CHUNK"]


# -- where a job stands ---------------------------------------------------------------
def steps_of(state):
    """The steps of this job's kind, in order (``("train",)`` for a "retrain now" job)."""
    return KIND_STEPS.get(state.get("kind"), KIND_STEPS["image"])


def next_step(state):
    """The first step of the job not done yet, or ``None`` when all are done."""
    for step in steps_of(state):
        if (state["steps"].get(step) or {}).get("state") != "done":
            return step
    return None


def require_done(state, step, sentence):
    """:class:`UserError` 409 with ``sentence`` unless ``step`` of the job is done."""
    if (state["steps"].get(step) or {}).get("state") != "done":
        raise UserError(sentence, 409)


def require_kind(state, step):
    """:class:`UserError` 409 when the job has no such step (a "retrain now" job has only train)."""
    if step not in steps_of(state):
        raise UserError("This job is a training of the whole pool: it has no "
                        f"{step} step. Upload a zip on the training page to add faces.", 409)


# -- align ------------------------------------------------------------------------------
class InlineExecutor:
    """A stand-in for a process pool that runs each call at once in this process.

    A queue worker is one process per core already; the align functions of
    :mod:`shared.training.sampling` take it as their ``executor`` there.
    """

    def submit(self, fn, *args, **kwargs):
        future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future
            future.set_exception(exc)
        return future


def align_plan(store, job_id, chunk_size=ALIGN_CHUNK):
    """Split the job's align work into chunks that separate workers can do at once.

    Returns ``{"chunks": [[[kol index, file index], ...], ...], "weights": [int per chunk], "total": int}``:
    photos are cut into chunks of ``chunk_size`` (in KOL, then file order); each
    video is a chunk of its own, weighted by the frames it will sample (the unit of progress).
    """
    state = store.state(job_id)
    require_kind(state, "align")
    items = [[k, f] for k, kol in enumerate(state["kols"]) for f in range(len(kol["files"]))]
    if state["kind"] == "image":
        size = max(1, int(chunk_size))
        chunks = [items[i:i + size] for i in range(0, len(items), size)]
        weights = [len(c) for c in chunks]
    else:
        folder = store.folder(job_id)
        chunks, weights = [[item] for item in items], []
        for k, f in items:
            try:
                every, info = sampling.sample_times(folder / state["kols"][k]["files"][f]["path"])
                weights.append(max(1, min(sampling.MAX_SAMPLES, int(info.duration / every) + 1)))
            except UserError:
                weights.append(1)
    return {"chunks": chunks, "weights": weights, "total": sum(weights)}


def align_chunk(store, job_id, chunk, items, progress=None):
    """Align the sources ``items`` (``[[kol index, file index]]``) of a job; writes ``parts/<chunk>.json``.

    Photos: :func:`shared.training.sampling.align_photo` each, in this process; videos:
    :func:`shared.training.sampling.sample_video` with an :class:`InlineExecutor`. Chips go to
    ``chips/<kol index>/``. ``progress(done, total)`` counts photos or sampled frames.
    Returns ``{"sources": n}``. Running it again redoes the chunk (chips are content-addressed).
    """
    state = store.state(job_id)
    folder = store.folder(job_id)
    out, done = [], 0
    for n, (k, f) in enumerate(items):
        entry = state["kols"][k]["files"][f]
        chips = folder / "chips" / str(k)
        chips.mkdir(parents=True, exist_ok=True)
        src = {"id": sampling.source_id(entry["path"]), "name": entry["name"], "path": entry["path"]}
        if state["kind"] == "image":
            src.update(sampling.align_photo((str(folder / entry["path"]), str(chips))))
            if progress:
                progress(n + 1, len(items))
        else:
            def frames_done(d, total, base=done):
                if progress:
                    progress(base + d, None)
            src.update(sampling.sample_video(folder / entry["path"], chips, progress=frames_done,
                                             executor=InlineExecutor(), name=entry["name"]))
            done += src.get("frames", 0)
        out.append({"kol": k, "file": f, "source": src})
    parts = folder / "parts"
    parts.mkdir(exist_ok=True)
    store.write(job_id, f"parts/{int(chunk)}", out)
    return {"sources": len(out)}


def align_finish(store, job_id, n_chunks):
    """Put the chunks' results together into ``align.json`` (the format of :func:`shared.training.sampling.align_job`).

    A new alignment makes an earlier cleaning stale: ``clean.json`` and the clean
    record are dropped. Returns the align summary (:func:`align_summary`).
    """
    state = store.state(job_id)
    folder = store.folder(job_id)
    result = {"kind": state["kind"], "kols": [{"name": kol["name"], "sources": [None] * len(kol["files"])}
                                             for kol in state["kols"]]}
    for chunk in range(int(n_chunks)):
        part = read_json(folder / "parts" / f"{chunk}.json")
        if part is None:
            raise UserError("A part of the alignment is missing (its worker stopped): run alignment again.", 409)
        for rec in part:
            result["kols"][rec["kol"]]["sources"][rec["file"]] = rec["source"]
    if any(src is None for kol in result["kols"] for src in kol["sources"]):
        raise UserError("A part of the alignment is missing (its worker stopped): run alignment again.", 409)
    store.write(job_id, "align", result)
    shutil.rmtree(folder / "parts", ignore_errors=True)
    (folder / "clean.json").unlink(missing_ok=True)
    store.update(job_id, lambda s: s["steps"].pop("clean", None))
    return align_summary(result)


def align_summary(result):
    """Per KOL: sources, crops, photos with no face, unreadable ones, photos with several faces."""
    out = {}
    for kol in result["kols"]:
        srcs = kol["sources"]
        out[kol["name"]] = {
            "sources": len(srcs),
            "crops": sum(len(s["crops"]) for s in srcs),
            "no_face": [s["name"] for s in srcs if not s["crops"] and not s.get("error")],
            "unreadable": [{"name": s["name"], "error": s["error"]} for s in srcs if s.get("error")],
            "several_faces": [s["name"] for s in srcs if len(s["crops"]) > 1 and result["kind"] == "image"],
        }
    return out


def job_from_faces(store, name, faces, upload_name):
    """A photo job of one KOL ``name`` made of faces found and embedded already (the unknown inbox's "name it"),
    aligned and cleaned here, so that its next page is the clean step's result, then import and train as usual.

    faces: ``[(chip, embedding (128,), source name, face size in pixels or None)]``: chip is an aligned face
    (:data:`shared.faces.engine.CHIP_SIZE` square, RGB; a photo of another size is scaled to it) as a path or
    JPEG/PNG bytes; the embedding is the face's own, kept as it is; the size (the shorter side of the face's
    box in its media) is what cleaning's "too small" check reads (the chip's side when ``None``).
    Each face is a source photo of its own (``input/0/<n>.png``, the chip), with one crop.
    Returns the job id; on any error nothing is left on disk.
    """
    name = display_name(name)
    if not faces:
        raise UserError("There are no faces to make a KOL from.", 400)
    folder = store._new_folder()
    try:
        files, sources = [], []
        (folder / "input" / "0").mkdir(parents=True)
        for n, (chip, embedding, label, size) in enumerate(faces):
            rgb = images.load_image(chip, max_side=None)
            if rgb.shape[:2] != (engine.CHIP_SIZE, engine.CHIP_SIZE):
                rgb = np.ascontiguousarray(cv2.resize(rgb, (engine.CHIP_SIZE, engine.CHIP_SIZE),
                                                      interpolation=cv2.INTER_AREA))
            rel = f"input/0/{n:05d}.png"
            atomic_write_bytes(folder / rel, images.encode_png(rgb))
            embedding = np.asarray(embedding, dtype=np.float64).reshape(engine.EMBEDDING_SIZE)
            side = int(size or engine.CHIP_SIZE)
            face = engine.Face((0, side, side, 0), rgb, embedding)
            cid = save_chip(folder / "chips" / "0", rgb, embedding)
            files.append({"path": rel, "name": label})
            sources.append({"id": sampling.source_id(rel), "name": label, "path": rel, "error": None,
                            "width": side, "height": side, "crops": [sampling._crop_record(face, cid, 1)]})
        store._write_new(folder, "image", upload_name, [{"name": name, "files": files}], [])
        result = {"kind": "image", "kols": [{"name": name, "sources": sources}]}
        store.write(folder.name, "align", result)
        store.finish_sync(folder.name, "align", align_summary(result), total=len(files))
        done = clean(store, folder.name)
        store.finish_sync(folder.name, "clean", done["summary"], total=done["total"])
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder.name


def import_landed(store, job_id):
    """The KOL names a job's import put into the pool, ``None`` while it has not run, ``[]`` when the job is gone."""
    try:
        record = store.state(job_id)["steps"].get("import") or {}
    except UserError:
        return []
    return (record.get("summary") or {}).get("imported") if record.get("state") == "done" else None


# -- clean ------------------------------------------------------------------------------
def crop_ids(values):
    """The non-empty values, each checked to be a crop id (16 hex digits); 400 otherwise."""
    values = [v for v in values if v]
    bad = [v for v in values if not CROP_ID_RE.match(v)]
    if bad:
        raise UserError(f"'{bad[0][:40]}' is not a crop id (16 hexadecimal digits).", 400)
    return values


def check_clean(store, job_id, remove=(), keep=(), reset=False):
    """The overrides a clean will apply, from the earlier ones plus this request's.

    remove / keep: crop ids ticked now (checked with :func:`crop_ids`); reset: forget earlier overrides.
    A crop ticked to remove is no longer kept by hand, and the other way round.
    Returns ``{"remove": [ids], "keep": [ids]}`` (sorted); 409 before alignment, 400 for crops not in the job.
    """
    state = store.state(job_id)
    require_kind(state, "clean")
    require_done(state, "align", "Align the faces of this job first.")
    align_result = store.read(job_id, "align")
    previous = {} if reset else (store.read(job_id, "clean") or {})
    old_remove, old_keep = set(previous.get("remove", [])), set(previous.get("keep", []))
    new_remove, new_keep = set(crop_ids(remove)), set(crop_ids(keep))
    known = {rec["crop"] for kol in align_result["kols"] for src in kol["sources"] for rec in src["crops"]}
    unknown = sorted(c for c in new_remove | new_keep if c not in known)
    if unknown:
        raise UserError(f"Crop {unknown[0]} is not part of this job.", 400)
    return {"remove": sorted((old_remove - new_keep) | new_remove),
            "keep": sorted((old_keep - new_remove) | new_keep)}


def clean(store, job_id, remove=(), keep=(), progress=None):
    """Clean the job's aligned crops (:func:`shared.training.cleaning.clean`) with the overrides; writes ``clean.json``.

    Returns ``{"summary": {kol: {"kept": int, "removed": int}}, "total": crops judged}``.
    """
    align_result = store.read(job_id, "align")
    if align_result is None:
        raise UserError("Align the faces of this job first.", 409)
    if progress:
        progress(0, 1)
    result = cleaning.clean(align_result, remove=set(remove), keep=set(keep))
    store.write(job_id, "clean", result)
    view = cleaning.contract_view(result)
    if progress:
        progress(1, 1)
    return {"summary": {k: {"kept": v["kept"], "removed": len(v["removed"])} for k, v in view["kols"].items()},
            "total": sum(len(k["kept"]) + len(k["removed"]) for k in result["kols"])}


# -- import -------------------------------------------------------------------------------
def check_import(store, job_id, chosen=(), replace_all=False, replace=(), modes=None, into=None):
    """What an import will do, checked before any work.

    chosen: KOL names of the job to import (none = all); replace_all: replace every chosen KOL's
    faces in the pool (else merge); replace: names to replace; modes: ``{kol index: "replace"|"merge"}``
    (the page's per-KOL radios); into: ``{kol index: display name of a pool KOL}`` for the job's KOLs
    that are the same person as a KOL already in the pool (the import page's "same person as"
    choice): their faces go to that KOL. Returns ``{"kols": [[name, replace, pool name]],
    "empty": [names with nothing to import]}``.
    409 before cleaning, 400 for a name that is not a KOL of the job.
    """
    state = store.state(job_id)
    require_kind(state, "import")
    require_done(state, "clean", "Clean the faces of this job first (the clean step).")
    result = store.read(job_id, "clean")
    by_name = {k["name"]: k for k in result["kols"]}
    chosen = list(dict.fromkeys(v for v in chosen if v)) or list(by_name)
    missing = [name for name in chosen if name not in by_name]
    if missing:
        raise UserError(f"'{missing[0][:80]}' is not a KOL of this job.", 400)
    replace = set(replace) | {k["name"] for i, k in enumerate(result["kols"])
                              if (modes or {}).get(i) == "replace"}
    purged = set(state.get("purged", []))
    index = {k["name"]: i for i, k in enumerate(result["kols"])}
    plan, empty = [], []
    for name in chosen:
        if not by_name[name]["kept"] or name in purged:
            empty.append(name)
        else:
            target = (into or {}).get(index[name], name)
            plan.append([name, bool(replace_all or name in replace), target])
    return {"kols": plan, "empty": empty}


def split_warnings(store, job_id, result, shown=6):
    """The job's KOL folders whose faces look like two people (:func:`shared.training.cleaning.two_people`).

    The faces looked at are the folder's own, before cleaning's verdicts (in a folder of two
    people the fewer one's faces are removed as outliers, which would hide the mix): every face
    of a photo with one face (every sampled face of a video). result: the job's cleaning result
    (``clean.json``, for the KOL order); the faces come from its ``align.json``.
    Returns ``{kol index: {"two_people": {"groups": [faces in group 1, faces in group 2],
    "distance": average distance between the groups (dlib units), "chips": [[crop ids], [crop ids]]
    (up to ``shown`` of each group), "sources": [[file names], [file names]] (those faces' photos)}}}``
    for the KOLs with a warning only.
    """
    align_result = store.read(job_id, "align") or {"kols": []}
    video = align_result.get("kind") == "video"
    out = {}
    for i, (_, aligned) in enumerate(zip(result["kols"], align_result["kols"])):
        found = [(src["name"], rec) for src in aligned["sources"] for rec in src["crops"]
                 if video or len(src["crops"]) == 1]
        split = cleaning.two_people([rec["embedding"] for _, rec in found]) if found else None
        if split:
            a, b, distance = split
            out[i] = {"two_people": {"groups": [len(a), len(b)], "distance": round(distance, 2),
                                     "chips": [[found[j][1]["crop"] for j in g[:shown]] for g in (a, b)],
                                     "sources": [[found[j][0] for j in g[:shown]] for g in (a, b)]}}
    return out


def import_kols(store, pool, job_id, plan, progress=None):
    """Import the planned KOLs' kept crops into the pool, all of them or none (:meth:`Pool.add_many`).

    plan: :func:`check_import`'s answer. Returns the import summary
    ``{"imported": [names], "empty": [names], "replaced": [names]}``.
    """
    result = store.read(job_id, "clean")
    state = store.state(job_id)
    purged = set(state.get("purged", []))
    index = {k["name"]: (i, k) for i, k in enumerate(result["kols"])}
    folder = store.folder(job_id)
    batch, imported, empty = [], [], list(plan["empty"])
    for name, replace, target in plan["kols"]:
        i, kol = index[name]
        if name in purged:  # deleted for good while the import waited
            empty.append(name)
            continue
        batch.append((target, [folder / "chips" / str(i) / f"{item['crop']}.png" for item in kol["kept"]], replace))
        imported.append(name)
    if progress:
        progress(0, len(batch))
    pool.add_many(batch)
    if progress:
        progress(len(batch), len(batch))
    return {"imported": imported, "empty": empty,
            "replaced": [n for n, _, r in batch if r]}


def pool_counts(pool):
    """``{display name: faces in the pool}`` (the contract's ``pool`` object)."""
    return {info["name"]: len(info["chips"]) for info in pool.kols().values()}


# -- delete a KOL for good ---------------------------------------------------------------------
def delete_kol_named(pool, store, name, models=None):
    """Delete a KOL for good by its name (:func:`shared.training.roster.delete_kol`, which takes a slug:
    pool, job folders, every model version).

    name: the KOL's name exactly as the pool lists it (:func:`pool_counts`); its slug is accepted too.
    Returns the display name; 404 when no KOL of the pool has this name.
    """
    names = pool.names()
    slug = next((s for s, n in names.items() if n == name), None)
    if slug is None and SLUG_RE.match(str(name)) and name in names:
        slug = name
    if slug is None:
        raise UserError("That KOL is not in the training pool.", 404)
    return roster.delete_kol(pool, slug, models=models, jobs=store)


# -- train ----------------------------------------------------------------------------------------
def check_train(pool):
    """409 when the pool is empty (nothing to train on)."""
    if not pool.stats()["chips"]:
        raise UserError("The training pool is empty: import some KOLs first.", 409)


def train_pool(pool, models, progress=None, keep=None):
    """Train a model on the whole pool as it is now and make it current (:func:`shared.training.train.retrain`:
    one training at a time, the pool read under its lock, stored embeddings reused, old versions
    pruned to the newest ``keep``).

    Returns ``{"model_version", "identities", "samples", "metrics"}`` (the contract's train result).
    ``progress`` counts 3 stages: embeddings read, model fitted, model saved.
    """
    return retrain(pool, models, progress, keep=keep)
