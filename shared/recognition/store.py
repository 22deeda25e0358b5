"""Model versions on disk: save, load, cache, forget a KOL, prune, switch; one training at a time.

Models are versioned folders ``data/models/<version>/``: one uncompressed ``.npy`` file per array
(:func:`model_arrays`: ``X``, ``offsets``, ``centroids``, ``classes``, ``chips``, ``svm_w``, ...), listed by
``arrays.json`` (``{"format": 2, "files": {array name: file name}}``, written after the files it names),
and ``meta.json``. :meth:`ModelStore.load` maps the ``.npy`` files read-only (``np.load(mmap_mode="r")``,
``allow_pickle=False``, nothing refitted), so every process of a machine that loads a version shares one
copy of its arrays in the page cache, and loading costs the headers, not the bytes. A version saved
before (one ``model.npz``) still loads, read whole as before.
The file ``data/models/current`` names the version in use and is replaced atomically, after the
version's folder is complete.
A version is ``YYYYmmdd-HHMMSS-<microsecond in hex>`` (UTC), so versions sort by time.
:func:`shared.training.train.retrain` is the whole training step (one at a time, under the
:func:`training_lock`).
"""
import contextlib
import errno
import fcntl
import os
import secrets
import shutil
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from shared.core import config
from shared.core.errors import UserError
from shared.core.ids import VERSION_RE
from shared.core.storage import (ARRAY_READ_LOCK, atomic_write, atomic_write_bytes, atomic_write_json, file_identity,
                                 locked, read_arrays, read_json, sweep_temp_files)
from shared.recognition import report
from shared.recognition.model import ARRAYS, Model

#: Model versions kept by :meth:`ModelStore.prune` unless told otherwise (the ``MODEL_VERSIONS_KEEP`` setting's default).
KEEP_VERSIONS = config.DEFAULTS["MODEL_VERSIONS_KEEP"]
#: The file of a version that lists its array files (written last: the version's arrays are complete once it exists).
MANIFEST = "arrays.json"
#: The one file of a version saved before the arrays were mapped (read whole, still loads).
OLD_FILE = "model.npz"


def _strings(values):
    """``values`` (list or array of str) as a fixed-width unicode array ``(n,)``: mapped, not parsed, on load."""
    return np.array(values, dtype=str).reshape(-1)


def model_arrays(model):
    """``{name: ndarray}`` of everything :meth:`ModelStore.save` stores of ``model``: each attribute named in
    :data:`shared.recognition.model.ARRAYS` that is not ``None``, the slugs ``classes`` and chip ids ``chips``
    (unicode arrays), the rule's two coefficient lists (``rule_right``, ``rule_stranger``) and ``shrink`` (0-d)."""
    out = {name: np.asarray(getattr(model, name)) for name in ARRAYS if getattr(model, name) is not None}
    out.update(classes=_strings(model.classes), chips=_strings(model.chips),
               rule_right=np.array(model.rule["right"]), rule_stranger=np.array(model.rule["stranger"]),
               shrink=np.array(model.shrink))
    return out


def model_from_arrays(arrays, meta, version):
    """The :class:`Model` of stored ``arrays`` (:func:`model_arrays`'s names; mapped or in memory) and ``meta``."""
    return Model(**{name: arrays[name] for name in ARRAYS if name in arrays},
                 classes=arrays["classes"].tolist(), chips=arrays["chips"],
                 names=meta.get("names", {}), version=version, meta=meta,
                 rule={"right": arrays["rule_right"].tolist(), "stranger": arrays["rule_stranger"].tolist()},
                 shrink=float(arrays["shrink"]) if "shrink" in arrays else 1.0)


def _write_model(folder, model):
    """Write ``model``'s arrays into the version folder ``folder``: one ``.npy`` file per array, each written
    atomically (:func:`shared.core.storage.atomic_write`) under a name new to this write, then
    :data:`MANIFEST` naming them (atomically), then the files of the write before it are deleted. A reader
    that read the manifest before meets either the old set of files or the new one, never a mixture."""
    folder = Path(folder)
    before = read_json(folder / MANIFEST, default={}) or {}
    tag = secrets.token_hex(4)
    files = {}
    for name, array in model_arrays(model).items():
        files[name] = f"{name}-{tag}.npy"
        atomic_write(folder / files[name],
                     lambda fh, a=array: np.lib.format.write_array(fh, a, allow_pickle=False),
                     suffix=".npy")
    atomic_write_json(folder / MANIFEST, {"format": 2, "files": files})
    for name in set((before.get("files") or {}).values()) - set(files.values()):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(folder / name)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(folder / OLD_FILE)  # a version saved the old way and rewritten (forget) is mapped from now on


