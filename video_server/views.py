"""Video server views R1-R2."""
from flask import Blueprint

from shared.web import reply

bp = Blueprint("stream", __name__)


@bp.get("/")
def index():
    return reply("video/index.html", {"video": None})
