"""Where the CPU of ``/video_feed?pace=0`` goes: CPU seconds per second of video, stage by stage.

    .venv/bin/python bench/profile_video.py [--clips tv720,crowd1080,hamilton1080] [--no-pool] [--cv-threads N] [--seed 14]

Runs ``shared.video.streaming.stream`` on ``bench_video.py``'s clips and model with the
*inline* executor (every pass runs in this process, so every stage can be timed
here; the pool only moves the same work to other processes, plus the pickling
reported at the end). Each stage is timed with the CPU clock of the thread it runs
in (``time.thread_time``: the decoder thread, the loop, the encoder thread), and
nested stages are subtracted from the stage around them, so the rows add up to the
process's CPU time. Also counted: dlib encodings per second of video, and how many
of them were votes for tracks that already had :attr:`Settings.settle_votes` votes.

Before that, one run per clip with the real process pool (skipped with ``--no-pool``)
reports the bytes pickled to the workers per second of video and the CPU time of
pickling them here.
"""
import argparse
import collections
import functools
import os
import pickle
import sys
import tempfile
import threading
import time

from bench_video import train_model, video_folder

import video_scenes

_local = threading.local()
totals = collections.defaultdict(float)
counts = collections.Counter()


def timed(name, fn):
    """``fn`` wrapped to add its own thread CPU time (minus timed calls inside it) to ``totals[name]``."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        stack = getattr(_local, "stack", None)
        if stack is None:
            stack = _local.stack = []
        stack.append(0.0)
        start = time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            spent = time.thread_time() - start
            inner = stack.pop()
            totals[name] += spent - inner
            counts[name] += 1
            if stack:
                stack[-1] += spent
    return wrapper


def timed_iter(name, gen_fn):
    """A generator function whose every ``next`` is timed as ``name``."""

    @functools.wraps(gen_fn)
    def wrapper(*args, **kwargs):
        it = gen_fn(*args, **kwargs)
        step = timed(name, lambda: next(it, StopIteration))
        try:
            while True:
                item = step()
                if item is StopIteration:
                    return
                yield item
        finally:
            it.close()
    return wrapper


def instrument():
    """Wrap the stages of the loop (module attributes, so every caller gets the timed version)."""
    import cv2  # noqa: F401

    from shared.faces import draw, engine, frames
    from shared.recognition.model import Model
    from shared.video import flow, passes, recognizer, streaming, tracks, votes

    frames.iter_frames = timed_iter("decode (read + BGR->RGB)", frames.iter_frames)
    orig_detect = engine.detect

    def detect(rgb, upsample=1, scale=1.0):
        kind = getattr(_local, "kind", "other")
        counts[f"HOG pixels: {kind}"] += rgb.shape[0] * rgb.shape[1]
        return timed(f"HOG detect: {kind}", orig_detect)(rgb, upsample, scale)
    engine.detect = detect
    engine.landmarks = timed("landmarks (5 points)", engine.landmarks)
    engine.align = timed("align (face chips)", engine.align)
    orig_embed = engine.embed

    def embed(chips):
        counts["encodings"] += len(chips)
        counts[f"encodings: {getattr(_local, 'kind', 'other')}"] += len(chips)
        return orig_embed(chips)
    engine.embed = timed("ResNet embed", embed)
    passes._resize = timed("resize for passes (full/discover/region)", passes._resize)
    orig_full = passes.FullPass.__init__

    def full_init(self, executor, rgb, settings, scale=None, tiles=None, embed=True, **kw):
        _local.kind = "full pass" if embed else "discovery pass"
        try:
            return orig_full(self, executor, rgb, settings, scale, tiles, embed, **kw)
        finally:
            _local.kind = "other"
    passes.FullPass.__init__ = timed("full/discover pass other (slicing, Call)", full_init)
    passes.FullPass.result = timed("pass results (map, nms)", passes.FullPass.result)
    orig_region = passes.RegionPass.__init__

    def region_init(self, *args):
        _local.kind = "region pass"
        counts["region crops"] += len(args[2])
        try:
            return orig_region(self, *args)
        finally:
            _local.kind = "other"
    passes.RegionPass.__init__ = timed("region pass other (crop, Call)", region_init)
    passes.RegionPass.result = timed("pass results (map, nms)", passes.RegionPass.result)
    R = recognizer.Recognizer
    R.prepare = timed("schedule (flow image, cut thumbnail)", R.prepare)
    flow.Flow.follow = timed("optical flow (LK)", flow.Flow.follow)
    flow.Flow.seed = timed("flow points (goodFeaturesToTrack)", flow.Flow.seed)
    votes.Voting.vote = timed("predict + votes", votes.Voting.vote)
    R.step = timed("step other (matching, views)", R.step)
    R.plan = timed("plan (region scheduling)", R.plan)
    R.appearances = timed("summary / panel text", R.appearances)
    Model.predict = timed("model.predict", Model.predict)
    orig_vote = tracks.Track.vote

    def vote(self, slug, confidence, *more):
        counts["votes"] += 1
        if len(self.votes) >= recognizer.Settings.settle_votes:
            counts["votes for settled tracks"] += 1
        return orig_vote(self, slug, confidence, *more)
    tracks.Track.vote = vote
    draw.overlay = timed("draw overlay (boxes, labels, panel)", draw.overlay)

    class TimedCV:
        """``cv2`` for :mod:`shared.video.streaming`, with the JPEG encoder's two steps timed."""

        cvtColor = staticmethod(timed("JPEG: RGB->BGR copy", cv2.cvtColor))
        imencode = staticmethod(timed("JPEG: imencode", cv2.imencode))

        def __getattr__(self, name):
            return getattr(cv2, name)
    streaming.cv2 = TimedCV()
    streaming.stream = timed_iter("stream other (status, parts)", streaming.stream)


