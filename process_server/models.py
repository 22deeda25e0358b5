"""The kept model versions: a list with plain-words comparisons, and a switch back to any of them.

Admin only (shared/web/access.py denies by default); the switch is audited as ``model.switch``. The
page also lists the merges of KOLs that can be undone, each linking to the main server's KOL page
that undoes it.
"""
from flask import Blueprint, jsonify, redirect, request, url_for

from shared.core.errors import UserError
from shared.recognition.report import version_history
from shared.web.factory import models, pool
from shared.web.replies import reply, wants_json

bp = Blueprint("models", __name__)


@bp.get("/models")
def index():
    merged = pool().merged_into()
    # the pool's own names: a merged KOL keeps the name it had in the versions that knew it
    versions = version_history(models(), pool().names(), merged)
    payload = {"current": models().current_version(), "versions": versions}
    return reply("process/models.html", payload, switched=request.args.get("switched"), merges=pool().merges())


@bp.post("/models/switch")
def switch():
    version = (request.form.get("version") or "").strip()
    if not version:
        raise UserError("Choose the model version to use (the field 'version' is missing).", 400)
    previous = models().current_version()
    models().switch(version)  # 404 for a malformed or unknown version
    if wants_json():
        return jsonify({"current": version, "previous": previous})
    return redirect(url_for("models.index", switched=version), 303)
