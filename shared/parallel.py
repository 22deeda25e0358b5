"""One process pool per server process, so CPU-heavy face work uses every core.

dlib holds Python's GIL while it detects and embeds, so threads do not help;
worker processes do. The pool is created on first use (not at import), with the
``spawn`` start method (safe inside a threaded server), one worker per CPU core,
and each worker loads the dlib networks once when it starts.

Functions sent to the pool must be top-level (picklable) functions.
"""
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor

_lock = threading.Lock()
_executor = None


def workers():
    """How many cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _warm_up():
    from . import faces

    faces.models()


def pool():
    """The process-wide :class:`ProcessPoolExecutor` (created lazily; replaced if a worker died)."""
    global _executor
    with _lock:
        if _executor is None or getattr(_executor, "_broken", False):
            _executor = ProcessPoolExecutor(max_workers=workers(),
                                            mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_warm_up)
        return _executor


def shutdown():
    """Stop the pool's workers (tests, server shutdown)."""
    global _executor
    with _lock:
        if _executor is not None:
            _executor.shutdown(wait=True, cancel_futures=True)
            _executor = None
