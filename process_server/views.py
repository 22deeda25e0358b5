"""Process server views R1-R7."""
from flask import Blueprint

from shared.web import pool, reply

bp = Blueprint("wizard", __name__)


@bp.get("/")
def index():
    return reply("process/index.html", {"pool": pool().stats()})
