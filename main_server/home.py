"""R1: the home page (blueprint ``home``, ``GET /``): pick a mode, see the state of the pool and the model."""
from flask import Blueprint

from shared.web.factory import models, pool
from shared.web.replies import reply

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
    metrics = (meta or {}).get("metrics") or {}
    pool_kols = {k["slug"] for k in pool().summary()}
    model_kols = set(((meta or {}).get("names") or {}).keys())
    return reply("main/index.html", payload, kols=pool().summary(), metrics=metrics,
                 stale=bool(meta) and pool_kols != model_kols)
