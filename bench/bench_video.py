"""Video recognition: speed and quality of our stream against face_recognition's own ways, same run.

    .venv/bin/python bench/bench_video.py [--plain-frames 12] [--fast-frames 120] [--clips tv720,crowd1080,hamilton1080]
                                          [--real friends_tux,sweden_promo] [--cuts] [--before] [--skip-baselines]
                                          [--seed 14]

Real clips (``--real``, :mod:`real_clips`; ``--real ''`` for none): the two development clips of
``../shared/data/video/dev/`` (640x360, real cuts), scored against ``bench/truth/<clip>.json``
(every second frame): face-frames named right, named as another KOL (and its share of all named
face-frames), KOLs missed, strangers named, names drawn over no truth face, name changes per
face. Each clip has its own model: its people plus 20 lfw_dev KOLs. Three ways: **ours** (as
``/video_feed?pace=0``; its per-frame answers are read from the ``tracks.json`` the stream writes,
the file behind ``GET /video_tracks.json``), the **plain** per-frame loop (quality on every truth
frame from the cached boxes and embeddings, speed timed on the first ``--plain-frames`` frames) and
the documented **fast** path (every frame). ``--cuts`` prints the cut detector's hits, misses and
false alarms on the clips' known cuts.

Clips (made by ``bench/video_scenes.py`` into ``bench/out/``, deterministic):

- ``tv720``: 1280x720, 23.976 fps, 12 s, a cut every 2-4 s, 5 faces per scene
  (90-170 px, moving, turning, passing in front of each other);
- ``crowd1080``: 1920x1080, 25 fps, 10 s, cuts every 2-4 s, 7 small faces per
  scene (40-80 px);
- ``hamilton1080``: ``short_hamilton_clip.mp4`` upscaled to 1920x1080 (29.97 fps).

``--seed`` makes other composite clips (other scenes, people and motion; same kinds): a
setting chosen while looking at the default clips is checked on clips it has not seen.

Model: 24 ``lfw_dev`` people as KOLs (10 photos each) plus Lin-Manuel Miranda and
Alex Lacamoire (one photo each); faces of other people in the clips are strangers.

For each clip, three ways, each including decode, naming, drawing and JPEG encoding (all three
encode frames at the stream's size, ``--stream-side``, as the video server sends them):

- **ours**: ``shared.video.streaming.stream`` exactly as ``/video_feed?pace=0`` runs it,
  with the server's worker processes (every core);
- **plain**: ``face_recognition.face_locations`` + ``face_encodings`` on every frame
  (the library's defaults), timed on the first ``--plain-frames`` frames;
- **before** (``--before``): this project's loop before the harder clips existed
  (commit :data:`BEFORE`: HOG every 4 frames on a 960x540 copy), run the same way;
- **fast**: face_recognition's documented fast path (``facerec_from_webcam_faster.py``):
  quarter-size frames, every other frame, boxes of the last processed frame drawn
  on the others; first ``--fast-frames`` frames.

Printed: fps, x real time (fps / the clip's fps), ``cpu/s``: CPU seconds used (all
processes, the worker processes included) per second of video, which depends little on
other work on the machine (below 2 / 1.5 = 1.33 means 1.5x real time is within
reach of 2 idle cores), and for the composite clips the
quality against the truth (see ``video_scenes.score``): share of face-frames found,
share named right (the KOL, or "unknown" for a stranger), strangers named (must be
0), KOLs given another KOL's name, and how often the answer on a face changed (a
face settling from "unknown" to its name counts once); the "ours" rows also give the seconds to the
stream's first frame, against the 1 s asked from opening the player (:data:`FIRST_FRAME_S`; after a
restart and after a new model, ``pytest -s -k first_frame tests/test_video.py`` prints it over HTTP).
The machine's load average is printed too:
compare ratios within one run, not across runs.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import VIDEO, require_data

import real_clips
import video_scenes


def train_model(kols):
    import numpy as np

    from shared.recognition.model import train
    from shared.faces import engine, images
    from shared.training.pool import kol_slug

    X, slugs, names = video_scenes.enrolment(kols)
    X = list(X)
    for name, photo in [("Lin-Manuel Miranda", "lin-manuel-miranda.png"), ("Alex Lacamoire", "alex-lacamoire.png")]:
        found = engine.analyze(images.load_image(VIDEO / photo))
        X.append(found[0].embedding)
        slugs.append(kol_slug(name))
        names[kol_slug(name)] = name
    return train(np.array(X), slugs, names)


def video_folder(root, path):
    """A folder laid out like an uploaded video (``shared.video.videos``), for ``streaming.stream``."""
    from shared.faces import frames

    info = frames.probe(path)
    folder = Path(root) / "0123456789abcdef"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    os.symlink(path, folder / "source.mp4")
    meta = {"video": folder.name, "filename": Path(path).name, "fps": round(info.fps, 3), "frames": info.frames,
            "width": info.width, "height": info.height, "size": 0, "uploaded": ""}
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder, info


def cpu_seconds(executor=None):
    """CPU time (user + system, seconds) used so far by this process and the executor's worker processes."""
    total = time.process_time()
    for proc in (getattr(executor, "_processes", None) or {}).values():
        with open(f"/proc/{proc.pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def ours(folder, model, executor, max_side, from_file=False):
    """Our stream as ``/video_feed?pace=0`` runs it: ``(fps, parts, shown, cpu seconds, seconds to the first part)``.

    from_file: ``shown`` is read from the ``tracks.json`` the stream wrote (``GET /video_tracks.json``)
    rather than from its ``observe`` hook.
    """
    from shared.video import streaming

    shown = {}

    def observe(index, views):
        if not from_file:
            shown[index] = [(v.box, v.slug) for v in views]

    cpu = cpu_seconds(executor)
    started = time.perf_counter()
    parts, first_s = 0, None
    for p in streaming.stream(folder, model, pace=False, executor=executor, observe=observe, max_side=max_side):
        if p.startswith(b"--frame\r\n"):
            parts += 1
            first_s = time.perf_counter() - started if first_s is None else first_s
    elapsed = time.perf_counter() - started
    if from_file:
        shown = tracks_shown(folder, model)
    return parts / elapsed, parts, shown, cpu_seconds(executor) - cpu, first_s


def tracks_shown(folder, model):
    """``{frame: [(box, slug or None)]}`` from the stream's per-frame file (shared.video.framelog)."""
    from shared.video import framelog

    by_name = {v: k for k, v in model.names.items()}
    return {row["frame"]: [(tuple(f["box"]), by_name.get(f["identity"]) if f["known"] else None)
                           for f in row["faces"]]
            for row in framelog.read(folder)["frames"]}


#: Asked: at most this many seconds from opening the player to its first frame (warm workers); the
#: "ours" rows print the time from the stream's start to its first part against it.
FIRST_FRAME_S = 1.0

#: The commit this lane started from: its loop is the "before" row (``--before``).
BEFORE = "5a1427d"


def before(path, model, executor):
    """The loop as it was at :data:`BEFORE` (detect every 4 frames on a 960x540 copy), run the same way."""
    import importlib.util
    import subprocess

    from common import ROOT

    target = video_scenes.OUT / f"tracking_{BEFORE}.py"
    if not target.is_file():
        target.write_text(subprocess.run(["git", "show", f"{BEFORE}:shared/video/tracking.py"], cwd=ROOT, check=True,
                                         capture_output=True, text=True).stdout)
    spec = importlib.util.spec_from_file_location("shared.tracking_before", target)
    old = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old)
    old.detect_job, old.embed_job = video_scenes.old_detect_job, video_scenes.old_embed_job  # picklable
    shown = {}
    cpu = cpu_seconds(executor)
    started = time.perf_counter()
    for i, _t, rgb, views, rec in old.run(path, model, executor=executor):
        old.encode(old.draw(rgb, views, rec))
        shown[i] = [(v.box, v.identity) for v in views]
    return len(shown) / (time.perf_counter() - started), shown, cpu_seconds(executor) - cpu