def profile(folder, model, seconds):
    """Run the stream inline; print CPU seconds per second of video for each stage."""
    from shared.video import streaming

    totals.clear()
    counts.clear()
    cpu = time.process_time()
    wall = time.perf_counter()
    n = sum(1 for p in streaming.stream(folder, model, pace=False, executor=None) if p.startswith(b"--frame\r\n"))
    cpu = time.process_time() - cpu
    wall = time.perf_counter() - wall
    video_s = seconds * n
    print(f"  {n} frames, {cpu / video_s:.3f} CPU s per video s in all (inline, one core: {n / wall:.1f} fps)")
    for name, spent in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"    {spent / video_s:7.3f}  {100 * spent / cpu:5.1f} %  {name}  ({counts[name]} calls)")
    rest = cpu - sum(totals.values())
    print(f"    {rest / video_s:7.3f}  {100 * rest / cpu:5.1f} %  (untimed: threads' other work, GC, queues)")
    print("  " + ", ".join(f"{k} {v / video_s / 1e6:.2f} M/s" for k, v in counts.items() if k.startswith("HOG pix")))
    print("  " + ", ".join(f"{k} {v / video_s:.1f}/s" for k, v in counts.items() if k.startswith("encodings:"))
          + f", region crops {counts['region crops']}")
    print(f"  encodings: {counts['encodings'] / video_s:.1f} per video s; votes {counts['votes']}, "
          f"of which for already settled tracks {counts['votes for settled tracks']}")


def pickling(folder, model, seconds):
    """Run the stream with the real pool; bytes and CPU of pickling the calls' arguments here."""
    from shared.faces import offload, parallel
    from shared.video import streaming

    sent = collections.Counter()
    orig = offload.Call.__init__

    def init(self, executor, fn, *args):
        t = time.thread_time()
        size = len(pickle.dumps(args, protocol=pickle.HIGHEST_PROTOCOL))
        sent["cpu"] += time.thread_time() - t
        sent["bytes"] += size
        sent[fn.__name__] += 1
        orig(self, executor, fn, *args)
    offload.Call.__init__ = init
    try:
        n = sum(1 for p in streaming.stream(folder, model, pace=False, executor=parallel.executor())
                if p.startswith(b"--frame\r\n"))
    finally:
        offload.Call.__init__ = orig
    video_s = seconds * n
    print(f"  pool: {sent['bytes'] / video_s / 1e6:.1f} MB pickled per video s, pickling {sent['cpu'] / video_s:.3f} "
          f"CPU s per video s here (the workers unpickle as much); calls: "
          + ", ".join(f"{k} {v}" for k, v in sent.items() if k not in ("cpu", "bytes")))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", default="tv720,crowd1080,hamilton1080")
    parser.add_argument("--no-pool", action="store_true", help="skip the pickling run")
    parser.add_argument("--cv-threads", type=int, default=None, help="cv2.setNumThreads for this process")
    parser.add_argument("--seed", type=int, default=video_scenes.SEED, help="seed of the composite clips")
    args = parser.parse_args()
    from shared.faces import engine, parallel

    if args.cv_threads is not None:
        import cv2
        cv2.setNumThreads(args.cv_threads)
    clips, kols, _ = video_scenes.build(args.seed)
    model = train_model(kols)
    engine.networks()
    # As in the pool's workers (shared.faces.parallel): one BLAS thread. Otherwise dlib's OpenBLAS threads
    # spin between the encoder's calls and, inline, add about 0.6 CPU s per video s that the
    # server never spends (measured on tv720: 1.84 in all against 1.28).
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)
    print(f"load average: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.clips.split(","):
            path, _truth = clips[name]
            folder, info = video_folder(tmp, path)
            print(name)
            sys.stdout.flush()
            if not args.no_pool:
                pickling(folder, model, 1.0 / info.fps)
            if not _done:
                instrument()
                _done.append(True)
            profile(folder, model, 1.0 / info.fps)
            sys.stdout.flush()
    parallel.shutdown()


_done = []  # instrument() has run (it wraps functions, so only once)


if __name__ == "__main__":
    main()
