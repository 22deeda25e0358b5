"""Main server R6-R7: upload a video and hand it to the video server.

``GET /uploadVideoPage`` shows the form; ``POST /predictVideoResult`` (field
``file``) stores the video under a new id (:func:`shared.video.videos.store`: extension
checked, probed with OpenCV, the uploader recorded as its owner, old videos swept by
the cleanup rule) and answers ``303`` to ``{VIDEO_URL}/?video=<id>``, which only the
uploader (and admins) may watch. ``GET /predictVideoResult`` explains what
to do. A file that is not a decodable video gets a 4xx page (or ``{"error": ...}``)
and leaves nothing on disk.
"""
from flask import Blueprint, current_app, redirect, request

from shared.faces import frames
from shared.video import videos
from shared.web.access import principal
from shared.web.factory import data_path, models
from shared.web.replies import reply

bp = Blueprint("video", __name__)


def _form_payload():
    return {"extensions": list(frames.VIDEO_EXTENSIONS),
            "max_upload_mib": current_app.config["MAX_CONTENT_LENGTH"] // (1024 * 1024),
            "model_ready": models().current_version() is not None}


@bp.get("/uploadVideoPage")
def upload_video_page():
    """R6: the upload form."""
    return reply("main/video_upload.html", _form_payload(),
                 keep=current_app.config["VIDEO_KEEP"],
                 max_age_h=current_app.config["VIDEO_MAX_AGE_S"] // 3600)


@bp.route("/predictVideoResult", methods=["GET", "POST"])
def predict_video_result():
    """R7: store the upload and go to the video server's player; GET explains."""
    if request.method == "GET":
        return reply("main/video_result_get.html",
                     {"message": "Send a video with POST (form field 'file') to watch it recognised.",
                      **_form_payload()})
    meta = videos.store(data_path("videos"), request.files.get("file"),
                        keep=current_app.config["VIDEO_KEEP"],
                        max_age_s=current_app.config["VIDEO_MAX_AGE_S"],
                        owner=principal())
    return redirect(f"{current_app.config['VIDEO_URL']}/?video={meta['video']}", 303)
