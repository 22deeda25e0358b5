"""R8-R13: name the faces in one photo, in a batch of photos, and find look-alike KOLs.

Every result is kept in its own folder ``DATA_DIR/predictions/<run id>/`` (the
annotated photo, batch thumbnails and CSV), served only through
:func:`prediction_file` with strict names; folders older than a day are swept away
when a new one is made.
"""
import csv
import io
import re
import shutil
import time
import uuid
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
from flask import Blueprint, current_app, redirect, request, send_from_directory, url_for
from werkzeug.utils import secure_filename

from shared import faces, images, parallel
from shared import predict as engine
from shared.errors import UserError
from shared.storage import atomic_write_bytes
from shared.web import data_path, models, pool, reply, upload_name, wants_json

bp = Blueprint("predict", __name__)

RUN_RE = re.compile(r"^[0-9a-f]{32}$")
FILE_RE = re.compile(r"^(annotated\.jpg|thumb-[0-9]{1,5}\.jpg|results\.csv)$")
KEEP_SECONDS = 24 * 3600
SWEEP_EVERY = 600
_last_sweep = 0.0
MAX_K = 50
DEFAULT_K = 5
EXTENSIONS = ", ".join(images.IMAGE_EXTENSIONS)


# -- helpers ------------------------------------------------------------------------

def _model():
    """The current model, or a 409 saying how to get one."""
    model = models().current()
    if model is None:
        raise UserError("No model is trained yet: train one from the Train page before predicting.", 409)
    return model


def _new_run():
    """A fresh result folder under DATA_DIR/predictions; returns ``(run_id, path)``."""
    global _last_sweep
    root = data_path("predictions")
    root.mkdir(parents=True, exist_ok=True)
    now = time.time()
    if now - _last_sweep > SWEEP_EVERY:  # at most once every few minutes per process
        _last_sweep = now
        for old in root.iterdir():
            try:
                if RUN_RE.match(old.name) and old.stat().st_mtime < now - KEEP_SECONDS:
                    shutil.rmtree(old, ignore_errors=True)
            except FileNotFoundError:
                pass
    run = uuid.uuid4().hex
    folder = root / run
    folder.mkdir()
    return run, folder


def _file_url(run, name):
    return url_for("predict.prediction_file", run=run, name=name)


def _single_upload():
    """The one uploaded photo of field ``file``: ``(stream, safe display name)``; 400/415 otherwise."""
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        raise UserError("Choose a photo to upload (form field 'file').", 400)
    name = upload_name(upload.filename, "photo")
    if not images.is_image_name(upload.filename):
        raise UserError(f"'{name}' is not a photo this tool reads: use {EXTENSIONS}.", 415)
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
    return reply("main/predict_single_form.html", {"model_ready": models().current_version() is not None})


@bp.route("/predictSingleImage", methods=["GET", "POST"])
def single_image():
    if request.method == "GET":
        return _only_post("predict.single_page", "one photo in the field 'file'")
    started = time.perf_counter()
    stream, name = _single_upload()
    model = _model()
    rgb = images.load_image(stream, name=name)
    objects, _ = engine.predict_faces(rgb, model)
    if not objects:
        raise UserError(f"No face was found in '{name}'. Try a photo where the face is larger, "
                        "sharper and turned towards the camera.", 422)
    run, folder = _new_run()
    atomic_write_bytes(folder / "annotated.jpg", images.encode_jpeg(engine.annotated(rgb, objects)))
    elapsed = round((time.perf_counter() - started) * 1000, 1)
    payload = {"faces": objects, "model_version": model.version, "elapsed_ms": elapsed}
    return reply("main/predict_single_result.html", payload, filename=name,
                 image_url=_file_url(run, "annotated.jpg"), size=(rgb.shape[1], rgb.shape[0]))


# -- R10, R11: a batch of photos ----------------------------------------------------

@bp.get("/predictBatchPage")
def batch_page():
    return reply("main/predict_batch_form.html", {"model_ready": models().current_version() is not None})


