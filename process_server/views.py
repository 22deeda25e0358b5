"""Process server views R1-R7: the training wizard for one job (``job=<id>``).

align (background, every core) -> clean (automatic + overrides) -> import_clean
(choose KOLs) -> import_result (into the pool; pool summary; delete a KOL) ->
train_model (background). ``/processingProgress`` reports the running step.
Every page answers JSON with ``Accept: application/json`` (see CONTRACT.md).
"""
import re

from flask import Blueprint, current_app, redirect, request, send_from_directory, url_for

from shared import classifier, cleaning, roster, sampling
from shared.errors import UserError
from shared.jobs import STEPS, JobStore
from shared.pool import SLUG_RE, kol_slug
from shared.web import data_path, models, pool, reply, wants_json

bp = Blueprint("wizard", __name__)

CROP_RE = re.compile(r"^[0-9a-f]{16}$")
KOL_INDEX_RE = re.compile(r"^[0-9]{1,5}$")
#: Where each step's result page is, for "next" links and the progress page.
RESULT_PAGE = {"align": "wizard.align", "clean": "wizard.clean", "import": "wizard.import_result",
               "train": "wizard.train_model"}
STEP_TITLES = {"align": "Align faces", "clean": "Clean faces", "import": "Import into the pool",
               "train": "Train the model"}


def jobs():
    return JobStore(data_path("jobs"))


def _job_id(required=True):
    job = request.values.get("job", "")
    if not job and not required:
        return None
    if not job:
        raise UserError("Which training job? The address needs ?job=<id>; start one on the training page.", 404)
    jobs().folder(job)  # 404 for malformed or unknown ids
    return job


def _busy(state):
    """Name of a step of this job that is running now, or ``None``."""
    return next((name for name, rec in state["steps"].items() if rec.get("state") in ("running", "queued")), None)


def _require_idle(state):
    busy = _busy(state)
    if busy:
        raise UserError(f"The {busy} step of this job is still running; wait for it to finish.", 409)


def _require_done(state, step, sentence):
    if (state["steps"].get(step) or {}).get("state") != "done":
        raise UserError(sentence, 409)


def _next_step(state):
    for step in STEPS:
        if (state["steps"].get(step) or {}).get("state") != "done":
            return step
    return None


def _page_context(job, state):
    return {"wizard_steps": STEPS, "titles": STEP_TITLES, "job_state": state, "job_id": job,
            "result_page": RESULT_PAGE}


# -- R1: navigation -----------------------------------------------------------
@bp.get("/")
def index():
    job = _job_id(required=False)
    if job is None:
        listing = [{"job": s["job"], "kind": s["kind"], "created": s["created"], "upload": s.get("upload"),
                    "kols": len(s["kols"]), "next": _next_step(s)} for s in jobs().list()]
        return reply("process/index.html", {"pool": pool().stats(), "jobs": listing})
    state = jobs().state(job)
    payload = {
        "job": job, "kind": state["kind"], "created": state["created"], "upload": state.get("upload"),
        "kols": [{"name": k["name"], "files": len(k["files"])} for k in state["kols"]],
        "skipped": state["skipped"], "stage": state.get("stage"), "next": _next_step(state),
        "steps": {name: {key: rec.get(key) for key in ("state", "done", "total", "error", "summary")}
                  for name, rec in state["steps"].items()},
    }
    return reply("process/job.html", payload, **_page_context(job, state))


# -- R2: progress -----------------------------------------------------------------
@bp.route("/processingProgress", methods=["GET", "POST"])
def processing_progress():
    job = _job_id()
    progress = jobs().progress(job)
    state = jobs().state(job)
    next_url = url_for(RESULT_PAGE[progress["stage"]], job=job)
    unit = ("training stages" if progress["stage"] == "train" else
            "sampled video frames" if state["kind"] == "video" else "photos")
    return reply("process/progress.html", progress, next_url=next_url, unit=unit, **_page_context(job, state))