def _draw_encode(rgb, boxes, side):
    """Boxes drawn and the frame JPEG-encoded at the same size as ours (longest side ``side``, 0: as decoded)."""
    import cv2

    h, w = rgb.shape[:2]
    s = side / max(h, w) if side and max(h, w) > side else 1.0
    out = cv2.resize(rgb, (round(w * s), round(h * s)), interpolation=cv2.INTER_LINEAR) if s < 1 else rgb.copy()
    for box, _ in boxes:
        top, right, bottom, left = (int(round(v * s)) for v in box)
        cv2.rectangle(out, (left, top), (right, bottom), (0, 255, 0), 2)
    cv2.imencode(".jpg", cv2.cvtColor(out, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80])


def plain(path, model, limit, side):
    """face_locations + face_encodings on every frame, named by the same model."""
    import face_recognition

    from shared.faces import frames

    shown = {}
    cpu = time.process_time()
    started = time.perf_counter()
    for i, _, rgb in frames.iter_frames(path, max_frames=limit):
        locs = face_recognition.face_locations(rgb)
        enc = face_recognition.face_encodings(rgb, locs)
        names = [p.slug for p in model.predict(enc)] if enc else []
        shown[i] = list(zip(locs, names))
        _draw_encode(rgb, shown[i], side)
    return len(shown) / (time.perf_counter() - started), shown, time.process_time() - cpu


