"""Video recognition speed: our tracking loop against detecting and encoding every face in every frame.

    .venv/bin/python bench/bench_video.py [--naive-frames N]

For two clips, processed as fast as possible (no pacing):

- ``short_hamilton_clip.mp4`` (640x360, 29.97 fps, 275 frames);
- a 1280x720 clip composed in a temporary folder from the AOC clip (512x512,
  25 fps, 200 frames): one copy upscaled to 720x720 and two smaller copies,
  mirrored and shifted in time, so three faces are in frame at once;

it prints the processing fps of the full per-frame work a viewer gets (decode,
track, recognise, draw boxes/labels/panel, JPEG-encode) with the jobs on the
process pool (both cores) and inline (one core), the source fps, and their
ratio (processing / source: at least 1 means every frame can be shown at the
source's speed). In the same run it prints the fps of the naive approach,
``face_recognition.face_locations`` + ``face_encodings`` on every frame (timed
on the first ``--naive-frames`` frames, default 40, since it is slow), and
the gain. The model is trained on the spot as in tests/test_video.py.
"""
import argparse
import os
import sys
import tempfile
import time

from common import FIVE, VIDEO, require_data


def train_model():
    """The test model: Lin-Manuel Miranda and Alex Lacamoire (one photo each) plus the five_celebs train_ photos."""
    import numpy as np

    from shared import classifier, faces, images
    from shared.pool import kol_slug

    X, slugs, names = [], [], {}
    people = [("Lin-Manuel Miranda", [VIDEO / "lin-manuel-miranda.png"]),
              ("Alex Lacamoire", [VIDEO / "alex-lacamoire.png"])]
    people += [(d.name.replace("_", " ").title(), sorted(d.glob("train_*.jpg")))
               for d in sorted(FIVE.iterdir()) if d.is_dir()]
    for name, paths in people:
        for path in paths:
            found = faces.analyze(images.load_image(path))
            if len(found) == 1:
                slug = kol_slug(name)
                X.append(found[0].embedding)
                slugs.append(slug)
                names[slug] = name
    return classifier.train(np.array(X), slugs, names)


def make_720p(folder):
    """Compose a 1280x720 clip with three faces from the AOC clip; returns its path."""
    import cv2
    import numpy as np

    from shared import frames

    src = VIDEO / "sadtalker_WDA_AlexandriaOcasioCortez_000.mp4"
    info = frames.probe(src)
    clip = [cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) for _, _, rgb in frames.iter_frames(src)]
    n = len(clip)
    path = os.path.join(folder, "aoc_720p.mp4")
    out = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), info.fps, (1280, 720))
    try:
        for i in range(n):
            canvas = np.full((720, 1280, 3), 24, np.uint8)
            canvas[:, :720] = cv2.resize(clip[i], (720, 720), interpolation=cv2.INTER_CUBIC)
            canvas[:360, 760:1120] = cv2.flip(cv2.resize(clip[(i + 60) % n], (360, 360)), 1)
            canvas[360:, 880:1240] = cv2.resize(clip[(i + 120) % n], (360, 360))
            out.write(canvas)
    finally:
        out.release()
    return path


def ours(path, model, executor):
    """Processing fps of the full viewer pipeline; also returns the recognizer."""
    from shared import tracking

    started = time.perf_counter()
    n = 0
    rec = None
    for _, _, rgb, views, rec in tracking.run(path, model, executor=executor):
        tracking.encode(tracking.draw(rgb, views, rec))
        n += 1
    return n / (time.perf_counter() - started), n, rec


def naive(path, limit):
    """fps of face_locations + face_encodings on every frame (first ``limit`` frames)."""
    import face_recognition

    from shared import frames

    started = time.perf_counter()
    n = 0
    for _, _, rgb in frames.iter_frames(path, max_frames=limit):
        face_recognition.face_encodings(rgb, face_recognition.face_locations(rgb))
        n += 1
    return n / (time.perf_counter() - started)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--naive-frames", type=int, default=40)
    args = parser.parse_args()
    require_data()
    import numpy as np

    from shared import frames, parallel, tracking

    model = train_model()
    pool = parallel.pool()
    for f in [pool.submit(tracking.detect_job, np.zeros((64, 64, 3), np.uint8), 0)
              for _ in range(parallel.workers())]:
        f.result()  # workers started and their dlib networks loaded before timing
    load = os.getloadavg()[0]
    print(f"cores: {parallel.workers()}, load average before: {load:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        clips = [("640x360 hamilton", VIDEO / "short_hamilton_clip.mp4", 1.5),
                 ("1280x720 AOC x3", make_720p(tmp), 1.0)]
        print(f"{'clip':18s} {'mode':16s} {'frames':>6s} {'fps':>7s} {'src fps':>7s} {'ratio':>6s} "
              f"{'target':>6s}  faces/frame  detections  recognitions")
        for label, path, target in clips:
            src = frames.probe(path).fps
            measured = {}
            for mode, executor in (("ours, 2 cores", pool), ("ours, 1 core", None)):
                fps, n, rec = ours(path, model, executor)
                measured[mode] = fps
                shown = sum(sum(b - a + 1 for a, b in t.spans) for t in rec.finished + rec.tracks)
                print(f"{label:18s} {mode:16s} {n:6d} {fps:7.1f} {src:7.2f} {fps / src:6.2f} {target:6.1f}  "
                      f"{shown / max(n, 1):11.2f}  {rec.detections:10d}  {rec.recognitions:12d}")
            nfps = naive(path, args.naive_frames)
            print(f"{label:18s} {'naive (library)':16s} {args.naive_frames:6d} {nfps:7.1f} {src:7.2f} "
                  f"{nfps / src:6.2f} {'':6s}  ours (2 cores) is {measured['ours, 2 cores'] / nfps:.1f}x faster")
            sys.stdout.flush()
    print(f"load average after: {os.getloadavg()[0]:.2f} (other work on the machine lowers every number)")
    parallel.shutdown()


if __name__ == "__main__":
    main()
