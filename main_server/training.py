"""Main server R2-R5: upload a training zip (photos or videos) and hand it to the process server.

``POST /trainByImage`` / ``POST /trainByVideo`` (field ``zip``) check the upload,
extract it safely into a new job (:class:`shared.training.jobs.JobStore`) and answer
``303`` to ``{PROCESS_URL}/?job=<id>``. A zip that cannot be used gets a 4xx page
(or ``{"error": ...}``) and leaves nothing on disk.
"""

from flask import Blueprint, current_app, redirect, request

from shared.core.errors import UserError
from shared.core.names import upload_name
from shared.faces import frames, images
from shared.training import cleaning
from shared.training.jobs import JobStore
from shared.web.factory import data_path
from shared.web.replies import reply

bp = Blueprint("training", __name__)

KIND_INFO = {
    "image": {"title": "Train from photos", "endpoint": "/trainByImage", "plural": "photos",
              "extensions": images.IMAGE_EXTENSIONS},
    "video": {"title": "Train from videos", "endpoint": "/trainByVideo", "plural": "videos",
              "extensions": frames.VIDEO_EXTENSIONS},
}


def _limits():
    return {"max_upload_mib": current_app.config["MAX_CONTENT_LENGTH"] // (1024 * 1024),
            "max_total_mib": current_app.config["UPLOAD_MAX_UNPACKED_BYTES"] // (1024 * 1024),
            "max_members": current_app.config["UPLOAD_MAX_FILES"],
            "few": cleaning.FEW_CROPS}


@bp.get("/trainModel")
def train_model():
    """R2: choose photos or videos and upload a zip."""
    return reply("main/train_model.html", {"kinds": {k: {"endpoint": v["endpoint"],
                                                         "extensions": list(v["extensions"])}
                                                     for k, v in KIND_INFO.items()}},
                 info=KIND_INFO, **_limits())


@bp.get("/trainExplain")
def train_explain():
    """R3: how to lay out a training zip."""
    return reply("main/train_explain.html", {"image_extensions": list(images.IMAGE_EXTENSIONS),
                                             "video_extensions": list(frames.VIDEO_EXTENSIONS), **_limits()})


def _upload(kind):
    if request.method == "GET":
        return reply("main/train_upload.html", {"kind": kind, "extensions": list(KIND_INFO[kind]["extensions"])},
                     info=KIND_INFO[kind], **_limits())
    file = request.files.get("zip")
    if file is None:
        raise UserError("No zip was sent: choose a .zip file in the form field 'zip'.", 400)
    if not file.filename:
        raise UserError("No file was chosen: pick a .zip file first.", 400)
    name = upload_name(file.filename, "upload.zip")
    if not file.filename.lower().endswith(".zip"):
        raise UserError(f"'{file.filename[:80]}' is not a .zip file: compress the KOL folders into a zip "
                        "and upload that.", 415)
    jobs = JobStore(data_path("jobs"), current_app.config["JOB_INCOMPLETE_MAX_AGE_S"])
    job = jobs.create(file.save, kind, name)
    return redirect(f"{current_app.config['PROCESS_URL']}/?job={job}", 303)


@bp.route("/trainByImage", methods=["GET", "POST"])
def train_by_image():
    """R4: upload a zip of photos (one folder per KOL)."""
    return _upload("image")


@bp.route("/trainByVideo", methods=["GET", "POST"])
def train_by_video():
    """R5: upload a zip of videos (one folder per KOL)."""
    return _upload("video")
