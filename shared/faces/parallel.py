"""The worker processes of a server process (one executor), so CPU-heavy face work uses every core.

dlib's HOG detector releases Python's GIL while it scans but its ResNet encoder holds
it (bench/bench_gil.py), so threads cannot share out the encoding; worker processes can.
:func:`executor` starts them on first use (not at import), with the ``spawn`` start method
(safe inside a threaded server), one worker per CPU core; each worker loads the dlib networks
once when it starts, uses one BLAS thread, and exits when its server process is gone.

Functions sent to the workers must be top-level (picklable) functions. ("pool" in this
project is the training pool, :mod:`shared.training.pool`, never these workers.)
"""
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor

_lock = threading.Lock()
_executor = None


_size = 0  # worker processes asked for (FACE_WORKERS); 0: one per core


def limit(n):
    """Make the executor ``n`` worker processes (0: one per core); ``make_app`` passes FACE_WORKERS."""
    global _size
    _size = max(0, int(n))


def workers():
    """How many worker processes the executor runs: FACE_WORKERS if set, else the cores this process may use."""
    if _size:
        return _size
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _warm_up(parent_pid):
    """Worker start: load dlib once, keep BLAS to one thread, and exit with the parent.

    The executor already runs one process per core; dlib's OpenBLAS would otherwise start
    a thread per core inside every worker, and the oversubscribed cores made the
    align step no faster than one process (measured on 2 cores: 1.0x instead of 1.8x).
    A worker whose server was killed (SIGKILL: no clean shutdown) ends itself.
    """
    from threadpoolctl import threadpool_limits

    from shared.faces import engine

    engine.networks()  # load dlib, and with it its BLAS, first
    threadpool_limits(limits=1)
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True).start()


def _exit_with_parent(parent_pid, every_s=1.0):
    while os.getppid() == parent_pid:
        time.sleep(every_s)
    os._exit(0)


def executor():
    """The process-wide :class:`ProcessPoolExecutor` of worker processes (created lazily; replaced if a worker died)."""
    global _executor
    with _lock:
        if _executor is None or getattr(_executor, "_broken", False):
            _executor = ProcessPoolExecutor(max_workers=workers(),
                                            mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_warm_up, initargs=(os.getpid(),))
        return _executor


def shutdown():
    """Stop the worker processes (tests, server shutdown)."""
    global _executor
    with _lock:
        if _executor is not None:
            _executor.shutdown(wait=True, cancel_futures=True)
            _executor = None