def _stored(folder):
    """The file that says version folder ``folder`` is complete: its :data:`MANIFEST`, or
    :data:`OLD_FILE` for a version saved the old way; ``None`` when it has neither."""
    for name in (MANIFEST, OLD_FILE):
        if (Path(folder) / name).exists():
            return Path(folder) / name
    return None


def map_arrays(folder):
    """``{name: read-only memory-mapped ndarray}`` of the version folder ``folder`` (``.npy`` files named by its
    :data:`MANIFEST`; ``allow_pickle=False``), or of its old :data:`OLD_FILE` (read whole). The headers are
    parsed one thread at a time (:data:`shared.core.storage.ARRAY_READ_LOCK`).
    Raises ``FileNotFoundError`` when the folder holds no model."""
    folder = Path(folder)
    manifest = read_json(folder / MANIFEST)
    if manifest is None:
        return read_arrays(folder / OLD_FILE)
    with ARRAY_READ_LOCK:
        return {name: np.load(folder / file, mmap_mode="r", allow_pickle=False)
                for name, file in manifest["files"].items()}


def model_file_identity(root, version):
    """What identifies the content of model ``version``'s files under ``root`` right now:
    ``(root, version, st_ino, st_mtime_ns, st_size)`` of its :data:`MANIFEST` (or old :data:`OLD_FILE`),
    or ``None`` when there is no such version.

    The key of every in-memory copy of a model (:meth:`ModelStore.cached`): every write of a
    version (a new version, :meth:`ModelStore.forget`) ends by renaming a new manifest over the old one
    (:func:`shared.core.storage.atomic_write`), so a rewrite always gets another inode than the file
    it replaces (and a newer modification time).
    """
    if not VERSION_RE.match(str(version)):
        return None
    path = _stored(Path(root) / str(version))
    identity = None if path is None else file_identity(path)
    return None if identity is None else (str(root), str(version), *identity)


