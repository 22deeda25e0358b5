"""R8-R13: name the faces in one photo, in a batch of photos, and find look-alike KOLs.

Every result is kept in its own folder ``DATA_DIR/predictions/<run id>/`` (the
annotated photo, batch thumbnails, CSV), served only through :func:`prediction_file`
with strict names; :class:`shared.predict.ResultFolders` sweeps away folders older
than a day. Boxes are in the pixels of the photo as uploaded (see shared.predict).

A batch sent from a browser runs in the background: the browser is sent to
``/predictBatch/<run>``, which shows a progress bar until the results are ready and
then the results. A script (``Accept: application/json``) gets the results in the answer.
"""
import io
import logging
import re
import shutil
import threading
import time
from concurrent.futures import as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from flask import Blueprint, current_app, redirect, request, send_from_directory, url_for
from werkzeug.utils import secure_filename

from shared import archive, faces, images, parallel
from shared import predict as engine
from shared.errors import UserError
from shared.storage import atomic_write_bytes, atomic_write_json, read_json
from shared.web import data_path, models, pool, reply, upload_name, wants_json

bp = Blueprint("predict", __name__)
log = logging.getLogger(__name__)

FILE_RE = re.compile(r"^(annotated\.jpg|thumb-[0-9]{1,5}\.jpg|results\.csv)$")
MAX_K = 50
#: Batches of at least this many photos sent from a browser run in the background behind a progress bar.
BACKGROUND_FROM = 20
DEFAULT_K = 5
EXTENSIONS = ", ".join(images.IMAGE_EXTENSIONS)


# -- helpers ------------------------------------------------------------------------

def _model():
    """The current model, or a 409 saying how to get one."""
    model = models().current()
    if model is None:
        raise UserError("No model is trained yet: train one from the Train page before predicting.", 409)
    return model


def _results():
    return engine.ResultFolders(data_path("predictions"))


def _file_url(run, name):
    return url_for("predict.prediction_file", run=run, name=name)


def _not_a_photo(name):
    hint = archive.other_kind_hint([name], "image")
    return f"'{name}' is not a photo this tool reads: use {EXTENSIONS}.{hint}"


def _single_upload():
    """The one uploaded photo of field ``file``: ``(stream, safe display name)``; 400/415 otherwise."""
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        raise UserError("Choose a photo to upload (form field 'file').", 400)
    name = upload_name(upload.filename, "photo")
    if not images.is_image_name(upload.filename):
        raise UserError(_not_a_photo(name), 415)
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
    model = _model()
    rgb, size = images.load_photo(stream, name=name)
    objects, found = engine.predict_faces(rgb, model, original_size=size, names=pool().display_names())
    if not objects:
        raise UserError(f"No face was found in '{name}'. Try a photo where the face is larger, "
                        "sharper and turned towards the camera.", 422)
    run, folder = _results().new()
    atomic_write_bytes(folder / "annotated.jpg", images.encode_jpeg(engine.annotated(rgb, objects, found)))
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


def _stage_batch(uploads, folder):
    """Save the uploaded parts (photos, or zips of photos) under ``folder/uploads``.

    Returns ``(rows, files)``: one row per photo ``{"index", "path", "filename", "faces", "error"}``
    (``path`` is the name as uploaded, ``zip name/path inside it`` for a zip's photos) and
    ``{row index: path on disk}`` for the rows that can be predicted.
    """
    incoming = folder / "uploads"
    incoming.mkdir()
    rows, files = [], {}

    def add(path, name, disk=None, error=None):
        rows.append({"index": len(rows) + 1, "path": path, "filename": name, "faces": [], "error": error,
                     "width": None, "height": None})
        if disk is not None and error is None:
            files[len(rows) - 1] = disk

    for i, upload in enumerate(uploads):
        name = upload_name(upload.filename, f"photo-{i + 1}")
        if upload.filename.lower().endswith(".zip"):
            raw = incoming / f"{i:05d}.zip"
            upload.save(raw)
            upload.close()
            try:
                found, skipped = archive.extract_media_zip(raw, incoming / f"{i:05d}", "image")
            except UserError as exc:
                add(name, name, error=exc.message)
                continue
            finally:
                raw.unlink(missing_ok=True)
            for f in found:
                add(f"{name}/{f['name']}", upload_name(f["name"], "photo"), disk=Path(f["path"]))
            for s in skipped:
                add(f"{name}/{s['name']}", upload_name(s["name"], "file"), error=f"Not used: {s['reason']}.")
            continue
        if not images.is_image_name(upload.filename):
            add(name, name, error=_not_a_photo(name))
            continue
        path = incoming / f"{i:05d}{Path(secure_filename(upload.filename)).suffix.lower() or '.img'}"
        upload.save(path)
        upload.close()
        if path.stat().st_size == 0:
            add(name, name, error="The file is empty.")
            continue
        add(name, name, disk=path)
    return rows, files


