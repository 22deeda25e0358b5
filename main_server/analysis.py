"""Analyse videos on the job queue, and the screen-time report (issue 24, items 2 and 3).

- ``GET /analysis``: the upload form and the analyses you made; ``POST /analysis`` (field ``file``, one
  or many videos or zips of videos): checked, queued (:mod:`shared.library.analysis`), ``303`` to its page
  (JSON: ``202`` with its status);
- ``GET /analysis/<id>`` (page, polls) and ``GET /analysis/<id>.json``: progress per video;
- ``GET /analysis/<id>/<video>/<file>``: a finished video's results: ``tracks.json`` (the stream's per-frame
  format), ``tracks.vtt``, ``tracks.csv``, ``appearances.csv``; ``.../source`` the video itself (range
  requests), ``.../thumbs/<name>`` a face crop, ``.../player?t=<s>`` a player at that second;
- ``GET /screentime`` (page or JSON; ``?analysis=<id>`` and ``?video=<id>:<video>`` repeatable, ``?kol=<name>``)
  and ``GET /screentime.csv``.

An analysis is for the one who uploaded it (and admins): anyone else gets the 404 of an unknown id.
"""
import re

from flask import Blueprint, Response, current_app, flash, jsonify, redirect, request, send_from_directory, url_for
from werkzeug.utils import secure_filename

from shared.core.errors import UserError
from shared.library import analysis, screentime
from shared.training.jobqueue import connection
from shared.video import appearances, framelog
from shared.web.access import principal
from shared.web.factory import data_path, models
from shared.web.replies import reply, wants_json

bp = Blueprint("analysis", __name__)

THUMB_RE = re.compile(r"^[0-9]{7}-[0-9a-f]{8}\.jpg$")
RESULT_FILES = ("tracks.json", "tracks.vtt", "tracks.csv", "appearances.csv")
LIMITS = ("ANALYSIS_MAX_VIDEO_S", "ANALYSIS_MAX_PIXELS", "ANALYSIS_MAX_VIDEOS", "ANALYSIS_CHUNK_S")


def _root():
    return analysis.root_of(data_path())


def _conn():
    return connection.connect(current_app.config["REDIS_URL"])


def _status(analysis_id):
    """:func:`shared.library.analysis.status`; from the files alone while the queue is down."""
    try:
        return analysis.status(_conn(), _root(), analysis_id, principal())
    except connection.DOWN_ERRORS:
        return analysis.status(None, _root(), analysis_id, principal())


@bp.get("/analysis")
def index():
    """The upload form and your analyses, newest first."""
    cfg = current_app.config
    return reply("main/analysis_index.html",
                 {"analyses": analysis.listing(_root(), principal()),
                  "limits": {k: cfg[k] for k in LIMITS},
                  "max_upload_mib": cfg["MAX_CONTENT_LENGTH"] // (1024 * 1024),
                  "model_ready": models().current_version() is not None})


@bp.post("/analysis")
def upload():
    """Check and queue the uploaded videos: 303 to the analysis's page (JSON 202 with its status)."""
    cfg = current_app.config
    record = analysis.create(_root(), request.files.getlist("file"), principal(), {k: cfg[k] for k in LIMITS},
                             models().current_version())
    try:
        analysis.enqueue(_conn(), _root(), record)
    except connection.DOWN_ERRORS:
        raise UserError(connection.REDIS_DOWN, 503) from None
    if wants_json():
        return reply("main/analysis.html", _status(record["analysis"]), 202)
    count = len(record["videos"])
    flash(f"{count} video{'' if count == 1 else 's'} queued for analysis.", "ok")
    return redirect(url_for("analysis.show", analysis_id=record["analysis"]), 303)


@bp.get("/analysis/<analysis_id>")
def show(analysis_id):
    """Progress per video (the page polls the JSON), with links to each finished video's results."""
    return reply("main/analysis.html", _status(analysis_id))