@bp.route("/predictBatchImage", methods=["GET", "POST"])
def batch_image():
    if request.method == "GET":
        return _only_post("predict.batch_page", "photos in the repeated field 'file'")
    started = time.perf_counter()
    uploads = [u for u in request.files.getlist("file") if u and u.filename]
    if not uploads:
        raise UserError("Choose one or more photos to upload (form field 'file', repeated).", 400)
    model = _model()
    run, folder = _new_run()
    incoming = folder / "uploads"
    incoming.mkdir()
    results, tasks = [], []
    # Stream every part to disk first (Werkzeug already spooled large parts to temp
    # files): the photos are never all decoded in memory at once.
    for i, upload in enumerate(uploads):
        name = upload_name(upload.filename, f"photo-{i + 1}")
        row = {"filename": name, "faces": [], "error": None}
        results.append(row)
        if not images.is_image_name(upload.filename):
            row["error"] = f"Not a photo this tool reads: use {EXTENSIONS}."
            continue
        path = incoming / f"{i:05d}{Path(secure_filename(upload.filename)).suffix.lower() or '.img'}"
        upload.save(path)
        upload.close()
        if path.stat().st_size == 0:
            row["error"] = "The file is empty."
            continue
        tasks.append((i, str(path), name, str(models().root), model.version, str(folder / f"thumb-{i}.jpg")))
    thumbs = {}
    try:
        for outcome in _run_tasks(tasks):
            row = results[outcome["index"]]
            row["faces"], row["error"] = outcome["faces"], outcome["error"]
            if outcome["thumb"]:
                thumbs[outcome["index"]] = _file_url(run, f"thumb-{outcome['index']}.jpg")
    finally:
        shutil.rmtree(incoming, ignore_errors=True)
    atomic_write_bytes(folder / "results.csv", _csv(results))
    payload = {"results": results, "model_version": model.version}
    summary = {
        "photos": len(results),
        "failed": sum(1 for r in results if r["error"]),
        "faces": sum(len(r["faces"]) for r in results),
        "known": sum(f["known"] for r in results for f in r["faces"]),
        "elapsed_s": round(time.perf_counter() - started, 2),
    }
    return reply("main/predict_batch_result.html", payload, thumbs=thumbs, summary=summary,
                 csv_url=_file_url(run, "results.csv"))


def _run_tasks(tasks):
    """Run :func:`shared.predict.predict_file` over ``tasks``: on every core through the
    process pool when there is more than one photo, in this process otherwise (or if
    the pool cannot be used). Returns the outcomes as a list."""
    if len(tasks) > 1:
        try:
            return list(parallel.pool().map(engine.predict_file, tasks, chunksize=max(1, len(tasks) // 64)))
        except (BrokenProcessPool, OSError, RuntimeError):
            current_app.logger.exception("the process pool failed; running the batch in this process")
    return [engine.predict_file(t) for t in tasks]


class _SafeWriter:
    """A csv writer that keeps spreadsheets from reading text cells as formulas."""

    def __init__(self, writer):
        self.writer = writer

    def writerow(self, row):
        self.writer.writerow(["'" + c if isinstance(c, str) and c[:1] in ("=", "+", "-", "@", "\t", "\r") else c
                              for c in row])


def _csv(results):
    """The batch results as CSV bytes (UTF-8 with BOM for spreadsheets): one row per face,
    or one row per photo without faces."""
    out = io.StringIO()
    writer = _SafeWriter(csv.writer(out))
    writer.writerow(["filename", "face", "identity", "known", "confidence", "top", "right", "bottom", "left", "error"])
    for row in results:
        if not row["faces"]:
            writer.writerow([row["filename"], "", "", "", "", "", "", "", "", row["error"] or ""])
        for n, face in enumerate(row["faces"], 1):
            b = face["box"]
            writer.writerow([row["filename"], n, face["identity"] or "unknown", face["known"],
                             f"{face['confidence']:.4f}", b["top"], b["right"], b["bottom"], b["left"],
                             row["error"] or ""])
    return ("\ufeff" + out.getvalue()).encode("utf-8")


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
    rgb = images.load_image(stream, name=name)
    found = faces.analyze(rgb)
    if not found:
        raise UserError(f"No face was found in '{name}'. Try a photo where the face is larger, "
                        "sharper and turned towards the camera.", 422)
    face = found[0]  # largest first
    objects, _ = engine.predict_faces(rgb, model, found=[face])
    matches, photos = [], []
    for slug, similarity, _distance in model.similar(face.embedding, k):
        matches.append({"identity": model.names.get(slug, slug), "similarity": similarity})
        photos.append(_representative(slug, face.embedding))
    run, folder = _new_run()
    atomic_write_bytes(folder / "annotated.jpg", images.encode_jpeg(engine.annotated(rgb, objects)))
    payload = {"face": objects[0], "matches": matches}
    return reply("main/similar_result.html", payload, filename=name, faces_found=len(found), k=k,
                 photos=photos, image_url=_file_url(run, "annotated.jpg"))


def _representative(slug, embedding):
    """URL of the KOL's pool photo nearest to ``embedding``, or ``None`` if the KOL left the pool."""
    info = pool().kols().get(slug)
    if not info or not info["chips"]:
        return None
    from shared.pool import chip_embedding

    root = pool().root / slug
    chips = [c for c in info["chips"] if (root / f"{c}.png").exists()]
    if not chips:
        return None
    X = np.array([chip_embedding(root / f"{c}.png") for c in chips])
    best = chips[int(np.argmin(faces.distances(X, embedding)))]
    return url_for("predict.pool_photo", slug=slug, cid=best)


# -- files --------------------------------------------------------------------------

@bp.get("/predictions/<run>/<name>")
def prediction_file(run, name):
    """A result file (annotated photo, thumbnail, CSV) of one run."""
    if not RUN_RE.match(run) or not FILE_RE.match(name):
        raise UserError("There is no such result: results are kept for one day.", 404)
    folder = data_path("predictions", run)
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
