"""The face index: every library face's 128-d dlib embedding, searchable by Euclidean distance.

One usearch HNSW index (``metric l2sq``, ``float32``, connectivity 12) in one file,
``DATA_DIR/library/index/faces.usearch``. Its keys are the face ids of the library's ``faces``
table (:mod:`shared.library.store`; unsigned 64-bit, never reused). usearch was chosen over
faiss-cpu after ``bench/bench_index.py`` on this machine (the README's library section has the
numbers): it removes a vector by its key (faiss's HNSW cannot remove at all), and it opens a
saved index as a read-only memory map (``view``), so the processes of a machine share one copy
in the page cache and a search process loads 10^6 faces in a fraction of a second.

Distances returned are Euclidean (the square root of usearch's squared L2), the model's own
units: two faces of one person are usually closer than
:data:`shared.faces.engine.SAME_PERSON_DISTANCE` (0.6).

Per process, each index file is opened once and kept (:func:`open_index`): searches use a
memory-mapped view of the file; the first write in a process loads a writable copy, and every
write (under a cross-process lock, ``index/.lock``) changes that copy and saves it atomically
(a temporary file in the same folder, fsynced, its size checked, since usearch does not report a
short write, then renamed over the old one; a short write is an ``ENOSPC`` error, a 507). Another process's
write changes the file's identity (:func:`shared.core.storage.file_identity`), which the next
search or write notices and reopens. A crash mid-save leaves the old file whole.
"""
import errno
import os
import tempfile
import threading
from pathlib import Path

import numpy as np

from shared.core.storage import TEMP_PREFIX, file_identity, locked

#: The index file's name inside its folder.
FILE = "faces.usearch"
#: Embedding size (dlib's ResNet: :data:`shared.faces.engine.EMBEDDING_SIZE`).
NDIM = 128
#: HNSW parameters: links per node ("M"), search depth while adding ("efConstruction") and
#: while searching ("ef"); bench/bench_index.py measured them (README, "The library's face index"):
#: M 12 / efConstruction 48 adds fastest, but its graph at 10^6 faces finds only 78 % of the exact
#: top-20 at ef 128 and 84 % at ef 512 (25 ms mean, 41 ms p95 on the loaded 2-core machine), so
#: searches use 512; a better-built graph (larger efConstruction) is the open follow-up.
CONNECTIVITY = 12
EXPANSION_ADD = 48
EXPANSION_SEARCH = 512

_opened = {}
_opened_lock = threading.Lock()


def _new():
    from usearch.index import Index

    return Index(ndim=NDIM, metric="l2sq", dtype="f32", connectivity=CONNECTIVITY,
                 expansion_add=EXPANSION_ADD, expansion_search=EXPANSION_SEARCH)


def _restore(path, view):
    from usearch.index import Index

    index = Index.restore(str(path), view=view)
    index.expansion_search = EXPANSION_SEARCH
    if not view:
        index.expansion_add = EXPANSION_ADD
    return index


def open_index(folder):
    """The process's one :class:`FaceIndex` for ``folder`` (made on first use)."""
    folder = Path(folder)
    with _opened_lock:
        index = _opened.get(folder)
        if index is None:
            index = _opened[folder] = FaceIndex(folder)
    return index


class FaceIndex:
    """The index file in ``folder``: add, remove, search. Thread-safe; see the module docstring."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.path = self.folder / FILE
        self._lock = threading.RLock()
        self._index, self._identity, self._writable = None, None, False

    # -- reading ---------------------------------------------------------------------------------
    def _current(self):
        """The index as the file holds it now: the copy in memory, reopened (as a view) if the file changed."""
        identity = file_identity(self.path)
        if self._index is None or identity != self._identity:
            if identity is None:
                self._index, self._writable = _new(), True
            else:
                self._index, self._writable = _restore(self.path, view=True), False
            self._identity = identity
        return self._index

    def search(self, vector, k):
        """The ``k`` faces nearest to ``vector`` (128 floats): ``[(face id, Euclidean distance)]``, nearest first."""
        query = np.asarray(vector, dtype=np.float32).reshape(NDIM)
        with self._lock:
            index = self._current()
            if len(index) == 0 or k <= 0:
                return []
            found = index.search(query, min(int(k), len(index)))
        return [(int(key), float(np.sqrt(max(float(d), 0.0)))) for key, d in zip(found.keys, found.distances)]

    def __len__(self):
        with self._lock:
            return len(self._current())

    def vector(self, face_id):
        """The stored embedding of ``face_id`` (``(128,)`` float32), or ``None``."""
        with self._lock:
            found = self._current().get(int(face_id))
        return None if found is None else np.asarray(found, dtype=np.float32).reshape(NDIM)

    # -- writing ---------------------------------------------------------------------------------
    def _writable_copy(self):
        """The index as the file holds it now, loaded whole so it can change (called under both locks)."""
        self._current()
        if not self._writable:
            self._index, self._writable = _restore(self.path, view=False), True
        return self._index

    def _save(self, index):
        """Save ``index`` atomically over the file and remember the new file as the one in memory."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".usearch", dir=self.folder)
        os.close(fd)
        try:
            index.save(tmp)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
                written = os.fstat(fh.fileno()).st_size
            if written != index.serialized_length:  # usearch does not say when a write fell short (a full disk)
                raise OSError(errno.ENOSPC, f"the face index was not saved whole ({written} of "
                                            f"{index.serialized_length} bytes written)")
            os.replace(tmp, self.path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self._identity = file_identity(self.path)

    def _change(self, work):
        """Run ``work(index)`` on the writable copy under the locks and save; on an error the file
        and the copy in memory are left as the file was."""
        with self._lock, locked(self.folder / ".lock"):
            index = self._writable_copy()
            try:
                work(index)
                self._save(index)
            except BaseException:
                self._index = self._identity = None  # reread the file, which is as it was
                raise

    def add(self, face_ids, vectors):
        """Index ``vectors`` (``(n, 128)``) under ``face_ids`` (``n`` ints, not in the index yet)."""
        keys = np.asarray(list(face_ids), dtype=np.uint64)
        if not len(keys):
            return
        data = np.asarray(vectors, dtype=np.float32).reshape(len(keys), NDIM)
        self._change(lambda index: index.add(keys, data))

    def remove(self, face_ids):
        """Remove ``face_ids`` from the index (ids not in it are ignored)."""
        keys = [int(k) for k in face_ids]
        if not keys:
            return

        def work(index):
            present = [k for k in keys if index.contains(k)]
            if present:
                index.remove(np.asarray(present, dtype=np.uint64))

        self._change(work)