def _run_batch(rows, files, folder, run, model, models_root, names, progress=None):
    """Predict every staged photo; fills ``rows`` in place, writes the CSV and ``results.json``.

    progress: ``progress(done, total)`` after each photo. Returns the payload.
    """
    started = time.perf_counter()
    tasks = [(i, str(path), rows[i]["filename"], models_root, model.version, str(folder / f"thumb-{i}.jpg"), names)
             for i, path in files.items()]
    thumbs = {}
    try:
        for done, outcome in enumerate(_run_tasks(tasks), 1):
            row = rows[outcome["index"]]
            row["faces"], row["error"] = outcome["faces"], outcome["error"]
            row["width"], row["height"] = outcome["width"] or None, outcome["height"] or None
            if outcome["thumb"]:
                thumbs[outcome["index"]] = f"thumb-{outcome['index']}.jpg"
            if progress:
                progress(done, len(tasks))
    finally:
        shutil.rmtree(folder / "uploads", ignore_errors=True)
    atomic_write_bytes(folder / "results.csv", engine.batch_csv(rows))
    payload = {"results": rows, "model_version": model.version}
    summary = {
        "photos": len(rows),
        "failed": sum(1 for r in rows if r["error"]),
        "faces": sum(len(r["faces"]) for r in rows),
        "known": sum(f["known"] for r in rows for f in r["faces"]),
        "elapsed_s": round(time.perf_counter() - started, 2),
    }
    atomic_write_json(folder / "results.json", {"payload": payload, "summary": summary, "thumbs": thumbs})
    return payload


@bp.route("/predictBatchImage", methods=["GET", "POST"])
def batch_image():
    if request.method == "GET":
        return _only_post("predict.batch_page", "photos (or zips of photos) in the repeated field 'file'")
    uploads = [u for u in request.files.getlist("file") if u and u.filename]
    if not uploads:
        raise UserError("Choose one or more photos to upload (form field 'file', repeated).", 400)
    model = _model()
    run, folder = _results().new()
    rows, files = _stage_batch(uploads, folder)
    names, root = pool().display_names(), str(models().root)
    if wants_json() or len(files) < BACKGROUND_FROM:
        _run_batch(rows, files, folder, run, model, root, names)
        return batch_result(run)
    progress_path = folder / "progress.json"
    atomic_write_json(progress_path, {"state": "running", "done": 0, "total": len(files), "error": None})

    def progress(done, total):
        atomic_write_json(progress_path, {"state": "running", "done": done, "total": total, "error": None})

    app = current_app._get_current_object()

    def work():
        try:
            _run_batch(rows, files, folder, run, model, root, names, progress)
            atomic_write_json(progress_path, {"state": "done", "done": len(files), "total": len(files),
                                              "error": None})
        except Exception:  # noqa: BLE001 - shown on the progress page
            app.logger.exception("batch %s failed", run)
            atomic_write_json(progress_path, {"state": "failed", "done": 0, "total": len(files),
                                              "error": "The batch could not be processed; the error was logged."})

    threading.Thread(target=work, name=f"batch-{run[:8]}", daemon=True).start()
    return redirect(url_for("predict.batch_result", run=run), 303)


