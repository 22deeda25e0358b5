"""The review queue's pages: faces answered below "sure", and the three answers a person gives them.

``GET /review`` (the faces waiting, least sure first), ``GET /review/<id>`` (one face beside its
candidate KOLs' photos), ``GET /review/<id>/face.png``, ``POST /review/<id>/answer`` (``answer`` =
``is`` | ``not`` | ``nobody``, ``kol`` = a pool slug for the first two, ``add=1`` to put the face into
that KOL's photos: admins only), ``POST /review/<id>/add`` (admins: a face a member answered "this is X",
into X's photos). Members may use them when the ``REVIEW_MEMBERS`` setting is on
(:mod:`shared.web.access`); only admins change the pool. Every answer is recorded in the audit trail.
The rules are in :mod:`shared.recognition.review`; every page answers JSON with ``Accept: application/json``.
"""
import shutil
import uuid

from flask import Blueprint, flash, redirect, request, send_from_directory, url_for

from shared.core.errors import UserError
from shared.recognition import predict, review
from shared.training import roster
from shared.web.access import is_admin, principal, record
from shared.web.factory import data_path, pool, review_queue
from shared.web.replies import reply, wants_json

bp = Blueprint("review", __name__)


@bp.app_context_processor
def _review_count():
    """Templates: ``review_count()``, the faces waiting (the menu shows it)."""
    return {"review_count": lambda: review_queue().count()}


def _public(item, kols, photos=True):
    """An item as pages and scripts see it: the record plus its face's address, whether it waits, and each
    candidate's pool photo nearest the face (``photo``: ``None`` for a KOL no longer in the pool, and in the
    list, ``photos=False``, where reading every candidate's embeddings for every face would be slow)."""
    candidates, embedding = [], review_queue().embedding(item["id"]) if photos else None
    for c in item["candidates"]:
        photo = None
        if photos and c["slug"] in kols:
            cid = predict.representative_chip(pool(), c["slug"], embedding)
            photo = url_for("predict.pool_photo", slug=c["slug"], cid=cid) if cid else None
        candidates.append(dict(c, name=kols[c["slug"]]["name"] if c["slug"] in kols else c["name"],
                               in_pool=c["slug"] in kols, photo=photo))
    return dict(item, candidates=candidates, waiting=item.get("answer") is None,
                face_url=url_for("review.face", rid=item["id"]))


#: Faces listed on the queue's page at most (the least sure first); ``count`` is all of them.
LISTED = 200


@bp.get("/review")
def index():
    kols, waiting = pool().kols(), review_queue().pending()
    payload = {"count": len(waiting), "items": [_public(i, kols, photos=False) for i in waiting[:LISTED]]}
    if is_admin():  # the faces members said are a KOL, for an admin to add to that KOL's photos
        payload["to_add"] = [_public(i, kols, photos=False) for i in review_queue().to_add()[:LISTED]
                             if i["answer"]["kol"] in kols]
    return reply("main/review.html", payload, names={s: i["name"] for s, i in kols.items()})


@bp.get("/review/<rid>")
def item(rid):
    kols = pool().kols()
    found, _ = review_queue().find(rid)
    others = sorted(((s, i["name"]) for s, i in kols.items()), key=lambda x: x[1].lower())
    names = dict(others)
    answered = review.describe(found["answer"], names) if found.get("answer") else None
    return reply("main/review_item.html", _public(found, kols), others=others, answered=answered)


@bp.get("/review/<rid>/face.png")
def face(rid):
    _, folder = review_queue().find(rid)  # 404 for a forged id
    return send_from_directory(folder, "face.png", max_age=3600)


def _adder(slug):
    """``add(chip, embedding) -> chip id`` for :meth:`shared.recognition.review.Queue.answer`: the face into the
    KOL's pool photos (:func:`shared.training.roster.add_face`, in a scratch folder of its own)."""
    def add(chip, embedding):
        work = data_path("tmp", f"review-{uuid.uuid4().hex}")
        try:
            return roster.add_face(pool(), slug, chip, embedding, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return add


@bp.post("/review/<rid>/answer")
def answer(rid):
    kind, kol = request.form.get("answer", ""), request.form.get("kol") or None
    add = request.form.get("add", "") in ("1", "true", "on")
    if add and not is_admin():
        raise UserError("Only an admin may add a face to a KOL's photos: answer without 'add'; nothing was changed.",
                        403)
    who = principal()
    done = review_queue().answer(rid, kind, kol, by=who.actor if who else "anonymous", kols=lambda: pool().kols(),
                           add=_adder(kol) if add else None)
    result = done["answer"]
    record("review.add_photo" if result["added"] else "review.answer",
           {"item": rid, "answer": kind, "kol": kol, "chip": result["added"], "negatives": result["negatives"]})
    if wants_json():
        return reply("main/review_item.html", _public(done, pool().kols()))
    flash(f"Answered: {review.describe(result, pool().names())}"
          + (" — added to the KOL's photos (retrain to use it)." if result["added"] else "."))
    waiting = review_queue().pending()
    return redirect(url_for("review.item", rid=waiting[0]["id"]) if waiting else url_for("review.index"), 303)


@bp.post("/review/<rid>/add")
def add(rid):
    """An admin adds a face answered "this is X" (by a member, without adding it) to X's photos."""
    found, _ = review_queue().find(rid)
    slug = (found.get("answer") or {}).get("kol")
    done = review_queue().add_answered(rid, lambda: pool().kols(), _adder(slug))
    record("review.add_photo", {"item": rid, "kol": slug, "chip": done["answer"]["added"]})
    if wants_json():
        return reply("main/review_item.html", _public(done, pool().kols()))
    flash(f"Added to the photos of {pool().names().get(slug, slug)} (retrain to use it).")
    return redirect(url_for("review.index"), 303)
