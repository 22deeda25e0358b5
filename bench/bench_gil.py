"""Does dlib release Python's GIL while it detects and encodes? Two threads against one, same work.

    .venv/bin/python bench/bench_gil.py [--rounds N]

The same photo (obama1.jpg scaled to 853x480) is processed 2*N times: once by one thread
doing all 2*N calls, once by two threads doing N each, each thread with its own dlib
object (HOG detector; shape predictor + ResNet encoder), BLAS held to one thread so only
Python threads can run in parallel. If dlib released the GIL, two threads on two free
cores would take about half the time of one (speed-up near 2.0x); if it holds the GIL,
about the same time (near 1.0x). Two controls are timed the same way: hashlib's sha256 on a
large buffer (releases the GIL) and a pure-Python loop (holds it). On a machine busy with
other work, each thread gets a fair share of the cores, so a GIL-free call still gains from
a second thread, if less than 2x.

A second measurement does not need free cores: a pure-Python "ticker" thread counts while
the main thread makes the call. A call that holds the GIL (C code that never lets go)
stops the ticker for its whole duration (share near 0); a call that releases it lets the
ticker run at its own rate, shared with the call only for CPU (share well above 0; the
pure-Python control alternates with it every 5 ms, about 0.5). The share printed is the
ticker's count per second during the calls divided by its count per second alone.
"""
import argparse
import os
import statistics
import threading
import time

from common import KNN, require_data

require_data()

from threadpoolctl import threadpool_limits  # noqa: E402

from shared.faces import engine  # noqa: E402
from shared.faces.images import load_image  # noqa: E402


def timed(work, n_threads, calls):
    """Seconds for ``calls`` calls of ``work(state)`` split over ``n_threads`` threads (each its own state)."""
    states = [work.setup() for _ in range(n_threads)]
    barrier = threading.Barrier(n_threads + 1)

    def run(state):
        barrier.wait()
        for _ in range(calls // n_threads):
            work(state)

    threads = [threading.Thread(target=run, args=(s,)) for s in states]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - start


class Detect:
    def __init__(self, rgb):
        self.rgb = rgb

    def setup(self):
        return engine.networks().dlib.get_frontal_face_detector()

    def __call__(self, detector):
        detector(self.rgb, 1)


class Encode:
    def __init__(self, rgb, box):
        self.rgb, self.box = rgb, box

    def setup(self):
        import dlib

        folder = engine._model_dir()
        return (dlib.shape_predictor(os.path.join(folder, "shape_predictor_5_face_landmarks.dat")),
                dlib.face_recognition_model_v1(os.path.join(folder, "dlib_face_recognition_resnet_model_v1.dat")))

    def __call__(self, state):
        shape5, encoder = state
        shape = shape5(self.rgb, engine._rect(self.box))
        encoder.compute_face_descriptor(self.rgb, shape)


class Hashing:
    """hashlib releases the GIL on large buffers: the control that shows what a GIL-free call gives."""

    data = bytes(64 * 1024 * 1024)

    def setup(self):
        return None

    def __call__(self, _):
        import hashlib

        hashlib.sha256(self.data).digest()


class PurePython:
    def setup(self):
        return None

    def __call__(self, _):
        total = 0
        for i in range(300_000):
            total += i * i
        return total


def ticker_share(work, calls):
    """Ticker counts/s during ``calls`` calls of ``work`` divided by its counts/s while the main thread sleeps."""
    state = work.setup()
    count = [0]
    running = [True]

    def tick():
        while running[0]:
            count[0] += 1

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        c0, t0 = count[0], time.perf_counter()
        time.sleep(1.0)
        alone = (count[0] - c0) / (time.perf_counter() - t0)
        c0, t0 = count[0], time.perf_counter()
        for _ in range(calls):
            work(state)
        during = (count[0] - c0) / (time.perf_counter() - t0)
    finally:
        running[0] = False
        thread.join()
    return during / alone


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3, help="alternating 1-thread / 2-thread rounds")
    parser.add_argument("--calls", type=int, default=20, help="calls per measurement (split over the threads)")
    args = parser.parse_args()
    rgb = load_image(KNN / "test" / "obama1.jpg", max_side=853)
    box = engine.detect(rgb)[0]
    print(f"photo {rgb.shape[1]}x{rgb.shape[0]}, {len(os.sched_getaffinity(0))} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}, {args.calls} calls per measurement")
    print(f"{'work':34s} {'1 thread s':>10s} {'2 threads s':>11s} {'speed-up':>9s}")
    with threadpool_limits(limits=1):
        for name, work in (("HOG detect (upsample 1)", Detect(rgb)),
                           ("landmarks + ResNet encode", Encode(rgb, box)),
                           ("sha256 of 64 MiB (control, no GIL)", Hashing()),
                           ("pure Python loop (control, GIL)", PurePython())):
            one, two = [], []
            timed(work, 1, 2)  # warm-up
            for _ in range(args.rounds):
                one.append(timed(work, 1, args.calls))
                two.append(timed(work, 2, args.calls))
            o, t = statistics.median(one), statistics.median(two)
            print(f"{name:34s} {o:10.2f} {t:11.2f} {o / t:8.2f}x")
        print(f"\n{'work':34s} {'ticker share during the call':>28s}")
        for name, work in (("HOG detect (upsample 1)", Detect(rgb)),
                           ("landmarks + ResNet encode", Encode(rgb, box)),
                           ("sha256 of 64 MiB (control, no GIL)", Hashing()),
                           ("pure Python loop (control, GIL)", PurePython())):
            shares = [ticker_share(work, max(2, args.calls // 4)) for _ in range(args.rounds)]
            print(f"{name:34s} {statistics.median(shares):28.2f}")
    print(f"load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
