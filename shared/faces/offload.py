"""A function call sent to an executor (the worker processes), redone here if the executor broke.

The video loop sends detection and embedding to ``shared.faces.parallel.executor()`` so the
second core works while this thread decodes, tracks and draws. An executor of
``None`` runs the call at once, inline; an executor that broke (a worker was killed) or
was shut down makes the call run inline too, so a result always comes back.
"""
from concurrent.futures import CancelledError, Future
from concurrent.futures.process import BrokenProcessPool


class Call:
    """``fn(*args)`` on ``executor`` (or inline when it is ``None``); :meth:`result` waits for it.

    ``fn`` must be a top-level (picklable) function when ``executor`` runs worker processes.
    """

    def __init__(self, executor, fn, *args):
        self.fn, self.args = fn, args
        self.future = None
        if executor is not None:
            try:
                self.future = executor.submit(fn, *args)
            except (BrokenProcessPool, RuntimeError):  # executor broken or shut down: work here
                self.future = None
        if self.future is None:
            self.future = Future()
            try:
                self.future.set_result(fn(*args))
            except Exception as exc:  # noqa: BLE001 - re-raised by result()
                self.future.set_exception(exc)

    def result(self):
        """The call's return value (computed inline if the executor broke or the call was cancelled)."""
        try:
            return self.future.result()
        except (BrokenProcessPool, CancelledError):
            return self.fn(*self.args)

    def cancel(self):
        """Cancel the call if it has not started (its result is then never needed)."""
        self.future.cancel()
