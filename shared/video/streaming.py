"""Playing a stored video: recognised frames as an MJPEG body, paced, with the status kept up to date.

The recognition loop (:func:`shared.video.recognizer.run`) runs in the caller's thread;
drawing and JPEG encoding run in a helper thread, one frame behind (OpenCV releases
the GIL while it encodes), so the loop never waits for the encoder.

Pacing: with ``pace`` on, frame ``i`` leaves no earlier than ``i / fps`` seconds
after frame 0. When the machine cannot keep up (several viewers, 4K), a frame that
is already more than one frame interval late is *dropped* (recognised, so tracks and
the summary stay whole, but neither drawn nor sent; at most :data:`MAX_DROP_RUN` in a
row) and the status says how many were dropped, so the picture stays in time instead
of falling further behind. With
``pace`` off every frame is sent, as fast as it is made.

A frame sent is scaled down to the stream's longest side, drawn on (:func:`shared.faces.draw.overlay`)
and encoded as JPEG by :func:`render`.
"""
import collections
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from shared.core import config
from shared.core.storage import atomic_write_json, read_json
from shared.faces import draw
from shared.video import framelog, recognizer, unsure
from shared.video.passes import warm_job
from shared.video.videos import claim, read_meta, source_path, write_status

#: At most this many frames in a row are dropped, so a machine far too slow still shows the video moving.
MAX_DROP_RUN = 4
#: The "seen most" panel drawn on the frames is refreshed every this many seconds of video
#: (re-summarising and re-rendering its text on every frame cost about 2 ms a frame).
PANEL_EVERY_S = 0.5
#: The longest side of a streamed frame (pixels; the setting ``VIDEO_STREAM_SIDE``): larger frames are
#: scaled down to it before the overlay is drawn. An ``<img>`` on the video page shows at most about
#: this much, and at 1080p the scaled copy costs 7.5 ms a frame to encode against 10.6 ms (91 KB against 140 KB).
STREAM_SIDE = config.DEFAULTS["VIDEO_STREAM_SIDE"]


def render(rgb, items, lines=(), quality=80, max_side=STREAM_SIDE):
    """JPEG bytes of the RGB frame ``rgb`` with the overlay of :func:`shared.faces.draw.overlay`
    (``rgb`` is not modified).

    items: ``[(box, text, known), ...]``, boxes in ``rgb``'s pixels; lines: the panel's text.
    max_side: a frame whose longer side is larger is scaled down to it (bilinear), boxes with it;
        0 keeps the frame's size. The overlay is drawn on the BGR copy that OpenCV's encoder needs
        anyway (about twice as fast as Pillow's), so a frame costs one full-size copy, not two.
    """
    H, W = rgb.shape[:2]
    scale = max_side / max(H, W) if max_side and max(H, W) > max_side else 1.0
    if scale < 1.0:
        small = cv2.resize(rgb, (max(1, round(W * scale)), max(1, round(H * scale))), interpolation=cv2.INTER_LINEAR)
        bgr = cv2.cvtColor(small, cv2.COLOR_RGB2BGR)
        items = [(tuple(int(round(v * scale)) for v in box), text, known) for box, text, known in items]
    else:
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    draw.overlay(bgr, items, lines, bgr=True)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def part(jpeg, index):
    """One part of the ``multipart/x-mixed-replace; boundary=frame`` body (``X-Frame`` is the frame index)."""
    return (b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\nX-Frame: %d\r\n\r\n"
            % (len(jpeg), index)) + jpeg + b"\r\n"