@bp.get("/analysis/<analysis_id>.json")
def status_json(analysis_id):
    """Progress per video as JSON."""
    return jsonify(_status(analysis_id))


def _download(v, text, mimetype, suffix):
    stem = secure_filename(v["filename"].rsplit("/", 1)[-1].rsplit(".", 1)[0]) or "video"
    return Response(text, mimetype=mimetype, headers={"Content-Disposition": f'attachment; filename="{stem}-{suffix}"',
                                                      "Cache-Control": "no-store"})


@bp.get("/analysis/<analysis_id>/<video_id>/<name>")
def result(analysis_id, video_id, name):
    """A finished video's per-frame file (JSON, WebVTT, CSV) or its appearances CSV; 409 while it runs."""
    if name not in RESULT_FILES:
        raise UserError(f"There is no such result: {', '.join(RESULT_FILES)}.", 404)
    vdir, v = analysis.result(_root(), analysis_id, video_id, principal())
    if name == "appearances.csv":
        return _download(v, appearances.to_csv(analysis.read_appearances(vdir)["appearances"]), "text/csv",
                         "appearances.csv")
    data = framelog.read(vdir)
    if name == "tracks.json":
        return Response(analysis.dumps(data), mimetype="application/json", headers={"Cache-Control": "no-store"})
    if name == "tracks.vtt":
        return Response(framelog.to_vtt(data), mimetype="text/vtt", headers={"Cache-Control": "no-store"})
    return _download(v, framelog.to_csv(data), "text/csv", "tracks.csv")


@bp.get("/analysis/<analysis_id>/<video_id>/source")
def source(analysis_id, video_id):
    """The analysed video itself (conditional and range requests, so the player can jump)."""
    vdir, _ = analysis.result(_root(), analysis_id, video_id, principal())
    path = analysis.source_path(vdir)
    return send_from_directory(vdir, path.name, conditional=True, max_age=0)


@bp.get("/analysis/<analysis_id>/<video_id>/thumbs/<name>")
def thumb(analysis_id, video_id, name):
    """A face crop saved while the video was analysed."""
    if not THUMB_RE.match(name):
        raise UserError("No such picture.", 404)
    vdir, _ = analysis.result(_root(), analysis_id, video_id, principal())
    return send_from_directory(vdir / "thumbs", name, max_age=3600)


@bp.get("/analysis/<analysis_id>/<video_id>/player")
def player(analysis_id, video_id):
    """The video in a player, at second ``t``."""
    vdir, v = analysis.result(_root(), analysis_id, video_id, principal())
    try:
        t = max(0.0, float(request.args.get("t", 0)))
    except ValueError:
        raise UserError("The time t must be a number of seconds.", 400) from None
    return reply("main/analysis_player.html", {"analysis": analysis_id, "video": video_id,
                                               "filename": v["filename"], "t": round(t, 2)})


def _report():
    chosen = set(request.args.getlist("analysis")) or None
    videos = set(request.args.getlist("video")) or None
    return screentime.report(screentime.finished_videos(_root(), principal(), chosen, videos),
                             request.args.get("kol") or None)


@bp.get("/screentime")
def screen_time():
    """The screen-time report: per KOL, total and per video, the moments, a chart; printable; a form to choose videos."""
    every = screentime.finished_videos(_root(), principal(), set(request.args.getlist("analysis")) or None)
    return reply("main/screentime.html", _report(), chosen=request.args.getlist("analysis"),
                 picked=request.args.getlist("video"), kol=request.args.get("kol") or "",
                 choices=[{"value": f"{a}:{v['video']}", "filename": v["filename"]} for a, v, _ in every])


@bp.get("/screentime.csv")
def screen_time_csv():
    """The screen-time report as CSV (one line per moment)."""
    return Response(screentime.to_csv(_report()), mimetype="text/csv",
                    headers={"Content-Disposition": 'attachment; filename="screen-time.csv"',
                             "Cache-Control": "no-store"})