def fast(path, model, limit, side):
    """face_recognition's documented fast path: quarter size, every other frame."""
    import cv2
    import face_recognition

    from shared.faces import frames

    shown, last = {}, []
    cpu = time.process_time()
    started = time.perf_counter()
    for i, _, rgb in frames.iter_frames(path, max_frames=limit):
        if i % 2 == 0:
            small = cv2.resize(rgb, (0, 0), fx=0.25, fy=0.25)
            locs = face_recognition.face_locations(small)
            enc = face_recognition.face_encodings(small, locs)
            names = [p.slug for p in model.predict(enc)] if enc else []
            last = [((t * 4, r * 4, b * 4, l * 4), n) for (t, r, b, l), n in zip(locs, names)]
        shown[i] = last
        _draw_encode(rgb, last, side)
    return len(shown) / (time.perf_counter() - started), shown, time.process_time() - cpu


def quality(truth, shown):
    if truth is None:
        return "-"
    c = video_scenes.score(truth, shown)
    n = max(1, c["face_frames"])
    return (f"found {100 * c['found'] / n:5.1f}%  right {100 * c['right'] / n:5.1f}%  "
            f"strangers named {c['strangers_named']}/{c['stranger_frames']}  other KOL {c['wrong_kol']}  "
            f"name changes {c['changes']} on {c['faces']} faces")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--plain-frames", type=int, default=12)
    parser.add_argument("--fast-frames", type=int, default=120)
    parser.add_argument("--clips", default="tv720,crowd1080,hamilton1080")
    parser.add_argument("--real", default=",".join(real_clips.CLIPS), help="real dev clips ('' for none)")
    parser.add_argument("--cuts", action="store_true", help="check the cut detector on the real clips' known cuts")
    parser.add_argument("--skip-baselines", action="store_true")
    parser.add_argument("--before", action="store_true", help=f"also run the loop of commit {BEFORE}")
    parser.add_argument("--stream-side", type=int, default=None,
                        help="longest side of the streamed frames (default: the server's, 1280; 0: as decoded)")
    parser.add_argument("--seed", type=int, default=video_scenes.SEED, help="seed of the composite clips")
    args = parser.parse_args()
    require_data()
    from shared.faces import parallel
    from shared.video import streaming

    side = streaming.STREAM_SIDE if args.stream_side is None else args.stream_side

    real = [c for c in args.real.split(",") if c]
    if args.cuts:
        for clip in real:
            hits, misses, alarms = real_clips.cut_check(clip)
            print(f"cuts {clip}: {len(hits)} of {len(hits) + len(misses)} found, missed {misses}, "
                  f"false alarms {len(alarms)} {alarms}")
    executor = parallel.executor()
    streaming.warm(executor, parallel.workers())
    print(f"cores: {parallel.workers()}, load average before: {os.getloadavg()[0]:.2f}")
    for clip in real:
        real_clip(clip, executor, side, args)
    if not args.clips:
        parallel.shutdown()
        return
    t0 = time.perf_counter()
    clips, kols, _strangers = video_scenes.build(args.seed)
    model = train_model(kols)
    print(f"clips and model ready in {time.perf_counter() - t0:.1f} s: {len(model.classes)} KOLs, "
          f"{len(model.X)} photos")
    print(f"{'clip':13s} {'way':6s} {'frames':>6s} {'fps':>6s} {'x real':>6s} {'cpu/s':>6s}  quality")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in [c for c in args.clips.split(",") if c]:
            path, truth = clips[name]
            folder, info = video_folder(tmp, path)
            src = info.fps
            fps, n, shown, cpu, first_s = ours(folder, model, executor, side)
            results[(name, "ours")] = fps
            print(f"{name:13s} {'ours':6s} {n:6d} {fps:6.1f} {fps / src:6.2f} {cpu / (n / src):6.2f}  "
                  f"{quality(truth, shown)}; first frame {first_s:.2f} s (target {FIRST_FRAME_S:g} s)")
            sys.stdout.flush()
            if args.before:
                fps, shown, cpu = before(path, model, executor)
                results[(name, "before")] = fps
                print(f"{name:13s} {'before':6s} {len(shown):6d} {fps:6.1f} {fps / src:6.2f} "
                      f"{cpu / (len(shown) / src):6.2f}  {quality(truth, shown)}")
                sys.stdout.flush()
            if args.skip_baselines:
                continue
            for way, fn, limit in (("plain", plain, args.plain_frames), ("fast", fast, args.fast_frames)):
                fps, shown, cpu = fn(path, model, limit, side)
                results[(name, way)] = fps
                print(f"{name:13s} {way:6s} {len(shown):6d} {fps:6.1f} {fps / src:6.2f} "
                      f"{cpu / (len(shown) / src):6.2f}  {quality(truth, shown)}")
                sys.stdout.flush()
            print(f"{'':13s} ours / plain = {results[(name, 'ours')] / results[(name, 'plain')]:.1f}x, "
                  f"ours / fast = {results[(name, 'ours')] / results[(name, 'fast')]:.2f}x")
    print(f"load average after: {os.getloadavg()[0]:.2f} (other work on the machine lowers every number)")
    parallel.shutdown()


