"""Screen time (issue 24): how long each KOL is on screen across finished video analyses, per video, and when.

Read from the files a finished analysis leaves (:mod:`shared.library.analysis`): each video's
``appearances.json`` (the rows of :func:`shared.video.appearances.summarize` and the face crops saved
while it ran). A KOL's *seconds* in a video are the frames it was drawn on over the video's frame rate
(the summary's ``frames / fps``); its *moments* are the summary's time ranges (gaps under 0.5 s
bridged), each with the crop of that KOL saved inside the range, if any. Strangers ("unknown #n")
are not counted: screen time is for KOLs.

:func:`report` answers::

    {"kols": [{"identity", "seconds", "videos": [{"analysis", "video", "filename", "seconds",
               "moments": [{"start_s", "end_s", "thumb"}]}]}],        most seconds first
     "videos": [{"analysis", "video", "filename", "duration_s", "kols": [{"identity", "seconds",
                 "ranges": [[start_s, end_s]]}]}],                    in the order given
     "max_seconds": float}                                            the longest KOL total (for the chart)

``thumb`` is the crop's file name in the video's ``thumbs/`` (``None``: none was saved in that range).
Times are seconds from the start of each video.
"""
import io
from pathlib import Path

from shared.core import csvsafe
from shared.library import analysis


def finished_videos(root, reader, chosen=None, videos=None):
    """``[(analysis id, video record, video folder)]`` of every finished video ``reader`` may read, newest
    analysis first; ``chosen``: only the videos of these analysis ids; ``videos``: only these
    ``"<analysis id>:<video id>"`` (unknown or unreadable ones are left out)."""
    out = []
    for item in analysis.listing(root, reader):
        if chosen and item["analysis"] not in chosen:
            continue
        folder = Path(root) / item["analysis"]
        for v in analysis.read_record(folder)["videos"]:
            if videos and f"{item['analysis']}:{v['video']}" not in videos:
                continue
            if (folder / v["video"] / "done.json").is_file():
                out.append((item["analysis"], v, folder / v["video"]))
    return out


def _thumb(thumbs, identity, fps, a, b):
    """The first crop of ``identity`` saved between ``a`` and ``b`` seconds, or ``None`` (the summary's times
    are rounded to 0.01 s, so a frame within one frame's time of the range counts)."""
    slack = 1.0 / fps
    for th in thumbs:
        if th["identity"] == identity and a - slack <= th["frame"] / fps <= b + slack:
            return th["file"]
    return None


def report(videos, kol=None):
    """The screen-time report (module docstring) of ``videos`` (:func:`finished_videos`); ``kol``: only that KOL."""
    kols, rows_by_video = {}, []
    for analysis_id, v, vdir in videos:
        data = analysis.read_appearances(vdir)
        fps = float(data.get("fps") or v["fps"]) or 25.0
        here = []
        for row in data["appearances"]:
            name = row.get("identity")
            if not name or (kol and name != kol):
                continue
            seconds = round(row["frames"] / fps, 2)
            moments = [{"start_s": a, "end_s": b, "thumb": _thumb(data.get("thumbs", []), name, fps, a, b)}
                       for a, b in row["ranges"]]
            entry = kols.setdefault(name, {"identity": name, "seconds": 0.0, "videos": []})
            entry["seconds"] = round(entry["seconds"] + seconds, 2)
            entry["videos"].append({"analysis": analysis_id, "video": v["video"], "filename": v["filename"],
                                    "seconds": seconds, "moments": moments})
            here.append({"identity": name, "seconds": seconds, "ranges": row["ranges"]})
        rows_by_video.append({"analysis": analysis_id, "video": v["video"], "filename": v["filename"],
                              "duration_s": v["duration_s"], "kols": here})
    ordered = sorted(kols.values(), key=lambda k: (-k["seconds"], k["identity"]))
    return {"kols": ordered, "videos": rows_by_video, "max_seconds": max((k["seconds"] for k in ordered), default=0.0)}


CSV_COLUMNS = ("kol", "analysis", "video", "filename", "start_s", "end_s", "seconds", "kol_seconds_in_video")


def to_csv(rep):
    """CSV text of a report: one line per moment of each KOL (:data:`CSV_COLUMNS`), KOLs in the report's order;
    names a spreadsheet would run as formulas are escaped (:func:`shared.core.csvsafe.cell`)."""
    buf = io.StringIO()
    w = csvsafe.writer(buf, lineterminator="\r\n")
    w.writerow(CSV_COLUMNS)
    for k in rep["kols"]:
        for v in k["videos"]:
            for m in v["moments"]:
                w.writerow([k["identity"], v["analysis"], v["video"], v["filename"], f"{m['start_s']:.2f}",
                            f"{m['end_s']:.2f}", f"{m['end_s'] - m['start_s']:.2f}", f"{v['seconds']:.2f}"])
    return buf.getvalue()