def _started(job):
    """The answer to a POST that started a background step: 202 JSON or 303 to the progress page."""
    if wants_json():
        return reply("process/progress.html", jobs().progress(job), status=202)
    return redirect(url_for("wizard.processing_progress", job=job), 303)


# -- R3: align ----------------------------------------------------------------------
def _align_work(store, job, state):
    folder = store.folder(job)

    def work(progress):
        result = sampling.align_job(state["kols"], folder, state["kind"], progress=progress)
        store.write(job, "align", result)
        # a new alignment makes an earlier cleaning stale: it has to be done again
        (folder / "clean.json").unlink(missing_ok=True)
        store.update(job, lambda s: s["steps"].pop("clean", None))
        return _align_summary(result)
    return work


def _align_summary(result):
    """Per KOL: sources, crops, photos with no face, photos with several faces."""
    out = {}
    for kol in result["kols"]:
        srcs = kol["sources"]
        out[kol["name"]] = {
            "sources": len(srcs),
            "crops": sum(len(s["crops"]) for s in srcs),
            "no_face": [s["name"] for s in srcs if not s["crops"] and not s.get("error")],
            "unreadable": [{"name": s["name"], "error": s["error"]} for s in srcs if s.get("error")],
            "several_faces": [s["name"] for s in srcs if len(s["crops"]) > 1 and result["kind"] == "image"],
        }
    return out


@bp.route("/align", methods=["GET", "POST"])
def align():
    job = _job_id()
    store = jobs()
    state = store.state(job)
    if request.method == "POST":
        store.start(job, "align", _align_work(store, job, state))
        return _started(job)
    record = state["steps"].get("align") or {}
    if record.get("state") in ("running", "queued") and not wants_json():
        return redirect(url_for("wizard.processing_progress", job=job), 303)
    result = store.read(job, "align") if record.get("state") == "done" else None
    payload = {"job": job, "state": record.get("state", "not started"), "error": record.get("error"),
               "kols": _align_summary(result) if result else None}
    return reply("process/align.html", payload, result=result, **_page_context(job, state))


@bp.get("/chip")
def chip():
    """A crop of a job: ``?job=&kol=<index>&crop=<id>`` (PNG)."""
    job = _job_id()
    kol, crop = request.args.get("kol", ""), request.args.get("crop", "")
    if not KOL_INDEX_RE.match(kol) or not CROP_RE.match(crop):
        raise UserError("No such crop.", 404)
    folder = jobs().path(job, "chips", kol)
    if not (folder / f"{crop}.png").is_file():
        raise UserError("No such crop.", 404)
    return send_from_directory(folder, f"{crop}.png", max_age=3600)


@bp.get("/pool_chip")
def pool_chip():
    """A chip of the training pool: ``?kol=<slug>&crop=<id>`` (PNG)."""
    path = pool().chip_path(request.args.get("kol", ""), request.args.get("crop", ""))
    return send_from_directory(path.parent, path.name, max_age=3600)


# -- R4: clean ------------------------------------------------------------------------
def _ids(field):
    values = [v for v in request.form.getlist(field) if v]
    bad = [v for v in values if not CROP_RE.match(v)]
    if bad:
        raise UserError(f"'{bad[0][:40]}' is not a crop id (16 hexadecimal digits).", 400)
    return values


def _crop_index(align_result):
    """``{crop id: kol index}`` for the crops of an align result."""
    return {rec["crop"]: k for k, kol in enumerate(align_result["kols"])
            for src in kol["sources"] for rec in src["crops"]}


