"""The queue's worker command: ``python -m process_server.worker [--workers N] [--burst]``.

Reads the same settings as the servers (``DATA_DIR``, ``REDIS_URL``, ... from the
environment, see :func:`shared.core.config.load`) and runs N RQ workers
(:func:`shared.training.jobqueue.worker.work`), one process each; N defaults to this machine's cores
(setting ``WORKERS``). A worker that dies (killed, out of memory) is started again;
Each serves the training queues (:data:`shared.training.jobqueue.steps.QUEUES`) and then the video
analyses' (:data:`shared.library.analysis.QUEUE`), whose RQ jobs name their function by dotted path.
SIGTERM or Ctrl-C stops them all (a job in progress is finished first by RQ's warm
shutdown, or retried elsewhere if the worker is killed).

Without ``REDIS_URL`` it connects to the Redis that ``bin/redis`` starts on this machine
(127.0.0.1:``REDIS_PORT``), with the password kept in ``DATA_DIR/instance/redis_password``
(:func:`shared.core.config.local_redis_url`). On a second machine: the same command with ``REDIS_URL``
pointing at the first machine's Redis, its password included, and ``DATA_DIR`` at the same
data folder (mounted, e.g. over NFS).
"""
import argparse
import os
import signal
import subprocess
import sys
import time

from shared.core import config
from shared.faces import parallel
from shared.library import analysis
from shared.training.jobqueue.steps import QUEUES
from shared.training.jobqueue.worker import work

#: The queues every worker serves, in order: the training's, then the video analyses'.
SERVED = QUEUES + (analysis.QUEUE,)


def _settings():
    """``(REDIS_URL, DATA_DIR)`` as the servers read them (:func:`shared.core.config.load`; no app needed)."""
    settings = config.load()
    return settings["REDIS_URL"], settings["DATA_DIR"]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m process_server.worker", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WORKERS") or 0),
                        help="worker processes (default: one per core)")
    parser.add_argument("--burst", action="store_true", help="stop once the queues are empty")
    parser.add_argument("--no-preload", action="store_true", default=os.environ.get("WORKER_PRELOAD") == "0",
                        help="do not load dlib before taking work (quicker start, slower first job)")
    args = parser.parse_args(argv)
    count = args.workers or parallel.workers()
    if count == 1:
        redis_url, data_dir = _settings()
        work(redis_url, data_dir, burst=args.burst, preload=not args.no_preload, queues=SERVED)
        return 0
    return supervise(count, args)


def _die_with_parent():
    """In the child before exec: receive SIGTERM when the supervisor dies, however it dies (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _spawn(command, env):
    return subprocess.Popen(command, env=env, preexec_fn=_die_with_parent)


def supervise(count, args):
    """Run ``count`` single workers as child processes; start a dead one again (unless in burst mode)."""
    command = [sys.executable, "-m", "process_server.worker", "--workers", "1"]
    command += ["--burst"] if args.burst else []
    command += ["--no-preload"] if args.no_preload else []
    # one BLAS thread per worker: the workers are one per core already
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    children = [_spawn(command, env) for _ in range(count)]
    stopping = []

    def stop(signum, _frame):
        stopping.append(signum)
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while True:
        for i, child in enumerate(children):
            if child.poll() is not None and not stopping and not args.burst:
                print(f"worker {child.pid} exited with {child.returncode}; starting another", file=sys.stderr,
                      flush=True)
                time.sleep(1)
                children[i] = _spawn(command, env)
        if all(child.poll() is not None for child in children) and (stopping or args.burst):
            return 0
        time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main())
