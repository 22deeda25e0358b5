"""Video server R1-R2.

- ``GET /``: without ``video``, an upload form (it posts to the main server's
  ``/predictVideoResult``, which stores the video and comes back here); with
  ``?video=<id>``, the player page: ``<img src="/video_feed?video=<id>">`` and
  beside it the list of who has appeared, polled from the JSON form of this same
  route (``Accept: application/json``, see docs/api.md), which ends as the
  video's summary.
- ``GET|POST /video_feed?video=<id>``: the MJPEG stream
  (``multipart/x-mixed-replace; boundary=frame``), one annotated JPEG per frame
  of the video, paced to its frame rate (frames that are already late are dropped,
  see :mod:`shared.video.streaming`); ``pace=0`` sends every frame as fast as it is made
  (tests, benchmarks).
- ``GET /appearances.csv?video=<id>``: who appeared when, one line per time range
  (:func:`shared.video.appearances.to_csv`), from the latest status.
- ``GET /video_tracks.json?video=<id>`` (and ``.vtt``, ``.csv``): every frame's faces of the latest
  run that reached the end (:mod:`shared.video.framelog`): boxes, names, confidence, track ids;
  as WebVTT cues or one CSV line per face per frame. 404 before a run has reached the end.

Only an id is taken from the URL (checked by :func:`shared.video.videos.video_dir`
against a strict pattern before any disk access); the file is found inside
``DATA_DIR/videos``. Every route with an id answers only the video's uploader (and
admins); anyone else gets the 404 of an unknown id (:func:`shared.video.videos.readable_dir`).
"""
import dataclasses
import json

from flask import Blueprint, Response, current_app, request
from werkzeug.utils import secure_filename

from shared.core.errors import UserError
from shared.faces import frames, parallel
from shared.video import appearances, framelog, streaming, videos
from shared.video.passes import warm_job
from shared.web.access import principal
from shared.web.factory import data_path, models, pool, review_queue
from shared.web.replies import reply

bp = Blueprint("stream", __name__)


def _folder(required=True):
    """The folder of the video ``?video=<id>`` if whoever is asking may watch it (404 otherwise);
    ``None`` when no id is given and ``required`` is false."""
    video_id = request.values.get("video")
    if video_id is None and not required:
        return None
    if video_id is None:
        raise UserError("Say which video to play: add ?video=<id> (the upload page gives you the link).", 400)
    return videos.readable_dir(data_path("videos"), video_id.strip().lower(), principal())


def _pace():
    raw = request.values.get("pace", "1").strip().lower()
    if raw not in ("0", "1", "true", "false", "yes", "no", ""):
        raise UserError("pace must be 1 (normal speed) or 0 (as fast as possible).", 400)
    return raw not in ("0", "false", "no")


@bp.get("/")
def index():
    folder = _folder(required=False)
    if folder is None:
        return reply("video/index.html", {"video": None}, extensions=list(frames.VIDEO_EXTENSIONS),
                     max_upload_mib=current_app.config["MAX_CONTENT_LENGTH"] // (1024 * 1024))
    status = videos.current_status(folder)
    meta = videos.read_meta(folder)
    if not streaming.is_warm(parallel.executor()):
        parallel.executor().submit(warm_job)  # start a worker (and dlib in it) before the stream asks
    return reply("video/player.html", status, meta=meta, model_ready=models().current_version() is not None)


@bp.route("/video_feed", methods=["GET", "POST"])
def video_feed():
    folder = _folder()
    pace = _pace()
    path = videos.source_path(folder)
    if path is None:
        raise UserError("This video's file is missing: please upload it again.", 404)
    frames.probe(path, name=(videos.read_meta(folder) or {}).get("filename"))  # 4xx now, not a broken stream
    model = models().current()  # as on disk now: a KOL deleted before this stream is not named in it;
    # the stream keeps this model to its end (a delete or a removed photo during it reaches the next stream)
    if model is not None:  # the training pool's display names: a KOL renamed since training shows the new name
        model = dataclasses.replace(model, names={**model.names, **pool().display_names()})
    body = streaming.stream(folder, model, pace=pace, executor=parallel.executor(),
                            max_side=current_app.config["VIDEO_STREAM_SIDE"], review=review_queue())
    return Response(body, mimetype="multipart/x-mixed-replace; boundary=frame",
                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def _download(folder, text, mimetype, suffix):
    """``text`` as a download named after the upload (``<stem>-<suffix>``)."""
    name = (videos.read_meta(folder) or {}).get("filename") or "video"
    stem = secure_filename(name.rsplit(".", 1)[0]) or "video"  # the upload's name, safe in a header
    return Response(text, mimetype=mimetype,
                    headers={"Content-Disposition": f'attachment; filename="{stem}-{suffix}"',
                             "Cache-Control": "no-store"})


@bp.get("/appearances.csv")
def appearances_csv():
    folder = _folder()
    status = videos.current_status(folder)
    return _download(folder, appearances.to_csv(status.get("appearances") or []), "text/csv", "appearances.csv")


@bp.get("/video_tracks.json")
def video_tracks_json():
    """Every frame's faces of the latest complete run (:mod:`shared.video.framelog`)."""
    data = framelog.read(_folder())
    return Response(json.dumps(data, separators=(",", ":")), mimetype="application/json",
                    headers={"Cache-Control": "no-store"})


@bp.get("/video_tracks.vtt")
def video_tracks_vtt():
    folder = _folder()
    return _download(folder, framelog.to_vtt(framelog.read(folder)), "text/vtt", "faces.vtt")


@bp.get("/video_tracks.csv")
def video_tracks_csv():
    folder = _folder()
    return _download(folder, framelog.to_csv(framelog.read(folder)), "text/csv", "faces.csv")