@bp.get("/predictBatch/<run>/progress")
def batch_progress(run):
    """``{"state": "running"|"done"|"failed", "done", "total", "error"}`` of a batch."""
    folder = _results().folder(run)
    state = read_json(folder / "progress.json") or {"state": "done", "done": 0, "total": 0, "error": None}
    from flask import jsonify

    return jsonify(state)


@bp.get("/predictBatch/<run>")
def batch_result(run):
    """The results of a batch, or its progress bar while it runs."""
    folder = _results().folder(run)
    stored = read_json(folder / "results.json")
    if stored is None:
        state = read_json(folder / "progress.json") or {"state": "running", "done": 0, "total": 0, "error": None}
        if wants_json():
            return reply("main/predict_batch_progress.html", state, status=202)
        return reply("main/predict_batch_progress.html", state, run=run)
    thumbs = {int(k): _file_url(run, v) for k, v in stored["thumbs"].items()}
    return reply("main/predict_batch_result.html", stored["payload"], thumbs=thumbs, summary=stored["summary"],
                 csv_url=_file_url(run, "results.csv"))


def _run_tasks(tasks):
    """Run :func:`shared.predict.predict_file` over ``tasks``, yielding outcomes as they finish:
    on every core through the process pool when there is more than one photo, in this
    process otherwise (or if the pool cannot be used)."""
    if len(tasks) > 1:
        try:
            executor = parallel.pool()
            futures = [executor.submit(engine.predict_file, t) for t in tasks]
        except (BrokenProcessPool, OSError, RuntimeError):
            log.exception("the process pool failed; running the batch in this process")
        else:
            done = set()
            try:
                for future in as_completed(futures):
                    outcome = future.result()
                    done.add(outcome["index"])
                    yield outcome
                return
            except (BrokenProcessPool, OSError, RuntimeError):
                log.exception("the process pool failed; finishing the batch in this process")
                tasks = [t for t in tasks if t[0] not in done]
    for t in tasks:
        yield engine.predict_file(t)


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
    found = faces.analyze(rgb)
    if not found:
        raise UserError(f"No face was found in '{name}'. Try a photo where the face is larger, "
                        "sharper and turned towards the camera.", 422)
    face = found[0]  # largest first
    names = pool().display_names()
    objects, _ = engine.predict_faces(rgb, model, found=[face], original_size=size, names=names)
    matches, photos = [], []
    for slug, similarity, _distance in model.similar(face.embedding, k):
        matches.append({"identity": names.get(slug, model.names.get(slug, slug)), "similarity": similarity})
        cid = engine.representative_chip(pool(), slug, face.embedding)
        photos.append(url_for("predict.pool_photo", slug=slug, cid=cid) if cid else None)
    run, folder = _results().new()
    atomic_write_bytes(folder / "annotated.jpg", images.encode_jpeg(engine.annotated(rgb, objects, [face])))
    payload = {"face": objects[0], "matches": matches}
    return reply("main/similar_result.html", payload, filename=name, faces_found=len(found), k=k,
                 photos=photos, image_url=_file_url(run, "annotated.jpg"))


# -- files --------------------------------------------------------------------------

@bp.get("/predictions/<run>/<name>")
def prediction_file(run, name):
    """A result file (annotated photo, thumbnail, CSV) of one run."""
    if not FILE_RE.match(name):
        raise UserError("There is no such result: results are kept for one day.", 404)
    folder = _results().folder(run)
    if not (folder / name).is_file():
        raise UserError("There is no such result: results are kept for one day.", 404)
    return send_from_directory(folder, name, as_attachment=name.endswith(".csv"),
                               download_name="predictions.csv" if name.endswith(".csv") else None,
                               max_age=3600)


@bp.get("/similar/photo/<slug>/<cid>.png")
def pool_photo(slug, cid):
    """A chip of the training pool (ids validated by :meth:`shared.pool.Pool.chip_path`)."""
    path = pool().chip_path(slug, cid)
    return send_from_directory(path.parent, path.name, max_age=3600)
