"""Video analysis on the job queue (issue 24): one upload of videos, each cut into chunks that every worker takes at once.

An *analysis* is one upload (one or many videos, or zips of them); each of its videos is cut into
chunks of about ``ANALYSIS_CHUNK_S`` seconds, each chunk one RQ job (:func:`run_chunk`) on the queue
:data:`QUEUE`, then one RQ job per video (:func:`run_finish`, ``depends_on`` its chunks) joins them
into the same files a stream writes: the per-frame file (:mod:`shared.video.framelog`, ``tracks.json``),
the appearances summary (:func:`shared.video.appearances.summarize`, ``appearances.json``) and, last,
``done.json``: a video is done only once that marker exists, so nothing half-written is shown as done.

How the queue runs it without the training layer knowing: the jobs name their function by RQ's
dotted path (``"shared.library.analysis.run_chunk"``) and go on their own queue :data:`QUEUE`;
the worker command (``process_server/worker.py``, started by the Procfile and ``tests/servers.py``)
serves the training queues plus this one (:func:`shared.training.jobqueue.worker.work`'s ``queues``).
``shared.training.jobqueue`` imports nothing of the library.

Chunk edges: a chunk starts at a **scene cut** when one is near (within :func:`search_frames` of its
nominal start), found by the cut detector's history-free rule (two frames whose thumbnails differ by
more than ``Settings.cut_diff``: :func:`boundary`): the stream ends every track there too, so no
track crosses the edge and both neighbours find the same edge on their own. Where no cut is near
(one long shot), the edge is hard: the chunk's recognizer starts :data:`WARMUP_S` earlier (its
tracks have their votes by the edge, as in one pass) and the join **stitches** the tracks that meet
at the edge (boxes overlapping by ``Settings.iou_match``: :func:`join`) into one.

Each chunk runs the stream's own loop (:class:`shared.video.recognizer.Recognizer`, inline, pace 0,
nothing drawn) on its frames, decoded frame-exactly (:func:`shared.faces.frames.iter_range`), and
saves a crop of the face at the first frame of each run of frames on which a track shows a KOL
(``thumbs/``: every moment of the screen-time report starts with one). All chunks of a video use the model version current at the upload.

Layout under ``DATA_DIR/library/analyses/``::

    <analysis>/analysis.json      {"analysis", "created", "model", "videos": [{"video", "filename", "fps",
                                   "frames", "width", "height", "duration_s", "edges": [nominal starts],
                                   "rq": [chunk RQ ids], "finish": RQ id}], "skipped": [{"name", "reason"}]}
    <analysis>/owner.json         who uploaded it (shared.core.owners)
    <analysis>/<video>/source<ext>          the uploaded file
    <analysis>/<video>/chunks/<i>.json      a chunk's result: {"start", "stop", "cut", "rows", "tracks", "thumbs"}
    <analysis>/<video>/chunks/<i>.progress  {"done", "total"} frames of the chunk, rewritten about once a second
    <analysis>/<video>/chunks/<i>.failed    {"error": sentence} of a chunk that failed
    <analysis>/<video>/tracks.json, appearances.json, thumbs/<frame>-<slug>.jpg, done.json | failed.json

Ids (analysis, video) are 16 lower-case hex digits (:data:`shared.core.ids.HEX16_RE`). Frame indices
count from 0; times are seconds; boxes ``(top, right, bottom, left)`` in the video's pixels.
"""
import json
import logging
import os
import secrets
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
from rq import Queue, Retry
from rq.job import Job, JobStatus

from shared.core import owners
from shared.core.errors import UserError
from shared.core.ids import HEX16_RE
from shared.core.names import upload_name
from shared.core.storage import DISK_FULL, atomic_write_bytes, atomic_write_json, is_disk_full, read_json
from shared.faces import archive, frames
from shared.faces.boxes import match
from shared.library import feed
from shared.recognition.store import ModelStore
from shared.training.jobqueue import faults
from shared.training.jobqueue.connection import queue
from shared.training.jobqueue.enqueue import FAILURE_TTL_S, RESULT_TTL_S
from shared.training.jobqueue.worker import data_dir
from shared.video import appearances, framelog
from shared.video.flow import Flow
from shared.video.recognizer import Recognizer, Settings, recognised
from shared.video.tracks import Track

