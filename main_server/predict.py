"""R8-R13: name the faces in one photo, in a batch of photos, and find look-alike KOLs.

Every result is kept in its own folder ``DATA_DIR/predictions/<run id>/`` (the
annotated photo, batch thumbnails, CSV), served only through :func:`prediction_file`
with strict names; :class:`shared.recognition.predict.ResultFolders` sweeps away folders older
than the ``PREDICTION_MAX_AGE_S`` setting (a day). A result is for the one who made it (and
admins): every route that reads one answers anyone else 404, as for an unknown id
(:mod:`shared.core.owners`). Boxes are in the pixels of the photo as uploaded (see shared.recognition.predict).
A result read again (a batch's page, its CSV, an annotated photo) names the KOLs as the pool does
then: a KOL deleted since is "deleted KOL" (:func:`shared.recognition.predict.shown`). A single
result's annotated photo can be downloaded (``?download=1``). Find similar uses the face chosen in
field ``face`` (default the largest); its page's faces are buttons that ask again with ``run``.

A batch (:mod:`shared.recognition.batch`) sent from a browser runs in the background: the browser is
sent to ``/predictBatch/<run>``, which shows a progress bar until the results are ready and
then the results. A script (``Accept: application/json``) gets the results in the answer.
One user has at most ``BATCH_CONCURRENT_PER_USER`` batches running (429 beyond); a batch
whose server process ended (no heartbeat for ``BATCH_STALE_S`` seconds) is shown as failed,
with the photos it had named.
"""
import io
import re
import time
from pathlib import Path

import numpy as np
from flask import Blueprint, current_app, jsonify, redirect, request, send_from_directory, url_for

from shared.core.errors import UserError
from shared.core.names import upload_name
from shared.core.storage import atomic_write_json, read_json
from shared.faces import engine, images
from shared.library import keep
from shared.recognition import batch, predict
from shared.web.access import principal
from shared.web.factory import data_path, models, pool, review_queue
from shared.web.replies import reply, wants_json

bp = Blueprint("predict", __name__)

FILE_RE = re.compile(r"^(annotated\.jpg|thumb-[0-9]{1,5}\.jpg|results\.csv)$")
MAX_K = 50
#: Batches of at least this many photos sent from a browser run in the background behind a progress bar.
BACKGROUND_FROM = 20
DEFAULT_K = 5


# -- helpers ------------------------------------------------------------------------

def _model():
    """The current model, or a 409 saying how to get one."""
    model = models().current()
    if model is None:
        raise UserError("No model is trained yet: train one from the Train page before predicting.", 409)
    return model


def _results():
    """The result folders, swept of runs older than the ``PREDICTION_MAX_AGE_S`` setting (0: kept)."""
    return predict.ResultFolders(data_path("predictions"), keep_s=current_app.config["PREDICTION_MAX_AGE_S"])


def _new_result():
    """A fresh result folder recorded as made by whoever is asking; ``(run id, path)``."""
    return _results().new(owner=principal())


def _result(run):
    """The folder of ``run`` if whoever is asking may read it (its maker, or an admin); 404 otherwise."""
    return _results().folder(run, principal())


def _file_url(run, name, **args):
    return url_for("predict.prediction_file", run=run, name=name, **args)


def _names(model=None):
    """``{slug: display name}`` of every KOL as named now: the current model's names under the
    pool's (renames, merges); a KOL deleted for good is in neither (:func:`shared.recognition.predict.shown`)."""
    model = model or models().current()
    return {**(model.names if model is not None else {}), **pool().display_names()}


def _single_upload():
    """The one uploaded photo of field ``file``: ``(stream, safe display name)``; 400/415 otherwise."""
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        raise UserError("Choose a photo to upload (form field 'file').", 400)
    name = upload_name(upload.filename, "photo")
    if not images.is_image_name(upload.filename):
        raise UserError(batch.not_a_photo(name), 415)
    stream = upload.stream
    stream.seek(0, io.SEEK_END)
    empty = stream.tell() == 0
    stream.seek(0)
    if empty:
        raise UserError(f"'{name}' is empty: the upload has no bytes.", 400)
    return stream, name


def _only_post(page_endpoint, what):
    """GET on a POST route: JSON clients get a 405 saying what to send, browsers go to the form."""
    if wants_json():
        raise UserError(f"Send a POST with {what} to this address (multipart/form-data).", 405)
    return redirect(url_for(page_endpoint), code=303)


# -- R8, R9: one photo -------------------------------------------------------------

@bp.get("/predictSinglePage")
def single_page():
    return reply("main/predict_single_form.html", {"model_ready": models().current_version() is not None,
                                                   "extensions": list(images.IMAGE_EXTENSIONS)})


