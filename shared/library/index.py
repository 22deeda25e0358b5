"""The face index: every library face's 128-d dlib embedding, searchable by Euclidean distance.

One faiss inverted-file index (``IndexIVFFlat``, L2, the embeddings kept whole as float32, so
every distance is exact) in one file, ``DATA_DIR/library/index/faces.faiss``. Its ids are the
face ids of the library's ``faces`` table (:mod:`shared.library.store`; positive, never reused).
The faces are kept in lists, each face in the list of its nearest centroid (k-means over the
indexed faces); a search compares the query with every face of the :data:`NPROBE` lists whose
centroids are nearest to it. The number of lists follows the index's size (:func:`lists_for`):
when a write makes the index big enough for 4 times as many lists, it is rebuilt (k-means on the
faces it holds, every face put in its new list, under the write lock: 10^6 faces into 1,024 lists
take 7 s, into 4,096 lists, as at 1,048,576 faces, about 3 minutes on the loaded machine).
An index with one list (under 1,024 faces) is an exact search.

faiss's inverted file was chosen over usearch's HNSW graph (used before) after
``bench/bench_index.py`` on this machine (the README's library section has the numbers): at 10^6
faces the lists find over 96 % of the exact top 20 both of synthetic faces (tight people far
apart, on which the graph lost its way between people: 86 %) and of real dev-set faces padded
with synthetic ones (the graph: 99.8 %), with exact distances, and add faces some 20 to 40 times
faster (the graph: 3,400 to 7,900 faces/s, 526 under heavy load, near the 2,000 bound). It
removes a face by its id, and a saved index opens as a read-only memory map (``IO_FLAG_MMAP``),
so the processes of a machine share one copy in the page cache and a search process loads 10^6
faces at once.

Distances returned are Euclidean (the square root of faiss's squared L2), the model's own
units: two faces of one person are usually closer than
:data:`shared.faces.engine.SAME_PERSON_DISTANCE` (0.6).

Per process, each index file is opened once and kept (:func:`open_index`): searches use a
memory-mapped view of the file; the first write in a process reads a writable copy, and every
write (under a cross-process lock, ``index/.lock``) changes that copy and saves it atomically
(:func:`shared.core.storage.atomic_write_bytes`: a temporary file in the same folder, fsynced,
renamed over the old one; a full disk is an ``ENOSPC`` error, a 507). Another process's write
changes the file's identity (:func:`shared.core.storage.file_identity`), which the next search or
write notices and reopens. A crash mid-save leaves the old file whole.
"""
import threading
from pathlib import Path

import numpy as np

from shared.core.storage import atomic_write_bytes, file_identity, locked

#: The index file's name inside its folder.
FILE = "faces.faiss"
#: Embedding size (dlib's ResNet: :data:`shared.faces.engine.EMBEDDING_SIZE`).
NDIM = 128
#: Faces per list the index is (re)built for; a list holds 256 to 1,024 faces on average.
FACES_PER_LIST = 256
#: Lists a search reads (all of them while there are fewer). At 10^6 faces in 1,024 lists, 128
#: found 99.9 % of the exact top 20 of the synthetic faces but 90-93 % of real dev-set faces'
#: (padded with synthetic ones), 256 finds 96.7 % of those in 28 ms on the loaded machine
#: (bench/bench_index.py; README, "The library's face index").
NPROBE = 256
#: Faces per centroid the k-means of a rebuild learns from (a random sample of the index's faces).
TRAIN_PER_LIST = 64

_opened = {}
_opened_lock = threading.Lock()


def lists_for(n):
    """The number of lists an index of ``n`` faces is built with: the largest power of 4 that is at
    most ``n / FACES_PER_LIST``, and at least 1."""
    lists = 1
    while lists * 4 * FACES_PER_LIST <= n:
        lists *= 4
    return lists