log = logging.getLogger(__name__)

#: The RQ queue of analysis work (served by every worker after the training queues).
QUEUE = "analysis"
#: Seconds the recognizer of a chunk with a hard edge starts before it (its tracks are voted on by the edge).
WARMUP_S = 2.0
#: A chunk's edge moves to a scene cut at most this many seconds after its nominal start (and at most half a chunk).
CUT_SEARCH_S = 10.0
#: Seconds a chunk may run before its worker stops it, per second of video in it (and at least 600 s).
TIMEOUT_PER_S = 30
#: Longest side of a saved face crop (pixels) and the margin around the box (x its size).
THUMB_SIDE, THUMB_MARGIN = 160, 0.3
#: A chunk rewrites its progress file at most this often (seconds).
PROGRESS_EVERY_S = 1.0

STATES = ("queued", "running", "done", "failed")
NO_SUCH = "No such analysis (the link may be wrong, or it was deleted)."


# -- where things are -----------------------------------------------------------------------------
def root_of(data):
    """``DATA_DIR/library/analyses`` of the data folder ``data``."""
    return Path(data) / "library" / "analyses"


def _checked(value):
    if not isinstance(value, str) or not HEX16_RE.match(value):
        raise UserError(NO_SUCH, 404)
    return value


def analysis_dir(root, analysis_id, reader=None, check_owner=False):
    """The folder of an existing analysis; 404 for a malformed or unknown id (and, with ``check_owner``,
    for one ``reader`` may not read: :func:`shared.core.owners.may_read`, word for word as unknown)."""
    folder = Path(root) / _checked(analysis_id)
    if not (folder / "analysis.json").is_file() or (check_owner and not owners.may_read(folder, reader)):
        raise UserError(NO_SUCH, 404)
    return folder


def read_record(folder):
    """``analysis.json`` of an analysis folder."""
    return read_json(Path(folder) / "analysis.json")


def video_entry(record, video_id):
    """The record of one video of an analysis; 404 when it has none of that id."""
    for v in record["videos"]:
        if v["video"] == video_id:
            return v
    raise UserError("No such video in this analysis.", 404)


def source_path(folder):
    """The uploaded file inside a video's folder (``source<ext>``), or ``None``."""
    for ext in frames.VIDEO_EXTENSIONS:
        if (Path(folder) / f"source{ext}").is_file():
            return Path(folder) / f"source{ext}"
    return None


# -- an upload ------------------------------------------------------------------------------------
def _limits_problem(info, name, limits):
    """The sentence refusing a video over the limits (``ANALYSIS_MAX_VIDEO_S``, ``ANALYSIS_MAX_PIXELS``), or ``None``."""
    if limits["ANALYSIS_MAX_VIDEO_S"] and info.duration > limits["ANALYSIS_MAX_VIDEO_S"]:
        return (f"'{name}' is {info.duration / 60:.0f} minutes long; videos of at most "
                f"{limits['ANALYSIS_MAX_VIDEO_S'] / 60:.0f} minutes are analysed (setting ANALYSIS_MAX_VIDEO_S): "
                "cut it into parts first.")
    if limits["ANALYSIS_MAX_PIXELS"] and info.width * info.height > limits["ANALYSIS_MAX_PIXELS"]:
        return (f"'{name}' is {info.width}x{info.height} pixels; frames of at most "
                f"{limits['ANALYSIS_MAX_PIXELS']:,} pixels are analysed (setting ANALYSIS_MAX_PIXELS): "
                "scale it down first.")
    return None


