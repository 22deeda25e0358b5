"""R8-R13: name the faces in one photo, in a batch of photos, and find look-alike KOLs.

Every result is kept in its own folder ``DATA_DIR/predictions/<run id>/`` (the
annotated photo, batch thumbnails, CSV), served only through :func:`prediction_file`
with strict names; :class:`shared.recognition.predict.ResultFolders` sweeps away folders older
than the ``PREDICTION_MAX_AGE_S`` setting (a day). A result is for the one who made it (and
admins): every route that reads one answers anyone else 404, as for an unknown id
(:mod:`shared.core.owners`). Boxes are in the pixels of the photo as uploaded (see shared.recognition.predict).

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

from flask import Blueprint, current_app, jsonify, redirect, request, send_from_directory, url_for

from shared.core.errors import UserError
from shared.core.names import upload_name
from shared.core.storage import atomic_write_bytes, read_json
from shared.faces import engine, images
from shared.recognition import batch, predict, review
from shared.web.access import principal
from shared.web.factory import data_path, models, pool
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


def _review_queue():
    """The review queue of this data folder (:mod:`shared.recognition.review`)."""
    return review.Queue(data_path(review.FOLDER))


def _file_url(run, name):
    return url_for("predict.prediction_file", run=run, name=name)


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
    model, queue = _model(), _review_queue()
    rgb, size = images.load_photo(stream, name=name)
    names = pool().display_names()
    objects, found = predict.predict_faces(rgb, model, original_size=size, names=names, negatives=queue.negatives())
    if not objects:
        raise UserError(f"No face was found in '{name}'. Try a photo where the face is larger, "
                        "sharper and turned towards the camera.", 422)
    run, folder = _new_result()
    predict.queue_unsure(queue, rgb, found, objects, model, {"kind": "single", "run": run, "photo": name}, names)
    atomic_write_bytes(folder / "annotated.jpg", images.encode_jpeg(predict.annotated(rgb, objects, found)))
    elapsed = round((time.perf_counter() - started) * 1000, 1)
    payload = {"faces": objects, "model_version": model.version, "elapsed_ms": elapsed,
               "width": size[0], "height": size[1]}
    return reply("main/predict_single_result.html", payload, filename=name,
                 image_url=_file_url(run, "annotated.jpg"), size=size,
                 analysed=(rgb.shape[1], rgb.shape[0]))


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
    payload = dict(stored["payload"], error=stored["error"]) if stored.get("error") else stored["payload"]
    return reply("main/predict_batch_result.html", payload, thumbs=thumbs, summary=stored["summary"],
                 csv_url=_file_url(run, "results.csv"))


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


@bp.route("/findSimilarKOLResult", methods=["GET", "POST"])
def similar_result():
    if request.method == "GET":
        return _only_post("predict.similar_page", "one photo in the field 'file' (and optionally 'k')")
    k = _k()
    stream, name = _single_upload()
    model = _model()
    rgb, size = images.load_photo(stream, name=name)
    found = engine.analyze(rgb)
    if not found:
        raise UserError(f"No face was found in '{name}'. Try a photo where the face is larger, "
                        "sharper and turned towards the camera.", 422)
    face = found[0]  # largest first
    names = pool().display_names()
    objects, _ = predict.predict_faces(rgb, model, found=[face], original_size=size, names=names,
                                       negatives=_review_queue().negatives())
    matches, photos = [], []
    for slug, similarity, _distance in model.similar(face.embedding, k):
        matches.append({"identity": names.get(slug, model.names.get(slug, slug)), "similarity": similarity})
        cid = predict.representative_chip(pool(), slug, face.embedding)
        photos.append(url_for("predict.pool_photo", slug=slug, cid=cid) if cid else None)
    run, folder = _new_result()
    atomic_write_bytes(folder / "annotated.jpg", images.encode_jpeg(predict.annotated(rgb, objects, [face])))
    payload = {"face": objects[0], "matches": matches}
    return reply("main/similar_result.html", payload, filename=name, faces_found=len(found), k=k,
                 photos=photos, image_url=_file_url(run, "annotated.jpg"))


# -- files --------------------------------------------------------------------------

@bp.get("/predictions/<run>/<name>")
def prediction_file(run, name):
    """A result file (annotated photo, thumbnail, CSV) of one run."""
    if not FILE_RE.match(name):
        raise UserError("There is no such result: results are kept for one day.", 404)
    folder = _result(run)
    if not (folder / name).is_file():
        raise UserError("There is no such result: results are kept for one day.", 404)
    return send_from_directory(folder, name, as_attachment=name.endswith(".csv"),
                               download_name="predictions.csv" if name.endswith(".csv") else None,
                               max_age=3600)


@bp.get("/similar/photo/<slug>/<cid>.png")
def pool_photo(slug, cid):
    """A chip of the training pool (ids validated by :meth:`shared.training.pool.Pool.chip_path`)."""
    path = pool().chip_path(slug, cid)
    return send_from_directory(path.parent, path.name, max_age=3600)
