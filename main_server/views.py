"""R1: the home page: pick a mode, see the state of the pool and the model."""
from flask import Blueprint

from shared.web import models, pool, reply

bp = Blueprint("home", __name__)


@bp.get("/")
def index():
    meta = models().meta()
    payload = {
        "pool": pool().stats(),
        "model": None if meta is None else {
            "version": meta["version"], "created": meta.get("created"),
            "identities": meta.get("identities"), "samples": meta.get("samples"),
        },
    }
    return reply("main/index.html", payload)