@bp.route("/clean", methods=["GET", "POST"])
def clean():
    job = _job_id()
    store = jobs()
    state = store.state(job)
    if request.method == "POST":
        _require_idle(state)
        _require_done(state, "align", "Align the faces of this job first.")
        align_result = store.read(job, "align")
        previous = store.read(job, "clean") or {}
        remove, keep = set(previous.get("remove", [])), set(previous.get("keep", []))
        if request.form.get("reset"):
            remove, keep = set(), set()
        new_remove, new_keep = set(_ids("remove")), set(_ids("keep"))
        known = _crop_index(align_result)
        unknown = [c for c in new_remove | new_keep if c not in known]
        if unknown:
            raise UserError(f"Crop {unknown[0]} is not part of this job.", 400)
        remove = (remove - new_keep) | new_remove
        keep = (keep - new_remove) | new_keep
        with store.sync_step(job, "clean"):  # a crash in here shows as "interrupted" on the job page
            result = cleaning.clean(align_result, remove=remove, keep=keep)
            store.write(job, "clean", result)
            view = cleaning.contract_view(result)
            store.finish_sync(job, "clean", summary={k: {"kept": v["kept"], "removed": len(v["removed"])}
                                                     for k, v in view["kols"].items()},
                              total=sum(len(k["kept"]) + len(k["removed"]) for k in result["kols"]))
        if wants_json():
            return reply("process/clean.html", view)
        return redirect(url_for("wizard.clean", job=job), 303)
    result = store.read(job, "clean")
    if result is None:
        if wants_json():
            raise UserError("This job has not been cleaned yet: POST /clean first.", 409)
        align_done = (state["steps"].get("align") or {}).get("state") == "done"
        return reply("process/clean.html", {"kols": None}, align_done=align_done, result=None,
                     **_page_context(job, state))
    return reply("process/clean.html", cleaning.contract_view(result), result=result, few=cleaning.FEW_CROPS,
                 **_page_context(job, state))


# -- R5: choose what to import ------------------------------------------------------------
def _pool_counts():
    return {info["name"]: len(info["chips"]) for info in pool().kols().values()}


@bp.route("/import_clean", methods=["GET", "POST"])
def import_clean():
    job = _job_id()
    store = jobs()
    state = store.state(job)
    _require_done(state, "clean", "Clean the faces of this job first (the clean step).")
    result = store.read(job, "clean")
    kols = pool().kols()
    # issue 12: same name up to case/spaces/accents, or faces that match a pool KOL's (shared.roster)
    warnings = roster.import_warnings(pool(), result["kols"], store.path(job, "chips"))
    payload = {"kols": {k["name"]: {"crops": len(k["kept"]), **warnings.get(i, {})}
                        for i, k in enumerate(result["kols"])}}
    rows = [{"name": k["name"], "crops": len(k["kept"]), "few": len(k["kept"]) < cleaning.FEW_CROPS,
             "thumb": (k["kept"][0]["crop"] if k["kept"] else None), "index": i,
             "chips": [c["crop"] for c in k["kept"][:6]], **warnings.get(i, {})} for i, k in enumerate(result["kols"])]
    for row in rows:
        same = row.get("same_name")
        row["in_pool"] = len(kols[same]["chips"]) if same else None
        row["pool_name"] = kols[same]["name"] if same else None
    return reply("process/import_clean.html", payload, rows=rows, few=cleaning.FEW_CROPS,
                 **_page_context(job, state))


# -- R6: import + pool summary ---------------------------------------------------------------
def _do_import(job, store, state):
    _require_idle(state)
    _require_done(state, "clean", "Clean the faces of this job first (the clean step).")
    result = store.read(job, "clean")
    by_name = {k["name"]: (i, k) for i, k in enumerate(result["kols"])}
    chosen = list(dict.fromkeys(v for v in request.form.getlist("kol") if v)) or list(by_name)
    missing = [name for name in chosen if name not in by_name]
    if missing:
        raise UserError(f"'{missing[0][:80]}' is not a KOL of this job.", 400)
    replace_all = request.form.get("mode") == "replace"
    replace = set(request.form.getlist("replace"))
    replace |= {k["name"] for i, k in enumerate(result["kols"]) if request.form.get(f"mode-{i}") == "replace"}
    imported, empty, purged = [], [], set(state.get("purged", []))
    folder = store.folder(job)
    batch = []
    for name in chosen:
        i, kol = by_name[name]
        if not kol["kept"] or name in purged:
            empty.append(name)
            continue
        into = request.form.get(f"into-{i}", "")  # issue 12: "same person as" a pool KOL -> add to them
        target = pool().kols()[into]["name"] if into in pool().kols() else name
        pngs = [folder / "chips" / str(i) / f"{item['crop']}.png" for item in kol["kept"]]
        batch.append((target, pngs, replace_all or name in replace))
        imported.append(name)
    with store.sync_step(job, "import"):  # a crash in here shows as "interrupted" on the job page
        pool().add_many(batch)  # all the chosen KOLs or none of them
        store.finish_sync(job, "import", summary={"imported": imported, "empty": empty,
                                                  "replaced": [n for n in imported if replace_all or n in replace]},
                          total=len(imported))
    return imported, empty