@bp.route("/predictSingleImage", methods=["GET", "POST"])
def single_image():
    if request.method == "GET":
        return _only_post("predict.single_page", "one photo in the field 'file'")
    started = time.perf_counter()
    stream, name = _single_upload()
    model, queue = _model(), review_queue()
    rgb, size = images.load_photo(stream, name=name)
    names = _names(model)
    objects, found = predict.predict_faces(rgb, model, original_size=size, names=names, negatives=queue.negatives())
    if not objects:
        raise UserError(f"No face was found in '{name}'. Try a photo where the face is larger, "
                        "sharper and turned towards the camera.", 422)
    run, folder = _new_result()
    predict.queue_unsure(queue, rgb, found, objects, model, {"kind": "single", "run": run, "photo": name}, names)
    predict.save_drawn(folder, "annotated.jpg", rgb, objects, [f.box for f in found], source=name)
    stream.seek(0)
    keep.hold_photo(folder, stream.read(), name, found)  # what "Keep in library" needs (shared/library/keep.py)
    elapsed = round((time.perf_counter() - started) * 1000, 1)
    payload = {"faces": [predict.shown(o, names) for o in objects], "model_version": model.version,
               "elapsed_ms": elapsed, "width": size[0], "height": size[1], "run": run,
               "image_url": _file_url(run, "annotated.jpg"),
               "download_url": _file_url(run, "annotated.jpg", download=1)}
    return reply("main/predict_single_result.html", payload, filename=name, size=size,
                 analysed=(rgb.shape[1], rgb.shape[0]), keepable=True)


# -- R10, R11: a batch of photos ----------------------------------------------------

@bp.get("/predictBatchPage")
def batch_page():
    return reply("main/predict_batch_form.html", {"model_ready": models().current_version() is not None,
                                                  "extensions": list(images.IMAGE_EXTENSIONS)})


@bp.route("/predictBatchImage", methods=["GET", "POST"])
def batch_image():
    if request.method == "GET":
        return _only_post("predict.batch_page", "photos (or zips of photos) in the repeated field 'file'")
    uploads = [u for u in request.files.getlist("file") if u and u.filename]
    if not uploads:
        raise UserError("Choose one or more photos to upload (form field 'file', repeated).", 400)
    model = _model()
    run, folder = _new_result()
    who = principal()
    tracker = batch.begin(folder, who.actor if who else None, current_app.config["BATCH_CONCURRENT_PER_USER"],
                          _stale_s())
    try:
        rows, files = batch.stage(uploads, folder)
    except Exception:
        tracker.fail(batch.FAILED)
        raise
    keep.hold_batch(folder, rows, files)  # the photos "Keep in library" needs, before the batch deletes them
    names, root = pool().display_names(), str(models().root)
    if wants_json() or len(files) < BACKGROUND_FROM:
        batch.run_tracked(rows, files, folder, model, root, names, tracker)
        return batch_result(run)
    batch.run_in_background(rows, files, folder, model, root, names, tracker)
    return redirect(url_for("predict.batch_result", run=run), 303)


def _stale_s():
    """Seconds without a heartbeat after which a running batch counts as stopped (``BATCH_STALE_S``)."""
    return current_app.config["BATCH_STALE_S"]


@bp.get("/predictBatch/<run>/progress")
def batch_progress(run):
    """``{"state": "running"|"done"|"failed", "done", "total", "error"}`` of a batch."""
    state = batch.status(_result(run), _stale_s()) or {"state": "done", "done": 0, "total": 0}
    return jsonify(batch.public(state))


@bp.get("/predictBatch/<run>")
def batch_result(run):
    """The results of a batch (with the sentence saying why, for one that did not finish), or its
    progress bar while it runs."""
    folder = _result(run)
    state = batch.status(folder, _stale_s()) or {"state": "running", "done": 0, "total": 0}
    stored = read_json(folder / "results.json")
    if stored is None:
        if wants_json():
            return reply("main/predict_batch_progress.html", batch.public(state), status=202)
        return reply("main/predict_batch_progress.html", batch.public(state), run=run)
    thumbs = {int(k): _file_url(run, v) for k, v in stored["thumbs"].items()}
    rows = predict.shown_rows(stored["payload"]["results"], _names())
    payload = dict(stored["payload"], results=rows, run=run)
    if stored.get("error"):
        payload["error"] = stored["error"]
    faces = [f for r in rows for f in r["faces"]]
    summary = dict(stored["summary"], known=sum(f["known"] for f in faces),
                   deleted=sum(bool(f.get("deleted")) for f in faces))
    return reply("main/predict_batch_result.html", payload, thumbs=thumbs, summary=summary,
                 csv_url=_file_url(run, "results.csv"), kept=keep.kept(folder), keepable=keep.keepable(folder))


# -- R12, R13: look-alike KOLs -----------------------------------------------------

@bp.get("/findSimilarKOLPage")
def similar_page():
    return reply("main/similar_form.html", {"model_ready": models().current_version() is not None,
                                            "default_k": DEFAULT_K, "max_k": MAX_K})


