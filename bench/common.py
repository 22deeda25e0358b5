"""Helpers for the benchmarks: where the real data is, and a robust timer."""
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED_DATA = Path(os.environ.get("KOL_SHARED_DATA", ROOT.parent / "shared" / "data")).resolve()
FIVE = SHARED_DATA / "faces" / "five_celebs"
KNN = SHARED_DATA / "faces" / "knn_examples"
VIDEO = SHARED_DATA / "video"


def require_data():
    if not FIVE.is_dir():
        sys.exit(f"benchmark data not found at {SHARED_DATA} (set KOL_SHARED_DATA)")


def median_ms(fn, repeat=15, warmup=2):
    """Median wall time of ``fn()`` in milliseconds over ``repeat`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)