def _delete_from_pool(slug):
    if not SLUG_RE.match(slug):
        raise UserError("That KOL is not in the training pool.", 404)
    name = pool().remove(slug)
    models().forget(slug)  # out of every stored model version too: the next prediction cannot name them
    # The job folders hold copies of the same faces: delete them too (a deletion request covers them).
    jobs().purge_kol(lambda n: kol_slug(n) == slug)
    return name


@bp.route("/import_result", methods=["GET", "POST"])
def import_result():
    job = _job_id(required=False)
    store = jobs()
    state = store.state(job) if job else None
    if request.method == "POST":
        delete = request.form.get("delete", "")
        if delete:
            name = _delete_from_pool(delete)
            if wants_json():
                return reply("process/import_result.html", {"deleted": name, "pool": _pool_counts()})
            return redirect(url_for("wizard.import_result", job=job, deleted=name) if job
                            else url_for("wizard.import_result", deleted=name), 303)
        if not job:
            raise UserError("Which training job? Import needs job=<id>.", 404)
        imported, _ = _do_import(job, store, state)
        if wants_json():
            return reply("process/import_result.html", {"imported": imported, "pool": _pool_counts()})
        return redirect(url_for("wizard.import_result", job=job), 303)
    record = (state["steps"].get("import") or {}) if state else {}
    summary = record.get("summary") or {}
    payload = {"imported": summary.get("imported", []), "pool": _pool_counts()}
    ctx = _page_context(job, state)
    return reply("process/import_result.html", payload, summary=pool().summary(), empty=summary.get("empty", []),
                 deleted=request.args.get("deleted"), **ctx)


# -- R7: train ---------------------------------------------------------------------------------
def _train_work(pool_obj, store_obj, keep):
    def work(progress):
        return classifier.retrain(pool_obj, store_obj, progress, keep=keep)
    return work


@bp.route("/train_model", methods=["GET", "POST"])
def train_model():
    job = _job_id()
    store = jobs()
    state = store.state(job)
    if request.method == "POST":
        if not pool().stats()["chips"]:
            raise UserError("The training pool is empty: import some KOLs first.", 409)
        store.start(job, "train", _train_work(pool(), models(), current_app.config["MODEL_VERSIONS_KEEP"] or 10 ** 6))
        return _started(job)
    record = state["steps"].get("train") or {}
    if record.get("state") in ("running", "queued") and not wants_json():
        return redirect(url_for("wizard.processing_progress", job=job), 303)
    if record.get("state") != "done":
        if wants_json():
            why = record.get("error") or ("Training is still running." if record.get("state") == "running"
                                          else "No model was trained in this job yet: POST /train_model first.")
            raise UserError(why, 409)
        return reply("process/train_model.html", {"model_version": None}, record=record, pool_stats=pool().stats(),
                     current=models().meta(), **_page_context(job, state))
    result = record["summary"]
    names = (models().meta(result["model_version"]) or {}).get("names", {})
    return reply("process/train_model.html", result, names=names, record=record, pool_stats=pool().stats(),
                 current=models().meta(), **_page_context(job, state))


@bp.app_context_processor
def _process_helpers():
    return {"process_url": current_app.config["PROCESS_URL"]}