def _k():
    raw = (request.form.get("k") or "").strip()
    if not raw:
        return DEFAULT_K
    if not re.fullmatch(r"[0-9]{1,4}", raw) or not 1 <= int(raw) <= MAX_K:
        raise UserError(f"k must be a whole number from 1 to {MAX_K} (got '{raw[:20]}').", 400)
    return int(raw)


def _face_number(count):
    """The face chosen in form field ``face`` (its number on the photo, 1 = the largest; default 1)
    among the ``count`` faces found; 400 otherwise."""
    raw = (request.form.get("face") or "").strip()
    if not raw:
        return 1
    if not re.fullmatch(r"[0-9]{1,4}", raw) or not 1 <= int(raw) <= count:
        faces = "1 face" if count == 1 else f"{count} faces"
        raise UserError(f"face must be the number of a face on the photo, from 1 to {count} (the photo has "
                        f"{faces}; got '{raw[:20]}').", 400)
    return int(raw)


def _similar_query(model):
    """The photo to look up: a new upload (its faces found, drawn and kept in a new result), or,
    with form field ``run``, the faces kept from an earlier upload of the asker's.

    Returns ``(run, query)``: ``query`` is ``{"filename", "faces": [face objects with "kol"],
    "embeddings": [[128 floats], ...]}`` (largest face first), as kept in ``query.json``.
    """
    if request.form.get("run"):
        run = request.form["run"]
        query = read_json(_result(run) / "query.json")
        if query is None:
            raise UserError("There is no such result: results are kept for one day.", 404)
        return run, query
    stream, name = _single_upload()
    rgb, size = images.load_photo(stream, name=name)
    found = engine.analyze(rgb)
    if not found:
        raise UserError(f"No face was found in '{name}'. Try a photo where the face is larger, "
                        "sharper and turned towards the camera.", 422)
    objects, _ = predict.predict_faces(rgb, model, found=found, original_size=size, names=_names(model),
                                       negatives=review_queue().negatives())
    run, folder = _new_result()
    predict.save_drawn(folder, "annotated.jpg", rgb, objects, [f.box for f in found], source=name)
    query = {"filename": name, "width": size[0], "height": size[1], "faces": objects,
             "embeddings": [[float(v) for v in f.embedding] for f in found]}
    atomic_write_json(folder / "query.json", query)
    return run, query


@bp.route("/findSimilarKOLResult", methods=["GET", "POST"])
def similar_result():
    """The ``k`` KOLs most like one face of a photo: face ``face`` (default 1, the largest) of a new
    upload, or of the photo of an earlier answer (field ``run``: its page's faces are clickable)."""
    if request.method == "GET":
        return _only_post("predict.similar_page", "one photo in the field 'file' (and optionally 'k' and 'face')")
    k = _k()
    model = _model()
    run, query = _similar_query(model)
    number = _face_number(len(query["faces"]))
    embedding = np.array(query["embeddings"][number - 1])
    names = _names(model)
    faces = [predict.shown(f, names) for f in query["faces"]]
    matches, photos = [], []
    for slug, similarity, _distance in model.similar(embedding, k):
        matches.append({"identity": names.get(slug, slug), "similarity": similarity})
        cid = predict.representative_chip(pool(), slug, embedding)
        photos.append(url_for("predict.pool_photo", slug=slug, cid=cid) if cid else None)
    payload = {"face": faces[number - 1], "faces": faces, "matches": matches}
    return reply("main/similar_result.html", payload, filename=query["filename"], k=k, run=run,
                 size=(query["width"], query["height"]), photos=photos,
                 image_url=_file_url(run, "annotated.jpg"))


# -- files --------------------------------------------------------------------------

@bp.get("/predictions/<run>/<name>")
def prediction_file(run, name):
    """A result file (annotated photo, thumbnail, CSV) of one run."""
    if not FILE_RE.match(name):
        raise UserError("There is no such result: results are kept for one day.", 404)
    folder = _result(run)
    if not (folder / name).is_file():
        raise UserError("There is no such result: results are kept for one day.", 404)
    if name.endswith(".csv"):
        return send_from_directory(folder, predict.current_csv(folder, _names(), name), as_attachment=True,
                                   download_name="predictions.csv", max_age=0)
    download = request.args.get("download") == "1"
    source = predict.drawn_source(folder, name) if download else None
    return send_from_directory(folder, predict.current_image(folder, name, _names()), as_attachment=download,
                               download_name=f"{Path(source or 'photo').stem}-faces.jpg" if download else None,
                               max_age=0)


@bp.get("/similar/photo/<slug>/<cid>.png")
def pool_photo(slug, cid):
    """A chip of the training pool (ids validated by :meth:`shared.training.pool.Pool.chip_path`)."""
    path = pool().chip_path(slug, cid)
    return send_from_directory(path.parent, path.name, max_age=3600)