def _built(ids, vectors):
    """A new index of ``vectors`` (``(n, 128)`` float32) under ``ids`` (``(n,)`` int64), with
    :func:`lists_for` ``(n)`` lists (k-means on the vectors; one list: its centroid the origin)."""
    import faiss

    lists = lists_for(len(ids))
    index = faiss.index_factory(NDIM, f"IVF{lists},Flat", faiss.METRIC_L2)
    if lists == 1:
        index.quantizer.add(np.zeros((1, NDIM), dtype=np.float32))
        index.is_trained = True
    else:
        index.cp.niter, index.cp.max_points_per_centroid = 10, TRAIN_PER_LIST
        index.train(vectors)
    if len(ids):
        index.add_with_ids(vectors, ids)
    index.nprobe = NPROBE
    return index


def _contents(index):
    """Every face of ``index``: ``(ids (n,) int64, vectors (n, 128) float32)``, list by list."""
    from faiss.contrib.inspect_tools import get_invlist

    lists = [get_invlist(index.invlists, i) for i in range(index.nlist)]
    ids = np.concatenate([i for i, _ in lists]).astype(np.int64)
    vectors = np.concatenate([c for _, c in lists]).view(np.float32).reshape(-1, NDIM)
    return ids, vectors


def _read(path, view):
    """The saved index at ``path``: a read-only memory map of its lists (``view``) or a writable copy."""
    import faiss

    index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP if view else 0)
    index.nprobe = NPROBE
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
                self._index = _built(np.zeros(0, np.int64), np.zeros((0, NDIM), np.float32))
                self._writable = True
            else:
                self._index, self._writable = _read(self.path, view=True), False
            self._identity = identity
        return self._index

    def search(self, vector, k):
        """Up to ``k`` faces nearest to ``vector`` (128 floats): ``[(face id, Euclidean distance)]``,
        nearest first; fewer than ``k`` only when the lists searched hold fewer faces."""
        query = np.asarray(vector, dtype=np.float32).reshape(1, NDIM)
        with self._lock:
            index = self._current()
            if index.ntotal == 0 or k <= 0:
                return []
            distances, ids = index.search(query, min(int(k), index.ntotal))
        return [(int(i), float(np.sqrt(max(float(d), 0.0)))) for i, d in zip(ids[0], distances[0]) if i >= 0]

    def __len__(self):
        with self._lock:
            return int(self._current().ntotal)

    @property
    def lists(self):
        """How many lists the index has now (:func:`lists_for` of its size when last built)."""
        with self._lock:
            return int(self._current().nlist)

    # -- writing ---------------------------------------------------------------------------------
    def _writable_copy(self):
        """The index as the file holds it now, read whole so it can change (called under both locks)."""
        self._current()
        if not self._writable:
            self._index, self._writable = _read(self.path, view=False), True
        return self._index

    def _change(self, work):
        """Save ``work(index)`` (the writable copy, changed, or a new index) atomically over the file
        under the locks and keep it as the copy in memory; on an error the file and the copy in
        memory are left as the file was."""
        import faiss

        with self._lock, locked(self.folder / ".lock"):
            index = self._writable_copy()
            try:
                index = work(index)
                self.folder.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(self.path, faiss.serialize_index(index))
            except BaseException:
                self._index = self._identity = None  # reread the file, which is as it was
                raise
            self._index, self._identity = index, file_identity(self.path)

    def add(self, face_ids, vectors):
        """Index ``vectors`` (``(n, 128)``) under ``face_ids`` (``n`` positive ints, not in the index
        yet); rebuilds the index when it has grown enough for more lists (module docstring)."""
        ids = np.asarray(list(face_ids), dtype=np.int64)
        if not len(ids):
            return
        data = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32).reshape(len(ids), NDIM))

        def work(index):
            if lists_for(index.ntotal + len(ids)) > index.nlist:
                old_ids, old_vectors = _contents(index)
                return _built(np.concatenate([old_ids, ids]), np.concatenate([old_vectors, data]))
            index.add_with_ids(data, ids)
            return index

        self._change(work)

    def remove(self, face_ids):
        """Remove ``face_ids`` from the index (ids not in it are ignored)."""
        ids = np.asarray([int(k) for k in face_ids], dtype=np.int64)
        if not len(ids):
            return

        def work(index):
            index.remove_ids(ids)
            return index

        self._change(work)
