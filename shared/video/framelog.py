"""Per-frame results of a video's latest run as data: ``tracks.json`` in its folder, and its WebVTT and CSV forms.

The stream (:func:`shared.video.streaming.stream`) collects one row per recognised frame
(:func:`row`) and writes them with :func:`write` when it reaches the end (a run the viewer
left early keeps the previous complete file). The file::

    {"video": id, "fps": float, "frame_count": int,
     "frames": [{"frame": int, "t": float, "faces": [
         {"box": [top, right, bottom, left], "track": int, "identity": str|null,
          "confidence": float, "known": bool, "label": str}]}]}

``frames`` (the list) has one row per frame recognised, in order, faces in the order drawn;
``box`` is in the video's pixels; ``t`` is seconds from the start (``frame / fps``);
``identity`` is the KOL's display name (``null``: a stranger, or a face the tool is unsure of),
``confidence`` the probability that the answer drawn is right, ``known`` whether a KOL is named,
``label`` the text drawn (``"Anna 87%"``, ``"unknown 80%"``, ``"?"``, ``"no model"``).
"""
import io
from pathlib import Path

from shared.core import csvsafe
from shared.core.errors import UserError
from shared.core.storage import atomic_write_json, read_json

FILE = "tracks.json"
#: The answer when no run of the video has reached its end yet.
NOT_YET = "This video has not been played to the end yet: play it once, then download its per-frame results."


def row(index, fps, views, has_model):
    """The row of frame ``index``: its :class:`shared.video.tracks.FaceView` ``views`` as data (module docstring)."""
    return {"frame": int(index), "t": round(index / fps, 3),
            "faces": [{"box": [int(v) for v in f.box], "track": int(f.track), "identity": f.name if f.known else None,
                       "confidence": round(float(f.confidence), 2), "known": bool(f.known),
                       "label": f.label(has_model)} for f in views]}


def write(folder, video, fps, rows):
    """Write the rows of one complete run to ``<folder>/tracks.json`` (atomically)."""
    atomic_write_json(Path(folder) / FILE, {"video": video, "fps": float(fps), "frame_count": len(rows),
                                            "frames": rows})


def clear(folder):
    """Remove the file of an earlier run (a new run of the video started over)."""
    try:
        (Path(folder) / FILE).unlink()
    except OSError:
        pass


def read(folder):
    """The file of the latest complete run; :class:`UserError` 404 when there is none yet."""
    data = read_json(Path(folder) / FILE)
    if not data:
        raise UserError(NOT_YET, 404)
    return data


def _clock(seconds):
    """``HH:MM:SS.mmm`` of a time in seconds (WebVTT)."""
    ms = int(round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


def cues(data):
    """``[(start_s, end_s, text)]``: runs of frames that show the same labels (left to right), one cue each.

    Frames without faces end a cue and start none; ``end_s`` is the end of the run's last frame.
    """
    fps = float(data["fps"]) or 25.0
    out, current, start, last = [], None, None, None
    for r in data["frames"]:
        text = ", ".join(f["label"] for f in sorted(r["faces"], key=lambda f: f["box"][3])) or None
        if text != current or (last is not None and r["frame"] != last + 1):
            if current:
                out.append((start / fps, (last + 1) / fps, current))
            current, start = text, r["frame"]
        last = r["frame"]
    if current:
        out.append((start / fps, (last + 1) / fps, current))
    return out


def to_vtt(data):
    """WebVTT text of :func:`cues` (one cue per run of frames showing the same faces)."""
    lines = ["WEBVTT", ""]
    for k, (a, b, text) in enumerate(cues(data), start=1):
        lines += [str(k), f"{_clock(a)} --> {_clock(b)}", text.replace("-->", "->"), ""]
    return "\n".join(lines)


CSV_COLUMNS = ("frame", "time_s", "track", "who", "kol", "confidence", "top", "right", "bottom", "left")


def to_csv(data):
    """CSV text, one line per face per frame (:data:`CSV_COLUMNS`; ``who`` is the label drawn without the
    percentage: the KOL's name, "unknown" or "?"); names a spreadsheet would run are escaped
    (:func:`shared.core.csvsafe.cell`)."""
    buf = io.StringIO()
    w = csvsafe.writer(buf, lineterminator="\r\n")
    w.writerow(CSV_COLUMNS)
    for r in data["frames"]:
        for f in r["faces"]:
            who = f["identity"] if f["known"] else f["label"] if f["label"] in ("?", "no model") else "unknown"
            w.writerow([r["frame"], f"{r['t']:.3f}", f["track"], who, 1 if f["known"] else 0,
                        f"{f['confidence']:.2f}", *f["box"]])
    return buf.getvalue()