def real_clip(clip, executor, side, args):
    """Ours, the plain loop and the fast path on one real dev clip, scored against its truth (module docstring)."""
    path = real_clips.DEV / f"{clip}.mp4"
    truth = real_clips.load_truth(clip)
    model = real_clips.model_for(clip)
    print(f"{clip}: {len(model.classes)} KOLs ({len(model.X)} photos), {len(truth['frames_scored'])} truth frames")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder, info = video_folder(tmp, path)
        fps, n, shown, cpu, _first = ours(folder, model, executor, side, from_file=True)
        rows["ours"] = fps
        print(f"{clip:13s} {'ours':6s} {n:6d} {fps:6.1f} {fps / info.fps:6.2f} {cpu / (n / info.fps):6.2f}  "
              f"{real_clips.describe(real_clips.score(truth, shown))}")
        sys.stdout.flush()
    if args.skip_baselines:
        return
    fps = real_clips.plain_speed(clip, model, args.plain_frames)
    rows["plain"] = fps
    shown = real_clips.plain_shown(clip, model, truth["frames_scored"])
    print(f"{clip:13s} {'plain':6s} {len(shown):6d} {fps:6.1f} {fps / info.fps:6.2f} {'-':>6s}  "
          f"{real_clips.describe(real_clips.score(truth, shown))}")
    fps, shown, cpu = fast(path, model, None, side)
    rows["fast"] = fps
    print(f"{clip:13s} {'fast':6s} {len(shown):6d} {fps:6.1f} {fps / info.fps:6.2f} "
          f"{cpu / (len(shown) / info.fps):6.2f}  {real_clips.describe(real_clips.score(truth, shown))}")
    print(f"{'':13s} ours / plain = {rows['ours'] / rows['plain']:.1f}x, ours / fast = {rows['ours'] / rows['fast']:.2f}x")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
