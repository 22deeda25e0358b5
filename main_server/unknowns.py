"""The inbox of recurring unknown people (issue 24, item 5): its pages and JSON.

``GET /unknowns`` (the groups, newest active first, a few faces each, their appearances and where),
``GET /unknowns/<n>`` (one group: all its faces), ``GET /unknowns/<n>/faces/<face id>`` (a face's crop),
and the admins' changes, each a ``POST`` answering ``303`` to the page that shows the result (JSON: the
group changed): ``/unknowns/<n>/merge`` (``into`` = the group that keeps its number),
``/unknowns/<n>/split`` (``face`` = the faces to move into a new group, repeated), ``/unknowns/<n>/dismiss``,
``/unknowns/<n>/apart`` (``other`` = a group proposed as maybe the same person that is not) and
``/unknowns/<n>/name`` (``name``: a training job is made of the group's faces, aligned and cleaned,
and the answer goes to the process server's cleaning page for it; the group leaves the inbox when that
job's import lands). Members may look (:mod:`shared.web.access`). The rules are in
:mod:`shared.library.unknowns`; the job is made by :func:`shared.training.wizard.job_from_faces`.
"""
from functools import partial

from flask import Blueprint, current_app, flash, redirect, request, send_from_directory, url_for

from shared.core.names import display_name
from shared.training import wizard
from shared.training.jobs import JobStore
from shared.web.factory import data_path, inbox
from shared.web.replies import reply, wants_json

bp = Blueprint("unknowns", __name__)

#: Faces shown per group in the inbox's list (the group's page shows all of them).
SHOWN_FACES = 6


def _jobs():
    return JobStore(data_path("jobs"), current_app.config["JOB_INCOMPLETE_MAX_AGE_S"])


@bp.app_context_processor
def _unknown_count():
    """Templates: ``unknown_count()``, the groups waiting in the inbox (the menu shows it)."""
    return {"unknown_count": lambda: inbox().count()}


def _settled():
    """The inbox after groups whose naming job's import has landed are marked named."""
    box = inbox()
    box.settle_naming(partial(wizard.import_landed, _jobs()))
    return box


def _with_urls(group, limit=None):
    """A group's view with each face's crop address (``chip_url``, ``None`` for a face without one)."""
    faces = group["faces"][:limit] if limit else group["faces"]
    return dict(group, faces=[dict(f, chip_url=url_for("unknowns.chip", number=group["number"], face_id=f["id"])
                                   if f["chip"] else None) for f in faces])


@bp.get("/unknowns")
def index():
    box = _settled()
    groups = [_with_urls(g, SHOWN_FACES) for g in box.groups()]
    return reply("main/unknowns.html", {"count": len(groups), "groups": groups, "proposals": box.proposals()},
                 shown=SHOWN_FACES)


@bp.get("/unknowns/<number>")
def group(number):
    box = _settled()
    found = box.group(number)
    others = [g["number"] for g in box.groups() if g["number"] != found["number"]]
    proposed = [p for p in box.proposals() if found["number"] in (p["a"], p["b"])]
    return reply("main/unknowns_group.html", _with_urls(found), others=others, proposed=proposed)


@bp.get("/unknowns/<number>/faces/<face_id>")
def chip(number, face_id):
    path = inbox().chip_path(number, face_id)  # 404 for a face not in that group
    return send_from_directory(path.parent, path.name, max_age=3600)


def _done(group, sentence, endpoint="unknowns.group", **values):
    """The answer to a change: the group's JSON, or the sentence flashed and 303 to ``endpoint``."""
    if wants_json():
        return reply("main/unknowns_group.html", group)
    flash(sentence)
    return redirect(url_for(endpoint, **values), 303)


@bp.post("/unknowns/<number>/merge")
def merge(number):
    into = request.form.get("into", "")
    merged = inbox().merge(number, into)
    return _done(merged, f"Merged into {merged['label']}: {merged['appearances']} faces.",
                 number=merged["number"])


@bp.post("/unknowns/<number>/split")
def split(number):
    new = inbox().split(number, request.form.getlist("face"))
    return _done(new, f"{new['appearances']} faces split out into {new['label']}.", number=new["number"])


@bp.post("/unknowns/<number>/dismiss")
def dismiss(number):
    done = inbox().dismiss(number)
    return _done(done, f"{done['label']} dismissed: it leaves the inbox, and new faces of this person join it "
                       "unseen.", "unknowns.index")


@bp.post("/unknowns/<number>/apart")
def apart(number):
    box = inbox()
    box.apart(number, request.form.get("other", ""))
    return _done(box.group(number), "Noted: two different people.", number=number)


@bp.post("/unknowns/<number>/name")
def name(number):
    """Make the group's faces a training job of the KOL ``name`` and go to its cleaning page."""
    box = inbox()
    label, kol = box.group(number)["label"], display_name(request.form.get("name", ""))
    faces = [(chip, embedding, _source_label(source), _face_size(source))
             for _fid, embedding, chip, source in box.name(number) if chip is not None]
    job = wizard.job_from_faces(_jobs(), kol, faces, f"{label} (unknown people)")
    done = box.start_naming(number, kol, job)
    clean_url = f"{current_app.config['PROCESS_URL']}/clean?job={job}"
    if wants_json():
        return reply("main/unknowns_group.html", dict(done, clean=clean_url), status=201)
    return redirect(clean_url, 303)


def _source_label(source):
    """Where a face was seen, in words: ``"clip.mp4 at 12.5 s"`` or ``"photos.zip, photo 3"``."""
    where = source.get("name") or source["media"]
    if "t" in source:
        return f"{where} at {float(source['t']):.1f} s"
    if "photo" in source:
        return f"{where}, photo {source['photo']}"
    return str(where)


def _face_size(source):
    """The shorter side of the face's box in its media (pixels), ``None`` when the source has no box."""
    box = source.get("box")
    if not box or len(box) != 4:
        return None
    top, right, bottom, left = box
    return max(1, int(min(bottom - top, right - left)))