class ModelStore:
    """Versioned models under ``root`` (normally ``data/models``)."""

    def __init__(self, root):
        self.root = Path(root)
        self._cache = None
        self._cache_key = None
        self._cache_lock = threading.Lock()

    @property
    def lock_path(self):
        return self.root / ".lock"

    def current_version(self):
        """The version named by ``current``, or ``None`` when no model was trained yet."""
        try:
            version = (self.root / "current").read_text().strip()
        except FileNotFoundError:
            return None
        return version if VERSION_RE.match(version) else None

    def versions(self):
        """Stored versions, oldest first."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and VERSION_RE.match(p.name) and _stored(p) is not None)

    def save(self, model, allowed=None):
        """Write ``model`` as a new version and make it current (atomically). Returns the version.

        allowed: optional callable returning the set of slugs that may be stored; it is
        called under the store's lock, so a KOL deleted meanwhile (see :meth:`forget`) is
        never written back.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        with locked(self.lock_path):
            if allowed is not None:
                keep = set(allowed())
                gone = [s for s in model.classes if s not in keep]
                if gone:
                    model = model.without(gone)
                    model.meta = dict(model.meta, identities=len(model.classes), samples=int(len(model.X)))
            while True:  # names sort by time: the suffix is the microsecond, in hex
                now = datetime.now(timezone.utc)
                version = now.strftime("%Y%m%d-%H%M%S-") + f"{now.microsecond:06x}"
                folder = self.root / version
                try:
                    folder.mkdir()
                    break
                except FileExistsError:
                    time.sleep(0.001)
            _write_model(folder, model)
            meta = dict(model.meta, version=version, names=model.names,
                        created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
            atomic_write_json(folder / "meta.json", meta)
            atomic_write_bytes(self.root / "current", version.encode())
        model.version, model.meta = version, meta
        return version

    def meta(self, version=None):
        """The ``meta.json`` of ``version`` (default: current), or ``None``."""
        version = version or self.current_version()
        if not version or not VERSION_RE.match(version):
            return None
        return read_json(self.root / version / "meta.json")

    def load(self, version):
        """Load a saved model: its arrays mapped read-only (:func:`map_arrays`; no pickle), nothing refitted.

        A :meth:`forget` that rewrites the version meanwhile deletes the files its manifest named
        before: the read is then tried again, with the new manifest."""
        if not VERSION_RE.match(str(version)):
            raise UserError("No such model version.", 404)
        folder = self.root / version
        for attempt in range(3):
            try:
                arrays = map_arrays(folder)
                break
            except FileNotFoundError:
                if attempt == 2 or _stored(folder) is None:
                    raise UserError("No such model version.", 404) from None
        meta = read_json(folder / "meta.json", default={}) or {}
        return model_from_arrays(arrays, meta, version)

    def cached(self, version):
        """The model ``version``, loaded once and reloaded whenever its file was rewritten since.

        Checked on every call with one ``stat`` (:func:`model_file_identity`), so a new
        training, a :meth:`forget` of a KOL or of some photos (which rewrite a version in
        place) or a :meth:`switch` reaches every process holding a store on its very next use.
        Holds one model per store. Raises :class:`UserError` 404 when the version does not exist.
        """
        identity = model_file_identity(self.root, version)
        if identity is None:
            raise UserError("No such model version.", 404)
        with self._cache_lock:
            if self._cache is None or self._cache_key != identity:
                self._cache = self.load(version)  # read after the stat: never older than its key
                self._cache_key = identity
            return self._cache

    def current(self):
        """The current model (:meth:`cached` of :meth:`current_version`); ``None`` if there is none.

        Cheap to call before every prediction: one small file read and one ``stat``.
        """
        version = self.current_version()
        if version is None:
            return None
        try:
            return self.cached(version)
        except UserError:  # named by ``current`` but gone (deleted by hand)
            return None

    def forget(self, slug, chips=None):
        """Remove the KOL ``slug`` from every stored version (each file rewritten atomically), or
        only its pool photos ``chips`` (chip ids) when given.

        Returns the versions that held it. Each file is replaced (a new inode), so the next
        :meth:`cached` or :meth:`current` in any process, a batch worker's included, reloads it.
        """
        changed = []
        with locked(self.lock_path):
            for version in self.versions():
                folder = self.root / version
                model = self.load(version)
                if slug not in model.classes:
                    continue
                slim = model.without([slug]) if chips is None else model.without_photos(slug, chips)
                if slim is model:
                    continue
                _write_model(folder, slim)
                meta = read_json(folder / "meta.json", default={}) or {}
                if slug in slim.classes:  # some of its photos went, the KOL stays
                    meta.update(samples=int(len(slim.X)))
                    (meta.get("metrics") or {}).get("per_kol", {})[slug] = int(slim.counts[slim.classes.index(slug)])
                    atomic_write_json(folder / "meta.json", meta)
                    changed.append(version)
                    continue
                meta.get("names", {}).pop(slug, None)
                report.forget(meta.get("metrics") or {}, slug)
                meta.update(identities=len(slim.classes), samples=int(len(slim.X)))
                atomic_write_json(folder / "meta.json", meta)
                changed.append(version)
        with self._cache_lock:
            self._cache = self._cache_key = None
        return changed

    def prune(self, keep=KEEP_VERSIONS):
        """Delete all but the ``keep`` newest versions; the current one is never deleted. Returns the deleted.

        Also deletes the temporary files that a training killed mid-write left here, once an hour
        old (:func:`shared.core.storage.sweep_temp_files`).
        """
        keep = max(1, int(keep))
        deleted = []
        with locked(self.lock_path):
            current = self.current_version()
            versions = self.versions()
            for version in versions[:max(0, len(versions) - keep)]:
                if version != current:
                    shutil.rmtree(self.root / version, ignore_errors=True)
                    deleted.append(version)
            sweep_temp_files(self.root)
        return deleted

    def switch(self, version):
        """Make a stored ``version`` current; :class:`UserError` (404) if it does not exist."""
        if not VERSION_RE.match(str(version)) or _stored(self.root / str(version)) is None:
            raise UserError("No such model version.", 404)
        with locked(self.lock_path):
            atomic_write_bytes(self.root / "current", str(version).encode())
        return version


@contextlib.contextmanager
def training_lock(root):
    """One training at a time across processes: a non-blocking ``flock`` on ``root/.train.lock``.

    Raises :class:`UserError` (409) when another training holds it.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".train.lock", "a+b") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise UserError("A training is already running: wait for it to finish, then train again.",
                                409) from None
            raise
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
