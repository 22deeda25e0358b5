"""The roster: a page listing every KOL of the training pool and one page per KOL.

``GET /kols`` (search with ``?q=``), ``GET /kols/<slug>``; admin actions (POST):
``/kols/<slug>/rename`` (``name``), ``/kols/<slug>/merge`` (``into`` = the slug of the
KOL that keeps the photos; ``GET`` with ``?into=`` is the page that shows both before merging),
``/kols/<slug>/unmerge`` (``merge`` = the id of a merge into this KOL: undo it),
``/kols/<slug>/delete``, ``/kols/<slug>/photos`` (``file``
repeated: photos or zips of photos to add), ``/kols/<slug>/photos/<chip>/remove``.
Browsers get a confirmation message (``flash``) after each change.
The rules are in :mod:`shared.training.pool` and :mod:`shared.training.roster`; every page answers JSON
with ``Accept: application/json``. Renames need no retraining (predictions show the
pool's names); the other changes show a "Retrain now" button.
"""
import shutil
import uuid

from flask import Blueprint, current_app, flash, redirect, request, url_for

from shared.core.errors import UserError
from shared.faces import archive, images, staging
from shared.library.feed import forget_kol
from shared.training import roster
from shared.training.jobs import JobStore
from shared.training.pool import SLUG_RE, name_key
from shared.web.factory import data_path, inbox, library, models, pool
from shared.web.replies import reply, wants_json

bp = Blueprint("kols", __name__)


def _slug(slug):
    if not SLUG_RE.match(slug) or slug not in pool().kols():
        raise UserError("That KOL is not in the training pool.", 404)
    return slug


def _needs_training():
    return pool().needs_training(models().meta())


@bp.app_context_processor
def _retrain():
    """Templates: ``retrain_url`` (the process server's training route) and ``pool_changed()``."""
    return {"retrain_url": current_app.config["PROCESS_URL"] + "/train_model", "pool_changed": _needs_training}


@bp.get("/kols")
def index():
    q = (request.args.get("q") or "").strip()[:80]
    kols = pool().kols()
    rows = [{"slug": slug, "name": info["name"], "count": len(info["chips"]),
             "thumb": info["chips"][0] if info["chips"] else None,
             "added": info.get("added") or info.get("updated")} for slug, info in kols.items()]
    if q:
        key = name_key(q) if q.strip(" _-.") else ""
        rows = [r for r in rows if key in name_key(r["name"])]
    rows.sort(key=lambda r: name_key(r["name"]))
    payload = {"kols": [{k: r[k] for k in ("slug", "name", "count", "added")} for r in rows],
               "needs_training": _needs_training()}
    return reply("main/kols.html", payload, rows=rows, q=q, total=len(kols))


@bp.get("/kols/<slug>")
def kol(slug):
    slug = _slug(slug)
    info = pool().kols()[slug]
    meta = models().meta() or {}
    others = sorted(((s, i["name"]) for s, i in pool().kols().items() if s != slug),
                    key=lambda x: name_key(x[1]))
    payload = {"slug": slug, "name": info["name"], "chips": info["chips"], "count": len(info["chips"]),
               "added": info.get("added") or info.get("updated"), "updated": info.get("updated"),
               "in_model": slug in (meta.get("names") or {}), "needs_training": _needs_training(),
               "merges": [{k: m[k] for k in ("id", "at", "source", "name", "chips")} for m in pool().merges(slug)]}
    return reply("main/kol.html", payload, others=others, added_note=request.args.get("added"),
                 skipped=request.args.getlist("skipped"), extensions=", ".join(images.IMAGE_EXTENSIONS))


def _done(slug, **args):
    """After a change: JSON clients get the KOL (or the list), browsers go to the page."""
    if slug and slug in pool().kols():
        if wants_json():
            return kol(slug)
        return redirect(url_for("kols.kol", slug=slug, **args), 303)
    if wants_json():
        return index()
    return redirect(url_for("kols.index", **args), 303)


def _said(message):
    """A confirmation for browsers (scripts read the JSON answer instead)."""
    if not wants_json():
        flash(message)


@bp.post("/kols/<slug>/rename")
def rename(slug):
    old = pool().kols()[_slug(slug)]["name"]
    new = pool().rename(slug, request.form.get("name", ""))
    _said(f"Renamed {old} to {new}: the new name shows everywhere at once." if new != old
          else f"The name stays {new}.")
    return _done(slug)