def _stage(uploads, folder):
    """Save ``uploads`` (videos, or zips of videos) under ``folder``: ``([(path, name)], skipped)``.

    400/415 for a part that is neither; a zip is read by :func:`shared.faces.archive.extract_media_zip`
    (its refusals and limits) and must hold at least one video.
    """
    found, skipped = [], []
    for i, upload in enumerate(uploads):
        name = upload_name(upload.filename, f"video-{i + 1}")
        lower = upload.filename.lower()
        if lower.endswith(".zip"):
            raw = folder / f"{i:05d}.zip"
            upload.save(raw)
            try:
                files, left = archive.extract_media_zip(raw, folder / f"{i:05d}", "video")
            finally:
                raw.unlink(missing_ok=True)
            found += [(Path(f["path"]), f"{name}/{f['name']}") for f in files]
            skipped += [{"name": f"{name}/{s['name']}", "reason": s["reason"]} for s in left]
            continue
        if not frames.is_video_name(lower):
            raise UserError(f"'{name}' is not a video this tool accepts: use {', '.join(frames.VIDEO_EXTENSIONS)}, "
                            "or a zip of such videos.", 415)
        path = folder / f"{i:05d}{os.path.splitext(lower)[1]}"
        upload.save(path)
        found.append((path, name))
    return found, skipped


def nominal_edges(frame_count, fps, chunk_s):
    """The nominal first frame of each chunk: ``[0, c, 2c, ...]`` with ``c`` = ``chunk_s`` seconds of frames
    (a last piece shorter than half a chunk joins the one before)."""
    step = max(1, int(round(chunk_s * fps)))
    edges = list(range(0, max(1, frame_count), step))
    if len(edges) > 1 and frame_count - edges[-1] < step / 2:
        edges.pop()
    return edges


def create(root, uploads, owner, limits, model_version):
    """Make an analysis of the uploaded videos (werkzeug ``FileStorage`` parts with a file name).

    Every video is checked (extension, decodable first frame: :func:`shared.faces.frames.probe`, the
    limits ``ANALYSIS_MAX_VIDEO_S`` / ``ANALYSIS_MAX_PIXELS`` / ``ANALYSIS_MAX_VIDEOS`` of ``limits``)
    before anything is kept: one bad part is a :class:`UserError` (4xx) and the folder is removed.
    Returns the record (not queued yet: :func:`enqueue`).
    """
    uploads = [u for u in uploads if u is not None and u.filename]
    if not uploads:
        raise UserError("Choose one or more videos (or a zip of videos) to analyse (field 'file').", 400)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    analysis_id = secrets.token_hex(8)
    folder = root / analysis_id
    staging = folder / "upload"
    staging.mkdir(parents=True)
    try:
        found, skipped = _stage(uploads, staging)
        if limits["ANALYSIS_MAX_VIDEOS"] and len(found) > limits["ANALYSIS_MAX_VIDEOS"]:
            raise UserError(f"This upload holds {len(found)} videos; at most {limits['ANALYSIS_MAX_VIDEOS']} are "
                            "analysed at once (setting ANALYSIS_MAX_VIDEOS): upload them in parts.", 413)
        videos = []
        for path, name in found:
            info = frames.probe(path, name=name)
            problem = _limits_problem(info, name, limits)
            if problem:
                raise UserError(problem, 413)
            video_id = secrets.token_hex(8)
            (folder / video_id).mkdir()
            os.replace(path, folder / video_id / f"source{path.suffix.lower()}")
            videos.append({"video": video_id, "filename": name, "fps": round(info.fps, 3), "frames": info.frames,
                           "width": info.width, "height": info.height, "duration_s": round(info.duration, 2),
                           "edges": nominal_edges(info.frames, info.fps, limits["ANALYSIS_CHUNK_S"]),
                           "rq": [], "finish": None})
        shutil.rmtree(staging)
        record = {"analysis": analysis_id, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "model": model_version, "videos": videos, "skipped": skipped}
        if owner is not None:
            owners.write(folder, owner)
        atomic_write_json(folder / "analysis.json", record)  # last: a folder without it is no analysis
        return record
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _rq_id(analysis_id, video_id, part):
    return f"analysis-{analysis_id}-{video_id}-{part}-{secrets.token_hex(3)}"


