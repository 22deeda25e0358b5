"""Process server views R1-R7: the training wizard for one job (``job=<id>``).

align (queued, split over every worker) -> clean (automatic + overrides) -> import_clean
(choose KOLs) -> import_result (into the pool; pool summary; delete a KOL) ->
train_model (queued). ``/processingProgress`` reports the current step; ``/delete_kol`` deletes
a KOL of the pool for good.
The views parse, call :mod:`shared.training.wizard` (the rules) and :mod:`shared.training.jobqueue`
(the work: ``enqueue`` starts it, ``status`` reads it), and render. Every page answers JSON with
``Accept: application/json`` (see docs/api.md).
"""
import re

from flask import Blueprint, current_app, redirect, request, send_from_directory, url_for

from process_server.worker import SERVED
from shared.core.errors import UserError
from shared.core.ids import CROP_ID_RE
from shared.library.feed import forget_kol
from shared.training import cleaning, roster, wizard
from shared.training.jobqueue import connection, enqueue, status
from shared.training.jobs import ACTIVE, STEPS, JobStore
from shared.web.factory import data_path, inbox, library, models, pool
from shared.web.replies import reply, wants_json

bp = Blueprint("wizard", __name__)

KOL_INDEX_RE = re.compile(r"^[0-9]{1,5}$")
#: Where each step's result page is, for "next" links and the progress page.
RESULT_PAGE = {"align": "wizard.align", "clean": "wizard.clean", "import": "wizard.import_result",
               "train": "wizard.train_model"}
STEP_TITLES = {"align": "Align faces", "clean": "Clean faces", "import": "Import into the pool",
               "train": "Train the model"}


def jobs():
    """The training jobs; a new one sweeps away cut-off uploads older than ``JOB_INCOMPLETE_MAX_AGE_S``."""
    return JobStore(data_path("jobs"), current_app.config["JOB_INCOMPLETE_MAX_AGE_S"])


def redis():
    return connection.connect(current_app.config["REDIS_URL"])


def _job_id(required=True):
    job = request.values.get("job", "")
    if not job and not required:
        return None
    if not job:
        raise UserError("Which training job? The address needs ?job=<id>; start one on the training page.", 404)
    jobs().folder(job)  # 404 for malformed or unknown ids
    return job


def _state(job):
    """The job's record with its active steps as the queue says now."""
    return status.live_state(redis(), jobs(), jobs().state(job))


def _page_context(job, state):
    return {"wizard_steps": wizard.steps_of(state) if state else STEPS, "titles": STEP_TITLES,
            "job_state": state, "job_id": job, "result_page": RESULT_PAGE}


def _working(state):
    """``{"step", "state", "done", "total"}`` of the job's queued or running step, or ``None``."""
    for name, rec in state["steps"].items():
        if rec.get("state") in ACTIVE:
            return {"step": name, "state": rec["state"], "done": int(rec.get("done") or 0),
                    "total": int(rec.get("total") or 0)}
    return None


def _listing(conn):
    """``(the jobs list of the index page, their records as the queue says now)``."""
    store = jobs()
    out, states = [], []
    for s in store.list():
        s = status.live_state(conn, store, s)
        states.append(s)
        out.append({"job": s["job"], "kind": s["kind"], "created": s["created"], "upload": s.get("upload"),
                    "kols": len(s["kols"]), "next": wizard.next_step(s),
                    "active": any(r.get("state") in ACTIVE for r in s["steps"].values()),
                    "working": _working(s)})
    return out, states


# -- R1: navigation -----------------------------------------------------------
@bp.get("/")
def index():
    job = _job_id(required=False)
    if job is None:
        conn = redis()
        listing, states = _listing(conn)
        queue = status.overview(conn, SERVED)  # every queue the workers serve, the analyses' too
        now = status.at_a_glance(states, sum(1 for w in queue["workers"] if w["alive"]))
        payload = {"pool": pool().stats(), "now": now, "jobs": listing, "queue": queue}
        return reply("process/index.html", payload, deleted=request.args.get("deleted"), titles=STEP_TITLES)
    state = _state(job)
    payload = {
        "job": job, "kind": state["kind"], "created": state["created"], "upload": state.get("upload"),
        "kols": [{"name": k["name"], "files": len(k["files"])} for k in state["kols"]],
        "skipped": state["skipped"], "notes": state.get("notes") or [], "stage": state.get("stage"),
        "next": wizard.next_step(state),
        "steps": {name: {key: rec.get(key) for key in ("state", "done", "total", "error", "summary")}
                  for name, rec in state["steps"].items()},
    }
    return reply("process/job.html", payload, **_page_context(job, state))


@bp.post("/delete_job")
def delete_job():
    """Delete a job whose steps are over, with its folder (409 while a step runs)."""
    job = _job_id()
    enqueue.delete_job(redis(), jobs(), job)
    if wants_json():
        return reply("process/index.html", {"deleted": job})
    return redirect(url_for("wizard.index", deleted=job), 303)