def _merge_pair(slug, into):
    """The two KOLs of a merge, checked: ``(slug, into)``; 400 with a sentence when ``into`` is not chosen."""
    slug = _slug(slug)
    if not into:
        raise UserError(f"Choose the KOL that is the same person as {pool().kols()[slug]['name']}: "
                        "nothing was merged.", 400)
    if into == slug:
        raise UserError("Choose two different KOLs to merge: nothing was merged.", 400)
    return slug, _slug(into)


@bp.get("/kols/<slug>/merge")
def merge_confirm(slug):
    """Before a merge: both KOLs with their photos, and the button that merges them."""
    slug, into = _merge_pair(slug, request.args.get("into", ""))
    kols = pool().kols()
    both = [{"slug": s, "name": kols[s]["name"], "count": len(kols[s]["chips"]), "chips": kols[s]["chips"][:8]}
            for s in (slug, into)]
    return reply("main/kol_merge.html", {"source": both[0], "target": both[1]})


@bp.post("/kols/<slug>/merge")
def merge(slug):
    slug, into = _merge_pair(slug, request.form.get("into", ""))
    source_name = pool().kols()[slug]["name"]
    name, moved = pool().merge(slug, into)
    _said(f"{source_name} was merged into {name}: {moved} photo{'' if moved == 1 else 's'} moved. "
          "If they are two different people, undo the merge below.")
    return _done(into)


@bp.post("/kols/<slug>/unmerge")
def unmerge(slug):
    """Undo a merge into ``slug`` (field ``merge``: its id, from the KOL page or its JSON)."""
    slug = _slug(slug)
    mid = request.form.get("merge", "")
    if mid not in {m["id"] for m in pool().merges(slug)}:
        raise UserError("There is no such merge into this KOL to undo.", 404)
    record = roster.undo_merge(pool(), mid, models=models())
    n = len(record["moved_back"])
    _said(f"The merge was undone: {record['name']} is back with {n} photo{'' if n == 1 else 's'}, "
          f"which no longer count for {pool().kols()[slug]['name']}. Retrain so that {record['name']} "
          "is recognised again.")
    return _done(record["source"])


@bp.post("/kols/<slug>/delete")
def delete(slug):
    name = roster.delete_kol(pool(), _slug(slug), models=models(), jobs=JobStore(data_path("jobs")))
    forget_kol(library(), inbox(), slug)  # their library faces are not named any more; they join the inbox
    return _done(None, deleted=name)


@bp.post("/kols/<slug>/photos/<cid>/remove")
def remove_photo(slug, cid):
    left = roster.remove_photo(pool(), _slug(slug), cid, models=models())
    _said(f"The photo was removed from {pool().kols()[slug]['name']}: {left} photo{'' if left == 1 else 's'} "
          "left, and it no longer counts in the current model.")
    return _done(slug)


def _staged(uploads, work):
    """Save the uploaded photos and zips of photos in ``work``: ``(files, skipped)`` for
    :func:`shared.training.roster.add_photos` (a zip's photos named ``zip name/path inside``) and the files
    its zips left out (``[{"name", "reason"}]``). A file that is not a photo, or a zip that cannot be
    used, stops it all with its :class:`UserError` (415 for a file that is not a photo)."""
    files, skipped = [], []
    for part in staging.stage(uploads, work):
        if part.problem == staging.BAD_ZIP:
            raise part.error
        if part.problem == staging.NOT_A_PHOTO:
            raise UserError(f"'{part.name}' is not a photo this tool reads: use "
                            f"{', '.join(images.IMAGE_EXTENSIONS)} or a zip of them."
                            + archive.other_kind_hint([part.name], "image"), 415)
        if part.problem == staging.NOT_USED:
            skipped.append({"name": part.inner, "reason": part.reason})
        else:  # a photo, an empty one too (the roster then says why it gave no face)
            name = part.name if part.inner is None else f"{part.name}/{part.inner}"
            files.append({"path": str(part.path), "name": name})
    return files, skipped


@bp.post("/kols/<slug>/photos")
def add_photos(slug):
    slug = _slug(slug)
    uploads = [u for u in request.files.getlist("file") if u and u.filename]
    if not uploads:
        raise UserError("Choose photos (or a zip of photos) of this KOL to add (form field 'file').", 400)
    work = data_path("tmp", f"add-{uuid.uuid4().hex}")
    work.mkdir(parents=True)
    try:
        files, skipped = _staged(uploads, work)
        result = roster.add_photos(pool(), slug, files, work / "staged")
        result["skipped"] = skipped + result["skipped"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if wants_json():
        return reply("main/kol.html", result)
    return redirect(url_for("kols.kol", slug=slug, added=result["added"],
                            skipped=[f"{s['name']}: {s['reason']}" for s in result["skipped"][:20]]), 303)