def enqueue(conn, root, record):
    """Put every video's chunks on :data:`QUEUE` (all at once, one round trip), each video's finish after them.

    The RQ ids are written into ``analysis.json`` first. Raises the queue's errors (Redis down) after
    removing the analysis, so an upload that could not be queued leaves nothing behind.
    """
    folder = Path(root) / record["analysis"]
    for v in record["videos"]:
        v["rq"] = [_rq_id(record["analysis"], v["video"], i) for i in range(len(v["edges"]))]
        v["finish"] = _rq_id(record["analysis"], v["video"], "finish")
    atomic_write_json(folder / "analysis.json", record)
    q = queue(conn, QUEUE)
    try:
        for v in record["videos"]:
            seconds = v["duration_s"] / max(1, len(v["edges"]))
            timeout = max(600, int(TIMEOUT_PER_S * (seconds + WARMUP_S + CUT_SEARCH_S)))
            with conn.pipeline() as pipe:
                parts = q.enqueue_many([
                    Queue.prepare_data(f"{__name__}.run_chunk", (record["analysis"], v["video"], i), job_id=rq_id,
                                       description=f"analysis {record['analysis']} {v['filename']} part {i + 1}/"
                                                   f"{len(v['rq'])}",
                                       timeout=timeout, retry=Retry(max=faults.RETRIES),
                                       result_ttl=RESULT_TTL_S, failure_ttl=FAILURE_TTL_S)
                    for i, rq_id in enumerate(v["rq"])], pipeline=pipe)
                pipe.execute()
            q.enqueue(f"{__name__}.run_finish", record["analysis"], v["video"], job_id=v["finish"], depends_on=parts,
                      description=f"analysis {record['analysis']} {v['filename']}: join the parts",
                      job_timeout=600, retry=Retry(max=faults.RETRIES), result_ttl=RESULT_TTL_S,
                      failure_ttl=FAILURE_TTL_S)
    except BaseException:
        delete(conn, root, record["analysis"])
        raise


def delete(conn, root, analysis_id):
    """Remove an analysis: its RQ jobs (cancelled where they wait) and its folder."""
    folder = Path(root) / _checked(analysis_id)
    record = read_record(folder) or {"videos": []}
    ids = [i for v in record["videos"] for i in v.get("rq", []) + [v.get("finish")] if i]
    try:
        for rq_job in Job.fetch_many(ids, connection=conn) if ids else []:
            if rq_job is not None:
                rq_job.delete()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# -- one chunk ------------------------------------------------------------------------------------
def search_frames(fps, chunk_s):
    """How many frames after its nominal start a chunk's edge may move to a scene cut."""
    return int(round(min(CUT_SEARCH_S, chunk_s / 2) * fps))


def boundary(path, nominal, window, settings=None):
    """``(frame, cut)``: where a chunk nominally starting at frame ``nominal`` starts.

    The first frame in ``nominal .. nominal + window`` whose grey thumbnail (:class:`shared.video.flow.Flow`'s)
    differs from the frame before by more than ``settings.cut_diff``: a cut the stream always finds
    (the rule needs no history, so the chunk before and this one agree on it). ``(nominal, False)``
    when there is none (a hard edge); ``(0, True)`` for the first chunk.
    """
    if nominal <= 0:
        return 0, True
    settings = settings or Settings()
    flow, previous = Flow(settings), None
    for index, _t, rgb in frames.iter_range(path, nominal - 1, nominal + window + 1):
        flow.prepare(rgb)
        thumb = flow.prev_thumb
        if previous is not None and float(np.abs(thumb - previous).mean()) > settings.cut_diff:
            return index, True
        previous = thumb
    return nominal, False