def stream(folder, model, pace=True, executor=None, quality=80, status_every_s=0.5, settings=None, observe=None,
           max_side=STREAM_SIDE, clock=time, review=None):
    """Recognise a stored video and yield it as MJPEG parts, one per frame sent.

    folder: a folder returned by :func:`shared.video.videos.video_dir`. model: the current
    :class:`shared.recognition.model.Model` or ``None``. pace: play at the video's speed,
    dropping frames that are already late (module docstring); ``False`` sends every
    frame as fast as it is made. executor: passed to :func:`shared.video.recognizer.run` (the
    worker processes, or ``None`` for inline work). observe: called as
    ``observe(index, views)`` for every frame recognised (benchmarks, tests). max_side: frames
    are sent with their longer side at most this many pixels (0: as decoded; see
    :func:`render`); recognition always sees the decoded frames. clock: what
    pacing reads and waits on, with ``monotonic()`` and ``sleep(seconds)`` (seconds; the
    :mod:`time` module, or a virtual clock in tests so that pacing is checked whatever
    the machine's speed). review: a :class:`shared.recognition.review.Queue` (or ``None``): a run
    that reaches the end queues its tracks answered below "sure" there (:mod:`shared.video.unsure`).

    Each part is ``--frame\\r\\nContent-Type: image/jpeg\\r\\nContent-Length: n\\r\\nX-Frame: i\\r\\n\\r\\n<jpeg>\\r\\n``;
    a final ``--frame--`` closes the body. While it runs, ``status.json`` is rewritten
    every ``status_every_s`` seconds (``streaming``), then ``done`` with the summary, or
    ``failed`` with the error; the status also holds ``sent`` (parts sent) and
    ``dropped`` (frames dropped to stay in time). When the viewer goes away (the
    generator is closed) decoding and pending work stop at once, and the status goes
    back to the last complete summary, else to ``pending``. A run that reaches the end also
    writes every frame's faces to ``tracks.json`` (:mod:`shared.video.framelog`, ``GET /video_tracks.json``).
    """
    folder = Path(folder)
    meta = read_meta(folder)
    path = source_path(folder)
    fps = float(meta["fps"]) or 25.0
    token = claim(folder)
    base = {"video": meta["video"], "fps": fps, "frames": int(meta["frames"]), "error": None}
    counts = {"processed": 0, "sent": 0, "dropped": 0}
    rows = []  # per-frame results (shared.video.framelog), written when the run reaches the end
    rec = None
    outcome = None

    def status(state, **extra):
        body = dict(base, state=state, **counts,
                    appearances=rec.appearances() if rec is not None else [], **extra)
        write_status(folder, body, token)
        return body

    frames_iter = recognizer.run(path, model, settings=settings, executor=executor, name=meta.get("filename"))
    encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="video-encode")
    pending = collections.deque()  # (frame index, future of jpeg bytes)
    started = None
    last_status = 0.0
    interval = 1.0 / fps
    run = 0  # frames dropped in a row
    panel, panel_at = (), None  # the panel's lines and the frame they were made for

    def send(item):
        index, future = item
        jpeg = future.result()
        if pace and started is not None:
            delay = started + index * interval - clock.monotonic()
            if delay > 0:
                clock.sleep(delay)
        counts["sent"] += 1
        return part(jpeg, index)

    try:
        status("streaming")
        for index, _t, rgb, views, rec in frames_iter:
            counts["processed"] = index + 1
            if observe is not None:
                observe(index, views)
            rows.append(framelog.row(index, fps, views, rec.model is not None))
            late = pace and started is not None and clock.monotonic() - (started + index * interval) > interval
            if late and run < MAX_DROP_RUN and index + 1 < base["frames"]:
                counts["dropped"] += 1
                run += 1
            else:
                run = 0
                if panel_at is None or index - panel_at >= PANEL_EVERY_S * fps:
                    panel, panel_at = tuple(panel_lines(rec)), index
                texts = labels(views, rec.model is not None)
                pending.append((index, encoder.submit(render, np.asarray(rgb), texts, panel,
                                                      quality, max_side)))
            while len(pending) > (0 if started is None else 1):
                out = send(pending.popleft())
                if started is None:
                    started = clock.monotonic() - index * interval  # the clock starts with the first frame out
                yield out
            if time.monotonic() - last_status >= status_every_s:
                last_status = time.monotonic()
                status("streaming")
        while pending:
            yield send(pending.popleft())
        outcome = "done"
        if counts["processed"] == 0:
            outcome = "failed"
            status("failed", error="No frame of this video could be decoded.")
        else:
            body = status("done", frames=counts["processed"])
            for write in (lambda: atomic_write_json(folder / "summary.json", body),
                          lambda: framelog.write(folder, meta["video"], fps, rows)):
                try:  # each on its own: a per-frame log that cannot be written never costs the summary
                    write()
                except OSError:
                    pass
            if review is not None:
                unsure.queue_tracks(review, rec, {"kind": "video", "run": meta["video"], "photo": meta.get("filename")})
        yield b"--frame--\r\n"
    except GeneratorExit:
        raise
    except Exception as exc:  # noqa: BLE001 - a broken video must not take the server down
        logging.getLogger(__name__).exception("video %s failed after %d frames", meta["video"], counts["sent"])
        outcome = "failed"
        message = getattr(exc, "message", None) or "The video could not be decoded past this point."
        status("failed", error=f"{message} ({counts['sent']} frames were shown).")
    finally:
        frames_iter.close()
        for _, future in pending:
            future.cancel()
        encoder.shutdown(wait=True)
        if outcome is None:  # the viewer left before the end
            summary = read_json(folder / "summary.json")
            if summary:
                write_status(folder, summary, token)
            else:
                status("pending")


def labels(views, has_model):
    """``[(box, text, known)]`` of a frame's faces for :func:`render`
    (``views``: :class:`shared.video.tracks.FaceView`; ``has_model``: a model names the faces)."""
    return [(v.box, v.label(has_model), v.known) for v in views]


def panel_lines(rec, top=3):
    """The panel's text: the ``top`` KOLs a :class:`shared.video.recognizer.Recognizer` has seen most so far
    (seconds on screen), most first."""
    if rec.model is None:
        return ["No model trained yet: faces are not named"]
    known = [a for a in rec.appearances() if a["identity"] is not None][:top]
    if not known:
        return ["No KOL seen yet"]
    return ["Seen most so far"] + [f"{a['identity']}  {a['frames'] / rec.fps:.1f} s" for a in known]


_warmed = set()  # ids of executors already warmed in this process


def is_warm(executor):
    """True once :func:`warm` has finished for ``executor`` in this process."""
    return id(executor) in _warmed


def warm(executor, workers):
    """Get everything the first frame needs ready: each worker's dlib networks, fonts, the encoder.

    executor: the worker processes (``None``: warm this process only); workers: how many
    worker processes it has. Returns the seconds it took.
    """
    started = time.monotonic()
    calls = [executor.submit(warm_job) for _ in range(workers)] if executor is not None else []
    frame = np.zeros((360, 640, 3), np.uint8)
    render(frame, [((10, 60, 60, 10), "unknown 50%", False), ((10, 160, 60, 110), "x 90%", True)],
                   ("Seen most so far",))
    if executor is None:
        warm_job()
    for c in calls:
        c.result()
    _warmed.add(id(executor))
    return time.monotonic() - started