# -- R2: progress -----------------------------------------------------------------
@bp.route("/processingProgress", methods=["GET", "POST"])
def processing_progress():
    job = _job_id()
    progress = status.step_progress(redis(), jobs(), job)
    state = jobs().state(job)
    next_url = url_for(RESULT_PAGE[progress["stage"]], job=job)
    unit = ("training stages" if progress["stage"] == "train" else
            "sampled video frames" if state["kind"] == "video" else "photos")
    return reply("process/progress.html", progress, next_url=next_url, unit=unit, **_page_context(job, state))


def _started(job):
    """The answer to a POST that queued a step: 202 JSON or 303 to the progress page."""
    if wants_json():
        return reply("process/progress.html", status.step_progress(redis(), jobs(), job), status=202)
    return redirect(url_for("wizard.processing_progress", job=job), 303)


def _run_and_wait(job, step, options):
    """Queue a quick step and wait for it (up to STEP_WAIT_S): ``None`` when it is done,
    else the answer to send (the progress page / 202). A failure is raised as its sentence."""
    store = jobs()
    enqueue.start_step(redis(), store, job, step, options)
    progress = status.wait(redis(), store, job, step, current_app.config["STEP_WAIT_S"])
    if progress["state"] == "failed":
        code = (store.state(job)["steps"].get(step) or {}).get("status") or 500
        raise UserError(progress["error"], code)
    if progress["state"] != "done":
        return _started(job)
    return None


# -- R3: align ----------------------------------------------------------------------
@bp.route("/align", methods=["GET", "POST"])
def align():
    job = _job_id()
    store = jobs()
    if request.method == "POST":
        plan = wizard.align_plan(store, job, current_app.config["ALIGN_CHUNK"])
        enqueue.start_step(redis(), store, job, "align", plan=plan)
        return _started(job)
    state = _state(job)
    record = state["steps"].get("align") or {}
    if record.get("state") in ACTIVE and not wants_json():
        return redirect(url_for("wizard.processing_progress", job=job), 303)
    result = store.read(job, "align") if record.get("state") == "done" else None
    payload = {"job": job, "state": record.get("state", "not started"), "error": record.get("error"),
               "kols": wizard.align_summary(result) if result else None}
    return reply("process/align.html", payload, result=result, **_page_context(job, state))


@bp.get("/chip")
def chip():
    """A crop of a job: ``?job=&kol=<index>&crop=<id>`` (PNG).

    Here ``kol`` is the KOL's *index* in the job (its folder under ``chips/``), not a slug as in
    :func:`pool_chip`; the parameter keeps its name for the scripts that use it."""
    job = _job_id()
    kol_index, crop = request.args.get("kol", ""), request.args.get("crop", "")
    if not KOL_INDEX_RE.match(kol_index) or not CROP_ID_RE.match(crop):
        raise UserError("No such crop.", 404)
    folder = jobs().path(job, "chips", kol_index)
    if not (folder / f"{crop}.png").is_file():
        raise UserError("No such crop.", 404)
    return send_from_directory(folder, f"{crop}.png", max_age=3600)


@bp.get("/pool_chip")
def pool_chip():
    """A chip of the training pool: ``?kol=<slug>&crop=<id>`` (PNG).

    Here ``kol`` is the KOL's pool *slug*, not an index as in :func:`chip`; the parameter keeps
    its name for the scripts that use it."""
    slug, chip_id = request.args.get("kol", ""), request.args.get("crop", "")
    path = pool().chip_path(slug, chip_id)
    return send_from_directory(path.parent, path.name, max_age=3600)


# -- R4: clean ------------------------------------------------------------------------
@bp.route("/clean", methods=["GET", "POST"])
def clean():
    job = _job_id()
    store = jobs()
    if request.method == "POST":
        overrides = wizard.check_clean(store, job, request.form.getlist("remove"), request.form.getlist("keep"),
                                       reset=bool(request.form.get("reset")))
        waiting = _run_and_wait(job, "clean", overrides)
        if waiting is not None:
            return waiting
        if wants_json():
            return reply("process/clean.html", cleaning.contract_view(store.read(job, "clean")))
        return redirect(url_for("wizard.clean", job=job), 303)
    state = _state(job)
    result = store.read(job, "clean")
    if result is None:
        if wants_json():
            raise UserError("This job has not been cleaned yet: POST /clean first.", 409)
        align_done = (state["steps"].get("align") or {}).get("state") == "done"
        return reply("process/clean.html", {"kols": None}, align_done=align_done, result=None,
                     **_page_context(job, state))
    return reply("process/clean.html", cleaning.contract_view(result), result=result, few=cleaning.FEW_CROPS,
                 splits=wizard.split_warnings(store, job, result), **_page_context(job, state))