def recognise(path, model, first, start, stop, settings=None):
    """Yield ``(index, rgb, views)`` for frames ``start`` .. ``stop - 1`` (``stop`` ``None``: the end), as the
    stream's loop (:func:`shared.video.recognizer.recognised`, inline) recognises them, its recognizer begun at
    frame ``first`` (<= ``start``: warm-up frames are recognised, not yielded) and reading up to its look-ahead
    past ``stop`` (so the frames before ``stop`` see what one pass would). Ends with the recognizer:
    the generator's return value (``StopIteration.value``)."""
    rec = Recognizer(model, frames.probe(path).fps, settings)
    source = frames.iter_range(path, first)
    loop = recognised(rec, source, stop)
    try:
        for index, _t, rgb, views in loop:
            if index >= start:
                yield index, rgb, views
    finally:
        loop.close()
        source.close()
    return rec


def _crop(rgb, box):
    """JPEG bytes of the face at ``box`` with a margin, its longest side at most :data:`THUMB_SIDE`."""
    top, right, bottom, left = box
    m = int(THUMB_MARGIN * max(bottom - top, right - left))
    h, w = rgb.shape[:2]
    face = rgb[max(0, top - m):min(h, bottom + m), max(0, left - m):min(w, right + m)]
    scale = min(1.0, THUMB_SIDE / max(face.shape[:2]))
    if scale < 1.0:
        face = cv2.resize(face, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(face, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    return data.tobytes()


def _clip(ranges, start, stop):
    """``[[a, b], ...]`` inclusive frame ranges cut to ``start`` .. ``stop - 1``."""
    hi = float("inf") if stop is None else stop - 1
    return [[max(a, start), min(b, hi)] for a, b in ranges if b >= start and a <= hi]


def _track_data(t, start, stop):
    """What the join needs of a track for the summary, cut to the chunk's frames (``None``: never shown in them)."""
    spans = _clip(t.spans, start, stop)
    if not spans:
        return None
    answers = [[who, *r] for who, a, b in t.answers for r in _clip([[a, b]], start, stop)]
    return {"id": t.id, "spans": spans, "answers": answers,
            "embeddings": [[round(float(x), 6) for x in e] for e in t.embeddings]}


def analyse_chunk(path, model, start, stop, fps, thumbs, has_cut, progress=None):
    """Recognise frames ``start`` .. ``stop - 1`` of a video: the chunk's result (module docstring).

    thumbs: the folder for face crops (one at the first frame of each run of frames on which a track shows a KOL);
    has_cut: ``start`` is a scene cut (else the recognizer starts :data:`WARMUP_S` earlier).
    progress: ``progress(done, total)`` or ``None``.
    """
    first = start if has_cut else max(0, start - int(round(WARMUP_S * fps)))
    total = (stop if stop is not None else max(start + 1, frames.probe(path).frames)) - start
    rows, saved, shown = [], [], {}
    loop = recognise(path, model, first, start, stop)
    while True:
        try:
            index, rgb, views = next(loop)
        except StopIteration as end:
            rec = end.value
            break
        rows.append(framelog.row(index, fps, views, model is not None))
        for v in views:
            if v.known and shown.get(v.track) != (v.slug, index - 1):  # the first frame of a run naming a KOL
                name = f"{index:07d}-{secrets.token_hex(4)}.jpg"
                atomic_write_bytes(Path(thumbs) / name, _crop(rgb, tuple(int(x) for x in v.box)))
                saved.append({"frame": index, "track": v.track, "identity": v.name, "file": name})
            shown[v.track] = (v.slug if v.known else None, index)
        if progress is not None:
            progress(len(rows), total)
    tracks = [d for d in (_track_data(t, start, stop) for t in rec.trackset.every()) if d is not None]
    return {"start": start, "stop": stop, "cut": has_cut, "rows": rows, "tracks": tracks, "thumbs": saved}


# -- joining chunks -------------------------------------------------------------------------------
def join(chunks, iou_match=None):
    """One video's chunk results (in order) as ``(rows, tracks, thumbs)`` of the whole video.

    Track ids are renumbered from 1 across the chunks; at a hard edge (a chunk with ``cut`` false)
    the tracks drawn on the frame before the edge and the frame at it whose boxes overlap by at
    least ``iou_match`` (``Settings.iou_match``) are one track: the later one takes the earlier's id,
    and their spans, answers and embeddings are joined (:func:`shared.faces.boxes.match`).
    Raises ``ValueError`` when the chunks do not follow each other frame by frame.
    """
    iou_match = Settings().iou_match if iou_match is None else iou_match
    rows, tracks, thumbs, next_id = [], {}, [], 1
    for k, chunk in enumerate(chunks):
        ids = {}
        if rows and chunk["rows"] and not chunk["cut"]:
            before, after = rows[-1]["faces"], chunk["rows"][0]["faces"]
            pairs, _, _ = match([f["box"] for f in before], [f["box"] for f in after], iou_match)
            ids = {after[j]["track"]: before[i]["track"] for i, j in pairs}
        for t in chunk["tracks"]:
            if t["id"] not in ids:
                ids[t["id"]] = next_id
                next_id += 1
        expected = rows[-1]["frame"] + 1 if rows else 0
        if chunk["rows"] and chunk["rows"][0]["frame"] != expected:
            raise ValueError(f"part {k + 1} starts at frame {chunk['rows'][0]['frame']}, not {expected}")
        for r in chunk["rows"]:
            rows.append({**r, "faces": [{**f, "track": ids.get(f["track"], f["track"])} for f in r["faces"]]})
        for t in chunk["tracks"]:
            mine = tracks.setdefault(ids[t["id"]], {"id": ids[t["id"]], "spans": [], "answers": [], "embeddings": []})
            for key in ("spans", "answers", "embeddings"):
                mine[key] += t[key]
        thumbs += [{**th, "track": ids.get(th["track"], th["track"])} for th in chunk["thumbs"]]
    return rows, [tracks[i] for i in sorted(tracks)], thumbs


def as_tracks(data):
    """:class:`shared.video.tracks.Track` objects of joined track data, for :func:`shared.video.appearances.summarize`."""
    out = []
    for d in data:
        t = Track(d["id"], (0, 0, 0, 0), d["spans"][0][0])
        t.spans = [list(s) for s in d["spans"]]
        t.answers = [list(a) for a in d["answers"]]
        t.embeddings = [np.asarray(e, dtype=np.float64) for e in d["embeddings"]]
        out.append(t)
    return out


# -- the queue's tasks ----------------------------------------------------------------------------
def _sentence(exc, part):
    """What a person reads about a part that failed."""
    if isinstance(exc, UserError):
        return exc.message
    if is_disk_full(exc):
        return DISK_FULL
    return f"Part {part + 1} of this video failed unexpectedly ({type(exc).__name__}); the other videos go on."


def _model(record):
    """The model version of the analysis (``None``: there was none; faces then read "no model")."""
    if not record.get("model"):
        return None
    return ModelStore(Path(data_dir()) / "models").cached(record["model"])


class _Progress:
    """``progress(done, total)`` into a chunk's progress file, at most every :data:`PROGRESS_EVERY_S`."""

    def __init__(self, path):
        self.path, self.last = path, 0.0

    def __call__(self, done, total):
        t = time.monotonic()
        if t - self.last >= PROGRESS_EVERY_S or done >= total:
            self.last = t
            atomic_write_json(self.path, {"done": int(done), "total": int(total)})


def run_chunk(analysis_id, video_id, index):
    """Queue task: part ``index`` of one video. Writes ``chunks/<index>.json``, or ``chunks/<index>.failed``
    with the sentence (and returns it: the join then marks the video failed; the other videos go on)."""
    folder = root_of(data_dir()) / analysis_id
    record = read_record(folder)
    if record is None:
        return {"error": "deleted"}
    v = video_entry(record, video_id)
    vdir = folder / video_id
    (vdir / "chunks").mkdir(exist_ok=True)
    (vdir / "thumbs").mkdir(exist_ok=True)
    try:
        path = source_path(vdir)
        chunk_s = v["duration_s"] / max(1, len(v["edges"]))
        window = search_frames(v["fps"], max(chunk_s, 1.0))
        start, cut = boundary(path, v["edges"][index], window)
        stop = boundary(path, v["edges"][index + 1], window)[0] if index + 1 < len(v["edges"]) else None
        out = analyse_chunk(path, _model(record), start, stop, v["fps"], vdir / "thumbs", cut,
                            _Progress(vdir / "chunks" / f"{index}.progress"))
        atomic_write_json(vdir / "chunks" / f"{index}.json", out)
        return {"frames": len(out["rows"])}
    except Exception as exc:  # noqa: BLE001 - every failure becomes the video's sentence
        sentence = _sentence(exc, index)
        atomic_write_json(vdir / "chunks" / f"{index}.failed", {"error": sentence})
        return {"error": sentence}


def finish(vdir, v, model):
    """Join a video's chunks into its results (module docstring); ``done.json`` last. Returns the summary rows.

    A missing or failed chunk writes ``failed.json`` with its sentence instead (nothing is shown as done).
    """
    vdir = Path(vdir)
    chunks = []
    for i in range(len(v["edges"])):
        failed = read_json(vdir / "chunks" / f"{i}.failed")
        if failed:
            raise UserError(failed["error"], 500)
        chunk = read_json(vdir / "chunks" / f"{i}.json")
        if chunk is None:
            raise UserError(f"Part {i + 1} of this video left no result; analyse it again.", 500)
        chunks.append(chunk)
    rows, tracks, thumbs = join(chunks)
    summary = appearances.summarize(as_tracks(tracks), v["fps"], model, min_frames=Settings().min_frames)
    framelog.write(vdir, v["video"], v["fps"], rows)
    atomic_write_json(vdir / "appearances.json", {"video": v["video"], "fps": v["fps"], "appearances": summary,
                                                  "thumbs": thumbs})
    atomic_write_json(vdir / "done.json", {"finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                           "frames": len(rows)})
    shutil.rmtree(vdir / "chunks", ignore_errors=True)
    return summary


def run_finish(analysis_id, video_id):
    """Queue task: join one video's chunks (:func:`finish`); a failure writes ``failed.json`` with its sentence."""
    folder = root_of(data_dir()) / analysis_id
    record = read_record(folder)
    if record is None:
        return {"error": "deleted"}
    v = video_entry(record, video_id)
    model = _model(record)
    try:
        summary = finish(folder / video_id, v, model)
    except Exception as exc:  # noqa: BLE001 - every failure becomes the video's sentence
        sentence = _sentence(exc, len(v["edges"]) - 1) if not isinstance(exc, UserError) else exc.message
        atomic_write_json(folder / video_id / "failed.json", {"error": sentence})
        return {"error": sentence}
    return {"appearances": len(summary), **_kept(folder, v, model)}


def _kept(folder, v, model):
    """Keep a finished video in the library (:func:`shared.library.feed.keep_analysed`); its result stands
    either way: a failure to keep is recorded in ``library.json`` (``{"media"}`` or ``{"error"}``) and logged."""
    try:
        media = feed.keep_analysed(data_dir(), folder, v, source_path(folder / v["video"]),
                                   dict(model.names) if model is not None else {})
        out = {"media": media}
    except Exception as exc:  # noqa: BLE001 - the analysis is done; keeping it is a second step
        log.exception("keeping analysed video %s in the library failed", v["video"])
        out = {"error": getattr(exc, "message", None) or "It could not be kept in the library."}
    atomic_write_json(folder / v["video"] / "library.json", out)
    return out


# -- where it stands ------------------------------------------------------------------------------
def _queue_failure(conn, v):
    """The sentence of a video whose RQ jobs the queue failed for good (a worker killed twice, a time limit)
    or lost, or ``None`` while they are queued, running or finished."""
    ids = v["rq"] + [v["finish"]]
    for rq_id, rq_job in zip(ids, Job.fetch_many(ids, connection=conn)):
        if rq_job is None:
            return faults.LOST
        if rq_job.get_status(refresh=False) in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
            return faults.failure_sentence("analysis", rq_job)
    return None


def video_status(conn, vdir, v):
    """Where one video stands: ``{"video", "filename", "state", "done", "total", "error", "duration_s"}``
    (``done``/``total``: frames; ``state`` one of :data:`STATES`)."""
    vdir = Path(vdir)
    out = {"video": v["video"], "filename": v["filename"], "duration_s": v["duration_s"], "fps": v["fps"],
           "total": int(v["frames"]), "done": 0, "error": None}
    if (vdir / "done.json").is_file():
        frames_done = (read_json(vdir / "done.json") or {}).get("frames", v["frames"])
        return {**out, "state": "done", "done": frames_done, "total": frames_done}
    failed = read_json(vdir / "failed.json")
    chunk_failure = next((read_json(p)["error"] for p in sorted((vdir / "chunks").glob("*.failed"))), None) \
        if (vdir / "chunks").is_dir() else None
    if failed or chunk_failure:
        return {**out, "state": "failed", "error": (failed or {}).get("error") or chunk_failure}
    done = 0
    for i in range(len(v["edges"])):
        if (vdir / "chunks" / f"{i}.json").is_file():
            chunk = read_json(vdir / "chunks" / f"{i}.progress") or {}
            done += int(chunk.get("total", 0)) or 0
        else:
            done += int((read_json(vdir / "chunks" / f"{i}.progress") or {}).get("done", 0))
    sentence = _queue_failure(conn, v) if conn is not None else None
    if sentence:
        return {**out, "state": "failed", "error": sentence}
    return {**out, "state": "running" if done or (vdir / "chunks").is_dir() else "queued",
            "done": min(done, out["total"])}


def status(conn, root, analysis_id, reader=None):
    """Where an analysis stands: ``{"analysis", "created", "state", "done", "total", "videos": [video_status],
    "skipped"}``; ``state``: ``done`` when every video is done, ``failed`` when every video is over and one
    failed, else ``running`` (or ``queued`` before any work began)."""
    folder = analysis_dir(root, analysis_id, reader, check_owner=True)
    record = read_record(folder)
    videos = [video_status(conn, folder / v["video"], v) for v in record["videos"]]
    states = {v["state"] for v in videos}
    state = ("done" if states == {"done"} else "failed" if states <= {"done", "failed"} else
             "queued" if states == {"queued"} else "running")
    return {"analysis": record["analysis"], "created": record["created"], "model": record.get("model"),
            "state": state, "done": sum(v["done"] for v in videos), "total": sum(v["total"] for v in videos),
            "videos": videos, "skipped": record.get("skipped", [])}


def listing(root, reader):
    """The analyses ``reader`` may read, newest first: ``[{"analysis", "created", "videos": [filenames]}]``."""
    out = []
    root = Path(root)
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        record = read_record(folder) if HEX16_RE.match(folder.name) else None
        if record and owners.may_read(folder, reader):
            out.append({"analysis": record["analysis"], "created": record["created"],
                        "videos": [v["filename"] for v in record["videos"]]})
    return sorted(out, key=lambda a: a["created"], reverse=True)


def result(root, analysis_id, video_id, reader):
    """``(video folder, video record)`` of a finished video ``reader`` may read; 404 otherwise, 409 while it runs."""
    folder = analysis_dir(root, analysis_id, reader, check_owner=True)
    v = video_entry(read_record(folder), _checked(video_id))
    if not (folder / video_id / "done.json").is_file():
        raise UserError("This video's analysis has not finished yet: its results appear when it is done.", 409)
    return folder / video_id, v


def read_appearances(vdir):
    """``appearances.json`` of a finished video."""
    return read_json(Path(vdir) / "appearances.json") or {"appearances": [], "thumbs": []}


def dumps(data):
    """JSON text of a result file (compact)."""
    return json.dumps(data, separators=(",", ":"))
