"""A stand-in for a main-server process running a photo batch, for tests/test_batch_jobs.py to kill.

``python -m tests._batch_child photos FOLDER DATA_DIR PHOTO`` stages PHOTO twice into the result
folder FOLDER as the batch route does, turns the second staged file into a FIFO (the pool worker
that opens it waits there until the test kills this process: a gate before the second photo,
with no hook in the code under test) and runs the batch in the background as the route does,
with the current model of DATA_DIR. ``python -m tests._batch_child hold FOLDER ACTOR`` only
starts a batch of ACTOR in FOLDER (its heartbeat, no photos). Either way the process then
waits until it is killed.
"""
import os
import sys
import threading
from pathlib import Path

from werkzeug.datastructures import FileStorage

from shared.recognition import batch
from shared.recognition.store import ModelStore


def photos(folder, data_dir, photo):
    """Stage ``photo`` twice, gate the second copy, start the batch."""
    folder, photo = Path(folder), Path(photo)
    uploads = [FileStorage(open(photo, "rb"), filename=f"{n}-{photo.name}") for n in ("first", "second")]
    rows, files = batch.stage(uploads, folder)
    files[1].unlink()
    os.mkfifo(files[1])
    models = ModelStore(Path(data_dir) / "models")
    batch.run_in_background(rows, files, folder, models.current(), str(models.root), {})


def hold(folder, actor):
    """Start a batch of ``actor`` that beats and never ends."""
    batch.begin(Path(folder), actor, 0, 60)


if __name__ == "__main__":
    {"photos": photos, "hold": hold}[sys.argv[1]](*sys.argv[2:])
    threading.Event().wait()