# -- R5: choose what to import ------------------------------------------------------------
@bp.route("/import_clean", methods=["GET", "POST"])
def import_clean():
    job = _job_id()
    store = jobs()
    state = _state(job)
    wizard.require_done(state, "clean", "Clean the faces of this job first (the clean step).")
    result = store.read(job, "clean")
    kols = pool().kols()
    # same name up to case/spaces/accents, or faces that match a pool KOL's (shared.training.roster)
    warnings = roster.import_warnings(pool(), result["kols"], store.path(job, "chips"))
    for i, split in wizard.split_warnings(store, job, result).items():  # two people in one folder
        warnings.setdefault(i, {}).update(split)
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
def _import_into():
    """The import page's "same person as" choices: ``{kol index: pool display name}`` from ``into-<i>`` fields."""
    kols = pool().kols()
    return {int(key[5:]): kols[value]["name"] for key, value in request.form.items()
            if key.startswith("into-") and key[5:].isdigit() and len(key) < 12 and value in kols}


@bp.route("/import_result", methods=["GET", "POST"])
def import_result():
    job = _job_id(required=False)
    store = jobs()
    if request.method == "POST":
        if request.form.get("delete", ""):  # the older way to delete, kept for scripts: POST /delete_kol
            return _delete_kol(job)
        if not job:
            raise UserError("Which training job? Import needs job=<id>.", 404)
        modes = {int(key[5:]): value for key, value in request.form.items()
                 if key.startswith("mode-") and key[5:].isdigit() and len(key) < 12}
        plan = wizard.check_import(store, job, request.form.getlist("kol"),
                                   replace_all=request.form.get("mode") == "replace",
                                   replace=request.form.getlist("replace"), modes=modes, into=_import_into())
        waiting = _run_and_wait(job, "import", plan)
        if waiting is not None:
            return waiting
        summary = store.state(job)["steps"]["import"]["summary"]
        if wants_json():
            return reply("process/import_result.html", {"imported": summary["imported"],
                                                        "pool": wizard.pool_counts(pool())})
        return redirect(url_for("wizard.import_result", job=job), 303)
    state = _state(job) if job else None
    record = (state["steps"].get("import") or {}) if state else {}
    summary = record.get("summary") or {}
    payload = {"imported": summary.get("imported", []), "pool": wizard.pool_counts(pool())}
    return reply("process/import_result.html", payload, summary=pool().summary(), empty=summary.get("empty", []),
                 deleted=request.args.get("deleted"), **_page_context(job, state))


def _delete_kol(job):
    """Delete the KOL named by the form field ``delete`` (display name or slug) for good; the answer:
    JSON ``{"deleted": name, "pool": {name: int}}`` or 303 to the pool summary (``job`` kept when given)."""
    before = set(pool().kols())
    name = wizard.delete_kol_named(pool(), jobs(), request.form.get("delete", ""), models())
    for slug in before - set(pool().kols()):  # no library face is named as them any more (issue 24)
        forget_kol(library(), inbox(), slug)
    if wants_json():
        return reply("process/import_result.html", {"deleted": name, "pool": wizard.pool_counts(pool())})
    return redirect(url_for("wizard.import_result", job=job, deleted=name) if job
                    else url_for("wizard.import_result", deleted=name), 303)


@bp.post("/delete_kol")
def delete_kol():
    """Delete a KOL of the pool for good: pool, job folders, every model version (admin; field ``delete``)."""
    job = _job_id(required=False)
    if not request.form.get("delete", ""):
        raise UserError("Which KOL? The form needs delete=<the KOL's name>.", 400)
    return _delete_kol(job)


# -- R7: train ---------------------------------------------------------------------------------
def _train_options():
    """The training's settings: how many model versions to keep (0 in the settings: all)."""
    return {"keep": current_app.config["MODEL_VERSIONS_KEEP"] or 10 ** 6}


@bp.route("/train_model", methods=["GET", "POST"])
def train_model():
    store = jobs()
    if request.method == "POST":
        job = _job_id(required=False)
        wizard.check_train(pool())
        if job is not None:
            enqueue.start_step(redis(), store, job, "train", _train_options())
            return _started(job)
        # "retrain now": a training of the pool as it is, as a job of its own with its own progress page
        job = store.create_pool_training()
        try:
            enqueue.start_step(redis(), store, job, "train", _train_options())
        except BaseException:
            store.delete(job)
            raise
        return _started(job)
    job = _job_id()
    state = _state(job)
    record = state["steps"].get("train") or {}
    if record.get("state") in ACTIVE and not wants_json():
        return redirect(url_for("wizard.processing_progress", job=job), 303)
    if record.get("state") != "done":
        if wants_json():
            why = record.get("error") or ("Training is still running." if record.get("state") in ACTIVE
                                          else "No model was trained in this job yet: POST /train_model first.")
            raise UserError(why, 409)
        return reply("process/train_model.html", {"model_version": None}, record=record, pool_stats=pool().stats(),
                     current=models().meta(), **_page_context(job, state))
    result = record["summary"]
    names = (models().meta(result["model_version"]) or {}).get("names", {})
    return reply("process/train_model.html", result, names=names, record=record, pool_stats=pool().stats(),
                 current=models().meta(), merged=pool().merged_into(),
                 **_page_context(job, state))


@bp.app_context_processor
def _process_helpers():
    return {"process_url": current_app.config["PROCESS_URL"]}
